//! The machine's floors, measured in the same run: moving frames through a
//! 1 MiB ring in one process with no bus, no lock and no other process
//! (the ring code on a plain buffer, and bare `memcpy`), and the cost of
//! one wake-up `pwrite` on a watched file.

use super::worker::{poke, BareWatch};
use anyhow::{anyhow, Result};
use shmif::ring::{self, Control, Geometry, Reader, Step};
use shmif::wire::{FrameHeaderRepr, DATA_SIZE, MAX_FRAME_LEN};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

/// Copy floors for one frame size, frames per second.
#[derive(Debug, Clone, Copy)]
pub struct CopyFloor {
    /// Frame size.
    pub frame_bytes: usize,
    /// `ring::append` then `Reader::step` per frame on a 1 MiB `Vec`.
    pub ring_fps: f64,
    /// A `memcpy` into a rolling offset of a 1 MiB buffer and one back out.
    pub memcpy_fps: f64,
}

/// Measures both copy floors for `bytes`-byte frames, `dur` each.
pub fn copy_floor(bytes: usize, dur: Duration) -> Result<CopyFloor> {
    const BATCH: u64 = 16;
    let frame = vec![0x5au8; bytes];
    let mut region = vec![0u8; DATA_SIZE as usize];
    let g = Geometry::V3;
    let mut ctl = Control::fresh(g);
    let mut reader = Reader::at_end(g, &region, &ctl).map_err(|e| anyhow!("{e}"))?;
    let h = FrameHeaderRepr {
        len: bytes as u32,
        sec: 0,
        usec: 0,
        sender: 1,
    };
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        for _ in 0..BATCH {
            ring::append(g, &mut region, &mut ctl, &h, black_box(&frame))
                .map_err(|e| anyhow!("{e}"))?;
        }
        for _ in 0..BATCH {
            match reader.step(g, &region, &ctl, &mut buf) {
                Step::Frame { .. } => {}
                other => return Err(anyhow!("copy floor: unexpected {other:?}")),
            }
            black_box(&buf);
        }
        n += BATCH;
    }
    let ring_fps = n as f64 / start.elapsed().as_secs_f64();

    let mut ring = vec![0u8; 1 << 20];
    let stride = bytes + 24;
    let mut off = 0usize;
    let start = Instant::now();
    let mut m = 0u64;
    while start.elapsed() < dur {
        for _ in 0..BATCH {
            if off + stride > ring.len() {
                off = 0;
            }
            ring[off..off + bytes].copy_from_slice(black_box(&frame));
            buf[..bytes].copy_from_slice(&ring[off..off + bytes]);
            black_box(&buf);
            off += stride;
        }
        m += BATCH;
    }
    let memcpy_fps = m as f64 / start.elapsed().as_secs_f64();
    Ok(CopyFloor {
        frame_bytes: bytes,
        ring_fps,
        memcpy_fps,
    })
}

/// ns per wake-up `pwrite` on a file that one inotify instance watches (as
/// a bus with one sleeping reader), averaged over `n`.
pub fn pwrite_ns(dir: &Path, n: u32) -> Result<f64> {
    let path = dir.join("pwrite-cost");
    std::fs::write(&path, vec![0u8; 1 << 20])?;
    let watch = BareWatch::new(&path)?;
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    let start = Instant::now();
    for i in 0..n {
        poke(&file)?;
        // Keep the event queue short, as a reader would (inotify merges
        // identical queued events, so this is one event).
        if i % 1024 == 1023 {
            watch.wait()?;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n.max(1));
    drop(watch);
    let _ = std::fs::remove_file(&path);
    Ok(ns)
}
