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
//! Both run on a version-3 bus and on an extended bus
//! (`EXTENDED-FORMAT.md`: 4 MiB, frames up to 9,000 bytes), where every
//! reader of ours is registered and lossless and writers wait for it. A
//! third test, on the extended bus, kills registered readers as well as
//! writers at random moments (inside the lock while copying frames out,
//! or holding writers back with the ring full): a writer must never wait
//! for a dead reader for long (it is dropped after 100 ms), the bus must
//! carry traffic again within 1 s of every kill, and no dead reader may
//! keep its slot.
//!
//! A fourth kills a process that does nothing but take the lock and let it
//! go, so that kills land at every step of the lock protocol: none may
//! leave the lock set with no holder on record (which waiters must take
//! for a NetBSD holder and wait 2 s on), and the lock must be free again
//! within the dead-holder grace.
//!
//! `SHMIF_CHAOS_ROUNDS` sets the number of rounds (default 200; the
//! mid-copy tests run half as many, the extended bus's tests a quarter, the
//! reader test a quarter).

mod common;
use common::{field, fnv64, role, say, Kid};
use shmif::lowlevel::{claim_tag, holder_tag, RawBus};
use shmif::wire::ext::{field as ext_field, slot, READER_SLOTS, READER_SLOT_LEN, READER_TABLE};
use shmif::{Bus, Interface, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The bus a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// NetBSD's format: 1 MiB, 1514-byte frames, every reader lossy.
    V3,
    /// Ours: registered lossless readers, jumbo frames.
    Extended,
}

/// The extended bus's size and frame limit.
const EXT_SIZE: u64 = 4 << 20;
const EXT_MAX_FRAME: u32 = 9000;

/// A fresh bus of `kind` in `dir` (a version-3 bus is made by the first
/// attach).
fn new_bus(kind: Kind, dir: &Path) -> PathBuf {
    let bus = dir.join("bus");
    if kind == Kind::Extended {
        Bus::create(&bus, EXT_SIZE, EXT_MAX_FRAME, &OpenOptions::new()).unwrap();
    }
    bus
}

/// Rounds of a test: `SHMIF_CHAOS_ROUNDS` (default 200) divided by `div`.
fn rounds(div: usize) -> usize {
    std::env::var("SHMIF_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200usize)
        / div
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The longest body [`frame`] is given on a bus whose frame limit is `max`
/// (1,400 on a version-3 bus).
fn body_max(max: usize) -> usize {
    max - 114
}

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
        "victim" => victim(Path::new(&args[0]), args[1].parse().unwrap()),
        "locker" => locker(Path::new(&args[0])),
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
    let body = body_max(ifc.max_frame_len()) as u64;
    let mut seq = 0u64;
    loop {
        for _ in 0..rng.below(40) {
            let len = rng.below(body) as usize;
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
/// until killed: nearly all its time is spent copying inside the lock (or,
/// on an extended bus, waiting for the registered readers).
fn copier(bus: &Path) {
    let ifc = Interface::attach(bus).unwrap();
    let mac = ifc.mac().0;
    // 989 to 1,482 bytes of body on a version-3 bus, to 8,886 on ours.
    let top = body_max(ifc.max_frame_len()) + 84;
    // Addressed to a MAC nobody has: the promiscuous checker checks every
    // one; the echoer and the test process pass them over without copying
    // them, so that they keep up with the probes.
    let batch: Vec<Vec<u8>> = (0..64u64)
        .map(|k| {
            let mut f = frame(mac, DATA, k, top * 2 / 3 + (k as usize * 31) % (top / 3));
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
                    match ifc.send(&frame(mac, ECHO, seq, 16)) {
                        Ok(()) => echoed += 1,
                        // Taken down (after `stop` was set) since the
                        // receive above.
                        Err(shmif::Error::Down)
                            if stop.load(std::sync::atomic::Ordering::SeqCst) =>
                        {
                            break
                        }
                        Err(e) => panic!("echoer: send: {e}"),
                    }
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

/// A registered (lossless) reader that sees every frame (promiscuous) and
/// checks it, until killed: says `ready` once registered, and `corrupt`
/// for each corrupt frame (read from its pipe after its death). Between
/// batches it holds the bus lock on purpose half the time, as the writer
/// does, so that some kills find it holding the lock: a reader copies
/// frames out under the lock, but too briefly for a kill at a random
/// moment to land there often.
fn victim(bus: &Path, seed: u64) {
    let ifc = Interface::attach(bus).unwrap();
    let raw = Bus::open(bus, &OpenOptions::new()).unwrap();
    let mut rng = Rng(seed | 1);
    ifc.set_promiscuous(true);
    let _ = ifc.try_recv().unwrap();
    assert!(
        ifc.is_registered(),
        "no free reader slot: dead readers kept theirs"
    );
    say("ready");
    let check_one = |f: shmif::Frame| {
        if let Err(e) = check(&f.data) {
            say(&format!("corrupt {e}"));
        }
    };
    loop {
        for _ in 0..rng.below(64) {
            let Some(f) = ifc.try_recv().unwrap() else {
                break;
            };
            check_one(f);
        }
        if rng.below(2) == 0 {
            let _g = raw.lock();
            std::thread::sleep(Duration::from_micros(rng.below(5000)));
        } else if let Some(f) = ifc.recv_timeout(Duration::from_millis(1)).unwrap() {
            check_one(f);
        }
    }
}

/// Takes the bus lock and lets it go, nothing else, as fast as it can,
/// until killed: a kill then lands at a random step of taking or letting
/// go, each a few nanoseconds long.
fn locker(bus: &Path) {
    let raw = Bus::open(bus, &OpenOptions::new()).unwrap();
    say("ready");
    loop {
        drop(std::hint::black_box(raw.lock()));
    }
}

/// Starts a child of `role` and waits until it is ready.
fn start(role: &str, args: &[String]) -> Kid {
    let mut k = Kid::spawn("chaos_child", role, args);
    k.expect("ready");
    k
}

/// SIGKILLs `k` and reaps it; whether it died holding the bus lock.
fn kill(bus: &Path, k: &mut Kid) -> bool {
    k.child.kill().unwrap();
    let pid = k.child.id();
    k.child.wait().unwrap();
    held_by(bus, pid)
}

/// Starts a child of `role`, lets it run for `pause` once it is ready, and
/// SIGKILLs it; whether it died holding the bus lock.
fn kill_one(bus: &Path, role: &str, args: &[String], pause: Duration) -> bool {
    let mut w = start(role, args);
    std::thread::sleep(pause);
    kill(bus, &mut w)
}

/// The first `n` bytes of the bus file.
fn head(bus: &Path, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    std::fs::File::open(bus)
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    b
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}

fn lock_word(bus: &Path) -> u32 {
    u32_at(&head(bus, 32), 24)
}

/// Whether process `pid` (dead, unreaped or not) holds the bus lock: the
/// lock word is set and the spare word holds its tag, marked held or not
/// (a holder killed between swapping the lock word and marking its claim,
/// or between unmarking it and releasing, leaves it unmarked).
fn held_by(bus: &Path, pid: u32) -> bool {
    let h = head(bus, 32);
    let tag = u32_at(&h, 28);
    u32_at(&h, 24) == 1 && (tag == holder_tag(pid) || tag == claim_tag(pid))
}

/// Waits up to 2 s until `done()`; how long it took, `None` if it never was.
fn until(mut done: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        if done() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

/// The owners of the reader slots of an extended bus in use (owner set or
/// mask bit set), as (slot, owner tag).
fn reader_slots(bus: &Path) -> Vec<(usize, u32)> {
    let h = head(bus, READER_TABLE + READER_SLOTS * READER_SLOT_LEN);
    let mask = u64::from_ne_bytes(
        h[ext_field::READER_MASK..ext_field::READER_MASK + 8]
            .try_into()
            .unwrap(),
    );
    (0..READER_SLOTS)
        .map(|i| {
            (
                i,
                u32_at(&h, READER_TABLE + i * READER_SLOT_LEN + slot::OWNER),
            )
        })
        .filter(|&(i, owner)| owner != 0 || mask & (1 << i) != 0)
        .collect()
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
    writers_killed(Kind::V3, rounds(1));
}

#[test]
fn survivors_keep_talking_while_writers_are_killed_on_an_extended_bus() {
    writers_killed(Kind::Extended, rounds(4));
}

fn writers_killed(kind: Kind, rounds: usize) {
    let seed = seed();
    eprintln!("chaos ({kind:?}): {rounds} rounds, seed {seed}");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let bus = new_bus(kind, dir.path());
    let me = Interface::attach(&bus).unwrap();
    assert_eq!(me.is_extended(), kind == Kind::Extended);
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
        "chaos ({kind:?}): {rounds} kills, {in_lock} while holding the lock; slowest recovery {worst:?}; \
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
    mid_copy(Kind::V3, rounds(2));
}

#[test]
fn survivors_keep_talking_while_writers_are_killed_mid_copy_on_an_extended_bus() {
    mid_copy(Kind::Extended, rounds(4));
}

fn mid_copy(kind: Kind, rounds: usize) {
    let seed = seed();
    eprintln!("chaos mid-copy ({kind:?}): {rounds} rounds, seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let bus = new_bus(kind, dir.path());
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
                    let _ = until(|| lock_word(&bus) != 1);
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
        "chaos mid-copy ({kind:?}): {rounds} kills, {in_lock} inside the lock; {probes} probes, slowest {worst:?}; \
         test process: {corrupt_here} corrupt, takeovers {}, resets {}, repairs {}; echoer: {tally}; \
         checker: {checked}",
        c.lock_takeovers, c.ring_resets, c.ring_repairs
    );
    assert!(checked.contains("corrupt=0"), "checker: {checked}");
    // Some 150 KB a round at least, 15 MB in the default rounds (the
    // extended bus's frames are six times larger).
    let least = rounds as u64 * if kind == Kind::V3 { 100 } else { 40 };
    assert!(
        field(&checked, "good") > least,
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

/// What the killer thread of the reader test tallies.
#[derive(Debug, Default)]
struct Kills {
    readers: usize,
    readers_in_lock: usize,
    writers: usize,
    writers_in_lock: usize,
    /// The slowest time from a kill until the bus was whole again: the
    /// dead reader's slot freed by the flooding writer (and the lock taken
    /// over, if it died holding it), or a dead writer's lock freed.
    slowest: Duration,
    /// Kills after which that took over 1 s.
    late: Vec<String>,
    /// Corrupt frames the victims reported before they died.
    corrupt: usize,
}

#[test]
fn survivors_keep_talking_while_registered_readers_and_writers_are_killed_on_an_extended_bus() {
    let rounds = rounds(4);
    let seed = seed();
    eprintln!("chaos readers: {rounds} rounds, seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let bus = new_bus(Kind::Extended, dir.path());
    let me = Interface::attach(&bus).unwrap();
    let busarg = bus.display().to_string();
    let mut echoer = start("echoer", std::slice::from_ref(&busarg));
    let mut checker = start("checker", std::slice::from_ref(&busarg));
    // Registered from the first receive on: three readers writers wait for.
    assert!(me.try_recv().unwrap().is_none() && me.is_registered());
    // A reader slot names its owner by its tag, unmarked.
    let survivors = [
        claim_tag(std::process::id()),
        claim_tag(echoer.child.id()),
        claim_tag(checker.child.id()),
    ];

    // The killer: each round a copier floods the bus (one is started if
    // none runs) while a victim, a registered reader, copies every frame
    // out; one of the two is killed at a random moment: the victim two
    // times in three. A dead victim holds every writer back once they are
    // a ring ahead of it, until a writer finds it gone.
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
            let mut k = Kills::default();
            let one = std::slice::from_ref(&busarg);
            let (mut copier, mut victim): (Option<Kid>, Option<Kid>) = (None, None);
            for round in 0..rounds {
                if abort.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let c = copier.get_or_insert_with(|| start("copier", one));
                let v = victim.get_or_insert_with(|| {
                    start("victim", &[busarg.clone(), rng.below(u64::MAX).to_string()])
                });
                std::thread::sleep(Duration::from_micros(200 + rng.below(5_000)));
                // The last round kills a reader, with a writer alive to
                // find it dead.
                let reader = round + 1 == rounds || rng.below(3) != 0;
                let t = Instant::now();
                if reader {
                    let pid = v.child.id();
                    let tag = claim_tag(pid);
                    let in_lock = kill(&bus, v);
                    while let Some(line) = v.next() {
                        if line.starts_with("corrupt") {
                            eprintln!("victim: {line}");
                            k.corrupt += 1;
                        }
                    }
                    victim = None;
                    k.readers += 1;
                    k.readers_in_lock += usize::from(in_lock);
                    // Whole again once the flooding writer dropped the
                    // dead reader (and, first, took over its lock).
                    let freed = until(|| {
                        !held_by(&bus, pid) && reader_slots(&bus).iter().all(|&(_, o)| o != tag)
                    });
                    if freed.is_none() {
                        k.late
                            .push(format!("reader kill {round}: slot or lock kept"));
                    }
                } else {
                    let pid = c.child.id();
                    let in_lock = kill(&bus, c);
                    copier = None;
                    k.writers += 1;
                    k.writers_in_lock += usize::from(in_lock);
                    if in_lock && until(|| !held_by(&bus, pid)).is_none() {
                        k.late.push(format!("writer kill {round}: lock kept"));
                    }
                }
                let took = t.elapsed();
                k.slowest = k.slowest.max(took);
                if took > Duration::from_secs(1) {
                    k.late
                        .push(format!("round {round}: whole again after {took:?}"));
                }
            }
            drop(copier);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            k
        })
    };
    let (mut probes, mut worst, mut good_here, mut corrupt_here) = (0u64, Duration::ZERO, 0, 0);
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        // Probes may be overrun: a reader waiting to send is excused from
        // holding writers back meanwhile. They are repeated until answered.
        let start = Instant::now();
        let (answered, good, corrupt) = probe(&me, probes, Some(Duration::from_millis(10)));
        good_here += good;
        corrupt_here += corrupt;
        worst = worst.max(start.elapsed());
        assert!(answered, "probe {probes}: no echo within 1 s (seed {seed})");
        probes += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let k = killer.join().unwrap();
    drop(abort);
    // Every dead reader's slot was freed: only the survivors hold one.
    let mut owners: Vec<u32> = reader_slots(&bus).into_iter().map(|(_, o)| o).collect();
    owners.sort_unstable();
    let mut want = survivors.to_vec();
    want.sort_unstable();
    assert_eq!(owners, want, "reader slots in use after the test");
    echoer.stdin.take();
    checker.stdin.take();
    let tally = echoer.expect("tally");
    let checked = checker.expect("tally");
    let c = me.counters();
    eprintln!(
        "chaos readers: {} reader kills ({} inside the lock), {} writer kills ({} inside the lock); \
         slowest recovery after a kill {:?}; {probes} probes, slowest {worst:?}; \
         test process: {good_here} good, {corrupt_here} corrupt, takeovers {}, resets {}, overruns {}; \
         echoer: {tally}; checker: {checked}; victims: {} corrupt",
        k.readers, k.readers_in_lock, k.writers, k.writers_in_lock, k.slowest,
        c.lock_takeovers, c.ring_resets, c.overruns, k.corrupt
    );
    assert!(
        k.late.is_empty(),
        "not whole again within 1 s: {:?}",
        k.late
    );
    assert_eq!(k.corrupt, 0, "corrupt frames delivered to a victim");
    assert_eq!(
        corrupt_here, 0,
        "corrupt frames delivered to the test process"
    );
    assert!(tally.contains("corrupt=0"), "echoer: {tally}");
    assert!(checked.contains("corrupt=0"), "checker: {checked}");
    assert!(
        field(&checked, "good") > 10_000,
        "the checker saw too little: {checked}"
    );
    assert!(
        k.readers * 2 >= rounds && k.writers * 6 >= rounds,
        "too few kills of each: {k:?}"
    );
    assert!(
        k.readers_in_lock * 6 >= k.readers,
        "too few readers were killed inside the lock: {k:?}"
    );
}

#[test]
fn a_process_killed_at_any_step_of_the_lock_protocol_leaves_its_holding_on_record() {
    let rounds = rounds(1);
    let seed = seed();
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let bus = new_bus(Kind::V3, dir.path());
    let raw = Bus::open(&bus, &OpenOptions::new()).unwrap();
    let busarg = bus.display().to_string();
    // What each kill left: (lock word, spare word) kinds, counted.
    let (mut free, mut claimed, mut swapped, mut held) = (0, 0, 0, 0);
    let mut worst = Duration::ZERO;
    for round in 0..rounds {
        let mut k = start("locker", std::slice::from_ref(&busarg));
        let pid = k.child.id();
        std::thread::sleep(Duration::from_micros(100 + rng.below(2_000)));
        k.child.kill().unwrap();
        k.child.wait().unwrap();
        // Nobody else is on the bus: the words are as the kill left them.
        let h = head(&bus, 32);
        let (lock, spare) = (u32_at(&h, 24), u32_at(&h, 28));
        match (lock, spare) {
            (0, 0) => free += 1,
            (0, t) if t == claim_tag(pid) => claimed += 1,
            (1, t) if t == claim_tag(pid) => swapped += 1,
            (1, t) if t == holder_tag(pid) => held += 1,
            _ => panic!(
                "round {round}: the kill left lock {lock}, spare {spare:#x} (pid {pid}, seed {seed})"
            ),
        }
        let t = Instant::now();
        drop(raw.lock());
        let took = t.elapsed();
        worst = worst.max(took);
        assert!(
            took < Duration::from_millis(500),
            "round {round}: the lock was free again only after {took:?} (lock {lock}, spare {spare:#x}, seed {seed})"
        );
        assert_eq!(u32_at(&head(&bus, 32), 24), 0);
    }
    eprintln!(
        "chaos lock steps: {rounds} kills: free {free}, claimed {claimed}, swapped not marked {swapped}, \
         held {held}; slowest recovery {worst:?}; takeovers {}",
        raw.recoveries().lock_takeovers
    );
    // The kills must have landed inside the protocol, not only between
    // holdings, or nothing was tested.
    // (Here about half the kills land between holdings, a quarter on a
    // claim with the lock word free, a quarter with it set.)
    assert!(
        (swapped + held) * 10 >= rounds && (rounds < 100 || claimed * held > 0),
        "too few kills inside the lock protocol: free {free}, claimed {claimed}, swapped {swapped}, held {held}"
    );
}
