//! `shmif tcp-send`: push a checkable byte stream to a TCP server on a bus.

use crate::cli::error::interrupted;
use crate::cli::parse;
use crate::cli::signal::StopSignal;
use crate::net::transfer::{local_port, TcpSendOptions, TcpSender};
use crate::net::{self};
use anyhow::Result;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Send megabytes of a test pattern to a TCP server on a bus and report
/// the throughput.
///
/// The stream is the `shmif` test pattern: byte i is byte (i mod 8) of the
/// little-endian 64-bit word (i div 8) * 0x9e3779b97f4a7c15 (wrapping), so
/// every 8-byte word differs and any lost, repeated or shifted piece shows.
/// `shmif host --tcp-sink PORT` checks it. The time runs from the
/// connection's establishment until the last byte is acknowledged. Whatever
/// the server sends back (an echo server) is checked against the same
/// pattern. A progress bar shows on standard error when it is a terminal.
/// On SIGINT or SIGTERM the connection is aborted with a reset, so that the
/// server frees it at once.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif host /tmp/bus --ip 10.0.0.1/24 --tcp-sink 9000 --tcp-echo 7 &\n  \
    shmif tcp-send /tmp/bus --ip 10.0.0.2/24 10.0.0.1:9000 --megabytes 100\n  \
    shmif tcp-send /tmp/bus --ip 10.0.0.2/24 10.0.0.1:7 --megabytes 5 --expect-echo\n  \
    shmif tcp-send /tmp/bus --ip fd00::2/64 '[fd00::1]:9000' --megabytes 50\n  \
    shmif tcp-send /tmp/bus --ip 10.0.0.2/24 10.0.0.1:9000 --json | jq .mib_per_sec\n\n\
    Exit status: 0 when everything was sent and acknowledged (and, with --expect-echo, echoed back \
    intact); 1 when not, or on an error; 2 on a usage error; 130 when stopped by SIGINT or SIGTERM.")]
pub struct Args {
    #[command(flatten)]
    pub stack: net::StackArgs,
    /// The server: ADDR:PORT, or `[ADDR]:PORT` for IPv6.
    #[arg(value_name = "DEST:PORT", value_parser = parse::socket_addr)]
    pub dest: SocketAddr,
    /// How much to send, in mebibytes (1 MiB = 1,048,576 bytes); fractions
    /// are fine.
    #[arg(short = 'm', long, default_value_t = 10.0, value_name = "N", value_parser = parse::megabytes, allow_negative_numbers = true)]
    pub megabytes: f64,
    /// Fail unless the server sends the whole stream back (an echo server).
    #[arg(long)]
    pub expect_echo: bool,
    /// Size of the socket's send and receive buffers, in KiB.
    /// [default: 512; on an extended bus, 32 of its largest frames if
    /// that is more (2 MiB with 64 KiB frames)]
    #[arg(long, value_name = "KIB")]
    pub tcp_buffer: Option<usize>,
    /// Give up after this many seconds without progress.
    #[arg(short = 'W', long, default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Print the results as one JSON object on standard output (src,
    /// dest, bytes, bytes_acked, seconds, mib_per_sec, connected, echoed,
    /// echo_ok, ok, interrupted, error) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `shmif tcp-send`.
pub fn run(args: Args) -> Result<ExitCode> {
    let opts = TcpSendOptions {
        dest: args.dest,
        megabytes: args.megabytes,
        expect_echo: args.expect_echo,
        tcp_buffer: args.tcp_buffer,
        timeout: Duration::from_secs_f64(args.timeout.clamp(0.001, 1e6)),
        json: args.json,
        progress: true,
    };
    let addrs = args.stack.addresses()?;
    opts.check(&format!("DEST {}", args.dest), &addrs)?;
    let mut stack = args.stack.attach(&addrs)?;
    let stop = StopSignal::install()?;
    stop.take_down_on_stop(&stack.shmif)?;
    let port = local_port(&stack, 0, &[]);
    let mut sender = TcpSender::start(&mut stack, opts, port, "shmif tcp-send")?;
    let ok = net::run_alone(&mut stack, &mut sender, &stop)?;
    Ok(if stop.stopped() {
        interrupted()
    } else if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
