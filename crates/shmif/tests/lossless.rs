//! Lossless readers on an extended bus: a registered reader that keeps up
//! (or pauses for less than the stall bound) gets every frame; one stopped
//! longer is left behind and counts exactly what it missed; one whose
//! process is gone frees the writers within the dead-reader grace; a lossy
//! one never holds writers back.

mod common;

use common::{field, role, say, Kid};
use shmif::{Bus, Interface, MacAddr, OpenOptions};

/// What the reader checks of a frame.
struct Frame {
    data: Vec<u8>,
}
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// 1514-byte frames, 24 bytes of header each on the ring.
const LEN: usize = 1514;
const PER_FRAME: u64 = (24 + LEN) as u64;
/// 150 MB of frames: more than two laps of a 64 MiB ring.
const FRAMES: u32 = 100_000;
/// The last frame's sequence number: the reader's cue to report.
const END: u32 = u32::MAX;

fn frame(src: MacAddr, seq: u32) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&seq.to_le_bytes());
    f.resize(LEN, (seq % 251) as u8);
    f
}

/// The END frame, carrying how many frames were sent before it (so that a
/// reader overrun just before it, resynchronised onto it, still counts
/// what it missed).
fn end_frame(src: MacAddr, sent: u32) -> Vec<u8> {
    let mut f = frame(src, END);
    f[18..22].copy_from_slice(&sent.to_le_bytes());
    f
}

/// How a reader child takes its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// `recv_timeout`.
    Recv,
    /// `try_recv_into` (which a registered reader serves straight from
    /// the ring into the buffer), waiting with `wait_for_wakeup`.
    Into,
    /// `try_recv_in_place` (a view of the ring, copied by the callback; a
    /// receive that says the reader was left behind while it read is
    /// simply followed by the next), waiting with `wait_for_wakeup`.
    InPlace,
}

impl Take {
    const ALL: [Take; 3] = [Take::Recv, Take::Into, Take::InPlace];

    /// Its name on the child's command line.
    fn arg(self) -> &'static str {
        match self {
            Take::Recv => "recv",
            Take::Into => "into",
            Take::InPlace => "in_place",
        }
    }

    fn from_arg(arg: &str) -> Take {
        Take::ALL
            .into_iter()
            .find(|t| t.arg() == arg)
            .unwrap_or_else(|| panic!("unknown way to take frames {arg:?}"))
    }
}

/// Entry point of child processes; does nothing in a normal test run.
#[test]
#[ignore = "entry point for child processes of the other tests"]
fn child_entry() {
    let Some((role, args)) = role() else {
        return;
    };
    match role.as_str() {
        "reader" => reader(
            Path::new(&args[0]),
            args[1] == "lossy",
            args[2].parse().ok(),
            Take::from_arg(args.get(3).map_or("recv", String::as_str)),
        ),
        other => panic!("unknown role {other}"),
    }
}

/// Receives until the END frame; reports frames got, the bytes of the
/// frames it missed (by sequence gaps), and its overrun counters. With
/// `stop_at`, stops itself (SIGSTOP) once it has received that frame (0:
/// before it receives any): outside the bus lock, so that the writer is
/// held back only by the reader protocol. (A process stopped while it
/// holds the lock stops the bus, as with any lock: see DESIGN.md.)
///
/// `how` says how the frames are taken ([`Take`]).
fn reader(bus: &Path, lossy: bool, stop_at: Option<u32>, how: Take) {
    let i = Interface::new();
    i.set_lossy(lossy);
    i.set_link(bus).unwrap();
    i.up().unwrap();
    assert!(i.try_recv().unwrap().is_none());
    assert_eq!(i.is_registered(), !lossy);
    say("ready");
    // raise(3), not kill(getpid()): a signal sent to the process is taken
    // by whichever thread the kernel picks (often the harness's main
    // thread, idle in a wait), and this thread is stopped only once that
    // one has run and started the group stop: meanwhile this thread went
    // on receiving and could be stopped holding the bus lock, which
    // holds every writer until SIGCONT (the writer then waited the whole
    // 3 s in a_reader_stopped_past_the_stall_bound_..., once in four full
    // runs). A signal sent to this thread stops it before raise returns.
    let stop = || nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP).unwrap();
    if stop_at == Some(0) {
        stop();
    }
    let (mut got, mut next, mut missed, mut bad) = (0u64, 0u32, 0u64, 0u64);
    // The first frame at which the reader had missed more than it had
    // counted as overrun: counts never lag what was missed (a skip is
    // counted when the frame after it is delivered, and with
    // resynchronisation onto the oldest frame, the skip to the newest is
    // counted with the oldest, before that gap shows), so this names the
    // frame where a miss went uncounted.
    let mut first_shortfall = String::new();
    let left_behinds = std::cell::Cell::new(0u32);
    let mut room = vec![0u8; i.max_frame_len()];
    let mut next_frame = || -> Option<Vec<u8>> {
        if how == Take::Recv {
            return i
                .recv_timeout(Duration::from_secs(30))
                .unwrap()
                .map(|f| f.data);
        }
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if how == Take::InPlace {
                match i.try_recv_in_place(|v, _| v.to_vec()) {
                    Ok(Some(data)) => return Some(data),
                    Ok(None) => {}
                    Err(shmif::Error::LeftBehind) => {
                        left_behinds.set(left_behinds.get() + 1);
                        continue;
                    }
                    Err(e) => panic!("{e}"),
                }
            } else if let Some(r) = i.try_recv_into(&mut room).unwrap() {
                return Some(room[..r.len].to_vec());
            }
            let left = until.checked_duration_since(Instant::now())?;
            i.wait_for_wakeup(Some(left)).unwrap();
        }
    };
    while let Some(data) = next_frame() {
        let f = Frame { data };
        let seq = u32::from_le_bytes(f.data[14..18].try_into().unwrap());
        if seq == END {
            let sent = u32::from_le_bytes(f.data[18..22].try_into().unwrap());
            missed += u64::from(sent.saturating_sub(next)) * PER_FRAME;
            break;
        }
        // Every byte: a frame torn by a writer that overwrote it while it
        // was being copied out would mix two frames' fill bytes.
        let fill = (seq % 251) as u8;
        if f.data.len() != LEN || f.data[18..].iter().any(|&b| b != fill) || seq < next {
            bad += 1;
        }
        let gap = u64::from(seq.saturating_sub(next)) * PER_FRAME;
        missed += gap;
        let counted = i.counters().overrun_bytes;
        if missed > counted && first_shortfall.is_empty() {
            first_shortfall = format!(
                " first_shortfall=seq{seq}:gap{gap}:missed{missed}:counted{counted}:lb{}",
                left_behinds.get()
            );
        }
        next = seq + 1;
        got += 1;
        if stop_at == Some(seq) {
            stop();
        }
    }
    let c = i.counters();
    say(&format!(
        "done got={got} missed={missed} bad={bad} overruns={} overrun_bytes={}{first_shortfall}",
        c.overruns, c.overrun_bytes
    ));
}

fn new_bus(dir: &Path) -> std::path::PathBuf {
    new_bus_of(dir, 64 * MIB)
}

fn new_bus_of(dir: &Path, size: u64) -> std::path::PathBuf {
    let path = dir.join("bus");
    Bus::create(&path, size, 65_549, &OpenOptions::new()).unwrap();
    path
}

fn start_reader(bus: &Path, lossy: bool, stop_at: Option<u32>) -> Kid {
    start_reader_with(bus, lossy, stop_at, Take::Recv)
}

fn start_reader_with(bus: &Path, lossy: bool, stop_at: Option<u32>, how: Take) -> Kid {
    let mut k = Kid::spawn(
        "child_entry",
        "reader",
        &[
            bus.to_str().unwrap().into(),
            if lossy { "lossy" } else { "lossless" }.into(),
            stop_at.map_or("none".into(), |s| s.to_string()),
            how.arg().into(),
        ],
    );
    k.expect("ready");
    k
}

/// Waits until process `pid` is stopped; returns when it was seen so.
fn wait_stopped(pid: rustix::process::Pid) -> Instant {
    let path = format!("/proc/{}/stat", pid.as_raw_nonzero());
    loop {
        let stat = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(')') {
            if rest.trim_start().starts_with('T') {
                return Instant::now();
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// In a thread: once `pid` has stopped, waits `after` and resumes it;
/// joins to the time it was seen stopped.
fn resume_after(pid: rustix::process::Pid, after: Duration) -> std::thread::JoinHandle<Instant> {
    std::thread::spawn(move || {
        let t = wait_stopped(pid);
        std::thread::sleep(after);
        rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
        t
    })
}

fn signal(k: &Kid, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_child(&k.child);
    rustix::process::kill_process(pid, sig).unwrap();
}

/// Sends FRAMES frames in batches of 32 (then the END frame), calling
/// `at(seq)` before each batch; returns how long the sending took.
fn send_all(w: &Interface, mut at: impl FnMut(u32)) -> Duration {
    let t0 = Instant::now();
    let mut seq = 0;
    while seq < FRAMES {
        at(seq);
        let batch: Vec<Vec<u8>> = (seq..(seq + 32).min(FRAMES))
            .map(|s| frame(w.mac(), s))
            .collect();
        w.send_batch(batch.iter().map(|f| &f[..])).unwrap();
        seq += batch.len() as u32;
    }
    let took = t0.elapsed();
    w.send(&end_frame(w.mac(), seq)).unwrap();
    took
}

fn writer(bus: &Path, stall: Duration) -> Interface {
    let w = Interface::new().with_open_options(OpenOptions::new().reader_stall(stall));
    w.set_link(bus).unwrap();
    w.up().unwrap();
    w
}

#[test]
fn a_reader_stopped_for_300_ms_gets_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let bus = new_bus(dir.path());
    let mut r = start_reader(&bus, false, Some(12_800));
    let w = writer(&bus, Duration::from_secs(1));
    let resume = resume_after(
        rustix::process::Pid::from_child(&r.child),
        Duration::from_millis(300),
    );
    let took = send_all(&w, |_| {});
    resume.join().unwrap();
    let done = r.expect("done");
    assert_eq!(field(&done, "got"), u64::from(FRAMES), "{done}");
    assert_eq!(field(&done, "missed"), 0, "{done}");
    assert_eq!(field(&done, "bad"), 0, "{done}");
    assert_eq!(field(&done, "overruns"), 0, "{done}");
    // 150 MB through 64 MiB while the reader slept: the writer waited.
    assert!(took >= Duration::from_millis(250), "{took:?}");
}

#[test]
fn a_reader_stopped_past_the_stall_bound_is_left_behind_and_counts_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let bus = new_bus(dir.path());
    let mut r = start_reader(&bus, false, Some(12_800));
    let w = writer(&bus, Duration::from_secs(1));
    let resume = resume_after(
        rustix::process::Pid::from_child(&r.child),
        Duration::from_secs(3),
    );
    let took = send_all(&w, |_| {});
    let sent = Instant::now();
    let stopped = resume.join().unwrap();
    // The writer waited for the stall bound, then moved on while the
    // reader was still stopped: the reader missed frames (had the writer
    // waited until it was resumed, it would have missed none). How long
    // the rest of the sending takes depends on the machine's load.
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let blocked = sent.duration_since(stopped);
    let done = r.expect("done");
    let missed = field(&done, "missed");
    assert!(missed > 0, "writer done {blocked:?} after the stop: {done}");
    assert_eq!(field(&done, "bad"), 0, "{done}");
    assert!(field(&done, "overruns") >= 1, "{done}");
    assert_eq!(
        field(&done, "overrun_bytes"),
        missed,
        "counted exactly: {done}"
    );
}

/// A registered reader copies frames out of the ring without the lock
/// (its window: EXTENDED-FORMAT.md). Here it is stopped and resumed at
/// random moments, often in the middle of such a copy, for longer than
/// the writer's stall bound on a small ring: the writer gives up waiting,
/// marks it stalled and writes over what it was copying. Whatever it
/// copied then is thrown away, never delivered: every frame it delivers
/// is whole (every byte checked), and what it missed is counted exactly.
#[test]
fn a_reader_overrun_while_it_copies_without_the_lock_never_delivers_a_torn_frame() {
    overrun_while_copying(Take::Recv);
}

/// The same, the reader taking frames with `try_recv_into`, which copies a
/// frame straight from the ring into the caller's buffer.
#[test]
fn a_reader_overrun_while_it_copies_into_its_buffer_never_gets_a_torn_frame() {
    overrun_while_copying(Take::Into);
}

/// The same, the reader taking frames in place (`try_recv_in_place`),
/// publishing its position every few dozen frames rather than per frame.
///
/// This once failed in about one run in eight: a frame lost and not
/// counted. Looking for a frame it may deliver, the in-place step passes
/// over frames its filter refuses; when it found none, the position after
/// them stood even if the reader had been left behind meanwhile (torn
/// bytes read as another MAC's frame, or as a runt, were stepped over).
/// Now such a step is undone unless the reader's standing held, and the
/// locked path reads those frames again (the unit test
/// `interface::tests::frames_passed_over_in_place_by_a_left_behind_reader_are_read_again`
/// shows it deterministically).
#[test]
fn a_reader_overrun_while_it_reads_in_place_never_gets_a_torn_frame() {
    overrun_while_copying(Take::InPlace);
}

fn overrun_while_copying(how: Take) {
    let dir = tempfile::tempdir().unwrap();
    let bus = new_bus_of(dir.path(), MIB);
    let mut r = start_reader_with(&bus, false, None, how);
    let w = writer(&bus, Duration::from_millis(2));
    let pid = rustix::process::Pid::from_child(&r.child);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stops = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let stopper = {
        let (done, stops) = (done.clone(), stops.clone());
        std::thread::spawn(move || {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                std::thread::sleep(Duration::from_micros(200 + x % 2_000));
                rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
                std::thread::sleep(Duration::from_micros(3_000 + (x >> 20) % 5_000));
                rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
                stops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    // At least FRAMES frames, and on until the reader was stopped 30 times.
    let mut seq = 0;
    while seq < FRAMES || stops.load(std::sync::atomic::Ordering::SeqCst) < 30 {
        let batch: Vec<Vec<u8>> = (seq..seq + 32).map(|s| frame(w.mac(), s)).collect();
        w.send_batch(batch.iter().map(|f| &f[..])).unwrap();
        seq += 32;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    stopper.join().unwrap();
    w.send(&end_frame(w.mac(), seq)).unwrap();
    let done = r.expect("done");
    assert_eq!(field(&done, "bad"), 0, "torn or repeated frames: {done}");
    assert!(field(&done, "missed") > 0, "never left behind: {done}");
    assert_eq!(
        field(&done, "overrun_bytes"),
        field(&done, "missed"),
        "counted exactly: {done}"
    );
}

#[test]
fn a_killed_reader_frees_the_bus_within_the_dead_reader_grace() {
    let dir = tempfile::tempdir().unwrap();
    let bus = new_bus(dir.path());
    let mut r = start_reader(&bus, false, None);
    // A stall bound the test would notice: only the dead rule frees it.
    let w = writer(&bus, Duration::from_secs(20));
    signal(&r, rustix::process::Signal::STOP);
    r.child.kill().unwrap();
    // (Not reaped: a zombie until the end of the test.)
    let took = send_all(&w, |_| {});
    assert!(took < Duration::from_secs(5), "{took:?}");
    let _ = r.child.wait();
}

#[test]
fn a_lossy_reader_never_holds_writers_back() {
    let dir = tempfile::tempdir().unwrap();
    let bus = new_bus(dir.path());
    let mut r = start_reader(&bus, true, Some(0));
    let w = writer(&bus, Duration::from_secs(20));
    wait_stopped(rustix::process::Pid::from_child(&r.child));
    let took = send_all(&w, |_| {});
    assert!(took < Duration::from_secs(5), "{took:?}");
    signal(&r, rustix::process::Signal::CONT);
    let done = r.expect("done");
    assert!(field(&done, "missed") > 0, "{done}");
    assert_eq!(
        field(&done, "overrun_bytes"),
        field(&done, "missed"),
        "{done}"
    );
}

#[test]
fn a_v3_bus_is_unchanged_every_reader_lossy() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("v3");
    let a = Interface::attach(&bus).unwrap();
    let b = Interface::attach(&bus).unwrap();
    assert!(b.try_recv().unwrap().is_none());
    assert!(!b.is_registered());
    for s in 0..2000 {
        a.send(&frame(a.mac(), s)).unwrap();
    }
    assert!(b.counters().overruns == 0 && b.try_recv().unwrap().is_some());
    assert_eq!(b.counters().overruns, 1, "lapped, as before");
}
