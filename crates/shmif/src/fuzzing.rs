//! Harnesses shared by the fuzz targets in `fuzz/` and the tests that replay
//! their seed corpus (`tests/fuzz_corpus.rs`), so that both exercise exactly
//! the same code. Not part of the stable API.
//!
//! Each harness takes arbitrary bytes, runs the bus code over them, and
//! panics only if an invariant of this crate is broken: never because the
//! bytes are garbage.

use crate::dump::Dump;
use crate::ring::{self, Control, Geometry, Reader, Step};
use crate::wire::ext::{
    ExtHeader, ExtHeaderRepr, ReaderSlot, SlotFlags, EXT_HEADER_LEN, READER_SLOTS, READER_SLOT_LEN,
    READER_TABLE,
};
use crate::wire::{FrameHeaderRepr, BUS_HEADER_LEN, BUS_SIZE, FRAME_HEADER_LEN, MAX_FRAME_LEN};

fn u32_at(d: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = d.get(off + i).copied().unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

/// Ring operations on a small ring whose contents, control words and
/// reader position all come from `data`: reads, a chain check, appends
/// (some of them skip records, on the rings whose geometry allows them)
/// and a reset. Checks: delivered frames are at most 1514 bytes; an append
/// to a consistent ring leaves it consistent (on rings big enough for
/// NetBSD's own precondition, frames under half the ring); a failed append
/// writes nothing; a reset ring is consistent and readable.
pub fn ring_ops(data: &[u8]) {
    if data.len() < 24 {
        return;
    }
    let size = 64 + (u32_at(data, 0) % 8192) as usize;
    let g = Geometry::with_size(size as u32).expect("at least 64 bytes");
    // Half the inputs on a ring that may hold skip records.
    let g = if u32_at(data, 0) & 0x4000_0000 != 0 {
        g.with_skips()
    } else {
        g
    };
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
        // Skip records' words: whatever the bytes say (they only shape
        // loss counts).
        skipped: u64::from(raw(16) >> 8),
        last_skip: u64::from(raw(20)),
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
        let skip = g.skips && raw(4 + k as usize) & 0x100 != 0;
        let done = if skip {
            ring::append_skip(g, &mut region[..], &mut ctl2, |_| {})
        } else {
            ring::append(g, &mut region[..], &mut ctl2, &h, &payload)
        };
        match done {
            Ok(a) => {
                if skip {
                    assert!(a.wrapped && ctl2.last == a.at, "a skip record ends the lap");
                    let end = ring::cursor(g, &region[..], &ctl2).expect("a skip is readable");
                    assert_eq!(end % size as u64, 0, "the next lap starts at offset 0");
                }
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
        ..Control::default()
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

/// The longest ring [`ext_image`] pads to its full size (larger rings are
/// walked over the bytes given, which read as unchanged past their end).
const EXT_RING_CAP: usize = 2 << 20;

/// The longest ring [`ext_image`] walks the whole frame chain of.
const EXT_WALK_CAP: u32 = 64 << 20;

/// Every accessor of an extended header view over `len` bytes and of each
/// reader slot it holds (their values are whatever the bytes say; none may
/// panic).
fn touch_ext_views(h: &ExtHeader<&[u8]>, len: usize) {
    let _ = (
        h.magic(),
        h.generation(),
        h.first(),
        h.last(),
        h.lock(),
        h.holder(),
        h.format(),
        h.header_len(),
        h.ring_size(),
        h.max_frame(),
        h.frame_header_len(),
        h.reader_slots(),
        h.reader_slot_len(),
        h.reader_table(),
        h.flags(),
        h.data_seq(),
        h.data_sleepers(),
        h.fd_waiters(),
    );
    for i in 0..READER_SLOTS + 2 {
        match h.reader(i) {
            Some(s) => {
                assert!(i < READER_SLOTS, "a slot past the table");
                let _ = (s.owner(), s.position(), s.heartbeat(), s.left_behind());
                let _ = s.flags().is_active();
            }
            None => assert!(
                i >= READER_SLOTS || len < READER_TABLE + (i + 1) * READER_SLOT_LEN,
                "slot {i} is in the buffer but not given"
            ),
        }
    }
}

/// A dump walk over `image` that parsed: frames within the geometry's
/// limit, the walk finishing.
fn walk_dump(d: &Dump<'_>) {
    let _ = d.header_line();
    let max = d.geometry().max_frame();
    for f in d.frames() {
        match f {
            Ok(f) => {
                assert!(f.data.len() <= max, "dump frame over the limit");
                let _ = f.line();
            }
            Err(_) => break,
        }
    }
}

/// Reader steps over a ring: no frame over the geometry's limit.
fn read_some<R: ring::Region + ?Sized>(
    g: Geometry,
    region: &R,
    ctl: &Control,
    mut reader: Reader,
    buf: &mut [u8],
    steps: usize,
) {
    for k in 0..steps {
        let step = if k % 2 == 0 {
            reader.step(g, region, ctl, buf)
        } else {
            reader.step_filtered(g, region, ctl, buf, |h, peek| {
                assert!(peek.len() <= ring::PEEK_LEN && peek.len() <= h.len as usize);
                peek.first().is_some_and(|b| b & 1 == 0)
            })
        };
        match step {
            Step::Frame { header, .. } | Step::Passed { header, .. } => {
                assert!(header.len <= g.max_frame_len, "a frame over the limit")
            }
            _ => break,
        }
    }
}

/// Window steps (a registered reader without the lock) from `reader` up to
/// linear position `end`: no frame over the limit, the position only moves
/// forward and never past `end`, and a refused step leaves it unmoved.
fn read_window<R: ring::Region + ?Sized>(
    g: Geometry,
    region: &R,
    end: u64,
    mut reader: Reader,
    buf: &mut [u8],
    steps: usize,
) {
    for k in 0..steps {
        let before = reader;
        let at = reader.position(g);
        match reader.step_window(g, region, end, buf, |h, peek| {
            assert!(peek.len() <= ring::PEEK_LEN && peek.len() <= h.len as usize);
            k % 3 != 0
        }) {
            Step::Frame { header, overrun } | Step::Passed { header, overrun } => {
                assert!(header.len <= g.max_frame_len, "a frame over the limit");
                assert!(overrun.is_none(), "a window step never overruns");
                let now = reader.position(g);
                assert!(
                    now > at && now <= end,
                    "window position {at} -> {now}, end {end}"
                );
            }
            Step::Empty => {
                // Unmoved, or moved over a skip record that ends the window.
                assert!(
                    reader == before || reader.position(g) == end,
                    "an empty window step moved the reader elsewhere"
                );
                break;
            }
            Step::Corrupt(_) => {
                assert_eq!(reader, before, "a refused window step moved the reader");
                break;
            }
        }
    }
}

/// An extended bus (`EXTENDED-FORMAT.md`) built from `data`: its first
/// 8192 bytes (zero-padded) are the header and the reader table, the rest
/// the start of the ring (zero-padded to the ring size the header claims,
/// up to 2 MiB; a larger ring is walked over the bytes given). Runs every
/// pure reader of the format over it: the header and reader-slot views
/// with each accessor, `ExtHeaderRepr::parse` with and without a file
/// size, `Dump::parse` and its walk (over `data` itself and over the image
/// the header describes), and at the header's geometry the ring reader
/// (from the newest position and from the positions in the reader table,
/// under the lock and as a window up to the cursor hint and the cursor),
/// the chain checks, an append and a reset.
///
/// Checks: views give every slot in the buffer and none past the table; a
/// header refused without a file size is refused with one; one accepted
/// is accepted at its own file size, describes a shape
/// [`ExtHeaderRepr::new`] makes, and round-trips through
/// [`ExtHeaderRepr::to_bytes`]; the dump of its image parses with the
/// same header and geometry; no frame over the header's limit is
/// delivered; a consistent ring is writable and stays consistent after an
/// append; a failed append writes nothing; a reset ring is consistent,
/// writable and readable.
pub fn ext_image(data: &[u8]) {
    // The views and the dump over the bytes as given, whatever their length.
    if let Ok(h) = ExtHeader::new_checked(data) {
        touch_ext_views(&h, data.len());
        let _ = ExtHeaderRepr::parse(&h, Some(data.len() as u64));
    }
    if let Ok(s) = ReaderSlot::new_checked(data) {
        let _ = (s.owner(), s.flags(), s.position(), s.heartbeat());
        let _ = s.left_behind();
    }
    if let Ok(d) = Dump::parse(data) {
        walk_dump(&d);
    }

    let mut header = vec![0u8; EXT_HEADER_LEN];
    let n = data.len().min(EXT_HEADER_LEN);
    header[..n].copy_from_slice(&data[..n]);
    let h = ExtHeader::new_checked(&header[..]).expect("a whole header is long enough");
    touch_ext_views(&h, header.len());
    let r = match ExtHeaderRepr::parse(&h, None) {
        Ok(r) => r,
        Err(_) => {
            // A file size only adds a check.
            for size in [data.len() as u64, 1 << 20, u64::MAX] {
                assert!(
                    ExtHeaderRepr::parse(&h, Some(size)).is_err(),
                    "refused without a file size, accepted with {size}"
                );
            }
            return;
        }
    };
    let file_size = r.file_size();
    assert_eq!(ExtHeaderRepr::parse(&h, Some(file_size)), Ok(r));
    assert!(ExtHeaderRepr::parse(&h, Some(file_size + 4096)).is_err());
    assert!(r.first <= r.ring_size && r.last < r.ring_size);
    let shape = ExtHeaderRepr::new(file_size, r.max_frame).expect("a valid shape");
    assert_eq!(
        (shape.ring_size, shape.max_frame),
        (r.ring_size, r.max_frame)
    );
    let again = r.to_bytes();
    let back = ExtHeader::new_checked(&again[..]).expect("to_bytes is a whole header");
    assert_eq!(ExtHeaderRepr::parse(&back, Some(file_size)), Ok(r));
    let g = Geometry::of_extended(&r).expect("a valid ring is large");
    assert!(
        g.fits(r.max_frame as usize),
        "the limit fits in half the ring"
    );

    // The image: the header, then the ring.
    let ring_size = r.ring_size as usize;
    let given = data.get(EXT_HEADER_LEN..).unwrap_or(&[]);
    let full = ring_size <= EXT_RING_CAP;
    let mut image = header;
    image.extend_from_slice(&given[..given.len().min(ring_size)]);
    if full {
        image.resize(EXT_HEADER_LEN + ring_size, 0);
        let d = Dump::parse(&image).expect("a valid header and its ring");
        assert_eq!(d.extended(), Some(&r));
        assert_eq!(d.geometry(), g);
        walk_dump(&d);
    }
    let (header, region) = image.split_at_mut(EXT_HEADER_LEN);
    let h = ExtHeader::new_checked(&header[..]).expect("a whole header is long enough");
    let word = |off: usize| u64::from_ne_bytes(header[off..off + 8].try_into().unwrap_or([0; 8]));
    let ctl = Control {
        gen: r.generation,
        first: r.first,
        last: r.last,
        skipped: word(crate::wire::ext::field::SKIPPED),
        last_skip: word(crate::wire::ext::field::LAST_SKIP),
    };
    let mut buf = vec![0u8; g.max_frame()];
    if let Ok(reader) = Reader::at_end(g, &region[..], &ctl) {
        read_some(g, &region[..], &ctl, reader, &mut buf, 64);
    }
    // From the oldest frame, and from where each registered reader says it is.
    read_some(
        g,
        &region[..],
        &ctl,
        Reader::new(r.first, r.generation),
        &mut buf,
        1024,
    );
    for i in 0..READER_SLOTS {
        let Some(s) = h.reader(i) else { break };
        if s.owner() == 0 && s.position() == 0 {
            continue;
        }
        let pos = s.position();
        let size = u64::from(r.ring_size);
        let reader = Reader::new((pos % size) as u32, pos / size).with_resync(
            if s.flags().0 & SlotFlags::STALLED != 0 {
                ring::Resync::OldestThenNewest
            } else {
                ring::Resync::Oldest
            },
        );
        read_some(g, &region[..], &ctl, reader, &mut buf, 32);
        // And without the lock, up to the cursor hint and up to the
        // cursor the control words give, as a registered reader would.
        let hint = u64::from_ne_bytes(
            header[crate::wire::ext::field::CURSOR..crate::wire::ext::field::CURSOR + 8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        let plain = Reader::new((pos % size) as u32, pos / size);
        read_window(g, &region[..], hint, plain, &mut buf, 32);
        if let Ok(end) = ring::cursor(g, &region[..], &ctl) {
            read_window(g, &region[..], end, plain, &mut buf, 32);
        }
    }
    // The chain walk takes a step per 24 bytes of ring up to `last`: on a
    // ring of up to 1 GiB given only its first bytes (zeros past them:
    // empty entries), some 44 million steps, seconds per input under the
    // sanitizers. It is walked on rings of up to 64 MiB.
    let consistent = r.ring_size <= EXT_WALK_CAP && ring::check_chain(g, &region[..], &ctl).is_ok();
    let writable = ring::check_writable(g, &region[..], &ctl).is_ok();
    assert!(!consistent || writable, "a consistent ring is writable");

    // An append and a reset at this geometry.
    let mut ctl2 = ctl;
    let len = 14 + (u32_at(header, 200) % (r.max_frame - 13)) as usize;
    let payload = vec![0x5a; len];
    let fh = FrameHeaderRepr {
        len: len as u32,
        ..Default::default()
    };
    let before = region.to_vec();
    match ring::append(g, region, &mut ctl2, &fh, &payload) {
        Ok(_) => {
            if consistent && full {
                assert!(
                    ring::check_chain(g, &region[..], &ctl2).is_ok(),
                    "append broke a consistent ring"
                );
            }
        }
        Err(_) => assert!(
            region[..] == before[..],
            "a failed append wrote to the ring"
        ),
    }
    // A lap ended early (where the flags allow it), then a frame at 0.
    let before = region.to_vec();
    let ctl3 = ctl2;
    match ring::append_skip(g, region, &mut ctl2, |_| {}) {
        Ok(_) => {
            assert!(g.skips, "a skip record on a ring that allows none");
            let consistent = consistent && full && ring::check_chain(g, &region[..], &ctl3).is_ok();
            if consistent {
                assert!(
                    ring::check_chain(g, &region[..], &ctl2).is_ok(),
                    "a skip record broke a consistent ring"
                );
            }
            if ring::append(g, region, &mut ctl2, &fh, &payload).is_ok() && consistent {
                assert_eq!(ctl2.last, 0, "the frame after a skip record is at 0");
                assert!(
                    ring::check_chain(g, &region[..], &ctl2).is_ok(),
                    "a frame after a skip record broke a consistent ring"
                );
            }
        }
        Err(_) => assert!(region[..] == before[..], "a failed skip wrote to the ring"),
    }
    let fresh = ring::reset(g, region, &ctl2);
    assert!(
        ring::check_chain(g, &region[..], &fresh).is_ok(),
        "a reset ring is inconsistent"
    );
    assert!(
        ring::check_writable(g, &region[..], &fresh).is_ok(),
        "a reset ring is not writable"
    );
    let mut rd = Reader::at_end(g, &region[..], &fresh).expect("a reset ring is readable");
    assert_eq!(rd.step(g, &region[..], &fresh, &mut buf), Step::Empty);
}
