//! Receiving: the calls over the sans-IO receive core ([`crate::rx`]).

use super::Link;
use super::{bump, lock, Frame, FrameView, Interface, Received, RxState};
use crate::error::Error;
use crate::rx::{Filter, Mark, RxCore, RX_BATCH};
use crate::wire::FrameHeaderRepr;
use std::time::{Duration, Instant};

/// How many ring entries one receive call looks at before giving up (they
/// may all be for other interfaces, or a hostile peer may have made the
/// chain a cycle). A full ring of minimum-size frames is about 27,000.
const MAX_STEPS_PER_CALL: usize = 65_536;

/// How many turns a registered reader that caught up with a writer holding
/// the lock watches the cursor hint for before it queues for the lock.
const CURSOR_SPINS: u32 = 4096;

/// How often, in those turns, it looks whether the lock is still held
/// (which loads the cache line the holder writes for every frame).
const LOCK_PEEK_EVERY: u32 = 64;

/// The end of a registered reader's window: the one it has, else the one
/// the writers' cursor hint opens (`None`: nothing to read without the
/// lock).
fn open_window(link: &Link, core: &mut RxCore) -> Option<u64> {
    if core.window().is_none() {
        core.set_window(link.bus.cursor_after(core.position()));
    }
    core.window()
}

/// Caught up with a writer that holds the lock to write more: it publishes
/// the cursor hint before it lets go (once per holding), so a registered
/// reader watches that rather than queue for the lock behind other
/// waiters. The lock word shares its cache line with `first`, `last` and
/// `gen`, which the holder stores for every frame: a load of it each turn
/// took that line from the writer as often, so it is looked at once every
/// [`LOCK_PEEK_EVERY`] turns (the cursor has a line of its own, stored once
/// per holding). Returns whether a window opened (then it is set).
fn watch_cursor(link: &Link, core: &mut RxCore) -> bool {
    let mut spins = 0u32;
    loop {
        if let Some(end) = link.bus.cursor_after(core.position()) {
            core.set_window(Some(end));
            return true;
        }
        if spins >= CURSOR_SPINS || (spins % LOCK_PEEK_EVERY == 0 && !link.bus.lock_is_held()) {
            return false;
        }
        std::hint::spin_loop();
        spins += 1;
    }
}

/// What the caller of a receive gets to know of the frame of `header`.
fn received(header: &FrameHeaderRepr) -> Received {
    Received {
        len: header.len as usize,
        sec: header.sec,
        usec: header.usec,
        sender: header.sender,
    }
}

/// Copies as much of `frame` as `buf` holds into it.
fn copy_into(buf: &mut [u8], frame: &[u8]) {
    let n = frame.len().min(buf.len());
    buf[..n].copy_from_slice(&frame[..n]);
}

/// How the ordinary receive path hands over the window of published frames
/// that a registered reader may read without the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// It copies the window's frames into the receive batch.
    Copy,
    /// It leaves them where they lie and says so ([`Copied::Window`]), for
    /// a receive in place to read them there.
    InPlace,
}

/// What one turn of the ordinary receive path found.
enum Copied<R> {
    /// A frame, copied, and what the callback made of it.
    Frame(R),
    /// Nothing waiting.
    Nothing,
    /// A window of frames to read where they lie ([`Via::InPlace`] only).
    Window,
}

/// When a receive in place publishes the reader's position (the store to
/// its slot that writers waiting for room read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    /// Every [`RX_BATCH`] frames, when nothing more is there, and before
    /// the reader waits: for callers that receive many frames in a row.
    Batched,
    /// After each frame, before the call returns, as a copying receive
    /// always has.
    EachCall,
}

/// Where a receive in place puts what its callback made of each frame,
/// and takes the last one back from if that frame turned out written over.
trait Outbox<T> {
    fn push(&mut self, t: T);
    fn pop(&mut self);
}

/// A batch's results, in order.
impl<T> Outbox<T> for Vec<T> {
    fn push(&mut self, t: T) {
        Vec::push(self, t);
    }
    fn pop(&mut self) {
        Vec::pop(self);
    }
}

/// The one result of a single receive.
impl<T> Outbox<T> for Option<T> {
    fn push(&mut self, t: T) {
        *self = Some(t);
    }
    fn pop(&mut self) {
        *self = None;
    }
}

impl Interface {
    /// Counts `frames` frames of `bytes` bytes in all delivered.
    fn count_delivered(&self, frames: u64, bytes: u64) {
        bump(&self.counters.rx_frames, frames);
        bump(&self.counters.rx_bytes, bytes);
    }

    /// The receive core and the link of an interface that is up, from its
    /// locked receive state: [`Error::NoLink`] without a link,
    /// [`Error::Down`] while down, as [`Interface::active_link`] says.
    fn receiving<'g>(
        &self,
        state: &'g mut Option<RxState>,
    ) -> Result<(&'g mut RxCore, &'g Link), Error> {
        match state {
            Some(RxState { core, link }) if self.is_up() => Ok((core, link)),
            _ => {
                self.active_link()?;
                Err(Error::Down)
            }
        }
    }

    fn filter(&self) -> Filter {
        Filter {
            mac: self.mac,
            sender: self.sender,
            promisc: self.is_promiscuous(),
        }
    }

    /// Receives the next frame for this interface into `buf` without
    /// blocking. `buf` should hold [`Interface::max_frame_len`] bytes (1514
    /// on a NetBSD bus); a shorter one gets the start of the frame, and
    /// [`Received::len`] is still the frame's whole length. Returns `None`
    /// when nothing is waiting.
    ///
    /// A registered reader of an extended bus copies the frame straight
    /// from the bus, as [`Interface::try_recv_in_place`] reads it, and
    /// publishes its position before the call returns, so that a caller
    /// that goes on to poll [`Interface::wakeup_fd`], or stops receiving,
    /// never leaves writers waiting for room it has already read.
    pub fn try_recv_into(&self, buf: &mut [u8]) -> Result<Option<Received>, Error> {
        // One copy, into `buf` from wherever the frame lies: the bus itself
        // for a registered reader of an extended bus (its window of
        // published frames), else the private copy of the locked path.
        let mut got = None;
        match self
            .recv_in_place(1, &mut got, Publish::EachCall, buf, |_, r| r)
            .map(|_| got)
        {
            // A writer left this reader behind while it copied: the copy
            // is not returned, and the reader went back to before the
            // frame; the locked path resynchronises it, as any receive does.
            Err(Error::LeftBehind) => self.try_recv_with(|data, r| {
                copy_into(buf, data);
                r
            }),
            other => other,
        }
    }

    /// Receives the next frame for this interface without blocking and
    /// hands `f` a view of it where it lies, copying nothing: for a
    /// registered reader of an extended bus, in the bus itself (its window
    /// of published frames, which writers do not overwrite while it keeps
    /// up); otherwise in the private copy [`Interface::try_recv_with`]
    /// makes ([`FrameView::is_in_bus`] tells which). Returns `f`'s result,
    /// or `None` when nothing is waiting.
    ///
    /// A reader that takes longer in `f` than the bus's reader-stall bound
    /// (`OpenOptions::reader_stall`, 1 s by default) is left behind by
    /// writers, which may then write over the frame while `f` reads it: the
    /// call then returns [`Error::LeftBehind`] after `f`, and what `f` made
    /// of the frame should be thrown away (the next receive delivers it
    /// again if it is still there, else counts it lost). Keep `f` short.
    pub fn try_recv_in_place<R>(
        &self,
        f: impl FnOnce(FrameView<'_>, Received) -> R,
    ) -> Result<Option<R>, Error> {
        let mut f = Some(f);
        let mut got: Option<Option<R>> = None;
        self.recv_in_place(1, &mut got, Publish::Batched, &mut [], |v, r| {
            f.take().map(|f| f(v, r))
        })?;
        Ok(got.flatten())
    }

    /// Receives up to `max` frames for this interface without blocking, as
    /// [`Interface::try_recv_in_place`] does, and pushes `f`'s result for
    /// each onto `out`; returns how many it pushed (0: nothing waiting).
    ///
    /// One call pays once for what a single receive pays per frame: looking
    /// up the link, taking this interface's receive lock, reading the
    /// writers' cursor and making the filter. A registered reader of an
    /// extended bus still checks its standing after each frame, so that a
    /// result made from a frame a writer may have written over never stays
    /// in `out`: when a writer left this reader behind while `f` read a
    /// frame, that frame's result is taken off `out` again, the reader goes
    /// back to before it, and the call returns [`Error::LeftBehind`] (what
    /// `out` holds from before stands).
    pub fn try_recv_batch_in_place<R>(
        &self,
        max: usize,
        out: &mut Vec<R>,
        f: impl FnMut(FrameView<'_>, Received) -> R,
    ) -> Result<usize, Error> {
        self.recv_in_place(max, out, Publish::Batched, &mut [], f)
    }

    /// The receive in place of [`Interface::try_recv_in_place`] (`max` 1)
    /// and [`Interface::try_recv_batch_in_place`]: up to `max` frames, each
    /// handed to `f` and its result put in `out`; how many were. A `buf`
    /// that is not empty gets a copy of each frame as well, made as the
    /// frame is read (the receive into a buffer, `max` 1: it then needs
    /// nothing of the view).
    fn recv_in_place<T>(
        &self,
        max: usize,
        out: &mut impl Outbox<T>,
        publish: Publish,
        buf: &mut [u8],
        mut f: impl FnMut(FrameView<'_>, Received) -> T,
    ) -> Result<usize, Error> {
        let mut n = 0;
        // Whether this call watched the cursor hint already, and whether
        // the ordinary path sent it back to read in place.
        let mut watched = false;
        let mut in_place_again = false;
        'again: loop {
            if let Some(i) = self.slot() {
                let mut guard = lock(&self.rx);
                let (core, link) = self.receiving(&mut guard)?;
                // No heartbeat per frame: publishing the position (every
                // RX_BATCH frames, and when the window is used up) beats; a
                // store per frame to the slot that waiting writers read cost
                // more than the frame. A reader out of standing (a writer
                // left it behind or excused it) reads nothing here: every
                // frame it read would fail the check after `f` and be taken
                // back, call after call; the ordinary path below reinstates
                // or resynchronises it under the lock.
                if core.is_empty() && link.bus.in_good_standing(i) {
                    let data = link.bus.window_data();
                    let filter = self.filter();
                    // What this pass delivers (the ordinary path counts
                    // its own).
                    let (mut bytes, from) = (0u64, n);
                    let mut left_behind = false;
                    while n < max {
                        let Some(end) = open_window(link, core) else {
                            // Caught up with the writers: watch the cursor
                            // hint once, as the ordinary path would, and
                            // read what it opens where it lies (a reader
                            // faster than its writer catches up once every
                            // holding). First publish what was read in
                            // place, for writers waiting for room meanwhile.
                            if watched || n > 0 {
                                break;
                            }
                            watched = true;
                            self.settle_unsettled(link, core, i)?;
                            if watch_cursor(link, core) {
                                continue;
                            }
                            break;
                        };
                        let mark = core.mark();
                        let Some((header, first)) = core.view_from_window(&data, end, &filter, buf)
                        else {
                            // Frames the filter passed over on the way were
                            // read without the lock too: they stay passed over
                            // only if the standing held (else the bytes may have
                            // been torn, and the locked path reads them again).
                            if core.position() != mark.position(core.geometry())
                                && !link.bus.in_good_standing(i)
                            {
                                core.rewind(mark);
                            }
                            break;
                        };
                        let len = header.len as usize;
                        out.push(f(
                            FrameView::in_ring(&data, core.geometry(), first, len),
                            received(&header),
                        ));
                        // Checked after `f` read the frame; publishing now
                        // (which checks it too) as each call asks, else every
                        // RX_BATCH frames.
                        let stands = match publish {
                            Publish::EachCall => self.settle_window(link, core, i, mark)?,
                            Publish::Batched => link.bus.in_good_standing(i),
                        };
                        if !stands {
                            out.pop();
                            core.rewind(mark);
                            self.counters.absorb(core.take_tally());
                            left_behind = true;
                            break;
                        }
                        n += 1;
                        bytes += len as u64;
                        if publish == Publish::Batched && core.note_in_place() >= RX_BATCH {
                            // Past the frame just delivered: a standing lost
                            // since the check above never delivers it again,
                            // and ends the batch here.
                            let here = core.mark();
                            if !self.settle_window(link, core, i, here)? {
                                break;
                            }
                        }
                    }
                    self.count_delivered((n - from) as u64, bytes);
                    if left_behind {
                        return Err(Error::LeftBehind);
                    }
                    if n > 0 {
                        return Ok(n);
                    }
                    // Nothing in the window: publish what was read in place
                    // and not yet published.
                    self.settle_unsettled(link, core, i)?;
                }
            }
            // The ordinary path, under the lock (the receive state's lock,
            // taken above, is released by now). A window it opens is read in
            // place, once; if that delivers nothing either (frames for
            // others only, or something the in-place walk cannot pass), the
            // ordinary path copies the window and its own checks decide.
            let via = if in_place_again {
                Via::Copy
            } else {
                Via::InPlace
            };
            while n < max {
                match self.recv_copied(via, !watched, |data, r| {
                    copy_into(buf, data);
                    f(FrameView::copied(data), r)
                })? {
                    Copied::Frame(t) => out.push(t),
                    Copied::Nothing => break,
                    Copied::Window => {
                        in_place_again = true;
                        continue 'again;
                    }
                }
                n += 1;
            }
            break;
        }
        Ok(n)
    }

    /// Publishes the position of frames received in place and not yet
    /// published (before this reader waits, so that writers never wait
    /// for what it has read).
    pub(super) fn settle_in_place(&self, link: &Link) -> Result<(), Error> {
        let Some(i) = self.slot() else {
            return Ok(());
        };
        let mut guard = lock(&self.rx);
        if let Some(RxState { core, .. }) = guard.as_mut() {
            self.settle_unsettled(link, core, i)?;
        }
        Ok(())
    }

    /// Publishes the position of frames reader slot `i` received in place
    /// and has not published yet, if there are any (if not, the slot
    /// already says where the reader is, and a store to it would only cost
    /// the writers reading it a cache line).
    fn settle_unsettled(&self, link: &Link, core: &mut RxCore, i: usize) -> Result<(), Error> {
        if core.take_unsettled() {
            let here = core.mark();
            self.settle_window(link, core, i, here)?;
        }
        Ok(())
    }

    /// After a read from the window without the lock (the reader was at
    /// `mark` before it): if reader slot `i` is still in good standing, the
    /// read stands: its position is published, its counts kept and writers
    /// waiting for space woken when due; `true`. Otherwise whatever it
    /// copied is forgotten, the reader goes back to `mark` and its window
    /// is closed (the locked path resynchronises it); `false`.
    fn settle_window(
        &self,
        link: &Link,
        core: &mut RxCore,
        i: usize,
        mark: Mark,
    ) -> Result<bool, Error> {
        if !link.bus.in_good_standing(i) {
            core.rewind(mark);
            return Ok(false);
        }
        let _ = core.take_unsettled();
        link.bus.publish_position(i, core.position());
        self.counters.absorb(core.take_tally());
        if link.bus.space_sleepers() && core.wake_writers_now(false) {
            link.bus.wake_space_sleepers();
        }
        link.bus.check_mapping()?;
        Ok(true)
    }

    /// Receives the next frame for this interface without blocking and
    /// hands it to `f` where it lies (in this interface's private copy,
    /// outside the bus lock), saving the copy into a caller's buffer that
    /// [`Interface::try_recv_into`] makes. Returns `f`'s result, or `None`
    /// when nothing is waiting. Other receives on this interface wait until
    /// `f` returns, so keep it short.
    pub fn try_recv_with<R>(
        &self,
        f: impl FnOnce(&[u8], Received) -> R,
    ) -> Result<Option<R>, Error> {
        Ok(match self.recv_copied(Via::Copy, true, f)? {
            Copied::Frame(r) => Some(r),
            Copied::Nothing | Copied::Window => None,
        })
    }

    /// [`Interface::try_recv_with`], for a caller that reads the window of
    /// a registered reader where it lies ([`Via::InPlace`]) or one that has
    /// it copied ([`Via::Copy`]); `watch` false when the caller has just
    /// watched the cursor hint in vain (a registered reader that caught up
    /// then goes to the lock at once instead of watching again).
    fn recv_copied<R>(
        &self,
        via: Via,
        watch: bool,
        f: impl FnOnce(&[u8], Received) -> R,
    ) -> Result<Copied<R>, Error> {
        let mut guard = lock(&self.rx);
        let (core, link) = self.receiving(&mut guard)?;
        // A hostile peer can make the chain a cycle of frames nobody wants;
        // one call gives up after a bounded number of steps.
        let filter = self.filter();
        let slot = self.slot();
        if let (Some(i), true) = (slot, core.is_empty()) {
            // Once per batch, not per frame popped from it: the slot's
            // cache line is what waiting writers read.
            link.bus.reader_heartbeat(i);
        }
        let mut steps = 0;
        loop {
            if let Some((header, data)) = core.pop() {
                // `data` is the frame's `header.len` bytes.
                self.count_delivered(1, data.len() as u64);
                return Ok(Copied::Frame(f(data, received(&header))));
            }
            if steps >= MAX_STEPS_PER_CALL {
                return Ok(Copied::Nothing);
            }
            // A registered reader of an extended bus reads the frames
            // published when it last looked under the lock without taking
            // it again: writers do not overwrite them while it is in good
            // standing, which it checks after copying (a batch read after
            // a writer gave up waiting for it is thrown away, and the
            // locked path below resynchronises and counts the loss).
            // The writers' cursor hint extends the window without the lock
            // while frames keep coming.
            // Not for a reader out of standing: what it read there would be
            // thrown away; the lock below reinstates or resyncs it.
            let in_standing = slot.is_some_and(|i| link.bus.in_good_standing(i));
            let window = slot
                .filter(|_| in_standing)
                .and_then(|i| Some((i, open_window(link, core)?)));
            if window.is_some() && via == Via::InPlace {
                return Ok(Copied::Window);
            }
            // Whether to watch the cursor for more below: not once a writer
            // left this reader behind, nor after a window this reader could
            // not move through (it began with something impossible): only
            // the locked path resyncs or repairs, and the cursor would open
            // the same window again while the lock stays held (a dead
            // holder's lock would then never be taken over).
            let mut may_watch = watch && in_standing;
            if let Some((i, end)) = window {
                let mark = core.mark();
                let from = core.position();
                let (n, _) = core.refill_window(&link.bus.window_data(), end, &filter);
                let standing = self.settle_window(link, core, i, mark)?;
                may_watch = standing && core.position() != from;
                if standing {
                    steps += n;
                    if !core.is_empty() || core.window().is_some() {
                        continue;
                    }
                    // The window is used up (or ended in something
                    // impossible): look under the lock for more.
                    core.set_window(None);
                }
            }
            // Caught up with a writer holding the lock: watch the cursor
            // hint rather than queue for the lock.
            if slot.is_some() && may_watch && watch_cursor(link, core) {
                continue;
            }
            let (n, done) = {
                let g = link.bus.acquire();
                let ctl = g.control();
                let data = g.data();
                // A registered reader in good standing that reads in place
                // takes what the lock shows it as a window, to read where
                // it lies once the lock is let go (writers keep those bytes
                // while its standing holds). Copied here, a holding's
                // frames would be copied whenever this reader queued for
                // the lock behind the writer writing them, and on a jumbo
                // bus a batch of them is a megabyte copied with the lock
                // held.
                if via == Via::InPlace {
                    let geom = g.geometry();
                    let end = crate::ring::cursor(geom, &data, &ctl).ok();
                    let window =
                        end.and_then(|e| crate::ring::window_end(geom, core.position(), e));
                    // A reader not in good standing whose unread bytes are
                    // all still there (left behind or excused by a writer
                    // that then wrote nothing over them, or not registered
                    // yet: its first receive) needs no copy either: its
                    // position, checked under this holding, makes writers
                    // wait for it again (or registers it), and it reads
                    // the window in place. One that lost frames copies
                    // them below, where the resync counts the loss.
                    let reads_in_place = window.is_some()
                        && match slot {
                            Some(i) => {
                                link.bus.in_good_standing(i)
                                    || (core.is_current(&data, &ctl)
                                        && link.bus.reinstate_reader(i, core.position()))
                            }
                            None => {
                                link.bus.is_extended()
                                    && !self.is_lossy()
                                    && core.is_current(&data, &ctl)
                                    && {
                                        self.maybe_register(link, core.position());
                                        self.slot().is_some()
                                    }
                            }
                        };
                    if reads_in_place {
                        core.set_window(window);
                        return Ok(Copied::Window);
                    }
                }
                let r = core.refill(&data, &ctl, &filter);
                // Under the lock, so that the position is valid (resynced
                // after any overrun) when writers next look at it.
                match slot {
                    // Everything before this position is copied out.
                    Some(i) => link.bus.publish_reader(i, core.position()),
                    None => self.maybe_register(link, core.position()),
                }
                // What this reader may read next without the lock.
                core.set_window(match self.slot() {
                    Some(_) => crate::ring::cursor(g.geometry(), &data, &ctl).ok(),
                    None => None,
                });
                r
            };
            self.counters.absorb(core.take_tally());
            link.bus.check_mapping()?;
            steps += n;
            if slot.is_some() && link.bus.space_sleepers() && core.wake_writers_now(done) {
                link.bus.wake_space_sleepers();
            }
            if done && core.is_empty() {
                return Ok(Copied::Nothing);
            }
        }
    }

    /// Receives the next frame without blocking; `None` if nothing waits.
    pub fn try_recv(&self) -> Result<Option<Frame>, Error> {
        self.try_recv_with(|data, r| Frame {
            data: data.to_vec(),
            sec: r.sec,
            usec: r.usec,
            sender: r.sender,
        })
    }

    /// Blocks until a frame arrives or `timeout` passes (`None` then).
    /// Returns [`Error::Down`] if the interface is taken down meanwhile.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Frame>, Error> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    /// Blocks until a frame arrives. Returns [`Error::Down`] if the
    /// interface is taken down meanwhile.
    pub fn recv(&self) -> Result<Frame, Error> {
        loop {
            if let Some(f) = self.recv_until(None)? {
                return Ok(f);
            }
        }
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<Frame>, Error> {
        loop {
            if let Some(f) = self.try_recv()? {
                return Ok(Some(f));
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
                None => None,
            };
            let _ = self.wait_for_wakeup(left)?;
        }
    }
}
