//! Ring arithmetic of the bus, sans I/O.
//!
//! Everything here works on a [`Region`] (the data region of a bus, or any
//! byte buffer standing in for one), shaped by a [`Geometry`] (the ring's
//! size and the longest frame it carries), and a [`Control`] (the header
//! fields `gen`, `first`, `last`), which the caller loads and stores while
//! holding the bus lock. The rules are NetBSD's `shmif_busops.c` (bus
//! version 3), with one deliberate fix in the reader's resync (see
//! [`Reader::step`]) and one optional policy of this crate's on overruns
//! ([`Resync`]).
//!
//! Nothing in this module trusts what it reads: every length and offset is
//! checked, every loop is bounded, and bad values surface as [`Corrupt`].

use crate::wire::{FrameHeaderRepr, DATA_SIZE, FRAME_HEADER_LEN, MAX_FRAME_LEN};

/// The shape of a ring: its size in bytes and the longest frame payload it
/// carries. A version-3 bus is [`Geometry::V3`] (1,048,544 bytes, frames
/// of at most 1514); other geometries are for tests, fuzzing and larger
/// bus formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Geometry {
    /// Size of the ring (the data region) in bytes.
    pub size: u32,
    /// Longest frame payload (Ethernet frame without FCS) in bytes; a
    /// header claiming more is corruption.
    pub max_frame_len: u32,
    /// Whether the ring may hold skip records ([`Entry::Skip`]): only an
    /// extended bus that says so in its header. On any other ring a
    /// header's padding word means nothing, as on NetBSD's.
    pub skips: bool,
}

impl Default for Geometry {
    fn default() -> Self {
        Geometry::V3
    }
}

impl Geometry {
    /// Smallest ring [`Geometry::new`] accepts: room for the two empty
    /// entries a [`reset`] writes and a minimal frame.
    pub const MIN_SIZE: u32 = 64;

    /// A NetBSD bus, version 3: a 1 MiB file less its 32-byte header, and
    /// Ethernet frames of at most 1514 bytes.
    pub const V3: Geometry = Geometry {
        size: DATA_SIZE,
        max_frame_len: MAX_FRAME_LEN as u32,
        skips: false,
    };

    /// A ring of `size` bytes carrying frames of at most `max_frame_len`
    /// bytes; `None` if `size` is under [`Geometry::MIN_SIZE`]. (Frames
    /// must also fit in half the ring; [`append`] refuses longer ones.)
    pub const fn new(size: u32, max_frame_len: u32) -> Option<Geometry> {
        if size < Self::MIN_SIZE {
            return None;
        }
        Some(Geometry {
            size,
            max_frame_len,
            skips: false,
        })
    }

    /// The geometry an extended bus's validated header describes (skip
    /// records allowed where its flags say so); `None` for a ring under
    /// [`Geometry::MIN_SIZE`].
    pub fn of_extended(h: &crate::wire::ext::ExtHeaderRepr) -> Option<Geometry> {
        let g = Geometry::new(h.ring_size, h.max_frame)?;
        Some(if h.skips { g.with_skips() } else { g })
    }

    /// This geometry on a ring that may hold skip records (an extended
    /// bus with [`crate::wire::ext::EXT_FLAG_SKIPS`]).
    pub const fn with_skips(self) -> Geometry {
        Geometry {
            skips: true,
            ..self
        }
    }

    /// A ring of `size` bytes with the version-3 frame limit (1514).
    pub const fn with_size(size: u32) -> Option<Geometry> {
        Self::new(size, MAX_FRAME_LEN as u32)
    }

    /// Whether a frame of `len` payload bytes may be appended: at most
    /// the frame limit, and header and payload under half the ring
    /// (NetBSD's `len < DATASIZE/2`, or eviction would walk over the frame
    /// being written).
    pub const fn fits(&self, len: usize) -> bool {
        len <= self.max_frame_len as usize && FRAME_HEADER_LEN + len < self.size as usize / 2
    }

    /// The largest number of bytes a receive buffer needs.
    pub const fn max_frame(&self) -> usize {
        self.max_frame_len as usize
    }
}

/// Storage for a ring of frames: the bus's data region, or a plain buffer.
/// Its shape comes from the [`Geometry`] the ring functions are given.
///
/// Offsets are in `0..=geometry.size`; callers never pass a range that
/// ends past it. Storage shorter than the geometry reads as unchanged
/// bytes and ignores writes past its end (never a panic).
pub trait Region {
    /// Copies `buf.len()` bytes starting at `off` into `buf`.
    fn read(&self, off: u32, buf: &mut [u8]);
    /// Copies `data` to `off`.
    fn write(&mut self, off: u32, data: &[u8]);
    /// The [`FRAME_HEADER_LEN`] bytes at `off`, which the caller keeps
    /// within the ring (`off + 24 <= size`): an entry's header, or the
    /// first bytes of a frame that a reader's filter looks at. The ring
    /// code reads a header for every entry it passes, several for each
    /// frame written: a copy of a fixed size is a few moves where
    /// [`Region::read`]'s copy of any length is a call, whose stores the
    /// parse then waits on.
    fn read_header(&self, off: u32) -> [u8; FRAME_HEADER_LEN] {
        let mut raw = [0u8; FRAME_HEADER_LEN];
        self.read(off, &mut raw);
        raw
    }
    /// A hint, and nothing more, that the bytes `off..off + len` (cut at
    /// the end of the region) are about to be written: shared memory
    /// fetches their cache lines for writing now, while the writer still
    /// copies the frame before them, so that its stores do not each wait
    /// for another processor to give a line up (BENCHMARKS.md, "Lines
    /// fetched for writing"). Nothing is read or written; the default does
    /// nothing.
    fn prefetch_for_write(&self, off: u32, len: u32) {
        let _ = (off, len);
    }
}

impl Region for [u8] {
    fn read(&self, off: u32, buf: &mut [u8]) {
        let off = off as usize;
        if let Some(src) = self.get(off..off + buf.len()) {
            buf.copy_from_slice(src);
        }
    }
    fn write(&mut self, off: u32, data: &[u8]) {
        let off = off as usize;
        if let Some(dst) = self.get_mut(off..off + data.len()) {
            dst.copy_from_slice(data);
        }
    }
    #[inline]
    fn read_header(&self, off: u32) -> [u8; FRAME_HEADER_LEN] {
        let off = off as usize;
        let mut raw = [0u8; FRAME_HEADER_LEN];
        if let Some(src) = self.get(off..off + FRAME_HEADER_LEN) {
            raw.copy_from_slice(src);
        }
        raw
    }
}

impl Region for Vec<u8> {
    fn read(&self, off: u32, buf: &mut [u8]) {
        self.as_slice().read(off, buf)
    }
    fn write(&mut self, off: u32, data: &[u8]) {
        self.as_mut_slice().write(off, data)
    }
    #[inline]
    fn read_header(&self, off: u32) -> [u8; FRAME_HEADER_LEN] {
        self.as_slice().read_header(off)
    }
}

/// The ring's shared state: the bus header's `gen`, `first` and `last`,
/// and on a ring with skip records the two words that keep loss counts
/// exact across them (0 on every other ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Control {
    /// How many times writers have wrapped past the end of the ring.
    pub gen: u64,
    /// Offset of the oldest intact frame; `size` means nothing was evicted.
    pub first: u32,
    /// Offset of the newest frame's header.
    pub last: u32,
    /// Ring bytes passed over by every skip record ever written (header
    /// and length of each): subtracted from a lapped reader's distance,
    /// which counts positions, so that its loss counts frames' bytes only.
    pub skipped: u64,
    /// Linear position of the newest skip record's header (when
    /// `skipped` is not 0): the only skip record a reader resynchronised
    /// to the oldest frame can find still ahead of it.
    pub last_skip: u64,
}

impl Control {
    /// The state of a freshly initialised ring of this geometry.
    pub fn fresh(geom: Geometry) -> Self {
        Control {
            gen: 0,
            first: geom.size,
            last: 0,
            ..Control::default()
        }
    }

    /// Of `skipped`, the bytes that lie before linear position `at`, for
    /// an `at` no older than one ring before the writers' cursor (where
    /// only the newest skip record can lie at or past it: a lap holds at
    /// most one, at its end).
    fn skipped_before(&self, size: u32, at: u128) -> u64 {
        if self.skipped == 0 || u128::from(self.last_skip) < at {
            return self.skipped;
        }
        let span = u64::from(size) - self.last_skip % u64::from(size.max(1));
        self.skipped.saturating_sub(span)
    }
}

/// Something in the ring that cannot be right: the bus was written by a
/// broken or hostile peer, or damaged. Nothing is read or written past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corrupt {
    /// `first` or `last` lies outside the ring.
    #[error("bus header field {field} = {value:#x} lies outside the ring")]
    Offset {
        /// Which header field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// A frame header claims a length no peer may write.
    #[error("frame header at ring offset {at:#x} claims length {len} (at most {max} is possible)")]
    Length {
        /// Offset of the frame header.
        at: u32,
        /// The claimed payload length.
        len: u32,
        /// The geometry's frame limit.
        max: u32,
    },
    /// A skip record that does not run from a header inside the ring
    /// (past offset 0) to the ring's end exactly.
    #[error("skip record at ring offset {at:#x} of length {len} does not end at the ring's end")]
    Skip {
        /// Offset of the record's header.
        at: u32,
        /// The length it claims.
        len: u32,
    },
    /// Following the frame chain did not land where it must, or did not
    /// terminate.
    #[error("the frame chain from ring offset {at:#x} does not end at the newest frame")]
    Chain {
        /// Where the walk started.
        at: u32,
    },
}

/// `shmif_advance`: `off + delta` modulo the ring size. NetBSD subtracts
/// the size once, which is the same whenever `off <= size` and `delta <
/// size`, as on any real bus; the full reduction keeps small rings (tests,
/// fuzzing) in range too.
#[inline]
fn advance(size: u32, off: u32, delta: u32) -> u32 {
    let size = u64::from(size.max(1));
    let n = u64::from(off) + u64::from(delta);
    // Within one lap of the end, as nearly always: a subtraction, not a
    // division (this runs several times for every frame).
    let n = if n < size {
        n
    } else if n - size < size {
        n - size
    } else {
        n % size
    };
    u32::try_from(n).unwrap_or(0)
}

/// `shmif_busread`: reads `buf.len()` bytes at `off`, continuing at offset 0
/// past the end. Returns the offset after the bytes and whether the read
/// reached the end of the ring (NetBSD's `wrap`).
///
/// `off` may equal the ring size (NetBSD's `first` before any eviction);
/// then everything is read from offset 0 and the read counts as a wrap.
pub fn read_wrapped<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    off: u32,
    buf: &mut [u8],
) -> (u32, bool) {
    let size = geom.size.max(1);
    let off = off.min(size);
    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX).min(size);
    let chunk = len.min(size - off);
    let (head, tail) = buf.split_at_mut(chunk as usize);
    region.read(off, head);
    let wrapped = off + chunk == size;
    let rest = (len - chunk) as usize;
    if rest == 0 {
        // `off + chunk` <= `size`: the remainder without a division.
        return (if wrapped { 0 } else { off + chunk }, wrapped);
    }
    let n = rest.min(tail.len());
    region.read(0, &mut tail[..n]);
    (len - chunk, wrapped)
}

/// The padding word (bytes 12..16 of an entry's header) that makes the
/// entry a skip record on a ring whose geometry allows them: the bytes
/// `SKIP` in little-endian order.
pub const SKIP_MARK: u32 = u32::from_le_bytes(*b"SKIP");

/// What an entry of the ring is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A frame: its header, then `len` payload bytes.
    Frame(FrameHeaderRepr),
    /// A skip record (extended buses only): a writer ended the lap early,
    /// so that the ring's working set stays small while readers keep up.
    /// Its `len` bytes after the header are not data: they run to the end
    /// of the ring exactly, so the next entry is at offset 0 of the next
    /// generation. Readers pass over it; nobody delivers it.
    Skip {
        /// Bytes after the header up to the ring's end.
        len: u32,
    },
}

impl Entry {
    /// Ring bytes the entry takes, its header included.
    #[inline]
    pub fn span(&self) -> u32 {
        let len = match self {
            Entry::Frame(h) => h.len,
            Entry::Skip { len } => *len,
        };
        (FRAME_HEADER_LEN as u32).saturating_add(len)
    }
}

/// The lowest ring offset a skip record may start at: past the longest
/// frame and two headers. The frame a lap starts with then never reaches
/// the record that ended the lap before (the eviction walk would step
/// from that record to offset 0, onto the frame being written).
#[inline]
fn skip_floor(geom: Geometry) -> u64 {
    u64::from(geom.max_frame_len.min(geom.size / 2)) + 2 * FRAME_HEADER_LEN as u64
}

/// The 24 bytes of the skip record at ring offset `at` (from there to the
/// ring's end).
fn skip_header(geom: Geometry, at: u32) -> [u8; FRAME_HEADER_LEN] {
    let len = geom.size.saturating_sub(at + FRAME_HEADER_LEN as u32);
    let mut raw = FrameHeaderRepr {
        len,
        ..FrameHeaderRepr::default()
    }
    .to_bytes();
    raw[12..16].copy_from_slice(&SKIP_MARK.to_ne_bytes());
    raw
}

/// Reads the entry at `off`: a frame (its length checked against the
/// frame limit) or, where the geometry allows them, a skip record (which
/// must start past offset 0 with its whole header in the ring and end at
/// the ring's end exactly).
#[inline]
pub fn entry_at<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    off: u32,
) -> Result<Entry, Corrupt> {
    if off > geom.size {
        return Err(Corrupt::Offset {
            field: "frame offset",
            value: off,
        });
    }
    let raw = if u64::from(off) + FRAME_HEADER_LEN as u64 <= u64::from(geom.size) {
        region.read_header(off)
    } else {
        let mut raw = [0u8; FRAME_HEADER_LEN];
        read_wrapped(geom, region, off, &mut raw);
        raw
    };
    let h = FrameHeaderRepr::from_bytes(&raw);
    if geom.skips && raw[12..16] == SKIP_MARK.to_ne_bytes() {
        let at = off % geom.size.max(1);
        let end = u64::from(at) + FRAME_HEADER_LEN as u64 + u64::from(h.len);
        if u64::from(at) < skip_floor(geom) || end != u64::from(geom.size) {
            return Err(Corrupt::Skip { at, len: h.len });
        }
        return Ok(Entry::Skip { len: h.len });
    }
    if h.len > geom.max_frame_len {
        return Err(Corrupt::Length {
            at: off,
            len: h.len,
            max: geom.max_frame_len,
        });
    }
    Ok(Entry::Frame(h))
}

/// Reads the frame header at `off`, rejecting impossible lengths (and a
/// skip record, which is not a frame: [`entry_at`] reads either).
#[inline]
pub fn header_at<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    off: u32,
) -> Result<FrameHeaderRepr, Corrupt> {
    match entry_at(geom, region, off)? {
        Entry::Frame(h) => Ok(h),
        Entry::Skip { len } => Err(Corrupt::Skip { at: off, len }),
    }
}

/// The writers' cursor as a linear position (generation × ring size +
/// offset): where the next frame goes, the end of everything published.
/// What a registered reader may read up to ([`Reader::step_window`]).
pub fn cursor<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    ctl: &Control,
) -> Result<u64, Corrupt> {
    check_control(geom, ctl)?;
    let end = next_offset(geom, region, ctl.last)?;
    // A newest frame that reaches the end of the ring was a wrap: its end
    // (offset 0 or a little past it) is in the current generation.
    Ok(ctl
        .gen
        .wrapping_mul(u64::from(geom.size))
        .wrapping_add(u64::from(end)))
}

/// `end` as the end of a window a registered reader at linear position
/// `pos` may read without the lock: after `pos` and at most one ring
/// further; `None` for anything else (a stale, torn or hostile value).
#[inline]
pub fn window_end(geom: Geometry, pos: u64, end: u64) -> Option<u64> {
    (end > pos && end - pos <= u64::from(geom.size)).then_some(end)
}

/// `shmif_nextpktoff`: the offset right after the entry (a frame or a
/// skip record) whose header is at `off`.
#[inline]
pub fn next_offset<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    off: u32,
) -> Result<u32, Corrupt> {
    let e = entry_at(geom, region, off)?;
    Ok(advance(geom.size, off, e.span()))
}

/// Checks that `first` and `last` lie in the ring.
#[inline]
pub fn check_control(geom: Geometry, c: &Control) -> Result<(), Corrupt> {
    if c.first > geom.size {
        return Err(Corrupt::Offset {
            field: "first",
            value: c.first,
        });
    }
    if c.last >= geom.size {
        return Err(Corrupt::Offset {
            field: "last",
            value: c.last,
        });
    }
    Ok(())
}

/// What a writer checks, cheaply, before it appends: `first` and `last`
/// lie in the ring, they differ once anything was evicted (NetBSD asserts
/// it), and the newest frame's header claims a possible length. A ring
/// that fails this is to be [`reset`] before writing. The eviction walk of
/// [`append`] checks every frame it passes on top of this.
pub fn check_writable<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    c: &Control,
) -> Result<(), Corrupt> {
    check_control(geom, c)?;
    if c.first != geom.size && c.first == c.last {
        return Err(Corrupt::Chain { at: c.first });
    }
    next_offset(geom, region, c.last).map(|_| ())
}

/// `shmif_advancefirst`: before `[off, off + n)` is overwritten, moves
/// `first` past every frame the write would damage. Only reads the ring.
/// (Inlined: a call's register saves are stores, which a writer waits on.)
#[inline(always)]
fn evict<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    first: &mut u32,
    off: u32,
    n: u32,
) -> Result<(), Corrupt> {
    let start = *first;
    // Each step moves `first` by at least one header; more steps than the
    // ring holds headers means the chain loops.
    let mut budget = geom.size / FRAME_HEADER_LEN as u32 + 2;
    while u64::from(off) <= u64::from(*first) + FRAME_HEADER_LEN as u64
        && u64::from(off) + u64::from(n) > u64::from(*first)
    {
        if budget == 0 {
            return Err(Corrupt::Chain { at: start });
        }
        budget -= 1;
        *first = next_offset(geom, region, *first)?;
    }
    Ok(())
}

/// The contiguous pieces that writing `len` bytes at `off` splits into, as
/// `shmif_buswrite` writes them: `(offset, bytes, evict_len)`, where the
/// eviction length counts one extra byte when the piece reaches the end.
#[inline]
fn pieces(size: u32, off: u32, len: u32) -> ([(u32, u32, u32); 2], usize, bool) {
    let chunk = len.min(size - off);
    let filled = off + chunk == size;
    let first = (off, chunk, chunk + u32::from(filled));
    let rest = len - chunk;
    if rest == 0 {
        ([first, (0, 0, 0)], 1, filled)
    } else {
        ([first, (0, rest, rest)], 2, filled)
    }
}

/// Where an appended frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the frame's header (the new `last`).
    pub at: u32,
    /// Whether the frame reached the end of the ring (`gen` was bumped).
    pub wrapped: bool,
    /// Where the next entry goes: the offset just past this one (what
    /// [`next_offset`] of the new `last` gives), for [`append_at`].
    pub next: u32,
}

/// A region as it will be once `pending` pieces are written: reads see the
/// planned bytes. Lets `append` plan its evictions before writing anything.
struct Overlay<'a, R: Region + ?Sized> {
    base: &'a R,
    pending: &'a [(u32, &'a [u8])],
}

impl<R: Region + ?Sized> Overlay<'_, R> {
    /// Puts the planned bytes over `buf`, which holds the base's bytes at
    /// `off`.
    fn patch(&self, off: u32, buf: &mut [u8]) {
        let (lo, hi) = (off as usize, off as usize + buf.len());
        for &(poff, bytes) in self.pending {
            let (plo, phi) = (poff as usize, poff as usize + bytes.len());
            let (a, b) = (lo.max(plo), hi.min(phi));
            if a < b {
                buf[a - lo..b - lo].copy_from_slice(&bytes[a - plo..b - plo]);
            }
        }
    }
}

impl<R: Region + ?Sized> Region for Overlay<'_, R> {
    fn read(&self, off: u32, buf: &mut [u8]) {
        self.base.read(off, buf);
        self.patch(off, buf);
    }
    fn write(&mut self, _off: u32, _data: &[u8]) {}
    fn read_header(&self, off: u32) -> [u8; FRAME_HEADER_LEN] {
        let mut raw = self.base.read_header(off);
        self.patch(off, &mut raw);
        raw
    }
}

/// Appends one frame after `last`, evicting the oldest frames it overwrites
/// and bumping `gen` if it reaches the end of the ring, exactly as NetBSD's
/// `shmif_start` does. On error nothing has been written and `ctl` is
/// unchanged.
///
/// NetBSD evicts before copying each piece, so its eviction walk can read
/// bytes this frame has just written (on a ring not much larger than a
/// frame). The walk here runs over an overlay of the planned pieces, which
/// gives the same result while writing nothing until the plan is known to be
/// sound: a corrupt chain is an error, not a half-written frame.
pub fn append<R: Region + ?Sized>(
    geom: Geometry,
    region: &mut R,
    ctl: &mut Control,
    header: &FrameHeaderRepr,
    payload: &[u8],
) -> Result<Appended, Corrupt> {
    append_with(geom, region, ctl, header, payload, |_| {})
}

/// [`append`], calling `publish_first` with the new `first` after the plan
/// is made and before the first byte is written. A writer stores it to the
/// bus header there (as NetBSD does before each copy), so that a writer
/// killed mid-copy leaves a chain from `first` to `last` that is still
/// intact: nothing it overwrote is reachable from `first`.
pub fn append_with<R: Region + ?Sized, F: FnOnce(u32)>(
    geom: Geometry,
    region: &mut R,
    ctl: &mut Control,
    header: &FrameHeaderRepr,
    payload: &[u8],
    publish_first: F,
) -> Result<Appended, Corrupt> {
    check_control(geom, ctl)?;
    let at = next_offset(geom, &*region, ctl.last)?;
    append_at(geom, region, ctl, at, header, payload, publish_first)
}

/// [`append_with`] for a writer that knows where the frame goes: `at` is
/// the [`Appended::next`] of its previous append to this ring, made on this
/// same `ctl` with nothing written in between (one hold of the lock). That
/// saves reading back, and checking again, the header it has just written,
/// for every frame of a batch. `at` and the control words are checked to
/// lie in the ring; an `at` that is not where the newest entry ends
/// breaks the chain as any wrong write would (the next peer to check it
/// resets the ring), so pass only what an append returned.
pub fn append_at<R: Region + ?Sized, F: FnOnce(u32)>(
    geom: Geometry,
    region: &mut R,
    ctl: &mut Control,
    at: u32,
    header: &FrameHeaderRepr,
    payload: &[u8],
    publish_first: F,
) -> Result<Appended, Corrupt> {
    let size = geom.size;
    check_control(geom, ctl)?;
    if at >= size {
        return Err(Corrupt::Offset {
            field: "frame offset",
            value: at,
        });
    }
    if !geom.fits(payload.len()) || header.len as usize != payload.len() {
        return Err(Corrupt::Length {
            at: ctl.last,
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            max: geom.max_frame_len,
        });
    }
    let hdr = header.to_bytes();

    // Nearly always, header and payload lie in one stretch that ends short
    // of the ring's end: the same two evictions and writes as the general
    // plan below, without its piece tables. Those cost tens of stores to
    // the stack a frame, and a writer's stores wait their turn behind the
    // frame copy's (BENCHMARKS.md, "The writer's own stores").
    let span = FRAME_HEADER_LEN as u64 + payload.len() as u64;
    if u64::from(at) + span < u64::from(size) {
        let pay_off = at + FRAME_HEADER_LEN as u32;
        let mut first = ctl.first;
        evict(geom, &*region, &mut first, at, FRAME_HEADER_LEN as u32)?;
        // Only a walk that reaches the header just planned reads it; the
        // overlay shows it the header as it will be, as the plan does.
        let pending = [(at, &hdr[..])];
        let view = Overlay {
            base: &*region,
            pending: &pending,
        };
        evict(geom, &view, &mut first, pay_off, payload.len() as u32)?;
        publish_first(first);
        region.write(at, &hdr);
        region.write(pay_off, payload);
        ctl.first = first;
        ctl.last = at;
        return Ok(Appended {
            at,
            wrapped: false,
            next: (u64::from(at) + span) as u32,
        });
    }

    // Plan: the pieces of the header, then of the payload.
    let (hp, hn, hfill) = pieces(size, at, FRAME_HEADER_LEN as u32);
    let pay_off = if hn == 2 {
        hp[1].1
    } else {
        advance(size, at, FRAME_HEADER_LEN as u32)
    };
    let (pp, pn, pfill) = pieces(size, pay_off, payload.len() as u32);
    let mut planned: [(u32, &[u8], u32); 4] = [(0, &[], 0); 4];
    let mut count = 0;
    let mut src = 0usize;
    for &(off, len, n) in &hp[..hn] {
        planned[count] = (off, &hdr[src..src + len as usize], n);
        src += len as usize;
        count += 1;
    }
    let mut src = 0usize;
    for &(off, len, n) in &pp[..pn] {
        planned[count] = (off, &payload[src..src + len as usize], n);
        src += len as usize;
        count += 1;
    }

    let mut first = ctl.first;
    let mut written: [(u32, &[u8]); 4] = [(0, &[]); 4];
    for (k, &(off, bytes, n)) in planned[..count].iter().enumerate() {
        let view = Overlay {
            base: &*region,
            pending: &written[..k],
        };
        evict(geom, &view, &mut first, off, n)?;
        written[k] = (off, bytes);
    }

    publish_first(first);
    for &(off, bytes) in &written[..count] {
        region.write(off, bytes);
    }
    let wrapped = hfill || pfill;
    ctl.first = first;
    ctl.last = at;
    if wrapped {
        ctl.gen = ctl.gen.wrapping_add(1);
    }
    Ok(Appended {
        at,
        wrapped,
        next: advance(size, at, FRAME_HEADER_LEN as u32 + payload.len() as u32),
    })
}

/// Ends the lap early: appends a skip record from the end of the newest
/// entry to the end of the ring, evicting what that span held (as a frame
/// reaching the end would) and bumping `gen`, so that the next frame goes
/// at offset 0. `publish_first` is called as in [`append_with`]. Refused
/// (nothing written) where the geometry has no skip records, or where the
/// newest entry ends at offset 0 or within a header of the ring's end
/// (there is nothing to skip, or no room for the record's header).
pub fn append_skip<R: Region + ?Sized, F: FnOnce(u32)>(
    geom: Geometry,
    region: &mut R,
    ctl: &mut Control,
    publish_first: F,
) -> Result<Appended, Corrupt> {
    let size = geom.size;
    check_control(geom, ctl)?;
    let at = next_offset(geom, &*region, ctl.last)?;
    if !geom.skips
        || u64::from(at) < skip_floor(geom)
        || at > size.saturating_sub(FRAME_HEADER_LEN as u32)
    {
        return Err(Corrupt::Skip { at, len: 0 });
    }
    let raw = skip_header(geom, at);
    // The record claims everything up to the end of the ring: evict as a
    // write of all of it would, the extra byte of a piece that reaches
    // the end included (it evicts the entry at offset 0 of a ring never
    // lapped). The walk reads the entries as they are, before the
    // record's header replaces whatever began at `at`.
    let mut first = ctl.first;
    evict(geom, &*region, &mut first, at, size - at + 1)?;
    publish_first(first);
    region.write(at, &raw);
    ctl.first = first;
    ctl.last = at;
    ctl.skipped = ctl.skipped.wrapping_add(u64::from(size - at));
    ctl.last_skip = ctl
        .gen
        .wrapping_mul(u64::from(size))
        .wrapping_add(u64::from(at));
    ctl.gen = ctl.gen.wrapping_add(1);
    Ok(Appended {
        at,
        wrapped: true,
        next: 0,
    })
}

/// Checks that the ring is consistent: following the frame chain from
/// `first` (from offset 0 while nothing was evicted) lands exactly on `last`,
/// every header on the way and at `last` claims a possible length, the
/// chain up to the end of the newest frame fits in one lap, and `first`
/// differs from `last` once anything was evicted.
///
/// This is what a peer that takes over the lock of a dead holder, or
/// attaches, checks before trusting the ring.
pub fn check_chain<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    ctl: &Control,
) -> Result<(), Corrupt> {
    let size = geom.size;
    check_control(geom, ctl)?;
    let start = if ctl.first == size { 0 } else { ctl.first };
    // NetBSD asserts that `first` and `last` differ once anything has been
    // evicted; appending to such a ring would evict the frame being written.
    if ctl.first != size && ctl.first == ctl.last {
        return Err(Corrupt::Chain { at: start });
    }
    let mut off = start;
    let mut travelled: u64 = 0;
    loop {
        let span = entry_at(geom, region, off)?.span();
        travelled += u64::from(span);
        // Everything from `first` to the end of the newest frame must fit
        // in one lap, or the newest frame overwrote the oldest.
        if travelled > u64::from(size) {
            return Err(Corrupt::Chain { at: start });
        }
        if off == ctl.last {
            return Ok(());
        }
        off = advance(size, off, span);
    }
}

/// Resets a ring whose contents cannot be trusted, so that every reader,
/// this crate's and NetBSD's, resynchronises: two zero-length entries at
/// offsets 0 and 24 (`first` = 0, `last` = 24, which differ as NetBSD
/// asserts), and the generation moved on by two, which makes every reader's
/// position invalid (a generation gap over one) so it restarts at `first`.
/// Frames still in the ring are lost; new frames follow at offset 48.
pub fn reset<R: Region + ?Sized>(_geom: Geometry, region: &mut R, ctl: &Control) -> Control {
    let empty = FrameHeaderRepr::default().to_bytes();
    region.write(0, &empty);
    region.write(FRAME_HEADER_LEN as u32, &empty);
    Control {
        gen: ctl.gen.wrapping_add(2),
        first: 0,
        last: FRAME_HEADER_LEN as u32,
        ..*ctl
    }
}

/// What a [`Reader`] does after it was overrun (writers lapped it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resync {
    /// NetBSD's: resume at `first`, the oldest intact frame, and read on
    /// from there.
    #[default]
    Oldest,
    /// Deliver the oldest intact frame, then move on to the newest one,
    /// dropping the backlog between them ([`Overrun::skipped`] counts its
    /// bytes exactly).
    ///
    /// A reader resynchronised to the oldest frame sits where writers
    /// evict next: it is overrun again within a frame or two, and again,
    /// reading the very cache lines the writer is overwriting, so that it
    /// stays slower than the writer and loses frames for as long as the
    /// traffic lasts (measured: a reader good for over 2 Mframes/s kept at
    /// 0.7 against 1.1 offered). Dropping the backlog at once costs at
    /// most one ring of frames more per overrun and gives the reader a
    /// whole ring of slack again. Only the reader's private position
    /// changes, nothing on the bus.
    OldestThenNewest,
}

/// A reader's private position in the ring (NetBSD's `sc_nextpacket` and
/// `sc_devgen`) and its overrun policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    /// Offset of the next frame header to read.
    pub next: u32,
    /// The generation `next` belongs to.
    pub devgen: u64,
    /// What to do after an overrun.
    pub resync: Resync,
    /// Bytes of skip records before the reader's position (the bus's
    /// [`Control::skipped`] as of there), so that what it loses to an
    /// overrun counts frames' bytes only. 0 for a reader made with
    /// [`Reader::new`] (exact on a ring with no skip records).
    pub skipped: u64,
}

/// What a reader lost to an overrun: writers lapped it and overwrote frames
/// it had not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Overrun {
    /// Ring bytes (headers and payloads) skipped to reach the oldest intact
    /// frame. `None` when the distance cannot be trusted: the generation
    /// went backwards or jumped absurdly (a reset after a dead lock holder,
    /// or a hostile peer).
    pub bytes_lost: Option<u64>,
    /// With [`Resync::OldestThenNewest`]: ring bytes (whole frames with
    /// their headers) dropped after the frame this step returned, to move
    /// on to the newest frame. 0 otherwise.
    pub skipped: u64,
}

impl Overrun {
    /// All ring bytes this overrun cost, where knowable.
    pub fn total_bytes(&self) -> Option<u64> {
        self.bytes_lost.map(|b| b + self.skipped)
    }
}

/// The outcome of one [`Reader::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Nothing new on the bus: wait for a wake-up.
    Empty,
    /// A frame was copied into the caller's buffer.
    Frame {
        /// Its header.
        header: FrameHeaderRepr,
        /// Set if the reader had been overrun and resynchronised first.
        overrun: Option<Overrun>,
    },
    /// A frame was passed over without copying it: the `accept` test of
    /// [`Reader::step_filtered`] declined it.
    Passed {
        /// Its header.
        header: FrameHeaderRepr,
        /// Set if the reader had been overrun and resynchronised first.
        overrun: Option<Overrun>,
    },
    /// The ring holds something impossible; the reader skipped to the newest
    /// position it could trust (if any) and returns nothing this step.
    Corrupt(Corrupt),
}

impl Step {
    /// [`Step::Frame`] if the frame was copied, else [`Step::Passed`].
    #[inline]
    fn delivered(copied: bool, header: FrameHeaderRepr, overrun: Option<Overrun>) -> Step {
        if copied {
            Step::Frame { header, overrun }
        } else {
            Step::Passed { header, overrun }
        }
    }
}

/// Shows `accept` the frame's header and its first [`PEEK_LEN`] payload
/// bytes (at ring offset `pay`), and copies the payload into `buf` (as
/// much as fits) if it accepts: what both kinds of reader step do with a
/// frame once they know where it is. Returns whether it copied.
#[inline]
fn offer<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    pay: u32,
    header: &FrameHeaderRepr,
    buf: &mut [u8],
    accept: impl FnOnce(&FrameHeaderRepr, &[u8]) -> bool,
) -> bool {
    let len = header.len as usize;
    let copied = if u64::from(pay) + FRAME_HEADER_LEN as u64 <= u64::from(geom.size) {
        // Nearly always: the first bytes lie before the ring's end, and
        // one fixed-size read takes them (with whatever follows the frame
        // when it is shorter, shown to no one).
        let first = region.read_header(pay);
        accept(header, &first[..len.min(PEEK_LEN)])
    } else {
        let mut peek = [0u8; PEEK_LEN];
        let peek = &mut peek[..len.min(PEEK_LEN)];
        read_wrapped(geom, region, pay, peek);
        accept(header, peek)
    };
    if copied && !buf.is_empty() {
        let n = len.min(buf.len());
        read_wrapped(geom, region, pay, &mut buf[..n]);
    }
    copied
}

/// How many leading bytes of a frame [`Reader::step_filtered`] shows its
/// `accept` test: the Ethernet header (destination, source, EtherType).
pub const PEEK_LEN: usize = 14;

impl Reader {
    /// A reader at `next` in generation `devgen`, with NetBSD's resync.
    pub fn new(next: u32, devgen: u64) -> Self {
        Reader {
            next,
            devgen,
            resync: Resync::Oldest,
            skipped: 0,
        }
    }

    /// A reader that will see only frames appended after now, with
    /// NetBSD's resync ([`Resync::Oldest`]).
    pub fn at_end<R: Region + ?Sized>(
        geom: Geometry,
        region: &R,
        ctl: &Control,
    ) -> Result<Self, Corrupt> {
        check_control(geom, ctl)?;
        let mut r = Reader::new(next_offset(geom, region, ctl.last)?, ctl.gen);
        // Every skip record so far lies before the end.
        r.skipped = ctl.skipped;
        Ok(r)
    }

    /// This reader with another overrun policy.
    pub fn with_resync(mut self, resync: Resync) -> Self {
        self.resync = resync;
        self
    }

    /// NetBSD's `stillvalid_p`: whether `next` has not been overwritten.
    fn still_valid(&self, size: u32, ctl: &Control, end: u32) -> bool {
        let gendiff = ctl.gen.wrapping_sub(self.devgen);
        if gendiff > 1 {
            return false;
        }
        let first = u64::from(ctl.first);
        let mut lastoff = u64::from(end);
        let mut devoff = u64::from(self.next);
        if first >= lastoff {
            lastoff += u64::from(size);
            if gendiff == 0 {
                devoff += u64::from(size);
            }
        } else if gendiff != 0 {
            return false;
        }
        first <= devoff && devoff <= lastoff
    }

    /// Linear position in the stream of ring bytes, for loss accounting.
    fn linear(size: u32, off: u32, gen: u64) -> u128 {
        u128::from(gen) * u128::from(size) + u128::from(off)
    }

    /// One step of NetBSD's `shmif_rcv` loop: if a frame is waiting, copy its
    /// payload into `buf` (which must hold `geom.max_frame_len` bytes; a
    /// shorter buffer gets a truncated copy) and advance.
    ///
    /// After an overrun NetBSD resyncs to `first` with `devgen = gen - 1` if
    /// `first > last`, which misjudges the case where the newest frame itself
    /// wraps and then redelivers old frames forever. This uses the end of the
    /// newest frame instead, `first >= next(last)`, as the bus contract says.
    /// What follows the resync is the reader's [`Resync`] policy.
    pub fn step<R: Region + ?Sized>(
        &mut self,
        geom: Geometry,
        region: &R,
        ctl: &Control,
        buf: &mut [u8],
    ) -> Step {
        self.step_filtered(geom, region, ctl, buf, |_, _| true)
    }

    /// [`Reader::step`], first showing `accept` the frame's header and its
    /// first [`PEEK_LEN`] bytes (fewer if the frame is shorter): the frame
    /// is copied into `buf` only if `accept` returns true, and otherwise
    /// passed over ([`Step::Passed`]). This is how a receiver filters by
    /// destination MAC without copying frames meant for others.
    pub fn step_filtered<R: Region + ?Sized>(
        &mut self,
        geom: Geometry,
        region: &R,
        ctl: &Control,
        buf: &mut [u8],
        accept: impl FnOnce(&FrameHeaderRepr, &[u8]) -> bool,
    ) -> Step {
        let size = geom.size;
        if let Err(e) = check_control(geom, ctl) {
            return Step::Corrupt(e);
        }
        let end = match next_offset(geom, region, ctl.last) {
            Ok(end) => end,
            Err(e) => return Step::Corrupt(e),
        };
        if self.devgen == ctl.gen && end == self.next {
            return Step::Empty;
        }
        let mut overrun = None;
        if !self.still_valid(size, ctl, end) || self.next > size {
            let (next, devgen) = if ctl.first == size {
                // Nothing was ever evicted: the oldest entry is at offset 0.
                (0, ctl.gen)
            } else if ctl.first >= end {
                (ctl.first, ctl.gen.wrapping_sub(1))
            } else {
                (ctl.first, ctl.gen)
            };
            // Positions in the stream of ring bytes are exact (generation
            // times size plus offset) however far behind the reader was;
            // only a generation moved on by a reset, or by a hostile peer,
            // makes the distance meaningless, and it is then left unknown.
            // Skip records in between are not frames: their bytes are not
            // part of the loss.
            let old = Self::linear(size, self.next, self.devgen);
            let new = Self::linear(size, next, devgen);
            let skipped = ctl.skipped_before(size, new);
            let bytes_lost = if new >= old && ctl.gen.wrapping_sub(self.devgen) < (1 << 32) {
                u64::try_from(new - old)
                    .ok()
                    .and_then(|d| d.checked_sub(skipped.checked_sub(self.skipped)?))
            } else {
                None
            };
            self.skipped = skipped;
            overrun = Some(Overrun {
                bytes_lost,
                skipped: 0,
            });
            self.next = next;
            self.devgen = devgen;
        }
        let mut entry = entry_at(geom, region, self.next);
        if let Ok(Entry::Skip { .. }) = entry {
            // A lap that ended early: what follows is at offset 0 of the
            // next generation (a skip record never follows a skip record:
            // none starts at 0).
            let at = self.next;
            self.skipped = self.skipped.wrapping_add(u64::from(size - at));
            self.next = 0;
            self.devgen = self.devgen.wrapping_add(1);
            if self.devgen == ctl.gen && self.next == end {
                // Nothing after it yet. (A reader resynchronised onto a
                // skip record always has frames after it: the record is
                // never both the oldest and the newest entry.)
                return match overrun {
                    None => Step::Empty,
                    Some(_) => Step::Corrupt(Corrupt::Chain { at }),
                };
            }
            entry = entry_at(geom, region, 0);
        }
        let header = match entry {
            Ok(Entry::Frame(h)) => h,
            Ok(Entry::Skip { len }) => {
                self.next = end;
                self.devgen = ctl.gen;
                return Step::Corrupt(Corrupt::Skip { at: 0, len });
            }
            Err(e) => {
                // Skip to the end of the newest frame, which was checked above.
                self.next = end;
                self.devgen = ctl.gen;
                return Step::Corrupt(e);
            }
        };
        // Where the payload starts, and whether the header reached the
        // ring's end (`read_wrapped`'s answer, without reading it again).
        let pay = advance(size, self.next, FRAME_HEADER_LEN as u32);
        let hdr_wrapped = u64::from(self.next) + FRAME_HEADER_LEN as u64 >= u64::from(size);
        let copied = offer(geom, region, pay, &header, buf, accept);
        self.next = advance(size, pay, header.len);
        if hdr_wrapped || (self.next < pay && header.len > 0) {
            self.devgen = self.devgen.wrapping_add(1);
        }
        if let Some(o) = overrun.as_mut() {
            if self.resync == Resync::OldestThenNewest && o.bytes_lost.is_some() {
                o.skipped = self.skip_to_newest(size, ctl, end);
            }
        }
        Step::delivered(copied, header, overrun)
    }

    /// Whether nothing this reader has not read yet was written over: its
    /// next [`Reader::step`] against the same control words would report
    /// no overrun and find no damage. `false` too when the control words
    /// or the newest frame's header are impossible (a step then says
    /// what). With the bus lock held, so that `ctl` and the ring agree,
    /// this is what makes the reader's position safe to register or
    /// publish without copying anything first.
    pub fn is_current<R: Region + ?Sized>(
        &self,
        geom: Geometry,
        region: &R,
        ctl: &Control,
    ) -> bool {
        if check_control(geom, ctl).is_err() {
            return false;
        }
        let Ok(end) = next_offset(geom, region, ctl.last) else {
            return false;
        };
        (self.devgen == ctl.gen && end == self.next)
            || (self.next <= geom.size && self.still_valid(geom.size, ctl, end))
    }

    /// The reader's linear position: generation × ring size + offset of
    /// the next header to read (what a registered reader publishes).
    pub fn position(&self, geom: Geometry) -> u64 {
        self.devgen
            .wrapping_mul(u64::from(geom.size))
            .wrapping_add(u64::from(self.next))
    }

    /// One step over a *window*: the ring bytes from this reader's position
    /// up to linear position `end`, which the caller knows to be published
    /// frames that no writer overwrites while it reads (a registered,
    /// lossless reader of an extended bus: `EXTENDED-FORMAT.md`). No
    /// control words are read, so no lock is needed; the caller checks
    /// afterwards that its standing held (else it discards what it copied,
    /// restores the reader and steps under the lock).
    ///
    /// [`Step::Empty`] at or past `end`; [`Step::Corrupt`] (the reader
    /// unmoved) if the header there is impossible or its frame would end
    /// past `end`; otherwise as [`Reader::step_filtered`], never with an
    /// overrun.
    #[inline]
    pub fn step_window<R: Region + ?Sized>(
        &mut self,
        geom: Geometry,
        region: &R,
        end: u64,
        buf: &mut [u8],
        accept: impl FnOnce(&FrameHeaderRepr, &[u8]) -> bool,
    ) -> Step {
        let size = geom.size;
        let mut at = self.position(geom);
        if at >= end {
            return Step::Empty;
        }
        if self.next >= size {
            return Step::Corrupt(Corrupt::Offset {
                field: "reader position",
                value: self.next,
            });
        }
        let unmoved = *self;
        let mut entry = entry_at(geom, region, self.next);
        if let Ok(Entry::Skip { len }) = entry {
            // The lap ended early; the record must lie in the window too.
            let span = FRAME_HEADER_LEN as u64 + u64::from(len);
            if at.checked_add(span).is_none_or(|e| e > end) {
                return Step::Corrupt(Corrupt::Chain { at: self.next });
            }
            at += span;
            self.skipped = self.skipped.wrapping_add(span);
            self.next = 0;
            self.devgen = at / u64::from(size);
            if at >= end {
                return Step::Empty;
            }
            entry = entry_at(geom, region, 0);
        }
        let header = match entry {
            Ok(Entry::Frame(h)) => h,
            Ok(Entry::Skip { len }) => {
                *self = unmoved;
                return Step::Corrupt(Corrupt::Skip { at: 0, len });
            }
            Err(e) => {
                *self = unmoved;
                return Step::Corrupt(e);
            }
        };
        let len = header.len as usize;
        let span = (FRAME_HEADER_LEN + len) as u64;
        if at.checked_add(span).is_none_or(|e| e > end) {
            let at = self.next;
            *self = unmoved;
            return Step::Corrupt(Corrupt::Chain { at });
        }
        let pay = advance(size, self.next, FRAME_HEADER_LEN as u32);
        let copied = offer(geom, region, pay, &header, buf, accept);
        // Linear arithmetic is the ring's own rule (reaching the end is a
        // wrap, for writers and readers alike), so the next position is
        // exactly `at + span`: the offset moves on by the span, less one
        // ring if it reached the end (a span is under a ring), and the
        // generation by one then. No division on this path, which runs
        // for every frame a registered reader takes.
        let next = u64::from(self.next) + span;
        if next < u64::from(size) {
            self.next = u32::try_from(next).unwrap_or(0);
        } else {
            self.next = u32::try_from(next - u64::from(size)).unwrap_or(0);
            self.devgen = self.devgen.wrapping_add(1);
        }
        Step::delivered(copied, header, None)
    }

    /// Moves the reader on to the newest frame (see
    /// [`Resync::OldestThenNewest`]) and returns the ring bytes skipped (0
    /// if it is there already or cannot tell, and then it stays).
    fn skip_to_newest(&mut self, size: u32, ctl: &Control, end: u32) -> u64 {
        // The newest frame lies in the previous lap if it wrapped.
        let devgen = if end <= ctl.last {
            ctl.gen.wrapping_sub(1)
        } else {
            ctl.gen
        };
        let from = Self::linear(size, self.next, self.devgen);
        let to = Self::linear(size, ctl.last, devgen);
        match u64::try_from(to.wrapping_sub(from)) {
            Ok(dropped) if to > from && u128::from(dropped) < u128::from(size) => {
                // A skip record on the way is not a frame dropped.
                let skipped = ctl.skipped_before(size, to);
                let records = skipped.saturating_sub(self.skipped).min(dropped);
                self.next = ctl.last;
                self.devgen = devgen;
                self.skipped = skipped;
                dropped - records
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Geometry = match Geometry::with_size(4096) {
        Some(g) => g,
        None => panic!(),
    };

    #[test]
    fn a_window_ends_after_the_reader_and_at_most_one_ring_further() {
        let size = u64::from(G.size);
        let pos = 10 * size + 100;
        assert_eq!(window_end(G, pos, pos + 1), Some(pos + 1));
        assert_eq!(window_end(G, pos, pos + size), Some(pos + size));
        assert_eq!(window_end(G, pos, pos), None);
        assert_eq!(window_end(G, pos, pos - 1), None);
        assert_eq!(window_end(G, pos, pos + size + 1), None);
        assert_eq!(window_end(G, pos, u64::MAX), None);
    }

    fn hdr(len: usize, sender: u64) -> FrameHeaderRepr {
        FrameHeaderRepr {
            len: len as u32,
            sec: 1,
            usec: 2,
            sender,
        }
    }

    #[test]
    fn fresh_ring_first_frame_goes_after_placeholder() {
        let mut ring = vec![0u8; 4096];
        let mut ctl = Control::fresh(G);
        let r = Reader::at_end(G, &ring, &ctl).unwrap();
        assert_eq!(r.next, 24);
        let a = append(G, &mut ring, &mut ctl, &hdr(60, 9), &[7u8; 60]).unwrap();
        assert_eq!(a.at, 24);
        assert_eq!(ctl.last, 24);
        assert_eq!(ctl.first, 4096, "nothing evicted yet");
        let mut reader = r;
        let mut buf = [0u8; MAX_FRAME_LEN];
        match reader.step(G, &ring, &ctl, &mut buf) {
            Step::Frame { header, overrun } => {
                assert_eq!(header.len, 60);
                assert_eq!(header.sender, 9);
                assert!(overrun.is_none());
                assert_eq!(&buf[..60], &[7u8; 60]);
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(reader.step(G, &ring, &ctl, &mut buf), Step::Empty);
    }

    #[test]
    fn appending_where_the_last_append_said_is_appending() {
        // Frames of every kind of placement (within the ring, ending at its
        // end, header or payload split across it) and skip records, on a
        // ring that laps many times: a writer that appends at `next` of its
        // previous append leaves the same bytes and control words, and is
        // told the same, as one that reads the newest header each time.
        for geom in [G, GS] {
            let size = geom.size as usize;
            let mut plain = vec![0u8; size];
            let mut chained = plain.clone();
            let (mut pc, mut cc) = (Control::fresh(geom), Control::fresh(geom));
            let mut next = None;
            for k in 0..2000usize {
                let len = 14 + (k * 379) % 1501;
                let payload = vec![(k % 251) as u8; len];
                let h = hdr(len, k as u64);
                let skip = geom.skips && k % 7 == 6;
                let (a, b) = if skip {
                    let a = append_skip(geom, &mut plain, &mut pc, |_| {});
                    let b = append_skip(geom, &mut chained, &mut cc, |_| {});
                    (a, b)
                } else {
                    let a = append(geom, &mut plain, &mut pc, &h, &payload);
                    let at = next.unwrap_or_else(|| next_offset(geom, &chained, cc.last).unwrap());
                    let b = append_at(geom, &mut chained, &mut cc, at, &h, &payload, |_| {});
                    (a, b)
                };
                assert_eq!(a, b, "frame {k}");
                assert_eq!((pc, &plain), (cc, &chained), "frame {k}");
                if let Ok(a) = a {
                    assert_eq!(
                        a.next,
                        next_offset(geom, &plain, pc.last).unwrap(),
                        "frame {k}"
                    );
                    next = Some(a.next);
                }
                check_chain(geom, &plain, &pc).unwrap();
            }
            assert!(pc.gen > 20, "the ring lapped many times");
        }
        // An offset outside the ring is refused, with nothing written.
        let mut ring = vec![0u8; 4096];
        let mut ctl = Control::fresh(G);
        let before = (ring.clone(), ctl);
        let e = append_at(G, &mut ring, &mut ctl, 4096, &hdr(60, 1), &[0; 60], |_| {});
        assert!(
            matches!(e, Err(Corrupt::Offset { value: 4096, .. })),
            "{e:?}"
        );
        assert_eq!((ring, ctl), before);
    }

    #[test]
    fn a_reader_is_current_exactly_while_its_step_would_report_no_overrun() {
        let mut ring = vec![0u8; 4096];
        let mut ctl = Control::fresh(G);
        let mut r = Reader::at_end(G, &ring, &ctl).unwrap();
        assert!(r.is_current(G, &ring, &ctl), "at the end");
        // Appending laps after lap of 300-byte frames: the reader is
        // current until a frame overwrites the one it is at, and its
        // next step reports an overrun exactly when it is not.
        let mut buf = [0u8; MAX_FRAME_LEN];
        let mut seen_stale = false;
        for k in 0..40u8 {
            append(G, &mut ring, &mut ctl, &hdr(300, 1), &[k; 300]).unwrap();
            let mut probe = r;
            let current = r.is_current(G, &ring, &ctl);
            let overrun = match probe.step(G, &ring, &ctl, &mut buf) {
                Step::Frame { overrun, .. } => overrun.is_some(),
                other => panic!("{other:?}"),
            };
            assert_eq!(current, !overrun, "after frame {k}");
            seen_stale |= !current;
        }
        assert!(seen_stale, "the ring lapped the reader");
        // Caught up again: current.
        while let Step::Frame { .. } = r.step(G, &ring, &ctl, &mut buf) {}
        assert!(r.is_current(G, &ring, &ctl));
        // Impossible control words, or a newest header that is: not.
        let bad = Control { last: 5000, ..ctl };
        assert!(!r.is_current(G, &ring, &bad));
        let at = ctl.last as usize;
        ring[at..at + 4].copy_from_slice(&5000u32.to_ne_bytes());
        assert!(!r.is_current(G, &ring, &ctl));
    }

    #[test]
    fn oversized_length_is_corruption_not_a_panic() {
        let mut ring = vec![0u8; 4096];
        let mut ctl = Control::fresh(G);
        append(G, &mut ring, &mut ctl, &hdr(60, 1), &[1u8; 60]).unwrap();
        ring[24..28].copy_from_slice(&5000u32.to_ne_bytes());
        let before = ring.clone();
        assert!(matches!(
            append(G, &mut ring, &mut ctl, &hdr(60, 1), &[1u8; 60]),
            Err(Corrupt::Length { .. })
        ));
        assert!(check_writable(G, &ring, &ctl).is_err());
        assert_eq!(ring, before, "a failed append writes nothing");
        let mut r = Reader::new(24, 0);
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert!(matches!(r.step(G, &ring, &ctl, &mut buf), Step::Corrupt(_)));
    }

    #[test]
    fn the_frame_limit_is_the_geometrys() {
        // A larger bus format: a 4 MiB ring, frames up to 65,549 bytes.
        let big = Geometry::new(4 << 20, 65_549).unwrap();
        let mut ring = vec![0u8; 4 << 20];
        let mut ctl = Control::fresh(big);
        let mut r = Reader::at_end(big, &ring, &ctl).unwrap();
        let payload: Vec<u8> = (0..65_549u32).map(|i| i as u8).collect();
        append(big, &mut ring, &mut ctl, &hdr(65_549, 3), &payload).unwrap();
        let mut buf = vec![0u8; big.max_frame()];
        match r.step(big, &ring, &ctl, &mut buf) {
            Step::Frame { header, .. } => assert_eq!(header.len, 65_549),
            s => panic!("{s:?}"),
        }
        assert_eq!(buf, payload);
        // The same frame is corruption on a v3 ring.
        ring[24..28].copy_from_slice(&65_549u32.to_ne_bytes());
        assert!(matches!(
            header_at(Geometry::V3, &ring, 24),
            Err(Corrupt::Length {
                len: 65_549,
                max: 1514,
                ..
            })
        ));
        assert!(!Geometry::V3.fits(1515));
        assert!(Geometry::V3.fits(1514));
        assert!(Geometry::new(63, 10).is_none());
    }

    #[test]
    fn a_declined_frame_is_not_copied() {
        let mut ring = vec![0u8; 4096];
        let mut ctl = Control::fresh(G);
        let mut r = Reader::at_end(G, &ring, &ctl).unwrap();
        let mut f = vec![0x11u8; 100];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        append(G, &mut ring, &mut ctl, &hdr(100, 1), &f).unwrap();
        append(G, &mut ring, &mut ctl, &hdr(20, 2), &[0x22u8; 20]).unwrap();
        let mut buf = [0u8; MAX_FRAME_LEN];
        let mut seen = Vec::new();
        let s = r.step_filtered(G, &ring, &ctl, &mut buf, |h, peek| {
            seen.push((h.sender, peek.to_vec()));
            false
        });
        assert!(matches!(s, Step::Passed { header, overrun: None } if header.len == 100));
        assert_eq!(seen, vec![(1, f[..PEEK_LEN].to_vec())]);
        assert!(buf.iter().all(|&b| b == 0), "nothing copied");
        match r.step(G, &ring, &ctl, &mut buf) {
            Step::Frame { header, .. } => assert_eq!(header.sender, 2),
            s => panic!("{s:?}"),
        }
        assert_eq!(r.step(G, &ring, &ctl, &mut buf), Step::Empty);
    }

    #[test]
    fn check_chain_accepts_good_rings_and_reset_resyncs_readers() {
        let mut ring = vec![0u8; 4096];
        let mut ctl = Control::fresh(G);
        check_chain(G, &ring, &ctl).unwrap();
        let mut r = Reader::at_end(G, &ring, &ctl).unwrap();
        for k in 0..40u64 {
            append(
                G,
                &mut ring,
                &mut ctl,
                &hdr(100 + k as usize, k),
                &vec![k as u8; 100 + k as usize],
            )
            .unwrap();
            check_chain(G, &ring, &ctl).unwrap();
            check_writable(G, &ring, &ctl).unwrap();
        }
        // Damage a header in the middle of the chain.
        let start = if ctl.first == 4096 { 0 } else { ctl.first };
        let mid = next_offset(G, &ring, start).unwrap();
        ring[mid as usize..mid as usize + 4].copy_from_slice(&7u32.to_ne_bytes());
        assert!(check_chain(G, &ring, &ctl).is_err());
        let fresh = reset(G, &mut ring, &ctl);
        check_chain(G, &ring, &fresh).unwrap();
        check_writable(G, &ring, &fresh).unwrap();
        assert_eq!(fresh.gen, ctl.gen + 2);
        // A reader from before the reset resyncs and then sees new frames only.
        let mut buf = [0u8; MAX_FRAME_LEN];
        let mut ctl = fresh;
        append(G, &mut ring, &mut ctl, &hdr(60, 99), &[9u8; 60]).unwrap();
        let mut got = Vec::new();
        let mut overran = false;
        for _ in 0..10 {
            match r.step(G, &ring, &ctl, &mut buf) {
                Step::Frame { header, overrun } => {
                    overran |= overrun.is_some();
                    if header.len > 0 {
                        got.push(header.sender);
                    }
                }
                Step::Empty => break,
                s => panic!("{s:?}"),
            }
        }
        assert!(overran);
        assert_eq!(got, vec![99]);
    }

    /// Crash consistency rests on this order: the new `first` is handed to
    /// the publisher before any byte of the frame is written (and the
    /// caller stores `last`/`gen` after `append_with` returns).
    #[test]
    fn append_publishes_first_before_it_writes_a_byte() {
        use std::cell::RefCell;
        struct Logged<'a>(Vec<u8>, &'a RefCell<Vec<&'static str>>);
        impl Region for Logged<'_> {
            fn read(&self, off: u32, buf: &mut [u8]) {
                self.0.read(off, buf)
            }
            fn write(&mut self, off: u32, data: &[u8]) {
                self.1.borrow_mut().push("write");
                self.0.write(off, data)
            }
        }
        let log = RefCell::new(Vec::new());
        let mut ring = Logged(vec![0u8; 4096], &log);
        let mut ctl = Control::fresh(G);
        for k in 0..100u64 {
            log.borrow_mut().clear();
            append_with(
                G,
                &mut ring,
                &mut ctl,
                &hdr(300, k),
                &[k as u8; 300],
                |_| log.borrow_mut().push("first"),
            )
            .unwrap();
            let log = log.borrow();
            assert_eq!(log[0], "first", "frame {k}: {log:?}");
            assert!(log[1..].iter().all(|&e| e == "write") && log.len() >= 3);
        }
    }

    #[test]
    fn bad_control_is_reported() {
        let ring = vec![0u8; 4096];
        let ctl = Control {
            gen: 0,
            first: 5000,
            last: 0,
            ..Control::default()
        };
        let mut r = Reader::new(0, 0);
        let mut buf = [0u8; 64];
        assert!(matches!(r.step(G, &ring, &ctl, &mut buf), Step::Corrupt(_)));
        assert!(check_writable(G, &ring, &ctl).is_err());
        // first == last after an eviction: NetBSD asserts it never happens.
        let same = Control {
            gen: 1,
            first: 24,
            last: 24,
            ..Control::default()
        };
        assert!(check_writable(G, &ring, &same).is_err());
    }

    #[test]
    fn a_window_step_reads_what_a_locked_step_reads_across_wraps() {
        let mut ring = vec![0u8; 4096];
        let mut ctl = Control::fresh(G);
        let mut locked = Reader::at_end(G, &ring, &ctl).unwrap();
        let mut window = locked;
        let (mut a, mut b) = ([0u8; MAX_FRAME_LEN], [0u8; MAX_FRAME_LEN]);
        // Frames of many lengths, so that headers and payloads wrap at
        // every kind of place; each read by both readers at once.
        for n in 0..200usize {
            let len = 14 + (n * 37) % 300;
            let payload: Vec<u8> = (0..len).map(|k| (n + k) as u8).collect();
            append(G, &mut ring, &mut ctl, &hdr(len, 5), &payload).unwrap();
            let end = cursor(G, &ring, &ctl).unwrap();
            let x = locked.step(G, &ring, &ctl, &mut a);
            let y = window.step_window(G, &ring, end, &mut b, |_, _| true);
            match (x, y) {
                (
                    Step::Frame {
                        header: h1,
                        overrun: None,
                    },
                    Step::Frame {
                        header: h2,
                        overrun: None,
                    },
                ) => {
                    assert_eq!(h1, h2);
                    assert_eq!(&a[..len], &payload[..]);
                    assert_eq!(&b[..len], &payload[..]);
                }
                other => panic!("frame {n}: {other:?}"),
            }
            assert_eq!(window, locked, "frame {n}");
            assert_eq!(window.position(G), end, "frame {n}: read up to the cursor");
            assert_eq!(
                window.step_window(G, &ring, end, &mut b, |_, _| true),
                Step::Empty
            );
        }
        assert!(ctl.gen >= 5, "the ring wrapped several times");
    }

    #[test]
    fn a_window_step_refuses_a_frame_past_the_window_or_an_impossible_header() {
        let mut ring = vec![0u8; 4096];
        let mut ctl = Control::fresh(G);
        let start = Reader::at_end(G, &ring, &ctl).unwrap();
        append(G, &mut ring, &mut ctl, &hdr(100, 5), &[1u8; 100]).unwrap();
        let end = cursor(G, &ring, &ctl).unwrap();
        let mut buf = [0u8; MAX_FRAME_LEN];
        // A window that ends inside the frame: nothing is read.
        let mut r = start;
        assert!(matches!(
            r.step_window(G, &ring, end - 1, &mut buf, |_, _| true),
            Step::Corrupt(Corrupt::Chain { .. })
        ));
        assert_eq!(r, start, "unmoved");
        // A header claiming more than the frame limit.
        ring[start.next as usize..start.next as usize + 4]
            .copy_from_slice(&(G.max_frame_len + 1).to_ne_bytes());
        assert!(matches!(
            r.step_window(G, &ring, end + 5000, &mut buf, |_, _| true),
            Step::Corrupt(Corrupt::Length { .. })
        ));
        assert_eq!(r, start, "unmoved");
        // A declined frame is passed over where it lies.
        ring[start.next as usize..start.next as usize + 4].copy_from_slice(&100u32.to_ne_bytes());
        assert!(matches!(
            r.step_window(G, &ring, end, &mut buf, |_, _| false),
            Step::Passed { .. }
        ));
        assert_eq!(r.position(G), end);
    }

    /// An 8 KiB ring that may hold skip records.
    const GS: Geometry = match Geometry::with_size(8192) {
        Some(g) => g.with_skips(),
        None => panic!(),
    };

    /// Appends frame number `k` (its number as the sender, 60 to 209
    /// bytes); returns the ring bytes it takes.
    fn append_numbered(ring: &mut Vec<u8>, ctl: &mut Control, k: u64) -> u64 {
        let len = 60 + (k as usize * 37) % 150;
        append(GS, ring, ctl, &hdr(len, k), &vec![k as u8; len]).unwrap();
        (FRAME_HEADER_LEN + len) as u64
    }

    /// Reads everything up to the cursor, under the lock and as a window;
    /// returns the senders, checking that no overrun happened.
    fn drain(ring: &[u8], ctl: &Control, locked: &mut Reader, window: &mut Reader) -> Vec<u64> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let mut got = Vec::new();
        loop {
            match locked.step(GS, ring, ctl, &mut buf) {
                Step::Frame {
                    header,
                    overrun: None,
                } => {
                    assert!(buf[..header.len as usize]
                        .iter()
                        .all(|&b| b == header.sender as u8));
                    got.push(header.sender);
                }
                Step::Empty => break,
                s => panic!("{s:?}"),
            }
        }
        let end = cursor(GS, ring, ctl).unwrap();
        let mut seen = Vec::new();
        loop {
            match window.step_window(GS, ring, end, &mut buf, |_, _| true) {
                Step::Frame { header, .. } => seen.push(header.sender),
                Step::Empty => break,
                s => panic!("{s:?}"),
            }
        }
        assert_eq!(got, seen, "the window reads what the lock reads");
        assert_eq!(locked.position(GS), end);
        assert_eq!(window.position(GS), end);
        assert_eq!(locked.skipped, ctl.skipped, "skip records passed, counted");
        assert_eq!(window.skipped, ctl.skipped);
        got
    }

    #[test]
    fn a_skip_record_ends_the_lap_and_both_kinds_of_reader_follow_it() {
        let mut ring = vec![0u8; 8192];
        let mut ctl = Control::fresh(GS);
        let mut locked = Reader::at_end(GS, &ring, &ctl).unwrap();
        let mut window = locked;
        let (mut k, mut got) = (0u64, Vec::new());
        for lap in 0..40u32 {
            // A lap of 4,200 to 6,700 bytes, then a skip record, then a
            // few frames of the next lap.
            let stop = 4200 + (lap * 397) % 2500;
            while next_offset(GS, &ring, ctl.last).unwrap() < stop {
                append_numbered(&mut ring, &mut ctl, k);
                k += 1;
            }
            // The readers keep up: what follows the skip record overwrites
            // the start of this lap.
            got.extend(drain(&ring, &ctl, &mut locked, &mut window));
            let (gen, skipped) = (ctl.gen, ctl.skipped);
            let at = next_offset(GS, &ring, ctl.last).unwrap();
            let a = append_skip(GS, &mut ring, &mut ctl, |_| {}).unwrap();
            assert_eq!((a.at, a.wrapped), (at, true));
            assert_eq!(ctl.gen, gen + 1);
            assert_eq!(ctl.skipped, skipped + u64::from(8192 - at));
            assert_eq!(ctl.last_skip, gen * 8192 + u64::from(at));
            assert_eq!(cursor(GS, &ring, &ctl).unwrap(), ctl.gen * 8192);
            assert_eq!(
                entry_at(GS, &ring, at),
                Ok(Entry::Skip {
                    len: 8192 - at - 24
                })
            );
            check_chain(GS, &ring, &ctl).unwrap();
            for _ in 0..lap % 3 {
                append_numbered(&mut ring, &mut ctl, k);
                k += 1;
                check_chain(GS, &ring, &ctl).unwrap();
            }
            // Across the record: to what follows it, or to nothing yet.
            got.extend(drain(&ring, &ctl, &mut locked, &mut window));
        }
        got.extend(drain(&ring, &ctl, &mut locked, &mut window));
        assert_eq!(got, (0..k).collect::<Vec<_>>(), "every frame, in order");
        // A skip record as the newest entry: a reader at the end is empty.
        let mut ring2 = ring.clone();
        let mut ctl2 = ctl;
        // (Nothing to skip before the longest frame and two headers.)
        let mut more = Vec::new();
        while next_offset(GS, &ring2, ctl2.last).unwrap() < 1514 + 48 {
            assert!(append_skip(GS, &mut ring2, &mut ctl2, |_| {}).is_err());
            append_numbered(&mut ring2, &mut ctl2, k + more.len() as u64);
            more.push(k + more.len() as u64);
            assert_eq!(
                drain(&ring2, &ctl2, &mut locked, &mut window),
                vec![*more.last().unwrap()]
            );
        }
        append_skip(GS, &mut ring2, &mut ctl2, |_| {}).unwrap();
        let mut r = Reader::at_end(GS, &ring2, &ctl2).unwrap();
        assert_eq!((r.next, r.devgen), (0, ctl2.gen));
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(r.step(GS, &ring2, &ctl2, &mut buf), Step::Empty);
        assert_eq!(
            drain(&ring2, &ctl2, &mut locked, &mut window),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn a_reader_lapped_across_skip_records_counts_only_frames_as_lost() {
        for resync in [Resync::Oldest, Resync::OldestThenNewest] {
            let mut ring = vec![0u8; 8192];
            let mut ctl = Control::fresh(GS);
            let mut r = Reader::at_end(GS, &ring, &ctl).unwrap().with_resync(resync);
            // Ten laps, most of them ended early, while the reader sleeps.
            let mut written = 0u64;
            for (k, lap) in (0..).zip(0..10u32) {
                let stop = if lap % 4 == 3 { 9000 } else { 4300 + lap * 300 };
                let mut j = 0;
                while next_offset(GS, &ring, ctl.last).unwrap() < stop.min(8000) && j < 200 {
                    written += append_numbered(&mut ring, &mut ctl, k * 1000 + j);
                    j += 1;
                }
                if lap % 4 != 3 {
                    append_skip(GS, &mut ring, &mut ctl, |_| {}).unwrap();
                }
                check_chain(GS, &ring, &ctl).unwrap();
            }
            for j in 0..5 {
                written += append_numbered(&mut ring, &mut ctl, 99_000 + j);
            }
            assert!(ctl.skipped > 8192, "several skip records were written");
            // Every frame byte written since is either delivered or lost.
            let (mut delivered, mut lost) = (0u64, 0u64);
            let mut buf = [0u8; MAX_FRAME_LEN];
            loop {
                match r.step(GS, &ring, &ctl, &mut buf) {
                    Step::Frame { header, overrun } => {
                        delivered += (FRAME_HEADER_LEN + header.len as usize) as u64;
                        if let Some(o) = overrun {
                            lost += o.total_bytes().expect("the distance is known");
                        }
                    }
                    Step::Empty => break,
                    s => panic!("{s:?}"),
                }
            }
            assert!(lost > 0, "{resync:?}");
            assert_eq!(delivered + lost, written, "{resync:?}: exact to the byte");
            assert_eq!(r.skipped, ctl.skipped, "{resync:?}");
        }
    }

    #[test]
    fn skip_records_exist_only_where_the_geometry_allows_them() {
        let plain = Geometry::with_size(8192).unwrap();
        let mut ring = vec![0u8; 8192];
        let mut ctl = Control::fresh(plain);
        for _ in 0..3 {
            append(plain, &mut ring, &mut ctl, &hdr(1500, 1), &[1u8; 1500]).unwrap();
        }
        let (before, c0) = (ring.clone(), ctl);
        assert!(append_skip(plain, &mut ring, &mut ctl, |_| {}).is_err());
        assert_eq!(
            (ring == before, ctl),
            (true, c0),
            "refused, nothing written"
        );
        // The same bytes: a skip record where allowed, an oversized frame
        // (corruption) on a ring of NetBSD's rules.
        let mut ctl2 = ctl;
        append_skip(GS, &mut ring, &mut ctl2, |_| {}).unwrap();
        let at = ctl2.last;
        assert_eq!(
            entry_at(GS, &ring, at),
            Ok(Entry::Skip {
                len: 8192 - at - 24
            })
        );
        assert!(matches!(
            entry_at(plain, &ring, at),
            Err(Corrupt::Length { .. })
        ));
        assert!(matches!(
            header_at(GS, &ring, at),
            Err(Corrupt::Skip { .. })
        ));
    }

    #[test]
    fn an_impossible_skip_record_is_corruption() {
        let mut ring = vec![0u8; 8192];
        let mut ctl = Control::fresh(GS);
        let r0 = Reader::at_end(GS, &ring, &ctl).unwrap();
        for _ in 0..3 {
            append(GS, &mut ring, &mut ctl, &hdr(1500, 1), &[1u8; 1500]).unwrap();
        }
        append_skip(GS, &mut ring, &mut ctl, |_| {}).unwrap();
        let at = ctl.last as usize;
        let mut buf = [0u8; MAX_FRAME_LEN];
        // One byte short of the ring's end.
        ring[at..at + 4].copy_from_slice(&(8192 - at as u32 - 25).to_ne_bytes());
        assert!(matches!(
            entry_at(GS, &ring, at as u32),
            Err(Corrupt::Skip { .. })
        ));
        assert!(check_chain(GS, &ring, &ctl).is_err());
        assert!(check_writable(GS, &ring, &ctl).is_err());
        // As the newest entry it makes the control words unusable.
        let mut r = r0;
        assert!(matches!(
            r.step(GS, &ring, &ctl, &mut buf),
            Step::Corrupt(_)
        ));
        // Inside the chain, a reader reaches it and stops there.
        ring[at..at + 4].copy_from_slice(&(8192 - at as u32 - 24).to_ne_bytes());
        let mut r = Reader::at_end(GS, &ring, &ctl).unwrap();
        r.next = 24 + 24 + 1500;
        r.devgen = 0;
        append(GS, &mut ring, &mut ctl, &hdr(100, 2), &[2u8; 100]).unwrap();
        check_chain(GS, &ring, &ctl).unwrap();
        ring[at..at + 4].copy_from_slice(&(8192 - at as u32 - 23).to_ne_bytes());
        for _ in 0..2 {
            assert!(matches!(
                r.step(GS, &ring, &ctl, &mut buf),
                Step::Frame { .. }
            ));
        }
        assert!(matches!(
            r.step(GS, &ring, &ctl, &mut buf),
            Step::Corrupt(Corrupt::Skip { .. })
        ));
        let _ = r0;
        // A skip record at offset 0 (it would skip a whole lap).
        let mut ring = vec![0u8; 8192];
        ring[0..4].copy_from_slice(&(8192u32 - 24).to_ne_bytes());
        ring[12..16].copy_from_slice(&SKIP_MARK.to_ne_bytes());
        assert!(matches!(
            entry_at(GS, &ring, 0),
            Err(Corrupt::Skip { at: 0, .. })
        ));
        assert!(matches!(
            entry_at(GS, &ring, 8192),
            Err(Corrupt::Skip { at: 0, .. })
        ));
        let mut w = Reader::new(0, 0);
        assert!(matches!(
            w.step_window(GS, &ring, 1 << 20, &mut buf, |_, _| true),
            Step::Corrupt(_)
        ));
        assert_eq!(w, Reader::new(0, 0), "unmoved");
    }

    #[test]
    fn advance_is_the_remainder_of_the_sum() {
        let sizes = [1u32, 2, 64, 4096, DATA_SIZE, u32::MAX];
        for &size in &sizes {
            let offs = [0, 1, size / 2, size.saturating_sub(1), size];
            let deltas = [0, 1, 24, size / 2, size.saturating_sub(1), size, u32::MAX];
            for &off in &offs {
                for &delta in &deltas {
                    let want = (u64::from(off) + u64::from(delta)) % u64::from(size);
                    assert_eq!(
                        u64::from(advance(size, off, delta)),
                        want,
                        "advance({size}, {off}, {delta})"
                    );
                }
            }
        }
        assert_eq!(advance(0, 5, 7), 0, "a zero size is taken as 1");
    }

    #[test]
    fn a_header_read_in_one_piece_is_the_general_read() {
        let ring: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        for off in [0u32, 1, 100, 4096 - 25, 4096 - 24] {
            let mut want = [0u8; FRAME_HEADER_LEN];
            ring.read(off, &mut want);
            assert_eq!(ring.read_header(off), want, "Vec at {off}");
            assert_eq!(ring[..].read_header(off), want, "slice at {off}");
        }
        // Past the end of shorter storage: unchanged (zero) bytes, as
        // `read` leaves its buffer, never a panic.
        assert_eq!(ring[..100].read_header(90), [0u8; FRAME_HEADER_LEN]);
        // An overlay reads the planned bytes over the base's.
        let planned = [0xeeu8; 10];
        let view = Overlay {
            base: &ring,
            pending: &[(105, &planned[..])],
        };
        let mut want = [0u8; FRAME_HEADER_LEN];
        view.read(100, &mut want);
        assert_eq!(&want[5..15], &planned[..]);
        assert_eq!(view.read_header(100), want);
    }

    #[test]
    fn entry_at_reads_headers_within_the_ring_and_across_its_end() {
        let h = FrameHeaderRepr {
            len: 60,
            sec: 0x0a0b_0c0d,
            usec: 0x0102_0304,
            sender: 0x1122_3344_5566_7788,
        };
        let raw = h.to_bytes();
        // From well inside the ring to a header that ends exactly at the
        // end, then ones split across it, and `off == size` (all at 0).
        for off in (4096 - 40)..=4096u32 {
            let mut ring = vec![0u8; 4096];
            for (k, b) in raw.iter().enumerate() {
                ring[(off as usize + k) % 4096] = *b;
            }
            assert_eq!(entry_at(G, &ring, off), Ok(Entry::Frame(h)), "at {off}");
            assert_eq!(
                next_offset(G, &ring, off),
                Ok(advance(4096, off, 24 + 60)),
                "next of {off}"
            );
        }
    }
}
