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
        })
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
}

impl Region for Vec<u8> {
    fn read(&self, off: u32, buf: &mut [u8]) {
        self.as_slice().read(off, buf)
    }
    fn write(&mut self, off: u32, data: &[u8]) {
        self.as_mut_slice().write(off, data)
    }
}

/// The ring's shared state: the bus header's `gen`, `first` and `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// How many times writers have wrapped past the end of the ring.
    pub gen: u64,
    /// Offset of the oldest intact frame; `size` means nothing was evicted.
    pub first: u32,
    /// Offset of the newest frame's header.
    pub last: u32,
}

impl Control {
    /// The state of a freshly initialised ring of this geometry.
    pub fn fresh(geom: Geometry) -> Self {
        Control {
            gen: 0,
            first: geom.size,
            last: 0,
        }
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
fn advance(size: u32, off: u32, delta: u32) -> u32 {
    let n = (u64::from(off) + u64::from(delta)) % u64::from(size.max(1));
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
        return ((off + chunk) % size, wrapped);
    }
    let n = rest.min(tail.len());
    region.read(0, &mut tail[..n]);
    (len - chunk, wrapped)
}

/// Reads the frame header at `off`, rejecting impossible lengths.
pub fn header_at<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    off: u32,
) -> Result<FrameHeaderRepr, Corrupt> {
    if off > geom.size {
        return Err(Corrupt::Offset {
            field: "frame offset",
            value: off,
        });
    }
    let mut raw = [0u8; FRAME_HEADER_LEN];
    read_wrapped(geom, region, off, &mut raw);
    let h = FrameHeaderRepr::from_bytes(&raw);
    if h.len > geom.max_frame_len {
        return Err(Corrupt::Length {
            at: off,
            len: h.len,
            max: geom.max_frame_len,
        });
    }
    Ok(h)
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

/// `shmif_nextpktoff`: the offset right after the frame whose header is at
/// `off`.
pub fn next_offset<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    off: u32,
) -> Result<u32, Corrupt> {
    let h = header_at(geom, region, off)?;
    Ok(advance(geom.size, off, FRAME_HEADER_LEN as u32 + h.len))
}

/// Checks that `first` and `last` lie in the ring.
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
}

/// A region as it will be once `pending` pieces are written: reads see the
/// planned bytes. Lets `append` plan its evictions before writing anything.
struct Overlay<'a, R: Region + ?Sized> {
    base: &'a R,
    pending: &'a [(u32, &'a [u8])],
}

impl<R: Region + ?Sized> Region for Overlay<'_, R> {
    fn read(&self, off: u32, buf: &mut [u8]) {
        self.base.read(off, buf);
        let (lo, hi) = (off as usize, off as usize + buf.len());
        for &(poff, bytes) in self.pending {
            let (plo, phi) = (poff as usize, poff as usize + bytes.len());
            let (a, b) = (lo.max(plo), hi.min(phi));
            if a < b {
                buf[a - lo..b - lo].copy_from_slice(&bytes[a - plo..b - plo]);
            }
        }
    }
    fn write(&mut self, _off: u32, _data: &[u8]) {}
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
    let size = geom.size;
    check_control(geom, ctl)?;
    if !geom.fits(payload.len()) || header.len as usize != payload.len() {
        return Err(Corrupt::Length {
            at: ctl.last,
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            max: geom.max_frame_len,
        });
    }
    let at = next_offset(geom, &*region, ctl.last)?;
    let hdr = header.to_bytes();

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
    Ok(Appended { at, wrapped })
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
        let h = header_at(geom, region, off)?;
        travelled += FRAME_HEADER_LEN as u64 + u64::from(h.len);
        // Everything from `first` to the end of the newest frame must fit
        // in one lap, or the newest frame overwrote the oldest.
        if travelled > u64::from(size) {
            return Err(Corrupt::Chain { at: start });
        }
        if off == ctl.last {
            return Ok(());
        }
        off = advance(size, off, FRAME_HEADER_LEN as u32 + h.len);
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
fn offer<R: Region + ?Sized>(
    geom: Geometry,
    region: &R,
    pay: u32,
    header: &FrameHeaderRepr,
    buf: &mut [u8],
    accept: impl FnOnce(&FrameHeaderRepr, &[u8]) -> bool,
) -> bool {
    let len = header.len as usize;
    let mut peek = [0u8; PEEK_LEN];
    let peek = &mut peek[..len.min(PEEK_LEN)];
    read_wrapped(geom, region, pay, peek);
    let copied = accept(header, peek);
    if copied {
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
        Ok(Reader::new(next_offset(geom, region, ctl.last)?, ctl.gen))
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
            let old = Self::linear(size, self.next, self.devgen);
            let new = Self::linear(size, next, devgen);
            let bytes_lost = if new >= old && ctl.gen.wrapping_sub(self.devgen) < (1 << 32) {
                u64::try_from(new - old).ok()
            } else {
                None
            };
            overrun = Some(Overrun {
                bytes_lost,
                skipped: 0,
            });
            self.next = next;
            self.devgen = devgen;
        }
        let header = match header_at(geom, region, self.next) {
            Ok(h) => h,
            Err(e) => {
                // Skip to the end of the newest frame, which was checked above.
                self.next = end;
                self.devgen = ctl.gen;
                return Step::Corrupt(e);
            }
        };
        let mut raw = [0u8; FRAME_HEADER_LEN];
        let (pay, hdr_wrapped) = read_wrapped(geom, region, self.next, &mut raw);
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
    pub fn step_window<R: Region + ?Sized>(
        &mut self,
        geom: Geometry,
        region: &R,
        end: u64,
        buf: &mut [u8],
        accept: impl FnOnce(&FrameHeaderRepr, &[u8]) -> bool,
    ) -> Step {
        let size = geom.size;
        let at = self.position(geom);
        if at >= end {
            return Step::Empty;
        }
        if self.next >= size {
            return Step::Corrupt(Corrupt::Offset {
                field: "reader position",
                value: self.next,
            });
        }
        let header = match header_at(geom, region, self.next) {
            Ok(h) => h,
            Err(e) => return Step::Corrupt(e),
        };
        let len = header.len as usize;
        let span = (FRAME_HEADER_LEN + len) as u64;
        if at.checked_add(span).is_none_or(|e| e > end) {
            return Step::Corrupt(Corrupt::Chain { at: self.next });
        }
        let pay = advance(size, self.next, FRAME_HEADER_LEN as u32);
        let copied = offer(geom, region, pay, &header, buf, accept);
        // Linear arithmetic is the ring's own rule (reaching the end is a
        // wrap, for writers and readers alike), so the next position is
        // exactly `at + span`.
        let next = at + span;
        self.next = u32::try_from(next % u64::from(size)).unwrap_or(0);
        self.devgen = next / u64::from(size);
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
            Ok(skipped) if to > from && u128::from(skipped) < u128::from(size) => {
                self.next = ctl.last;
                self.devgen = devgen;
                skipped
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
}
