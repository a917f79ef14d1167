//! `shmif listen`: watch a bus live, one line per frame.
//!
//! Attaches to the bus as a new interface (so it sees frames written after
//! it attached, as any peer would), prints each frame it receives with the
//! sender's timestamp and a decoded summary, and on the way out prints the
//! interface's counters to standard error.

use crate::cli::error::{interrupted, lib_error};
use crate::cli::output::plural;
use crate::cli::repair::RepairNotice;
use crate::cli::signal::StopSignal;
use shmif::Error;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Print frames as they arrive on a shmif bus.
///
/// Attaches to BUS (creating it if missing) as a new interface with a random
/// MAC and prints one line per frame it receives from then on:
/// `HH:MM:SS.uuuuuu` (the sender's timestamp, UTC; rump kernels stamp their
/// uptime) and a decoded summary. Without --promisc only frames for this
/// interface, broadcast and multicast are seen, like any peer would; with
/// it, every frame. Stops after COUNT frames, at the timeout, or on Ctrl-C,
/// then prints the interface's counters to standard error.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif listen /tmp/bus                    # until Ctrl-C\n  \
    shmif listen /tmp/bus -c 5 --promisc     # the next 5 frames, whoever they are for\n  \
    shmif listen /tmp/bus -c 1 --timeout 10  # wait at most 10 s for one frame\n  \
    shmif listen /tmp/bus --json | jq -c '{src, kind, summary}'   # one JSON object per frame\n\n\
    Exit status: 0 when COUNT frames arrived (or, without -c, at the timeout); 1 when the \
    timeout came first, or on an error; 2 on a usage error; 130 when stopped by SIGINT or \
    SIGTERM before COUNT frames.")]
pub struct Args {
    /// The bus file (created if missing).
    #[arg(value_name = "BUS")]
    pub bus: PathBuf,

    #[command(flatten)]
    pub bus_opts: crate::cli::bus_opts::BusOpts,

    /// Stop after receiving N frames.
    #[arg(short = 'c', long, value_name = "N",
          value_parser = crate::cli::parse::count)]
    pub count: Option<u64>,

    /// Receive frames addressed to any MAC, not just broadcast, multicast
    /// and this interface's own.
    #[arg(long)]
    pub promisc: bool,

    /// Give up after SECS seconds (fractions allowed, e.g. 0.5).
    #[arg(long, value_name = "SECS", value_parser = crate::cli::parse::seconds)]
    pub timeout: Option<Duration>,

    /// Print each frame as one JSON object per line (sec, usec, len, src,
    /// dst, ethertype, kind, ip_src, ip_dst, protocol, src_port, dst_port,
    /// tcp_flags, summary) instead of a text line.
    #[arg(long)]
    pub json: bool,
}

/// Why the receive loop ended.
enum End {
    /// COUNT frames arrived.
    Done,
    /// The timeout passed first.
    TimedOut,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Standard output was closed (`shmif listen bus | head -3`).
    OutputClosed,
}

/// Runs `shmif listen`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let iface = Arc::new(args.bus_opts.attach(&args.bus, None).map_err(lib_error)?);
    iface.set_promiscuous(args.promisc);

    // Ctrl-C takes the interface down, which wakes a blocked receive.
    let stop = StopSignal::install()?;
    stop.take_down_on_stop(&iface)?;

    let deadline = args.timeout.map(|t| Instant::now() + t);
    let mut out = io::stdout().lock();
    let mut got = 0u64;
    let mut repairs = RepairNotice::new(&args.bus);
    let end = loop {
        if args.count.is_some_and(|n| got >= n) {
            break End::Done;
        }
        let received = match deadline {
            Some(d) => iface.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => iface.recv().map(Some),
        };
        let frame = match received {
            Ok(Some(f)) => f,
            Ok(None) => break End::TimedOut,
            Err(Error::Down) if stop.stopped() => break End::Interrupted,
            Err(e) => return Err(lib_error(e)),
        };
        got += 1;
        repairs.check(&iface.counters());
        let line = if args.json {
            crate::summary::json_line(frame.sec, frame.usec, &frame.data)
        } else {
            crate::summary::frame_line(frame.sec, frame.usec, &frame.data)
        };
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                break End::OutputClosed;
            }
            return Err(anyhow::anyhow!("writing to standard output: {e}"));
        }
    };
    drop(out);

    if matches!(end, End::OutputClosed) {
        return Ok(ExitCode::SUCCESS);
    }
    let c = iface.counters();
    let why = match end {
        End::TimedOut => ", timed out",
        End::Interrupted => ", interrupted",
        _ => "",
    };
    let _ = writeln!(
        io::stderr().lock(),
        "shmif: {} ({}): received {} ({} bytes), filtered {}, overruns {} ({} bytes lost), \
         malformed {}, repairs {}{why}",
        args.bus.display(),
        iface.mac(),
        plural(c.rx_frames, "frame"),
        c.rx_bytes,
        c.rx_filtered,
        c.overruns,
        c.overrun_bytes,
        c.malformed,
        c.ring_repairs,
    );
    Ok(match (end, args.count) {
        (End::Done, _) | (End::TimedOut, None) => ExitCode::SUCCESS,
        (End::Interrupted, _) => interrupted(),
        _ => ExitCode::FAILURE,
    })
}
