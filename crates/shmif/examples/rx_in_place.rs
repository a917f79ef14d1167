//! What a registered reader of an extended bus spends per frame receiving
//! in place, and what a writer spends per frame sending, in one process
//! with nothing else in the way: a writer sends ROUND frames of 1514 bytes
//! (under a hot lap, 4 MiB, so that none waits for the reader), then the
//! reader takes them all with `try_recv_batch_in_place` (32 per call,
//! reading each frame's sequence number where it lies; with `RX=copy`,
//! `try_recv_into` copies each frame into a buffer instead). Prints the
//! least time per frame of each over ROUNDS rounds (the least disturbed).
//!
//! ```sh
//! cargo run --release -p shmif --example rx_in_place -- [ROUND] [ROUNDS]
//! ```
//!
//! `bench/per-frame-ab.sh` runs this against an earlier revision,
//! interleaved.

use shmif::{Bus, Interface, OpenOptions};
use std::time::Instant;

fn main() {
    let arg = |i: usize, default: usize| -> usize {
        std::env::args()
            .nth(i)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(default)
    };
    let (n, rounds) = (arg(1, 2400), arg(2, 200).max(2));
    assert!(
        n * (1514 + 24) < 4 << 20,
        "ROUND frames must fit in a hot lap (4 MiB)"
    );
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("bus");
    Bus::create(&path, 64 << 20, 1514, &OpenOptions::new()).expect("create the bus");
    let w = Interface::attach(&path).expect("attach the writer");
    let r = Interface::attach(&path).expect("attach the reader");
    assert!(r.try_recv().expect("register").is_none());
    let mut f = vec![0u8; 1514];
    f[..6].copy_from_slice(&[0xff; 6]);
    let frames: Vec<Vec<u8>> = (0..31).map(|_| f.clone()).collect();
    let mut seqs: Vec<[u8; 8]> = Vec::with_capacity(32);
    let copying = std::env::var("RX").is_ok_and(|v| v == "copy");
    let mut buf = vec![0u8; 1514];
    let (mut rx_ns, mut tx_ns) = (f64::MAX, f64::MAX);
    for round in 0..rounds {
        let t = Instant::now();
        let mut sent = 0;
        while sent < n {
            let k = 31.min(n - sent);
            w.send_batch(frames[..k].iter().map(|v| v.as_slice()))
                .expect("send");
            sent += k;
        }
        let tx = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        let mut got = 0;
        while got < n {
            let k = if copying {
                let r = r.try_recv_into(&mut buf).expect("receive");
                usize::from(r.is_some())
            } else {
                seqs.clear();
                r.try_recv_batch_in_place(32, &mut seqs, |v, _| {
                    let mut seq = [0u8; 8];
                    v.read(14, &mut seq);
                    seq
                })
                .expect("receive")
            };
            assert!(k > 0, "the reader ran dry after {got} of {n}");
            got += k;
        }
        let rx = t.elapsed().as_nanos() as f64 / n as f64;
        // The first round warms the ring up.
        if round > 0 {
            rx_ns = rx_ns.min(rx);
            tx_ns = tx_ns.min(tx);
        }
    }
    let how = if copying { "copying" } else { "in place" };
    println!("{how}: reader {rx_ns:.1} ns per frame; writer {tx_ns:.1} ns per frame");
}
