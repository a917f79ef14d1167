//! A ping run on a stack: what `shmif ping` does, and `shmif host --ping`.

use super::{args::check_family, Activity, Stack, Step};
use crate::cli::output;
use anyhow::{Context, Result};
use smoltcp::iface::SocketHandle;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::icmp;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

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

/// One run of echo requests: what `shmif ping` does, and `shmif host
/// --ping`.
#[derive(Debug, Clone)]
pub struct PingOptions {
    /// The address to ping.
    pub dest: IpAddr,
    /// How many requests (`None`: until interrupted).
    pub count: Option<u64>,
    /// Time between requests; zero sends each as soon as the previous
    /// reply is in (or has timed out).
    pub interval: Duration,
    /// Bytes of data in each request.
    pub size: usize,
    /// How long to wait for each reply.
    pub timeout: Duration,
    /// Print only the summary.
    pub quiet: bool,
    /// Print only one JSON object with the results, at the end.
    pub json: bool,
}

/// The results of a ping run, as `ping --json` prints them.
#[derive(Debug, serde::Serialize)]
struct Report {
    dest: String,
    src: String,
    transmitted: u64,
    received: u64,
    loss_percent: f64,
    wrong_data: u64,
    seconds: f64,
    /// min, avg, median, max in ms (absent without replies).
    rtt_ms: Option<Rtt>,
    /// Each reply: sequence number and round-trip time in ms.
    replies: Vec<(u16, f64)>,
    ok: bool,
    interrupted: bool,
    error: Option<String>,
}

/// Round-trip time figures, in milliseconds.
#[derive(Debug, serde::Serialize)]
struct Rtt {
    min: f64,
    avg: f64,
    median: f64,
    max: f64,
}

impl PingOptions {
    /// Checks that a request fits in one frame of the bus at `bus` (IP
    /// MTU 1500 on a NetBSD bus, the frame limit less 14 on an extended
    /// one) and that `addrs` has an address of DEST's family. `what` names
    /// DEST and `size_flag` the size option in the messages.
    pub fn check(&self, what: &str, size_flag: &str, addrs: &[IpCidr], bus: &Path) -> Result<()> {
        let mtu = shmif::Bus::peek_geometry(bus).max_frame() - 14;
        let max = mtu.saturating_sub(headers(self.dest));
        if self.size > max {
            anyhow::bail!(
                "{size_flag} {}: at most {max} bytes fit in one {} frame (no fragmentation)",
                self.size,
                if self.dest.is_ipv4() { "IPv4" } else { "IPv6" }
            );
        }
        check_family(what, self.dest, addrs)
    }
}

/// A ping run on a [`Stack`]: sends echo requests from its own ICMP socket,
/// prints a line per reply and, when finished, the summary (the output of
/// `shmif ping`). Succeeds if at least one reply came back and none had
/// wrong data.
pub struct Pinger {
    opts: PingOptions,
    dest: IpAddress,
    src: IpAddress,
    handle: SocketHandle,
    ident: u16,
    caps: ChecksumCapabilities,
    started: Instant,
    sent: u64,
    next_send: Instant,
    /// Requests in flight: sequence number -> time sent.
    waiting: BTreeMap<u16, Instant>,
    rtts: Vec<Duration>,
    /// Sequence number of each reply in `rtts`.
    seqs: Vec<u16>,
    corrupt: u64,
    /// Whether the interface went down: send nothing more.
    interrupted: bool,
    data: Vec<u8>,
    expect: Vec<u8>,
}

impl Pinger {
    /// Opens an ICMP socket on `stack` and prints the `PING` line (unless
    /// quiet); the first request goes out at the first step. `opts` should
    /// have passed [`PingOptions::check`] against the stack's addresses.
    pub fn start(stack: &mut Stack, opts: PingOptions, bus: &Path) -> Result<Pinger> {
        let dest = IpAddress::from(opts.dest);
        let Some(src) = stack.source_for(dest) else {
            anyhow::bail!(
                "no source address for {dest} (this interface has no address of its family)"
            );
        };
        let packets = 64;
        let room = packets * (opts.size + 8);
        let socket = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; packets], vec![0; room]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; packets], vec![0; room]),
        );
        let handle = stack.sockets.add(socket);
        // Each run in this process its own identifier: a late reply to an
        // earlier run is not taken for one to this run.
        static RUNS: AtomicU16 = AtomicU16::new(0);
        let ident =
            (stack.shmif.sender_id() as u16).wrapping_add(RUNS.fetch_add(1, Ordering::Relaxed));
        if let Err(e) = stack
            .sockets
            .get_mut::<icmp::Socket>(handle)
            .bind(icmp::Endpoint::Ident(ident))
        {
            stack.sockets.remove(handle);
            return Err(e).context("cannot open an ICMP socket");
        }
        if !opts.quiet && !opts.json {
            output::say(&format!(
                "PING {dest} from {src} ({}) on {}: {} data bytes",
                stack.mac(),
                bus.display(),
                opts.size
            ));
        }
        let size = opts.size;
        Ok(Pinger {
            opts,
            dest,
            src,
            handle,
            ident,
            caps: ChecksumCapabilities::default(),
            started: Instant::now(),
            sent: 0,
            next_send: Instant::now(),
            waiting: BTreeMap::new(),
            rtts: Vec::new(),
            seqs: Vec::new(),
            corrupt: 0,
            interrupted: false,
            data: Vec::with_capacity(size),
            expect: Vec::with_capacity(size),
        })
    }

    /// Takes in the replies waiting in the socket. Returns whether it sent
    /// anything (an answer to a request that carried our identifier).
    fn receive(&mut self, stack: &mut Stack) -> bool {
        let (ident, dest, src, caps) = (self.ident, self.dest, self.src, &self.caps);
        let s = stack.sockets.get_mut::<icmp::Socket>(self.handle);
        let mut answered = false;
        while let Ok((pkt, from)) = s.recv() {
            let got = Instant::now();
            let msg = match from {
                IpAddress::Ipv4(_) => Icmpv4Packet::new_checked(pkt)
                    .ok()
                    .and_then(|p| Icmpv4Repr::parse(&p, caps).ok())
                    .and_then(|r| match r {
                        Icmpv4Repr::EchoReply {
                            ident: i,
                            seq_no,
                            data,
                        } if i == ident => Some((true, seq_no, data)),
                        Icmpv4Repr::EchoRequest {
                            ident: i,
                            seq_no,
                            data,
                        } if i == ident => Some((false, seq_no, data)),
                        _ => None,
                    }),
                IpAddress::Ipv6(f) => {
                    let IpAddress::Ipv6(sa) = src else { continue };
                    Icmpv6Packet::new_checked(pkt)
                        .ok()
                        .and_then(|p| Icmpv6Repr::parse(&f, &sa, &p, caps).ok())
                        .and_then(|r| match r {
                            Icmpv6Repr::EchoReply {
                                ident: i,
                                seq_no,
                                data,
                            } if i == ident => Some((true, seq_no, data)),
                            Icmpv6Repr::EchoRequest {
                                ident: i,
                                seq_no,
                                data,
                            } if i == ident => Some((false, seq_no, data)),
                            _ => None,
                        })
                }
            };
            let Some((is_reply, seq, reply_data)) = msg else {
                continue;
            };
            if !is_reply {
                // Someone else's request that happens to carry our
                // identifier: our socket took it, so smoltcp does not
                // answer it; answer it here, as smoltcp would have.
                let data = reply_data.to_vec();
                let reply = Echo {
                    reply: true,
                    ident,
                    seq,
                    data: &data,
                };
                answered |= reply.send(s, src, from, caps);
                continue;
            }
            if from != dest {
                continue;
            }
            let Some(t0) = self.waiting.remove(&seq) else {
                continue; // late (already timed out) or duplicate
            };
            let rtt = got.duration_since(t0);
            payload(ident, seq, self.opts.size, &mut self.expect);
            let intact = reply_data == &self.expect[..];
            if !intact {
                self.corrupt += 1;
            }
            self.rtts.push(rtt);
            self.seqs.push(seq);
            if !self.opts.quiet && !self.opts.json {
                output::say(&format!(
                    "{} bytes from {from}: icmp_seq={seq} time={:.3} ms{}",
                    reply_data.len() + 8,
                    rtt.as_secs_f64() * 1e3,
                    if intact { "" } else { " (data differs!)" }
                ));
            }
        }
        answered
    }

    /// Sends request number `self.sent`.
    fn send_request(&mut self, stack: &mut Stack, now: Instant) {
        let (ident, dest, caps) = (self.ident, self.dest, &self.caps);
        let seq = self.sent as u16;
        payload(ident, seq, self.opts.size, &mut self.data);
        let request = Echo {
            reply: false,
            ident,
            seq,
            data: &self.data,
        };
        let s = stack.sockets.get_mut::<icmp::Socket>(self.handle);
        let ok = request.send(s, self.src, dest, caps);
        if ok {
            self.waiting.insert(seq, Instant::now());
        }
        // Counted even when the socket is full: a request that could not
        // go out is lost.
        self.sent += 1;
        let interval = self.opts.interval;
        self.next_send = if self.next_send + interval > now {
            self.next_send + interval
        } else {
            now + interval
        };
    }
}

/// An ICMP echo message: a request, or the reply to one.
struct Echo<'a> {
    reply: bool,
    ident: u16,
    seq: u16,
    data: &'a [u8],
}

impl Echo<'_> {
    /// Sends it from `src` to `to` through socket `s`; returns whether the
    /// socket took it.
    fn send(
        &self,
        s: &mut icmp::Socket,
        src: IpAddress,
        to: IpAddress,
        caps: &ChecksumCapabilities,
    ) -> bool {
        let (ident, seq_no, data) = (self.ident, self.seq, self.data);
        match (to, src) {
            (IpAddress::Ipv4(_), _) => {
                let repr = if self.reply {
                    Icmpv4Repr::EchoReply {
                        ident,
                        seq_no,
                        data,
                    }
                } else {
                    Icmpv4Repr::EchoRequest {
                        ident,
                        seq_no,
                        data,
                    }
                };
                s.send(repr.buffer_len(), to)
                    .map(|buf| repr.emit(&mut Icmpv4Packet::new_unchecked(buf), caps))
                    .is_ok()
            }
            (IpAddress::Ipv6(d), IpAddress::Ipv6(sa)) => {
                let repr = if self.reply {
                    Icmpv6Repr::EchoReply {
                        ident,
                        seq_no,
                        data,
                    }
                } else {
                    Icmpv6Repr::EchoRequest {
                        ident,
                        seq_no,
                        data,
                    }
                };
                s.send(repr.buffer_len(), to)
                    .map(|buf| repr.emit(&sa, &d, &mut Icmpv6Packet::new_unchecked(buf), caps))
                    .is_ok()
            }
            _ => false,
        }
    }
}

impl Activity for Pinger {
    fn step(&mut self, stack: &mut Stack) -> Step {
        let mut busy = self.receive(stack);
        let now = Instant::now();
        let timeout = self.opts.timeout;
        self.waiting.retain(|_, t| now.duration_since(*t) < timeout);
        let more = !self.interrupted && self.opts.count.is_none_or(|c| self.sent < c);
        let interval_zero = self.opts.interval.is_zero();
        let may_send = if interval_zero {
            self.waiting.is_empty()
        } else {
            now >= self.next_send
        };
        if more && may_send {
            self.send_request(stack, now);
            busy = true;
        }
        let done_sending = self.interrupted || self.opts.count.is_some_and(|c| self.sent >= c);
        if done_sending && self.waiting.is_empty() {
            return Step::Done;
        }
        if busy {
            return Step::Busy;
        }
        // Until the next request or the oldest reply's deadline.
        let mut until: Option<Instant> = self.waiting.values().min().map(|t| *t + timeout);
        if !done_sending && (!interval_zero || self.waiting.is_empty()) {
            until = Some(until.map_or(self.next_send, |u| u.min(self.next_send)));
        }
        Step::Idle(until)
    }

    fn interrupt(&mut self, _why: &str) {
        // The summary says what came back; what is in flight is lost.
        self.interrupted = true;
        self.waiting.clear();
    }

    fn finish(&mut self, stack: &mut Stack) -> bool {
        stack.sockets.remove(self.handle);
        let (sent, rtts, dest) = (self.sent, &self.rtts, self.dest);
        let received = rtts.len() as u64;
        let lost = sent.saturating_sub(received);
        let loss = if sent > 0 {
            100.0 * lost as f64 / sent as f64
        } else {
            0.0
        };
        let ok = received > 0 && self.corrupt == 0;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let nobody = match received {
            0 => super::transfer::nobody_answered(stack, self.opts.dest)
                .map(|n| format!("{n}: no host on the bus has that address")),
            _ => None,
        };
        if self.opts.json {
            let rtt = (!rtts.is_empty()).then(|| {
                let mut sorted = rtts.clone();
                sorted.sort();
                Rtt {
                    min: ms(sorted[0]),
                    avg: ms(rtts.iter().sum::<Duration>() / rtts.len() as u32),
                    median: ms(sorted[sorted.len() / 2]),
                    max: ms(sorted[sorted.len() - 1]),
                }
            });
            let report = Report {
                dest: dest.to_string(),
                src: self.src.to_string(),
                transmitted: sent,
                received,
                loss_percent: loss,
                wrong_data: self.corrupt,
                seconds: self.started.elapsed().as_secs_f64(),
                rtt_ms: rtt,
                replies: self
                    .seqs
                    .iter()
                    .zip(rtts)
                    .map(|(s, r)| (*s, ms(*r)))
                    .collect(),
                ok,
                interrupted: self.interrupted,
                error: nobody.clone(),
            };
            output::say(&serde_json::to_string(&report).unwrap_or_default());
            if let Some(n) = nobody {
                eprintln!("shmif ping: {n}");
            }
            return ok;
        }
        output::say(&format!("--- {dest} ping statistics ---"));
        output::say(&format!(
            "{sent} packets transmitted, {received} received, {loss:.0}% packet loss, time {:.3} s{}",
            self.started.elapsed().as_secs_f64(),
            if self.corrupt > 0 {
                format!(", {} with wrong data", self.corrupt)
            } else {
                String::new()
            }
        ));
        if let Some(n) = nobody {
            eprintln!("shmif ping: {n}");
        }
        if !rtts.is_empty() {
            let min = rtts.iter().min().copied().unwrap_or_default();
            let max = rtts.iter().max().copied().unwrap_or_default();
            let avg = rtts.iter().sum::<Duration>() / rtts.len() as u32;
            let mut sorted = rtts.clone();
            sorted.sort();
            let median = sorted[sorted.len() / 2];
            output::say(&format!(
                "rtt min/avg/median/max = {:.3}/{:.3}/{:.3}/{:.3} ms",
                ms(min),
                ms(avg),
                ms(median),
                ms(max)
            ));
        }
        ok
    }
}
