//! Ring arithmetic of the bus, sans I/O.
//!
//! Everything here works on a [`Region`] (the data region of a bus, or any
//! byte buffer standing in for one) and a [`Control`] (the header fields
//! `gen`, `first`, `last`), which the caller loads and stores while holding
//! the bus lock. The rules are NetBSD's `shmif_busops.c` (bus version 3),
//! with one deliberate fix in the reader's resync (see [`Reader::step`]).
//!
//! Nothing in this module trusts what it reads: every length and offset is
//! checked, every loop is bounded, and bad values surface as [`Corrupt`].

use crate::wire::{FrameHeaderRepr, FRAME_HEADER_LEN, MAX_FRAME_LEN};
use std::fmt;

/// Storage for a ring of frames: the bus's data region, or a plain buffer.
///
/// Offsets are in `0..=size()`; callers never pass a range that ends past
/// `size()`.
pub trait Region {
    /// Size of the ring in bytes (`DATA_SIZE` for a real bus).
    fn size(&self) -> u32;
    /// Copies `buf.len()` bytes starting at `off` into `buf`.
    fn read(&self, off: u32, buf: &mut [u8]);
    /// Copies `data` to `off`.
    fn write(&mut self, off: u32, data: &[u8]);
}

impl Region for [u8] {
    fn size(&self) -> u32 {
        u32::try_from(self.len()).unwrap_or(u32::MAX)
    }
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
    fn size(&self) -> u32 {
        self.as_slice().size()
    }
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
    /// The state of a freshly initialised bus of `size` bytes.
    pub fn fresh(size: u32) -> Self {
        Control {
            gen: 0,
            first: size,
            last: 0,
        }
    }
}

/// Something in the ring that cannot be right: the bus was written by a
/// broken or hostile peer, or damaged. Nothing is read or written past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    /// `first` or `last` lies outside the ring.
    Offset {
        /// Which header field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// A frame header claims a length no peer may write.
    Length {
        /// Offset of the frame header.
        at: u32,
        /// The claimed payload length.
        len: u32,
    },
    /// Following the frame chain to evict old frames did not terminate.
    Chain {
        /// Where the walk started.
        at: u32,
    },
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corrupt::Offset { field, value } => {
                write!(f, "bus header field {field} = {value:#x} lies outside the ring")
            }
            Corrupt::Length { at, len } => write!(
                f,
                "frame header at ring offset {at:#x} claims length {len} (at most {MAX_FRAME_LEN} is possible)"
            ),
            Corrupt::Chain { at } => {
                write!(f, "the frame chain from ring offset {at:#x} never ends")
            }
        }
    }
}

impl std::error::Error for Corrupt {}

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
pub fn read_wrapped<R: Region + ?Sized>(region: &R, off: u32, buf: &mut [u8]) -> (u32, bool) {
    let size = region.size();
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
pub fn header_at<R: Region + ?Sized>(region: &R, off: u32) -> Result<FrameHeaderRepr, Corrupt> {
    if off > region.size() {
        return Err(Corrupt::Offset {
            field: "frame offset",
            value: off,
        });
    }
    let mut raw = [0u8; FRAME_HEADER_LEN];
    read_wrapped(region, off, &mut raw);
    let h = FrameHeaderRepr::from_bytes(&raw);
    if h.len as usize > MAX_FRAME_LEN {
        return Err(Corrupt::Length {
            at: off,
            len: h.len,
        });
    }
    Ok(h)
}

/// `shmif_nextpktoff`: the offset right after the frame whose header is at
/// `off`.
pub fn next_offset<R: Region + ?Sized>(region: &R, off: u32) -> Result<u32, Corrupt> {
    let h = header_at(region, off)?;
    Ok(advance(region.size(), off, FRAME_HEADER_LEN as u32 + h.len))
}

/// Checks that `first` and `last` lie in a ring of `size` bytes.
pub fn check_control(size: u32, c: &Control) -> Result<(), Corrupt> {
    if c.first > size {
        return Err(Corrupt::Offset {
            field: "first",
            value: c.first,
        });
    }
    if c.last >= size {
        return Err(Corrupt::Offset {
            field: "last",
            value: c.last,
        });
    }
    Ok(())
}

/// `shmif_advancefirst`: before `[off, off + n)` is overwritten, moves
/// `first` past every frame the write would damage. Only reads the ring.
fn evict<R: Region + ?Sized>(region: &R, first: &mut u32, off: u32, n: u32) -> Result<(), Corrupt> {
    let start = *first;
    // Each step moves `first` by at least one header; more steps than the
    // ring holds headers means the chain loops.
    let mut budget = region.size() / FRAME_HEADER_LEN as u32 + 2;
    while u64::from(off) <= u64::from(*first) + FRAME_HEADER_LEN as u64
        && u64::from(off) + u64::from(n) > u64::from(*first)
    {
        if budget == 0 {
            return Err(Corrupt::Chain { at: start });
        }
        budget -= 1;
        *first = next_offset(region, *first)?;
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
    fn size(&self) -> u32 {
        self.base.size()
    }
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
    region: &mut R,
    ctl: &mut Control,
    header: &FrameHeaderRepr,
    payload: &[u8],
) -> Result<Appended, Corrupt> {
    append_with(region, ctl, header, payload, |_| {})
}

/// [`append`], calling `publish_first` with the new `first` after the plan
/// is made and before the first byte is written. A writer stores it to the
/// bus header there (as NetBSD does before each copy), so that a writer
/// killed mid-copy leaves a chain from `first` to `last` that is still
/// intact: nothing it overwrote is reachable from `first`.
pub fn append_with<R: Region + ?Sized, F: FnOnce(u32)>(
    region: &mut R,
    ctl: &mut Control,
    header: &FrameHeaderRepr,
    payload: &[u8],
    publish_first: F,
) -> Result<Appended, Corrupt> {
    let size = region.size();
    check_control(size, ctl)?;
    // NetBSD's precondition (`len < DATASIZE/2`): a frame must fit in half
    // the ring, or eviction would walk over the frame being written.
    let fits = (FRAME_HEADER_LEN + payload.len()) < size as usize / 2;
    if payload.len() > MAX_FRAME_LEN || header.len as usize != payload.len() || !fits {
        return Err(Corrupt::Length {
            at: ctl.last,
            len: payload.len() as u32,
        });
    }
    let at = next_offset(&*region, ctl.last)?;
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
        evict(&view, &mut first, off, n)?;
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
/// This is what a peer that takes over the lock of a dead holder checks
/// before trusting the ring again.
pub fn check_chain<R: Region + ?Sized>(region: &R, ctl: &Control) -> Result<(), Corrupt> {
    let size = region.size();
    check_control(size, ctl)?;
    let start = if ctl.first == size { 0 } else { ctl.first };
    // NetBSD asserts that `first` and `last` differ once anything has been
    // evicted; appending to such a ring would evict the frame being written.
    if ctl.first != size && ctl.first == ctl.last {
        return Err(Corrupt::Chain { at: start });
    }
    let mut off = start;
    let mut travelled: u64 = 0;
    loop {
        let h = header_at(region, off)?;
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
pub fn reset<R: Region + ?Sized>(region: &mut R, ctl: &Control) -> Control {
    let empty = FrameHeaderRepr::default().to_bytes();
    region.write(0, &empty);
    region.write(FRAME_HEADER_LEN as u32, &empty);
    Control {
        gen: ctl.gen.wrapping_add(2),
        first: 0,
        last: FRAME_HEADER_LEN as u32,
    }
}

/// A reader's private position in the ring (NetBSD's `sc_nextpacket` and
/// `sc_devgen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    /// Offset of the next frame header to read.
    pub next: u32,
    /// The generation `next` belongs to.
    pub devgen: u64,
}

/// What a reader lost to an overrun: writers lapped it and overwrote frames
/// it had not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun {
    /// Ring bytes (headers and payloads) skipped. `None` when the distance
    /// cannot be trusted: the generation went backwards or jumped absurdly
    /// (a reset after a dead lock holder, or a hostile peer).
    pub bytes_lost: Option<u64>,
}

/// The outcome of one [`Reader::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// The ring holds something impossible; the reader skipped to the newest
    /// position it could trust (if any) and returns nothing this step.
    Corrupt(Corrupt),
}

impl Reader {
    /// A reader that will see only frames appended after now.
    pub fn at_end<R: Region + ?Sized>(region: &R, ctl: &Control) -> Result<Self, Corrupt> {
        check_control(region.size(), ctl)?;
        Ok(Reader {
            next: next_offset(region, ctl.last)?,
            devgen: ctl.gen,
        })
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
    /// payload into `buf` (which must hold [`MAX_FRAME_LEN`] bytes; a shorter
    /// buffer gets a truncated copy) and advance.
    ///
    /// After an overrun NetBSD resyncs to `first` with `devgen = gen - 1` if
    /// `first > last`, which misjudges the case where the newest frame itself
    /// wraps and then redelivers old frames forever. This uses the end of the
    /// newest frame instead, `first >= next(last)`, as the bus contract says.
    pub fn step<R: Region + ?Sized>(&mut self, region: &R, ctl: &Control, buf: &mut [u8]) -> Step {
        let size = region.size();
        if let Err(e) = check_control(size, ctl) {
            return Step::Corrupt(e);
        }
        let end = match next_offset(region, ctl.last) {
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
            overrun = Some(Overrun { bytes_lost });
            self.next = next;
            self.devgen = devgen;
        }
        let header = match header_at(region, self.next) {
            Ok(h) => h,
            Err(e) => {
                // Skip to the end of the newest frame, which was checked above.
                self.next = end;
                self.devgen = ctl.gen;
                return Step::Corrupt(e);
            }
        };
        let mut raw = [0u8; FRAME_HEADER_LEN];
        let (pay, mut wrapped) = read_wrapped(region, self.next, &mut raw);
        let n = (header.len as usize).min(buf.len());
        let (after, w2) = read_wrapped(region, pay, &mut buf[..n]);
        wrapped |= w2;
        self.next = if n == header.len as usize {
            after
        } else {
            advance(size, pay, header.len)
        };
        if wrapped || (self.next < pay && header.len > 0) {
            self.devgen = self.devgen.wrapping_add(1);
        }
        Step::Frame { header, overrun }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut ctl = Control::fresh(4096);
        let r = Reader::at_end(&ring, &ctl).unwrap();
        assert_eq!(r.next, 24);
        let a = append(&mut ring, &mut ctl, &hdr(60, 9), &[7u8; 60]).unwrap();
        assert_eq!(a.at, 24);
        assert_eq!(ctl.last, 24);
        assert_eq!(ctl.first, 4096, "nothing evicted yet");
        let mut reader = r;
        let mut buf = [0u8; MAX_FRAME_LEN];
        match reader.step(&ring, &ctl, &mut buf) {
            Step::Frame { header, overrun } => {
                assert_eq!(header.len, 60);
                assert_eq!(header.sender, 9);
                assert!(overrun.is_none());
                assert_eq!(&buf[..60], &[7u8; 60]);
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(reader.step(&ring, &ctl, &mut buf), Step::Empty);
    }

    #[test]
    fn oversized_length_is_corruption_not_a_panic() {
        let mut ring = vec![0u8; 4096];
        let mut ctl = Control::fresh(4096);
        append(&mut ring, &mut ctl, &hdr(60, 1), &[1u8; 60]).unwrap();
        ring[24..28].copy_from_slice(&5000u32.to_ne_bytes());
        let before = ring.clone();
        assert!(matches!(
            append(&mut ring, &mut ctl, &hdr(60, 1), &[1u8; 60]),
            Err(Corrupt::Length { .. })
        ));
        assert_eq!(ring, before, "a failed append writes nothing");
        let mut r = Reader {
            next: 24,
            devgen: 0,
        };
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert!(matches!(r.step(&ring, &ctl, &mut buf), Step::Corrupt(_)));
    }

    #[test]
    fn check_chain_accepts_good_rings_and_reset_resyncs_readers() {
        let mut ring = vec![0u8; 4096];
        let mut ctl = Control::fresh(4096);
        check_chain(&ring, &ctl).unwrap();
        let mut r = Reader::at_end(&ring, &ctl).unwrap();
        for k in 0..40u64 {
            append(
                &mut ring,
                &mut ctl,
                &hdr(100 + k as usize, k),
                &vec![k as u8; 100 + k as usize],
            )
            .unwrap();
            check_chain(&ring, &ctl).unwrap();
        }
        // Damage a header in the middle of the chain.
        let start = if ctl.first == 4096 { 0 } else { ctl.first };
        let mid = next_offset(&ring, start).unwrap();
        ring[mid as usize..mid as usize + 4].copy_from_slice(&7u32.to_ne_bytes());
        assert!(check_chain(&ring, &ctl).is_err());
        let fresh = reset(&mut ring, &ctl);
        check_chain(&ring, &fresh).unwrap();
        assert_eq!(fresh.gen, ctl.gen + 2);
        // A reader from before the reset resyncs and then sees new frames only.
        let mut buf = [0u8; MAX_FRAME_LEN];
        let mut ctl = fresh;
        append(&mut ring, &mut ctl, &hdr(60, 99), &[9u8; 60]).unwrap();
        let mut got = Vec::new();
        let mut overran = false;
        for _ in 0..10 {
            match r.step(&ring, &ctl, &mut buf) {
                Step::Frame { header, overrun } => {
                    overran |= overrun.is_some();
                    if header.len > 0 {
                        got.push(header.sender);
                    }
                }
                Step::Empty => break,
                Step::Corrupt(c) => panic!("{c}"),
            }
        }
        assert!(overran);
        assert_eq!(got, vec![99]);
    }

    #[test]
    fn bad_control_is_reported() {
        let ring = vec![0u8; 4096];
        let ctl = Control {
            gen: 0,
            first: 5000,
            last: 0,
        };
        let mut r = Reader { next: 0, devgen: 0 };
        let mut buf = [0u8; 64];
        assert!(matches!(r.step(&ring, &ctl, &mut buf), Step::Corrupt(_)));
    }
}
