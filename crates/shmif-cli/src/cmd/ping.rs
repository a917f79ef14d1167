//! `shmif ping`: ICMP echo over a bus, from a userspace TCP/IP stack.

use super::net::{self, Stack, StopSignal};
use anyhow::{Context, Result};
use shmif::MacAddr;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::icmp;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Send ICMP echo requests to a host on a bus and report the replies.
///
/// `ping` attaches to the bus as a new interface with the address given by
/// --ip (or --ip6), resolves DEST with ARP (IPv4) or neighbour discovery
/// (IPv6), and sends echo requests. It prints one line per reply with its
/// round-trip time, then a summary with the loss and the min/avg/median/max
/// RTT. It exits 0 if at least one reply came back (none with wrong data),
/// 1 otherwise. SIGINT stops it early, with the summary.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif ping /tmp/bus --ip 10.0.0.2/24 10.0.0.1 -c 3\n  \
    shmif ping /tmp/bus --ip fd00::2/64 fd00::1 -c 1000 -i 0 -q   # latency: back to back\n  \
    shmif ping /tmp/bus --ip 10.0.0.2/24 --ip6 fd00::2/64 fd00::1")]
pub struct Args {
    /// The bus file.
    pub bus: PathBuf,
    /// This interface's address, ADDR/PREFIX, IPv4 or IPv6 (the family of
    /// DEST). Without /PREFIX: /24 or /64.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = net::parse_cidr)]
    pub ip: Option<IpCidr>,
    /// An IPv6 address as well, ADDR/PREFIX, for IPv6 destinations.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = net::parse_cidr)]
    pub ip6: Option<IpCidr>,
    /// This interface's MAC address (default: random b2:a0:xx:xx:xx:xx).
    #[arg(long, value_parser = net::parse_mac)]
    pub mac: Option<MacAddr>,
    /// The address to ping, IPv4 or IPv6.
    #[arg(value_name = "DEST")]
    pub dest: IpAddr,
    /// Stop after COUNT requests (default: until SIGINT).
    #[arg(short = 'c', long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Seconds between requests; 0 sends each request as soon as the
    /// previous reply is in (or has timed out).
    #[arg(short = 'i', long, default_value_t = 1.0, value_name = "SECONDS", value_parser = parse_secs)]
    pub interval: f64,
    /// Bytes of data in each request (after the 8-byte ICMP header).
    #[arg(short = 's', long, default_value_t = 56, value_name = "SIZE")]
    pub size: usize,
    /// Seconds to wait for each reply.
    #[arg(short = 'W', long, default_value_t = 2.0, value_name = "TIMEOUT", value_parser = parse_secs)]
    pub timeout: f64,
    /// Print only the summary.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds from 0 to 3600")),
    }
}

/// Bytes of IP and ICMP header around the data, per family.
fn headers(dest: IpAddr) -> usize {
    match dest {
        IpAddr::V4(_) => 20 + 8,
        IpAddr::V6(_) => 40 + 8,
    }
}

/// The data of request `seq`: its number, then a pattern of it.
fn payload(ident: u16, seq: u16, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend((0..size).map(|i| match i {
        0 => (ident >> 8) as u8,
        1 => ident as u8,
        2 => (seq >> 8) as u8,
        3 => seq as u8,
        _ => (i as u8).wrapping_mul(31).wrapping_add(seq as u8),
    }));
}

/// Runs `shmif ping`.
pub fn run(args: Args) -> Result<ExitCode> {
    let dest = IpAddress::from(args.dest);
    let max = 1500 - headers(args.dest);
    if args.size > max {
        anyhow::bail!(
            "-s {}: at most {max} bytes fit in one {} frame (no fragmentation)",
            args.size,
            if args.dest.is_ipv4() { "IPv4" } else { "IPv6" }
        );
    }
    let addrs = match (args.ip, args.ip6) {
        (Some(v6 @ IpCidr::Ipv6(_)), None) => vec![v6],
        (ip, ip6) => net::addresses(ip, ip6)?,
    };
    let mut stack = Stack::attach(&args.bus, args.mac, &addrs)?;
    let Some(src) = stack.source_for(dest) else {
        anyhow::bail!(
            "DEST {dest} is {}, but this interface has no such address: add --ip{} ADDR/PREFIX",
            if args.dest.is_ipv4() { "IPv4" } else { "IPv6" },
            if args.dest.is_ipv4() { "" } else { "6" }
        );
    };
    let stop = StopSignal::install(&stack.shmif)?;

    let packets = 64;
    let room = packets * (args.size + 8);
    let socket = icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; packets], vec![0; room]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; packets], vec![0; room]),
    );
    let handle = stack.sockets.add(socket);
    let ident = (stack.shmif.sender_id() & 0xffff) as u16;
    stack
        .sockets
        .get_mut::<icmp::Socket>(handle)
        .bind(icmp::Endpoint::Ident(ident))
        .context("cannot open an ICMP socket")?;
    let caps = ChecksumCapabilities::default();

    let interval = Duration::from_secs_f64(args.interval);
    let timeout = Duration::from_secs_f64(args.timeout);
    let started = Instant::now();
    if !args.quiet {
        net::say(&format!(
            "PING {dest} from {src} ({}) on {}: {} data bytes",
            stack.mac(),
            args.bus.display(),
            args.size
        ));
    }

    let mut sent: u64 = 0;
    let mut next_send = Instant::now();
    // Requests in flight: sequence number -> time sent.
    let mut waiting: BTreeMap<u16, Instant> = BTreeMap::new();
    let mut rtts: Vec<Duration> = Vec::new();
    let mut corrupt = 0u64;
    let mut data = Vec::with_capacity(args.size);
    let mut expect = Vec::with_capacity(args.size);

    loop {
        let now = Instant::now();
        let more = args.count.map_or(true, |c| sent < c);
        let may_send = if interval.is_zero() {
            waiting.is_empty()
        } else {
            now >= next_send
        };
        if more && may_send && !stop.stopped() {
            let seq = sent as u16;
            payload(ident, seq, args.size, &mut data);
            let s = stack.sockets.get_mut::<icmp::Socket>(handle);
            let ok = match (dest, src) {
                (IpAddress::Ipv4(_), _) => {
                    let repr = Icmpv4Repr::EchoRequest {
                        ident,
                        seq_no: seq,
                        data: &data,
                    };
                    s.send(repr.buffer_len(), dest)
                        .map(|buf| repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps))
                        .is_ok()
                }
                (IpAddress::Ipv6(d), IpAddress::Ipv6(sa)) => {
                    let repr = Icmpv6Repr::EchoRequest {
                        ident,
                        seq_no: seq,
                        data: &data,
                    };
                    s.send(repr.buffer_len(), dest)
                        .map(|buf| repr.emit(&sa, &d, &mut Icmpv6Packet::new_unchecked(buf), &caps))
                        .is_ok()
                }
                _ => false,
            };
            if ok {
                waiting.insert(seq, Instant::now());
            }
            // Counted even when the socket is full: a request that could
            // not go out is lost.
            sent += 1;
            next_send = if next_send + interval > now {
                next_send + interval
            } else {
                now + interval
            };
        }

        stack.poll();

        let s = stack.sockets.get_mut::<icmp::Socket>(handle);
        while let Ok((pkt, from)) = s.recv() {
            let got = Instant::now();
            let reply = match from {
                IpAddress::Ipv4(_) => Icmpv4Packet::new_checked(pkt)
                    .ok()
                    .and_then(|p| Icmpv4Repr::parse(&p, &caps).ok())
                    .and_then(|r| match r {
                        Icmpv4Repr::EchoReply {
                            ident: i,
                            seq_no,
                            data,
                        } if i == ident => Some((seq_no, data)),
                        _ => None,
                    }),
                IpAddress::Ipv6(f) => {
                    let IpAddress::Ipv6(sa) = src else { continue };
                    Icmpv6Packet::new_checked(pkt)
                        .ok()
                        .and_then(|p| Icmpv6Repr::parse(&f, &sa, &p, &caps).ok())
                        .and_then(|r| match r {
                            Icmpv6Repr::EchoReply {
                                ident: i,
                                seq_no,
                                data,
                            } if i == ident => Some((seq_no, data)),
                            _ => None,
                        })
                }
            };
            let Some((seq, reply_data)) = reply else {
                continue;
            };
            if from != dest {
                continue;
            }
            let Some(t0) = waiting.remove(&seq) else {
                continue; // late (already timed out) or duplicate
            };
            let rtt = got.duration_since(t0);
            payload(ident, seq, args.size, &mut expect);
            let intact = reply_data == &expect[..];
            if !intact {
                corrupt += 1;
            }
            rtts.push(rtt);
            if !args.quiet {
                net::say(&format!(
                    "{} bytes from {from}: icmp_seq={seq} time={:.3} ms{}",
                    reply_data.len() + 8,
                    rtt.as_secs_f64() * 1e3,
                    if intact { "" } else { " (data differs!)" }
                ));
            }
        }

        let now = Instant::now();
        waiting.retain(|_, t| now.duration_since(*t) < timeout);
        let done_sending = args.count.is_some_and(|c| sent >= c) || stop.stopped();
        if done_sending && waiting.is_empty() {
            break;
        }
        // Sleep until a frame, smoltcp's next timer, the next request, or
        // the oldest reply's deadline.
        let mut until: Option<Instant> = waiting.values().min().map(|t| *t + timeout);
        let send_pending = !interval.is_zero() || waiting.is_empty();
        if !done_sending && send_pending {
            until = Some(until.map_or(next_send, |u| u.min(next_send)));
        }
        let max = until.map(|u| u.saturating_duration_since(Instant::now()));
        if max != Some(Duration::ZERO) && !stack.wait(max)? {
            // Taken down by SIGINT/SIGTERM: summary of what we have.
            break;
        }
    }

    let received = rtts.len() as u64;
    let lost = sent.saturating_sub(received);
    let loss = if sent > 0 {
        100.0 * lost as f64 / sent as f64
    } else {
        0.0
    };
    net::say(&format!("--- {dest} ping statistics ---"));
    net::say(&format!(
        "{sent} packets transmitted, {received} received, {loss:.0}% packet loss, time {:.3} s{}",
        started.elapsed().as_secs_f64(),
        if corrupt > 0 {
            format!(", {corrupt} with wrong data")
        } else {
            String::new()
        }
    ));
    if !rtts.is_empty() {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let min = rtts.iter().min().copied().unwrap_or_default();
        let max = rtts.iter().max().copied().unwrap_or_default();
        let avg = rtts.iter().sum::<Duration>() / rtts.len() as u32;
        let mut sorted = rtts.clone();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        net::say(&format!(
            "rtt min/avg/median/max = {:.3}/{:.3}/{:.3}/{:.3} ms",
            ms(min),
            ms(avg),
            ms(median),
            ms(max)
        ));
    }
    Ok(if received > 0 && corrupt == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
