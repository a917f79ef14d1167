//! The benchmark's settings, derived once from its arguments: what a full,
//! `--quick` or smoke run measures, and for how long.

use super::latency::Placement;
use super::report::cpus;
use super::throughput::Plan;
use super::Args;
use std::time::Duration;

/// How many times the latency modes take turns.
const LATENCY_TURNS: usize = 5;

/// Everything a run needs to know, worked out from [`Args`].
#[derive(Debug)]
pub(super) struct Settings {
    /// A short run (`--quick`, or the smoke run of the tests).
    pub quick: bool,
    /// Frame sizes of the copy floor.
    pub floor_sizes: Vec<usize>,
    /// Frame sizes of the throughput rows (none with `--only-latency`).
    pub throughput_sizes: Vec<usize>,
    /// Reader counts of the throughput rows.
    pub readers: Vec<usize>,
    /// How throughput trials are paced and searched.
    pub plan: Plan,
    /// Whether to measure latency (not with `--only-throughput`).
    pub latency: bool,
    /// Round trips per blocking latency mode.
    pub rounds: usize,
    /// Round trips of the busy-poll mode (each is far shorter).
    pub busy_rounds: usize,
    /// How many times the latency modes take turns.
    pub latency_turns: usize,
    /// Where the latency endpoints run.
    pub placements: Vec<Placement>,
    /// How long each copy floor is measured.
    pub floor_duration: Duration,
}

impl Settings {
    /// The settings for `args`.
    pub fn derive(args: &Args) -> Settings {
        let smoke = args.smoke;
        let quick = args.quick || smoke;
        let (sizes, readers) = if smoke {
            (vec![512], vec![1])
        } else {
            (args.sizes.clone(), args.readers.clone())
        };
        let trial_ms = args.trial_ms.unwrap_or(if smoke {
            30
        } else if quick {
            60
        } else {
            500
        });
        let plan = Plan {
            trial_ns: trial_ms * 1_000_000,
            pause_ns: if quick { 10_000_000 } else { 20_000_000 },
            steps: if smoke {
                1
            } else if quick {
                5
            } else {
                8
            },
            batch: args.batch.max(1),
            batch_bytes: args.batch_bytes,
            spin_ns: args.spin_us.map(|us| us.saturating_mul(1000)),
            wake_delay_ns: args.wake_delay_us.saturating_mul(1000),
            verbose: args.verbose,
            pin: args.pin,
        };
        let (rounds, busy_rounds, floor_duration) = if smoke {
            (200, 2000, Duration::from_millis(20))
        } else if quick {
            (2000, 20000, Duration::from_millis(100))
        } else {
            (20000, 200000, Duration::from_millis(500))
        };
        let placements = if cpus() >= 2 {
            vec![Placement::SameCpu, Placement::TwoCpus]
        } else {
            vec![Placement::SameCpu]
        };
        Settings {
            quick,
            throughput_sizes: if args.only_latency {
                Vec::new()
            } else {
                sizes.clone()
            },
            // The copy floor runs the v3 ring, which carries up to 1514.
            floor_sizes: sizes
                .into_iter()
                .filter(|&b| b <= shmif::wire::MAX_FRAME_LEN)
                .collect(),
            readers,
            plan,
            latency: !args.only_throughput,
            rounds,
            busy_rounds,
            latency_turns: if smoke { 1 } else { LATENCY_TURNS },
            placements,
            floor_duration,
        }
    }
}
