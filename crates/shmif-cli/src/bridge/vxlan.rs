//! VXLAN (RFC 7348) without I/O: the 8-byte header as a typed view whose
//! accessors never panic, its encoding, the checks a received datagram
//! must pass, and the table of remote tunnel endpoints with the source
//! MAC addresses learnt behind each. `shmif vxlan` does the socket work
//! around it.
//!
//! The header, as the Linux kernel's `drivers/net/vxlan` has it (`struct
//! vxlanhdr`: two big-endian 32-bit words, the first `0x08000000`):
//!
//! ```text
//!  0               1               2               3
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! then the inner Ethernet frame without FCS. Like Linux without the GBP
//! or GPE extensions, a datagram whose I flag is clear or whose other
//! flag or reserved bits are set is dropped (RFC 7348 says receivers
//! ignore the reserved bits; Linux treats them as a malformed packet, and
//! interoperating with it means sending them as zero either way).

use super::fdb::{Fdb, Moved};
use shmif::MacAddr;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The IANA port for VXLAN (`dstport 4789` on Linux).
pub const IANA_PORT: u16 = 4789;
/// The I flag: the VNI is valid. The only flag a datagram may carry.
pub const FLAG_VNI: u8 = 0x08;
/// Bytes VXLAN adds to a frame on an IPv4 underlay, counting the outer
/// Ethernet header: 14 + 20 + 8 + 8.
pub const OVERHEAD_V4: usize = 50;
/// Bytes VXLAN adds to a frame on an IPv6 underlay: 14 + 40 + 8 + 8.
pub const OVERHEAD_V6: usize = 70;
/// Linux's default FDB ageing time (`ageing 300`).
#[cfg(test)]
pub const AGEING: Duration = Duration::from_secs(300);
/// How many remote endpoints are remembered at most (configured ones
/// count too); a flood of datagrams from made-up sources cannot grow the
/// table further.
pub const MAX_REMOTES: usize = 1024;

/// The IP MTU an underlay needs to carry `frame`-byte Ethernet frames in
/// VXLAN without fragmenting: the frame, the VXLAN and UDP headers, and
/// the outer IP header (the outer Ethernet header is not in the MTU).
pub fn needed_mtu(frame: usize, ipv6: bool) -> usize {
    frame + if ipv6 { OVERHEAD_V6 } else { OVERHEAD_V4 } - 14
}

/// A VXLAN Network Identifier: 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

impl Vni {
    /// The largest VNI, 2^24 - 1.
    pub const MAX: u32 = 0x00ff_ffff;

    /// The VNI `n`, if it fits in 24 bits.
    pub fn new(n: u32) -> Option<Vni> {
        (n <= Self::MAX).then_some(Vni(n))
    }
}

impl std::fmt::Display for Vni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A typed view over the first [`HEADER_LEN`] bytes of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    bytes: &'a [u8; HEADER_LEN],
}

impl<'a> Header<'a> {
    /// The header at the start of `datagram`; `None` if it is shorter
    /// than a header.
    pub fn new(datagram: &'a [u8]) -> Option<Header<'a>> {
        let bytes = datagram.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header { bytes })
    }

    /// The flags byte (`0x08` in a valid header).
    pub fn flags(&self) -> u8 {
        self.bytes[0]
    }

    /// Whether the I flag (the VNI is valid) is set.
    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_VNI != 0
    }

    /// Whether every flag bit but I and every reserved bit is zero.
    pub fn reserved_clear(&self) -> bool {
        self.flags() & !FLAG_VNI == 0 && self.bytes[1..4] == [0; 3] && self.bytes[7] == 0
    }

    /// The 24-bit VNI field (meaningful when [`Header::vni_valid`]).
    pub fn vni(&self) -> Vni {
        let b = self.bytes;
        Vni(u32::from_be_bytes([0, b[4], b[5], b[6]]))
    }
}

/// The header for frames of `vni`: I flag set, reserved bits zero.
pub fn encode(vni: Vni) -> [u8; HEADER_LEN] {
    let v = vni.0.to_be_bytes();
    [FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// Why a received datagram carries no frame for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Shorter than a header plus an Ethernet header (the length).
    Truncated(usize),
    /// The I flag clear, or other flag or reserved bits set (the flags).
    BadFlags(u8),
    /// A valid header for another network.
    OtherVni(Vni),
}

/// The inner frame of a datagram for `vni`, or why there is none.
pub fn decode(datagram: &[u8], vni: Vni) -> Result<&[u8], Reject> {
    let h = Header::new(datagram).ok_or(Reject::Truncated(datagram.len()))?;
    if !h.vni_valid() || !h.reserved_clear() {
        return Err(Reject::BadFlags(h.flags()));
    }
    if h.vni() != vni {
        return Err(Reject::OtherVni(h.vni()));
    }
    let frame = &datagram[HEADER_LEN..];
    if frame.len() < shmif::wire::MIN_FRAME_LEN {
        return Err(Reject::Truncated(datagram.len()));
    }
    Ok(frame)
}

/// Which datagrams are taken in and where floods go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Take datagrams from any source, remembering it as a remote (a
    /// multicast group, or `--learn-remotes`); otherwise only from the
    /// configured remotes' addresses.
    pub accept_any: bool,
    /// Flood to remotes that were learnt too, not only to the configured
    /// ones (head-end replication to every peer seen; off for a group,
    /// where the group itself reaches everyone).
    pub flood_learnt: bool,
}

#[derive(Debug, Clone, Copy)]
struct Remote {
    addr: SocketAddr,
    seen: Option<Instant>,
    configured: bool,
}

/// A received datagram's source as a remote of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// Its index in the table (what MAC addresses are learnt behind).
    pub index: usize,
    /// Whether it was new (learnt from this datagram).
    pub new: bool,
}

/// The remote tunnel endpoints and, for each source MAC address, the one
/// it lives behind (learnt from received datagrams, ageing like Linux's
/// FDB). Pure: the caller passes the time.
#[derive(Debug)]
pub struct Remotes {
    remotes: Vec<Remote>,
    fdb: Fdb,
    policy: Policy,
    port: u16,
    ageing: Duration,
}

impl Remotes {
    /// A table with the `configured` remotes (flooded to; a multicast
    /// group is one), learnt remotes being reached at `port`.
    pub fn new(configured: &[SocketAddr], policy: Policy, port: u16, ageing: Duration) -> Self {
        Remotes {
            remotes: configured
                .iter()
                .map(|&addr| Remote {
                    addr,
                    seen: None,
                    configured: true,
                })
                .collect(),
            fdb: Fdb::new(ageing),
            policy,
            port,
            ageing,
        }
    }

    /// The address of remote `index`.
    pub fn addr(&self, index: usize) -> Option<SocketAddr> {
        self.remotes.get(index).map(|r| r.addr)
    }

    /// How many remotes the table has (configured and learnt).
    pub fn len(&self) -> usize {
        self.remotes.len()
    }

    /// Which remote a datagram from `from` comes from: a configured one
    /// (same address and port, or else the same address: Linux sends from
    /// a port of its choosing), or with [`Policy::accept_any`] a learnt
    /// one, reached back at the table's port as Linux does. `None`: not
    /// accepted (or the table is full).
    pub fn source(&mut self, from: SocketAddr, now: Instant) -> Option<Source> {
        let index = self
            .remotes
            .iter()
            .position(|r| r.addr == from)
            .or_else(|| self.remotes.iter().position(|r| r.addr.ip() == from.ip()));
        if let Some(index) = index {
            self.remotes[index].seen = Some(now);
            return Some(Source { index, new: false });
        }
        if !self.policy.accept_any {
            return None;
        }
        let remote = Remote {
            addr: SocketAddr::new(from.ip(), self.port),
            seen: Some(now),
            configured: false,
        };
        // Reuse the slot of a learnt remote that has gone quiet.
        let stale = self.remotes.iter().position(|r| {
            !r.configured && r.seen.is_none_or(|s| now.duration_since(s) >= self.ageing)
        });
        let index = match stale {
            Some(i) => {
                self.fdb.forget_port(i);
                self.remotes[i] = remote;
                i
            }
            None if self.remotes.len() < MAX_REMOTES => {
                self.remotes.push(remote);
                self.remotes.len() - 1
            }
            None => return None,
        };
        Some(Source { index, new: true })
    }

    /// Records that `mac` sent from behind remote `index`; where it was
    /// before if it moved.
    pub fn learn(&mut self, mac: MacAddr, index: usize, now: Instant) -> Option<Moved> {
        self.fdb.learn(mac, index, now)
    }

    /// The one remote a frame for `dst` goes to, if `dst` was learnt and
    /// is fresh; `None`: flood it.
    pub fn unicast(&self, dst: MacAddr, now: Instant) -> Option<usize> {
        self.fdb.lookup(dst, now)
    }

    /// The remotes a broadcast, multicast or unknown unicast frame goes
    /// to: the configured ones, and with [`Policy::flood_learnt`] the
    /// learnt ones seen within the ageing time.
    pub fn flood(&self, now: Instant) -> impl Iterator<Item = usize> + '_ {
        self.remotes.iter().enumerate().filter_map(move |(i, r)| {
            let fresh = r.seen.is_some_and(|s| now.duration_since(s) < self.ageing);
            (r.configured || (self.policy.flood_learnt && fresh)).then_some(i)
        })
    }

    /// Drops learnt addresses not seen for the ageing time.
    pub fn expire(&mut self, now: Instant) {
        self.fdb.expire(now);
    }

    /// How many MAC addresses it knows.
    pub fn macs(&self) -> usize {
        self.fdb.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vni(n: u32) -> Vni {
        Vni::new(n).unwrap()
    }

    fn frame(dst: u8, src: u8) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, dst, 0x02, 0, 0, 0, 0, src, 0x88, 0xb5];
        f.extend_from_slice(b"payload");
        f
    }

    #[test]
    fn the_header_is_the_one_linux_sends() {
        // Linux: vx_flags = htonl(0x08000000), vx_vni = htonl(vni << 8).
        assert_eq!(encode(vni(42)), [0x08, 0, 0, 0, 0, 0, 42, 0]);
        assert_eq!(encode(vni(0x12_3456)), [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(encode(vni(Vni::MAX))[4..], [0xff, 0xff, 0xff, 0]);
        assert_eq!(Vni::new(Vni::MAX + 1), None);
        let h = encode(vni(7));
        let v = Header::new(&h).unwrap();
        assert!(v.vni_valid() && v.reserved_clear());
        assert_eq!((v.flags(), v.vni()), (0x08, vni(7)));
    }

    #[test]
    fn a_datagram_round_trips() {
        let mut d = encode(vni(42)).to_vec();
        d.extend_from_slice(&frame(1, 2));
        assert_eq!(decode(&d, vni(42)), Ok(&frame(1, 2)[..]));
    }

    #[test]
    fn bad_datagrams_are_rejected_never_a_panic() {
        assert_eq!(decode(&[], vni(1)), Err(Reject::Truncated(0)));
        assert_eq!(decode(&[8, 0, 0], vni(1)), Err(Reject::Truncated(3)));
        assert!(Header::new(&[8; 7]).is_none());
        // A header alone, or with less than an Ethernet header.
        let h = encode(vni(1));
        assert_eq!(decode(&h, vni(1)), Err(Reject::Truncated(8)));
        let mut short = h.to_vec();
        short.extend_from_slice(&[0; 13]);
        assert_eq!(decode(&short, vni(1)), Err(Reject::Truncated(21)));
        let mut d = h.to_vec();
        d.extend_from_slice(&frame(1, 2));
        assert_eq!(decode(&d, vni(2)), Err(Reject::OtherVni(vni(1))));
        for (at, v) in [(0, 0x00), (0, 0x0c), (0, 0x88), (1, 1), (3, 0x80), (7, 1)] {
            let mut bad = d.clone();
            bad[at] = v;
            assert!(
                matches!(decode(&bad, vni(1)), Err(Reject::BadFlags(_))),
                "byte {at} = {v:#x}"
            );
        }
        // Every short prefix and a sweep of first bytes: no panic.
        for n in 0..d.len() {
            let _ = decode(&d[..n], vni(1));
        }
        for b in 0..=255u8 {
            let mut x = d.clone();
            x[0] = b;
            let _ = decode(&x, vni(1));
        }
    }

    #[test]
    fn needed_mtus() {
        assert_eq!(needed_mtu(1514, false), 1550);
        assert_eq!(needed_mtu(1514, true), 1570);
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn configured_remotes_only_unless_told_otherwise() {
        let t = Instant::now();
        let strict = Policy {
            accept_any: false,
            flood_learnt: true,
        };
        let mut r = Remotes::new(
            &[a("10.0.0.2:4789"), a("10.0.0.3:5000")],
            strict,
            4789,
            AGEING,
        );
        // Linux sends from a hashed source port: the address is enough.
        assert_eq!(
            r.source(a("10.0.0.2:40000"), t),
            Some(Source {
                index: 0,
                new: false
            })
        );
        assert_eq!(r.source(a("10.0.0.3:5000"), t).unwrap().index, 1);
        assert_eq!(r.source(a("10.0.0.9:4789"), t), None);
        assert_eq!(r.flood(t).collect::<Vec<_>>(), vec![0, 1]);

        let open = Policy {
            accept_any: true,
            flood_learnt: true,
        };
        let mut r = Remotes::new(&[a("10.0.0.2:4789")], open, 4789, AGEING);
        let s = r.source(a("10.0.0.9:33333"), t).unwrap();
        assert_eq!(
            s,
            Source {
                index: 1,
                new: true
            }
        );
        assert_eq!(r.addr(1), Some(a("10.0.0.9:4789")), "reached at the port");
        assert_eq!(r.flood(t).collect::<Vec<_>>(), vec![0, 1]);
        // Quiet for the ageing time: no longer flooded to, slot reused.
        let later = t + AGEING;
        assert_eq!(r.flood(later).collect::<Vec<_>>(), vec![0]);
        let s = r.source(a("10.0.0.10:1"), later).unwrap();
        assert_eq!(s.index, 1);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_group_floods_to_itself_only() {
        let t = Instant::now();
        let group = Policy {
            accept_any: true,
            flood_learnt: false,
        };
        let mut r = Remotes::new(&[a("239.1.1.1:4789")], group, 4789, AGEING);
        let s = r.source(a("10.0.0.5:41000"), t).unwrap();
        assert_eq!(r.flood(t).collect::<Vec<_>>(), vec![0]);
        r.learn(MacAddr([2, 0, 0, 0, 0, 5]), s.index, t);
        assert_eq!(r.unicast(MacAddr([2, 0, 0, 0, 0, 5]), t), Some(s.index));
    }

    #[test]
    fn macs_are_learnt_per_remote_and_age() {
        let t = Instant::now();
        let p = Policy {
            accept_any: false,
            flood_learnt: true,
        };
        let mut r = Remotes::new(&[a("[fd00::2]:4789"), a("[fd00::3]:4789")], p, 4789, AGEING);
        let m = MacAddr([2, 0, 0, 0, 0, 1]);
        assert_eq!(r.unicast(m, t), None);
        assert_eq!(r.learn(m, 1, t), None);
        assert_eq!(r.unicast(m, t), Some(1));
        assert_eq!(r.unicast(MacAddr::BROADCAST, t), None);
        assert_eq!(r.unicast(m, t + AGEING), None, "aged out");
        let moved = r.learn(m, 0, t + Duration::from_millis(1)).unwrap();
        assert!(moved.flapping && moved.from == 1);
        r.expire(t + AGEING * 2);
        assert_eq!(r.macs(), 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let t = Instant::now();
        let p = Policy {
            accept_any: true,
            flood_learnt: true,
        };
        let mut r = Remotes::new(&[], p, 4789, AGEING);
        for i in 0..(MAX_REMOTES as u32 + 5) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            let got = r.source(SocketAddr::new(ip.into(), 1), t);
            assert_eq!(got.is_some(), (i as usize) < MAX_REMOTES);
        }
        assert_eq!(r.len(), MAX_REMOTES);
    }
}
