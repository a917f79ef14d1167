//! Harnesses shared by the fuzz targets in `fuzz/` and the tests that replay
//! their seed corpus (`tests/fuzz_corpus.rs`), so that both exercise exactly
//! the same code. Not part of the stable API.
//!
//! Each harness takes arbitrary bytes, runs the bus code over them, and
//! panics only if an invariant of this crate is broken: never because the
//! bytes are garbage.

use crate::dump::Dump;
use crate::ring::{self, Control, Geometry, Reader, Step};
use crate::wire::{FrameHeaderRepr, BUS_HEADER_LEN, BUS_SIZE, FRAME_HEADER_LEN, MAX_FRAME_LEN};

fn u32_at(d: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = d.get(off + i).copied().unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

/// Ring operations on a small ring whose contents, control words and
/// reader position all come from `data`: reads, a chain check, appends and
/// a reset. Checks: delivered frames are at most 1514 bytes; an append to a
/// consistent ring leaves it consistent (on rings big enough for NetBSD's
/// own precondition, frames under half the ring); a reset ring is
/// consistent and readable.
pub fn ring_ops(data: &[u8]) {
    if data.len() < 24 {
        return;
    }
    let size = 64 + (u32_at(data, 0) % 8192) as usize;
    let g = Geometry::with_size(size as u32).expect("at least 64 bytes");
    let mut region = vec![0u8; size];
    let body = &data[24..];
    let n = body.len().min(size);
    region[..n].copy_from_slice(&body[..n]);
    let raw = |off| u32_at(data, off);
    // Control words: often in range, sometimes not.
    let pick = |v: u32| {
        if v & 0x8000_0000 != 0 {
            v
        } else {
            v % (size as u32 + 1)
        }
    };
    let ctl = Control {
        gen: u64::from(raw(4) & 0xff),
        first: pick(raw(8)),
        last: pick(raw(12)),
    };
    let mut reader = Reader::new(pick(raw(16)), u64::from(raw(20) & 0xff));
    if raw(0) & 0x8000_0000 != 0 {
        reader = reader.with_resync(ring::Resync::OldestThenNewest);
    }
    let mut buf = [0u8; MAX_FRAME_LEN];
    for _ in 0..64 {
        match reader.step(g, &region[..], &ctl, &mut buf) {
            Step::Frame { header, .. } | Step::Passed { header, .. } => {
                assert!(header.len as usize <= MAX_FRAME_LEN)
            }
            _ => break,
        }
    }
    let mut ctl2 = ctl;
    let consistent = ring::check_chain(g, &region[..], &ctl2).is_ok();
    let writable = ring::check_writable(g, &region[..], &ctl2).is_ok();
    assert!(!consistent || writable, "a consistent ring is writable");
    for k in 0..4u32 {
        let len = 14 + (raw(4 + k as usize) as usize % (MAX_FRAME_LEN - 13));
        let len = len.min(size / 2 - FRAME_HEADER_LEN - 1).max(14);
        let payload = vec![k as u8; len];
        let h = FrameHeaderRepr {
            len: len as u32,
            ..Default::default()
        };
        let before = region.clone();
        match ring::append(g, &mut region[..], &mut ctl2, &h, &payload) {
            Ok(_) => {
                if consistent && size >= 2 * (FRAME_HEADER_LEN + MAX_FRAME_LEN) + 2 {
                    assert!(
                        ring::check_chain(g, &region[..], &ctl2).is_ok(),
                        "append broke a consistent ring"
                    );
                }
            }
            Err(_) => assert!(region == before, "a failed append wrote to the ring"),
        }
    }
    let fresh = ring::reset(g, &mut region[..], &ctl2);
    assert!(
        ring::check_chain(g, &region[..], &fresh).is_ok(),
        "a reset ring is inconsistent"
    );
    assert!(
        ring::check_writable(g, &region[..], &fresh).is_ok(),
        "a reset ring is not writable"
    );
    let mut r = Reader::at_end(g, &region[..], &fresh).expect("a reset ring is readable");
    assert_eq!(r.step(g, &region[..], &fresh, &mut buf), Step::Empty);
}

/// A whole bus image built from `data` (zero-padded or cut to 1 MiB): the
/// `shmif dump` walk and a live reader over it. Checks: no frame over 1514
/// bytes is produced, and both finish.
pub fn bus_image(data: &[u8]) {
    let mut image = vec![0u8; BUS_SIZE];
    let n = data.len().min(BUS_SIZE);
    image[..n].copy_from_slice(&data[..n]);
    if let Ok(d) = Dump::parse(&image) {
        let _ = d.header_line();
        for f in d.frames() {
            match f {
                Ok(f) => {
                    assert!(f.data.len() <= MAX_FRAME_LEN);
                    let _ = f.line();
                }
                Err(_) => break,
            }
        }
    }
    // A live reader meeting the same bytes.
    let region = &image[BUS_HEADER_LEN..];
    let ctl = Control {
        gen: u64::from(u32_at(&image, 8)),
        first: u32_at(&image, 16),
        last: u32_at(&image, 20),
    };
    let mut buf = [0u8; MAX_FRAME_LEN];
    let g = Geometry::V3;
    let mut reader = match Reader::at_end(g, region, &ctl) {
        Ok(r) => r,
        Err(_) => Reader::new(0, 0),
    };
    if data.len() > BUS_SIZE + 8 {
        reader.next = u32_at(data, BUS_SIZE);
        reader.devgen = u64::from(u32_at(data, BUS_SIZE + 4));
    }
    for _ in 0..4096 {
        match reader.step(g, region, &ctl, &mut buf) {
            Step::Frame { header, .. } | Step::Passed { header, .. } => {
                assert!(header.len as usize <= MAX_FRAME_LEN)
            }
            _ => break,
        }
    }
    let _ = ring::check_chain(g, region, &ctl);
}
