//! The bus's low-level primitives: its lock and direct access to the ring.
//!
//! Nothing here is needed to use a bus: [`crate::Interface`] takes the lock,
//! reads and writes the ring, wakes readers and recovers from dead holders
//! on its own. This module is for the few programs that must step outside
//! it, and each use is a promise to follow the bus protocol by hand:
//!
//! - a benchmark's baseline that runs NetBSD's algorithm literally on the
//!   same bus (`shmif bench`);
//! - tests that hold the lock on purpose, or drive the takeover of a dead
//!   holder's lock step by step;
//! - inspection tools that want the control words as they are;
//! - floors measured in the same kind of shared memory ([`SharedWord`]).
//!
//! Hold a [`BusGuard`] for microseconds, never across a blocking call:
//! every peer on the bus, NetBSD's included, spins while it is held. Frames
//! written through [`BusGuard::data`] must go through [`crate::ring`]'s
//! functions ([`crate::ring::append_with`] with [`BusGuard::set_first`] as
//! its publisher, then [`BusGuard::set_control`]), and readers are woken
//! with [`crate::Bus::wake`] after the guard is dropped.
//!
//! ```no_run
//! use shmif::lowlevel::RawBus;
//! use shmif::ring::{self, Reader};
//! let bus = shmif::Bus::open("/tmp/bus", &shmif::OpenOptions::new())?;
//! let g = bus.lock();
//! let reader = Reader::at_end(g.geometry(), &g.data(), &g.control());
//! drop(g);
//! # Ok::<(), shmif::Error>(())
//! ```

use crate::bus::Bus;
use crate::ring::Control;

pub use crate::bus::{
    claim_tag, holder_tag, BusGuard, Recoveries, DEAD_HOLDER_GRACE, LOCK_COOLDOWN, LOCK_SLEEP,
    LOCK_YIELDS, STUCK_LOCK_TIMEOUT,
};
pub use crate::mapping::SharedWord;

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Bus {}
}

/// The low-level operations of a [`Bus`], in scope only where this trait
/// is imported (`use shmif::lowlevel::RawBus`). Implemented for [`Bus`]
/// alone.
pub trait RawBus: sealed::Sealed {
    /// Takes the bus lock as NetBSD peers do (compare-and-swap 0 to 1,
    /// sleeping 1 ms after every [`LOCK_COOLDOWN`] failed tries), with this
    /// crate's additions: yields to a preempted holder before the first
    /// sleep, and takes over the lock of a dead or stuck holder (see
    /// `DESIGN.md`, sections 1 to 3). Dropping the guard releases it.
    fn lock(&self) -> BusGuard<'_>;

    /// The ring's control words read without the lock: a consistent
    /// snapshot is not guaranteed, but a change shows that something was
    /// written.
    fn peek_control(&self) -> Control;

    /// How often this mapping has had to recover the bus.
    fn recoveries(&self) -> Recoveries;

    /// The takeover step of [`RawBus::lock`], on its own: claims the
    /// holding recorded as `holder` in the header's spare word (see
    /// [`holder_tag`]) by swapping its own tag in, and if the lock is still
    /// held, holds it from now on (checking the ring and resetting it if
    /// the old holder left it inconsistent). `None` if the claim failed (another waiter
    /// won) or the lock was released meanwhile, in which case the claim is
    /// withdrawn. For tests that drive the takeover protocol step by step;
    /// [`RawBus::lock`] decides on its own when to call it.
    fn take_over(&self, holder: u32) -> Option<BusGuard<'_>>;
}

impl RawBus for Bus {
    fn lock(&self) -> BusGuard<'_> {
        self.acquire()
    }

    fn peek_control(&self) -> Control {
        Bus::peek_control(self)
    }

    fn recoveries(&self) -> Recoveries {
        Bus::recoveries(self)
    }

    fn take_over(&self, holder: u32) -> Option<BusGuard<'_>> {
        Bus::take_over(self, holder)
    }
}
