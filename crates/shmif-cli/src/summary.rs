//! One-line, tcpdump-like summaries of Ethernet frames.
//!
//! [`summarize`] decodes a frame with `etherparse` (in its lax mode, so a
//! truncated frame still shows what it has) and describes it in one line:
//!
//! ```text
//! b2:a0:6d:14:77:36 > ff:ff:ff:ff:ff:ff, ARP, length 42: who-has 10.0.0.2 tell 10.0.0.1
//! b2:a0:6d:14:77:36 > b2:a0:1c:2e:0f:99, IPv4, length 98: 10.0.0.1 > 10.0.0.2: ICMP echo request, id 7, seq 0, length 64
//! ```
//!
//! Bus contents are untrusted input: the summary never panics, whatever the
//! bytes, and says "truncated" or "malformed" where decoding stops.

use etherparse::{
    ArpOperation, EtherType, Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, IpNumber,
    LaxIpPayloadSlice, LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, TcpSlice, TransportSlice,
    UdpSlice,
};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of an Ethernet II header: two MACs and the EtherType.
const ETH_HEADER_LEN: usize = 14;
/// How many payload bytes an unknown protocol's summary shows in hex.
const HEX_PREVIEW: usize = 16;

/// Summarizes an Ethernet frame (no FCS) in one line:
/// `src > dst, <EtherType name or 0xXXXX>, length N: <description>`.
///
/// The description decodes ARP, IPv4 and IPv6 with ICMP, ICMPv6 (echo,
/// neighbour discovery), TCP and UDP; other EtherTypes show the first bytes
/// of their payload in hex. Never panics: a frame too short for an Ethernet
/// header, or whose inner headers are cut or malformed, gets a best-effort
/// description saying so.
pub fn summarize(frame: &[u8]) -> String {
    if frame.len() < ETH_HEADER_LEN {
        return format!(
            "truncated Ethernet frame, length {}: {}",
            frame.len(),
            hex_preview(frame)
        );
    }
    let dst = mac(&frame[0..6]);
    let src = mac(&frame[6..12]);
    let ether_type = u16::from_be_bytes([frame[12], frame[13]]);
    let head = format!(
        "{src} > {dst}, {}, length {}",
        ether_type_name(ether_type),
        frame.len()
    );
    format!("{head}: {}", describe(frame, ether_type))
}

/// The line `shmif listen` and `shmif capture` print for a frame: the
/// time ([`clock`]) and the summary ([`summarize`]).
pub fn frame_line(sec: u32, usec: u32, frame: &[u8]) -> String {
    format!("{} {}", clock(sec, usec), summarize(frame))
}

/// A frame's decoded fields, for the `--json` output of `dump`, `listen`
/// and `capture` (one object per frame). Fields a frame does not have
/// are left out.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Fields {
    /// The frame header's timestamp: seconds, microseconds.
    pub sec: u32,
    /// Microseconds of the timestamp.
    pub usec: u32,
    /// The frame's length, Ethernet header included.
    pub len: usize,
    /// Source MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// Destination MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// The EtherType's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<u16>,
    /// What it carries: `ARP`, `IPv4`, `IPv6`, or the EtherType's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Source IP address (IP), or ARP's sender address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_src: Option<IpAddr>,
    /// Destination IP address (IP), or ARP's target address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_dst: Option<IpAddr>,
    /// The IP protocol: `TCP`, `UDP`, `ICMP`, `ICMP6`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// TCP or UDP source port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    /// TCP or UDP destination port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// TCP flags as tcpdump writes them (`S.`, `P.`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    /// The one-line summary ([`summarize`]).
    pub summary: String,
}

/// A frame's decoded fields (see [`Fields`]); never panics.
pub fn fields(sec: u32, usec: u32, frame: &[u8]) -> Fields {
    let mut f = Fields {
        sec,
        usec,
        len: frame.len(),
        summary: summarize(frame),
        ..Fields::default()
    };
    if frame.len() < ETH_HEADER_LEN {
        return f;
    }
    f.dst = Some(mac(&frame[0..6]));
    f.src = Some(mac(&frame[6..12]));
    let ether_type = u16::from_be_bytes([frame[12], frame[13]]);
    f.ethertype = Some(ether_type);
    f.kind = Some(ether_type_name(ether_type));
    let Ok(p) = LaxSlicedPacket::from_ethernet(frame) else {
        return f;
    };
    let proto = match &p.net {
        Some(LaxNetSlice::Arp(arp)) => {
            if let Ok(a) = etherparse::ArpPacket::from_slice(arp.slice())
                .map_err(drop)
                .and_then(|a| a.try_eth_ipv4().map_err(drop))
            {
                f.ip_src = Some(IpAddr::V4(Ipv4Addr::from(a.sender_ipv4)));
                f.ip_dst = Some(IpAddr::V4(Ipv4Addr::from(a.target_ipv4)));
            }
            None
        }
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            f.ip_src = Some(IpAddr::V4(Ipv4Addr::from(h.source())));
            f.ip_dst = Some(IpAddr::V4(Ipv4Addr::from(h.destination())));
            Some(ip.payload().ip_number)
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            f.ip_src = Some(IpAddr::V6(Ipv6Addr::from(h.source())));
            f.ip_dst = Some(IpAddr::V6(Ipv6Addr::from(h.destination())));
            Some(ip.payload().ip_number)
        }
        None => None,
    };
    f.protocol = proto.map(proto_name);
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            f.src_port = Some(t.source_port());
            f.dst_port = Some(t.destination_port());
            f.tcp_flags = Some(tcp_flags(t).trim_matches(['[', ']']).to_string());
        }
        Some(TransportSlice::Udp(u)) => {
            f.src_port = Some(u.source_port());
            f.dst_port = Some(u.destination_port());
        }
        _ => {}
    }
    f
}

/// The JSON line for a frame: [`fields`] as one object.
pub fn json_line(sec: u32, usec: u32, frame: &[u8]) -> String {
    serde_json::to_string(&fields(sec, usec, frame)).unwrap_or_default()
}

/// `HH:MM:SS.uuuuuu` of a bus timestamp, UTC. A microseconds field that is
/// out of range (a hostile or broken peer) is shown as it is.
pub fn clock(sec: u32, usec: u32) -> String {
    let day = sec % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        day / 3600,
        day % 3600 / 60,
        day % 60,
        usec
    )
}

/// The name tcpdump gives an EtherType, or its value as `0xXXXX`. Values up
/// to 1500 are an IEEE 802.3 length field, not a type.
fn ether_type_name(t: u16) -> String {
    let name = match EtherType(t) {
        EtherType::IPV4 => "IPv4",
        EtherType::IPV6 => "IPv6",
        EtherType::ARP => "ARP",
        EtherType::VLAN_TAGGED_FRAME => "802.1Q",
        EtherType::PROVIDER_BRIDGING => "802.1Q-QinQ",
        EtherType::VLAN_DOUBLE_TAGGED_FRAME => "802.1Q-9100",
        EtherType::MACSEC => "MACsec",
        EtherType::WAKE_ON_LAN => "Wake-on-LAN",
        _ if t <= 1500 => return format!("802.3 length {t}"),
        _ => return format!("0x{t:04x}"),
    };
    name.to_string()
}

fn mac(b: &[u8]) -> String {
    let mut s = String::with_capacity(17);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Up to [`HEX_PREVIEW`] bytes in hex, space-separated, with "..." if more.
fn hex_preview(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, x) in b.iter().take(HEX_PREVIEW).enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{x:02x}");
    }
    if b.len() > HEX_PREVIEW {
        s.push_str(" ...");
    }
    s
}

/// Describes what follows the Ethernet header.
fn describe(frame: &[u8], ether_type: u16) -> String {
    let payload = &frame[ETH_HEADER_LEN..];
    let Ok(p) = LaxSlicedPacket::from_ethernet(frame) else {
        // Only a frame shorter than an Ethernet header fails here, and those
        // were handled by the caller.
        return format!("{} bytes: {}", payload.len(), hex_preview(payload));
    };
    let mut out = String::new();
    for ext in &p.link_exts {
        match ext {
            LaxLinkExtSlice::Vlan(v) => {
                let _ = write!(
                    out,
                    "vlan {}, {}: ",
                    v.vlan_identifier().value(),
                    ether_type_name(v.ether_type().0)
                );
            }
            LaxLinkExtSlice::Macsec(_) => out.push_str("MACsec: "),
        }
    }
    match &p.net {
        Some(LaxNetSlice::Arp(arp)) => out.push_str(&describe_arp(arp.slice())),
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let src = IpAddr::V4(Ipv4Addr::from(h.source()));
            let dst = IpAddr::V4(Ipv4Addr::from(h.destination()));
            out.push_str(&describe_ip(src, dst, ip.payload(), p.transport.as_ref()));
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let src = IpAddr::V6(Ipv6Addr::from(h.source()));
            let dst = IpAddr::V6(Ipv6Addr::from(h.destination()));
            out.push_str(&describe_ip(src, dst, ip.payload(), p.transport.as_ref()));
        }
        None => match &p.stop_err {
            Some((_, layer)) => {
                let _ = write!(
                    out,
                    "truncated or malformed {layer}: {}",
                    hex_preview(payload)
                );
            }
            None => {
                // An EtherType etherparse does not decode: show the bytes.
                let inner = inner_payload(frame, &p).unwrap_or(payload);
                if ether_type <= 1500 {
                    let _ = write!(out, "802.3 frame, {} bytes: ", inner.len());
                } else {
                    let _ = write!(out, "{} bytes: ", inner.len());
                }
                out.push_str(&hex_preview(inner));
            }
        },
    }
    out
}

/// The payload after any VLAN tags, for EtherTypes that are not decoded.
fn inner_payload<'a>(frame: &'a [u8], p: &LaxSlicedPacket<'a>) -> Option<&'a [u8]> {
    let skip: usize = p.link_exts.iter().map(|e| e.header_len()).sum();
    frame.get(ETH_HEADER_LEN + skip..)
}

/// ARP in tcpdump's words: `who-has T tell S`, `S is-at MAC`.
fn describe_arp(raw: &[u8]) -> String {
    let Ok(arp) = etherparse::ArpPacket::from_slice(raw) else {
        return format!("truncated ARP: {}", hex_preview(raw));
    };
    match arp.try_eth_ipv4() {
        Ok(a) => {
            let s = Ipv4Addr::from(a.sender_ipv4);
            let t = Ipv4Addr::from(a.target_ipv4);
            match a.operation {
                ArpOperation::REQUEST => format!("who-has {t} tell {s}"),
                ArpOperation::REPLY => format!("{s} is-at {}", mac(&a.sender_mac)),
                op => format!(
                    "operation {} from {s} ({}) to {t}",
                    op.0,
                    mac(&a.sender_mac)
                ),
            }
        }
        Err(_) => format!(
            "hardware type {}, protocol 0x{:04x}, operation {}",
            arp.hw_addr_type.0, arp.proto_addr_type.0, arp.operation.0
        ),
    }
}

/// `addr.port` as tcpdump writes it (also for IPv6).
fn endpoint(a: IpAddr, port: u16) -> String {
    format!("{a}.{port}")
}

/// An IP packet: addresses, then the transport's description.
fn describe_ip(
    src: IpAddr,
    dst: IpAddr,
    payload: &LaxIpPayloadSlice<'_>,
    transport: Option<&TransportSlice<'_>>,
) -> String {
    let proto = payload.ip_number;
    let mut s = match transport {
        Some(TransportSlice::Tcp(t)) => format!(
            "{} > {}: {}",
            endpoint(src, t.source_port()),
            endpoint(dst, t.destination_port()),
            describe_tcp(t)
        ),
        Some(TransportSlice::Udp(u)) => format!(
            "{} > {}: {}",
            endpoint(src, u.source_port()),
            endpoint(dst, u.destination_port()),
            describe_udp(u)
        ),
        Some(TransportSlice::Icmpv4(i)) => format!("{src} > {dst}: {}", describe_icmpv4(i)),
        Some(TransportSlice::Icmpv6(i)) => format!("{src} > {dst}: {}", describe_icmpv6(i)),
        Some(TransportSlice::Igmp(_)) => format!("{src} > {dst}: IGMP"),
        None if payload.fragmented => format!(
            "{src} > {dst}: {} fragment, length {}",
            proto_name(proto),
            payload.payload.len()
        ),
        None if is_transport(proto) => format!(
            "{src} > {dst}: truncated or malformed {}, {} bytes",
            proto_name(proto),
            payload.payload.len()
        ),
        None => format!(
            "{src} > {dst}: {}, length {}",
            proto_name(proto),
            payload.payload.len()
        ),
    };
    if payload.incomplete {
        s.push_str(" (truncated)");
    }
    s
}

fn is_transport(p: IpNumber) -> bool {
    matches!(
        p,
        IpNumber::TCP | IpNumber::UDP | IpNumber::ICMP | IpNumber::IPV6_ICMP
    )
}

fn proto_name(p: IpNumber) -> String {
    match p {
        IpNumber::TCP => "TCP".into(),
        IpNumber::UDP => "UDP".into(),
        IpNumber::ICMP => "ICMP".into(),
        IpNumber::IPV6_ICMP => "ICMP6".into(),
        other => match other.keyword_str() {
            Some(k) => k.to_string(),
            None => format!("ip-proto-{}", other.0),
        },
    }
}

/// TCP flags as tcpdump prints them: `[S]`, `[S.]`, `[P.]`, `[F.]`, `[.]`.
fn tcp_flags(t: &TcpSlice<'_>) -> String {
    let mut f = String::new();
    for (on, c) in [
        (t.fin(), 'F'),
        (t.syn(), 'S'),
        (t.rst(), 'R'),
        (t.psh(), 'P'),
        (t.ack(), '.'),
        (t.urg(), 'U'),
        (t.ece(), 'E'),
        (t.cwr(), 'W'),
    ] {
        if on {
            f.push(c);
        }
    }
    if f.is_empty() {
        f.push_str("none");
    }
    format!("[{f}]")
}

fn describe_tcp(t: &TcpSlice<'_>) -> String {
    let mut s = format!("Flags {}, seq {}", tcp_flags(t), t.sequence_number());
    if t.ack() {
        let _ = write!(s, ", ack {}", t.acknowledgment_number());
    }
    let _ = write!(s, ", win {}, length {}", t.window_size(), t.payload().len());
    s
}

fn describe_udp(u: &UdpSlice<'_>) -> String {
    format!("UDP, length {}", u.payload().len())
}

fn describe_icmpv4(i: &Icmpv4Slice<'_>) -> String {
    let len = i.payload().len();
    match i.icmp_type() {
        Icmpv4Type::EchoRequest(e) => format!(
            "ICMP echo request, id {}, seq {}, length {}",
            e.id,
            e.seq,
            i.slice().len()
        ),
        Icmpv4Type::EchoReply(e) => format!(
            "ICMP echo reply, id {}, seq {}, length {}",
            e.id,
            e.seq,
            i.slice().len()
        ),
        Icmpv4Type::DestinationUnreachable(h) => {
            format!("ICMP destination unreachable ({h:?}), length {len}")
        }
        Icmpv4Type::TimeExceeded(c) => format!("ICMP time exceeded ({c:?}), length {len}"),
        Icmpv4Type::Redirect(_) => format!("ICMP redirect, length {len}"),
        Icmpv4Type::ParameterProblem(_) => format!("ICMP parameter problem, length {len}"),
        Icmpv4Type::TimestampRequest(_) => "ICMP time stamp request".into(),
        Icmpv4Type::TimestampReply(_) => "ICMP time stamp reply".into(),
        Icmpv4Type::Unknown {
            type_u8, code_u8, ..
        } => format!("ICMP type {type_u8}, code {code_u8}, length {len}"),
    }
}

/// The IPv6 address at the start of a neighbour discovery message's body.
fn nd_target(body: &[u8]) -> String {
    match body.get(0..16).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        Some(a) => Ipv6Addr::from(a).to_string(),
        None => "(truncated)".into(),
    }
}

fn describe_icmpv6(i: &Icmpv6Slice<'_>) -> String {
    let body = i.payload();
    let len = i.slice().len();
    match i.icmp_type() {
        Icmpv6Type::EchoRequest(e) => format!(
            "ICMP6, echo request, id {}, seq {}, length {len}",
            e.id, e.seq
        ),
        Icmpv6Type::EchoReply(e) => {
            format!(
                "ICMP6, echo reply, id {}, seq {}, length {len}",
                e.id, e.seq
            )
        }
        Icmpv6Type::NeighborSolicitation => {
            format!("ICMP6, neighbor solicitation, who has {}", nd_target(body))
        }
        Icmpv6Type::NeighborAdvertisement(_) => {
            format!("ICMP6, neighbor advertisement, tgt is {}", nd_target(body))
        }
        Icmpv6Type::RouterSolicitation => format!("ICMP6, router solicitation, length {len}"),
        Icmpv6Type::RouterAdvertisement(_) => {
            format!("ICMP6, router advertisement, length {len}")
        }
        Icmpv6Type::Redirect => format!("ICMP6, redirect, length {len}"),
        Icmpv6Type::DestinationUnreachable(c) => {
            format!("ICMP6, destination unreachable ({c:?}), length {len}")
        }
        Icmpv6Type::PacketTooBig { mtu } => format!("ICMP6, packet too big, mtu {mtu}"),
        Icmpv6Type::TimeExceeded(c) => format!("ICMP6, time exceeded ({c:?}), length {len}"),
        Icmpv6Type::ParameterProblem(_) => format!("ICMP6, parameter problem, length {len}"),
        Icmpv6Type::Unknown {
            type_u8, code_u8, ..
        } => format!("ICMP6, type {type_u8}, code {code_u8}, length {len}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{ArpHardwareId, PacketBuilder};

    const A: [u8; 6] = [0xb2, 0xa0, 0x6d, 0x14, 0x77, 0x36];
    const B: [u8; 6] = [0xb2, 0xa0, 0x1c, 0x2e, 0x0f, 0x99];
    const BCAST: [u8; 6] = [0xff; 6];
    const IP_A: [u8; 4] = [10, 0, 0, 1];
    const IP_B: [u8; 4] = [10, 0, 0, 2];

    /// The frame a packet builder writes with a payload.
    macro_rules! frame {
        ($builder:expr, $payload:expr) => {{
            let mut v = Vec::new();
            $builder.write(&mut v, $payload).unwrap();
            v
        }};
    }

    /// Asserts that `frame`'s summary ends with `want`.
    fn assert_ends_with(frame: &[u8], want: &str) {
        let s = summarize(frame);
        assert!(s.ends_with(want), "{s}");
    }

    /// Asserts that `frame`'s summary contains `want`.
    fn assert_contains(frame: &[u8], want: &str) {
        let s = summarize(frame);
        assert!(s.contains(want), "{s}");
    }

    fn v6(last: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[0] = 0xfe;
        a[1] = 0x80;
        a[15] = last;
        a
    }

    fn arp(op: ArpOperation, sender: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
        let dst = if op == ArpOperation::REQUEST {
            BCAST
        } else {
            tha
        };
        let pkt = etherparse::ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            op,
            &sender,
            &spa,
            &tha,
            &tpa,
        )
        .unwrap();
        let b = PacketBuilder::ethernet2(sender, dst).arp(pkt);
        let mut v = Vec::new();
        b.write(&mut v).unwrap();
        v
    }

    #[test]
    fn clock_format() {
        assert_eq!(clock(1, 20_008), "00:00:01.020008");
        assert_eq!(clock(86_400 + 3_723, 5), "01:02:03.000005");
        assert_eq!(clock(u32::MAX, 999_999), "06:28:15.999999");
        assert_eq!(clock(0, 4_000_000), "00:00:00.4000000");
    }

    #[test]
    fn arp_request_and_reply() {
        let req = arp(ArpOperation::REQUEST, A, IP_A, [0; 6], IP_B);
        assert_eq!(req.len(), 42);
        assert_eq!(
            summarize(&req),
            "b2:a0:6d:14:77:36 > ff:ff:ff:ff:ff:ff, ARP, length 42: who-has 10.0.0.2 tell 10.0.0.1"
        );
        let rep = arp(ArpOperation::REPLY, B, IP_B, A, IP_A);
        assert_eq!(
            summarize(&rep),
            "b2:a0:1c:2e:0f:99 > b2:a0:6d:14:77:36, ARP, length 42: 10.0.0.2 is-at b2:a0:1c:2e:0f:99"
        );
    }

    #[test]
    fn icmp_echo_request_and_reply() {
        let v = frame!(
            PacketBuilder::ethernet2(A, B)
                .ipv4(IP_A, IP_B, 64)
                .icmpv4_echo_request(7, 3),
            &[0u8; 56]
        );
        assert_eq!(
            summarize(&v),
            "b2:a0:6d:14:77:36 > b2:a0:1c:2e:0f:99, IPv4, length 98: \
             10.0.0.1 > 10.0.0.2: ICMP echo request, id 7, seq 3, length 64"
        );
        let v = frame!(
            PacketBuilder::ethernet2(B, A)
                .ipv4(IP_B, IP_A, 64)
                .icmpv4_echo_reply(7, 3),
            &[0u8; 56]
        );
        assert_ends_with(
            &v,
            "10.0.0.2 > 10.0.0.1: ICMP echo reply, id 7, seq 3, length 64",
        );
    }

    #[test]
    fn tcp_flags_like_tcpdump() {
        let build = |f: &dyn Fn(
            etherparse::PacketBuilderStep<etherparse::TcpHeader>,
        )
            -> etherparse::PacketBuilderStep<etherparse::TcpHeader>,
                     payload: &[u8]| {
            let b = PacketBuilder::ethernet2(A, B)
                .ipv4(IP_A, IP_B, 64)
                .tcp(65000, 80, 1000, 32768);
            summarize(&frame!(f(b), payload))
        };
        let syn = build(&|b| b.syn(), &[]);
        assert!(
            syn.ends_with("10.0.0.1.65000 > 10.0.0.2.80: Flags [S], seq 1000, win 32768, length 0"),
            "{syn}"
        );
        let synack = build(&|b| b.syn().ack(5), &[]);
        assert!(
            synack.contains("Flags [S.], seq 1000, ack 5, win 32768"),
            "{synack}"
        );
        let ack = build(&|b| b.ack(5), &[]);
        assert!(ack.contains("Flags [.], seq 1000, ack 5"), "{ack}");
        let push = build(&|b| b.psh().ack(5), b"GET / HTTP/1.0\r\n\r\n");
        assert!(push.contains("Flags [P.]"), "{push}");
        assert!(push.ends_with("length 18"), "{push}");
        let fin = build(&|b| b.fin().ack(5), &[]);
        assert!(fin.contains("Flags [F.]"), "{fin}");
        let none = build(&|b| b, &[]);
        assert!(none.contains("Flags [none]"), "{none}");
    }

    #[test]
    fn udp_ports_and_length() {
        let v = frame!(
            PacketBuilder::ethernet2(A, B)
                .ipv4(IP_A, IP_B, 64)
                .udp(5353, 7),
            b"hello"
        );
        assert_eq!(
            summarize(&v),
            "b2:a0:6d:14:77:36 > b2:a0:1c:2e:0f:99, IPv4, length 47: \
             10.0.0.1.5353 > 10.0.0.2.7: UDP, length 5"
        );
    }

    #[test]
    fn ipv6_udp_and_icmpv6() {
        let v = frame!(
            PacketBuilder::ethernet2(A, B)
                .ipv6(v6(1), v6(2), 64)
                .udp(1, 2),
            b"xy"
        );
        assert_contains(&v, "IPv6, length 64: fe80::1.1 > fe80::2.2: UDP, length 2");

        let v = frame!(
            PacketBuilder::ethernet2(A, B)
                .ipv6(v6(1), v6(2), 64)
                .icmpv6_echo_request(9, 1),
            &[1, 2, 3, 4]
        );
        assert_ends_with(
            &v,
            "fe80::1 > fe80::2: ICMP6, echo request, id 9, seq 1, length 12",
        );

        let v = frame!(
            PacketBuilder::ethernet2(A, B)
                .ipv6(v6(1), v6(2), 255)
                .icmpv6(Icmpv6Type::NeighborSolicitation),
            &v6(2)
        );
        assert_ends_with(&v, "ICMP6, neighbor solicitation, who has fe80::2");

        let advert = etherparse::icmpv6::NeighborAdvertisementHeader {
            router: false,
            solicited: true,
            r#override: true,
        };
        let v = frame!(
            PacketBuilder::ethernet2(B, A)
                .ipv6(v6(2), v6(1), 255)
                .icmpv6(Icmpv6Type::NeighborAdvertisement(advert)),
            &v6(2)
        );
        assert_ends_with(&v, "ICMP6, neighbor advertisement, tgt is fe80::2");
    }

    #[test]
    fn unknown_ethertype_shows_hex() {
        let mut f = Vec::new();
        f.extend_from_slice(&BCAST);
        f.extend_from_slice(&A);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.extend_from_slice(b"hello");
        assert_eq!(
            summarize(&f),
            "b2:a0:6d:14:77:36 > ff:ff:ff:ff:ff:ff, 0x88b5, length 19: 5 bytes: 68 65 6c 6c 6f"
        );
        f.extend_from_slice(&[0u8; 40]);
        assert!(summarize(&f)
            .ends_with("45 bytes: 68 65 6c 6c 6f 00 00 00 00 00 00 00 00 00 00 00 ..."));
    }

    #[test]
    fn short_and_truncated_frames() {
        assert_eq!(summarize(&[]), "truncated Ethernet frame, length 0: ");
        assert_eq!(
            summarize(&[1, 2, 3]),
            "truncated Ethernet frame, length 3: 01 02 03"
        );
        // An echo request cut in the middle of its IPv4 header.
        let v = frame!(
            PacketBuilder::ethernet2(A, B)
                .ipv4(IP_A, IP_B, 64)
                .icmpv4_echo_request(7, 3),
            &[0u8; 56]
        );
        let s = summarize(&v[..24]);
        assert!(
            s.starts_with("b2:a0:6d:14:77:36 > b2:a0:1c:2e:0f:99, IPv4, length 24: truncated"),
            "{s}"
        );
        // Cut inside the ICMP header: the IP layer is still shown.
        let s = summarize(&v[..38]);
        assert!(s.contains("10.0.0.1 > 10.0.0.2"), "{s}");
        // A cut ARP.
        let req = arp(ArpOperation::REQUEST, A, IP_A, [0; 6], IP_B);
        assert!(summarize(&req[..30]).contains("truncated"));
    }

    #[test]
    fn garbage_never_panics() {
        // Every prefix of real frames, with every byte flipped in turn, and
        // a stream of pseudo-random frames.
        let mut seeds = vec![arp(ArpOperation::REQUEST, A, IP_A, [0; 6], IP_B)];
        seeds.push(frame!(
            PacketBuilder::ethernet2(A, B)
                .ipv4(IP_A, IP_B, 64)
                .tcp(1, 2, 3, 4)
                .syn(),
            b"abc"
        ));
        seeds.push(frame!(
            PacketBuilder::ethernet2(A, B)
                .ipv6(v6(1), v6(2), 64)
                .icmpv6(Icmpv6Type::NeighborSolicitation),
            &v6(2)
        ));
        for seed in &seeds {
            for cut in 0..=seed.len() {
                let _ = summarize(&seed[..cut]);
            }
            for i in 0..seed.len() {
                for x in [0x00, 0xff, 0x45, 0x60, 0x06, 0x11, 0x3a] {
                    let mut m = seed.clone();
                    m[i] = x;
                    let _ = summarize(&m);
                }
            }
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 120) as usize;
            let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 14 {
                let t = [0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8][(next() % 5) as usize];
                f[12..14].copy_from_slice(&t.to_be_bytes());
                if len > 14 && next() % 2 == 0 {
                    f[14] = if t == 0x86dd { 0x60 } else { 0x45 };
                }
            }
            let s = summarize(&f);
            assert!(!s.contains('\n'));
        }
    }
}
