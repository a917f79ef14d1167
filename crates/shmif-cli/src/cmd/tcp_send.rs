//! `shmif tcp-send`: push a checkable byte stream to a TCP server on a bus.

use super::net::{self, Stack, StopSignal};
use anyhow::{bail, Result};
use shmif::MacAddr;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpCidr, IpEndpoint};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Send megabytes of a test pattern to a TCP server on a bus and report
/// the throughput.
///
/// The stream is the `shmif` test pattern: byte i is byte (i mod 8) of the
/// little-endian 64-bit word (i div 8) * 0x9e3779b97f4a7c15 (wrapping), so
/// every 8-byte word differs and any lost, repeated or shifted piece shows.
/// `shmif host --tcp-sink PORT` checks it. The time runs from the
/// connection's establishment until the last byte is acknowledged. Whatever
/// the server sends back (an echo server) is checked against the same
/// pattern. Exits 0 when everything was sent and acknowledged (and, with
/// --expect-echo, echoed back intact).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif host /tmp/bus --ip 10.0.0.1/24 --tcp-sink 9000 --tcp-echo 7 &\n  \
    shmif tcp-send /tmp/bus --ip 10.0.0.2/24 10.0.0.1:9000 --megabytes 100\n  \
    shmif tcp-send /tmp/bus --ip 10.0.0.2/24 10.0.0.1:7 --megabytes 5 --expect-echo\n  \
    shmif tcp-send /tmp/bus --ip fd00::2/64 '[fd00::1]:9000' --megabytes 50")]
pub struct Args {
    /// The bus file.
    pub bus: PathBuf,
    /// This interface's address, ADDR/PREFIX, IPv4 or IPv6. Without
    /// /PREFIX: /24 or /64.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = net::parse_cidr)]
    pub ip: Option<IpCidr>,
    /// An IPv6 address as well, ADDR/PREFIX, for IPv6 destinations.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = net::parse_cidr)]
    pub ip6: Option<IpCidr>,
    /// This interface's MAC address (default: random b2:a0:xx:xx:xx:xx).
    #[arg(long, value_parser = net::parse_mac)]
    pub mac: Option<MacAddr>,
    /// The server: ADDR:PORT, or [ADDR]:PORT for IPv6.
    #[arg(value_name = "DEST:PORT")]
    pub dest: SocketAddr,
    /// How much to send, in mebibytes (1 MiB = 1,048,576 bytes); fractions
    /// are fine.
    #[arg(short = 'm', long, default_value_t = 10.0, value_name = "N", value_parser = parse_megabytes, allow_negative_numbers = true)]
    pub megabytes: f64,
    /// Fail unless the server sends the whole stream back (an echo server).
    #[arg(long)]
    pub expect_echo: bool,
    /// Size of the socket's send and receive buffers, in KiB.
    #[arg(long, default_value_t = net::DEFAULT_TCP_BUFFER_KIB, value_name = "KIB")]
    pub tcp_buffer: usize,
    /// Give up after this many seconds without progress.
    #[arg(short = 'W', long, default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
}

fn parse_megabytes(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of mebibytes")),
    }
}

/// How long to wait for the server to close its side once everything is
/// acknowledged (a sink closes at once).
const LINGER: Duration = Duration::from_secs(1);

/// Runs `shmif tcp-send`.
pub fn run(args: Args) -> Result<ExitCode> {
    let total = (args.megabytes * net::MIB).round() as u64;
    if total == 0 {
        bail!("--megabytes {}: less than one byte", args.megabytes);
    }
    if args.dest.port() == 0 {
        bail!("DEST:PORT {}: port 0 cannot be connected to", args.dest);
    }
    let addrs = match (args.ip, args.ip6) {
        (Some(v6 @ IpCidr::Ipv6(_)), None) => vec![v6],
        (ip, ip6) => net::addresses(ip, ip6)?,
    };
    let mut stack = Stack::attach(&args.bus, args.mac, &addrs)?;
    let remote = IpEndpoint::from(args.dest);
    if stack.source_for(remote.addr).is_none() {
        bail!(
            "DEST {} is {}, but this interface has no such address: add --ip{} ADDR/PREFIX",
            args.dest,
            if args.dest.is_ipv4() { "IPv4" } else { "IPv6" },
            if args.dest.is_ipv4() { "" } else { "6" }
        );
    }
    let stop = StopSignal::install(&stack.shmif)?;
    let timeout = Duration::from_secs_f64(args.timeout.clamp(0.001, 1e6));

    let handle = stack.sockets.add(net::tcp_socket(args.tcp_buffer));
    let local_port = 49152 + (stack.shmif.sender_id() % 16384) as u16;
    {
        let s = stack.sockets.get_mut::<tcp::Socket>(handle);
        let cx = stack.ip.context();
        if let Err(e) = s.connect(cx, remote, local_port) {
            bail!("cannot connect to {}: {e}", args.dest);
        }
    }

    let mut sent: u64 = 0; // bytes handed to the socket
    let mut echoed: u64 = 0;
    let mut echo_bad: Option<u64> = None;
    let mut start: Option<Instant> = None;
    let mut acked_at: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let mut last_mark = (0u64, 0usize, 0u64, tcp::State::Closed);
    let failure: Option<String> = loop {
        stack.poll();
        let s = stack.sockets.get_mut::<tcp::Socket>(handle);
        let state = s.state();
        if start.is_none() && matches!(state, tcp::State::Established) {
            start = Some(Instant::now());
        }
        if start.is_none() && state == tcp::State::Closed {
            break Some(format!(
                "connection to {} refused or reset (is a server listening there?)",
                args.dest
            ));
        }
        let mut moved = false;
        while sent < total && s.can_send() {
            let at = sent;
            let n = s
                .send(|buf| {
                    let n = buf.len().min((total - at) as usize);
                    net::pattern_fill(at, &mut buf[..n]);
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            sent += n as u64;
            moved = true;
        }
        if sent == total && s.may_send() {
            s.close(); // FIN after the data
        }
        while s.can_recv() {
            let at = echoed;
            match s.recv(|buf| (buf.len(), (buf.len(), net::pattern_check(at, buf)))) {
                Ok((n, bad)) if n > 0 => {
                    if echo_bad.is_none() {
                        echo_bad = bad;
                    }
                    echoed += n as u64;
                    moved = true;
                }
                _ => break,
            }
        }
        if start.is_some() && acked_at.is_none() && sent == total && s.send_queue() == 0 {
            acked_at = Some(Instant::now());
        }
        // Done once everything (and our FIN) is acknowledged and the peer
        // has closed too, which lets it finish cleanly; a server that keeps
        // its side open gets `LINGER`, unless its echo is awaited.
        let fin_acked = matches!(
            state,
            tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closed
        );
        if let Some(t) = acked_at.filter(|_| fin_acked) {
            if matches!(state, tcp::State::TimeWait | tcp::State::Closed) {
                break None;
            }
            if !args.expect_echo && t.elapsed() >= LINGER {
                break None;
            }
        }
        if start.is_some() && state == tcp::State::Closed && acked_at.is_none() {
            break Some(format!(
                "connection reset by {} after {} of {total} bytes",
                args.dest,
                sent - s.send_queue() as u64
            ));
        }
        let mark = (sent - s.send_queue() as u64, s.send_queue(), echoed, state);
        if mark != last_mark {
            last_mark = mark;
            last_progress = Instant::now();
        }
        if moved {
            continue;
        }
        let left = timeout.saturating_sub(last_progress.elapsed());
        let nap = if acked_at.is_some() {
            left.min(LINGER)
        } else {
            left
        };
        if left.is_zero() {
            break Some(match start {
                None => format!(
                    "no answer from {} in {:.1} s (no host with that address on the bus?)",
                    args.dest,
                    timeout.as_secs_f64()
                ),
                Some(_) => format!(
                    "stalled: no progress for {:.1} s ({} of {total} bytes acknowledged, {echoed} echoed)",
                    timeout.as_secs_f64(),
                    mark.0
                ),
            });
        }
        if !stack.wait(Some(nap))? {
            break Some(if stop.stopped() {
                "interrupted".to_string()
            } else {
                "interface taken down".to_string()
            });
        }
    };

    let acked = match acked_at {
        Some(_) => total,
        None => last_mark.0,
    };
    let secs = match (start, acked_at) {
        (Some(s), Some(e)) => e.duration_since(s).as_secs_f64(),
        (Some(s), None) => s.elapsed().as_secs_f64(),
        _ => 0.0,
    };
    let src = stack
        .source_for(remote.addr)
        .map(|a: IpAddress| a.to_string())
        .unwrap_or_default();
    net::say(&format!(
        "tcp-send {src} -> {}: {acked} bytes in {secs:.3} s, {:.1} MiB/s",
        args.dest,
        net::mib_per_sec(acked, secs)
    ));
    let mut ok = failure.is_none();
    if echoed > 0 || args.expect_echo {
        let verdict = match echo_bad {
            Some(at) => {
                ok = false;
                format!("pattern MISMATCH at byte {at}")
            }
            None if echoed == total => "pattern ok".to_string(),
            None => {
                if args.expect_echo {
                    ok = false;
                }
                format!("incomplete (pattern ok so far; {total} sent)")
            }
        };
        net::say(&format!("echo: {echoed} bytes back, {verdict}"));
    }
    if let Some(f) = failure {
        eprintln!("shmif tcp-send: {f}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
