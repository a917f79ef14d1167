//! The ring code alone, as `shmif bench`'s "ring code" floor measures it:
//! frames appended to a 1 MiB version-3 ring on a plain buffer and read
//! back by a `Reader`, 16 at a time, in one process (no bus file, no lock,
//! no other process). Prints frames per second and the time per frame of
//! each half, for a few passes.
//!
//! ```sh
//! cargo run --release -p shmif --example ring_floor -- [SIZE] [SECS] [PASSES]
//! ```
//!
//! `bench/per-frame-ab.sh` runs this against an earlier revision's ring
//! code, interleaved.

use shmif::ring::{self, Control, Geometry, Reader, Step};
use shmif::wire::{FrameHeaderRepr, DATA_SIZE, MAX_FRAME_LEN};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn main() {
    let arg = |i: usize, default: f64| -> f64 {
        std::env::args()
            .nth(i)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(default)
    };
    let bytes = arg(1, 1514.0) as usize;
    let dur = Duration::from_secs_f64(arg(2, 1.0));
    let passes = arg(3, 3.0) as usize;
    assert!((14..=MAX_FRAME_LEN).contains(&bytes), "SIZE is 14 to 1514");
    const BATCH: u64 = 16;
    let frame = vec![0x5au8; bytes];
    let mut region = vec![0u8; DATA_SIZE as usize];
    let g = Geometry::V3;
    let mut ctl = Control::fresh(g);
    let mut reader = Reader::at_end(g, &region, &ctl).expect("a fresh ring");
    let h = FrameHeaderRepr {
        len: bytes as u32,
        sec: 0,
        usec: 0,
        sender: 1,
    };
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    for pass in 0..passes {
        let start = Instant::now();
        let (mut n, mut appending, mut reading) = (0u64, Duration::ZERO, Duration::ZERO);
        while start.elapsed() < dur {
            let t0 = Instant::now();
            for _ in 0..BATCH {
                ring::append(g, &mut region, &mut ctl, &h, black_box(&frame)).expect("append");
            }
            let t1 = Instant::now();
            for _ in 0..BATCH {
                match reader.step(g, &region, &ctl, &mut buf) {
                    Step::Frame { .. } => {}
                    other => panic!("ring floor: unexpected {other:?}"),
                }
                black_box(&buf);
            }
            reading += t1.elapsed();
            appending += t1 - t0;
            n += BATCH;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "pass {pass}: {bytes} B {:.2} Mframes/s; append {:.0} ns, read {:.0} ns per frame",
            n as f64 / secs / 1e6,
            appending.as_nanos() as f64 / n as f64,
            reading.as_nanos() as f64 / n as f64
        );
    }
}
