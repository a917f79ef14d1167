//! `shmif bench`: throughput, latency and the machine's floors, for the
//! library and for a literal NetBSD baseline, side by side in one run.
//!
//! Every figure comes from processes started here (this executable run
//! again as a hidden `bench-worker`), on bus files in a tmpfs, so that the
//! ratios between the library, the baseline and the floors are measured
//! under the same conditions.

mod endpoint;
mod floors;
mod frames;
mod latency;
mod plot;
mod proc;
mod throughput;
mod worker;

pub use worker::{run as run_worker, WorkerArgs};

use anyhow::{Context as _, Result};
use latency::Placement;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use throughput::{Plan, Row};
use worker::{Mode, Wait};

/// Measure a bus: throughput, latency and this machine's floors, for the
/// library and a literal NetBSD baseline, in one run.
///
/// Throughput: one writer process to 1, 2 and 3 reader processes, frames of
/// 60, 512 and 1514 bytes, each frame numbered so that loss is counted
/// exactly. The bus is a hub without back-pressure: an overrun reader loses
/// frames. For each case the writer first runs unpaced, then a binary
/// search over its pacing finds the highest offered rate whose loss stays
/// under 0.1 % (RFC 2544; a rate that fails gets a second trial, since on a
/// shared machine other processes stall readers at random); the table
/// gives that rate (frames/s and Gbit/s delivered per reader) and the
/// unpaced rate and loss beside it. Each trial starts with 10 ms of
/// uncounted traffic; a paced writer sleeps between bursts of 50 µs of
/// traffic, each sent as batches (--batch, --batch-bytes).
///
/// Latency: ping-pong of one 60-byte frame between two processes, p50 and
/// p99, waiting by sleeping on the wake-up at once (blocking, the
/// library's default), spinning 50 µs (yielding) before sleeping,
/// busy-polling (with wake-ups deferred by up to 1 ms; two processors
/// only), and as NetBSD does (baseline); both processes pinned to one
/// processor, then to two, each against the floor measured the same way.
///
/// Floors: frames through a 1 MiB ring in one process (the ring code on a
/// plain buffer, and bare memcpy), the bare pwrite + inotify round trip
/// between two processes, and the cost of one wake-up pwrite.
///
/// "baseline" follows NetBSD's if_shmem.c literally, built from the
/// library's primitives: one lock and one wake-up per frame sent, one frame
/// copied per hold of the lock, and a sleep on the file-change event
/// whenever the ring looks empty.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif bench --quick                 # the whole run in under 30 s\n  \
    shmif bench --json > bench.json     # one JSON object on stdout\n  \
    shmif bench --svg bench/throughput.svg\n\n\
    Progress goes to standard error. Figures are noisy on a busy machine: \
    compare the ratios, which are measured in the same run.")]
pub struct Args {
    /// A short run (under 30 s): shorter trials, a coarser search, fewer
    /// round trips.
    #[arg(long)]
    pub quick: bool,

    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Also write the JSON object to FILE (with the tables on stdout).
    #[arg(long, value_name = "FILE")]
    pub save_json: Option<PathBuf>,

    /// Also write a plot of throughput against frame size (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Where the bus files go (a tmpfs).
    #[arg(long, value_name = "DIR", default_value = "/dev/shm")]
    pub dir: PathBuf,

    /// Reader counts to measure (1 to 16 reader processes).
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [1usize, 2, 3],
          value_parser = parse_readers)]
    pub readers: Vec<usize>,

    /// Frame sizes to measure (bytes, 28 to 1514).
    #[arg(long, value_name = "BYTES,...", value_delimiter = ',', default_values_t = [60usize, 512, 1514],
          value_parser = parse_size)]
    pub sizes: Vec<usize>,

    /// Most frames per send_batch call of the fast writer.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub batch: usize,

    /// Most ring bytes (frames and their 24-byte headers) per send_batch
    /// call of the fast writer: 48 KiB is about 31 frames of 1514 bytes, 91
    /// of 512, the full 128 of 60.
    #[arg(long, value_name = "BYTES", default_value_t = 48 * 1024)]
    pub batch_bytes: usize,

    /// Spin of the fast readers before they sleep, in µs [default: the
    /// library's].
    #[arg(long, value_name = "US")]
    pub spin_us: Option<u64>,

    /// Wake-up deferral of the fast writer in µs (`set_wake_delay`: one
    /// wake-up per this interval while frames flow; 0: one per batch).
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub wake_delay_us: u64,

    /// Length of one throughput trial in ms [default: 500, 60 with --quick].
    #[arg(long, value_name = "MS")]
    pub trial_ms: Option<u64>,

    /// Print every throughput trial to standard error.
    #[arg(long)]
    pub verbose: bool,

    /// Pin throughput processes: the writer to the first processor, the
    /// readers to the next ones in turn (by default the scheduler places
    /// them, and may put writer and reader on one processor).
    #[arg(long)]
    pub pin: bool,

    /// Only the throughput part (skips latency and floors' round trips).
    #[arg(long, hide = true)]
    pub only_throughput: bool,

    /// Only the latency part (no throughput).
    #[arg(long, hide = true)]
    pub only_latency: bool,

    /// A tiny run for tests (a few seconds).
    #[arg(long, hide = true)]
    pub smoke: bool,
}

/// How many times the latency modes take turns.
const LATENCY_TURNS: usize = 5;

/// Runs the benchmark.
pub fn run(args: Args) -> Result<ExitCode> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("shmif-bench-")
        .tempdir_in(&args.dir)
        .with_context(|| format!("cannot make a directory in {}", args.dir.display()))?;
    let (sizes, readers) = if args.smoke {
        (vec![512], vec![1])
    } else {
        (args.sizes.clone(), args.readers.clone())
    };
    let quick = args.quick || args.smoke;
    let trial_ms = args.trial_ms.unwrap_or(if args.smoke {
        30
    } else if quick {
        60
    } else {
        500
    });
    let plan = Plan {
        trial_ns: trial_ms * 1_000_000,
        pause_ns: if quick { 10_000_000 } else { 20_000_000 },
        steps: if args.smoke {
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
    let (rounds, busy_rounds, floor_dur) = if args.smoke {
        (200, 2000, Duration::from_millis(20))
    } else if quick {
        (2000, 20000, Duration::from_millis(100))
    } else {
        (20000, 200000, Duration::from_millis(500))
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    progress(&format!(
        "shmif bench: {} cpus, load {}, buses in {}",
        cpus(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        dir.path().display()
    ));

    // Floors.
    let mut copy = Vec::new();
    for &b in &sizes {
        let c = floors::copy_floor(b, floor_dur)?;
        progress(&format!(
            "floor copy {b} B: ring code {:.2} Mframes/s, memcpy {:.2} Mframes/s",
            c.ring_fps / 1e6,
            c.memcpy_fps / 1e6
        ));
        copy.push(c);
    }
    let pwrite_ns = floors::pwrite_ns(dir.path(), 20_000)?;
    progress(&format!("floor pwrite (one watcher): {pwrite_ns:.0} ns"));
    let mut lat = Vec::new();
    let mut wake = Vec::new();
    if !args.only_throughput {
        // The modes take turns, several times, so that each sees the same
        // conditions (on a virtual machine a wake-up costs far more when
        // the other processor has gone idle than when it is busy).
        let turns = if args.smoke { 1 } else { LATENCY_TURNS };
        let placements = if cpus() >= 2 {
            vec![Placement::SameCpu, Placement::TwoCpus]
        } else {
            vec![Placement::SameCpu]
        };
        for placement in placements {
            // Busy-polling on one processor only measures the time slice.
            let modes: Vec<Wait> = [Wait::Blocking, Wait::Spin, Wait::BusyPoll, Wait::Baseline]
                .into_iter()
                .filter(|&w| w != Wait::BusyPoll || placement == Placement::TwoCpus)
                .collect();
            let mut floor = latency::Rtts::default();
            let mut per_mode: Vec<latency::Rtts> =
                modes.iter().map(|_| Default::default()).collect();
            for _ in 0..turns {
                let n = rounds / turns;
                floor.extend(latency::wake_floor(dir.path(), placement, n, n / 10 + 10)?);
                for (wait, acc) in modes.iter().zip(per_mode.iter_mut()) {
                    let n = if *wait == Wait::BusyPoll {
                        busy_rounds
                    } else {
                        rounds
                    } / turns;
                    acc.extend(latency::ping_pong(
                        dir.path(),
                        placement,
                        *wait,
                        n,
                        n / 10 + 10,
                    )?);
                }
            }
            progress(&format!(
                "floor wake-up round trip, {}: p50 {:.1} µs, p99 {:.1} µs",
                placement.name(),
                floor.p50(),
                floor.p99()
            ));
            wake.push((placement, floor));
            for (wait, r) in modes.into_iter().zip(per_mode) {
                progress(&format!(
                    "latency {}, {}: p50 {:.2} µs, p99 {:.2} µs",
                    wait_name(wait),
                    placement.name(),
                    r.p50(),
                    r.p99()
                ));
                lat.push((placement, wait, r));
            }
        }
    }

    // Throughput.
    let mut rows = Vec::new();
    let sizes = if args.only_latency { Vec::new() } else { sizes };
    for &b in &sizes {
        for &n in &readers {
            for mode in [Mode::Fast, Mode::Baseline] {
                let row = throughput::measure(dir.path(), mode, n, b, &plan)?;
                progress(&format!(
                    "throughput {} 1->{n} {b} B: {:.3} Mframes/s per reader (loss {:.4} %), unpaced {:.3} (loss {:.2} %, longest stall {} µs), {} trials",
                    mode_name(mode),
                    rfc_rate(&row) / 1e6,
                    rfc_loss(&row) * 100.0,
                    row.unpaced.delivered_per_reader() / 1e6,
                    row.unpaced.loss() * 100.0,
                    row.unpaced.max_stall_us,
                    row.trials
                ));
                rows.push(row);
            }
        }
    }

    let report = Report {
        rows,
        lat,
        wake,
        copy,
        pwrite_ns,
        quick,
        seconds: started.elapsed().as_secs_f64(),
        load,
    };
    if let Some(path) = &args.svg {
        plot::write_svg(path, &report.plot_series(), report.quick)?;
        progress(&format!("plot written to {}", path.display()));
    }
    if let Some(path) = &args.save_json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.tables());
    }
    Ok(ExitCode::SUCCESS)
}

/// A number of reader processes: 1 to 16.
fn parse_readers(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=16).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a reader count from 1 to 16")),
    }
}

/// A frame size the benchmark can number: 28 to 1514 bytes.
fn parse_size(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (frames::MIN_BYTES..=shmif::wire::MAX_FRAME_LEN).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a frame size from {} to {} bytes",
            frames::MIN_BYTES,
            shmif::wire::MAX_FRAME_LEN
        )),
    }
}

fn progress(line: &str) {
    eprintln!("{line}");
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Fast => "fast",
        Mode::Baseline => "baseline",
    }
}

fn wait_name(w: Wait) -> &'static str {
    match w {
        Wait::Blocking => "blocking",
        Wait::Spin => "spin_50us",
        Wait::BusyPoll => "busy_poll",
        Wait::Baseline => "baseline",
    }
}

/// The RFC 2544 rate per reader (0 if no trial passed).
fn rfc_rate(r: &Row) -> f64 {
    r.rfc.as_ref().map_or(0.0, |t| t.delivered_per_reader())
}

/// The loss at the RFC 2544 rate (the unpaced loss if no trial passed).
fn rfc_loss(r: &Row) -> f64 {
    r.rfc.as_ref().map_or(r.unpaced.loss(), |t| t.loss())
}

fn gbit(fps: f64, bytes: usize) -> f64 {
    fps * bytes as f64 * 8.0 / 1e9
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// Everything measured, for the tables, the JSON and the plot.
struct Report {
    rows: Vec<Row>,
    lat: Vec<(Placement, Wait, latency::Rtts)>,
    wake: Vec<(Placement, latency::Rtts)>,
    copy: Vec<floors::CopyFloor>,
    pwrite_ns: f64,
    quick: bool,
    seconds: f64,
    load: String,
}

impl Report {
    fn baseline_of(&self, r: &Row) -> Option<&Row> {
        self.rows.iter().find(|b| {
            b.mode == Mode::Baseline && b.readers == r.readers && b.frame_bytes == r.frame_bytes
        })
    }
    fn copy_of(&self, bytes: usize) -> f64 {
        self.copy
            .iter()
            .find(|c| c.frame_bytes == bytes)
            .map_or(f64::NAN, |c| c.ring_fps)
    }
    fn lat_p50(&self, p: Placement, w: Wait) -> f64 {
        self.lat
            .iter()
            .find(|(q, x, _)| *q == p && *x == w)
            .map_or(f64::NAN, |(_, _, r)| r.p50())
    }
    fn wake_of(&self, p: Placement) -> Option<&latency::Rtts> {
        self.wake.iter().find(|(q, _)| *q == p).map(|(_, r)| r)
    }
    fn wake_p50(&self, p: Placement) -> f64 {
        self.wake_of(p).map_or(f64::NAN, |w| w.p50())
    }

    fn json(&self) -> Value {
        let throughput: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let rate = rfc_rate(r);
                let base = self.baseline_of(r).map_or(f64::NAN, rfc_rate);
                json!({
                    "mode": mode_name(r.mode),
                    "readers": r.readers,
                    "frame_bytes": r.frame_bytes,
                    "frames_per_sec_per_reader": rate,
                    "gbit_per_sec_per_reader": gbit(rate, r.frame_bytes),
                    "loss_ratio": rfc_loss(r),
                    "rfc2544_found": r.rfc.is_some(),
                    "offered_frames_per_sec": r.rfc.as_ref().map_or(0, |t| t.offered),
                    "unpaced_frames_per_sec_per_reader": r.unpaced.delivered_per_reader(),
                    "unpaced_send_frames_per_sec": r.unpaced.send_rate(),
                    "unpaced_loss_ratio": r.unpaced.loss(),
                    "unpaced_overruns": r.unpaced.overruns,
                    "unpaced_overrun_bytes": r.unpaced.overrun_bytes,
                    "unpaced_max_stall_us": r.unpaced.max_stall_us,
                    "max_stall_us": r.rfc.as_ref().map_or(0, |t| t.max_stall_us),
                    "trials": r.trials,
                    "vs_baseline": ratio(rate, base),
                    "vs_copy_floor": ratio(rate, self.copy_of(r.frame_bytes)),
                })
            })
            .collect();
        let latency: Vec<Value> = self
            .lat
            .iter()
            .map(|(p, w, r)| {
                json!({
                    "mode": wait_name(*w),
                    "placement": p.name(),
                    "p50_us": r.p50(),
                    "p99_us": r.p99(),
                    "samples": r.len(),
                    "vs_baseline": ratio(r.p50(), self.lat_p50(*p, Wait::Baseline)),
                    "vs_wake_floor": ratio(r.p50(), self.wake_p50(*p)),
                })
            })
            .collect();
        let wake: Vec<Value> = self
            .wake
            .iter()
            .map(|(p, r)| json!({"placement": p.name(), "p50_us": r.p50(), "p99_us": r.p99()}))
            .collect();
        let copy: Vec<Value> = self
            .copy
            .iter()
            .map(|c| {
                json!({
                    "frame_bytes": c.frame_bytes,
                    "ring_frames_per_sec": c.ring_fps,
                    "memcpy_frames_per_sec": c.memcpy_fps,
                })
            })
            .collect();
        let largest = self.copy.iter().max_by_key(|c| c.frame_bytes);
        json!({
            "throughput": throughput,
            "latency": latency,
            "floors": {
                "copy_frames_per_sec": largest.map_or(f64::NAN, |c| c.ring_fps),
                "copy_frame_bytes": largest.map_or(0, |c| c.frame_bytes),
                "copy": copy,
                "wake_rtt_p50_us": self.wake_p50(Placement::SameCpu),
                "wake_rtt_p99_us": self.wake_of(Placement::SameCpu).map_or(f64::NAN, |w| w.p99()),
                "wake_rtt": wake,
                "pwrite_ns": self.pwrite_ns,
            },
            "machine": {
                "cpus": cpus(),
                "loadavg_at_start": self.load.trim(),
            },
            "quick": self.quick,
            "seconds": self.seconds,
        })
    }

    fn tables(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nThroughput per reader: the RFC 2544 rate (highest offered rate with loss < 0.1 %), and unpaced"
        );
        let _ = writeln!(
            s,
            "{:<9} {:>7} {:>6} {:>10} {:>7} {:>8} {:>10} {:>8} {:>10} {:>9}",
            "mode",
            "readers",
            "bytes",
            "Mframes/s",
            "Gbit/s",
            "loss %",
            "unpaced",
            "loss %",
            "x baseline",
            "x floor"
        );
        for r in &self.rows {
            let rate = rfc_rate(r);
            let base = self.baseline_of(r).map_or(f64::NAN, rfc_rate);
            let _ = writeln!(
                s,
                "{:<9} {:>7} {:>6} {:>10.3} {:>7.2} {:>8.4} {:>10.3} {:>8.2} {:>10.2} {:>9.2}",
                mode_name(r.mode),
                r.readers,
                r.frame_bytes,
                rate / 1e6,
                gbit(rate, r.frame_bytes),
                rfc_loss(r) * 100.0,
                r.unpaced.delivered_per_reader() / 1e6,
                r.unpaced.loss() * 100.0,
                ratio(rate, base),
                ratio(rate, self.copy_of(r.frame_bytes)),
            );
        }
        let _ = writeln!(
            s,
            "(x floor: against the one-process ring copy floor below)"
        );
        if !self.lat.is_empty() {
            let _ = writeln!(
                s,
                "\nLatency: ping-pong of one 60-byte frame between two processes, on one processor or two"
            );
            let _ = writeln!(
                s,
                "{:<26} {:<9} {:>8} {:>8} {:>10} {:>8}",
                "mode", "cpus", "p50 µs", "p99 µs", "x baseline", "x floor"
            );
            for (p, r) in &self.wake {
                for (q, w, l) in self.lat.iter().filter(|(q, _, _)| q == p) {
                    let _ = writeln!(
                        s,
                        "{:<26} {:<9} {:>8.2} {:>8.2} {:>10.3} {:>8.3}",
                        wait_name(*w),
                        q.name(),
                        l.p50(),
                        l.p99(),
                        ratio(l.p50(), self.lat_p50(*q, Wait::Baseline)),
                        ratio(l.p50(), r.p50())
                    );
                }
                let _ = writeln!(
                    s,
                    "{:<26} {:<9} {:>8.2} {:>8.2}",
                    "floor: pwrite+inotify RTT",
                    p.name(),
                    r.p50(),
                    r.p99()
                );
            }
        }
        let _ = writeln!(s, "\nFloors (one process, no bus)");
        for c in &self.copy {
            let _ = writeln!(
                s,
                "  {:>5} B frames through a 1 MiB ring: ring code {:.2} Mframes/s, memcpy {:.2} Mframes/s",
                c.frame_bytes,
                c.ring_fps / 1e6,
                c.memcpy_fps / 1e6
            );
        }
        let _ = writeln!(
            s,
            "  wake-up pwrite on a watched file: {:.0} ns",
            self.pwrite_ns
        );
        let _ = writeln!(
            s,
            "\n{} cpus, load at start {}; {:.1} s",
            cpus(),
            self.load
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            self.seconds
        );
        s
    }

    fn plot_series(&self) -> Vec<plot::Series> {
        let mut out = Vec::new();
        let mut keys: Vec<(Mode, usize)> = self.rows.iter().map(|r| (r.mode, r.readers)).collect();
        keys.dedup();
        keys.sort_by_key(|&(m, n)| (m == Mode::Baseline, n));
        keys.dedup();
        for (mode, n) in keys {
            let mut points: Vec<(f64, f64)> = self
                .rows
                .iter()
                .filter(|r| r.mode == mode && r.readers == n)
                .map(|r| (r.frame_bytes as f64, rfc_rate(r) / 1e6))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            out.push(plot::Series {
                label: format!("{} 1 -> {n}", mode_name(mode)),
                points,
                style: if mode == Mode::Fast {
                    plot::Style::Solid(n)
                } else {
                    plot::Style::Dashed(n)
                },
            });
        }
        let mut floor: Vec<(f64, f64)> = self
            .copy
            .iter()
            .map(|c| (c.frame_bytes as f64, c.ring_fps / 1e6))
            .collect();
        floor.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.push(plot::Series {
            label: "copy floor (1 process)".into(),
            points: floor,
            style: plot::Style::Floor,
        });
        out
    }
}
