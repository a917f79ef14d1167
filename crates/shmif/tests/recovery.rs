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

/// An interface on `bus`, up, whose lock waits take an unrecorded holder's
/// lock over after `stuck` (`None`: never).
fn patient_on(bus: &Path, stuck: Option<Duration>) -> std::sync::Arc<Interface> {
    let a = Interface::new().with_open_options(OpenOptions::new().stuck_lock_timeout(stuck));
    a.set_link(bus).unwrap();
    a.up().unwrap();
    std::sync::Arc::new(a)
}

/// Sends one frame through `a` on another thread and waits up to 5 s for
/// it to go out; how long that took, or `None` if it never did.
fn timed_send(a: &std::sync::Arc<Interface>, tag: u8) -> Option<Duration> {
    let a2 = a.clone();
    let start = Instant::now();
    let t = std::thread::spawn(move || a2.send(&bcast(a2.mac(), tag)).unwrap());
    while !t.is_finished() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = start.elapsed();
    t.is_finished().then(|| {
        t.join().unwrap();
        took
    })
}

/// Starts a send through `a` on another thread and checks that it is still
/// waiting for the lock 800 ms later; the thread, for the caller to join
/// once it has freed the lock.
fn still_waiting(a: &std::sync::Arc<Interface>, tag: u8) -> std::thread::JoinHandle<()> {
    let a2 = a.clone();
    let t = std::thread::spawn(move || a2.send(&bcast(a2.mac(), tag)).unwrap());
    std::thread::sleep(Duration::from_millis(800));
    assert!(!t.is_finished(), "taken over with no stuck-lock timeout");
    t
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
    let patient = patient_on(&bus, Some(Duration::from_millis(300)));
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
    let never = patient_on(&bus, None);
    poke(&bus, 24, 1);
    let t = still_waiting(&never, 2);
    poke(&bus, 24, 0);
    t.join().unwrap();
    assert_eq!(never.counters().lock_takeovers, 0);
}

fn spare_and_lock(bus: &Path) -> (u32, u32) {
    let b = std::fs::read(bus).unwrap();
    (
        u32::from_ne_bytes(b[28..32].try_into().unwrap()),
        u32::from_ne_bytes(b[24..28].try_into().unwrap()),
    )
}

/// Review item: after a waiter's claim of the spare word succeeded, the
/// lock may turn out to have been released meanwhile (a NetBSD holder,
/// which never writes the spare word, let go). The claim must then be
/// withdrawn: a spare word naming a live peer of ours while the lock word
/// is 0 would make the next NetBSD holder that dies in the lock look
/// alive to every waiter, and the bus would be stuck for good.
#[test]
fn released_meanwhile_takeover_leaves_no_holder_tag_behind() {
    use shmif::lowlevel::RawBus;
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let raw = shmif::Bus::open(&bus, &OpenOptions::new()).unwrap();
    // A NetBSD peer held the lock (spare word 0) and has just released it.
    poke(&bus, 24, 0);
    poke(&bus, 28, 0);
    assert!(raw.take_over(0).is_none(), "nothing to take over");
    assert_eq!(
        spare_and_lock(&bus),
        (0, 0),
        "the withdrawn claim left a holder tag behind"
    );
    // Another waiter's claim of a tag that is no longer there fails and
    // changes nothing.
    poke(&bus, 28, holder_tag(dead_pid()));
    poke(&bus, 28, 0);
    assert!(raw.take_over(holder_tag(dead_pid())).is_none());
    assert_eq!(spare_and_lock(&bus), (0, 0));
    // The next NetBSD holder dies in the lock: it is taken over after the
    // stuck-lock timeout, not judged alive for ever.
    poke(&bus, 24, 1);
    let patient = std::sync::Arc::new(Interface::new().with_open_options(
        OpenOptions::new().stuck_lock_timeout(Some(Duration::from_millis(200))),
    ));
    // set_link takes the lock too (to check the ring), so attach in the thread.
    let p = patient.clone();
    let path = bus.clone();
    let t = std::thread::spawn(move || {
        p.set_link(&path).unwrap();
        p.up().unwrap();
        p.send(&bcast(p.mac(), 1)).unwrap();
    });
    let start = Instant::now();
    while !t.is_finished() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        t.is_finished(),
        "the dead NetBSD holder's lock was never taken over"
    );
    t.join().unwrap();
    assert_eq!(patient.counters().lock_takeovers, 1);
    // A real holding through the low-level module, released: no tag left.
    drop(raw.lock());
    assert_eq!(spare_and_lock(&bus), (0, 0));
}

/// A lock whose spare word names a live process of ours that has no
/// mapping of this bus (a stale tag whose pid was reused, or one written by
/// a hostile peer) cannot be held by it: it is judged unidentifiable and
/// taken over after the stuck-lock timeout, not waited on for ever.
#[test]
fn a_lock_naming_a_live_process_that_does_not_map_the_bus_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let patient = patient_on(&bus, Some(Duration::from_millis(300)));
    let mut stranger = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    poke(&bus, 24, 1);
    poke(&bus, 28, holder_tag(stranger.id()));
    let finished = timed_send(&patient, 1).is_some();
    if !finished {
        poke(&bus, 24, 0);
    }
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(
        finished,
        "a live process that is not on the bus was judged its lock holder"
    );
    assert_eq!(patient.counters().lock_takeovers, 1);
}

/// A peer of ours claims the spare word before it swaps the lock word and
/// marks the claim held after, and undoes the three in the opposite order
/// on release: whichever instruction it is killed at, what it leaves names
/// it, and the bus is free again within the dead-holder grace (100 ms),
/// not after the 2 s an unrecorded holder (a NetBSD peer) costs. Before the
/// claim came first, a kill between the swap and the tag left (1, 0).
#[test]
fn a_holder_killed_at_any_step_of_taking_or_releasing_the_lock_leaves_it_on_record() {
    use shmif::lowlevel::claim_tag;
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = std::sync::Arc::new(Interface::attach(&bus).unwrap());
    let dead = dead_pid();
    // (lock word, spare word, a takeover expected) after a kill:
    let states = [
        // claimed, not yet swapped; or released, tag not yet cleared
        (0, claim_tag(dead), false),
        // swapped, not yet marked; or unmarked, not yet released
        (1, claim_tag(dead), true),
        // holding
        (1, holder_tag(dead), true),
    ];
    let mut takeovers = 0;
    for (k, (lock, spare, taken_over)) in states.into_iter().enumerate() {
        poke(&bus, 24, lock);
        poke(&bus, 28, spare);
        let took = timed_send(&a, k as u8).expect("the bus stayed locked");
        assert!(
            took < Duration::from_millis(600),
            "state ({lock}, {spare:#x}): {took:?}, more than the grace"
        );
        takeovers += taken_over as u64;
        assert_eq!(
            a.counters().lock_takeovers,
            takeovers,
            "state ({lock}, {spare:#x})"
        );
        assert_eq!(spare_and_lock(&bus), (0, 0), "state ({lock}, {spare:#x})");
    }
}

/// A claim with the lock word free that its live maker does not finish (a
/// process stopped between the two steps) is cleared after the grace, so
/// that a stopped peer stops nobody; and a live peer's unmarked claim with
/// the lock word set (it may be claiming while a NetBSD peer holds the
/// lock) is waited on as an unrecorded holder: taken over after the
/// stuck-lock timeout, never without one.
#[test]
fn a_live_peers_unfinished_claim_is_cleared_or_waited_on_as_unrecorded() {
    use shmif::lowlevel::claim_tag;
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = patient_on(&bus, Some(Duration::from_millis(400)));
    // This very process, alive and mapping the bus, as the claim's maker.
    let me = claim_tag(std::process::id());
    poke(&bus, 24, 0);
    poke(&bus, 28, me);
    let took = timed_send(&a, 1).expect("a stale claim stopped the bus");
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(800),
        "{took:?}"
    );
    assert_eq!(a.counters().lock_takeovers, 0, "nothing was held");
    assert_eq!(spare_and_lock(&bus), (0, 0));

    poke(&bus, 24, 1);
    poke(&bus, 28, me);
    let took = timed_send(&a, 2).expect("never taken over");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}: not the stuck-lock timeout"
    );
    assert_eq!(a.counters().lock_takeovers, 1);
    assert_eq!(spare_and_lock(&bus), (0, 0));

    let never = patient_on(&bus, None);
    poke(&bus, 24, 1);
    poke(&bus, 28, me);
    let t = still_waiting(&never, 3);
    poke(&bus, 24, 0);
    poke(&bus, 28, 0);
    t.join().unwrap();
}

/// A registered reader of an extended bus whose window (opened by the
/// writers' cursor hint, without the lock) begins with an impossible entry
/// and whose lock a dead holder left held: it must not keep watching the
/// cursor (which opens the same window again and again while the lock
/// stays held, until the call's step bound gives up with nothing), but
/// queue for the lock and take it over after the grace.
#[test]
fn a_registered_reader_facing_an_impossible_window_and_a_dead_holder_takes_the_lock_over() {
    use shmif::wire::ext::EXT_HEADER_LEN;
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    shmif::Bus::create(&bus, 1 << 20, 1514, &OpenOptions::new()).unwrap();
    let a = Interface::attach(&bus).unwrap();
    let b = std::sync::Arc::new(Interface::attach(&bus).unwrap());
    assert!(b.try_recv().unwrap().is_none());
    assert!(b.is_registered());
    a.send(&bcast(a.mac(), 1)).unwrap();
    // The new frame's length (at `last`, where b's window starts) made
    // impossible; then the lock held by a holder that is gone.
    let mut last = [0u8; 4];
    std::fs::File::open(&bus)
        .unwrap()
        .read_exact_at(&mut last, 20)
        .unwrap();
    let last = u64::from(u32::from_ne_bytes(last));
    poke(&bus, EXT_HEADER_LEN as u64 + last, u32::MAX);
    poke(&bus, 24, 1);
    poke(&bus, 28, holder_tag(dead_pid()));
    let b2 = b.clone();
    let start = Instant::now();
    let t = std::thread::spawn(move || b2.try_recv().map(|f| f.is_some()));
    while !t.is_finished() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(t.is_finished(), "the receive still runs after 5 s");
    assert!(!t.join().unwrap().unwrap(), "nothing intact to deliver");
    let c = b.counters();
    assert_eq!(
        c.lock_takeovers, 1,
        "the dead holder's lock was not taken over: {c:?}"
    );
    // The bus carries traffic again.
    a.send(&bcast(a.mac(), 2)).unwrap();
    let f = b.recv_timeout(Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(f.data[14], 2);
}
