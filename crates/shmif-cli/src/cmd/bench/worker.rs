//! The benchmark's child processes (`shmif bench-worker ROLE`, hidden):
//! writers, readers and echoes, each one process on the bus, driven by the
//! parent over stdin and reporting one line per result on stdout.

use super::endpoint::{Baseline, Endpoint, Fast};
use super::frames::{self, Kind};
use super::latency::FutexTurn;
use crate::cli::error::lib_error;
use anyhow::{anyhow, bail, Context as _, Result};
use shmif::Interface;
use std::io::{BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// One process of a `shmif bench` run; not for direct use.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(subcommand)]
    role: Role,
}

/// How a throughput process drives the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The library's `Interface` (batched sends, batched receives).
    Fast,
    /// NetBSD's algorithm, literally.
    Baseline,
    /// The library's `Interface` on an extended bus of
    /// [`LOSSLESS_BUS_BYTES`], its readers registered: the writer waits
    /// for them instead of overrunning them.
    Lossless,
}

/// The size of the extended bus the lossless rows are measured on (the
/// issue's 64 MiB).
pub const LOSSLESS_BUS_BYTES: u64 = 64 << 20;

/// The frame limit of that bus: the largest the extended format allows
/// (a 65,535-byte TAP MTU and its Ethernet header).
pub const LOSSLESS_MAX_FRAME: u32 = 65_549;

/// How an echo waits for frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Wait {
    /// `Interface` with no spinning: sleep on the wake-up at once.
    Blocking,
    /// `Interface` spinning (yielding) for [`SPIN`] before it sleeps.
    Spin,
    /// `Interface` never sleeping (`set_spin(Duration::MAX)`), its
    /// wake-ups deferred by up to 1 ms (`set_wake_delay`).
    BusyPoll,
    /// NetBSD's algorithm, literally.
    Baseline,
    /// `Interface` with no spinning on an extended bus: sleeps on the
    /// futex in the mapping, and a writer wakes it with one `futex` call
    /// (no file-change event).
    Futex,
}

#[derive(Debug, clap::Subcommand)]
enum Role {
    /// Sends trials on command: `run TRIAL RATE DURATION_NS PAUSE_NS`
    /// (RATE frames/s, 0 = as fast as possible), `quit`.
    Writer {
        bus: PathBuf,
        #[arg(long)]
        mode: Mode,
        #[arg(long)]
        frame_bytes: usize,
        /// Most frames per batch (fast mode).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Deferral of wake-ups in ns (fast mode; `set_wake_delay`).
        #[arg(long, default_value_t = 0)]
        wake_delay_ns: u64,
        /// Run on this processor only.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Counts each trial's frames; prints `got TRIAL RECEIVED DUPS
    /// OVERRUNS OVERRUN_BYTES MAX_STALL_US` at each trial's end frame.
    Reader {
        bus: PathBuf,
        #[arg(long)]
        mode: Mode,
        /// Spin before sleeping, in ns (default: the library's).
        #[arg(long)]
        spin_ns: Option<u64>,
        /// Run on this processor only.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Sends every ping back as a pong.
    Echo {
        bus: PathBuf,
        #[arg(long)]
        wait: Wait,
        /// Run on this processor only.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Hands the turn back through the shared futex word at the start of
    /// FILE each time it is given it (the bare futex round trip).
    FutexEcho {
        file: PathBuf,
        /// Run on this processor only.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Answers each change of PING with a 4-byte write to PONG (the bare
    /// wake-up round trip).
    WakeEcho {
        ping: PathBuf,
        pong: PathBuf,
        /// Run on this processor only.
        #[arg(long)]
        cpu: Option<usize>,
    },
}

/// The first processors this thread may run on, in order.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect())
}

/// Restricts the calling thread (and the processes it starts from now on)
/// to processor `cpu`.
pub fn pin(cpu: usize) -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .with_context(|| format!("cannot run on cpu {cpu}"))
}

/// Runs one worker role until its parent says quit (or dies).
pub fn run(args: WorkerArgs) -> Result<ExitCode> {
    // Never outlive the benchmark that started us.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    match args.role {
        Role::Writer {
            bus,
            mode,
            frame_bytes,
            batch,
            wake_delay_ns,
            cpu,
        } => {
            cpu.map(pin).transpose()?;
            writer(&bus, mode, frame_bytes, batch.max(1), wake_delay_ns)
        }
        Role::Reader {
            bus,
            mode,
            spin_ns,
            cpu,
        } => {
            cpu.map(pin).transpose()?;
            reader(&bus, mode, spin_ns)
        }
        Role::Echo { bus, wait, cpu } => {
            cpu.map(pin).transpose()?;
            echo(&bus, wait)
        }
        Role::WakeEcho { ping, pong, cpu } => {
            cpu.map(pin).transpose()?;
            wake_echo(&ping, &pong)
        }
        Role::FutexEcho { file, cpu } => {
            cpu.map(pin).transpose()?;
            futex_echo(&file)
        }
    }?;
    Ok(ExitCode::SUCCESS)
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// An endpoint of the given throughput mode on `bus`. Its waits have no
/// timeout (as `recv()`): the parent's quit frame or kill ends it.
pub fn endpoint(bus: &Path, mode: Mode) -> Result<Box<dyn Endpoint>> {
    Ok(match mode {
        Mode::Fast | Mode::Lossless => {
            Box::new(Fast::new(Interface::attach(bus).map_err(lib_error)?))
        }
        Mode::Baseline => Box::new(Baseline::open(bus)?),
    })
}

/// The spin of the spinning latency mode (`Interface::set_spin`).
pub const SPIN: Duration = Duration::from_micros(50);

/// The wake-up delay of the busy-polling endpoints (see
/// `Interface::set_wake_delay`).
pub const BUSY_POLL_WAKE_DELAY: Duration = Duration::from_millis(1);

/// An endpoint that waits as `wait` says, without timeouts.
pub fn latency_endpoint(bus: &Path, wait: Wait) -> Result<Box<dyn Endpoint>> {
    let spin = match wait {
        Wait::Baseline => return Ok(Box::new(Baseline::open(bus)?)),
        Wait::Blocking | Wait::Futex => Some(Duration::ZERO),
        Wait::Spin => Some(SPIN),
        Wait::BusyPoll => Some(Duration::MAX),
    };
    let i = Interface::attach(bus).map_err(lib_error)?;
    if let Some(s) = spin {
        i.set_spin(s);
    }
    if wait == Wait::BusyPoll {
        // Both ends poll: the wake-up write per send is pure overhead;
        // sleeping readers still get one within this bound.
        i.set_wake_delay(BUSY_POLL_WAKE_DELAY);
    }
    Ok(Box::new(Fast::new(i)))
}

fn writer(bus: &Path, mode: Mode, bytes: usize, batch: usize, wake_delay_ns: u64) -> Result<()> {
    let mut ep: Box<dyn Endpoint> = match mode {
        Mode::Fast | Mode::Lossless => {
            let i = Interface::attach(bus).map_err(lib_error)?;
            i.set_wake_delay(Duration::from_nanos(wake_delay_ns));
            Box::new(Fast::new(i))
        }
        Mode::Baseline => endpoint(bus, mode)?,
    };
    let mac = ep.mac();
    let mut frames: Vec<Vec<u8>> = (0..batch)
        .map(|_| frames::build(bytes, mac, Kind::Data, 0, 0))
        .collect();
    let mut control = frames::build(bytes, mac, Kind::End, 0, 0);
    say("ready")?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["run", trial, rate, dur, pause] => {
                let (trial, rate, dur, pause): (u32, u64, u64, u64) =
                    (trial.parse()?, rate.parse()?, dur.parse()?, pause.parse()?);
                // Traffic at the trial's rate first, not counted: readers
                // (and their processors, which a virtual machine may have
                // halted while the bus was quiet) are awake and in step
                // when the measured frames start.
                for f in &mut frames {
                    frames::set(f, Kind::Warm, trial, 0);
                }
                send_trial(&mut *ep, &mut frames, rate, WARM_NS)?;
                for f in &mut frames {
                    frames::set(f, Kind::Data, trial, 0);
                }
                let (sent, elapsed) = send_trial(&mut *ep, &mut frames, rate, dur)?;
                std::thread::sleep(Duration::from_nanos(pause));
                frames::set(&mut control, Kind::End, trial, sent);
                for _ in 0..3 {
                    ep.send(&control)?;
                    std::thread::sleep(Duration::from_millis(1));
                }
                say(&format!("done {trial} {sent} {elapsed}"))?;
            }
            ["quit"] => break,
            _ => bail!("writer: unknown command {line:?}"),
        }
    }
    frames::set(&mut control, Kind::Quit, 0, 0);
    for _ in 0..3 {
        ep.send(&control)?;
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// How long each trial is preceded by uncounted traffic at its rate.
const WARM_NS: u64 = 10_000_000;

/// How much traffic a paced writer sends at once: it sleeps until this
/// much (at most a full batch) is due, then sends it as one batch, like a
/// network card coalescing interrupts. Sleeping, not spinning, leaves the
/// processors to the readers.
const BURST_NS: u64 = 50_000;

/// Sends numbered frames for `dur` ns at `rate` frames/s (0: as fast as
/// possible, full batches). Returns frames sent and ns from the first send
/// to the end of the last.
fn send_trial(
    ep: &mut dyn Endpoint,
    frames: &mut [Vec<u8>],
    rate: u64,
    dur: u64,
) -> Result<(u64, u64)> {
    let batch = frames.len() as u64;
    // Sleeps of a few microseconds must not last the default 50 µs slack.
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1_000));
    let burst = (u128::from(rate) * u128::from(BURST_NS) / 1_000_000_000)
        .clamp(1, u128::from(batch)) as u64;
    let start = Instant::now();
    let mut sent = 0u64;
    // Frames the schedule gave up on after this process stalled.
    let mut dropped = 0u64;
    let mut last = 0u64;
    loop {
        let el = start.elapsed().as_nanos() as u64;
        if el >= dur {
            break;
        }
        let n = if rate == 0 {
            batch
        } else {
            let due_total = (u128::from(el) * u128::from(rate) / 1_000_000_000) as u64 + 1;
            let mut due = due_total.saturating_sub(sent + dropped);
            if due < burst {
                // Sleep until a burst is due.
                let at = (u128::from(sent + dropped + burst - 1) * 1_000_000_000 / u128::from(rate))
                    as u64;
                std::thread::sleep(Duration::from_nanos(at.saturating_sub(el).min(dur - el)));
                continue;
            }
            if due > 2 * burst {
                // This process was kept from running: what fell due meanwhile
                // was never offered. Sending it all at once would be a burst
                // of up to a whole ring, which no reader survives; carry on
                // at the rate instead (the achieved rate shows the gap).
                dropped += due - burst;
                due = burst;
            }
            due.min(batch)
        };
        for (i, f) in frames[..n as usize].iter_mut().enumerate() {
            frames::set_seq(f, sent + i as u64);
        }
        ep.send_batch(&frames[..n as usize])?;
        sent += n;
        last = start.elapsed().as_nanos() as u64;
    }
    Ok((sent, last.max(1)))
}

/// A reader looks at the clock once per this many frames, to find its
/// longest stall (a gap in delivery: the process did not run, or waited
/// for the lock or a wake-up).
const STALL_SAMPLE: u64 = 32;

/// What a reader counted of one trial.
#[derive(Default)]
struct Tally {
    /// Longest time between two clock samples within the trial.
    max_gap: Duration,
    last_sample: Option<Instant>,
    trial: Option<u32>,
    received: u64,
    dups: u64,
    expected: u64,
    reported: Option<u32>,
    overruns_at_start: (u64, u64),
}

fn reader(bus: &Path, mode: Mode, spin_ns: Option<u64>) -> Result<()> {
    let mut ep: Box<dyn Endpoint> = match (mode, spin_ns) {
        (Mode::Fast | Mode::Lossless, Some(ns)) => {
            let i = Interface::attach(bus).map_err(lib_error)?;
            i.set_spin(if ns == u64::MAX {
                Duration::MAX
            } else {
                Duration::from_nanos(ns)
            });
            Box::new(Fast::new(i))
        }
        _ => endpoint(bus, mode)?,
    };
    let mut buf = vec![0u8; LOSSLESS_MAX_FRAME as usize];
    let mut t = Tally::default();
    say("ready")?;
    // Ended by the writer's quit frame (or by the parent), not by time.
    let forever = Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        let Some(fields) = ep.recv_fields(&mut buf, forever)? else {
            continue;
        };
        match fields {
            Some((Kind::Data, trial, seq)) => {
                if t.trial != Some(trial) {
                    t = Tally {
                        trial: Some(trial),
                        reported: t.reported,
                        overruns_at_start: t.overruns_at_start,
                        ..Tally::default()
                    };
                }
                t.received += 1;
                if t.received % STALL_SAMPLE == 1 {
                    let now = Instant::now();
                    if let Some(prev) = t.last_sample {
                        t.max_gap = t.max_gap.max(now - prev);
                    }
                    t.last_sample = Some(now);
                }
                if seq < t.expected {
                    t.dups += 1;
                } else {
                    t.expected = seq + 1;
                }
            }
            Some((Kind::End, trial, _sent)) if t.reported != Some(trial) => {
                let received = if t.trial == Some(trial) {
                    t.received
                } else {
                    0
                };
                let dups = if t.trial == Some(trial) { t.dups } else { 0 };
                let stall = if t.trial == Some(trial) {
                    t.max_gap.as_micros()
                } else {
                    0
                };
                let now = ep.overruns();
                let (o0, b0) = t.overruns_at_start;
                say(&format!(
                    "got {trial} {received} {dups} {} {} {stall}",
                    now.0 - o0,
                    now.1 - b0
                ))?;
                t.reported = Some(trial);
                t.overruns_at_start = now;
            }
            Some((Kind::Quit, ..)) => return Ok(()),
            _ => {}
        }
    }
}

fn echo(bus: &Path, wait: Wait) -> Result<()> {
    let mut ep = latency_endpoint(bus, wait)?;
    let mut buf = vec![0u8; LOSSLESS_MAX_FRAME as usize];
    say("ready")?;
    let forever = Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        let Some(len) = ep.recv(&mut buf, forever)? else {
            continue;
        };
        match frames::parse(&buf[..len]) {
            Some((Kind::Ping, trial, seq)) => {
                frames::set(&mut buf[..len], Kind::Pong, trial, seq);
                ep.send(&buf[..len])?;
            }
            Some((Kind::Quit, ..)) => return Ok(()),
            _ => {}
        }
    }
}

/// A blocking inotify watch for IN_MODIFY on one file: the bare mechanism.
pub struct BareWatch(std::os::fd::OwnedFd);

impl BareWatch {
    /// Watches `path` for modifications.
    pub fn new(path: &Path) -> Result<Self> {
        use rustix::fs::inotify;
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC)?;
        inotify::add_watch(&fd, path, inotify::WatchFlags::MODIFY)
            .with_context(|| format!("watch {}", path.display()))?;
        Ok(BareWatch(fd))
    }
    /// Blocks in `read` until at least one event is queued, consuming the
    /// events that fit in one buffer.
    pub fn wait(&self) -> Result<()> {
        let mut buf = [0u8; 256];
        loop {
            match rustix::io::read(&self.0, &mut buf) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(anyhow!("inotify read: {e}")),
            }
        }
    }
}

/// The 4-byte write that raises the event (the same write a bus wake-up is).
pub fn poke(file: &std::fs::File) -> Result<()> {
    file.write_all_at(&3u32.to_ne_bytes(), 4)?;
    Ok(())
}

fn futex_echo(file: &Path) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .with_context(|| format!("cannot open the futex floor's file {}", file.display()))?;
    let shared = shmif::lowlevel::SharedWord::map(&f)
        .with_context(|| format!("cannot map the futex floor's file {}", file.display()))?;
    let turn = FutexTurn(shared.word());
    say("ready")?;
    loop {
        // Between rounds the parent may pause; it never stops for an hour.
        match turn.wait_for(FutexTurn::ECHO, Duration::from_secs(3600)) {
            Some(FutexTurn::ECHO) => turn.hand_to(FutexTurn::PINGER),
            _ => return Ok(()),
        }
    }
}

fn wake_echo(ping: &Path, pong: &Path) -> Result<()> {
    let watch = BareWatch::new(ping)?;
    let out = std::fs::OpenOptions::new().write(true).open(pong)?;
    say("ready")?;
    // Runs until the parent kills it (or dies: see the death signal).
    loop {
        watch.wait()?;
        poke(&out)?;
    }
}
