//! The bus format, as typed views over octets (no I/O).
//!
//! A bus file is a 32-byte [`BusHeader`] followed by a ring of frames, each a
//! 24-byte [`FrameHeader`] and an Ethernet frame. These layouts are NetBSD's
//! `struct shmif_mem` and `struct shmif_pkthdr` (bus version 3), in the host's
//! byte order. Views never panic: constructors check the length once, and
//! accessors read fields that the check guarantees are there. The `*Repr`
//! types are validated, owned representations.

use std::fmt;

pub mod ext;

/// Size of a bus file: exactly 1 MiB, as every NetBSD peer maps it.
pub const BUS_SIZE: usize = 1024 * 1024;
/// Length of the bus header (`struct shmif_mem` without its data).
pub const BUS_HEADER_LEN: usize = 32;
/// Size of the data region that holds the ring (`BUSMEM_DATASIZE`).
pub const DATA_SIZE: u32 = (BUS_SIZE - BUS_HEADER_LEN) as u32;
/// The bus magic (`SHMIF_MAGIC`); 0 means "never initialised".
pub const MAGIC: u32 = 0xca11_d054;
/// The bus version this crate speaks, also the value of the wake-up word.
pub const VERSION: u32 = 3;
/// Length of a version-3 frame header (`struct shmif_pkthdr`).
pub const FRAME_HEADER_LEN: usize = 24;
/// Length of a version-2 frame header (len, sec, usec; no sender).
pub const V2_FRAME_HEADER_LEN: usize = 12;
/// Largest frame a NetBSD peer sends or accepts: MTU 1500 + 14 header bytes.
pub const MAX_FRAME_LEN: usize = 1514;
/// Smallest deliverable frame: an Ethernet header; shorter ones are skipped.
pub const MIN_FRAME_LEN: usize = 14;

/// Byte offsets of the bus header's fields.
pub mod field {
    /// `shm_magic`, u32.
    pub const MAGIC: usize = 0;
    /// `shm_version`, u32: also the wake-up word written with `pwrite`.
    pub const VERSION: usize = 4;
    /// `shm_gen`, u64: how many times writers wrapped past the end.
    pub const GEN: usize = 8;
    /// `shm_first`, u32: offset of the oldest intact frame.
    pub const FIRST: usize = 16;
    /// `shm_last`, u32: offset of the newest frame's header.
    pub const LAST: usize = 20;
    /// `shm_lock`, u32: the bus lock word.
    pub const LOCK: usize = 24;
    /// `shm_spare`, u32: unused by NetBSD.
    pub const SPARE: usize = 28;
}

/// The byte order a bus was written in, relative to this host.
///
/// Peers on one host share its order; a bus written on a host of the other
/// order (the `bigendian-ping` fixture) is readable by `shmif dump` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Same order as this host.
    Native,
    /// Every multi-byte field is byte-swapped.
    Swapped,
}

impl ByteOrder {
    fn u32(self, bytes: [u8; 4]) -> u32 {
        match self {
            ByteOrder::Native => u32::from_ne_bytes(bytes),
            ByteOrder::Swapped => u32::from_ne_bytes(bytes).swap_bytes(),
        }
    }
    fn u64(self, bytes: [u8; 8]) -> u64 {
        match self {
            ByteOrder::Native => u64::from_ne_bytes(bytes),
            ByteOrder::Swapped => u64::from_ne_bytes(bytes).swap_bytes(),
        }
    }
}

/// Reads `N` bytes at `off`, or zeros if the slice is too short (never panics;
/// every caller has checked the length beforehand).
fn array<const N: usize>(buf: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = buf.get(off..off + N) {
        out.copy_from_slice(src);
    }
    out
}

/// Why octets are not a valid bus or frame header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the layout needs.
    #[error("too short: {got} bytes where {needed} are needed")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The magic is neither 0 nor `0xca11d054` (in either byte order).
    #[error("not a shmif bus (magic {0:#010x})")]
    BadMagic(u32),
    /// A version this crate cannot read.
    #[error("bus version {0}, program {VERSION}")]
    BadVersion(u32),
    /// `first` lies outside the data region.
    #[error("first offset {0:#x} is outside the data region")]
    BadFirst(u32),
    /// `last` lies outside the data region.
    #[error("last offset {0:#x} is outside the data region")]
    BadLast(u32),
}

/// A view of a bus header (the first 32 bytes of a bus file).
#[derive(Debug, Clone, Copy)]
pub struct BusHeader<T: AsRef<[u8]>> {
    buf: T,
    order: ByteOrder,
}

impl<T: AsRef<[u8]>> BusHeader<T> {
    /// Wraps `buf`, which must hold at least [`BUS_HEADER_LEN`] bytes; the
    /// byte order is detected from the magic (native unless it reads as the
    /// byte-swapped magic).
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let got = buf.as_ref().len();
        if got < BUS_HEADER_LEN {
            return Err(WireError::Truncated {
                needed: BUS_HEADER_LEN,
                got,
            });
        }
        let raw = u32::from_ne_bytes(array(buf.as_ref(), field::MAGIC));
        let order = if raw == MAGIC.swap_bytes() {
            ByteOrder::Swapped
        } else {
            ByteOrder::Native
        };
        Ok(BusHeader { buf, order })
    }

    /// The byte order the header was found in.
    pub fn byte_order(&self) -> ByteOrder {
        self.order
    }
    fn u32_at(&self, off: usize) -> u32 {
        self.order.u32(array(self.buf.as_ref(), off))
    }
    /// `shm_magic`.
    pub fn magic(&self) -> u32 {
        self.u32_at(field::MAGIC)
    }
    /// `shm_version`.
    pub fn version(&self) -> u32 {
        self.u32_at(field::VERSION)
    }
    /// `shm_gen`.
    pub fn generation(&self) -> u64 {
        self.order.u64(array(self.buf.as_ref(), field::GEN))
    }
    /// `shm_first`.
    pub fn first(&self) -> u32 {
        self.u32_at(field::FIRST)
    }
    /// `shm_last`.
    pub fn last(&self) -> u32 {
        self.u32_at(field::LAST)
    }
    /// `shm_lock`.
    pub fn lock(&self) -> u32 {
        self.u32_at(field::LOCK)
    }
    /// `shm_spare`.
    pub fn spare(&self) -> u32 {
        self.u32_at(field::SPARE)
    }
}

/// A validated bus header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusHeaderRepr {
    /// Byte order relative to this host.
    pub order: ByteOrder,
    /// Bus version (0 on a bus that never saw a wake-up, else 2 or 3).
    pub version: u32,
    /// Generation.
    pub generation: u64,
    /// Offset of the oldest intact frame, or `DATA_SIZE`.
    pub first: u32,
    /// Offset of the newest frame's header.
    pub last: u32,
    /// Lock word as found.
    pub lock: u32,
}

impl BusHeaderRepr {
    /// Validates an initialised bus header: the magic must be right (a bus
    /// with magic 0 has never been initialised and holds no frames), and
    /// `first`/`last` must lie in the data region.
    pub fn parse<T: AsRef<[u8]>>(h: &BusHeader<T>) -> Result<Self, WireError> {
        if h.magic() != MAGIC {
            return Err(WireError::BadMagic(h.magic()));
        }
        if h.first() > DATA_SIZE {
            return Err(WireError::BadFirst(h.first()));
        }
        if h.last() >= DATA_SIZE {
            return Err(WireError::BadLast(h.last()));
        }
        Ok(BusHeaderRepr {
            order: h.byte_order(),
            version: h.version(),
            generation: h.generation(),
            first: h.first(),
            last: h.last(),
            lock: h.lock(),
        })
    }

    /// Length of this bus's frame headers: 12 for version 2, 24 otherwise.
    pub fn frame_header_len(&self) -> usize {
        if self.version == 2 {
            V2_FRAME_HEADER_LEN
        } else {
            FRAME_HEADER_LEN
        }
    }
}

/// A view of a frame header, version 3 (24 bytes) or version 2 (12 bytes).
#[derive(Debug, Clone, Copy)]
pub struct FrameHeader<T: AsRef<[u8]>> {
    buf: T,
    order: ByteOrder,
}

impl<T: AsRef<[u8]>> FrameHeader<T> {
    /// Wraps `buf` in the given byte order; it must hold at least 12 bytes
    /// (24 for [`FrameHeader::sender`] to be read).
    pub fn new_checked(buf: T, order: ByteOrder) -> Result<Self, WireError> {
        let got = buf.as_ref().len();
        if got < V2_FRAME_HEADER_LEN {
            return Err(WireError::Truncated {
                needed: V2_FRAME_HEADER_LEN,
                got,
            });
        }
        Ok(FrameHeader { buf, order })
    }
    /// `sp_len`: the payload length.
    pub fn len(&self) -> u32 {
        self.order.u32(array(self.buf.as_ref(), 0))
    }
    /// Whether `sp_len` is 0 (a placeholder entry, skipped by every reader).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `sp_sec`: sender's timestamp, seconds.
    pub fn sec(&self) -> u32 {
        self.order.u32(array(self.buf.as_ref(), 4))
    }
    /// `sp_usec`: sender's timestamp, microseconds.
    pub fn usec(&self) -> u32 {
        self.order.u32(array(self.buf.as_ref(), 8))
    }
    /// `sp_sender`: the sending interface's id (0 for a 12-byte header).
    pub fn sender(&self) -> u64 {
        self.order.u64(array(self.buf.as_ref(), 16))
    }
}

/// An owned frame header, as written by this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameHeaderRepr {
    /// Payload length.
    pub len: u32,
    /// Timestamp, seconds.
    pub sec: u32,
    /// Timestamp, microseconds.
    pub usec: u32,
    /// Sending interface's id.
    pub sender: u64,
}

impl FrameHeaderRepr {
    /// Reads a version-3 header in native order.
    pub fn parse<T: AsRef<[u8]>>(h: &FrameHeader<T>) -> Self {
        FrameHeaderRepr {
            len: h.len(),
            sec: h.sec(),
            usec: h.usec(),
            sender: h.sender(),
        }
    }

    /// The 24 bytes of this header in native order, padding zeroed.
    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[0..4].copy_from_slice(&self.len.to_ne_bytes());
        out[4..8].copy_from_slice(&self.sec.to_ne_bytes());
        out[8..12].copy_from_slice(&self.usec.to_ne_bytes());
        out[16..24].copy_from_slice(&self.sender.to_ne_bytes());
        out
    }

    /// Parses 24 native-order bytes: the inverse of
    /// [`FrameHeaderRepr::to_bytes`] (the padding is ignored).
    ///
    /// The ring code parses a header for every entry it passes, so this
    /// decodes the fixed array directly (and inline), the same fields as
    /// [`FrameHeader`]'s accessors in native order.
    #[inline]
    pub fn from_bytes(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        let (words, sender) = bytes.split_at(16);
        let word =
            |i: usize| u32::from_ne_bytes([words[i], words[i + 1], words[i + 2], words[i + 3]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(sender);
        FrameHeaderRepr {
            len: word(0),
            sec: word(4),
            usec: word(8),
            sender: u64::from_ne_bytes(s),
        }
    }
}

/// A 6-byte Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Whether the group bit (low bit of the first octet) is set: multicast
    /// or broadcast, delivered to every interface.
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The destination address of an Ethernet frame, if it has one.
    pub fn destination_of(frame: &[u8]) -> Option<MacAddr> {
        frame.get(0..6).map(|b| MacAddr(array(b, 0)))
    }

    /// The source address of an Ethernet frame, if it has one.
    pub fn source_of(frame: &[u8]) -> Option<MacAddr> {
        frame.get(6..12).map(|b| MacAddr(array(b, 0)))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a MAC address (expected six hex octets like b2:a0:01:02:03:04)")]
pub struct MacParseError(pub String);

impl std::str::FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_views_never_panic_on_short_input() {
        assert!(BusHeader::new_checked(&[0u8; 31][..]).is_err());
        assert!(FrameHeader::new_checked(&[0u8; 11][..], ByteOrder::Native).is_err());
        let short = FrameHeader::new_checked(&[1u8; 12][..], ByteOrder::Native).unwrap();
        assert_eq!(short.sender(), 0, "sender of a v2 header reads as 0");
    }

    #[test]
    fn swapped_magic_is_detected() {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&MAGIC.swap_bytes().to_ne_bytes());
        b[4..8].copy_from_slice(&3u32.swap_bytes().to_ne_bytes());
        let h = BusHeader::new_checked(&b[..]).unwrap();
        assert_eq!(h.byte_order(), ByteOrder::Swapped);
        assert_eq!(h.magic(), MAGIC);
        assert_eq!(h.version(), 3);
    }

    #[test]
    fn frame_header_round_trips() {
        let r = FrameHeaderRepr {
            len: 60,
            sec: 7,
            usec: 999_999,
            sender: 0x0102_0304_0506_0708,
        };
        assert_eq!(FrameHeaderRepr::from_bytes(&r.to_bytes()), r);
        assert_eq!(&r.to_bytes()[12..16], &[0, 0, 0, 0]);
    }

    proptest::proptest! {
        #[test]
        fn from_bytes_reads_what_the_view_reads(bytes in proptest::array::uniform24(proptest::num::u8::ANY)) {
            let view = FrameHeader::new_checked(&bytes[..], ByteOrder::Native).unwrap();
            proptest::prop_assert_eq!(
                FrameHeaderRepr::from_bytes(&bytes),
                FrameHeaderRepr::parse(&view)
            );
        }
    }

    #[test]
    fn mac_parsing() {
        let m: MacAddr = "b2:a0:01:02:03:0f".parse().unwrap();
        assert_eq!(m.0, [0xb2, 0xa0, 1, 2, 3, 0x0f]);
        assert_eq!(m.to_string(), "b2:a0:01:02:03:0f");
        for bad in [
            "",
            "b2:a0",
            "b2:a0:01:02:03:04:05",
            "zz:a0:01:02:03:04",
            "123:0:0:0:0:0",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(MacAddr::BROADCAST.is_group());
        assert!(!m.is_group());
    }
}
