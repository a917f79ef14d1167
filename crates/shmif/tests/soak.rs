//! Soak: 8 writer processes and 8 reader processes on one bus, writers as
//! fast as they can (so readers are overrun), checksummed payloads.
//!
//! Every reader must get zero corrupt frames, and every frame it did not get
//! must be accounted for by its overrun counters, to the byte: the frames a
//! reader saw skipped (sequence gaps) add up exactly to the ring bytes its
//! overruns report lost.
//!
//! `SHMIF_SOAK_SECS` sets how long the writers write (default 6, as in CI;
//! the long run is `SHMIF_SOAK_SECS=60 cargo test --release -p shmif
//! --test soak`).

mod common;
use common::{field, fnv64, role, say, Kid};
use shmif::wire::FRAME_HEADER_LEN;
use shmif::Interface;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const WRITERS: usize = 8;
const READERS: usize = 8;

/// Length of frame `seq` of writer `w`: 31 (Ethernet header, writer, seq,
/// checksum) to 1514 bytes, known to readers.
fn frame_len(w: u8, seq: u64) -> usize {
    31 + (fnv64(&[&[w][..], &seq.to_le_bytes()].concat()) % 1484) as usize
}

fn make_frame(src: [u8; 6], w: u8, seq: u64) -> Vec<u8> {
    let len = frame_len(w, seq);
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5, w]);
    f.extend_from_slice(&seq.to_le_bytes());
    let mut x = seq ^ u64::from(w) << 56;
    while f.len() < len - 8 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        f.push((x >> 56) as u8);
    }
    let sum = fnv64(&f[14..]);
    f.extend_from_slice(&sum.to_le_bytes());
    f
}

#[test]
#[ignore = "entry point for the soak test's child processes"]
fn soak_child() {
    let Some((role, args)) = role() else {
        return;
    };
    let bus = Path::new(&args[0]);
    match role.as_str() {
        "writer" => writer(bus, args[1].parse().unwrap(), args[2].parse().unwrap()),
        "reader" => reader(bus),
        _ => unreachable!(),
    }
}

fn writer(bus: &Path, w: u8, secs: f64) {
    let ifc = Interface::attach(bus).unwrap();
    say("ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let mac = ifc.mac().0;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut seq = 0u64;
    while Instant::now() < end {
        // Bursts with short pauses now and then: both overrun and calm.
        let burst: Vec<Vec<u8>> = (0..16).map(|k| make_frame(mac, w, seq + k)).collect();
        ifc.send_batch(burst.iter().map(|f| &f[..])).unwrap();
        seq += 16;
        if seq % 4096 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    say(&format!("sent n={seq}"));
}

fn reader(bus: &Path) {
    let ifc = std::sync::Arc::new(Interface::attach(bus).unwrap());
    say("ready");
    // The final counts arrive on stdin once the writers are done.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u64>>();
    std::thread::spawn(move || {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        let counts = line
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        let _ = tx.send(counts);
    });
    let mut expect = [0u64; WRITERS];
    let (mut got, mut corrupt, mut missed_frames, mut missed_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut finals: Option<Vec<u64>> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if finals.is_none() {
            finals = rx.try_recv().ok();
        }
        let frame = ifc.recv_timeout(Duration::from_millis(200)).unwrap();
        let Some(frame) = frame else {
            // The writers are done and the ring is drained.
            if finals.is_some() || Instant::now() > deadline {
                break;
            }
            continue;
        };
        let d = &frame.data;
        let (body, sum) = d[14..].split_at(d.len() - 22);
        if fnv64(body) != u64::from_le_bytes(sum.try_into().unwrap()) {
            corrupt += 1;
            continue;
        }
        let w = body[0];
        let seq = u64::from_le_bytes(body[1..9].try_into().unwrap());
        if d.len() != frame_len(w, seq) || seq < expect[w as usize] {
            corrupt += 1;
            continue;
        }
        for k in expect[w as usize]..seq {
            missed_frames += 1;
            missed_bytes += (FRAME_HEADER_LEN + frame_len(w, k)) as u64;
        }
        expect[w as usize] = seq + 1;
        got += 1;
    }
    // A writer's last frames can be lost to a late overrun with nothing of
    // that writer after them to show the gap: count them now.
    let finals = finals.unwrap_or_default();
    for (w, &n) in finals.iter().enumerate() {
        for k in expect[w]..n {
            missed_frames += 1;
            missed_bytes += (FRAME_HEADER_LEN + frame_len(w as u8, k)) as u64;
        }
    }
    let c = ifc.counters();
    say(&format!(
        "result got={got} corrupt={corrupt} missed={missed_frames} missed_bytes={missed_bytes} \
         overruns={} overrun_bytes={} unmeasured={} malformed={} takeovers={} resets={}",
        c.overruns,
        c.overrun_bytes,
        c.overruns_unmeasured,
        c.malformed,
        c.lock_takeovers,
        c.ring_resets
    ));
}

#[test]
fn eight_writers_eight_readers_no_corruption_and_every_loss_accounted_for() {
    let secs: f64 = std::env::var("SHMIF_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6.0);
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.display().to_string();
    let mut readers: Vec<Kid> = (0..READERS)
        .map(|_| Kid::spawn("soak_child", "reader", std::slice::from_ref(&b)))
        .collect();
    for r in &mut readers {
        r.expect("ready");
    }
    let mut writers: Vec<Kid> = (0..WRITERS)
        .map(|w| {
            Kid::spawn(
                "soak_child",
                "writer",
                &[b.clone(), w.to_string(), secs.to_string()],
            )
        })
        .collect();
    for w in &mut writers {
        w.expect("ready");
    }
    for w in &mut writers {
        writeln!(w.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let sent: Vec<u64> = writers
        .iter_mut()
        .map(|w| field(&w.expect("sent"), "n"))
        .collect();
    let total: u64 = sent.iter().sum();
    let line = sent
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    for r in &mut readers {
        writeln!(r.stdin.as_mut().unwrap(), "{line}").unwrap();
    }
    eprintln!("soak: {secs} s, writers sent {sent:?} = {total} frames");
    for (i, r) in readers.iter_mut().enumerate() {
        let res = r.expect("result");
        eprintln!("reader {i}: {res}");
        assert_eq!(field(&res, "corrupt"), 0, "reader {i}: {res}");
        assert_eq!(field(&res, "malformed"), 0, "reader {i}: {res}");
        assert_eq!(
            field(&res, "got") + field(&res, "missed"),
            total,
            "reader {i}: every frame delivered or missed: {res}"
        );
        assert_eq!(field(&res, "unmeasured"), 0, "reader {i}: {res}");
        assert_eq!(
            field(&res, "missed_bytes"),
            field(&res, "overrun_bytes"),
            "reader {i}: what it missed is exactly what its overruns report: {res}"
        );
    }
}
