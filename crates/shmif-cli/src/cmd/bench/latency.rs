//! Latency: ping-pong of one frame between this process and an echo
//! process, and two floors: the bare wake-up round trip of a v3 bus (a
//! 4-byte `pwrite` raising inotify `IN_MODIFY`, each way) and the bare
//! futex round trip of an extended bus (`FUTEX_WAKE` and `FUTEX_WAIT` on a
//! shared word, each way).

use super::endpoint::Endpoint;
use super::frames::{self, Kind};
use super::proc::Worker;
use super::worker::{allowed_cpus, latency_endpoint, pin, poke, BareWatch, Wait};
use anyhow::{bail, Context as _, Result};
use shmif::wire::MAX_FRAME_LEN;
use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the two processes of a round trip run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Both on one processor: every wake-up is a context switch there.
    SameCpu,
    /// On two processors: every wake-up crosses to the other one (which,
    /// on a virtual machine, may have to be woken from a halt first).
    TwoCpus,
}

impl Placement {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Placement::SameCpu => "same_cpu",
            Placement::TwoCpus => "two_cpus",
        }
    }
}

/// Runs `f` with this thread pinned to `mine` and the partner process's
/// processor given as `theirs`, restoring the thread's affinity after.
fn placed<T>(placement: Placement, f: impl FnOnce(Option<usize>) -> Result<T>) -> Result<T> {
    let saved = rustix::thread::sched_getaffinity(None)?;
    let cpus = allowed_cpus()?;
    let (mine, theirs) = match (placement, cpus.as_slice()) {
        (Placement::SameCpu, [a, ..]) => (*a, *a),
        (Placement::TwoCpus, [a, b, ..]) => (*a, *b),
        _ => bail!("not enough processors for {}", placement.name()),
    };
    pin(mine)?;
    let r = f(Some(theirs));
    rustix::thread::sched_setaffinity(None, &saved)?;
    r
}

/// Round-trip times in ns, sorted.
#[derive(Debug, Clone, Default)]
pub struct Rtts(Vec<u64>);

impl Rtts {
    fn new(mut ns: Vec<u64>) -> Self {
        ns.sort_unstable();
        Rtts(ns)
    }
    /// Adds another run's samples.
    pub fn extend(&mut self, other: Rtts) {
        self.0.extend(other.0);
        self.0.sort_unstable();
    }
    /// The `q` quantile (0..=1), in µs.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[i] as f64 / 1000.0
    }
    /// Median, µs.
    pub fn p50(&self) -> f64 {
        self.quantile_us(0.5)
    }
    /// 99th percentile, µs.
    pub fn p99(&self) -> f64 {
        self.quantile_us(0.99)
    }
    /// Samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Ping-pong of a 60-byte frame, both sides waiting as `wait` says:
/// `warmup` round trips, then `rounds` measured ones.
pub fn ping_pong(
    dir: &Path,
    placement: Placement,
    wait: Wait,
    rounds: usize,
    warmup: usize,
) -> Result<Rtts> {
    placed(placement, |cpu| {
        ping_pong_on(dir, cpu, wait, rounds, warmup)
    })
}

fn ping_pong_on(
    dir: &Path,
    cpu: Option<usize>,
    wait: Wait,
    rounds: usize,
    warmup: usize,
) -> Result<Rtts> {
    let bus = dir.join(format!("lat-{wait:?}"));
    let _ = std::fs::remove_file(&bus);
    if wait == Wait::Futex {
        // An extended bus (attach reads the format): futex wake-ups.
        shmif::Bus::create(&bus, FUTEX_BUS_BYTES, 1514, &shmif::OpenOptions::new())
            .map_err(|e| anyhow::anyhow!("{}: {e}", bus.display()))?;
    }
    let mut ep = latency_endpoint(&bus, wait)?;
    let wait_arg: OsString = clap::ValueEnum::to_possible_value(&wait)
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
        .into();
    let mut args: Vec<OsString> =
        vec!["echo".into(), bus.clone().into(), "--wait".into(), wait_arg];
    if let Some(c) = cpu {
        args.extend(["--cpu".into(), c.to_string().into()]);
    }
    let echo = Worker::spawn("echo", &args)?;
    let mut ping = frames::build(60, ep.mac(), Kind::Ping, 0, 0);
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let mut rtts = Vec::with_capacity(rounds);
    // The endpoints wait without timeouts (as `recv()` does); if the echo
    // stalls, a watchdog writes the wake-up word so that the wait returns
    // and the deadline below is seen.
    let progress = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        s.spawn(|| watchdog(&bus, wait, &progress, &done));
        let r = ping_rounds(
            &mut *ep, &mut ping, &mut buf, &mut rtts, rounds, warmup, wait, &progress,
        );
        done.store(true, Ordering::Relaxed);
        r
    });
    result?;
    frames::set(&mut ping, Kind::Quit, 0, 0);
    ep.send(&ping)?;
    echo.finish(Duration::from_secs(1));
    drop(ep);
    let _ = std::fs::remove_file(&bus);
    Ok(Rtts::new(rtts))
}

/// Pokes the bus every 100 ms once `progress` has not moved for a second,
/// until `done`.
/// On an extended bus the poke is a frame sent through a lossy interface
/// of its own (a futex sleeper is woken by writers, not by the file).
fn watchdog(bus: &Path, wait: Wait, progress: &AtomicU64, done: &AtomicBool) {
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(bus) else {
        return;
    };
    let (mut seen, mut since) = (u64::MAX, Instant::now());
    let mut nudger: Option<shmif::Interface> = None;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let p = progress.load(Ordering::Relaxed);
        if p != seen {
            (seen, since) = (p, Instant::now());
        } else if since.elapsed() > Duration::from_secs(1) {
            if wait != Wait::Futex {
                let _ = poke(&file);
                continue;
            }
            if nudger.is_none() {
                let i = shmif::Interface::new();
                i.set_lossy(true);
                if i.set_link(bus).and_then(|()| i.up()).is_ok() {
                    nudger = Some(i);
                }
            }
            if let Some(i) = &nudger {
                let _ = i.send(&frames::build(60, i.mac(), Kind::Warm, 0, 0));
            }
        }
    }
}

/// The size of the extended bus of the futex rows.
const FUTEX_BUS_BYTES: u64 = 4 << 20;

/// Whose turn it is, in a futex word that two processes share: what the
/// bare futex floor hands back and forth.
pub struct FutexTurn<'a>(pub &'a std::sync::atomic::AtomicU32);

impl FutexTurn<'_> {
    /// The echo's turn.
    pub const ECHO: u32 = 1;
    /// The pinger's turn.
    pub const PINGER: u32 = 2;
    /// The echo stops.
    pub const STOP: u32 = 3;

    /// Sleeps on the word until it says `want` (or [`Self::STOP`]); which,
    /// or `None` once `limit` has passed (the other side is gone).
    pub fn wait_for(&self, want: u32, limit: Duration) -> Option<u32> {
        use rustix::thread::futex;
        let start = Instant::now();
        loop {
            let now = self.0.load(Ordering::Acquire);
            if now == want || now == Self::STOP {
                return Some(now);
            }
            let left = limit.checked_sub(start.elapsed())?;
            let timeout = rustix::fs::Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            };
            let _ = futex::wait(self.0, futex::Flags::empty(), now, Some(&timeout));
        }
    }

    /// Gives the turn to `who` and wakes the sleeper.
    pub fn hand_to(&self, who: u32) {
        use rustix::thread::futex;
        self.0.store(who, Ordering::Release);
        let _ = futex::wake(self.0, futex::Flags::empty(), 1);
    }
}

/// The bare futex floor: round trips between this process and an echo
/// process (each pinned as the placement says) through one shared (not
/// process-private) futex word in a `MAP_SHARED` file mapping, `FUTEX_WAKE`
/// to hand over the turn and `FUTEX_WAIT` to wait for it, as the extended
/// bus's writers and sleeping readers do. Two processes, as in the
/// ping-pong it is the floor of: between two threads of one process the
/// same round trip skips the switch of address space, about 1 µs of it on
/// one processor of this machine (4.8 against 3.8 µs).
pub fn futex_floor(dir: &Path, placement: Placement, rounds: usize, warmup: usize) -> Result<Rtts> {
    placed(placement, |theirs| {
        let path = dir.join("futex-floor");
        let what =
            |doing: &str| format!("cannot {doing} the futex floor's file {}", path.display());
        std::fs::write(&path, FutexTurn::PINGER.to_ne_bytes()).with_context(|| what("write"))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| what("open"))?;
        let shared = shmif::lowlevel::SharedWord::map(&file).with_context(|| what("map"))?;
        let turn = FutexTurn(shared.word());
        let mut args: Vec<OsString> = vec!["futex-echo".into(), path.clone().into()];
        if let Some(c) = theirs {
            args.extend(["--cpu".into(), c.to_string().into()]);
        }
        let echo = Worker::spawn("futex echo", &args)?;
        let mut rtts = Vec::with_capacity(rounds);
        for i in 0..warmup + rounds {
            let t0 = Instant::now();
            turn.hand_to(FutexTurn::ECHO);
            if turn
                .wait_for(FutexTurn::PINGER, Duration::from_secs(5))
                .is_none()
            {
                bail!("the futex echo stopped answering");
            }
            if i >= warmup {
                rtts.push(t0.elapsed().as_nanos() as u64);
            }
        }
        turn.hand_to(FutexTurn::STOP);
        echo.finish(Duration::from_secs(1));
        let _ = std::fs::remove_file(&path);
        Ok(Rtts::new(rtts))
    })
}

#[allow(clippy::too_many_arguments)]
fn ping_rounds(
    ep: &mut dyn Endpoint,
    ping: &mut [u8],
    buf: &mut [u8],
    rtts: &mut Vec<u64>,
    rounds: usize,
    warmup: usize,
    wait: Wait,
    progress: &AtomicU64,
) -> Result<()> {
    for i in 0..(warmup + rounds) as u64 {
        frames::set_seq(ping, i);
        let t0 = Instant::now();
        ep.send(ping)?;
        let deadline = t0 + Duration::from_secs(2);
        loop {
            let Some(len) = ep.recv(buf, deadline)? else {
                bail!("no echo of ping {i} within 2 s ({wait:?})");
            };
            if frames::parse(&buf[..len]) == Some((Kind::Pong, 0, i)) {
                break;
            }
        }
        if i >= warmup as u64 {
            rtts.push(t0.elapsed().as_nanos() as u64);
        }
        progress.store(i, Ordering::Relaxed);
    }
    Ok(())
}

/// The floor: round trips of bare wake-ups between two processes (a
/// `pwrite` of 4 bytes to one file, a blocking `read` of its inotify
/// watch, the same back through a second file).
pub fn wake_floor(dir: &Path, placement: Placement, rounds: usize, warmup: usize) -> Result<Rtts> {
    placed(placement, |cpu| wake_floor_on(dir, cpu, rounds, warmup))
}

fn wake_floor_on(dir: &Path, cpu: Option<usize>, rounds: usize, warmup: usize) -> Result<Rtts> {
    let (ping, pong) = (dir.join("wake-ping"), dir.join("wake-pong"));
    for p in [&ping, &pong] {
        std::fs::write(p, [0u8; 8])?;
    }
    let back = BareWatch::new(&pong)?;
    let out = std::fs::OpenOptions::new().write(true).open(&ping)?;
    let mut args: Vec<OsString> =
        vec!["wake-echo".into(), ping.clone().into(), pong.clone().into()];
    if let Some(c) = cpu {
        args.extend(["--cpu".into(), c.to_string().into()]);
    }
    let echo = Worker::spawn("wake echo", &args)?;
    let mut rtts = Vec::with_capacity(rounds);
    for i in 0..warmup + rounds {
        let t0 = Instant::now();
        poke(&out)?;
        back.wait()?;
        if i >= warmup {
            rtts.push(t0.elapsed().as_nanos() as u64);
        }
    }
    drop(echo);
    let _ = std::fs::remove_file(&ping);
    let _ = std::fs::remove_file(&pong);
    Ok(Rtts::new(rtts))
}
