//! Chaos: a writer process is SIGKILLed at random moments, often while it
//! holds the bus lock on purpose. After every kill the surviving processes
//! must exchange frames again within 1 s, and no corrupt frame may ever be
//! delivered to anyone.
//!
//! A second test kills writers that do nothing but copy frames in, from a
//! second thread of the test process at random moments, so that most
//! kills land inside `append` (mid-copy), while the main thread keeps
//! checking that the survivors answer within 1 s.
//!
//! `SHMIF_CHAOS_ROUNDS` sets the number of rounds (default 200; the
//! mid-copy test runs half as many).

mod common;
use common::{field, fnv64, role, say, Kid};
use shmif::lowlevel::RawBus;
use shmif::{Bus, Interface, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

const DATA: [u8; 2] = [0x88, 0xb5];
const PROBE: [u8; 2] = [0x88, 0xb6];
const ECHO: [u8; 2] = [0x88, 0xb7];

/// A broadcast frame of `kind` with a body and an FNV-64 trailer.
fn frame(src: [u8; 6], kind: [u8; 2], seq: u64, body_len: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&kind);
    f.extend_from_slice(&seq.to_be_bytes());
    for i in 0..body_len {
        f.push((seq as usize ^ i) as u8);
    }
    let sum = fnv64(&f[14..]);
    f.extend_from_slice(&sum.to_be_bytes());
    f
}

/// The kind and sequence number of an intact frame; `Err` if corrupt.
fn check(f: &[u8]) -> Result<([u8; 2], u64), String> {
    if f.len() < 14 + 8 + 8 {
        return Err(format!("short frame: {} bytes", f.len()));
    }
    let (body, sum) = f[14..].split_at(f.len() - 22);
    if fnv64(body) != u64::from_be_bytes(sum.try_into().unwrap()) {
        return Err(format!("CORRUPT frame of {} bytes", f.len()));
    }
    Ok((
        [f[12], f[13]],
        u64::from_be_bytes(body[..8].try_into().unwrap()),
    ))
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
#[ignore = "entry point for the chaos test's child processes"]
fn chaos_child() {
    let Some((role, args)) = role() else {
        return;
    };
    match role.as_str() {
        "writer" => writer(Path::new(&args[0]), args[1].parse().unwrap()),
        "copier" => copier(Path::new(&args[0])),
        "echoer" => echoer(Path::new(&args[0]), false),
        "checker" => echoer(Path::new(&args[0]), true),
        _ => unreachable!(),
    }
}

/// Sends checksummed frames in bursts and holds the bus lock on purpose
/// between bursts, until killed.
fn writer(bus: &Path, seed: u64) {
    let ifc = Interface::attach(bus).unwrap();
    // The test-only hook: a second mapping whose lock it holds on purpose.
    let raw = Bus::open(bus, &OpenOptions::new()).unwrap();
    let mut rng = Rng(seed | 1);
    say("ready");
    let mac = ifc.mac().0;
    let mut seq = 0u64;
    loop {
        for _ in 0..rng.below(40) {
            let len = rng.below(1400) as usize;
            ifc.send(&frame(mac, DATA, seq, len)).unwrap();
            seq += 1;
        }
        if rng.below(2) == 0 {
            let _g = raw.lock();
            std::thread::sleep(Duration::from_micros(rng.below(8000)));
        }
    }
}

/// Sends the same batch of 64 large checksummed frames as fast as it can,
/// until killed: nearly all its time is spent copying inside the lock.
fn copier(bus: &Path) {
    let ifc = Interface::attach(bus).unwrap();
    let mac = ifc.mac().0;
    // Addressed to a MAC nobody has: the promiscuous checker checks every
    // one; the echoer and the test process pass them over without copying
    // them, so that they keep up with the probes.
    let batch: Vec<Vec<u8>> = (0..64u64)
        .map(|k| {
            let mut f = frame(mac, DATA, k, 1000 + (k as usize * 31) % 470);
            f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
            f
        })
        .collect();
    say("ready");
    loop {
        ifc.send_batch(batch.iter().map(|f| &f[..])).unwrap();
    }
}

/// Answers every probe with an echo and checks every frame it sees; on
/// stdin EOF prints its tallies. A `checker` sees every frame on the bus
/// (promiscuous) and only checks.
fn echoer(bus: &Path, checker: bool) {
    let ifc = std::sync::Arc::new(Interface::attach(bus).unwrap());
    ifc.set_promiscuous(checker);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        let ifc = ifc.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            ifc.down();
        });
    }
    say("ready");
    let (mut good, mut corrupt, mut echoed) = (0u64, 0u64, 0u64);
    let mac = ifc.mac().0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let f = match ifc.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(_) => break,
        };
        match check(&f.data) {
            Ok((kind, seq)) => {
                good += 1;
                if kind == PROBE && !checker {
                    ifc.send(&frame(mac, ECHO, seq, 16)).unwrap();
                    echoed += 1;
                }
            }
            Err(e) => {
                corrupt += 1;
                eprintln!("echoer: {e}");
            }
        }
    }
    let c = ifc.counters();
    say(&format!(
        "tally good={good} corrupt={corrupt} echoed={echoed} overruns={} malformed={} takeovers={} resets={}",
        c.overruns, c.malformed, c.lock_takeovers, c.ring_resets
    ));
}

/// Starts a child of `role`, lets it run for `pause` once it is ready, and
/// SIGKILLs it; whether it died holding the bus lock.
fn kill_one(bus: &Path, role: &str, args: &[String], pause: Duration) -> bool {
    let mut w = Kid::spawn("chaos_child", role, args);
    w.expect("ready");
    std::thread::sleep(pause);
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    lock_word(bus) == 1
}

fn lock_word(bus: &Path) -> u32 {
    let b = std::fs::read(bus).unwrap();
    u32::from_ne_bytes(b[24..28].try_into().unwrap())
}

/// Sends probe `seq` (again every `resend`, if given) and waits up to 1 s
/// for its echo, checking every frame that arrives meanwhile. Returns
/// whether the echo came, and how many intact and corrupt frames arrived.
fn probe(me: &Interface, seq: u64, resend: Option<Duration>) -> (bool, u64, u64) {
    let limit = Duration::from_secs(1);
    let start = Instant::now();
    let mut sent_at = start;
    me.send(&frame(me.mac().0, PROBE, seq, 32)).unwrap();
    let (mut good, mut corrupt) = (0, 0);
    while start.elapsed() < limit {
        if resend.is_some_and(|r| sent_at.elapsed() >= r) {
            me.send(&frame(me.mac().0, PROBE, seq, 32)).unwrap();
            sent_at = Instant::now();
        }
        let wait = resend
            .unwrap_or(limit)
            .min(limit.saturating_sub(start.elapsed()));
        let Some(f) = me.recv_timeout(wait).unwrap() else {
            continue;
        };
        match check(&f.data) {
            Ok((kind, s)) => {
                good += 1;
                if kind == ECHO && s == seq {
                    return (true, good, corrupt);
                }
            }
            Err(e) => {
                corrupt += 1;
                eprintln!("test process: {e}");
            }
        }
    }
    (false, good, corrupt)
}

#[test]
fn survivors_keep_talking_while_writers_are_killed() {
    let rounds: usize = std::env::var("SHMIF_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("chaos: {rounds} rounds, seed {seed}");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let me = Interface::attach(&bus).unwrap();
    let busarg = bus.display().to_string();
    let mut echoer = Kid::spawn("chaos_child", "echoer", std::slice::from_ref(&busarg));
    echoer.expect("ready");

    let (mut in_lock, mut worst, mut corrupt_here, mut good_here) = (0, Duration::ZERO, 0, 0);
    for round in 0..rounds {
        let args = [busarg.clone(), rng.below(u64::MAX).to_string()];
        let pause = Duration::from_micros(500 + rng.below(20_000));
        if kill_one(&bus, "writer", &args, pause) {
            in_lock += 1;
        }
        // The survivors must talk again within 1 s.
        let start = Instant::now();
        let (answered, good, corrupt) = probe(&me, round as u64, None);
        good_here += good;
        corrupt_here += corrupt;
        let took = start.elapsed();
        worst = worst.max(took);
        assert!(answered, "round {round}: no echo within 1 s (seed {seed})");
    }
    echoer.stdin.take();
    let tally = echoer.expect("tally");
    let c = me.counters();
    eprintln!(
        "chaos: {rounds} kills, {in_lock} while holding the lock; slowest recovery {worst:?}; \
         test process: {good_here} good, {corrupt_here} corrupt, takeovers {}, resets {}, overruns {}; echoer: {tally}",
        c.lock_takeovers, c.ring_resets, c.overruns
    );
    assert_eq!(
        corrupt_here, 0,
        "corrupt frames delivered to the test process"
    );
    assert!(tally.contains("corrupt=0"), "echoer: {tally}");
    assert!(
        in_lock * 5 >= rounds,
        "only {in_lock} of {rounds} kills hit the lock: the test did not test recovery"
    );
}

#[test]
fn survivors_keep_talking_while_writers_are_killed_mid_copy() {
    let rounds: usize = std::env::var("SHMIF_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
        / 2;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("chaos mid-copy: {rounds} rounds, seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let me = Interface::attach(&bus).unwrap();
    let busarg = bus.display().to_string();
    let mut echoer = Kid::spawn("chaos_child", "echoer", std::slice::from_ref(&busarg));
    echoer.expect("ready");
    let mut checker = Kid::spawn("chaos_child", "checker", std::slice::from_ref(&busarg));
    checker.expect("ready");

    // The killer: a second thread of this process. It stops early if this
    // thread panics (and the bus directory goes).
    struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let abort = Stop(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
        false,
    )));
    let killer = {
        let (busarg, bus, done) = (busarg.clone(), bus.clone(), done.clone());
        let abort = abort.0.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(seed | 1);
            let mut in_lock = 0;
            for _ in 0..rounds {
                if abort.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let pause = Duration::from_micros(200 + rng.below(5_000));
                if kill_one(&bus, "copier", std::slice::from_ref(&busarg), pause) {
                    in_lock += 1;
                    // One recovery at a time: the next copier starts once
                    // the dead one's lock has been taken over and freed.
                    let t = Instant::now();
                    while lock_word(&bus) == 1 && t.elapsed() < Duration::from_secs(2) {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            in_lock
        })
    };
    let (mut probes, mut worst, mut corrupt_here) = (0u64, Duration::ZERO, 0);
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        // A copier floods the bus faster than anyone reads it, so a probe
        // or its echo may be overwritten unread (a hub's loss, counted as
        // an overrun): the probe is repeated every 10 ms until answered.
        let start = Instant::now();
        let (answered, _, corrupt) = probe(&me, probes, Some(Duration::from_millis(10)));
        corrupt_here += corrupt;
        worst = worst.max(start.elapsed());
        assert!(answered, "probe {probes}: no echo within 1 s (seed {seed})");
        probes += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let in_lock = killer.join().unwrap();
    drop(abort);
    echoer.stdin.take();
    checker.stdin.take();
    let tally = echoer.expect("tally");
    let checked = checker.expect("tally");
    let c = me.counters();
    eprintln!(
        "chaos mid-copy: {rounds} kills, {in_lock} inside the lock; {probes} probes, slowest {worst:?}; \
         test process: {corrupt_here} corrupt, takeovers {}, resets {}, repairs {}; echoer: {tally}; \
         checker: {checked}",
        c.lock_takeovers, c.ring_resets, c.ring_repairs
    );
    assert!(checked.contains("corrupt=0"), "checker: {checked}");
    assert!(
        field(&checked, "good") > 10_000,
        "the checker saw too little: {checked}"
    );
    assert_eq!(
        corrupt_here, 0,
        "corrupt frames delivered to the test process"
    );
    assert!(tally.contains("corrupt=0"), "echoer: {tally}");
    assert!(
        in_lock * 10 >= rounds,
        "only {in_lock} of {rounds} kills hit the lock: the test did not test mid-copy kills"
    );
}
