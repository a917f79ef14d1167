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
mod report;
mod settings;
mod throughput;
mod worker;

pub use worker::{run as run_worker, WorkerArgs};

use anyhow::{Context as _, Result};
use latency::Placement;
use report::{cpus, mode_name, progress, rfc_loss, rfc_rate, wait_name, Report};
use settings::Settings;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use throughput::Row;
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

    /// Frame sizes to measure (bytes, 28 to 65,535; over 1514 only the
    /// lossless rows, on the extended bus).
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

/// Runs the benchmark.
pub fn run(args: Args) -> Result<ExitCode> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("shmif-bench-")
        .tempdir_in(&args.dir)
        .with_context(|| format!("cannot make a directory in {}", args.dir.display()))?;
    let set = Settings::derive(&args);
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
    let (copy, pwrite_ns) = measure_floors(&set, dir.path())?;
    let (lat, wake, futex) = if set.latency {
        measure_latency(&set, dir.path())?
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    let rows = measure_throughput(&set, dir.path())?;
    let report = Report {
        rows,
        lat,
        wake,
        futex,
        copy,
        pwrite_ns,
        quick: set.quick,
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

/// The copy floors per frame size, and the wake-up pwrite's cost.
fn measure_floors(set: &Settings, dir: &Path) -> Result<(Vec<floors::CopyFloor>, f64)> {
    let mut copy = Vec::new();
    for &b in &set.floor_sizes {
        let c = floors::copy_floor(b, set.floor_duration)?;
        progress(&format!(
            "floor copy {b} B: ring code {:.2} Mframes/s, memcpy {:.2} Mframes/s",
            c.ring_fps / 1e6,
            c.memcpy_fps / 1e6
        ));
        copy.push(c);
    }
    let pwrite_ns = floors::pwrite_ns(dir, 20_000)?;
    progress(&format!("floor pwrite (one watcher): {pwrite_ns:.0} ns"));
    Ok((copy, pwrite_ns))
}

/// Latency rows per placement and wait mode, and the wake-up floor of
/// each placement.
#[allow(clippy::type_complexity)]
fn measure_latency(
    set: &Settings,
    dir: &Path,
) -> Result<(
    Vec<(Placement, Wait, latency::Rtts)>,
    Vec<(Placement, latency::Rtts)>,
    Vec<(Placement, latency::Rtts)>,
)> {
    let mut lat = Vec::new();
    let mut wake = Vec::new();
    let mut futexes = Vec::new();
    // The modes take turns, several times, so that each sees the same
    // conditions (on a virtual machine a wake-up costs far more when the
    // other processor has gone idle than when it is busy).
    for &placement in &set.placements {
        // Busy-polling on one processor only measures the time slice.
        let modes: Vec<Wait> = [
            Wait::Blocking,
            Wait::Futex,
            Wait::Spin,
            Wait::BusyPoll,
            Wait::Baseline,
        ]
        .into_iter()
        .filter(|&w| w != Wait::BusyPoll || placement == Placement::TwoCpus)
        .collect();
        let mut floor = latency::Rtts::default();
        let mut futex = latency::Rtts::default();
        let mut per_mode: Vec<latency::Rtts> = modes.iter().map(|_| Default::default()).collect();
        for _ in 0..set.latency_turns {
            let n = set.rounds / set.latency_turns;
            floor.extend(latency::wake_floor(dir, placement, n, n / 10 + 10)?);
            futex.extend(latency::futex_floor(dir, placement, n, n / 10 + 10)?);
            for (wait, acc) in modes.iter().zip(per_mode.iter_mut()) {
                let n = if *wait == Wait::BusyPoll {
                    set.busy_rounds
                } else {
                    set.rounds
                } / set.latency_turns;
                acc.extend(latency::ping_pong(dir, placement, *wait, n, n / 10 + 10)?);
            }
        }
        progress(&format!(
            "floor wake-up round trip, {}: p50 {:.1} µs, p99 {:.1} µs",
            placement.name(),
            floor.p50(),
            floor.p99()
        ));
        wake.push((placement, floor));
        progress(&format!(
            "floor futex round trip, {}: p50 {:.1} µs, p99 {:.1} µs",
            placement.name(),
            futex.p50(),
            futex.p99()
        ));
        futexes.push((placement, futex));
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
    Ok((lat, wake, futexes))
}

/// Throughput rows: every size × reader count × mode.
fn measure_throughput(set: &Settings, dir: &Path) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &b in &set.throughput_sizes {
        for &n in &set.readers {
            // The v3 rows where a v3 bus carries the size; the lossless
            // row (an extended bus) for every size.
            let modes: &[Mode] = if b <= shmif::wire::MAX_FRAME_LEN {
                &[Mode::Fast, Mode::Baseline, Mode::Lossless]
            } else {
                &[Mode::Lossless]
            };
            for &mode in modes {
                let row = throughput::measure(dir, mode, n, b, &set.plan)?;
                progress(&format!(
                    "throughput {} 1->{n} {b} B: {:.3} Mframes/s per reader (loss {:.4} %), unpaced {:.3} (loss {:.2} %, longest stall {} µs), {}",
                    mode_name(mode),
                    rfc_rate(&row) / 1e6,
                    rfc_loss(&row) * 100.0,
                    row.unpaced.delivered_per_reader() / 1e6,
                    row.unpaced.loss() * 100.0,
                    row.unpaced.max_stall_us,
                    crate::cli::output::plural(row.trials as u64, "trial")
                ));
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// A number of reader processes: 1 to 16.
fn parse_readers(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=16).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a reader count from 1 to 16")),
    }
}

/// A frame size the benchmark can number: 28 to 65,535 bytes (sizes over
/// 1514, which a NetBSD v3 bus cannot carry, are measured on the extended
/// bus only).
fn parse_size(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (frames::MIN_BYTES..=MAX_BENCH_FRAME).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a frame size from {} to {MAX_BENCH_FRAME} bytes",
            frames::MIN_BYTES,
        )),
    }
}

/// The largest frame size `--sizes` takes.
const MAX_BENCH_FRAME: usize = 65_535;
