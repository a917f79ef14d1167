//! The extended bus format, a format of this crate's (not NetBSD's), as
//! typed views over octets (no I/O). `EXTENDED-FORMAT.md` beside this crate
//! describes it byte by byte.
//!
//! An extended bus is a file of [`EXT_HEADER_LEN`] header bytes followed by
//! a ring of frames. The first 32 header bytes have the version-3 layout
//! (wake-up word, `gen`, `first`, `last`, lock, holder tag) under a
//! different magic ([`EXT_MAGIC`]), so a NetBSD peer refuses the file ("not
//! magical") and every ring rule of version 3 applies unchanged, with the
//! ring's size and frame limit read from the header. Frames carry the
//! version-3 24-byte frame header, whose `u32` length carries up to
//! [`EXT_MAX_FRAME_LEN`]. The header also holds the futex words and the
//! reader registration table ([`ReaderSlot`]).
//!
//! As in [`crate::wire`], views never panic: constructors check the length
//! once, accessors read fields the check guarantees. [`ExtHeaderRepr`] is the
//! validated, owned form of a header; its [`ExtHeaderRepr::parse`] checks
//! every field another process could have written.

use super::{array, FRAME_HEADER_LEN, MIN_FRAME_LEN};

/// The extended bus's magic. Differs from the version-3 magic in both byte
/// orders, so NetBSD peers and `shmif_dumpbus` refuse the file.
pub const EXT_MAGIC: u32 = 0xca11_e7b5;
/// The extended format's version, in [`field::FORMAT`].
pub const EXT_FORMAT_VERSION: u32 = 1;

/// Header flag: writers may end a lap early with a *skip record*
/// ([`crate::ring::Entry::Skip`]), so that while every registered reader
/// keeps up the ring's working set stays a few MiB (in the processors'
/// caches) instead of the whole file. Set by `Bus::create`; a bus without
/// it (made by an older build) never gets a skip record, and an older
/// build refuses a bus with it ("unknown flags") instead of misreading one.
pub const EXT_FLAG_SKIPS: u32 = 1;
/// Bytes before the ring: the header proper (the first 4 KiB page) and the
/// reader table (the second). The ring starts page-aligned after it.
pub const EXT_HEADER_LEN: usize = 8192;
/// Smallest extended bus file: 1 MiB.
pub const EXT_MIN_FILE_SIZE: u64 = 1 << 20;
/// Largest extended bus file: 1 GiB.
pub const EXT_MAX_FILE_SIZE: u64 = 1 << 30;
/// Extended bus files are a whole number of these (pages).
pub const EXT_FILE_SIZE_UNIT: u64 = 4096;
/// Longest frame an extended bus carries: a TAP MTU of 65,535 plus the
/// 14-byte Ethernet header.
pub const EXT_MAX_FRAME_LEN: u32 = 65_535 + 14;
/// Number of reader registration slots.
pub const READER_SLOTS: usize = 64;
/// Length of one reader slot (one cache line).
pub const READER_SLOT_LEN: usize = 64;
/// Offset of the reader table in the file.
pub const READER_TABLE: usize = 4096;

/// Byte offsets of the extended header's fields (from the start of the file).
pub mod field {
    pub use crate::wire::field::{FIRST, GEN, LAST, LOCK};
    /// u32: [`super::EXT_MAGIC`].
    pub const MAGIC: usize = 0;
    /// u32: the wake-up word (file offset 4, as version 3): writers
    /// `pwrite` 3 here for file-change waiters; its value means nothing.
    pub const WAKE: usize = 4;
    /// u32: the lock holder's tag (version 3's spare word).
    pub const HOLDER: usize = 28;
    /// u32: [`super::EXT_FORMAT_VERSION`].
    pub const FORMAT: usize = 32;
    /// u32: bytes before the ring ([`super::EXT_HEADER_LEN`]).
    pub const HEADER_LEN: usize = 36;
    /// u32: size of the ring in bytes (the file size less the header).
    pub const RING_SIZE: usize = 40;
    /// u32: longest frame payload the bus carries.
    pub const MAX_FRAME: usize = 44;
    /// u32: length of a frame header (24).
    pub const FRAME_HEADER_LEN: usize = 48;
    /// u32: number of reader slots ([`super::READER_SLOTS`]).
    pub const READER_SLOTS: usize = 52;
    /// u32: length of a reader slot ([`super::READER_SLOT_LEN`]).
    pub const READER_SLOT_LEN: usize = 56;
    /// u32: offset of the reader table ([`super::READER_TABLE`]).
    pub const READER_TABLE: usize = 60;
    /// u32: flags: [`super::EXT_FLAG_SKIPS`] or 0; a reader refuses any
    /// other bit.
    pub const FLAGS: usize = 64;
    /// u64: bit `i` set while reader slot `i` is owned: a hint that lets a
    /// writer look only at the slots in use (it checks each slot's own
    /// owner and flags before trusting it).
    pub const READER_MASK: usize = 72;
    /// u64: the writers' cursor as a linear position (generation × ring
    /// size + offset of the next frame), stored (release) by a writer after
    /// each frame it publishes: a hint that lets a registered reader see
    /// new frames without the lock. A reader trusts it only between its
    /// own position and one ring further; anything else sends it to the
    /// control words under the lock.
    pub const CURSOR: usize = 80;
    /// u64: ring bytes passed over by every skip record written so far
    /// (each record's header and length), stored under the lock.
    pub const SKIPPED: usize = 88;
    /// u64: linear position (generation × ring size + offset) of the
    /// newest skip record's header, stored under the lock; meaningful once
    /// `skipped` is not 0.
    pub const LAST_SKIP: usize = 96;
    /// u32 futex word: readers sleep on it for new frames; a writer adds 1
    /// after publishing frames, when [`DATA_SLEEPERS`] is not 0.
    pub const DATA_SEQ: usize = 128;
    /// u32: how many readers are asleep on [`DATA_SEQ`] (or about to be).
    pub const DATA_SLEEPERS: usize = 132;
    /// u32: how many readers wait on the file-change event instead, so
    /// that a writer `pwrite`s the wake-up word only while this is not 0.
    pub const FD_WAITERS: usize = 136;
    /// u32 futex word: writers waiting for a registered reader to free
    /// space sleep on it; a reader adds 1 after moving its position, when
    /// [`SPACE_SLEEPERS`] is not 0.
    pub const SPACE_SEQ: usize = 192;
    /// u32: how many writers are asleep on [`SPACE_SEQ`].
    pub const SPACE_SLEEPERS: usize = 196;
}

/// Byte offsets of a reader slot's fields (from the start of the slot).
pub mod slot {
    /// u32: the owner's tag (pid and pid-namespace tag, as the lock's
    /// holder tag); 0 = free. Claimed by compare-and-swap from 0.
    pub const OWNER: usize = 0;
    /// u32: [`super::SlotFlags`] bits.
    pub const FLAGS: usize = 4;
    /// u64: the reader's position: the linear offset (generation × ring
    /// size + offset) of the next byte it has not read. Writers never
    /// overwrite bytes at or after it while the reader is live.
    pub const POSITION: usize = 8;
    /// u64: a counter the reader increments whenever it makes progress or
    /// finds nothing to read; writers judge a stall by it not changing.
    pub const HEARTBEAT: usize = 16;
    /// u64: bytes writers overwrote unread after leaving this reader
    /// behind (written by the writer that did, for the reader to count).
    pub const LEFT_BEHIND: usize = 24;
}

/// Bits of a reader slot's flags word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotFlags(pub u32);

impl SlotFlags {
    /// The slot's position is valid: writers wait for it.
    pub const ACTIVE: u32 = 1;
    /// A writer judged the reader stalled: writers no longer wait for it
    /// until it moves its position again.
    pub const STALLED: u32 = 2;
    /// Bits this version defines.
    pub const KNOWN: u32 = Self::ACTIVE | Self::STALLED;

    /// Whether writers wait for this reader.
    pub fn is_active(self) -> bool {
        self.0 & Self::ACTIVE != 0 && self.0 & Self::STALLED == 0
    }
}

/// Why octets are not a valid extended bus header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtError {
    /// Fewer bytes than the header needs.
    #[error("too short: {got} bytes where {needed} are needed")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// Not [`EXT_MAGIC`].
    #[error("not an extended shmif bus (magic {0:#010x})")]
    BadMagic(u32),
    /// A format version this crate cannot read.
    #[error("extended bus format {0}, program {EXT_FORMAT_VERSION}")]
    BadFormat(u32),
    /// A layout field (header length, frame header length, reader table)
    /// other than this version's.
    #[error("layout field at offset {offset} is {got}, expected {expected}")]
    BadLayout {
        /// The field's offset.
        offset: usize,
        /// Its value.
        got: u32,
        /// The only value this version defines.
        expected: u32,
    },
    /// Ring size outside the allowed range, or not matching the file.
    #[error("ring size {got} does not fit a bus file of {file_size} bytes (1 MiB to 1 GiB, whole pages)")]
    BadRingSize {
        /// The ring size field.
        got: u32,
        /// The file's size (0 if unknown).
        file_size: u64,
    },
    /// Frame limit outside 14..=65,549 or too big for the ring.
    #[error(
        "frame limit {0} outside {MIN_FRAME_LEN}..={EXT_MAX_FRAME_LEN} or too big for the ring"
    )]
    BadMaxFrame(u32),
    /// Undefined flag bits set.
    #[error("unknown flags {0:#x}")]
    BadFlags(u32),
    /// `first` outside the ring.
    #[error("first offset {0:#x} is outside the ring")]
    BadFirst(u32),
    /// `last` outside the ring.
    #[error("last offset {0:#x} is outside the ring")]
    BadLast(u32),
}

/// A view of an extended bus header (the first [`EXT_HEADER_LEN`] bytes of
/// the file, or at least the first page for the header proper).
#[derive(Debug, Clone, Copy)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    buf: T,
}

/// Bytes [`ExtHeader::new_checked`] needs: the fields and futex words
/// (the reader table is read through [`ExtHeader::reader`]).
pub const EXT_FIELDS_LEN: usize = 256;

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// Wraps `buf`, which must hold at least [`EXT_FIELDS_LEN`] bytes.
    pub fn new_checked(buf: T) -> Result<Self, ExtError> {
        let got = buf.as_ref().len();
        if got < EXT_FIELDS_LEN {
            return Err(ExtError::Truncated {
                needed: EXT_FIELDS_LEN,
                got,
            });
        }
        Ok(ExtHeader { buf })
    }
    fn u32_at(&self, off: usize) -> u32 {
        u32::from_ne_bytes(array(self.buf.as_ref(), off))
    }
    /// The magic.
    pub fn magic(&self) -> u32 {
        self.u32_at(field::MAGIC)
    }
    /// The generation.
    pub fn generation(&self) -> u64 {
        u64::from_ne_bytes(array(self.buf.as_ref(), field::GEN))
    }
    /// `first`.
    pub fn first(&self) -> u32 {
        self.u32_at(field::FIRST)
    }
    /// `last`.
    pub fn last(&self) -> u32 {
        self.u32_at(field::LAST)
    }
    /// The lock word.
    pub fn lock(&self) -> u32 {
        self.u32_at(field::LOCK)
    }
    /// The lock holder's tag.
    pub fn holder(&self) -> u32 {
        self.u32_at(field::HOLDER)
    }
    /// The format version.
    pub fn format(&self) -> u32 {
        self.u32_at(field::FORMAT)
    }
    /// Bytes before the ring.
    pub fn header_len(&self) -> u32 {
        self.u32_at(field::HEADER_LEN)
    }
    /// The ring's size.
    pub fn ring_size(&self) -> u32 {
        self.u32_at(field::RING_SIZE)
    }
    /// The frame limit.
    pub fn max_frame(&self) -> u32 {
        self.u32_at(field::MAX_FRAME)
    }
    /// The frame header length.
    pub fn frame_header_len(&self) -> u32 {
        self.u32_at(field::FRAME_HEADER_LEN)
    }
    /// The number of reader slots.
    pub fn reader_slots(&self) -> u32 {
        self.u32_at(field::READER_SLOTS)
    }
    /// The length of a reader slot.
    pub fn reader_slot_len(&self) -> u32 {
        self.u32_at(field::READER_SLOT_LEN)
    }
    /// The reader table's offset.
    pub fn reader_table(&self) -> u32 {
        self.u32_at(field::READER_TABLE)
    }
    /// The flags word.
    pub fn flags(&self) -> u32 {
        self.u32_at(field::FLAGS)
    }
    /// The readers' futex word.
    pub fn data_seq(&self) -> u32 {
        self.u32_at(field::DATA_SEQ)
    }
    /// Readers asleep on the futex.
    pub fn data_sleepers(&self) -> u32 {
        self.u32_at(field::DATA_SLEEPERS)
    }
    /// Readers waiting on the file-change event.
    pub fn fd_waiters(&self) -> u32 {
        self.u32_at(field::FD_WAITERS)
    }
    /// Reader slot `i`, if the buffer holds it (`None` past the table or
    /// past the buffer).
    pub fn reader(&self, i: usize) -> Option<ReaderSlot<&[u8]>> {
        if i >= READER_SLOTS {
            return None;
        }
        let at = READER_TABLE + i * READER_SLOT_LEN;
        self.buf
            .as_ref()
            .get(at..at + READER_SLOT_LEN)
            .and_then(|b| ReaderSlot::new_checked(b).ok())
    }
}

/// A view of one reader slot.
#[derive(Debug, Clone, Copy)]
pub struct ReaderSlot<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> ReaderSlot<T> {
    /// Wraps `buf`, which must hold at least [`READER_SLOT_LEN`] bytes.
    pub fn new_checked(buf: T) -> Result<Self, ExtError> {
        let got = buf.as_ref().len();
        if got < READER_SLOT_LEN {
            return Err(ExtError::Truncated {
                needed: READER_SLOT_LEN,
                got,
            });
        }
        Ok(ReaderSlot { buf })
    }
    /// The owner's tag (0: free).
    pub fn owner(&self) -> u32 {
        u32::from_ne_bytes(array(self.buf.as_ref(), slot::OWNER))
    }
    /// The flags.
    pub fn flags(&self) -> SlotFlags {
        SlotFlags(u32::from_ne_bytes(array(self.buf.as_ref(), slot::FLAGS)))
    }
    /// The reader's linear position.
    pub fn position(&self) -> u64 {
        u64::from_ne_bytes(array(self.buf.as_ref(), slot::POSITION))
    }
    /// The reader's heartbeat counter.
    pub fn heartbeat(&self) -> u64 {
        u64::from_ne_bytes(array(self.buf.as_ref(), slot::HEARTBEAT))
    }
    /// Bytes overwritten unread after the reader was left behind.
    pub fn left_behind(&self) -> u64 {
        u64::from_ne_bytes(array(self.buf.as_ref(), slot::LEFT_BEHIND))
    }
}

/// A validated extended bus header: its shape (the ring's size and frame
/// limit) and the ring's shared state as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtHeaderRepr {
    /// Size of the ring in bytes.
    pub ring_size: u32,
    /// Longest frame payload.
    pub max_frame: u32,
    /// Generation.
    pub generation: u64,
    /// Offset of the oldest intact frame, or `ring_size`.
    pub first: u32,
    /// Offset of the newest frame's header.
    pub last: u32,
    /// Lock word as found.
    pub lock: u32,
    /// Whether the bus may hold skip records ([`EXT_FLAG_SKIPS`]).
    pub skips: bool,
}

/// Whether `ring_size` (and, if known, the file size) is a valid ring size.
fn ring_size_ok(ring_size: u32, file_size: Option<u64>) -> bool {
    let file = ring_size as u64 + EXT_HEADER_LEN as u64;
    (EXT_MIN_FILE_SIZE..=EXT_MAX_FILE_SIZE).contains(&file)
        && file % EXT_FILE_SIZE_UNIT == 0
        && file_size.is_none_or(|s| s == file)
}

/// Whether `max_frame` is a valid frame limit for a ring of `ring_size`:
/// 14..=65,549 and, with its header, under half the ring (the rule
/// [`crate::ring::Geometry::fits`] applies to every frame).
fn max_frame_ok(max_frame: u32, ring_size: u32) -> bool {
    (MIN_FRAME_LEN as u32..=EXT_MAX_FRAME_LEN).contains(&max_frame)
        && (FRAME_HEADER_LEN as u64 + max_frame as u64) < ring_size as u64 / 2
}

impl ExtHeaderRepr {
    /// A new bus's header: a file of `file_size` bytes carrying frames of
    /// up to `max_frame` bytes, nothing written yet (`first` = ring size,
    /// `gen` and `last` 0, as a fresh version-3 bus). `None` if the size
    /// is not a whole number of pages from 1 MiB to 1 GiB or the frame
    /// limit is outside 14..=65,549.
    pub fn new(file_size: u64, max_frame: u32) -> Option<Self> {
        let ring_size = u32::try_from(file_size.checked_sub(EXT_HEADER_LEN as u64)?).ok()?;
        if !ring_size_ok(ring_size, Some(file_size)) || !max_frame_ok(max_frame, ring_size) {
            return None;
        }
        Some(ExtHeaderRepr {
            ring_size,
            max_frame,
            generation: 0,
            first: ring_size,
            last: 0,
            lock: 0,
            skips: true,
        })
    }

    /// Validates a header read from a file of `file_size` bytes (`None`:
    /// not known, as for a header alone): magic, format, every layout
    /// field, the ring size against the file, the frame limit, the flags,
    /// and `first`/`last` inside the ring.
    pub fn parse<T: AsRef<[u8]>>(
        h: &ExtHeader<T>,
        file_size: Option<u64>,
    ) -> Result<Self, ExtError> {
        if h.magic() != EXT_MAGIC {
            return Err(ExtError::BadMagic(h.magic()));
        }
        if h.format() != EXT_FORMAT_VERSION {
            return Err(ExtError::BadFormat(h.format()));
        }
        for (offset, got, expected) in [
            (field::HEADER_LEN, h.header_len(), EXT_HEADER_LEN as u32),
            (
                field::FRAME_HEADER_LEN,
                h.frame_header_len(),
                FRAME_HEADER_LEN as u32,
            ),
            (field::READER_SLOTS, h.reader_slots(), READER_SLOTS as u32),
            (
                field::READER_SLOT_LEN,
                h.reader_slot_len(),
                READER_SLOT_LEN as u32,
            ),
            (field::READER_TABLE, h.reader_table(), READER_TABLE as u32),
        ] {
            if got != expected {
                return Err(ExtError::BadLayout {
                    offset,
                    got,
                    expected,
                });
            }
        }
        let ring_size = h.ring_size();
        if !ring_size_ok(ring_size, file_size) {
            return Err(ExtError::BadRingSize {
                got: ring_size,
                file_size: file_size.unwrap_or(0),
            });
        }
        if !max_frame_ok(h.max_frame(), ring_size) {
            return Err(ExtError::BadMaxFrame(h.max_frame()));
        }
        if h.flags() & !EXT_FLAG_SKIPS != 0 {
            return Err(ExtError::BadFlags(h.flags()));
        }
        if h.first() > ring_size {
            return Err(ExtError::BadFirst(h.first()));
        }
        if h.last() >= ring_size {
            return Err(ExtError::BadLast(h.last()));
        }
        Ok(ExtHeaderRepr {
            ring_size,
            max_frame: h.max_frame(),
            generation: h.generation(),
            first: h.first(),
            last: h.last(),
            lock: h.lock(),
            skips: h.flags() & EXT_FLAG_SKIPS != 0,
        })
    }

    /// The file's size: the header and the ring.
    pub fn file_size(&self) -> u64 {
        EXT_HEADER_LEN as u64 + self.ring_size as u64
    }

    /// The whole [`EXT_HEADER_LEN`]-byte header of this bus, native order:
    /// these fields, the layout constants, zero futex words and an empty
    /// reader table.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; EXT_HEADER_LEN];
        let mut put = |off: usize, v: &[u8]| out[off..off + v.len()].copy_from_slice(v);
        put(field::MAGIC, &EXT_MAGIC.to_ne_bytes());
        put(field::GEN, &self.generation.to_ne_bytes());
        put(field::FIRST, &self.first.to_ne_bytes());
        put(field::LAST, &self.last.to_ne_bytes());
        put(field::LOCK, &self.lock.to_ne_bytes());
        put(field::FORMAT, &EXT_FORMAT_VERSION.to_ne_bytes());
        put(field::HEADER_LEN, &(EXT_HEADER_LEN as u32).to_ne_bytes());
        put(field::RING_SIZE, &self.ring_size.to_ne_bytes());
        put(field::MAX_FRAME, &self.max_frame.to_ne_bytes());
        put(
            field::FRAME_HEADER_LEN,
            &(FRAME_HEADER_LEN as u32).to_ne_bytes(),
        );
        put(field::READER_SLOTS, &(READER_SLOTS as u32).to_ne_bytes());
        put(
            field::READER_SLOT_LEN,
            &(READER_SLOT_LEN as u32).to_ne_bytes(),
        );
        put(field::READER_TABLE, &(READER_TABLE as u32).to_ne_bytes());
        let flags = if self.skips { EXT_FLAG_SKIPS } else { 0 };
        put(field::FLAGS, &flags.to_ne_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn header_round_trips_and_validates() {
        let r = ExtHeaderRepr::new(64 * MIB, 65_549).unwrap();
        assert_eq!(r.ring_size as u64, 64 * MIB - 8192);
        assert_eq!(r.first, r.ring_size, "fresh: nothing overwritten");
        let bytes = r.to_bytes();
        assert_eq!(bytes.len(), EXT_HEADER_LEN);
        let h = ExtHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(ExtHeaderRepr::parse(&h, Some(64 * MIB)), Ok(r));
        assert_eq!(r.file_size(), 64 * MIB);
        // Byte positions, as EXTENDED-FORMAT.md states them.
        assert_eq!(bytes[0..4], 0xca11_e7b5u32.to_ne_bytes());
        assert_eq!(bytes[32..36], 1u32.to_ne_bytes());
        assert_eq!(bytes[36..40], 8192u32.to_ne_bytes());
        assert_eq!(bytes[44..48], 65_549u32.to_ne_bytes());
        assert_eq!(bytes[60..64], 4096u32.to_ne_bytes());
        // A new bus may hold skip records; one of an older build may not.
        assert_eq!(bytes[64..68], EXT_FLAG_SKIPS.to_ne_bytes());
        let mut old = bytes.clone();
        old[64..68].copy_from_slice(&0u32.to_ne_bytes());
        let h = ExtHeader::new_checked(&old[..]).unwrap();
        assert!(!ExtHeaderRepr::parse(&h, Some(64 * MIB)).unwrap().skips);
        assert!(bytes[4096..].iter().all(|&b| b == 0), "empty reader table");
        for i in 0..READER_SLOTS {
            assert_eq!(h.reader(i).unwrap().owner(), 0);
        }
        assert!(h.reader(READER_SLOTS).is_none());
    }

    #[test]
    fn magic_is_not_netbsds_in_either_order() {
        assert_ne!(EXT_MAGIC, crate::wire::MAGIC);
        assert_ne!(EXT_MAGIC, crate::wire::MAGIC.swap_bytes());
        assert_ne!(EXT_MAGIC.swap_bytes(), crate::wire::MAGIC);
    }

    #[test]
    fn sizes_and_limits_are_bounded() {
        assert!(ExtHeaderRepr::new(MIB, 65_549).is_some());
        assert!(ExtHeaderRepr::new(1 << 30, 1514).is_some());
        assert!(ExtHeaderRepr::new(MIB - 4096, 1514).is_none());
        assert!(ExtHeaderRepr::new((1 << 30) + 4096, 1514).is_none());
        assert!(ExtHeaderRepr::new(MIB + 1, 1514).is_none(), "whole pages");
        assert!(ExtHeaderRepr::new(MIB, 65_550).is_none());
        assert!(ExtHeaderRepr::new(MIB, 13).is_none());
        assert!(ExtHeaderRepr::new(0, 1514).is_none());
        assert!(ExtHeaderRepr::new(u64::MAX, 1514).is_none());
    }

    #[test]
    fn every_bad_field_is_refused() {
        let good = ExtHeaderRepr::new(2 * MIB, 9000).unwrap().to_bytes();
        let parse =
            |b: &[u8], size| ExtHeaderRepr::parse(&ExtHeader::new_checked(b).unwrap(), size);
        assert!(parse(&good, Some(2 * MIB)).is_ok());
        assert!(matches!(
            parse(&good, Some(3 * MIB)),
            Err(ExtError::BadRingSize { .. })
        ));
        let poke = |off: usize, v: u32| {
            let mut b = good.clone();
            b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
            parse(&b, Some(2 * MIB))
        };
        assert!(matches!(
            poke(field::MAGIC, crate::wire::MAGIC),
            Err(ExtError::BadMagic(_))
        ));
        assert_eq!(poke(field::FORMAT, 2), Err(ExtError::BadFormat(2)));
        for off in [
            field::HEADER_LEN,
            field::FRAME_HEADER_LEN,
            field::READER_SLOTS,
            field::READER_SLOT_LEN,
            field::READER_TABLE,
        ] {
            assert!(
                matches!(poke(off, 7), Err(ExtError::BadLayout { .. })),
                "{off}"
            );
        }
        assert!(matches!(
            poke(field::RING_SIZE, 12345),
            Err(ExtError::BadRingSize { .. })
        ));
        assert_eq!(
            poke(field::MAX_FRAME, 70_000),
            Err(ExtError::BadMaxFrame(70_000))
        );
        assert_eq!(poke(field::FLAGS, 2), Err(ExtError::BadFlags(2)));
        assert_eq!(poke(field::FLAGS, 3), Err(ExtError::BadFlags(3)));
        let ring = (2 * MIB - 8192) as u32;
        assert_eq!(
            poke(field::FIRST, ring + 1),
            Err(ExtError::BadFirst(ring + 1))
        );
        assert!(poke(field::FIRST, ring).is_ok());
        assert_eq!(poke(field::LAST, ring), Err(ExtError::BadLast(ring)));
    }

    #[test]
    fn views_never_panic_on_short_input() {
        assert!(ExtHeader::new_checked(&[0u8; EXT_FIELDS_LEN - 1][..]).is_err());
        let h = ExtHeader::new_checked(&[0u8; EXT_FIELDS_LEN][..]).unwrap();
        assert!(h.reader(0).is_none(), "table not in the buffer");
        assert!(ReaderSlot::new_checked(&[0u8; 63][..]).is_err());
        let mut b = [0u8; READER_SLOT_LEN];
        b[slot::FLAGS..slot::FLAGS + 4].copy_from_slice(&3u32.to_ne_bytes());
        b[slot::POSITION..slot::POSITION + 8].copy_from_slice(&77u64.to_ne_bytes());
        let s = ReaderSlot::new_checked(&b[..]).unwrap();
        assert!(!s.flags().is_active(), "stalled readers are not waited for");
        assert_eq!(s.position(), 77);
        assert!(SlotFlags(SlotFlags::ACTIVE).is_active());
    }
}
