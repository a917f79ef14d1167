//! When to poll, sleep and wake: the spin policy of a blocking receive,
//! the wake-up after a send, and deferred wake-ups with their flusher
//! thread.

use super::{lock, Interface, Link};
use crate::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Link {
    /// Writes a deferred wake-up, if one is pending.
    fn flush_wake(&self) -> Result<(), Error> {
        if self.wake_pending.swap(false, Ordering::AcqRel) {
            self.bus.wake()?;
        }
        Ok(())
    }
}

/// Ticks of a flusher with nothing pending before it exits (a later
/// deferred send starts a new one).
const FLUSHER_IDLE_TICKS: u32 = 1000;

/// The flusher of deferred wake-ups: every `delay`, writes the wake-up if
/// frames were sent since the last one. This is what bounds how long a
/// sleeping reader (a NetBSD peer) waits for a deferred wake-up.
fn flusher(link: std::sync::Weak<Link>, delay_ns: Arc<AtomicU64>) {
    let mut idle = 0;
    loop {
        let delay = delay_ns.load(Ordering::Relaxed);
        let Some(l) = link.upgrade() else { return };
        if delay == 0 || idle >= FLUSHER_IDLE_TICKS {
            l.flusher_running.store(false, Ordering::SeqCst);
            // A sender that set the flag before seeing this one stop.
            let _ = l.flush_wake();
            return;
        }
        drop(l);
        std::thread::sleep(Duration::from_nanos(delay));
        let Some(l) = link.upgrade() else { return };
        if l.wake_pending.load(Ordering::Acquire) {
            idle = 0;
            let _ = l.flush_wake();
        } else {
            idle += 1;
        }
    }
}

impl Interface {
    /// Wakes the bus's readers after a send: at once, or, with a wake
    /// delay set, by marking the wake-up pending for the flusher thread.
    pub(super) fn wake(&self, link: &Arc<Link>) -> Result<(), Error> {
        if self.wake_delay_ns.load(Ordering::Relaxed) == 0 {
            self.woke_own.store(true, Ordering::Relaxed);
            return link.bus.wake();
        }
        link.wake_pending.store(true, Ordering::Release);
        if !link.flusher_running.swap(true, Ordering::SeqCst) {
            let (weak, delay) = (Arc::downgrade(link), self.wake_delay_ns.clone());
            let spawned = std::thread::Builder::new()
                .name("shmif-wake".into())
                .spawn(move || flusher(weak, delay));
            if spawned.is_err() {
                // No thread: wake at once, as without a delay.
                link.flusher_running.store(false, Ordering::SeqCst);
                return link.flush_wake();
            }
        }
        Ok(())
    }

    /// Lets sends defer their wake-up write by up to `delay`: instead of a
    /// `pwrite` per send (about a microsecond of system call on the
    /// sender's path), a helper thread writes one wake-up every `delay`
    /// while frames have been sent since the last. Readers that poll the
    /// ring (spinning or busy-polling peers) see frames at once; a reader
    /// that sleeps on the wake-up, such as a NetBSD peer, is woken at most
    /// `delay` (plus scheduling) after a frame was sent. `Duration::ZERO`
    /// (the default) wakes on every send, as NetBSD does.
    ///
    /// Meant for busy-polling applications whose peers poll too, where the
    /// wake-up write is pure overhead; a delay of a millisecond matches the
    /// granularity at which NetBSD peers themselves back off.
    pub fn set_wake_delay(&self, delay: Duration) {
        let ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.wake_delay_ns.store(ns, Ordering::Relaxed);
        if ns == 0 {
            if let Some(l) = self.current_link() {
                let _ = l.flush_wake();
            }
        }
    }

    /// The delay set by [`Interface::set_wake_delay`].
    pub fn wake_delay(&self) -> Duration {
        Duration::from_nanos(self.wake_delay_ns.load(Ordering::Relaxed))
    }

    /// Sets how long a blocking receive (and [`Interface::wait_for_wakeup`])
    /// keeps polling the bus header for new frames before it sleeps on the
    /// file-change event. Polling costs CPU but saves the sleep and wake-up
    /// system calls when traffic is continuous. A bounded spin yields the
    /// processor between looks, so that a writer sharing it runs; it costs
    /// nothing extra to others when the processor is otherwise idle.
    /// `Duration::ZERO` (the default) sleeps at once, as NetBSD does;
    /// `Duration::MAX` never sleeps nor yields (busy-poll: lowest latency,
    /// one core used while waiting; see also [`Interface::set_wake_delay`]).
    pub fn set_spin(&self, spin: Duration) {
        let ns = u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX);
        self.spin_ns.store(ns, Ordering::Relaxed);
    }

    /// The spin set by [`Interface::set_spin`].
    pub fn spin(&self) -> Duration {
        match self.spin_ns.load(Ordering::Relaxed) {
            u64::MAX => Duration::MAX,
            ns => Duration::from_nanos(ns),
        }
    }

    /// Sets how long a wait that follows a burst (at least
    /// [`RX_COALESCE_BURST`] frames received since the previous wait)
    /// naps before it sleeps on an extended bus's futex: receive-side
    /// interrupt coalescing. While a writer streams, a reader that has
    /// caught up would otherwise sleep after every batch, and the writer
    /// would make a `futex` wake call for every batch, each costing both
    /// a system call and a context switch. A nap is a plain sleep, in
    /// which the reader is not counted as a sleeper, so writers make no
    /// wake-up call for it; when it ends the reader takes what came
    /// meanwhile in one go. On two processors shared by a writer and three
    /// readers this nearly doubled what each reader got
    /// (`BENCHMARKS.md`, "Receive coalescing").
    ///
    /// It applies only where it costs no frames and no round trips: to a
    /// registered (lossless) reader of an extended bus that sleeps on the
    /// futex (not to one whose wake-up descriptor is being polled, nor to
    /// a lossy or NetBSD-bus reader, which a nap could make lose frames),
    /// and never after a single frame, so that request and answer
    /// exchanges see no delay. A frame sent during a nap waits at most the
    /// nap (plus the system's timer slack) for this reader.
    /// [`DEFAULT_RX_COALESCE`] by default; `Duration::ZERO` turns it off;
    /// longer naps are cut to [`MAX_RX_COALESCE`].
    pub fn set_rx_coalesce(&self, nap: Duration) {
        let ns = u64::try_from(nap.as_nanos()).unwrap_or(u64::MAX);
        self.coalesce_ns.store(ns, Ordering::Relaxed);
    }

    /// The nap set by [`Interface::set_rx_coalesce`].
    pub fn rx_coalesce(&self) -> Duration {
        Duration::from_nanos(self.coalesce_ns.load(Ordering::Relaxed))
    }

    /// Whether the ring's header moved since this interface last found it
    /// empty; `None` while it has no such look to compare with.
    fn ring_moved_since_quiet(&self, link: &Link) -> Option<bool> {
        let q = lock(&self.rx).as_ref().and_then(|s| s.core.quiet())?;
        let c = link.bus.peek_control();
        Some((c.gen, c.last) != q)
    }

    /// Whether this wait follows a burst and may nap first (see
    /// [`Interface::set_rx_coalesce`]), and for how long. Marks the start
    /// of the next burst either way.
    fn coalescing_nap(&self, link: &Link, timeout: Option<Duration>) -> Option<Duration> {
        let rx = self.counters.rx_frames.load(Ordering::Relaxed);
        let burst = rx.wrapping_sub(self.rx_at_wait.swap(rx, Ordering::Relaxed));
        let nap =
            Duration::from_nanos(self.coalesce_ns.load(Ordering::Relaxed)).min(MAX_RX_COALESCE);
        let nap = timeout.map_or(nap, |t| t.min(nap));
        (burst >= RX_COALESCE_BURST
            && !nap.is_zero()
            && self.slot().is_some()
            && link.bus.futex_wakeups()
            && !link.fd_waiter.load(Ordering::Acquire))
        .then_some(nap)
    }

    /// Blocks until the bus file changes or `timeout` passes; for callers
    /// that drive [`Interface::try_recv_into`] themselves. Returns whether a
    /// change was seen (`false`: timed out), or [`Error::Down`] if the
    /// interface is down.
    pub fn wait_for_wakeup(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        let link = self.active_link()?;
        self.settle_in_place(&link)?;
        let spin = self.spin_ns.load(Ordering::Relaxed);
        let mut timeout = timeout;
        if timeout != Some(Duration::ZERO) && spin != u64::MAX {
            if let Some(nap) = self.coalescing_nap(&link, timeout) {
                super::bump(&self.counters.rx_naps, 1);
                let start = Instant::now();
                std::thread::sleep(nap);
                timeout = timeout.map(|t| t.saturating_sub(start.elapsed()));
                if !self.is_up() {
                    // Taken down during the nap (its wake-up came before
                    // this wait could sleep on it).
                    return Err(Error::Down);
                }
                // Whatever came meanwhile is taken at once (or, with no
                // empty look to compare with, the caller looks).
                if self.ring_moved_since_quiet(&link).unwrap_or(true) {
                    return Ok(true);
                }
                if timeout == Some(Duration::ZERO) {
                    return Ok(false);
                }
            }
        }
        // A zero timeout only consumes pending wake-ups: no spinning.
        if spin > 0 && timeout != Some(Duration::ZERO) {
            let start = Instant::now();
            // What "nothing new" looks like: the header as of the last empty
            // look, or as of now.
            let quiet = lock(&self.rx).as_ref().and_then(|s| s.core.quiet());
            let peek = || {
                let c = link.bus.peek_control();
                (c.gen, c.last)
            };
            let quiet = quiet.unwrap_or_else(peek);
            let busy = spin == u64::MAX;
            loop {
                if peek() != quiet {
                    return Ok(true);
                }
                if !self.is_up() {
                    return Err(Error::Down);
                }
                if busy && timeout.is_none() {
                    std::hint::spin_loop();
                    continue;
                }
                let waited = start.elapsed();
                if timeout.is_some_and(|t| waited >= t) {
                    return Ok(false);
                }
                if busy {
                    std::hint::spin_loop();
                } else if waited.as_nanos() >= u128::from(spin) {
                    break;
                } else {
                    // Give the processor to whoever shares it (the writer,
                    // on a machine with fewer cores than busy processes);
                    // returns at once when nobody else wants it.
                    std::thread::yield_now();
                }
            }
            timeout = timeout.map(|t| t.saturating_sub(start.elapsed()));
        }
        if timeout != Some(Duration::ZERO) && self.woke_own.swap(false, Ordering::Relaxed) {
            // Our own wake-up write queued an event in our own watch, so
            // the wait below would return at once, only to look at the ring
            // and wait again. Yielding first lets a peer that shares this
            // processor (just woken by that write) run and answer; if it
            // did, the answer is on the ring and no system call is needed
            // to see it. The event stays queued: a later wait returns at
            // once and looks again (never a lost wake-up), and meanwhile
            // identical events merge into it. Where nobody else wants the
            // processor the yield returns at once.
            std::thread::yield_now();
            if self.ring_moved_since_quiet(&link) == Some(true) {
                return Ok(true);
            }
        }
        if link.bus.futex_wakeups()
            && timeout != Some(Duration::ZERO)
            && !link.fd_waiter.load(Ordering::Acquire)
        {
            return self.futex_wait(&link, timeout);
        }
        let seen = link
            .waiter
            .wait(timeout)
            .map_err(|e| Error::io(link.bus.path(), "cannot wait for bus wake-up", e))?;
        if !self.is_up() {
            return Err(Error::Down);
        }
        link.check_if_metadata_changed()?;
        Ok(seen)
    }

    /// [`Interface::wait_for_wakeup`]'s sleep on an extended bus: on the
    /// futex word, in steps of at most [`FUTEX_STEP`], after each of which
    /// the bus file's identity is checked (the file watch is not read on
    /// this path, so this is how a bus removed or replaced is noticed).
    fn futex_wait(&self, link: &Arc<Link>, timeout: Option<Duration>) -> Result<bool, Error> {
        let start = Instant::now();
        loop {
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
            if left == Some(Duration::ZERO) {
                return Ok(false);
            }
            let step = left.map_or(FUTEX_STEP, |l| l.min(FUTEX_STEP));
            let quiet = lock(&self.rx).as_ref().and_then(|s| s.core.quiet());
            let woken = link.bus.futex_sleep(step, || {
                // Nothing read yet to compare with: look at the ring.
                quiet.is_none_or(|q| {
                    let c = link.bus.peek_control();
                    (c.gen, c.last) != q
                })
            });
            if !self.is_up() {
                return Err(Error::Down);
            }
            link.bus.check_mapping()?;
            if woken {
                return Ok(true);
            }
            link.bus.check_identity()?;
        }
    }
}

/// How many frames since the previous wait make a burst, after which a
/// wait naps first (see [`Interface::set_rx_coalesce`]).
pub const RX_COALESCE_BURST: u64 = 16;

/// The default nap of [`Interface::set_rx_coalesce`]: long enough for a
/// streaming writer to fill a few hundred kilobytes, short next to the
/// millisecond-scale stalls a lossless ring absorbs anyway.
pub const DEFAULT_RX_COALESCE: Duration = Duration::from_micros(100);

/// The longest nap [`Interface::set_rx_coalesce`] takes, whatever is set:
/// a nap is not ended by a wake-up, nor by the interface going down.
pub const MAX_RX_COALESCE: Duration = Duration::from_millis(10);

/// Longest single futex sleep: a removed or replaced bus file is noticed
/// within this (the futex path does not read the file watch's events).
const FUTEX_STEP: Duration = Duration::from_millis(100);
