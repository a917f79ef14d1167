//! Duplicate address detection, both sides of it:
//! - [`probe`]: before a host serves, it asks the bus whether its
//!   addresses are taken: ARP probes as RFC 5227 has them (sender address
//!   0.0.0.0, so that no cache learns anything) and IPv6 neighbour
//!   solicitations from `::` as RFC 4862 has them;
//! - [`Guard`]: every stack answers such probes for its own addresses
//!   (smoltcp ignores both: an ARP request from 0.0.0.0 is not unicast, and
//!   it would answer a solicitation from `::` to `::`), and notes which
//!   neighbours it has heard from, so that a ping or a transfer to nobody
//!   can say that nobody answered ARP or neighbour discovery. It also
//!   keeps the last TCP reset the stack sent, for an aborting transfer
//!   ([`crate::net::reset`]).

use super::reset;
use shmif::{Interface, MacAddr};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Address, Ipv6Address, Ipv6Packet,
    Ipv6Repr, NdiscNeighborFlags, NdiscRepr,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Probes sent per address, and the time between them: shorter than RFC
/// 5227's seconds (a bus is one hop, and every peer answers within
/// milliseconds), long enough for a busy peer to be scheduled.
const PROBES: u32 = 3;
/// Time between probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long to listen after the last probe.
const LAST_WAIT: Duration = Duration::from_millis(200);

/// ff02::1, the link-local all-nodes group.
const ALL_NODES: Ipv6Address = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An address some other interface on the bus already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The address.
    pub addr: IpAddress,
    /// The MAC address of the interface that has it (or is probing for it).
    pub mac: MacAddr,
    /// Whether the other one was only probing for it at the same time.
    pub probing: bool,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match (self.addr, self.probing) {
            (_, true) => "is probing for it at the same time",
            (IpAddress::Ipv4(_), false) => "answered the ARP probe",
            (IpAddress::Ipv6(_), false) => "answered the neighbour solicitation",
        };
        write!(
            f,
            "{} is already in use on the bus: {} {how}",
            self.addr, self.mac
        )
    }
}

/// An Ethernet frame from `src` to `dst` carrying `body`.
fn ethernet(
    src: EthernetAddress,
    dst: EthernetAddress,
    ty: EthernetProtocol,
    body: &[u8],
) -> Vec<u8> {
    let mut frame = vec![0; 14 + body.len()];
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    eth.set_ethertype(ty);
    eth.payload_mut().copy_from_slice(body);
    frame
}

/// An ARP frame from `mac` to `dst`.
pub fn arp_frame(mac: EthernetAddress, dst: EthernetAddress, arp: ArpRepr) -> Vec<u8> {
    let mut b = vec![0; arp.buffer_len()];
    arp.emit(&mut ArpPacket::new_unchecked(&mut b[..]));
    ethernet(mac, dst, EthernetProtocol::Arp, &b)
}

/// The solicited-node group of `addr` (ff02::1:ffXX:XXXX) and its MAC.
pub fn solicited_node(addr: Ipv6Address) -> (Ipv6Address, EthernetAddress) {
    let t = addr.octets();
    let mut g = [0u8; 16];
    g[..2].copy_from_slice(&[0xff, 0x02]);
    g[11..].copy_from_slice(&[0x01, 0xff, t[13], t[14], t[15]]);
    let m = EthernetAddress([0x33, 0x33, 0xff, t[13], t[14], t[15]]);
    (Ipv6Address::from(g), m)
}

/// A neighbour discovery frame from `mac` (`src` to `dst`, at `dst_mac`).
pub fn ndisc_frame(
    mac: EthernetAddress,
    src: Ipv6Address,
    dst: Ipv6Address,
    dst_mac: EthernetAddress,
    nd: NdiscRepr<'_>,
) -> Vec<u8> {
    let icmp = Icmpv6Repr::Ndisc(nd);
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 0xff,
    };
    let mut b = vec![0; ip.buffer_len() + icmp.buffer_len()];
    let mut pkt = Ipv6Packet::new_unchecked(&mut b[..]);
    ip.emit(&mut pkt);
    icmp.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(pkt.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    ethernet(mac, dst_mac, EthernetProtocol::Ipv6, &b)
}

/// What a frame says about addresses, for the probe and the guard.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    /// `mac` says it has `addr` (an ARP packet from it, a neighbour
    /// advertisement for it, a solicitation from it).
    Has(IpAddress, EthernetAddress),
    /// `mac` probes for `addr` (ARP from 0.0.0.0, a solicitation from ::).
    Probes(IpAddress, EthernetAddress),
    /// Nothing about addresses.
    Nothing,
}

/// Reads what `frame` says about who has which address.
fn hear(frame: &[u8]) -> Heard {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Heard::Nothing;
    };
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let Some(ArpRepr::EthernetIpv4 {
                source_hardware_addr: mac,
                source_protocol_addr: src,
                target_protocol_addr: target,
                operation,
                ..
            }) = ArpPacket::new_checked(eth.payload())
                .ok()
                .and_then(|p| ArpRepr::parse(&p).ok())
            else {
                return Heard::Nothing;
            };
            if src.is_unspecified() {
                if operation == ArpOperation::Request {
                    return Heard::Probes(target.into(), mac);
                }
                return Heard::Nothing;
            }
            Heard::Has(src.into(), mac)
        }
        EthernetProtocol::Ipv6 => {
            let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                return Heard::Nothing;
            };
            let Ok(repr) = Ipv6Repr::parse(&ip) else {
                return Heard::Nothing;
            };
            if repr.next_header != IpProtocol::Icmpv6 {
                return Heard::Nothing;
            }
            let Ok(icmp) = Icmpv6Packet::new_checked(ip.payload()) else {
                return Heard::Nothing;
            };
            let caps = ChecksumCapabilities::ignored();
            let mac = eth.src_addr();
            match Icmpv6Repr::parse(&repr.src_addr, &repr.dst_addr, &icmp, &caps) {
                Ok(Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. }))
                    if repr.src_addr.is_unspecified() =>
                {
                    Heard::Probes(target_addr.into(), mac)
                }
                Ok(Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { .. })) => {
                    Heard::Has(repr.src_addr.into(), mac)
                }
                Ok(Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                    target_addr,
                    lladdr,
                    ..
                })) => {
                    let mac = lladdr
                        .filter(|l| l.len() == 6)
                        .map(|l| EthernetAddress::from_bytes(l.as_bytes()))
                        .unwrap_or(mac);
                    Heard::Has(target_addr.into(), mac)
                }
                _ => Heard::Nothing,
            }
        }
        _ => Heard::Nothing,
    }
}

/// Asks the bus whether any of `addrs` is taken, as `iface` (up, and not
/// yet answering for them): [`PROBES`] probes per address, then a short
/// wait. Returns the first conflict heard, if any.
pub fn probe(iface: &Interface, addrs: &[IpAddress]) -> Result<Option<Conflict>, shmif::Error> {
    let mac = EthernetAddress(iface.mac().0);
    let mut frames = Vec::new();
    for a in addrs {
        frames.push(match *a {
            IpAddress::Ipv4(ip) => arp_frame(
                mac,
                EthernetAddress::BROADCAST,
                ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request,
                    source_hardware_addr: mac,
                    source_protocol_addr: Ipv4Address::UNSPECIFIED,
                    target_hardware_addr: EthernetAddress([0; 6]),
                    target_protocol_addr: ip,
                },
            ),
            IpAddress::Ipv6(ip) => {
                let (group, group_mac) = solicited_node(ip);
                ndisc_frame(
                    mac,
                    Ipv6Address::UNSPECIFIED,
                    group,
                    group_mac,
                    NdiscRepr::NeighborSolicit {
                        target_addr: ip,
                        lladdr: None,
                    },
                )
            }
        });
    }
    let start = Instant::now();
    let end = start + PROBE_INTERVAL * (PROBES - 1) + LAST_WAIT;
    let mut sent = 0;
    loop {
        let now = Instant::now();
        if sent < PROBES && now >= start + PROBE_INTERVAL * sent {
            iface.send_batch(frames.iter().map(|f| &f[..]))?;
            sent += 1;
        }
        let next = if sent < PROBES {
            start + PROBE_INTERVAL * sent
        } else {
            end
        };
        if now >= end {
            return Ok(None);
        }
        let Some(frame) = iface.recv_timeout(next.saturating_duration_since(now))? else {
            continue;
        };
        let (addr, other, probing) = match hear(&frame.data) {
            Heard::Has(a, m) => (a, m, false),
            Heard::Probes(a, m) => (a, m, true),
            Heard::Nothing => continue,
        };
        if other != mac && addrs.contains(&addr) {
            return Ok(Some(Conflict {
                addr,
                mac: MacAddr(other.0),
                probing,
            }));
        }
    }
}

/// What a stack keeps for the other side of duplicate address detection:
/// its addresses (to answer probes for them) and the neighbours it has
/// heard from.
pub struct Guard {
    shmif: Arc<Interface>,
    mac: EthernetAddress,
    addrs: Vec<IpAddress>,
    heard: HashSet<IpAddress>,
    /// The last TCP reset the stack sent (see [`crate::net::reset`]).
    last_reset: Option<Vec<u8>>,
}

impl Guard {
    /// A guard for `addrs` on `shmif`.
    pub fn new(shmif: Arc<Interface>, addrs: Vec<IpAddress>) -> Guard {
        Guard {
            mac: EthernetAddress(shmif.mac().0),
            shmif,
            addrs,
            heard: HashSet::new(),
            last_reset: None,
        }
    }

    /// Whether a frame from another interface has shown that it has `addr`.
    pub fn heard(&self, addr: IpAddress) -> bool {
        self.heard.contains(&addr)
    }

    /// The last TCP reset the stack sent since this was last asked, if
    /// any: a transfer that aborts sends its companion
    /// ([`crate::net::reset::one_before`]).
    pub fn take_last_reset(&mut self) -> Option<Vec<u8>> {
        self.last_reset.take()
    }

    /// Looks at a frame the stack sends: keeps it if it is a TCP reset.
    fn note_sent(&mut self, frame: &[u8]) {
        if reset::is_tcp_reset(frame) {
            self.last_reset = Some(frame.to_vec());
        }
    }

    /// Looks at a received frame: notes who has which address, answers a
    /// probe for one of ours. Returns whether smoltcp should not see the
    /// frame (a solicitation from `::`, which it would answer wrongly).
    fn inspect(&mut self, frame: &[u8]) -> bool {
        match hear(frame) {
            Heard::Has(a, m) if m != self.mac => {
                self.heard.insert(a);
                false
            }
            Heard::Probes(a, m) if m != self.mac && self.addrs.contains(&a) => {
                let answer = match a {
                    IpAddress::Ipv4(ip) => arp_frame(
                        self.mac,
                        m,
                        ArpRepr::EthernetIpv4 {
                            operation: ArpOperation::Reply,
                            source_hardware_addr: self.mac,
                            source_protocol_addr: ip,
                            target_hardware_addr: m,
                            target_protocol_addr: Ipv4Address::UNSPECIFIED,
                        },
                    ),
                    IpAddress::Ipv6(ip) => ndisc_frame(
                        self.mac,
                        ip,
                        ALL_NODES,
                        EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
                        NdiscRepr::NeighborAdvert {
                            flags: NdiscNeighborFlags::OVERRIDE,
                            target_addr: ip,
                            lladdr: Some(self.mac.into()),
                        },
                    ),
                };
                let _ = self.shmif.send(&answer);
                matches!(a, IpAddress::Ipv6(_))
            }
            _ => false,
        }
    }
}

/// A device that lets a [`Guard`] look at every frame before smoltcp, and
/// at every frame smoltcp sends.
pub struct Guarded<'d, D> {
    /// The device underneath.
    pub dev: &'d mut D,
    /// The guard.
    pub guard: &'d mut Guard,
}

/// A received frame, looked at by the guard when smoltcp takes it.
pub struct GuardedRx<'a, R> {
    inner: R,
    guard: &'a mut Guard,
}

impl<R: phy::RxToken> phy::RxToken for GuardedRx<'_, R> {
    fn consume<T, F>(self, f: F) -> T
    where
        F: FnOnce(&[u8]) -> T,
    {
        let guard = self.guard;
        self.inner.consume(|frame| {
            if guard.inspect(frame) {
                // Handed on as an EtherType smoltcp ignores.
                let mut hidden = frame.to_vec();
                hidden[12..14].copy_from_slice(&[0x88, 0xb5]);
                f(&hidden)
            } else {
                f(frame)
            }
        })
    }
}

/// A frame to send, looked at by the guard (if it has one) once smoltcp
/// has written it.
pub struct GuardedTx<'a, T> {
    inner: T,
    guard: Option<&'a mut Guard>,
}

impl<T: phy::TxToken> phy::TxToken for GuardedTx<'_, T> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let guard = self.guard;
        self.inner.consume(len, |buf| {
            let r = f(buf);
            if let Some(g) = guard {
                g.note_sent(buf);
            }
            r
        })
    }

    fn set_meta(&mut self, meta: phy::PacketMeta) {
        self.inner.set_meta(meta);
    }
}

impl<D: Device> Device for Guarded<'_, D> {
    type RxToken<'a>
        = GuardedRx<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = GuardedTx<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(
        &mut self,
        timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (rx, tx) = self.dev.receive(timestamp)?;
        // The guard goes with the receive token. The transmit token beside
        // it carries smoltcp's immediate answer to that frame, which is
        // never an abort's reset, so it is not looked at.
        Some((
            GuardedRx {
                inner: rx,
                guard: &mut *self.guard,
            },
            GuardedTx {
                inner: tx,
                guard: None,
            },
        ))
    }

    fn transmit(&mut self, timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        let tx = self.dev.transmit(timestamp)?;
        Some(GuardedTx {
            inner: tx,
            guard: Some(&mut *self.guard),
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.dev.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_claims_are_heard() {
        let me = EthernetAddress([0xb2, 0xa0, 0, 0, 0, 1]);
        let ip = Ipv4Address::new(10, 0, 0, 1);
        let probe = arp_frame(
            me,
            EthernetAddress::BROADCAST,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: me,
                source_protocol_addr: Ipv4Address::UNSPECIFIED,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: ip,
            },
        );
        assert_eq!(hear(&probe), Heard::Probes(ip.into(), me));
        let ip6 = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        let na = ndisc_frame(
            me,
            ip6,
            ALL_NODES,
            EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
            NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::OVERRIDE,
                target_addr: ip6,
                lladdr: Some(me.into()),
            },
        );
        assert_eq!(hear(&na), Heard::Has(ip6.into(), me));
    }
}
