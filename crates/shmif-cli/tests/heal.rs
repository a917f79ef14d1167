//! A bus that heals, with the `shmif` commands: garbage written into a bus
//! (random ring bytes, random `first`/`last`/`gen`, half the time under the
//! lock) stops no `shmif host`, `tcp-send` or `send`, and within 1 s of the
//! garbage stopping a new verified TCP transfer and a flood succeed.
//!
//! The library-level version, with checksummed frames, is
//! `crates/shmif/tests/heal.rs`.

mod common;

use common::{shmif, show, Proc, Stream, BROADCAST};
use shmif::lowlevel::RawBus;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DATA: u64 = 1024 * 1024 - 32;

/// Writes garbage into the bus until `stop`; returns how many writes.
fn garbage(bus: &Path, seed: u64, stop: &AtomicBool) -> u64 {
    let raw = shmif::Bus::open(bus, &shmif::OpenOptions::new()).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(bus).unwrap();
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let _guard = (next() % 2 == 0).then(|| raw.lock());
        n += 1;
        match next() % 5 {
            0 | 1 => {
                let len = 1 + next() % 2000;
                let off = 32 + next() % (DATA - len);
                let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                file.write_all_at(&bytes, off).unwrap();
            }
            2 => file
                .write_all_at(&((next() % (DATA + 1)) as u32).to_ne_bytes(), 16)
                .unwrap(),
            3 => file
                .write_all_at(&(next() as u32).to_ne_bytes(), 20)
                .unwrap(),
            _ => file.write_all_at(&next().to_ne_bytes(), 8).unwrap(),
        }
        drop(_guard);
        std::thread::sleep(Duration::from_micros(next() % 2000));
    }
    n
}

fn start_host(bus: &Path, args: &[&str]) -> Proc {
    let mut h = Proc::shmif("host", bus, args, Stream::Lines, Stream::Inherit);
    let up = h
        .out()
        .expect(|l| l.contains(" up on "), Duration::from_secs(10));
    assert!(up.starts_with("host "), "{up}");
    h
}

#[test]
fn garbage_on_the_bus_stops_no_command_and_traffic_flows_within_a_second_after() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap().to_string();
    let mut server = start_host(
        &bus,
        &[
            "--ip",
            "10.0.0.1/24",
            "--tcp-sink",
            "9000",
            "--tcp-echo",
            "7",
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let writer = {
        let (bus, stop) = (bus.clone(), stop.clone());
        std::thread::spawn(move || garbage(&bus, seed, &stop))
    };
    // While the garbage flies: transfers and floods. They may be slow or
    // lose their connection, but none may crash or exit on a bus error.
    let start = Instant::now();
    let mut during = Vec::new();
    while start.elapsed() < Duration::from_secs(3) {
        let o = shmif(&[
            "tcp-send",
            &b,
            "--ip",
            "10.0.0.2/24",
            "10.0.0.1:9000",
            "--megabytes",
            "1",
        ]);
        during.push(o);
        let mut flood = vec!["send", &b[..]];
        flood.extend_from_slice(&BROADCAST);
        flood.extend_from_slice(&["--payload", "68656c6c6f", "--count", "2000"]);
        let o = shmif(&flood);
        assert!(o.status.success(), "send during garbage: {}", show(&o));
    }
    stop.store(true, Ordering::SeqCst);
    let writes = writer.join().unwrap();
    let stopped = Instant::now();
    for o in &during {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.code().is_some(), "tcp-send killed: {}", show(o));
        assert!(
            !err.contains("corrupt") && !err.contains("panicked"),
            "tcp-send failed on the bus itself: {}",
            show(o)
        );
    }
    assert!(
        server.running(),
        "the server host exited during the garbage"
    );

    // After: a verified transfer, done within 1 s, and a flood.
    let o = shmif(&[
        "tcp-send",
        &b,
        "--ip",
        "10.0.0.3/24",
        "10.0.0.1:9000",
        "--megabytes",
        "1",
    ]);
    assert!(
        o.status.success(),
        "tcp-send after the garbage: {}",
        show(&o)
    );
    let report = server.out().expect(
        |l| l.starts_with("tcp-sink 9000:") && l.contains("from 10.0.0.3"),
        Duration::from_secs(10),
    );
    assert!(report.contains("pattern ok"), "{report}");
    let took = stopped.elapsed();
    let o = shmif(&[
        "tcp-send",
        &b,
        "--ip",
        "10.0.0.3/24",
        "10.0.0.1:7",
        "--megabytes",
        "1",
        "--expect-echo",
    ]);
    assert!(o.status.success(), "echo after the garbage: {}", show(&o));
    let mut flood = vec!["send", &b[..]];
    flood.extend_from_slice(&BROADCAST);
    flood.extend_from_slice(&["--payload", "68656c6c6f", "--count", "2000"]);
    let o = shmif(&flood);
    assert!(o.status.success(), "{}", show(&o));
    eprintln!(
        "heal: {writes} garbage writes in 3 s; {} transfers during it ({} succeeded); \
         1 MiB verified {took:?} after the garbage stopped",
        during.len(),
        during.iter().filter(|o| o.status.success()).count()
    );
    assert!(
        took < Duration::from_secs(1),
        "the first transfer after the garbage was verified only {took:?} after it stopped"
    );
    assert!(server.running(), "the server host exited");
}

/// Runs a host with both outputs captured, waiting until it is up.
fn start_host_capturing(bus: &Path, args: &[&str]) -> Proc {
    let mut h = Proc::shmif("host", bus, args, Stream::Lines, Stream::Lines);
    h.out()
        .expect(|l| l.contains(" up on "), Duration::from_secs(10));
    h
}

#[test]
fn repairs_are_reported_once_per_episode_and_counted_in_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let mut a = start_host_capturing(&bus, &["--ip", "10.0.0.1/24"]);
    let stop = Arc::new(AtomicBool::new(false));
    let g = {
        let (bus, stop) = (bus.clone(), stop.clone());
        std::thread::spawn(move || garbage(&bus, 0x5eed, &stop))
    };
    // Host B pings A all through the garbage: both hosts send, so both
    // meet broken rings and repair them.
    let mut b = start_host_capturing(
        &bus,
        &[
            "--ip",
            "10.0.0.2/24",
            "--ping",
            "10.0.0.1",
            "--ping-count",
            "30",
            "--ping-interval",
            "0.05",
            "--ping-timeout",
            "0.2",
            "--exit-when-done",
        ],
    );
    b.wait(Duration::from_secs(30));
    stop.store(true, Ordering::SeqCst);
    let writes = g.join().unwrap();
    assert!(writes > 100, "only {writes} garbage writes");
    a.stop(rustix::process::Signal::TERM, Duration::from_secs(10));
    let mut total = 0;
    for (name, h) in [("A", &mut a), ("B", &mut b)] {
        let (out, _) = h.out().until_end(Duration::from_secs(5));
        let (err, _) = h.err().until_end(Duration::from_secs(5));
        let summary = out
            .iter()
            .find(|l| l.contains(": stopping ("))
            .unwrap_or_else(|| panic!("host {name}: no summary in {out:?}"));
        let repairs = summary
            .split("overruns, ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("host {name}: no repair count in {summary}"));
        let warnings = err.iter().filter(|l| l.contains("repaired it")).count();
        eprintln!("host {name}: {repairs} repairs, {warnings} warning lines");
        assert_eq!(
            warnings,
            usize::from(repairs > 0),
            "host {name}: one warning for one episode of {repairs} repairs: {err:?}"
        );
        total += repairs;
    }
    assert!(total > 0, "the garbage made nobody repair the bus");
}

#[test]
fn a_bus_truncated_under_a_listener_stays_as_it_was_left() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let mut listen = Proc::shmif("listen", &bus, &[], Stream::Null, Stream::Lines);
    common::wait_for(Duration::from_secs(10), "the bus", || {
        (std::fs::metadata(&bus).map(|m| m.len()).unwrap_or(0) > 0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bus)
        .unwrap()
        .set_len(0)
        .unwrap();
    // A frame's wake-up (a write to the file by another process) would be
    // the listener's cue; the truncation's own event is enough.
    let status = listen.wait(Duration::from_secs(10));
    let (err, _) = listen.err().until_end(Duration::from_secs(5));
    assert!(
        !status.success(),
        "listen kept going on a truncated bus: {err:?}"
    );
    assert!(
        err.iter().any(|l| l.contains("truncated")),
        "says what happened: {err:?}"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        std::fs::metadata(&bus).unwrap().len(),
        0,
        "the listener wrote into the file on its way out"
    );
}
