//! Throughput: one writer process, N reader processes, numbered frames;
//! the unpaced rate and its loss, and the RFC 2544 rate (the highest
//! offered rate whose loss stays under the threshold, by binary search on
//! the writer's pacing).

use super::proc::Worker;
use super::worker::{allowed_cpus, Mode, LOSSLESS_BUS_BYTES, LOSSLESS_MAX_FRAME};
use anyhow::{bail, Result};
use shmif::wire::FRAME_HEADER_LEN;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

/// Loss at or above which a trial fails (RFC 2544 search): 0.1 %.
pub const LOSS_THRESHOLD: f64 = 0.001;

/// How long trials run and how far the search goes.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Length of one trial's sending, ns.
    pub trial_ns: u64,
    /// Pause after a trial before its end frames, ns (readers drain).
    pub pause_ns: u64,
    /// Binary search steps after the unpaced trial.
    pub steps: u32,
    /// Most frames per batch for the fast writer.
    pub batch: usize,
    /// Most ring bytes per batch for the fast writer.
    pub batch_bytes: usize,
    /// Reader spin (ns) for the fast mode; `None`: the library default.
    pub spin_ns: Option<u64>,
    /// The fast writer's wake-up deferral, ns (0: a wake-up per batch).
    pub wake_delay_ns: u64,
    /// Print every trial to standard error.
    pub verbose: bool,
    /// Pin the writer to the first allowed processor and the readers to
    /// the others in turn (the writer's too, once all have one).
    pub pin: bool,
}

/// One trial's outcome.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Offered rate, frames/s (0: unpaced).
    pub offered: u64,
    /// Data frames sent.
    pub sent: u64,
    /// ns from the first send to the end of the last.
    pub elapsed_ns: u64,
    /// Frames each reader received.
    pub received: Vec<u64>,
    /// Duplicated or reordered frames, all readers (must be 0).
    pub dups: u64,
    /// Overruns the readers saw, all readers.
    pub overruns: u64,
    /// Ring bytes lost to them, all readers.
    pub overrun_bytes: u64,
    /// The longest gap in any reader's delivery, µs (sampled every 32
    /// frames): how long a reader was kept from running or waiting.
    pub max_stall_us: u64,
}

impl Trial {
    /// Frames per second the writer achieved.
    pub fn send_rate(&self) -> f64 {
        self.sent as f64 * 1e9 / self.elapsed_ns as f64
    }
    /// Frames per second delivered, mean over readers.
    pub fn delivered_per_reader(&self) -> f64 {
        let n = self.received.len().max(1) as f64;
        self.received.iter().sum::<u64>() as f64 / n * 1e9 / self.elapsed_ns as f64
    }
    /// The worst reader's loss ratio.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        self.received
            .iter()
            .map(|&r| 1.0 - r.min(self.sent) as f64 / self.sent as f64)
            .fold(0.0, f64::max)
    }
    /// Whether every reader got what was sent: loss under the threshold
    /// and every frame in order.
    pub fn lossless(&self) -> bool {
        self.loss() < LOSS_THRESHOLD && self.dups == 0
    }
    /// Whether the writer fell short of the rate it was offered (it, not
    /// the readers, set the pace: many readers on two processors).
    pub fn writer_limited(&self) -> bool {
        self.offered > 0 && self.send_rate() < 0.97 * self.offered as f64
    }
    /// Whether this trial passes at its offered rate: lossless, and the
    /// writer kept up with the rate.
    pub fn passes(&self) -> bool {
        self.lossless() && !self.writer_limited()
    }
}

/// How many unpaced trials a lossless row runs; it reports their median.
pub const LOSSLESS_TRIALS: usize = 3;

/// The RFC 2544 search over the writer's pacing, without the trials
/// themselves (pure, so that its decisions are tested on their own).
///
/// A lossless trial is a result at the rate it delivered, whether or not
/// the writer reached the rate offered: when it did not, that trial says
/// what the bus sustained with the writer going as fast as it could, and
/// offering more cannot find a higher rate (the search looks lower). Only
/// a trial with loss is a failure.
#[derive(Debug, Clone)]
pub struct Search {
    lo: f64,
    hi: f64,
    /// The lossless trial that delivered most so far.
    pub best: Option<Trial>,
}

/// What the search makes of a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Lossless at the offered rate: look higher.
    Passed,
    /// Lossless, but the writer fell short of the offered rate: a result
    /// (at its achieved rate); look lower.
    WriterLimited,
    /// Frames lost or out of order: look lower.
    Failed,
}

impl Search {
    /// A search below the unpaced trial's send rate, which is its first
    /// result if it was lossless.
    pub fn new(unpaced: &Trial) -> Search {
        Search {
            lo: 0.0,
            hi: unpaced.send_rate(),
            best: unpaced.lossless().then(|| unpaced.clone()),
        }
    }

    /// Whether the search is over before it starts (unpaced was lossless).
    pub fn done(&self) -> bool {
        self.best.as_ref().is_some_and(|b| b.offered == 0)
    }

    /// The rate to offer next, frames/s.
    pub fn next_offer(&self) -> u64 {
        ((self.lo + self.hi) / 2.0).max(1.0) as u64
    }

    /// Judges a trial (run at [`Search::next_offer`]) and narrows the range.
    pub fn record(&mut self, t: Trial) -> Verdict {
        let mid = t.offered as f64;
        let verdict = if t.passes() {
            Verdict::Passed
        } else if t.lossless() {
            Verdict::WriterLimited
        } else {
            Verdict::Failed
        };
        match verdict {
            Verdict::Passed => self.lo = mid,
            Verdict::WriterLimited | Verdict::Failed => self.hi = mid,
        }
        if verdict != Verdict::Failed
            && self
                .best
                .as_ref()
                .is_none_or(|b| t.delivered_per_reader() > b.delivered_per_reader())
        {
            self.best = Some(t);
        }
        verdict
    }
}

/// The figures for one configuration.
#[derive(Debug, Clone)]
pub struct Row {
    /// Fast or baseline.
    pub mode: Mode,
    /// Reader processes.
    pub readers: usize,
    /// Frame size (Ethernet frame, no FCS).
    pub frame_bytes: usize,
    /// The writer unpaced.
    pub unpaced: Trial,
    /// The lossless trial that delivered most (the RFC 2544 rate; its
    /// writer may have fallen short of the rate offered), if any.
    pub rfc: Option<Trial>,
    /// Trials run.
    pub trials: usize,
}

/// Runs one configuration: starts the readers and the writer on a fresh
/// bus in `dir`, the unpaced trial, then the search.
pub fn measure(
    dir: &Path,
    mode: Mode,
    readers: usize,
    frame_bytes: usize,
    plan: &Plan,
) -> Result<Row> {
    let name = match mode {
        Mode::Fast => "fast",
        Mode::Baseline => "baseline",
        Mode::Lossless => "lossless",
    };
    let bus = dir.join(format!("tp-{name}-{readers}-{frame_bytes}"));
    let _ = std::fs::remove_file(&bus);
    if mode == Mode::Lossless {
        // The extended bus, made before anyone attaches (attach reads the
        // format from the file).
        shmif::Bus::create(
            &bus,
            LOSSLESS_BUS_BYTES,
            LOSSLESS_MAX_FRAME,
            &shmif::OpenOptions::new(),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", bus.display()))?;
    }
    let mode_arg: OsString = name.into();
    let cpus = if plan.pin {
        allowed_cpus()?
    } else {
        Vec::new()
    };
    // Reader k on the (k+1)-th processor, round the list.
    let cpu_of = |k: usize| (!cpus.is_empty()).then(|| cpus[k % cpus.len()]);
    let mut rs = Vec::new();
    for k in 0..readers {
        let mut args: Vec<OsString> = vec![
            "reader".into(),
            bus.clone().into(),
            "--mode".into(),
            mode_arg.clone(),
        ];
        if let (Mode::Fast | Mode::Lossless, Some(ns)) = (mode, plan.spin_ns) {
            args.extend(["--spin-ns".into(), ns.to_string().into()]);
        }
        if let Some(c) = cpu_of(k + 1) {
            args.extend(["--cpu".into(), c.to_string().into()]);
        }
        rs.push(Worker::spawn(&format!("reader {k}"), &args)?);
    }
    let mut writer_args: Vec<OsString> = vec![
        "writer".into(),
        bus.clone().into(),
        "--mode".into(),
        mode_arg,
        "--frame-bytes".into(),
        frame_bytes.to_string().into(),
        "--batch".into(),
        (plan.batch_bytes / (frame_bytes + FRAME_HEADER_LEN))
            .clamp(1, plan.batch)
            .to_string()
            .into(),
        "--wake-delay-ns".into(),
        plan.wake_delay_ns.to_string().into(),
    ];
    if let Some(c) = cpu_of(0) {
        writer_args.extend(["--cpu".into(), c.to_string().into()]);
    }
    let mut writer = Worker::spawn("writer", &writer_args)?;
    let mut next_trial = 1u32;
    let mut run = |offered: u64| -> Result<Trial> {
        let trial = next_trial;
        next_trial += 1;
        writer.send(&format!(
            "run {trial} {offered} {} {}",
            plan.trial_ns, plan.pause_ns
        ))?;
        let wait = Duration::from_nanos(plan.trial_ns + plan.pause_ns) + Duration::from_secs(10);
        let done = writer.expect("done", wait)?;
        let (sent, elapsed_ns) = (done[1].parse()?, done[2].parse()?);
        let mut t = Trial {
            offered,
            sent,
            elapsed_ns,
            received: Vec::new(),
            dups: 0,
            overruns: 0,
            overrun_bytes: 0,
            max_stall_us: 0,
        };
        for r in rs.iter_mut() {
            // Lines of earlier trials (late after a timeout) are skipped.
            let got = loop {
                let f = r.expect("got", Duration::from_secs(5))?;
                if f[0].parse::<u32>()? >= trial {
                    break f;
                }
            };
            if got[0].parse::<u32>()? != trial {
                bail!("reader reported trial {} instead of {trial}", got[0]);
            }
            t.received.push(got[1].parse()?);
            t.dups += got[2].parse::<u64>()?;
            t.overruns += got[3].parse::<u64>()?;
            t.overrun_bytes += got[4].parse::<u64>()?;
            t.max_stall_us = t.max_stall_us.max(got[5].parse()?);
        }
        if plan.verbose {
            eprintln!(
                "  trial {trial}: offered {:.3} Mframes/s, sent {:.3}, delivered {:.3} per reader, loss {:.4} %, {} overruns, longest stall {} µs",
                offered as f64 / 1e6,
                t.send_rate() / 1e6,
                t.delivered_per_reader() / 1e6,
                t.loss() * 100.0,
                t.overruns,
                t.max_stall_us
            );
        }
        Ok(t)
    };
    let mut unpaced = run(0)?;
    let mut trials = 1;
    if mode == Mode::Lossless {
        // A lossless trial is the result at whatever rate it reached, and
        // one trial is a lottery on a shared machine (a reader put aside
        // for milliseconds holds the writer back): the median of
        // LOSSLESS_TRIALS, by what each reader got.
        let mut all = vec![unpaced];
        for _ in 1..LOSSLESS_TRIALS {
            all.push(run(0)?);
            trials += 1;
        }
        all.sort_by(|a, b| {
            a.delivered_per_reader()
                .total_cmp(&b.delivered_per_reader())
        });
        unpaced = all.swap_remove(all.len() / 2);
    }
    let mut search = Search::new(&unpaced);
    if !search.done() {
        for _ in 0..plan.steps {
            let offer = search.next_offer();
            let mut t = run(offer)?;
            trials += 1;
            if !t.lossless() {
                // A second chance: on a shared machine another process can
                // stall a reader for milliseconds at random, longer than
                // the ring holds (see max_stall_us); a rate the bus
                // sustains passes one of two trials.
                t = run(offer)?;
                trials += 1;
            }
            search.record(t);
        }
    }
    let rfc = search.best;
    writer.send("quit")?;
    writer.finish(Duration::from_secs(2));
    for r in rs {
        r.finish(Duration::from_secs(2));
    }
    let _ = std::fs::remove_file(&bus);
    Ok(Row {
        mode,
        readers,
        frame_bytes,
        unpaced,
        rfc,
        trials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trial at `offered` where the writer reaches at most `cap`
    /// frames/s and the readers lose `loss` of what is sent.
    fn trial(offered: u64, cap: f64, loss: f64) -> Trial {
        let rate = if offered == 0 {
            cap
        } else {
            (offered as f64).min(cap)
        };
        let sent = rate as u64; // one second
        Trial {
            offered,
            sent,
            elapsed_ns: 1_000_000_000,
            received: vec![(sent as f64 * (1.0 - loss)) as u64; 16],
            dups: 0,
            overruns: 0,
            overrun_bytes: 0,
            max_stall_us: 0,
        }
    }

    #[test]
    fn a_writer_limited_lossless_trial_is_a_result() {
        // 16 readers: unpaced, the writer reaches 150 k frames/s and the
        // readers lose some; paced, the writer never reaches what it is
        // offered, and the readers lose nothing.
        let unpaced = trial(0, 150_000.0, 0.2);
        let mut s = Search::new(&unpaced);
        assert!(!s.done());
        for _ in 0..8 {
            let offer = s.next_offer();
            let t = trial(offer, 100_000.0, 0.0);
            s.record(t);
        }
        let best = s.best.expect("a result");
        assert!(best.lossless());
        let rate = best.delivered_per_reader();
        assert!((90_000.0..=100_000.0).contains(&rate), "{rate}");
    }

    #[test]
    fn the_search_climbs_while_trials_pass_and_stops_below_loss() {
        // The bus sustains 600 k frames/s; the writer could do 1 M.
        let unpaced = trial(0, 1_000_000.0, 0.3);
        let mut s = Search::new(&unpaced);
        for _ in 0..10 {
            let offer = s.next_offer();
            let loss = if offer > 600_000 { 0.05 } else { 0.0 };
            s.record(trial(offer, 1_000_000.0, loss));
        }
        let rate = s.best.expect("a result").delivered_per_reader();
        assert!((580_000.0..=600_000.0).contains(&rate), "{rate}");
    }

    #[test]
    fn a_lossless_unpaced_trial_ends_the_search_and_loss_is_never_a_result() {
        let s = Search::new(&trial(0, 500_000.0, 0.0));
        assert!(s.done());
        let mut s = Search::new(&trial(0, 500_000.0, 0.5));
        for _ in 0..5 {
            let offer = s.next_offer();
            assert_eq!(s.record(trial(offer, 1e9, 0.5)), Verdict::Failed);
        }
        assert!(s.best.is_none());
    }
}
