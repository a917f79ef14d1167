//! A TCP/IP host on a bus: a shmif interface, smoltcp's interface over it,
//! and the sockets.

use super::dad::{Guard, Guarded};
use crate::cli::bus_opts::BusOpts;
use crate::cli::error::lib_error;
use crate::cli::repair::RepairNotice;
use anyhow::{anyhow, Context, Result};
use shmif::smoltcp_device::ShmifDevice;
use shmif::{Interface, MacAddr};
use smoltcp::iface::{Config, Interface as IpInterface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Default size of each TCP socket's send and receive buffer, in KiB. Large
/// enough to keep the bus busy, small enough that one window of data (plus
/// its acknowledgements) fits in the bus's 1 MiB ring, so a sender never
/// laps a receiver that is keeping up.
pub const DEFAULT_TCP_BUFFER_KIB: usize = 512;

/// How many of the bus's largest frames a default TCP buffer holds at
/// least, on an extended bus (whose registered readers are lossless, so a
/// window larger than the ring is held back, never lost): with 64 KiB
/// frames, 512 KiB is only eight segments in flight, and throughput then
/// waits on acknowledgements (measured: 1.45 GiB/s at 512 KiB, 2.2 at 2
/// MiB, less again at 4 and 8 MiB; bench/host-jumbo.sh).
pub const TCP_BUFFER_FRAMES: usize = 32;

/// The TCP buffer size, in KiB, for sockets on `shmif`'s bus: `given`
/// (`--tcp-buffer`) if set; otherwise [`DEFAULT_TCP_BUFFER_KIB`] on a
/// NetBSD bus, and on an extended bus that or [`TCP_BUFFER_FRAMES`] of its
/// largest frames, whichever is more.
pub fn tcp_buffer_kib(given: Option<usize>, shmif: &Interface) -> usize {
    given.unwrap_or_else(|| {
        if shmif.is_extended() {
            DEFAULT_TCP_BUFFER_KIB.max((TCP_BUFFER_FRAMES * shmif.max_frame_len()).div_ceil(1024))
        } else {
            DEFAULT_TCP_BUFFER_KIB
        }
    })
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
    /// Says once per episode that the bus was repaired.
    repairs: RepairNotice,
    /// Polls since the repair counter was last looked at.
    polls: u32,
    /// Answers duplicate address probes for this stack's addresses, and
    /// notes the neighbours heard from.
    pub guard: Guard,
}

impl Stack {
    /// Attaches to `bus` (with `mac`, or a random one; opened as `opts`
    /// says) and sets up an IP interface with `addrs`.
    pub fn attach(
        bus: &Path,
        opts: &BusOpts,
        mac: Option<MacAddr>,
        addrs: &[IpCidr],
    ) -> Result<Stack> {
        // The library's message names the bus already.
        let shmif = opts.attach(bus, mac).map_err(lib_error)?;
        let shmif = Arc::new(shmif);
        let guard = Guard::new(shmif.clone(), addrs.iter().map(|c| c.address()).collect());
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
            repairs: RepairNotice::new(bus),
            polls: 0,
            guard,
        })
    }

    /// Runs smoltcp once: takes in every waiting frame, sends what the
    /// sockets have. Returns whether a socket may have changed state.
    pub fn poll(&mut self) -> bool {
        self.polls = self.polls.wrapping_add(1);
        if self.polls % 256 == 0 {
            self.repairs.check(&self.shmif.counters());
        }
        let mut dev = Guarded {
            dev: &mut self.dev,
            guard: &mut self.guard,
        };
        self.ip
            .poll(smoltcp::time::Instant::now(), &mut dev, &mut self.sockets)
            == smoltcp::iface::PollResult::SocketStateChanged
    }

    /// Sends what is queued, then sleeps until a frame arrives, smoltcp has
    /// a timer due, or `max` passes. Returns `Ok(false)` when the interface
    /// was taken down (by [`crate::cli::signal::StopSignal`]), `Ok(true)` otherwise.
    pub fn wait(&mut self, max: Option<Duration>) -> Result<bool> {
        self.repairs.check(&self.shmif.counters());
        match self.dev.poll_wait(&mut self.ip, &self.sockets, max) {
            Ok(()) => Ok(true),
            Err(shmif::Error::Down) => Ok(false),
            Err(e) => Err(anyhow!(e)),
        }
    }

    /// Whether another interface on the bus has shown it has `addr` (an
    /// ARP packet from it, a neighbour advertisement for it).
    pub fn heard(&self, addr: IpAddress) -> bool {
        self.guard.heard(addr)
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
