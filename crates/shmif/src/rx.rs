//! The receive core, sans I/O: a reader's position, its batch of frames
//! copied out of the ring, the MAC filter and the receive counters.
//!
//! [`RxCore::refill`] runs with the bus lock held, over the ring as a
//! [`Region`]; it looks at each frame's header and Ethernet header first
//! and copies out only frames this interface takes (its own frames, frames
//! for other MACs and runts are passed over where they lie). The overrun
//! policy is the ring reader's ([`Resync::OldestThenNewest`]); this core
//! only counts what it reports. [`RxCore::pop`] then hands frames over one
//! by one without the lock.

use crate::ring::{Control, Geometry, Reader, Region, Resync, Step};
use crate::wire::{FrameHeaderRepr, MacAddr, MIN_FRAME_LEN};

/// How many frames one hold of the bus lock copies out for a reader. More
/// means fewer lock round trips under load; each hold stays a few
/// microseconds.
pub(crate) const RX_BATCH: usize = 16;

/// How many ring entries one hold of the lock looks at, at most: frames
/// passed over cost a header read each, and the lock must stay short.
pub(crate) const STEPS_PER_HOLD: usize = 128;

/// Who a receiver is, for the filter of the bus contract (step 5).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filter {
    /// The interface's MAC.
    pub mac: MacAddr,
    /// The interface's sender id: its own frames are skipped.
    pub sender: u64,
    /// Deliver frames for any MAC.
    pub promisc: bool,
}

/// What the filter makes of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Deliver,
    /// A zero-length entry (a fresh or reset ring's placeholder).
    Placeholder,
    /// 1 to 13 bytes: not an Ethernet frame.
    Runt,
    Own,
    OtherMac,
}

impl Filter {
    #[inline]
    fn verdict(&self, h: &FrameHeaderRepr, peek: &[u8]) -> Verdict {
        if h.len == 0 {
            Verdict::Placeholder
        } else if (h.len as usize) < MIN_FRAME_LEN {
            Verdict::Runt
        } else if h.sender == self.sender {
            Verdict::Own
        } else {
            let dst = MacAddr::destination_of(peek).unwrap_or_default();
            if dst == self.mac || dst.is_group() || self.promisc {
                Verdict::Deliver
            } else {
                Verdict::OtherMac
            }
        }
    }
}

/// Receive counts not yet added to the interface's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub rx_filtered: u64,
    pub rx_own: u64,
    pub overruns: u64,
    pub overrun_bytes: u64,
    pub overruns_unmeasured: u64,
    pub malformed: u64,
}

/// A receiver as it stood at a point it may have to go back to: its
/// position and the counts not yet added to the interface's counters
/// ([`RxCore::mark`], [`RxCore::rewind`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    reader: Reader,
    tally: Tally,
}

impl Mark {
    /// The linear position the mark is at.
    pub(crate) fn position(&self, geom: Geometry) -> u64 {
        self.reader.position(geom)
    }
}

/// One receiver's state.
#[derive(Debug)]
pub(crate) struct RxCore {
    geom: Geometry,
    reader: Reader,
    /// Frames copied out in one hold of the lock, packed one after the
    /// other (each at a 64-byte boundary): frame `i` of the batch is at
    /// `at[i]`. Packed rather than at a stride of the frame limit, which on
    /// a jumbo bus (65,549) put every small frame of a batch in the same
    /// cache sets.
    slots: Box<[u8]>,
    /// Where each frame of the batch starts in `slots`.
    at: [usize; RX_BATCH],
    /// Where the next frame copied into `slots` goes.
    fill: usize,
    meta: [FrameHeaderRepr; RX_BATCH],
    head: usize,
    count: usize,
    /// The ring's `gen` and `last` when it was last found empty: a waiter
    /// spinning on the header knows something new came when they change.
    quiet: Option<(u64, u32)>,
    /// For a registered reader of an extended bus: the writers' cursor
    /// (linear) when it last looked under the lock. Everything between its
    /// position and this is published, and safe from writers while it
    /// stays in good standing: it reads there without the lock.
    window: Option<u64>,
    /// The position at which this reader last woke writers waiting for
    /// space (it wakes them again only after a good stretch more, or when
    /// it has read everything).
    writers_woken_at: u64,
    tally: Tally,
    /// Frames received in place since this reader's position was last
    /// published ([`RxCore::note_in_place`]).
    unsettled: usize,
}

impl RxCore {
    /// A receiver starting at `reader` (its overrun policy becomes
    /// [`Resync::OldestThenNewest`]).
    pub(crate) fn new(geom: Geometry, reader: Reader) -> Self {
        RxCore {
            geom,
            reader: reader.with_resync(Resync::OldestThenNewest),
            slots: vec![0u8; RX_BATCH * geom.max_frame().next_multiple_of(64)].into_boxed_slice(),
            at: [0; RX_BATCH],
            fill: 0,
            meta: [FrameHeaderRepr::default(); RX_BATCH],
            head: 0,
            count: 0,
            quiet: None,
            window: None,
            writers_woken_at: 0,
            tally: Tally::default(),
            unsettled: 0,
        }
    }

    /// The reader's linear position: generation × ring size + offset of
    /// the next header to read (what a registered reader publishes).
    pub(crate) fn position(&self) -> u64 {
        self.reader.position(self.geom)
    }

    /// The reader as it stands (position and uncounted tallies), to go
    /// back to if what it reads next without the lock turns out unusable
    /// ([`RxCore::refill_window`]).
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            reader: self.reader,
            tally: self.tally,
        }
    }

    /// Forgets the batch and puts the reader back where [`RxCore::mark`]
    /// found it, its tallies too: whatever it read without the lock while
    /// writers had stopped waiting for it may be torn, so no frame of it is
    /// delivered, and no frame it passed over (for another MAC, say) stays
    /// passed over or counted; the reader reads them again under the lock.
    /// Its window closes too: what it may read without the lock is for the
    /// locked path to say again (it resynchronises the reader).
    pub(crate) fn rewind(&mut self, mark: Mark) {
        self.reader = mark.reader;
        self.tally = mark.tally;
        self.window = None;
        self.head = 0;
        self.count = 0;
        self.fill = 0;
    }

    /// The end of the window this reader may read without the lock, if
    /// it has one and is not at its end yet.
    pub(crate) fn window(&self) -> Option<u64> {
        self.window.filter(|&end| self.position() < end)
    }

    /// Sets (or with `None` closes) the lock-free window.
    pub(crate) fn set_window(&mut self, end: Option<u64>) {
        self.window = end;
    }

    /// Whether this reader should wake writers asleep for space now: once
    /// it has moved an eighth of the ring since it last did, or when it has
    /// read everything (`caught_up`). Notes the wake-up when it says yes.
    pub(crate) fn wake_writers_now(&mut self, caught_up: bool) -> bool {
        let pos = self.position();
        let stretch = u64::from(self.geom.size) / 8;
        if caught_up || pos.wrapping_sub(self.writers_woken_at) >= stretch {
            self.writers_woken_at = pos;
            true
        } else {
            false
        }
    }

    /// The header as of the last time the ring was found empty.
    pub(crate) fn quiet(&self) -> Option<(u64, u32)> {
        self.quiet
    }

    /// The counts since the last call.
    pub(crate) fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }

    /// Whether the batch is used up.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The next frame of the batch, without the lock.
    pub(crate) fn pop(&mut self) -> Option<(FrameHeaderRepr, &[u8])> {
        if self.count == 0 {
            return None;
        }
        let i = self.head;
        self.head += 1;
        self.count -= 1;
        let h = self.meta[i];
        let at = self.at[i];
        Some((h, &self.slots[at..at + h.len as usize]))
    }

    /// With the bus lock held: whether nothing this reader has not read
    /// was written over ([`crate::ring::Reader::is_current`]), so that its
    /// position can be registered or published as it is.
    pub(crate) fn is_current<R: Region + ?Sized>(&self, region: &R, ctl: &Control) -> bool {
        self.reader.is_current(self.geom, region, ctl)
    }

    /// With the bus lock held: copies out up to [`RX_BATCH`] frames that
    /// pass `filter`, looking at no more than [`STEPS_PER_HOLD`] entries.
    /// Call only once the batch is empty. Returns how many ring entries it
    /// looked at, and whether it stopped because the ring had nothing more
    /// (or something impossible) rather than for a limit.
    pub(crate) fn refill<R: Region + ?Sized>(
        &mut self,
        region: &R,
        ctl: &Control,
        filter: &Filter,
    ) -> (usize, bool) {
        debug_assert_eq!(self.count, 0);
        self.head = 0;
        self.fill = 0;
        let max = self.geom.max_frame();
        let mut steps = 0;
        while self.count < RX_BATCH && steps < STEPS_PER_HOLD {
            steps += 1;
            let mut verdict = Verdict::Deliver;
            let slot = &mut self.slots[self.fill..self.fill + max];
            let step = self
                .reader
                .step_filtered(self.geom, region, ctl, slot, |h, peek| {
                    verdict = filter.verdict(h, peek);
                    verdict == Verdict::Deliver
                });
            match step {
                Step::Empty => {
                    self.quiet = Some((ctl.gen, ctl.last));
                    return (steps, true);
                }
                Step::Frame { header, overrun } => {
                    self.count_overrun(overrun);
                    self.push(header);
                }
                Step::Passed { overrun, .. } => {
                    self.count_overrun(overrun);
                    self.count_passed(verdict);
                }
                Step::Corrupt(_) => {
                    // Nothing readable until a writer repairs the ring: a
                    // spinning waiter treats this header as quiet.
                    self.quiet = Some((ctl.gen, ctl.last));
                    self.tally.malformed += 1;
                    return (steps, true);
                }
            }
        }
        (steps, false)
    }

    /// Without the bus lock: copies out up to [`RX_BATCH`] frames that
    /// pass `filter`, from the reader's position up to linear position
    /// `end`, which the caller knows is published and safe from writers
    /// (see [`crate::ring::Reader::step_window`]). Call only once the batch
    /// is empty. Returns how many entries it looked at, and whether the
    /// window is used up or held something impossible (then the caller
    /// goes back to reading under the lock).
    pub(crate) fn refill_window<R: Region + ?Sized>(
        &mut self,
        region: &R,
        end: u64,
        filter: &Filter,
    ) -> (usize, bool) {
        debug_assert_eq!(self.count, 0);
        self.head = 0;
        self.fill = 0;
        let max = self.geom.max_frame();
        let mut steps = 0;
        while self.count < RX_BATCH && steps < STEPS_PER_HOLD {
            steps += 1;
            let mut verdict = Verdict::Deliver;
            let slot = &mut self.slots[self.fill..self.fill + max];
            let step = self
                .reader
                .step_window(self.geom, region, end, slot, |h, peek| {
                    verdict = filter.verdict(h, peek);
                    verdict == Verdict::Deliver
                });
            match step {
                Step::Empty => return (steps, true),
                Step::Corrupt(_) => {
                    // Not what a window can hold: read under the lock,
                    // where the ring's own checks decide what it is.
                    self.window = None;
                    return (steps, true);
                }
                Step::Frame { header, .. } => {
                    self.push(header);
                }
                Step::Passed { .. } => {
                    self.count_passed(verdict);
                }
            }
        }
        (steps, false)
    }

    /// Without the bus lock, with the batch empty: the next frame of the
    /// window up to `end` that passes `filter`: its header and the ring
    /// offset of its first byte, for a view of it where it lies, looking at
    /// no more than [`STEPS_PER_HOLD`] entries; copied into `buf` too
    /// unless that is empty (a shorter `buf` gets the start). The reader
    /// moves past it (and past frames the filter passes over, counted).
    /// `None`: nothing more in the window (closed if it held something
    /// impossible). As with [`RxCore::refill_window`], the caller checks
    /// its standing after using the frame, and rewinds if it must.
    #[inline]
    pub(crate) fn view_from_window<R: Region + ?Sized>(
        &mut self,
        region: &R,
        end: u64,
        filter: &Filter,
        buf: &mut [u8],
    ) -> Option<(FrameHeaderRepr, u32)> {
        debug_assert_eq!(self.count, 0);
        for _ in 0..STEPS_PER_HOLD {
            let mut verdict = Verdict::Deliver;
            let step = self
                .reader
                .step_window(self.geom, region, end, buf, |h, peek| {
                    verdict = filter.verdict(h, peek);
                    verdict == Verdict::Deliver
                });
            match step {
                Step::Empty => return None,
                Step::Corrupt(_) => {
                    self.window = None;
                    return None;
                }
                Step::Frame { header, .. } => {
                    // The frame ends where the reader now is: its first
                    // byte lies `len` before that offset, modulo the ring
                    // (a frame is shorter than the ring).
                    let (at, len, size) = (self.reader.next, header.len, self.geom.size);
                    let first = if at >= len {
                        at - len
                    } else {
                        (at + size).wrapping_sub(len)
                    };
                    return Some((header, first));
                }
                Step::Passed { .. } => {
                    self.count_passed(verdict);
                }
            }
        }
        None
    }

    /// Notes a frame received in place and returns how many have been
    /// since the position was last published: an in-place reader publishes
    /// once per [`RX_BATCH`] frames, as a batch does, not per frame (each
    /// publication is a store to a cache line the writers read).
    pub(crate) fn note_in_place(&mut self) -> usize {
        self.unsettled += 1;
        self.unsettled
    }

    /// Whether frames received in place wait to have their position
    /// published; forgets them (the caller publishes it now).
    pub(crate) fn take_unsettled(&mut self) -> bool {
        std::mem::take(&mut self.unsettled) > 0
    }

    /// The ring's shape.
    pub(crate) fn geometry(&self) -> Geometry {
        self.geom
    }

    /// Adds the frame just copied to `slots[fill..]` to the batch.
    fn push(&mut self, header: FrameHeaderRepr) {
        self.meta[self.count] = header;
        self.at[self.count] = self.fill;
        self.fill += (header.len as usize).next_multiple_of(64);
        self.count += 1;
    }

    /// Counts a frame passed over, by why the filter declined it.
    fn count_passed(&mut self, verdict: Verdict) {
        let t = &mut self.tally;
        match verdict {
            Verdict::Runt => t.malformed += 1,
            Verdict::Own => t.rx_own += 1,
            Verdict::OtherMac => t.rx_filtered += 1,
            Verdict::Placeholder | Verdict::Deliver => {}
        }
    }

    fn count_overrun(&mut self, overrun: Option<crate::ring::Overrun>) {
        let Some(o) = overrun else { return };
        let t = &mut self.tally;
        t.overruns += 1;
        match o.total_bytes() {
            Some(b) => t.overrun_bytes += b,
            None => t.overruns_unmeasured += 1,
        }
    }
}
