//! Taking over a bus lock left by a dead or stuck holder, and repairing the
//! ring it left behind.

use shmif::lowlevel::holder_tag;
use shmif::wire::BUS_HEADER_LEN;
use shmif::{Interface, MacAddr, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn poke(bus: &Path, off: u64, v: u32) {
    let f = std::fs::OpenOptions::new().write(true).open(bus).unwrap();
    f.write_all_at(&v.to_ne_bytes(), off).unwrap();
}

fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

fn bcast(src: MacAddr, tag: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5, tag]);
    f.resize(60, tag);
    f
}

#[test]
fn a_dead_holders_lock_is_taken_over_and_a_broken_ring_reset() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = Interface::attach(&bus).unwrap();
    let b = Interface::attach(&bus).unwrap();
    for k in 0..20 {
        a.send(&bcast(a.mac(), k)).unwrap();
    }
    while b.try_recv().unwrap().is_some() {}
    // A holder that died mid-write: lock held, its pid recorded, and the
    // length of a frame in the middle of the chain smashed.
    poke(&bus, 24, 1);
    poke(&bus, 28, holder_tag(dead_pid()));
    poke(&bus, (BUS_HEADER_LEN + 24 + 84 * 3) as u64, 0xffff);
    let start = Instant::now();
    a.send(&bcast(a.mac(), 99)).unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(100),
        "not robbed before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    let c = a.counters();
    assert_eq!((c.lock_takeovers, c.ring_resets), (1, 1));
    // b resynchronises and gets the new frame, nothing else.
    let f = b.recv_timeout(Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(f.data[14], 99);
    assert!(b.counters().overruns >= 1);
    assert!(b.try_recv().unwrap().is_none());
    let bytes = std::fs::read(&bus).unwrap();
    assert_eq!(&bytes[24..28], &[0, 0, 0, 0], "lock released");
}

#[test]
fn a_live_holder_is_never_robbed() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = std::sync::Arc::new(Interface::attach(&bus).unwrap());
    // Our own (live) process recorded as holder.
    poke(&bus, 24, 1);
    poke(&bus, 28, holder_tag(std::process::id()));
    let a2 = a.clone();
    let t = std::thread::spawn(move || {
        a2.send(&bcast(a2.mac(), 1)).unwrap();
        Instant::now()
    });
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(!t.is_finished(), "a live holder's lock was taken");
    let released = Instant::now();
    poke(&bus, 28, 0);
    poke(&bus, 24, 0);
    let sent_at = t.join().unwrap();
    assert!(sent_at >= released);
    assert_eq!(a.counters().lock_takeovers, 0);
}

#[test]
fn an_unidentified_stuck_holder_is_taken_over_after_the_timeout_or_never() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let patient = Interface::new()
        .with_open_options(OpenOptions::new().stuck_lock_timeout(Some(Duration::from_millis(300))));
    patient.set_link(&bus).unwrap();
    patient.up().unwrap();
    // As a NetBSD peer that died in the lock leaves it: 1, nothing recorded.
    poke(&bus, 24, 1);
    poke(&bus, 28, 0);
    let start = Instant::now();
    patient.send(&bcast(patient.mac(), 1)).unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(patient.counters().lock_takeovers, 1);

    // With no timeout, NetBSD's behaviour: wait for as long as it takes.
    let never = std::sync::Arc::new(
        Interface::new().with_open_options(OpenOptions::new().stuck_lock_timeout(None)),
    );
    never.set_link(&bus).unwrap();
    never.up().unwrap();
    poke(&bus, 24, 1);
    let n2 = never.clone();
    let t = std::thread::spawn(move || n2.send(&bcast(n2.mac(), 2)).unwrap());
    std::thread::sleep(Duration::from_millis(800));
    assert!(!t.is_finished());
    poke(&bus, 24, 0);
    t.join().unwrap();
    assert_eq!(never.counters().lock_takeovers, 0);
}
