//! Latency: ping-pong of one frame between this process and an echo
//! process, and the bare wake-up round trip (a 4-byte `pwrite` raising
//! inotify `IN_MODIFY`, each way) as the floor.

use super::endpoint::Endpoint;
use super::frames::{self, Kind};
use super::proc::Worker;
use super::worker::{allowed_cpus, latency_endpoint, pin, poke, BareWatch, Wait};
use anyhow::{bail, Result};
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
        s.spawn(|| watchdog(&bus, &progress, &done));
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
fn watchdog(bus: &Path, progress: &AtomicU64, done: &AtomicBool) {
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(bus) else {
        return;
    };
    let (mut seen, mut since) = (u64::MAX, Instant::now());
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let p = progress.load(Ordering::Relaxed);
        if p != seen {
            (seen, since) = (p, Instant::now());
        } else if since.elapsed() > Duration::from_secs(1) {
            let _ = poke(&file);
        }
    }
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
