//! `shmif vxlan`: a bus joined to a VXLAN segment (RFC 7348) over UDP,
//! with the Linux kernel's `vxlan` devices, other buses, and anything else
//! that speaks VXLAN.
//!
//! Two ports in a [`crate::bridge::Engine`] with learning forwarding: the
//! bus, and a UDP socket (`VxlanPort`). Frames from the bus whose
//! destination was seen on the bus stay there; the others are
//! encapsulated, to the one remote their destination was learnt behind,
//! or to every remote (head-end replication) or the multicast group.
//! Each unicast remote is sent to through a socket of its own connected
//! to it (sendmmsg, no route lookup per datagram), a group through the
//! main one, which receives everything. Datagrams that arrive are checked
//! ([`crate::bridge::vxlan::decode`]), their inner source address learnt
//! behind the remote they came from, and their frame put on the bus. The header codec and the remote table
//! are pure ([`crate::bridge::vxlan`]); this module does the socket work.

use crate::bridge::bus_port::BusPort;
use crate::bridge::vxlan::{
    self, decode, encode, needed_mtu, Policy, Reject, Remotes, Vni, HEADER_LEN,
};
use crate::bridge::{Ctx, End, Engine, Forwarding, Port, Service};
use crate::cli::error::lib_error;
use crate::cli::output::say;
use crate::cli::parse;
use crate::cli::signal::StopSignal;
use anyhow::{anyhow, Result};
use rustix::event::PollFlags;
use rustix::io::Errno;
use shmif::MacAddr;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Join a bus to a VXLAN segment (RFC 7348): Linux `vxlan` devices and
/// other buses, across any IP network.
///
/// Frames on BUS (created if missing) go out as VXLAN datagrams over UDP,
/// and the frames of datagrams for network --vni N come onto the bus. Two
/// ways to find the other endpoints:
///
/// - unicast: --local ADDR (this end's address) and one --remote per
///   endpoint; broadcast, multicast and unknown unicast frames are sent to
///   each (head-end replication), as Linux does with `remote` or with
///   all-zero FDB entries;
///
/// - multicast: --group ADDR --dev IFACE; floods go to the group, which
///   every endpoint joins, as `ip link add ... type vxlan group ADDR dev
///   IFACE` does.
///
/// Either way the source MAC address of every frame that arrives is learnt
/// behind the endpoint it came from (forgotten after --ageing, 300 s as on
/// Linux), and unicast to a learnt address goes to that endpoint only.
/// Frames between two stations on the bus stay on the bus.
///
/// Datagrams with another VNI, with flags other than the I flag, or too
/// short to hold a frame are dropped and counted. Datagrams are taken only
/// from the --remote addresses (any source port: Linux picks one per
/// flow), unless --learn-remotes; with --group from anyone, as on Linux.
/// Datagrams to a unicast remote leave from a port the system picks (one
/// per remote, as Linux picks one per flow); a remote that goes away costs
/// only the datagrams sent to it.
///
/// VXLAN has no authentication and no encryption: anyone who can send UDP
/// to the port can put frames on the bus. Use it on a trusted underlay, or
/// inside WireGuard or IPsec.
///
/// The underlay must carry the bus's largest frame (its frame limit: 1514
/// bytes on a NetBSD v3 bus) plus 36 bytes of outer IP, UDP and VXLAN
/// headers (56 over IPv6), i.e. an MTU of 1550 (1570) for a v3 bus; with
/// less, a warning says so and large frames travel fragmented (or not at
/// all). Give the hosts on the bus an MTU 50 (70) below the underlay's
/// then, 1450 (1430) on a 1500-byte one, as Linux does to its own vxlan
/// devices.
///
/// A Linux vxlan device whose underlay is a veth (namespaces on one
/// machine) leaves the inner TCP and UDP checksums to a NIC that is not
/// there, and the frames arrive here with them unfilled: switch that off
/// on the device (`ethtool -K vx42 tx off`). Over real NICs, no need.
///
/// Needs no privileges (one UDP socket; below port 1024, root). Runs
/// until SIGINT or SIGTERM, then prints its counters to standard error.
/// Prints one line to standard output once it is bridging.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    # this host 192.0.2.1, the other 192.0.2.2, where Linux has:\n  \
    #   ip link add vx42 type vxlan id 42 local 192.0.2.2 remote 192.0.2.1 dstport 4789\n  \
    shmif vxlan /tmp/bus --vni 42 --local 192.0.2.1 --remote 192.0.2.2 &\n  \
    shmif host /tmp/bus --ip 10.0.0.2/24                # reaches the hosts behind vx42\n\n  \
    # three sites, head-end replication (IPv6 underlay, Linux's legacy port)\n  \
    shmif vxlan /tmp/bus --vni 7 --local 2001:db8::1 --port 8472 \\\n      \
    --remote 2001:db8::2 --remote '[2001:db8::3]:8472'\n\n  \
    # a multicast group, as `ip link add ... type vxlan id 42 group 239.1.1.1 dev eth0 dstport 4789`\n  \
    shmif vxlan /tmp/bus --vni 42 --group 239.1.1.1 --dev eth0\n\n\
    Exit status: 130 when stopped by SIGINT or SIGTERM (it runs until then); 1 if the arguments are wrong, the socket cannot be \
    set up (the message names the address, port or device), or the bus fails.")]
pub struct Args {
    /// The bus file (created if missing).
    #[arg(value_name = "BUS")]
    pub bus: PathBuf,

    /// The VXLAN network identifier, 0 to 16777215 (`id` on Linux).
    #[arg(long, value_name = "N", value_parser = vni)]
    pub vni: Vni,

    /// This end's address on the underlay (IPv4 or IPv6): the socket is
    /// bound to it and datagrams go out from it. Needed with --remote.
    #[arg(long, value_name = "ADDR", conflicts_with = "group")]
    pub local: Option<IpAddr>,

    /// The UDP port: where this end listens, and where datagrams are sent
    /// unless a --remote says otherwise (Linux's `dstport`; a Linux device
    /// made without one uses 8472).
    #[arg(long, value_name = "PORT", default_value_t = vxlan::IANA_PORT)]
    pub port: u16,

    /// A remote endpoint, `ADDR`, `ADDR:PORT` or `[IPV6]:PORT` (repeat for
    /// more); broadcast, multicast and unknown unicast go to each.
    #[arg(long = "remote", value_name = "ADDR[:PORT]", value_parser = remote)]
    pub remotes: Vec<(IpAddr, Option<u16>)>,

    /// A multicast group to flood to and receive on (239.0.0.0/8 or
    /// ff0X::), instead of --local and --remote.
    #[arg(
        long,
        value_name = "MCAST_ADDR",
        requires = "dev",
        conflicts_with = "remotes"
    )]
    pub group: Option<IpAddr>,

    /// The interface to join --group on (and send from).
    #[arg(long, value_name = "IFACE", requires = "group")]
    pub dev: Option<String>,

    /// Take datagrams from any source, not only from the --remote
    /// addresses, and flood to the sources seen too (endpoints join by
    /// sending). Anyone who can reach the port can then join the segment.
    #[arg(long)]
    pub learn_remotes: bool,

    /// How long a learnt MAC address (and a learnt remote) is trusted
    /// without being seen again, in seconds.
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse::seconds)]
    pub ageing: Duration,

    /// How the bus file is opened or created.
    #[command(flatten)]
    pub bus_opts: crate::cli::bus_opts::BusOpts,
}

/// A VNI, 0 to 2^24 - 1.
fn vni(s: &str) -> Result<Vni, String> {
    s.parse::<u32>()
        .ok()
        .and_then(Vni::new)
        .ok_or_else(|| format!("`{s}` is not a VNI (a number from 0 to {})", Vni::MAX))
}

/// `ADDR`, `ADDR:PORT`, `[IPV6]` or `[IPV6]:PORT`.
fn remote(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    let bad = || {
        format!(
            "`{s}` is not a remote endpoint (expected ADDR, ADDR:PORT or [IPV6]:PORT, e.g. \
             192.0.2.2, 192.0.2.2:4789 or [2001:db8::2]:4789)"
        )
    };
    let (ip, port) = if let Ok(ip) = s.parse::<IpAddr>() {
        (ip, None)
    } else if let Ok(sa) = s.parse::<SocketAddr>() {
        (sa.ip(), Some(sa.port()))
    } else if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        (inner.parse::<Ipv6Addr>().map_err(|_| bad())?.into(), None)
    } else {
        return Err(bad());
    };
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!(
            "{ip} cannot be a remote endpoint (use --group for a multicast group)"
        ));
    }
    if port == Some(0) {
        return Err(format!("`{s}`: port 0 is not a port"));
    }
    Ok((ip, port))
}

/// Counters of the tunnel side, shared between the port and the report.
#[derive(Debug, Default)]
struct Stats {
    received: u64,
    sent_unicast: u64,
    sent_flooded: u64,
    other_vni: u64,
    bad_flags: u64,
    truncated: u64,
    unknown_source: u64,
    send_errors: u64,
    receive_errors: u64,
    /// Per remote address: (received, sent unicast, sent flooded).
    per_remote: BTreeMap<SocketAddr, (u64, u64, u64)>,
}

impl Stats {
    /// The counters of remote `addr`; `None` once [`MAX_REPORTED`]
    /// remotes have counters (learnt remotes come and go: the report stays
    /// bounded).
    fn remote(&mut self, addr: SocketAddr) -> Option<&mut (u64, u64, u64)> {
        if self.per_remote.len() >= MAX_REPORTED && !self.per_remote.contains_key(&addr) {
            return None;
        }
        Some(self.per_remote.entry(addr).or_default())
    }
}

/// How many remotes get counters of their own in the report at most.
const MAX_REPORTED: usize = 2 * vxlan::MAX_REMOTES;

/// What the tunnel has warned about already (each once).
#[derive(Debug, Default)]
struct Warned {
    unknown_source: bool,
    send_error: bool,
    receive_error: bool,
    mtu: bool,
    other_vni: bool,
    bad_flags: bool,
}

/// The UDP socket as a port of the engine.
struct VxlanPort {
    sock: UdpSocket,
    vni: Vni,
    remotes: Remotes,
    stats: Rc<RefCell<Stats>>,
    warned: Warned,
    /// Where datagrams come in.
    rx: Vec<u8>,
    /// The largest frame the bus carries (for the MTU check).
    bus_frame: usize,
    /// The local address, for MTU probes of learnt remotes.
    local: Option<IpAddr>,
    /// --dev, for a group's MTU.
    dev: Option<String>,
    /// The address the socket is bound to (unicast mode).
    bound: Option<SocketAddr>,
    /// A socket connected to each unicast remote sent to, for sending.
    senders: std::collections::HashMap<SocketAddr, Sender>,
    next_expiry: Instant,
    name: String,
}

/// The largest UDP payload: what one datagram can bring.
const RX_ROOM: usize = 65_536;

/// Send errors that concern one datagram or one remote (an ICMP error
/// reported back, a full buffer, a route missing for now), not the socket.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::WouldBlock
    ) || matches!(
        Errno::from_io_error(e),
        Some(
            Errno::MSGSIZE
                | Errno::NOBUFS
                | Errno::PERM
                | Errno::ACCESS
                | Errno::ADDRNOTAVAIL
                | Errno::NETDOWN
                | Errno::HOSTDOWN
                | Errno::PROTO
                | Errno::NOPROTOOPT
                | Errno::OPNOTSUPP
                | Errno::INVAL
        )
    )
}

impl VxlanPort {
    /// Sends the datagrams of `plan` ((frame, remote, unicast?) each),
    /// those for one remote together, many per system call. A unicast
    /// remote gets a socket of its own connected to it (no route lookup
    /// per datagram; an ICMP error it causes is reported there and costs
    /// one datagram); a group, and remotes past [`MAX_CONNECTED`], go
    /// through the main socket. A datagram that cannot be sent is lost and
    /// counted; the others still go.
    fn send_plan(&mut self, frames: &[&[u8]], plan: &[(usize, usize, bool)]) {
        // Every remote of the plan is in the table (it came from it).
        let mut plan: Vec<(SocketAddr, usize, bool)> = plan
            .iter()
            .filter_map(|&(f, r, u)| Some((self.remotes.addr(r)?, f, u)))
            .collect();
        plan.sort_by_key(|&(to, _, _)| to); // stable: each remote's frames in order
        let header = encode(self.vni);
        let mut run = Vec::with_capacity(plan.len());
        let mut i = 0;
        while i < plan.len() {
            let to = plan[i].0;
            let end = i + plan[i..].iter().take_while(|d| d.0 == to).count();
            run.clear();
            run.extend(plan[i..end].iter().map(|&(_, f, _)| frames[f]));
            let (sent, failed) = match self.connect(to) {
                Some(sender) => sender.send(&header, &run),
                None => send_many(&self.sock, Some(to), &header, &run),
            };
            let mut st = self.stats.borrow_mut();
            for (k, &(_, _, unicast)) in plan[i..end].iter().enumerate() {
                if !sent[k] {
                    continue;
                }
                if let Some(r) = st.remote(to) {
                    if unicast {
                        r.1 += 1;
                    } else {
                        r.2 += 1;
                    }
                }
                *if unicast {
                    &mut st.sent_unicast
                } else {
                    &mut st.sent_flooded
                } += 1;
            }
            let lost = sent.iter().filter(|&&s| !s).count();
            st.send_errors += lost as u64;
            if let Some(e) = failed {
                if !self.warned.send_error {
                    self.warned.send_error = true;
                    eprintln!(
                        "shmif: warning: {}: cannot send to {to}: {} (the frame is lost; \
                         further send errors are only counted)",
                        self.name,
                        io::Error::from(e)
                    );
                }
            }
            i = end;
        }
    }

    /// The socket connected to unicast remote `to` (made on first use);
    /// `None` for a group, past [`MAX_CONNECTED`], or if it cannot be made.
    fn connect(&mut self, to: SocketAddr) -> Option<&mut Sender> {
        if !self.senders.contains_key(&to) {
            if to.ip().is_multicast() || self.senders.len() >= MAX_CONNECTED {
                return None;
            }
            let sock = connected_socket(self.local, to)?;
            self.senders.insert(
                to,
                Sender {
                    sock,
                    gso_sent: 0,
                    gso_failed: 0,
                },
            );
        }
        self.senders.get_mut(&to)
    }

    /// Warns once if the underlay to `to` cannot carry a bus frame whole.
    fn check_mtu(&mut self, to: SocketAddr) {
        if self.warned.mtu {
            return;
        }
        let mtu = match &self.dev {
            Some(dev) => std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu"))
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok()),
            None => path_mtu(self.local, to),
        };
        let Some(mtu) = mtu else {
            return;
        };
        let v6 = to.is_ipv6();
        let need = needed_mtu(self.bus_frame, v6);
        if mtu < need {
            self.warned.mtu = true;
            // The outer IP, UDP and VXLAN headers around the frame.
            let outer = need - self.bus_frame;
            eprintln!(
                "shmif: warning: {}: the underlay to {} has MTU {mtu}, but a {}-byte bus frame \
                 plus {outer} bytes of outer headers needs {need}: larger frames are fragmented \
                 or lost (raise the underlay's MTU, or give the hosts on the bus MTU {})",
                self.name,
                to.ip(),
                self.bus_frame,
                mtu.saturating_sub(outer + 14)
            );
        }
    }

    /// One datagram from `from`: checked, its source learnt, its frame
    /// handed to the engine.
    fn take(&mut self, datagram: &[u8], from: SocketAddr, now: Instant, ctx: &mut Ctx<'_>) {
        // A datagram claiming to come from this very socket (spoofed, or a
        // remote misconfigured as ourselves) would make this end its own
        // remote: refused like any stranger.
        let own = self.bound == Some(from);
        let found = if own {
            None
        } else {
            self.remotes.source(from, now)
        };
        let Some(src) = found else {
            let mut st = self.stats.borrow_mut();
            st.unknown_source += 1;
            if !self.warned.unknown_source {
                self.warned.unknown_source = true;
                eprintln!(
                    "shmif: warning: {}: dropped a datagram from {from}, which is not a \
                     --remote (--learn-remotes takes any; further ones are only counted)",
                    self.name
                );
            }
            return;
        };
        let addr = self.remotes.addr(src.index).unwrap_or(from);
        if src.new {
            eprintln!("shmif: {}: learnt remote {addr}", self.name);
            self.check_mtu(addr);
        }
        {
            let mut st = self.stats.borrow_mut();
            st.received += 1;
            if let Some(r) = st.remote(addr) {
                r.0 += 1;
            }
        }
        match decode(datagram, self.vni) {
            Ok(frame) => {
                if let Some(mac) = MacAddr::source_of(frame) {
                    if let Some(m) = self.remotes.learn(mac, src.index, now) {
                        if m.flapping {
                            let before = self.remotes.addr(m.from);
                            eprintln!(
                                "shmif: warning: {}: {mac} moves between remotes ({} and now \
                                 {addr}): a loop, or two endpoints with one address?",
                                self.name,
                                before.map(|a| a.to_string()).unwrap_or_default()
                            );
                        }
                    }
                }
                ctx.frame(frame);
            }
            Err(r) => self.note_reject(r, from),
        }
    }

    fn note_reject(&mut self, r: Reject, from: SocketAddr) {
        let mut st = self.stats.borrow_mut();
        match r {
            Reject::Truncated(_) => st.truncated += 1,
            Reject::BadFlags(f) => {
                st.bad_flags += 1;
                if !self.warned.bad_flags {
                    self.warned.bad_flags = true;
                    eprintln!(
                        "shmif: warning: {}: dropped a datagram from {from} with VXLAN flags \
                         {f:#04x} (only 0x08, the I flag, is accepted; further ones are only \
                         counted)",
                        self.name
                    );
                }
            }
            Reject::OtherVni(v) => {
                st.other_vni += 1;
                if !self.warned.other_vni {
                    self.warned.other_vni = true;
                    eprintln!(
                        "shmif: warning: {}: dropped a datagram from {from} for VNI {v}, not \
                         {} (further ones are only counted)",
                        self.name, self.vni
                    );
                }
            }
        }
    }
}

/// A socket connected to one remote, sending runs of equal-sized
/// datagrams with UDP segmentation offload (UDP_SEGMENT: one trip through
/// the stack for up to 64 datagrams) where the kernel takes it.
struct Sender {
    sock: UdpSocket,
    /// Runs sent with segmentation offload.
    gso_sent: u64,
    /// Runs the kernel refused it for (then sent one by one).
    gso_failed: u64,
}

/// The most datagrams in one segmentation-offload send (the kernel's
/// UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// The most bytes of UDP payload in one send.
const MAX_UDP_PAYLOAD: usize = 65_507;

impl Sender {
    /// Sends `frames`, each after `header`: runs of equal size (the last
    /// may be shorter) as one segmentation-offload send each, the rest
    /// (and runs the kernel refuses, such as datagrams larger than the
    /// path MTU) with sendmmsg. Returns which were sent and the first
    /// error, as [`send_many`].
    fn send(&mut self, header: &[u8], frames: &[&[u8]]) -> (Vec<bool>, Option<Errno>) {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
        use std::io::IoSlice;
        use std::os::fd::AsRawFd as _;
        // Offload refused every time so far: do not keep trying.
        let gso = self.gso_sent > 0 || self.gso_failed < 16;
        let mut sent = vec![false; frames.len()];
        let mut first_error = None;
        let mut i = 0;
        while i < frames.len() {
            let seg = header.len() + frames[i].len();
            let max = (MAX_UDP_PAYLOAD / seg).clamp(1, GSO_MAX_SEGMENTS);
            let mut j = i + 1;
            while j < frames.len() && j - i < max && frames[j].len() == frames[i].len() {
                j += 1;
            }
            if j < frames.len() && j - i < max && frames[j].len() < frames[i].len() {
                j += 1; // a shorter last segment
            }
            if gso && j - i > 1 {
                let iov: Vec<IoSlice<'_>> = frames[i..j]
                    .iter()
                    .flat_map(|f| [IoSlice::new(header), IoSlice::new(f)])
                    .collect();
                let size = u16::try_from(seg).unwrap_or(u16::MAX);
                let cmsg = [ControlMessage::UdpGsoSegments(&size)];
                let fd = self.sock.as_raw_fd();
                match sendmsg::<SockaddrStorage>(fd, &iov, &cmsg, MsgFlags::MSG_DONTWAIT, None) {
                    Ok(_) => {
                        self.gso_sent += 1;
                        sent[i..j].fill(true);
                        i = j;
                        continue;
                    }
                    Err(e) => {
                        let e = Errno::from_raw_os_error(e as i32);
                        if e == Errno::AGAIN {
                            first_error.get_or_insert(e);
                            break; // a full buffer: the rest is lost
                        }
                        // Refused as offload (too large for the path MTU,
                        // unsupported here): sent one by one below.
                        if !matches!(
                            e,
                            Errno::INVAL
                                | Errno::MSGSIZE
                                | Errno::IO
                                | Errno::NOPROTOOPT
                                | Errno::OPNOTSUPP
                        ) {
                            // Not about offload (a remote gone): lost.
                            first_error.get_or_insert(e);
                            i = j;
                            continue;
                        }
                        self.gso_failed += 1;
                    }
                }
            }
            let (ok, err) = send_many(&self.sock, None, header, &frames[i..j]);
            sent[i..j].copy_from_slice(&ok);
            if let Some(e) = err {
                first_error.get_or_insert(e);
            }
            i = j;
        }
        (sent, first_error)
    }
}

/// How many remotes get a connected socket of their own at most.
const MAX_CONNECTED: usize = 64;

/// A non-blocking UDP socket from `local` (any address if none) and a
/// port of the system's choosing, connected to `to`.
fn connected_socket(local: Option<IpAddr>, to: SocketAddr) -> Option<UdpSocket> {
    let any: IpAddr = if to.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let local = local.filter(|l| l.is_ipv4() == to.is_ipv4() && !l.is_unspecified());
    let sock = UdpSocket::bind(SocketAddr::new(local.unwrap_or(any), 0)).ok()?;
    sock.connect(to).ok()?;
    sock.set_nonblocking(true).ok()?;
    use rustix::net::sockopt as so;
    if so::set_socket_send_buffer_size_force(&sock, 4 << 20).is_err() {
        let _ = so::set_socket_send_buffer_size(&sock, 4 << 20);
    }
    Some(sock)
}

/// Sends `frames`, each after `header`, over `sock`: to `to`, or where
/// `sock` is connected if `None`; many per sendmmsg(2), gathered from
/// where they lie. Returns which were sent, and the first error. A full
/// socket buffer loses the rest of the run, as a full wire would.
fn send_many(
    sock: &UdpSocket,
    to: Option<SocketAddr>,
    header: &[u8],
    frames: &[&[u8]],
) -> (Vec<bool>, Option<Errno>) {
    use rustix::net::addr::SocketAddrArg as _;
    use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags};
    use std::io::IoSlice;
    let addr = to.map(|a| a.as_any());
    let iovs: Vec<[IoSlice<'_>; 2]> = frames
        .iter()
        .map(|f| [IoSlice::new(header), IoSlice::new(f)])
        .collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = frames
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = iovs
        .iter()
        .zip(controls.iter_mut())
        .map(|(iov, c)| match &addr {
            Some(a) => MMsgHdr::new_with_addr(a, iov, c),
            None => MMsgHdr::new(iov, c),
        })
        .collect();
    let mut sent = vec![false; frames.len()];
    let mut first_error = None;
    let mut off = 0;
    while off < msgs.len() {
        match sendmmsg(sock, &mut msgs[off..], SendFlags::DONTWAIT) {
            Ok(0) => break,
            Ok(n) => {
                sent[off..off + n].fill(true);
                off += n;
            }
            Err(Errno::INTR) => {}
            Err(e) => {
                first_error.get_or_insert(e);
                // The datagram at `off` failed (an ICMP error reported
                // now, a route missing, too large): skip it.
                off = if e == Errno::AGAIN {
                    msgs.len()
                } else {
                    off + 1
                };
            }
        }
    }
    (sent, first_error)
}

/// Receives into `buf` without blocking: the length, the source, and the
/// size of each datagram in it, which is the length unless the kernel
/// coalesced several (UDP_GRO, where enabled) into one.
fn recv_coalesced(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage};
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd as _;
    let mut space = nix::cmsg_space!(i32);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    let n = msg.bytes;
    let mut seg = n;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::UdpGroSegments(size) = c {
                seg = usize::try_from(size).unwrap_or(n).max(1);
            }
        }
    }
    let from = msg
        .address
        .and_then(|a| match a.family() {
            Some(nix::sys::socket::AddressFamily::Inet) => {
                a.as_sockaddr_in().map(|v| SocketAddr::from(*v))
            }
            Some(nix::sys::socket::AddressFamily::Inet6) => {
                a.as_sockaddr_in6().map(|v| SocketAddr::from(*v))
            }
            _ => None,
        })
        .ok_or_else(|| io::Error::other("a datagram without a source address"))?;
    Ok((n, from, seg))
}

/// The path MTU the kernel knows to `to` (from a socket connected there).
fn path_mtu(local: Option<IpAddr>, to: SocketAddr) -> Option<usize> {
    let any: IpAddr = if to.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let probe = UdpSocket::bind(SocketAddr::new(local.unwrap_or(any), 0)).ok()?;
    probe.connect(to).ok()?;
    let mtu = if to.is_ipv4() {
        rustix::net::sockopt::ip_mtu(&probe)
    } else {
        rustix::net::sockopt::ipv6_mtu(&probe)
    };
    mtu.ok().map(|m| m as usize)
}

impl Port for VxlanPort {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        vec![(self.sock.as_fd(), PollFlags::IN)]
    }

    fn max_frame(&self) -> usize {
        // What one datagram can carry; the underlay fragments as needed.
        RX_ROOM - HEADER_LEN - 8 - 40
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.next_expiry)
    }

    fn service(&mut self, ctx: &mut Ctx<'_>) -> Result<Service> {
        let now = Instant::now();
        if now >= self.next_expiry {
            self.remotes.expire(now);
            self.next_expiry = now + Duration::from_secs(10);
        }
        loop {
            if ctx.full() {
                return Ok(Service::More);
            }
            let (n, from, seg) = match recv_coalesced(&self.sock, &mut self.rx) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Service::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if transient(&e) => {
                    // An ICMP error for an earlier datagram (a remote that
                    // went away): nothing to receive, nothing broken.
                    self.stats.borrow_mut().receive_errors += 1;
                    if !self.warned.receive_error {
                        self.warned.receive_error = true;
                        eprintln!(
                            "shmif: warning: {}: the underlay reported {e} (a remote gone? \
                             further reports are only counted)",
                            self.name
                        );
                    }
                    continue;
                }
                Err(e) => return Err(anyhow!("{}: cannot receive: {e}", self.name)),
            };
            // One datagram, or several the kernel coalesced (UDP_GRO): each
            // `seg` bytes, the last maybe shorter.
            let rx = std::mem::take(&mut self.rx);
            for d in rx[..n].chunks(seg.max(1)) {
                self.take(d, from, now, ctx);
            }
            if n == 0 {
                self.take(&[], from, now, ctx);
            }
            self.rx = rx;
        }
    }

    fn send_batch(&mut self, frames: &[&[u8]]) -> Result<()> {
        let now = Instant::now();
        // Each datagram of the batch: (frame, remote, unicast?).
        let mut plan: Vec<(usize, usize, bool)> = Vec::with_capacity(frames.len());
        for (k, f) in frames.iter().enumerate() {
            let known = MacAddr::destination_of(f).and_then(|d| self.remotes.unicast(d, now));
            match known {
                Some(i) => plan.push((k, i, true)),
                None => plan.extend(self.remotes.flood(now).map(|i| (k, i, false))),
            }
        }
        self.send_plan(frames, &plan);
        Ok(())
    }

    fn report(&self) -> String {
        let st = self.stats.borrow();
        format!(
            "datagrams received: {}, sent unicast: {}, sent flooded: {}; dropped: other VNI: \
             {}, bad flags: {}, truncated: {}, unknown source: {}; send errors: {}, receive \
             errors: {}; {} MAC addresses learnt behind {} remotes",
            st.received,
            st.sent_unicast,
            st.sent_flooded,
            st.other_vni,
            st.bad_flags,
            st.truncated,
            st.unknown_source,
            st.send_errors,
            st.receive_errors,
            self.remotes.macs(),
            self.remotes.len(),
        )
    }
}

/// A UDP socket for `group` on `dev`: bound to the wildcard address and
/// the port (so that unicast from the members comes in too), member of the
/// group on `dev`, sending to it from `dev` with TTL 1 and no loopback.
fn group_socket(group: IpAddr, dev: &str, port: u16) -> Result<UdpSocket> {
    use rustix::net::{bind, socket, sockopt, AddressFamily, SocketType};
    if !group.is_multicast() {
        return Err(anyhow!("--group {group}: not a multicast address"));
    }
    let family = if group.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = socket(family, SocketType::DGRAM, None)
        .map_err(|e| anyhow!("cannot open a UDP socket: {e}"))?;
    let ifindex = rustix::net::netdevice::name_to_index(&fd, dev).map_err(|e| match e {
        Errno::NODEV => anyhow!("--dev {dev}: no such network interface"),
        e => anyhow!("--dev {dev}: {e}"),
    })?;
    sockopt::set_socket_reuseaddr(&fd, true).map_err(|e| anyhow!("SO_REUSEADDR: {e}"))?;
    let joined = match group {
        IpAddr::V4(g) => {
            bind(&fd, &SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
                .map_err(|e| bind_error(e.into(), None, port))?;
            sockopt::set_ip_add_membership_with_ifindex(
                &fd,
                &g,
                &Ipv4Addr::UNSPECIFIED,
                ifindex as u32,
            )
            .and_then(|()| {
                sockopt::set_ip_multicast_if_with_ifindex(
                    &fd,
                    &g,
                    &Ipv4Addr::UNSPECIFIED,
                    ifindex as u32,
                )
            })
            .and_then(|()| sockopt::set_ip_multicast_loop(&fd, false))
            .and_then(|()| sockopt::set_ip_multicast_ttl(&fd, 1))
        }
        IpAddr::V6(g) => {
            sockopt::set_ipv6_v6only(&fd, true).map_err(|e| anyhow!("IPV6_V6ONLY: {e}"))?;
            bind(&fd, &SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port))
                .map_err(|e| bind_error(e.into(), None, port))?;
            sockopt::set_ipv6_add_membership(&fd, &g, ifindex as u32)
                .and_then(|()| sockopt::set_ipv6_multicast_if(&fd, ifindex as u32))
                .and_then(|()| sockopt::set_ipv6_multicast_loop(&fd, false))
                .and_then(|()| sockopt::set_ipv6_multicast_hops(&fd, 1))
        }
    };
    joined.map_err(|e| anyhow!("--group {group} --dev {dev}: cannot join the group: {e}"))?;
    Ok(UdpSocket::from(fd))
}

/// The one-line message for a socket that cannot be bound.
fn bind_error(e: io::Error, local: Option<IpAddr>, port: u16) -> anyhow::Error {
    let at = match local {
        Some(a) => SocketAddr::new(a, port).to_string(),
        None => format!("port {port}"),
    };
    match Errno::from_io_error(&e) {
        Some(Errno::ADDRINUSE) => anyhow!(
            "--port {port}: UDP {at} is in use (another shmif vxlan, or a kernel vxlan device \
             with this dstport, in this network namespace?)"
        ),
        Some(Errno::ADDRNOTAVAIL) => anyhow!(
            "--local {}: not an address of this host (in this network namespace)",
            local.map(|a| a.to_string()).unwrap_or_default()
        ),
        Some(Errno::ACCESS) => anyhow!(
            "--port {port}: permission denied: ports below 1024 need root or \
             CAP_NET_BIND_SERVICE"
        ),
        _ => anyhow!("cannot bind UDP {at}: {e}"),
    }
}

/// Runs `shmif vxlan`.
pub fn run(args: Args) -> Result<ExitCode> {
    let stop = StopSignal::install()?;
    if args.port == 0 {
        return Err(anyhow!("--port 0: not a port"));
    }
    // The endpoints and the socket.
    let (sock, configured, policy, shown) = match (args.group, &args.dev) {
        (Some(group), Some(dev)) => {
            let sock = group_socket(group, dev, args.port)?;
            let to = SocketAddr::new(group, args.port);
            let policy = Policy {
                accept_any: true,
                flood_learnt: false,
            };
            (sock, vec![to], policy, format!("group {to} on {dev}"))
        }
        _ => {
            let local = args.local.ok_or_else(|| {
                anyhow!("--local: needed with --remote (this end's address on the underlay); or use --group and --dev")
            })?;
            if args.remotes.is_empty() && !args.learn_remotes {
                return Err(anyhow!(
                    "--remote: give at least one remote endpoint (or --learn-remotes, or \
                     --group and --dev)"
                ));
            }
            if local.is_multicast() || local.is_unspecified() && !args.learn_remotes {
                return Err(anyhow!(
                    "--local {local}: not a unicast address of this host"
                ));
            }
            let mut to = Vec::new();
            for &(ip, port) in &args.remotes {
                if ip.is_ipv4() != local.is_ipv4() {
                    return Err(anyhow!(
                        "--remote {ip}: not of the same address family as --local {local}"
                    ));
                }
                let sa = SocketAddr::new(ip, port.unwrap_or(args.port));
                if sa == SocketAddr::new(local, args.port) {
                    return Err(anyhow!(
                        "--remote {sa}: that is this end (--local {local} --port {})",
                        args.port
                    ));
                }
                if !to.contains(&sa) {
                    to.push(sa);
                }
            }
            let sock = UdpSocket::bind(SocketAddr::new(local, args.port))
                .map_err(|e| bind_error(e, Some(local), args.port))?;
            let policy = Policy {
                accept_any: args.learn_remotes,
                flood_learnt: true,
            };
            let list: Vec<String> = to.iter().map(ToString::to_string).collect();
            let learn = if args.learn_remotes {
                " + learnt remotes"
            } else {
                ""
            };
            let shown = format!(
                "{} -> {}{learn}",
                SocketAddr::new(local, args.port),
                if list.is_empty() {
                    "(none yet)".to_string()
                } else {
                    list.join(", ")
                }
            );
            (sock, to, policy, shown)
        }
    };
    sock.set_nonblocking(true)
        .map_err(|e| anyhow!("cannot make the UDP socket non-blocking: {e}"))?;
    // Room for bursts (best effort: the system caps what it grants).
    // Datagrams coalesced on receive (one system call for many), where
    // the kernel offers it.
    let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::UdpGroSegment, &true);
    // Room for bursts: beyond the system's cap if privileged (best
    // effort either way).
    use rustix::net::sockopt as so;
    if so::set_socket_recv_buffer_size_force(&sock, 4 << 20).is_err() {
        let _ = so::set_socket_recv_buffer_size(&sock, 4 << 20);
    }
    if so::set_socket_send_buffer_size_force(&sock, 4 << 20).is_err() {
        let _ = so::set_socket_send_buffer_size(&sock, 4 << 20);
    }

    let iface = args.bus_opts.attach(&args.bus, None).map_err(lib_error)?;
    // 1514 on a NetBSD bus; an extended bus's own frame limit.
    let bus_frame = iface.max_frame_len();
    let bus = BusPort::new(iface, &args.bus)?;
    let stats = Rc::new(RefCell::new(Stats::default()));
    let name = format!("vxlan vni {}", args.vni);
    let mut port = VxlanPort {
        sock,
        vni: args.vni,
        remotes: Remotes::new(&configured, policy, args.port, args.ageing),
        stats: stats.clone(),
        warned: Warned::default(),
        rx: vec![0; RX_ROOM],
        bus_frame,
        local: args.local,
        dev: args.dev.clone(),
        bound: args.local.map(|a| SocketAddr::new(a, args.port)),
        senders: std::collections::HashMap::new(),
        next_expiry: Instant::now() + Duration::from_secs(10),
        name: name.clone(),
    };
    for &to in &configured {
        port.check_mtu(to);
    }
    say(&format!(
        "vxlan vni {} {shown} <-> bus {}: bridging",
        args.vni,
        args.bus.display()
    ));

    let mut engine = Engine::new(Forwarding::Learning {
        ageing: args.ageing,
    });
    engine.set_verbose_ports(false);
    let bus_slot = engine.add_essential(Box::new(bus));
    let tun_slot = engine.add_essential(Box::new(port));
    let end = engine.run(&stop)?;
    let bus_c = engine.counters(bus_slot).unwrap_or_default();
    let tun_c = engine.counters(tun_slot).unwrap_or_default();
    let tun_report = engine
        .take_port(tun_slot)
        .map(|p| p.report())
        .unwrap_or_default();
    let bus_report = engine
        .take_port(bus_slot)
        .map(|p| p.report())
        .unwrap_or_default();
    drop(engine);
    eprintln!(
        "shmif: {name} <-> {}: tunnel to bus: {} frames ({} bytes), bus to tunnel: {} frames \
         ({} bytes); kept on the bus: {}; too large for the bus: {}; {tun_report}; {bus_report}",
        args.bus.display(),
        bus_c.out_frames,
        bus_c.out_bytes,
        tun_c.out_frames,
        tun_c.out_bytes,
        bus_c.filtered,
        tun_c.oversized,
    );
    for (addr, (rx, uni, flood)) in &stats.borrow().per_remote {
        eprintln!(
            "shmif: {name}: remote {addr}: received: {rx}, sent unicast: {uni}, sent flooded: \
             {flood}"
        );
    }
    Ok(match end {
        End::Signal => crate::cli::error::interrupted(),
        End::EssentialClosed => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_icmp_error_reported_on_the_socket_is_transient() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable,
            io::ErrorKind::WouldBlock,
        ] {
            assert!(transient(&io::Error::from(kind)), "{kind:?}");
        }
        assert!(transient(&io::Error::from(Errno::MSGSIZE)));
        assert!(!transient(&io::Error::from(Errno::BADF)));
    }

    #[test]
    fn remotes_and_vnis_parse_with_clear_errors() {
        let v4: IpAddr = "192.0.2.2".parse().unwrap();
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(remote("192.0.2.2"), Ok((v4, None)));
        assert_eq!(remote("192.0.2.2:8472"), Ok((v4, Some(8472))));
        assert_eq!(remote("2001:db8::2"), Ok((v6, None)));
        assert_eq!(remote("[2001:db8::2]"), Ok((v6, None)));
        assert_eq!(remote("[2001:db8::2]:4790"), Ok((v6, Some(4790))));
        assert!(remote("host.example").unwrap_err().contains("host.example"));
        assert!(remote("239.1.1.1").unwrap_err().contains("--group"));
        assert!(remote("0.0.0.0").is_err());
        assert!(remote("192.0.2.2:0").is_err());
        assert_eq!(vni("42"), Ok(Vni::new(42).unwrap()));
        assert!(vni("16777216").unwrap_err().contains("16777215"));
        assert!(vni("-1").is_err());
    }
}
