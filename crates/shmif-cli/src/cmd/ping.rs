//! `shmif ping`: ICMP echo over a bus, from a userspace TCP/IP stack.

use crate::cli::error::interrupted;
use crate::cli::parse;
use crate::cli::signal::StopSignal;
use crate::net::{self, ping::PingOptions, ping::Pinger};
use anyhow::Result;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Send ICMP echo requests to a host on a bus and report the replies.
///
/// `ping` attaches to the bus as a new interface with the address given by
/// --ip (or --ip6), resolves DEST with ARP (IPv4) or neighbour discovery
/// (IPv6), and sends echo requests. It prints one line per reply with its
/// round-trip time, then a summary with the loss and the min/avg/median/max
/// RTT; when nothing came back it says whether anybody answered ARP (or
/// neighbour discovery) for DEST at all. SIGINT stops it early, with the
/// summary.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif ping /tmp/bus --ip 10.0.0.2/24 10.0.0.1 -c 3\n  \
    shmif ping /tmp/bus --ip fd00::2/64 fd00::1 -c 1000 -i 0 -q   # latency: back to back\n  \
    shmif ping /tmp/bus --ip 10.0.0.2/24 --ip6 fd00::2/64 fd00::1\n  \
    shmif ping /tmp/bus --ip 10.0.0.2/24 10.0.0.1 -c 3 --json | jq .rtt_ms.avg\n\n\
    Exit status: 0 if at least one reply came back (none with wrong data); 1 otherwise, or on an \
    error; 2 on a usage error; 130 when stopped by SIGINT or SIGTERM.")]
pub struct Args {
    #[command(flatten)]
    pub stack: net::StackArgs,
    /// The address to ping, IPv4 or IPv6.
    #[arg(value_name = "DEST")]
    pub dest: IpAddr,
    /// Stop after COUNT requests (default: until SIGINT).
    #[arg(short = 'c', long, value_name = "COUNT", value_parser = crate::cli::parse::count)]
    pub count: Option<u64>,
    /// Seconds between requests; 0 sends each request as soon as the
    /// previous reply is in (or has timed out).
    #[arg(short = 'i', long, default_value = "1", value_name = "SECONDS", value_parser = parse::seconds_to_an_hour)]
    pub interval: Duration,
    /// Bytes of data in each request (after the 8-byte ICMP header).
    #[arg(short = 's', long, default_value_t = 56, value_name = "SIZE")]
    pub size: usize,
    /// Seconds to wait for each reply.
    #[arg(short = 'W', long, default_value = "2", value_name = "TIMEOUT", value_parser = parse::seconds_to_an_hour)]
    pub timeout: Duration,
    /// Print only the summary.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print only one JSON object with the results (dest, src,
    /// transmitted, received, loss_percent, wrong_data, seconds, rtt_ms
    /// {min, avg, median, max}, replies [[seq, ms]], ok, interrupted, error).
    #[arg(long)]
    pub json: bool,
}

/// Runs `shmif ping`.
pub fn run(args: Args) -> Result<ExitCode> {
    let opts = PingOptions {
        dest: args.dest,
        count: args.count,
        interval: args.interval,
        size: args.size,
        timeout: args.timeout,
        quiet: args.quiet,
        json: args.json,
    };
    let addrs = args.stack.addresses()?;
    opts.check(
        &format!("DEST {}", args.dest),
        "-s",
        &addrs,
        &args.stack.bus,
    )?;
    let mut stack = args.stack.attach(&addrs)?;
    let stop = StopSignal::install()?;
    stop.take_down_on_stop(&stack.shmif)?;
    let mut pinger = Pinger::start(&mut stack, opts, &args.stack.bus)?;
    let ok = net::run_alone(&mut stack, &mut pinger, &stop)?;
    Ok(if stop.stopped() {
        interrupted()
    } else if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
