//! A stop-gap throughput figure for the extended bus, until `shmif bench`
//! has its lossless rows: one writer process, N reader processes
//! (registered, lossless), frames of SIZE bytes sent back to back in
//! batches for SECS seconds; prints frames per second delivered per
//! reader and what each reader lost.
//!
//! ```sh
//! cargo run --release -p shmif --example ext_throughput -- [SIZE] [READERS] [SECS] [v3]
//! ```
//!
//! With `v3` the same runs on a NetBSD (version-3) bus, lossy.
//! `RING_MIB=N` makes the extended bus N MiB instead of 64 (the ring's
//! working set against the processors' caches: `EXTENDED-FORMAT.md`,
//! "Skip records"). `RX_COALESCE_US=N` sets the readers' receive
//! coalescing nap (`Interface::set_rx_coalesce`; 0 turns it off).
//! `IN_PLACE=1` makes the readers receive in place
//! (`Interface::try_recv_in_place`, looking at the sequence number where
//! the frame lies) instead of copying each frame out (`try_recv_into`);
//! `IN_PLACE=batch` receives in place up to 32 frames per call
//! (`Interface::try_recv_batch_in_place`; `BATCH=N` for N per call).

use shmif::{Bus, Interface, OpenOptions};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--reader") {
        return reader(&args[2]);
    }
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1514);
    let readers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let secs: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let v3 = args.get(4).map(String::as_str) == Some("v3");
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("bus");
    let mib: u64 = std::env::var("RING_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    if !v3 {
        Bus::create(&path, mib << 20, 65_549, &OpenOptions::new()).unwrap();
    }
    let w = Interface::attach(&path).unwrap();
    let mut kids: Vec<_> = (0..readers)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--reader", path.to_str().unwrap()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&w.mac().0);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(size, 0);
    // Batches of at most 128 frames or 48 KiB, as `shmif bench`'s writer.
    let batch = (48 * 1024 / (size + 24)).clamp(1, 128);
    let cpu0 = cpu_ns();
    let t0 = Instant::now();
    let mut seq: u64 = 0;
    let mut frames: Vec<Vec<u8>> = vec![f; batch];
    while t0.elapsed().as_secs_f64() < secs {
        for fr in frames.iter_mut() {
            fr[14..22].copy_from_slice(&seq.to_le_bytes());
            seq += 1;
        }
        w.send_batch(frames.iter().map(|f| &f[..])).unwrap();
    }
    let took = t0.elapsed().as_secs_f64();
    let cpu = cpu_ns() - cpu0;
    let mut end = frames[0].clone();
    end[14..22].copy_from_slice(&u64::MAX.to_le_bytes());
    w.send(&end).unwrap();
    let bus = if v3 {
        "v3 1 MiB, lossy".to_string()
    } else {
        format!("extended {mib} MiB, lossless")
    };
    // Written with errors ignored: a reader of this output that leaves
    // early (`| head -1`) must not make it panic on a broken pipe.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{bus}: {size} B, 1 -> {readers}: writer {:.3} Mframes/s ({:.1} Gbit/s), {:.0} ns of CPU per frame",
        seq as f64 / took / 1e6,
        seq as f64 * size as f64 * 8.0 / took / 1e9,
        cpu as f64 / seq.max(1) as f64
    );
    for k in kids.iter_mut() {
        let kid_out = k.wait_with_output_ref();
        let line = String::from_utf8_lossy(&kid_out);
        let mut it = line
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        let (got, lost) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        let naps = it.next().unwrap_or(0);
        let _ = writeln!(
            out,
            "  reader: {got} of {seq} frames ({:.3} Mframes/s delivered), {} lost, overrun bytes {lost}, {naps} naps",
            got as f64 / took / 1e6,
            seq - got
        );
    }
}

/// CPU time (user and system) this process has used, ns.
fn cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

trait WaitRef {
    fn wait_with_output_ref(&mut self) -> Vec<u8>;
}

impl WaitRef for std::process::Child {
    fn wait_with_output_ref(&mut self) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        self.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        let _ = self.wait();
        out
    }
}

fn reader(path: &str) {
    let r = Interface::attach(path).unwrap();
    if let Some(us) = std::env::var("RX_COALESCE_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        r.set_rx_coalesce(Duration::from_micros(us));
    }
    let mode = std::env::var("IN_PLACE").unwrap_or_default();
    let _ = r.try_recv().unwrap(); // registers (extended bus)
    let mut got = 0u64;
    let mut buf = vec![0u8; r.max_frame_len()];
    let batch: usize = std::env::var("BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let mut seqs: Vec<[u8; 8]> = Vec::with_capacity(batch);
    // The sequence number, looked at where the frame lies.
    let seq_of = |v: shmif::FrameView<'_>, _| {
        let mut seq = [0u8; 8];
        v.read(14, &mut seq);
        seq
    };
    'recv: loop {
        seqs.clear();
        match mode.as_str() {
            "batch" => match r.try_recv_batch_in_place(batch, &mut seqs, seq_of) {
                Ok(_) | Err(shmif::Error::LeftBehind) => {}
                Err(e) => panic!("{e}"),
            },
            "1" => seqs.extend(r.try_recv_in_place(seq_of).unwrap()),
            _ => seqs.extend(
                r.try_recv_into(&mut buf)
                    .unwrap()
                    .map(|_| <[u8; 8]>::try_from(&buf[14..22]).unwrap()),
            ),
        }
        if seqs.is_empty() {
            let _ = r.wait_for_wakeup(Some(Duration::from_secs(10))).unwrap();
        }
        for seq in &seqs {
            if *seq == u64::MAX.to_le_bytes() {
                break 'recv;
            }
            got += 1;
        }
    }
    let c = r.counters();
    println!("{got} {} {}", c.overrun_bytes, c.rx_naps);
}
