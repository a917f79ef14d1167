//! What `host`, `ping`, `tcp-send` and `demo` share: their bus and
//! interface options, address parsing, a smoltcp TCP/IP stack on a bus,
//! activities that run on a stack (a ping run, a TCP transfer), stopping
//! on SIGINT/SIGTERM (`listen` stops the same way), and the test pattern
//! `tcp-send` sends and `host --tcp-sink` checks.

use anyhow::{anyhow, Context, Result};
use shmif::smoltcp_device::ShmifDevice;
use shmif::{Interface, MacAddr};
use smoltcp::iface::{Config, Interface as IpInterface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Default size of each TCP socket's send and receive buffer, in KiB. Large
/// enough to keep the bus busy, small enough that one window of data (plus
/// its acknowledgements) fits in the bus's 1 MiB ring, so a sender never
/// laps a receiver that is keeping up.
pub const DEFAULT_TCP_BUFFER_KIB: usize = 512;

/// What the commands that run a TCP/IP stack on a bus (`host`, `ping`,
/// `tcp-send`) share: the bus, how it is opened, and the interface's
/// addresses and MAC address. Flattened into each command's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// The bus file (created if missing).
    pub bus: PathBuf,

    #[command(flatten)]
    pub bus_opts: super::bus_opts::BusOpts,
    /// This interface's address, ADDR/PREFIX: IPv4 (10.0.0.1/24) or IPv6
    /// (fd00::1/64); a destination needs an address of its family. Without
    /// /PREFIX: /24 or /64.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse_cidr)]
    pub ip: Option<IpCidr>,
    /// An IPv6 address as well, ADDR/PREFIX (fd00::1/64), for IPv6
    /// destinations.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse_cidr)]
    pub ip6: Option<IpCidr>,
    /// This interface's MAC address (default: random b2:a0:xx:xx:xx:xx).
    #[arg(long, value_parser = parse_mac)]
    pub mac: Option<MacAddr>,
}

impl StackArgs {
    /// The interface addresses from `--ip` and `--ip6` (see [`addresses`]).
    pub fn addresses(&self) -> Result<Vec<IpCidr>> {
        addresses(self.ip, self.ip6)
    }

    /// Attaches a [`Stack`] to the bus, with `addrs` (from
    /// [`StackArgs::addresses`]) and the MAC address given.
    pub fn attach(&self, addrs: &[IpCidr]) -> Result<Stack> {
        Stack::attach(&self.bus, &self.bus_opts, self.mac, addrs)
    }
}

/// Parses `ADDR/PREFIX` (IPv4 or IPv6); a missing prefix means /24 for IPv4
/// and /64 for IPv6.
pub fn parse_cidr(s: &str) -> Result<IpCidr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address (expected ADDR/PREFIX, e.g. 10.0.0.1/24 or fd00::1/64)"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| format!("`{p}` is not a prefix length (0 to {max})"))?,
        None if addr.is_ipv4() => 24,
        None => 64,
    };
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(format!("{addr} cannot be an interface address"));
    }
    Ok(IpCidr::new(IpAddress::from(addr), prefix))
}

/// Parses a MAC address such as `b2:a0:00:00:00:01` (a unicast address).
pub fn parse_mac(s: &str) -> Result<MacAddr, String> {
    let mac: MacAddr = s.parse().map_err(|_| {
        format!("`{s}` is not a MAC address (expected six hex octets, e.g. b2:a0:00:00:00:01)")
    })?;
    if mac.is_group() {
        return Err(format!(
            "{mac} is a multicast address: an interface needs a unicast one"
        ));
    }
    Ok(mac)
}

/// The interface addresses from `--ip` and `--ip6`: at least one, at most
/// one of each family.
pub fn addresses(ip: Option<IpCidr>, ip6: Option<IpCidr>) -> Result<Vec<IpCidr>> {
    if let Some(c) = ip6 {
        if !matches!(c, IpCidr::Ipv6(_)) {
            anyhow::bail!("--ip6 {c}: not an IPv6 address");
        }
    }
    let addrs: Vec<IpCidr> = ip.into_iter().chain(ip6).collect();
    if addrs.is_empty() {
        anyhow::bail!("give the interface an address with --ip ADDR/PREFIX (or --ip6)");
    }
    if addrs.len() == 2 && matches!(addrs[0], IpCidr::Ipv6(_)) {
        anyhow::bail!(
            "--ip {} and --ip6 {} are both IPv6: give the IPv4 address with --ip",
            addrs[0],
            addrs[1]
        );
    }
    Ok(addrs)
}

/// Fails unless `addrs` has an address of `dest`'s family; `what` names
/// the destination in the message (`DEST 10.0.0.1`, `--ping fd00::1`).
pub fn check_family(what: &str, dest: IpAddr, addrs: &[IpCidr]) -> Result<()> {
    let same = |c: &IpCidr| matches!(c, IpCidr::Ipv4(_)) == dest.is_ipv4();
    if !addrs.iter().any(same) {
        anyhow::bail!(
            "{what} is {}, but this interface has no such address: add --ip{} ADDR/PREFIX",
            if dest.is_ipv4() { "IPv4" } else { "IPv6" },
            if dest.is_ipv4() { "" } else { "6" }
        );
    }
    Ok(())
}

/// A TCP/IP host on a bus: a shmif interface, smoltcp's interface over it,
/// and the sockets.
pub struct Stack {
    /// The shmif interface (shared with the signal watcher, which takes it
    /// down to stop the stack).
    pub shmif: Arc<Interface>,
    /// The smoltcp device over `shmif`.
    pub dev: ShmifDevice<Arc<Interface>>,
    /// smoltcp's IP interface.
    pub ip: IpInterface,
    /// The sockets.
    pub sockets: SocketSet<'static>,
}

impl Stack {
    /// Attaches to `bus` (with `mac`, or a random one; opened as `opts`
    /// says) and sets up an IP interface with `addrs`.
    pub fn attach(
        bus: &Path,
        opts: &super::bus_opts::BusOpts,
        mac: Option<MacAddr>,
        addrs: &[IpCidr],
    ) -> Result<Stack> {
        let shmif = opts
            .attach(bus, mac)
            .with_context(|| format!("cannot attach to bus {}", bus.display()))?;
        let shmif = Arc::new(shmif);
        // Received checksums are verified (the device's default): skipping
        // that made no measurable difference to throughput here.
        let mut dev = ShmifDevice::new(shmif.clone());
        let mut config = Config::new(EthernetAddress(shmif.mac().0).into());
        config.random_seed = shmif.sender_id();
        let mut ip = IpInterface::new(config, &mut dev, smoltcp::time::Instant::now());
        ip.update_ip_addrs(|a| {
            for c in addrs {
                let _ = a.push(*c);
            }
        });
        Ok(Stack {
            shmif,
            dev,
            ip,
            sockets: SocketSet::new(vec![]),
        })
    }

    /// Runs smoltcp once: takes in every waiting frame, sends what the
    /// sockets have. Returns whether a socket may have changed state.
    pub fn poll(&mut self) -> bool {
        self.ip.poll(
            smoltcp::time::Instant::now(),
            &mut self.dev,
            &mut self.sockets,
        ) == smoltcp::iface::PollResult::SocketStateChanged
    }

    /// Sends what is queued, then sleeps until a frame arrives, smoltcp has
    /// a timer due, or `max` passes. Returns `Ok(false)` when the interface
    /// was taken down (by [`StopSignal`]), `Ok(true)` otherwise.
    pub fn wait(&mut self, max: Option<Duration>) -> Result<bool> {
        match self.dev.poll_wait(&mut self.ip, &self.sockets, max) {
            Ok(()) => Ok(true),
            Err(shmif::Error::Down) => Ok(false),
            Err(e) => Err(anyhow!(e)),
        }
    }

    /// This interface's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.shmif.mac()
    }

    /// The interface's addresses, as text: `10.0.0.1/24 fd00::1/64`.
    pub fn addresses_text(&self) -> String {
        self.ip
            .ip_addrs()
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Asks the bus who has `dest` (an ARP request, or an IPv6 neighbour
    /// solicitation), written straight to the bus; smoltcp learns the
    /// answer as it would its own. Does nothing for a `dest` outside this
    /// interface's networks.
    ///
    /// smoltcp sends at most one request per second per interface (its
    /// neighbour cache's rate limit covers every neighbour and both
    /// families), so a host that has just resolved one neighbour would
    /// wait up to a second for the next; asking here first avoids that.
    pub fn solicit(&self, dest: IpAddress) -> Result<()> {
        use smoltcp::wire::{
            ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, Icmpv6Packet,
            Icmpv6Repr, IpProtocol, Ipv6Address, Ipv6Packet, Ipv6Repr, NdiscRepr,
        };
        let local = |c: &&IpCidr| c.contains_addr(&dest) && c.address() != dest;
        let Some(src) = self.ip.ip_addrs().iter().find(local).map(|c| c.address()) else {
            return Ok(());
        };
        let mac = EthernetAddress(self.mac().0);
        let (dst_mac, ethertype, body): (EthernetAddress, EthernetProtocol, Vec<u8>) =
            match (src, dest) {
                (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
                    let arp = ArpRepr::EthernetIpv4 {
                        operation: ArpOperation::Request,
                        source_hardware_addr: mac,
                        source_protocol_addr: s,
                        target_hardware_addr: EthernetAddress([0; 6]),
                        target_protocol_addr: d,
                    };
                    let mut b = vec![0; arp.buffer_len()];
                    arp.emit(&mut ArpPacket::new_unchecked(&mut b[..]));
                    (EthernetAddress::BROADCAST, EthernetProtocol::Arp, b)
                }
                (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
                    // To the target's solicited-node group, ff02::1:ffXX:XXXX.
                    let t = d.octets();
                    let mut g = [0u8; 16];
                    g[..2].copy_from_slice(&[0xff, 0x02]);
                    g[11..].copy_from_slice(&[0x01, 0xff, t[13], t[14], t[15]]);
                    let group = Ipv6Address::from(g);
                    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                        target_addr: d,
                        lladdr: Some(mac.into()),
                    });
                    let ip = Ipv6Repr {
                        src_addr: s,
                        dst_addr: group,
                        next_header: IpProtocol::Icmpv6,
                        payload_len: ns.buffer_len(),
                        hop_limit: 0xff,
                    };
                    let mut b = vec![0; ip.buffer_len() + ns.buffer_len()];
                    let mut pkt = Ipv6Packet::new_unchecked(&mut b[..]);
                    ip.emit(&mut pkt);
                    ns.emit(
                        &s,
                        &group,
                        &mut Icmpv6Packet::new_unchecked(pkt.payload_mut()),
                        &smoltcp::phy::ChecksumCapabilities::default(),
                    );
                    let m = EthernetAddress([0x33, 0x33, 0xff, t[13], t[14], t[15]]);
                    (m, EthernetProtocol::Ipv6, b)
                }
                _ => return Ok(()),
            };
        let mut frame = vec![0; 14 + body.len()];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst_addr(dst_mac);
        eth.set_src_addr(mac);
        eth.set_ethertype(ethertype);
        eth.payload_mut().copy_from_slice(&body);
        self.shmif
            .send(&frame)
            .with_context(|| format!("cannot send a neighbour request for {dest}"))
    }

    /// The source address this host uses towards `dest`, if it has one of
    /// the same family.
    pub fn source_for(&self, dest: IpAddress) -> Option<IpAddress> {
        self.ip
            .ip_addrs()
            .iter()
            .map(|c| c.address())
            .find(|a| std::mem::discriminant(a) == std::mem::discriminant(&dest))
    }
}

/// A new TCP socket with `kib` KiB send and receive buffers, tuned for a
/// bus: no Nagle delay, no delayed ACKs, Reno congestion control.
pub fn tcp_socket(kib: usize) -> tcp::Socket<'static> {
    let bytes = kib.max(4) * 1024;
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; bytes]),
        tcp::SocketBuffer::new(vec![0; bytes]),
    );
    s.set_nagle_enabled(false);
    s.set_ack_delay(None);
    // Without congestion control, a sender that loses frames (its window
    // larger than what the bus's ring holds for the receiver, or several
    // connections at once) retransmits its whole window again and again,
    // overrunning the reader each time; Reno backs off and recovers.
    s.set_congestion_control(tcp::CongestionControl::Reno);
    s
}

/// What an [`Activity`] needs after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It handed data to a socket or took some: poll the stack again
    /// before sleeping.
    Busy,
    /// Nothing to do until a frame arrives, smoltcp has a timer due, or
    /// the given instant (`None`: no deadline of its own).
    Idle(Option<Instant>),
    /// Finished: call [`Activity::finish`].
    Done,
}

/// Something a host does over many polls of its [`Stack`], next to
/// whatever else the stack serves: a ping run ([`super::ping::Pinger`]), a
/// TCP transfer ([`super::tcp_send::TcpSender`]).
///
/// The driver polls the stack, calls [`Activity::step`], and sleeps as the
/// step says; when the interface is taken down (SIGINT/SIGTERM) it calls
/// [`Activity::interrupt`]; in the end it calls [`Activity::finish`] once.
/// [`run_alone`] is the driver for a stack that does nothing else.
pub trait Activity {
    /// Does what can be done now; called after each [`Stack::poll`].
    fn step(&mut self, stack: &mut Stack) -> Step;
    /// The interface was taken down (`why`): nothing more will come in.
    fn interrupt(&mut self, why: &str);
    /// Prints the report on stdout (failures on stderr), frees the
    /// activity's sockets, and returns whether it succeeded.
    fn finish(&mut self, stack: &mut Stack) -> bool;
}

/// What to say when the interface went down under an activity.
pub fn down_reason(stop: &StopSignal) -> &'static str {
    if stop.stopped() {
        "interrupted"
    } else {
        "interface taken down"
    }
}

/// Runs `act` on `stack` until it is done or the interface is taken down
/// (by [`StopSignal`]), then finishes it; returns whether it succeeded.
pub fn run_alone(stack: &mut Stack, act: &mut dyn Activity, stop: &StopSignal) -> Result<bool> {
    loop {
        stack.poll();
        let until = match act.step(stack) {
            Step::Busy => continue,
            Step::Done => break,
            Step::Idle(until) => until,
        };
        let max = until.map(|u| u.saturating_duration_since(Instant::now()));
        if max != Some(Duration::ZERO) && !stack.wait(max)? {
            act.interrupt(down_reason(stop));
            break;
        }
    }
    Ok(act.finish(stack))
}

/// Stops a command on SIGINT or SIGTERM: sets a flag and takes the shmif
/// interface down, which wakes the stack's wait ([`Stack::wait`] returns
/// `Ok(false)`).
#[derive(Clone)]
pub struct StopSignal {
    flag: Arc<AtomicBool>,
}

impl StopSignal {
    /// Starts watching for SIGINT and SIGTERM on behalf of `iface`.
    pub fn install(iface: &Arc<Interface>) -> Result<StopSignal> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .context("cannot install SIGINT/SIGTERM handlers")?;
        let weak: Weak<Interface> = Arc::downgrade(iface);
        let f = flag.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    f.store(true, Ordering::SeqCst);
                    if let Some(i) = weak.upgrade() {
                        i.down();
                    }
                }
            })
            .context("cannot start the signal thread")?;
        Ok(StopSignal { flag })
    }

    /// Whether a signal asked to stop.
    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// The multiplier of the test pattern: byte `i` of a `tcp-send` stream is
/// byte `i % 8` (little-endian) of the 64-bit word
/// `(i / 8) * PATTERN_MUL` (wrapping). Every 8-byte word of the stream is
/// different, so a lost, repeated, reordered or shifted piece shows.
pub const PATTERN_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

fn pattern_word(word: u64) -> [u8; 8] {
    word.wrapping_mul(PATTERN_MUL).to_le_bytes()
}

/// Walks `len` bytes of the pattern from stream offset `offset` in pieces
/// split at its word boundaries: a partial word up to the first boundary,
/// whole words, a partial last word. Calls `piece(i, bytes)` for each, `i`
/// being where the piece starts in the caller's buffer and `bytes` the
/// pattern there; stops early when `piece` returns false.
#[inline(always)]
fn pattern_pieces(offset: u64, len: usize, mut piece: impl FnMut(usize, &[u8]) -> bool) {
    let head = ((8 - offset % 8) % 8).min(len as u64) as usize;
    if head > 0 {
        let at = (offset % 8) as usize;
        if !piece(0, &pattern_word(offset / 8)[at..at + head]) {
            return;
        }
    }
    let mut i = head;
    while i + 8 <= len {
        if !piece(i, &pattern_word((offset + i as u64) / 8)) {
            return;
        }
        i += 8;
    }
    if i < len {
        piece(i, &pattern_word((offset + i as u64) / 8)[..len - i]);
    }
}

/// Fills `buf` with the test pattern from stream offset `offset`.
pub fn pattern_fill(offset: u64, buf: &mut [u8]) {
    pattern_pieces(offset, buf.len(), |i, want| {
        buf[i..i + want.len()].copy_from_slice(want);
        true
    });
}

/// Checks `buf` against the test pattern from stream offset `offset`;
/// returns the stream offset of the first byte that differs.
pub fn pattern_check(offset: u64, buf: &[u8]) -> Option<u64> {
    let mut bad = None;
    pattern_pieces(offset, buf.len(), |i, want| {
        let got = &buf[i..i + want.len()];
        if got != want {
            bad = first_difference(offset + i as u64, got);
        }
        bad.is_none()
    });
    bad
}

/// Receives everything waiting in `s`, checking it against the test
/// pattern: `bytes` counts the stream received so far (the offset of what
/// comes next), and `mismatch` keeps the offset of the first wrong byte.
/// Returns whether anything came in.
pub fn recv_pattern(s: &mut tcp::Socket, bytes: &mut u64, mismatch: &mut Option<u64>) -> bool {
    let mut got_any = false;
    while s.can_recv() {
        let at = *bytes;
        match s.recv(|buf| (buf.len(), (buf.len(), pattern_check(at, buf)))) {
            Ok((n, bad)) if n > 0 => {
                if mismatch.is_none() {
                    *mismatch = bad;
                }
                *bytes += n as u64;
                got_any = true;
            }
            _ => break,
        }
    }
    got_any
}

fn first_difference(offset: u64, buf: &[u8]) -> Option<u64> {
    let mut one = [0u8; 1];
    buf.iter().enumerate().find_map(|(i, &b)| {
        let at = offset + i as u64;
        pattern_fill(at, &mut one);
        (one[0] != b).then_some(at)
    })
}

/// Bytes per mebibyte.
pub const MIB: f64 = 1024.0 * 1024.0;

/// `bytes` over `secs` in MiB/s (0 for no time).
pub fn mib_per_sec(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / MIB / secs
    } else {
        0.0
    }
}

/// Prints a line on stdout and flushes it at once (other programs, such as
/// `shmif demo`, read it through a pipe).
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_position_dependent_and_chunking_free() {
        let mut whole = vec![0u8; 1000];
        pattern_fill(0, &mut whole);
        assert_eq!(&whole[..8], &0u64.to_le_bytes());
        assert_eq!(&whole[8..16], &PATTERN_MUL.to_le_bytes());
        // Filled or checked in odd pieces, the same stream.
        let mut pieces = vec![0u8; 1000];
        let mut at = 0;
        for n in [1usize, 3, 7, 8, 9, 15, 100, 857] {
            pattern_fill(at as u64, &mut pieces[at..at + n]);
            assert_eq!(pattern_check(at as u64, &whole[at..at + n]), None);
            at += n;
        }
        assert_eq!(at, 1000);
        assert_eq!(whole, pieces);
        // Any damage is found, at the right place.
        for bad in [0usize, 5, 8, 13, 999] {
            let mut b = whole.clone();
            b[bad] ^= 0x40;
            assert_eq!(pattern_check(0, &b), Some(bad as u64));
            assert_eq!(pattern_check(3, &b[3..]), (bad >= 3).then_some(bad as u64));
        }
        // A shifted stream does not match.
        assert!(pattern_check(1, &whole[..64]).is_some());
        assert!(pattern_check(8, &whole[..64]).is_some());
    }

    #[test]
    fn cidrs_parse_with_clear_errors() {
        assert_eq!(
            parse_cidr("10.0.0.1/24").unwrap(),
            IpCidr::new(IpAddress::v4(10, 0, 0, 1), 24)
        );
        assert_eq!(parse_cidr("10.0.0.1").unwrap().prefix_len(), 24);
        assert_eq!(parse_cidr("fd00::1").unwrap().prefix_len(), 64);
        assert_eq!(parse_cidr("fd00::1/120").unwrap().prefix_len(), 120);
        assert!(parse_cidr("10.0.0.1/33").unwrap_err().contains("33"));
        assert!(parse_cidr("host/24").unwrap_err().contains("host"));
        assert!(parse_cidr("0.0.0.0/8").is_err());
        assert!(parse_mac("b2:a0:00:00:00:01").is_ok());
        assert!(parse_mac("ff:ff:ff:ff:ff:ff").is_err());
        assert!(parse_mac("nonsense").is_err());
    }

    #[test]
    fn address_sets() {
        let v4 = parse_cidr("10.0.0.1/24").ok();
        let v6 = parse_cidr("fd00::1/64").ok();
        assert_eq!(addresses(v4, v6).unwrap().len(), 2);
        assert_eq!(addresses(v6, None).unwrap().len(), 1);
        assert!(addresses(None, None).is_err());
        assert!(addresses(v6, v6).is_err());
        assert!(addresses(None, v4).is_err());
    }
}
