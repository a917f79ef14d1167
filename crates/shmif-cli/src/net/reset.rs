//! TCP resets that a server that lost frames still takes.
//!
//! smoltcp aborts a connection with one reset at its next sequence number
//! (the end of what it has sent). A server that has everything takes it.
//! A server that missed some of the stream (a lossy v3 ring under load
//! overran its reader) has a hole before that number: its window starts
//! at the hole, and when the sender has filled that window the reset sits
//! just past its end, out of window, and is dropped without an answer
//! (RFC 9293 3.10.7.4; RFC 5961 section 3). The connection then stays open
//! until the server's own timeout. The same reset one sequence number
//! earlier is inside that window: smoltcp takes any reset in its window,
//! and a stack that wants the exact number (Linux, RFC 5961) answers it
//! with a challenge ACK, which the aborted side (with no socket left for
//! it) answers with a reset at exactly the number asked for.
//!
//! These are pure functions over frames; [`crate::net::dad::Guarded`]
//! keeps the last reset the stack sent, and
//! [`crate::net::transfer::TcpSender`] sends its companion.

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
};
use std::ops::Range;

/// Whether `frame` is an Ethernet frame carrying a TCP segment with RST.
pub fn is_tcp_reset(frame: &[u8]) -> bool {
    tcp_segment(frame).is_some_and(|(_, _, seg)| TcpPacket::new_unchecked(&frame[seg]).rst())
}

/// The reset `frame` one sequence number earlier (its checksum filled
/// again), or `None` when `frame` is not a TCP reset.
pub fn one_before(frame: &[u8]) -> Option<Vec<u8>> {
    let (src, dst, seg) = tcp_segment(frame)?;
    let mut out = frame.to_vec();
    let mut tcp = TcpPacket::new_unchecked(&mut out[seg]);
    if !tcp.rst() {
        return None;
    }
    tcp.set_seq_number(tcp.seq_number() - 1);
    tcp.fill_checksum(&src, &dst);
    Some(out)
}

/// The addresses of `frame` and where in it its TCP segment lies, if it
/// holds a whole one (IPv4 or IPv6 without extension headers, as smoltcp
/// sends).
fn tcp_segment(frame: &[u8]) -> Option<(IpAddress, IpAddress, Range<usize>)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (src, dst, proto, header, len) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            let header = usize::from(ip.header_len());
            let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
            (src, dst, ip.next_header(), header, ip.payload().len())
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
            (
                src,
                dst,
                ip.next_header(),
                ip.header_len(),
                ip.payload().len(),
            )
        }
        _ => return None,
    };
    if proto != IpProtocol::Tcp {
        return None;
    }
    let start = EthernetFrame::<&[u8]>::header_len() + header;
    let seg = start..start + len;
    TcpPacket::new_checked(frame.get(seg.clone())?).ok()?;
    Some((src, dst, seg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetRepr, IpRepr, Ipv4Address, Ipv6Address, TcpControl, TcpRepr,
        TcpSeqNumber,
    };

    /// A TCP segment from `src` to `dst` with `control`, seq 1000, in an
    /// Ethernet frame.
    fn segment(src: IpAddress, dst: IpAddress, control: TcpControl) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 49152,
            dst_port: 9000,
            control,
            seq_number: TcpSeqNumber(1000),
            ack_number: Some(TcpSeqNumber(7)),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip = IpRepr::new(src, dst, IpProtocol::Tcp, tcp.buffer_len(), 64);
        let eth = EthernetRepr {
            src_addr: EthernetAddress([0xb2, 0xa0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress([0xb2, 0xa0, 0, 0, 0, 2]),
            ethertype: match ip {
                IpRepr::Ipv4(_) => EthernetProtocol::Ipv4,
                IpRepr::Ipv6(_) => EthernetProtocol::Ipv6,
            },
        };
        let mut buf = vec![0; eth.buffer_len() + ip.buffer_len()];
        let caps = ChecksumCapabilities::default();
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut frame);
        ip.emit(frame.payload_mut(), &caps);
        let hl = ip.header_len();
        let mut t = TcpPacket::new_unchecked(&mut frame.payload_mut()[hl..]);
        tcp.emit(&mut t, &src, &dst, &caps);
        buf
    }

    fn addresses() -> [(IpAddress, IpAddress); 2] {
        [
            (
                Ipv4Address::new(10, 0, 0, 2).into(),
                Ipv4Address::new(10, 0, 0, 1).into(),
            ),
            (
                Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).into(),
                Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).into(),
            ),
        ]
    }

    #[test]
    fn the_companion_reset_is_one_earlier_and_checks() {
        for (src, dst) in addresses() {
            let rst = segment(src, dst, TcpControl::Rst);
            assert!(is_tcp_reset(&rst));
            let earlier = one_before(&rst).expect("a reset has a companion");
            assert_eq!(earlier.len(), rst.len());
            let (s, d, seg) = tcp_segment(&earlier).expect("still a TCP segment");
            assert_eq!((s, d), (src, dst));
            let tcp = TcpPacket::new_checked(&earlier[seg]).unwrap();
            assert!(tcp.rst());
            assert_eq!(tcp.seq_number(), TcpSeqNumber(999));
            assert_eq!(tcp.ack_number(), TcpSeqNumber(7));
            assert!(tcp.verify_checksum(&s, &d), "checksum filled again");
            // Nothing else changed: the frames differ in the sequence
            // number and the checksum only.
            let differing = rst.iter().zip(&earlier).filter(|(a, b)| a != b).count();
            assert!((1..=6).contains(&differing), "{differing} bytes differ");
        }
    }

    #[test]
    fn only_resets_are_taken() {
        for (src, dst) in addresses() {
            for control in [TcpControl::None, TcpControl::Syn, TcpControl::Fin] {
                let seg = segment(src, dst, control);
                assert!(!is_tcp_reset(&seg), "{control:?}");
                assert_eq!(one_before(&seg), None);
            }
        }
        let rst = segment(addresses()[0].0, addresses()[0].1, TcpControl::Rst);
        // Cut short anywhere, or not IP: not a reset, and no panic.
        for n in 0..rst.len() {
            assert!(!is_tcp_reset(&rst[..n]), "cut to {n}");
        }
        let mut arp = rst.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!is_tcp_reset(&arp));
        let mut udp = rst.clone();
        udp[23] = 17;
        assert!(!is_tcp_reset(&udp));
    }
}
