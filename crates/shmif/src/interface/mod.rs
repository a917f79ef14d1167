//! An Ethernet interface on a bus: identity, life cycle, filters, counters.
//!
//! The life cycle is NetBSD's: an [`Interface`] exists without a bus; its
//! bus path (the "link string") is set while it is down, once, and unset to
//! detach; bringing it up starts reception at the bus's newest position, so
//! it receives only frames written after that; taking it down wakes a
//! blocked receive, which then returns [`Error::Down`].
//!
//! All methods take `&self`, so one interface can be shared between a
//! receiving and a sending thread (for example in an `Arc`).
//!
//! The code is split by concern: this file holds the life cycle, the
//! counters and sending; `recv.rs` the receive calls over the sans-IO
//! core in `crate::rx`; `wake.rs` when to poll, sleep and wake (the spin
//! policy, deferred wake-ups and their flusher thread).

mod recv;
mod view;
mod wake;

pub use view::FrameView;
pub use wake::{DEFAULT_RX_COALESCE, MAX_RX_COALESCE, RX_COALESCE_BURST};

use crate::bus::{Bus, OpenOptions};
use crate::error::Error;
use crate::ring::{self, Reader};
use crate::rx::{RxCore, Tally};
use crate::wait::Waiter;
use crate::wire::{FrameHeaderRepr, MacAddr, MAX_FRAME_LEN, MIN_FRAME_LEN};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// [`Interface`]'s `reader_slot` when it has none.
const NO_SLOT: usize = usize::MAX;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// A frame received from the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The Ethernet frame (destination, source, EtherType, payload).
    pub data: Vec<u8>,
    /// The sender's timestamp: seconds and microseconds. NetBSD peers use
    /// their uptime; this crate uses the wall clock.
    pub sec: u32,
    /// Microseconds part of the timestamp.
    pub usec: u32,
    /// The sending interface's random id.
    pub sender: u64,
}

/// What [`Interface::try_recv_into`] copied into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Frame length: the bytes copied when the buffer holds
    /// [`Interface::max_frame_len`] bytes (more than a shorter buffer got).
    pub len: usize,
    /// Timestamp seconds.
    pub sec: u32,
    /// Timestamp microseconds.
    pub usec: u32,
    /// Sender id.
    pub sender: u64,
}

/// Per-interface statistics, as a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Frames this interface wrote to the bus.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames delivered to the user.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames passed over by the MAC filter (addressed to someone else).
    pub rx_filtered: u64,
    /// Frames this interface sent, seen again on the bus and skipped.
    pub rx_own: u64,
    /// Times writers overwrote frames before this interface read them.
    pub overruns: u64,
    /// Ring bytes (frames and their headers) lost to those overruns, where
    /// the distance was knowable: the frames overwritten before the
    /// reader got to them, and the backlog it then dropped to move on to
    /// the newest frame ([`crate::ring::Resync::OldestThenNewest`]).
    pub overrun_bytes: u64,
    /// Overruns whose loss could not be measured (the generation jumped:
    /// a ring reset, or a hostile peer).
    pub overruns_unmeasured: u64,
    /// Frames skipped as malformed: shorter than 14 bytes (other than the
    /// ring's zero-length placeholders), or impossible headers.
    pub malformed: u64,
    /// Times this interface took over the bus lock from a dead or stuck
    /// holder.
    pub lock_takeovers: u64,
    /// Times it then found the ring inconsistent and reset it.
    pub ring_resets: u64,
    /// Times this interface's mapping reset a ring it could not trust, for
    /// any reason: the resets after a takeover above, and the repairs made
    /// when attaching, coming up or sending found impossible contents (a
    /// broken or hostile peer, a stray write into the file). A CLI reports
    /// a change of this count once per episode.
    pub ring_repairs: u64,
    /// Times a wait napped after a burst instead of sleeping on the
    /// extended bus's futex at once (see [`Interface::set_rx_coalesce`]).
    pub rx_naps: u64,
}

#[derive(Debug, Default)]
struct AtomicCounters {
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    rx_filtered: AtomicU64,
    rx_own: AtomicU64,
    overruns: AtomicU64,
    overrun_bytes: AtomicU64,
    overruns_unmeasured: AtomicU64,
    malformed: AtomicU64,
    rx_naps: AtomicU64,
}

impl AtomicCounters {
    /// Adds what the receive core counted.
    fn absorb(&self, t: Tally) {
        for (c, n) in [
            (&self.rx_filtered, t.rx_filtered),
            (&self.rx_own, t.rx_own),
            (&self.overruns, t.overruns),
            (&self.overrun_bytes, t.overrun_bytes),
            (&self.overruns_unmeasured, t.overruns_unmeasured),
            (&self.malformed, t.malformed),
        ] {
            if n != 0 {
                bump(c, n);
            }
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A bus joined by an interface: the mapping and its wake-up watcher.
#[derive(Debug)]
struct Link {
    bus: Bus,
    waiter: Waiter,
    /// Frames were sent whose wake-up is deferred (see
    /// [`Interface::set_wake_delay`]); the flusher writes it.
    wake_pending: AtomicBool,
    /// Whether a flusher thread is running for this link.
    flusher_running: AtomicBool,
    /// This link's wake-up descriptor was handed out: it is counted in
    /// an extended bus's `fd_waiters`, and its waits use the file watch.
    fd_waiter: AtomicBool,
}

impl Drop for Link {
    fn drop(&mut self) {
        if self.fd_waiter.swap(false, Ordering::AcqRel) {
            self.bus.count_fd_waiter(false);
        }
    }
}

impl Link {
    /// If a wake-up event said the bus file's metadata changed, checks that
    /// the path still names this bus ([`Error::BusGone`] otherwise).
    fn check_if_metadata_changed(&self) -> Result<(), Error> {
        if self.waiter.take_metadata_changed() {
            self.bus.check_identity()?;
        }
        Ok(())
    }
}

/// What a receive needs beside the interface's settings, under one lock:
/// the receive core, and the link it was brought up on (the link can change
/// only while the interface is down, and bringing it up makes a new core),
/// so that a receive neither takes the link's lock nor counts a reference
/// to it.
#[derive(Debug)]
struct RxState {
    core: RxCore,
    link: Arc<Link>,
}

/// An Ethernet interface on a shmif bus.
#[derive(Debug)]
pub struct Interface {
    mac: MacAddr,
    sender: u64,
    open: OpenOptions,
    link: RwLock<Option<Arc<Link>>>,
    up: AtomicBool,
    promisc: AtomicBool,
    /// The receive core and the link it was brought up on, from the first
    /// [`Interface::up`] until the link is unset; receives check
    /// [`Interface::is_up`] besides.
    rx: Mutex<Option<RxState>>,
    counters: AtomicCounters,
    /// How long a blocking receive polls the ring before sleeping, in ns;
    /// `u64::MAX`: never sleep (busy-poll).
    spin_ns: AtomicU64,
    /// Longest deferral of a wake-up after a send, ns; 0: wake at once.
    wake_delay_ns: Arc<AtomicU64>,
    /// This interface wrote a wake-up since it last waited: its own watch
    /// holds the event (see `wait_for_wakeup`).
    woke_own: AtomicBool,
    /// How long a wait after a burst naps before sleeping on the futex, ns
    /// (see [`Interface::set_rx_coalesce`]); 0: never.
    coalesce_ns: AtomicU64,
    /// `rx_frames` as of the last wait: how many frames a burst had.
    rx_at_wait: AtomicU64,
    /// Receive without registering on an extended bus (writers then never
    /// wait for this interface; it may be overrun).
    lossy: AtomicBool,
    /// The reader slot this interface holds on an extended bus while up
    /// ([`NO_SLOT`]: none).
    reader_slot: AtomicUsize,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let mut filled = 0;
    while filled < N {
        match rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                // No getrandom(2): fall back to the clock and pid, which is
                // all that uniqueness on one host needs.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
                    ^ (u128::from(std::process::id()) << 64);
                for (i, x) in b.iter_mut().enumerate().skip(filled) {
                    *x = (t >> ((i % 16) * 8)) as u8;
                }
                filled = N;
            }
        }
    }
    b
}

/// A random NetBSD-style address: `b2:a0` and four random octets.
pub fn random_mac() -> MacAddr {
    let r: [u8; 4] = random_bytes();
    MacAddr([0xb2, 0xa0, r[0], r[1], r[2], r[3]])
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_timestamp() -> (u32, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as u32, d.subsec_micros())
}

impl Default for Interface {
    fn default() -> Self {
        Self::new()
    }
}

impl Interface {
    /// A new interface with a random `b2:a0:…` MAC, no bus, and down.
    pub fn new() -> Self {
        Self::with_mac(random_mac())
    }

    /// A new interface with the given MAC, no bus, and down.
    pub fn with_mac(mac: MacAddr) -> Self {
        Interface {
            mac,
            sender: u64::from_ne_bytes(random_bytes()),
            open: OpenOptions::default(),
            link: RwLock::new(None),
            up: AtomicBool::new(false),
            promisc: AtomicBool::new(false),
            rx: Mutex::new(None),
            spin_ns: AtomicU64::new(0),
            wake_delay_ns: Arc::new(AtomicU64::new(0)),
            woke_own: AtomicBool::new(false),
            coalesce_ns: AtomicU64::new(wake::DEFAULT_RX_COALESCE.as_nanos() as u64),
            rx_at_wait: AtomicU64::new(0),
            counters: AtomicCounters::default(),
            lossy: AtomicBool::new(false),
            reader_slot: AtomicUsize::new(NO_SLOT),
        }
    }

    /// On an extended bus, whether this interface receives lossy (as on a
    /// NetBSD bus: writers never wait for it, and it is overrun when it
    /// falls a ring behind) instead of registering as a lossless reader
    /// (the default: writers wait for it, up to the stall bound, see
    /// [`OpenOptions::reader_stall`]). Takes effect when the interface
    /// next comes up. No effect on a NetBSD bus, where every reader is
    /// lossy.
    pub fn set_lossy(&self, on: bool) {
        self.lossy.store(on, Ordering::Relaxed);
    }

    /// Whether this interface receives lossy (see [`Interface::set_lossy`]).
    pub fn is_lossy(&self) -> bool {
        self.lossy.load(Ordering::Relaxed)
    }

    /// Whether this interface is registered as a lossless reader of an
    /// extended bus: up, not lossy, a slot was free, and it has received
    /// (it registers at its first receive call, so that an interface that
    /// only sends never holds writers back).
    pub fn is_registered(&self) -> bool {
        self.reader_slot.load(Ordering::Relaxed) != NO_SLOT
    }

    /// Registers as a lossless reader at `pos` if this interface should
    /// and has not (call with the bus lock held, `pos` just validated).
    fn maybe_register(&self, link: &Link, pos: u64) {
        if self.reader_slot.load(Ordering::Relaxed) == NO_SLOT
            && !self.is_lossy()
            && link.bus.is_extended()
        {
            if let Some(i) = link.bus.register_reader(pos) {
                self.reader_slot.store(i, Ordering::Release);
            }
        }
    }

    /// The registered reader slot, if any.
    pub(crate) fn slot(&self) -> Option<usize> {
        match self.reader_slot.load(Ordering::Relaxed) {
            NO_SLOT => None,
            i => Some(i),
        }
    }

    /// Frees the reader slot, if this interface holds one.
    fn unregister(&self, link: &Link) {
        let i = self.reader_slot.swap(NO_SLOT, Ordering::AcqRel);
        if i != NO_SLOT {
            link.bus.unregister_reader(i);
        }
    }

    /// Sets how the bus file will be opened (mode of a new file, symlinks).
    pub fn with_open_options(mut self, open: OpenOptions) -> Self {
        self.open = open;
        self
    }

    /// Attaches to the bus at `path` (created if missing) with a random MAC
    /// and brings the interface up: the one call most programs need.
    pub fn attach(path: impl AsRef<Path>) -> Result<Self, Error> {
        let i = Self::new();
        i.set_link(path)?;
        i.up()?;
        Ok(i)
    }

    /// Like [`Interface::attach`], with a chosen MAC address.
    pub fn attach_with_mac(path: impl AsRef<Path>, mac: MacAddr) -> Result<Self, Error> {
        let i = Self::with_mac(mac);
        i.set_link(path)?;
        i.up()?;
        Ok(i)
    }

    /// This interface's Ethernet address.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// This interface's random 64-bit sender id, written into every frame
    /// header it sends so that it can skip its own frames.
    pub fn sender_id(&self) -> u64 {
        self.sender
    }

    fn current_link(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets the bus path (NetBSD's link string) and maps the bus. Only while
    /// down, and only once: [`Error::Busy`] otherwise.
    pub fn set_link(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        if self.is_up() {
            return Err(Error::Busy(
                "the link can only be set while the interface is down",
            ));
        }
        let mut link = self.link.write().unwrap_or_else(|p| p.into_inner());
        if link.is_some() {
            return Err(Error::Busy(
                "the interface already has a bus; unset it first",
            ));
        }
        let bus = Bus::open(path, &self.open)?;
        let waiter = Waiter::new(path)
            .map_err(|e| Error::io(path, "cannot watch bus file for changes", e))?;
        *link = Some(Arc::new(Link {
            bus,
            waiter,
            wake_pending: AtomicBool::new(false),
            flusher_running: AtomicBool::new(false),
            fd_waiter: AtomicBool::new(false),
        }));
        Ok(())
    }

    /// The bus path, if one is set.
    pub fn link(&self) -> Option<PathBuf> {
        self.current_link().map(|l| l.bus.path().to_path_buf())
    }

    /// Detaches from the bus (unsets the link string). Only while down.
    pub fn unset_link(&self) -> Result<(), Error> {
        if self.is_up() {
            return Err(Error::Busy(
                "the link can only be unset while the interface is down",
            ));
        }
        self.link.write().unwrap_or_else(|p| p.into_inner()).take();
        // The receive state holds the link too: let the bus go.
        lock(&self.rx).take();
        Ok(())
    }

    /// Brings the interface up: reception starts at the bus's newest
    /// position (frames already on the bus are not delivered).
    pub fn up(&self) -> Result<(), Error> {
        let link = self.current_link().ok_or(Error::NoLink)?;
        let mut rx = lock(&self.rx);
        let geom = link.bus.geometry();
        self.unregister(&link);
        let reader = {
            let g = link.bus.acquire();
            // Whatever a peer left on the bus, coming up repairs it.
            g.repair_unless(|data, ctl| ring::check_writable(geom, data, ctl));
            let ctl = g.control();
            let r = Reader::at_end(geom, &g.data(), &ctl);
            r
        }
        .map_err(|source| Error::Corrupt {
            path: link.bus.path().to_path_buf(),
            source,
        })?;
        let _ = link.waiter.drain();
        *rx = Some(RxState {
            core: RxCore::new(geom, reader),
            link: link.clone(),
        });
        self.up.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Takes the interface down and wakes every reader of the bus, so that
    /// a receive blocked in another thread returns [`Error::Down`].
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(link) = self.current_link() {
            // Writers stop waiting for this reader at once.
            self.unregister(&link);
            // This write also stands for any deferred wake-up. It is the
            // last write of a peer on its way out, often after a failure:
            // never into a file that is no longer a bus (truncated under
            // it, perhaps without this peer touching it since).
            link.wake_pending.store(false, Ordering::Release);
            if link.bus.check_size().is_ok() {
                let _ = link.bus.wake();
            }
        }
    }

    /// Whether the interface is up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Turns promiscuous mode on or off: when on, frames addressed to any
    /// MAC are delivered (frames this interface sent never are).
    pub fn set_promiscuous(&self, on: bool) {
        self.promisc.store(on, Ordering::Relaxed);
    }

    /// Whether promiscuous mode is on.
    pub fn is_promiscuous(&self) -> bool {
        self.promisc.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let r = self
            .current_link()
            .map(|l| l.bus.recoveries())
            .unwrap_or_default();
        Counters {
            tx_frames: g(&c.tx_frames),
            tx_bytes: g(&c.tx_bytes),
            rx_frames: g(&c.rx_frames),
            rx_bytes: g(&c.rx_bytes),
            rx_filtered: g(&c.rx_filtered),
            rx_own: g(&c.rx_own),
            overruns: g(&c.overruns),
            overrun_bytes: g(&c.overrun_bytes),
            overruns_unmeasured: g(&c.overruns_unmeasured),
            malformed: g(&c.malformed),
            lock_takeovers: r.lock_takeovers,
            ring_resets: r.ring_resets,
            ring_repairs: r.ring_repairs,
            rx_naps: g(&c.rx_naps),
        }
    }

    /// A descriptor that becomes readable when the bus file changes, for
    /// `poll`, `epoll` or an async runtime: a duplicate of this interface's
    /// watch, so it stays valid as long as the caller keeps it. After it
    /// fires, call [`Interface::clear_wakeups`], then [`Interface::try_recv`]
    /// until it returns `None`. Poll it, never read it (it is in blocking
    /// mode). `Ok(None)` where the system has no change events to poll (see
    /// [`crate::Waiter::try_clone_fd`]).
    pub fn wakeup_fd(&self) -> Result<Option<std::os::fd::OwnedFd>, Error> {
        let link = self.current_link().ok_or(Error::NoLink)?;
        // On an extended bus writers write the file-change event only
        // while someone waits for it: from now on, this link does.
        if !link.fd_waiter.swap(true, Ordering::AcqRel) {
            link.bus.count_fd_waiter(true);
        }
        link.waiter
            .try_clone_fd()
            .map_err(|e| Error::io(link.bus.path(), "cannot duplicate wake-up descriptor", e))
    }

    /// Consumes pending wake-up events (see [`Interface::wakeup_fd`]). If
    /// one of them said the bus file's metadata changed, checks that the
    /// path still names this bus: [`Error::BusGone`] if it was removed,
    /// replaced or truncated.
    pub fn clear_wakeups(&self) -> Result<(), Error> {
        let Some(l) = self.current_link() else {
            return Ok(());
        };
        l.waiter
            .drain()
            .map_err(|e| Error::io(l.bus.path(), "cannot read wake-up events", e))?;
        l.check_if_metadata_changed()
    }

    fn active_link(&self) -> Result<Arc<Link>, Error> {
        let link = self.current_link().ok_or(Error::NoLink)?;
        if !self.is_up() {
            return Err(Error::Down);
        }
        Ok(link)
    }

    fn check_len(frame: &[u8], max: usize) -> Result<(), Error> {
        if (MIN_FRAME_LEN..=max).contains(&frame.len()) {
            Ok(())
        } else {
            Err(Error::FrameSize {
                len: frame.len(),
                max,
            })
        }
    }

    /// The longest frame this interface's bus carries: 1514 on a NetBSD
    /// (version-3) bus or without a bus, the header's frame limit on an
    /// extended bus.
    pub fn max_frame_len(&self) -> usize {
        self.current_link()
            .map_or(MAX_FRAME_LEN, |l| l.bus.geometry().max_frame())
    }

    /// Whether this interface's bus is an extended bus (see
    /// `EXTENDED-FORMAT.md`); false without a bus.
    pub fn is_extended(&self) -> bool {
        self.current_link().is_some_and(|l| l.bus.is_extended())
    }

    /// Sends one Ethernet frame (14 bytes to [`Interface::max_frame_len`],
    /// no FCS) and wakes the bus's readers.
    pub fn send(&self, frame: &[u8]) -> Result<(), Error> {
        self.send_batch(std::iter::once(frame))
    }

    /// Sends several frames under one hold of the bus lock, with one
    /// wake-up for the batch. Every frame is checked before any is sent.
    pub fn send_batch<'f, I>(&self, frames: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = &'f [u8]>,
        I::IntoIter: Clone,
    {
        let frames = frames.into_iter();
        // The link once (a lock and a reference count each time), and the
        // frame limit from it, as `max_frame_len` says.
        let link = self.current_link();
        let max = link
            .as_ref()
            .map_or(MAX_FRAME_LEN, |l| l.bus.geometry().max_frame());
        for f in frames.clone() {
            Self::check_len(f, max)?;
        }
        let link = link.ok_or(Error::NoLink)?;
        if !self.is_up() {
            return Err(Error::Down);
        }
        let geom = link.bus.geometry();
        let (sec, usec) = now_timestamp();
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut failure = None;
        let size = u64::from(geom.size);
        let mut frames = frames.peekable();
        // Made only if this send has to wait for readers (it is 2.5 KiB).
        let mut watch: Option<crate::bus::ReaderWatch> = None;
        'hold: loop {
            let g = link.bus.acquire();
            // A ring whose control words or newest frame are impossible is
            // repaired before writing (a broken or hostile peer, a stray
            // write into the file): the same reset as after a takeover,
            // from which every reader, NetBSD's too, resynchronises.
            g.repair_unless(|data, ctl| ring::check_writable(geom, data, ctl));
            let mut ctl = g.control();
            let mut data = g.data();
            // Lossless readers of an extended bus: how far this hold may
            // write (None: nobody to wait for), and where it writes now.
            // (Not this interface's own reader: it reads when it can.)
            let limit = link.bus.write_limit(self.slot());
            let mut end = ring::cursor(geom, &data, &ctl).unwrap_or(0);
            // Where `end` lies in the ring (below its size, whatever `gen`
            // the bus holds), kept up as frames go in, and where the next
            // frame goes once this hold has appended one (before that, the
            // newest entry's header says).
            let mut end_off = end % size;
            let mut next_at = None;
            while let Some(f) = frames.peek().copied() {
                let need = (crate::wire::FRAME_HEADER_LEN + f.len()) as u64;
                if let Some(limit) = limit {
                    if ring_lap_ends_here(geom, end, end_off, limit) {
                        // Every registered reader is close behind: start
                        // the next lap at offset 0, where they read a
                        // moment ago, so that the bytes written next are
                        // still in the processors' caches.
                        if let Ok(a) =
                            ring::append_skip(geom, &mut data, &mut ctl, |first| g.set_first(first))
                        {
                            g.set_control(&ctl);
                            end = ctl.gen.wrapping_mul(size);
                            end_off = u64::from(a.next);
                            next_at = Some(a.next);
                            link.bus.publish_cursor(end);
                        }
                    }
                    if end.saturating_add(need) > limit {
                        // A registered reader has not read what this frame
                        // would overwrite: let go of the lock (it needs it
                        // to read), wake it, and wait for it to move, to
                        // be left behind as stalled, or to be found gone.
                        link.bus.publish_cursor(end);
                        drop(data);
                        drop(g);
                        link.bus.check_mapping()?;
                        if n > 0 {
                            self.wake(&link)?;
                        }
                        let watch = watch.get_or_insert_with(Default::default);
                        self.wait_for_readers(&link, end.saturating_add(need), watch);
                        continue 'hold;
                    }
                }
                frames.next();
                if let (Some(at), Some(after)) = (next_at, frames.peek()) {
                    // Where the frame after this one goes, fetched for
                    // writing while this one is copied: without it, each
                    // line of a frame waits its turn to be taken from the
                    // reader that read it a lap ago, and the stores queue
                    // behind it (BENCHMARKS.md, "Lines fetched for
                    // writing").
                    let off = u64::from(at) + need;
                    if off < size {
                        let span = crate::wire::FRAME_HEADER_LEN + after.len();
                        crate::ring::Region::prefetch_for_write(&data, off as u32, span as u32);
                    }
                }
                let h = FrameHeaderRepr {
                    len: f.len() as u32,
                    sec,
                    usec,
                    sender: self.sender,
                };
                // The eviction walk checks every frame it passes; one that
                // is impossible means the chain is broken: repair, retry.
                for attempt in 0..2 {
                    let publish_first = |first| g.set_first(first);
                    let appended = match next_at {
                        Some(at) => {
                            ring::append_at(geom, &mut data, &mut ctl, at, &h, f, publish_first)
                        }
                        None => ring::append_with(geom, &mut data, &mut ctl, &h, f, publish_first),
                    };
                    match appended {
                        // Publish each frame's control words at once: a
                        // writer killed mid-batch leaves a consistent ring.
                        // The cursor hint waits for the end of the hold
                        // (below): it only lets registered readers read
                        // without the lock, and a store per frame to the
                        // line they poll cost more than the frame.
                        Ok(a) => {
                            g.set_control(&ctl);
                            // `gen` is whatever the bus holds: wrapping,
                            // never an overflow panic on bus contents.
                            end_off = u64::from(a.next);
                            end = ctl.gen.wrapping_mul(size).wrapping_add(end_off);
                            next_at = Some(a.next);
                            break;
                        }
                        Err(_) if attempt == 0 => {
                            g.repair();
                            ctl = g.control();
                            next_at = None;
                        }
                        Err(source) => {
                            // A freshly reset ring always takes a frame.
                            failure = Some(source);
                            break 'hold;
                        }
                    }
                }
                n += 1;
                bytes += f.len() as u64;
            }
            // Everything this hold wrote, for registered readers, before
            // the lock goes (a writer killed before this leaves the hint
            // behind the ring, which only makes readers look under the
            // lock; the next hold publishes it).
            link.bus.publish_cursor(end);
            break;
        }
        link.bus.check_mapping()?;
        bump(&self.counters.tx_frames, n);
        bump(&self.counters.tx_bytes, bytes);
        if n > 0 {
            self.wake(&link)?;
        }
        match failure {
            None => Ok(()),
            Some(source) => Err(Error::Corrupt {
                path: link.bus.path().to_path_buf(),
                source,
            }),
        }
    }
}

/// How far a lap of an extended bus runs while every registered reader
/// keeps up: 4 MiB, or 64 of the bus's largest frames if that is more
/// (`EXTENDED-FORMAT.md`, "Skip records"). `None` where laps never end
/// early: a ring without skip records, or one under twice this size.
pub(crate) fn hot_lap(geom: ring::Geometry) -> Option<u64> {
    let span = (crate::wire::FRAME_HEADER_LEN + geom.max_frame()) as u64;
    let hot = (4u64 << 20).max(64 * span);
    (geom.skips && u64::from(geom.size) >= 2 * hot).then_some(hot)
}

/// Whether a writer at linear position `end`, allowed up to `limit` by the
/// registered readers (their least position plus a ring, less a header
/// and a byte: `Bus::write_limit`), ends the lap here with a skip record:
/// it is a hot lap or more into the ring, the slowest active reader is
/// less than a hot lap behind, and the skipped span is within the limit
/// (it always is then; checked all the same). `off` is the writer's offset
/// in the ring, below its size (`end % size` while `gen` × size does not
/// wrap), which the writer tracks as it goes: a division for every frame
/// cost more than the rest of this test.
pub(crate) fn ring_lap_ends_here(geom: ring::Geometry, end: u64, off: u64, limit: u64) -> bool {
    let Some(hot) = hot_lap(geom) else {
        return false;
    };
    let size = u64::from(geom.size);
    let header = crate::wire::FRAME_HEADER_LEN as u64;
    let least = limit.saturating_add(header + 1).saturating_sub(size);
    off >= hot
        && off + header <= size
        && end.saturating_sub(least) <= hot
        && end.saturating_add(size - off) <= limit
}

impl Interface {
    /// Waits, without the lock, until the registered readers let a write
    /// reach linear position `end`, or one holding it back is judged
    /// stalled or gone (see `Bus::judge_readers`): spins briefly, then
    /// yields, then sleeps in short steps.
    fn wait_for_readers(&self, link: &Link, end: u64, watch: &mut crate::bus::ReaderWatch) {
        let start = std::time::Instant::now();
        if let Some(i) = self.slot() {
            // This interface does not read while it waits: others need not
            // wait for it meanwhile (it may be overrun, and counts it).
            link.bus.excuse_reader(i);
        }
        let mut round = 0u32;
        loop {
            match link.bus.write_limit(self.slot()) {
                Some(limit) if limit < end => {}
                _ => return,
            }
            link.bus.judge_readers(end, watch);
            round += 1;
            if round < 64 {
                std::hint::spin_loop();
            } else if start.elapsed() < std::time::Duration::from_micros(50) {
                std::thread::yield_now();
            } else {
                // Asleep until a reader that moved on a good stretch (or
                // read everything) wakes the space futex; the timeout (10
                // ms, or a quarter of the stall bound) keeps the judging of
                // stalled and dead readers going.
                let slot = self.slot();
                let nap = std::time::Duration::from_millis(10).min(link.bus.reader_stall() / 4);
                link.bus
                    .space_sleep(nap, || link.bus.write_limit(slot).is_none_or(|l| l >= end));
            }
        }
    }
}

impl Drop for Interface {
    fn drop(&mut self) {
        // A stopping peer writes the wake-up word, as NetBSD's does.
        if self.is_up() {
            self.down();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn frame(src: MacAddr, tag: u8) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x88, 0xb5, tag]);
        f.resize(60, 0);
        f
    }

    #[test]
    fn a_lap_ends_early_only_a_hot_lap_in_with_every_reader_close_behind() {
        const MIB: u64 = 1 << 20;
        let g = ring::Geometry::new(64 * MIB as u32, 1514)
            .unwrap()
            .with_skips();
        let size = u64::from(g.size);
        let hot = hot_lap(g).unwrap();
        assert_eq!(hot, 4 * MIB);
        // The limit a reader at `least` allows (Bus::write_limit).
        let limit = |least: u64| least + size - 25;
        let lap = 7 * size;
        let ring_lap_ends_here = |g: ring::Geometry, end: u64, limit: u64| {
            ring_lap_ends_here(g, end, end % u64::from(g.size), limit)
        };
        assert!(
            !ring_lap_ends_here(g, lap + hot - 1, limit(lap + hot - 1)),
            "not a hot lap in"
        );
        assert!(
            ring_lap_ends_here(g, lap + hot, limit(lap + hot)),
            "caught up"
        );
        assert!(
            ring_lap_ends_here(g, lap + hot + 100, limit(lap + 100)),
            "a hot lap behind"
        );
        assert!(
            !ring_lap_ends_here(g, lap + hot + 100, limit(lap + 99)),
            "further behind"
        );
        assert!(
            ring_lap_ends_here(g, lap + size - 24, limit(lap + size - 24)),
            "a header's room"
        );
        assert!(
            !ring_lap_ends_here(g, lap + size - 23, limit(lap + size - 23)),
            "no room"
        );
        // Rings that never end laps early.
        let plain = ring::Geometry::new(64 * MIB as u32, 1514).unwrap();
        assert!(!ring_lap_ends_here(plain, lap + hot, limit(lap + hot)));
        let small = ring::Geometry::new(8 * MIB as u32 - 1, 1514)
            .unwrap()
            .with_skips();
        assert_eq!(hot_lap(small), None);
        // Jumbo frames: a hot lap holds at least 64 of them.
        let jumbo = ring::Geometry::new(64 * MIB as u32, 65_549)
            .unwrap()
            .with_skips();
        assert_eq!(hot_lap(jumbo), Some(64 * (65_549 + 24)));
    }

    #[test]
    fn deferred_wake_up_still_wakes_a_sleeping_reader_within_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        let a = Interface::attach(&bus).unwrap();
        let b = Arc::new(Interface::attach(&bus).unwrap());
        a.set_wake_delay(Duration::from_millis(5));
        assert_eq!(a.wake_delay(), Duration::from_millis(5));
        // A reader that only sleeps on the wake-up (as a NetBSD peer does).
        let waiter = Waiter::new(&bus).unwrap();
        waiter.drain().unwrap();
        for tag in 0..20u8 {
            let t = Instant::now();
            a.send(&frame(a.mac(), tag)).unwrap();
            assert!(waiter.wait(Some(Duration::from_secs(2))).unwrap());
            assert!(t.elapsed() < Duration::from_secs(1), "woken late");
            let got = b.recv_timeout(Duration::from_secs(1)).unwrap().unwrap();
            assert_eq!(got.data[14], tag);
        }
        // Back to a wake-up per send: the pending one is written at once.
        a.send(&frame(a.mac(), 99)).unwrap();
        a.set_wake_delay(Duration::ZERO);
        assert!(waiter.wait(Some(Duration::from_millis(200))).unwrap());
    }

    #[test]
    fn an_overrun_reader_skips_to_the_newest_frame_and_counts_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        let a = Interface::attach(&bus).unwrap();
        let b = Interface::attach(&bus).unwrap();
        let n: u16 = 1000; // about 1.5 rings of 1514-byte frames
        for k in 0..n {
            let mut f = frame(a.mac(), 0);
            f.resize(MAX_FRAME_LEN, 0);
            f[14..16].copy_from_slice(&k.to_le_bytes());
            a.send(&f).unwrap();
        }
        let mut got = Vec::new();
        while let Some(k) = b
            .try_recv_with(|d, _| u16::from_le_bytes([d[14], d[15]]))
            .unwrap()
        {
            got.push(k);
        }
        // The oldest surviving frame (where the resync lands), then the
        // newest: the backlog between them is dropped.
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0] > 0 && got[0] < n - 1, "{got:?}");
        assert_eq!(got[1], n - 1);
        let c = b.counters();
        assert_eq!(c.overruns, 1);
        let per_frame = (crate::wire::FRAME_HEADER_LEN + MAX_FRAME_LEN) as u64;
        assert_eq!(c.overrun_bytes, u64::from(n - 2) * per_frame);
        // Back in step: the next frame arrives normally.
        a.send(&frame(a.mac(), 5)).unwrap();
        assert_eq!(b.try_recv().unwrap().unwrap().data[14], 5);
        assert_eq!(b.counters().overruns, 1);
    }

    #[test]
    fn try_recv_with_hands_over_the_frame_without_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        let a = Interface::attach(&bus).unwrap();
        let b = Interface::attach(&bus).unwrap();
        assert_eq!(b.try_recv_with(|d, _| d.len()).unwrap(), None);
        a.send_batch([&frame(a.mac(), 1)[..], &frame(a.mac(), 2)[..]])
            .unwrap();
        let got = b.try_recv_with(|d, r| (d[14], r.len, r.sender)).unwrap();
        assert_eq!(got, Some((1, 60, a.sender_id())));
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(b.try_recv_into(&mut buf).unwrap().map(|r| r.len), Some(60));
        assert_eq!(buf[14], 2);
        assert_eq!(b.counters().rx_frames, 2);
    }

    /// A 1 MiB extended bus in a scratch directory (kept while the first
    /// value lives) with two interfaces: `a` to send, and `b`, registered
    /// as a lossless reader by a first, empty receive.
    fn registered_pair() -> (tempfile::TempDir, std::path::PathBuf, Interface, Interface) {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        crate::Bus::create(&bus, 1 << 20, 1514, &crate::OpenOptions::new()).unwrap();
        let a = Interface::attach(&bus).unwrap();
        let b = Interface::attach(&bus).unwrap();
        assert!(b.try_recv().unwrap().is_none());
        assert!(b.is_registered());
        (dir, bus, a, b)
    }

    /// A registered reader that looks in place for a frame to deliver and
    /// passes over only frames for other MACs, while writers have stopped
    /// waiting for it (it is `STALLED`: the bytes it read may be torn),
    /// keeps nothing of that look: the locked path reads those frames
    /// again. (Once the position after them stood, the frames were lost
    /// and not counted, filtered or overrun.)
    #[test]
    fn frames_passed_over_in_place_by_a_left_behind_reader_are_read_again() {
        let (_dir, _bus, a, b) = registered_pair();
        // For a unicast MAC that is not b's.
        let mut f = frame(a.mac(), 1);
        f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        a.send(&f).unwrap();
        let link = b.active_link().unwrap();
        link.bus.excuse_reader(b.slot().unwrap());
        let got = b.try_recv_in_place(|v, _| v.to_vec()).unwrap();
        assert_eq!(got, None);
        let c = b.counters();
        assert_eq!(
            (c.rx_filtered, c.overruns, c.overrun_bytes),
            (1, 0, 0),
            "the frame is read again under the lock and filtered: {c:?}"
        );
        // In step again: the next frame for b is delivered in place.
        let mine = frame(a.mac(), 2);
        a.send(&mine).unwrap();
        let got = b.try_recv_in_place(|v, _| v.to_vec()).unwrap();
        assert_eq!(got.as_deref(), Some(&mine[..]));
    }

    /// A registered reader that a writer excused (or left behind) but
    /// whose unread frames are all still there gets them where they lie
    /// again, in order and none lost, once its position is confirmed under
    /// the lock: the locked path copies none of them (on a jumbo bus, a
    /// batch copied there is a megabyte with the lock held). A reader not
    /// registered yet is registered at its first receive the same way.
    #[test]
    fn readers_out_of_standing_with_nothing_lost_read_in_place_again() {
        let (_dir, bus, a, b) = registered_pair();
        let fresh = Interface::attach(&bus).unwrap();
        assert!(!fresh.is_registered());
        let link = b.active_link().unwrap();
        let i = b.slot().unwrap();
        link.bus.excuse_reader(i);
        assert!(!link.bus.in_good_standing(i));
        const N: u8 = 40; // more than a locked batch (RX_BATCH)
        for k in 0..N {
            a.send(&frame(a.mac(), k)).unwrap();
        }
        for (who, r) in [("excused", &b), ("fresh", &fresh)] {
            let mut got = Vec::new();
            let mut calls = 0;
            while got.len() < N as usize && calls < 10 {
                calls += 1;
                match r
                    .try_recv_batch_in_place(64, &mut got, |v, _| (v.is_in_bus(), v.to_vec()[14]))
                {
                    Ok(_) | Err(Error::LeftBehind) => {}
                    Err(e) => panic!("{who}: {e}"),
                }
            }
            let tags: Vec<u8> = got.iter().map(|g| g.1).collect();
            assert_eq!(
                tags,
                (0..N).collect::<Vec<_>>(),
                "{who}: every frame, in order"
            );
            let copied = got.iter().filter(|g| !g.0).count();
            assert_eq!(copied, 0, "{who}: frames copied under the lock");
            assert_eq!(r.counters().overruns, 0, "{who}");
            let j = r.slot().expect("registered");
            assert!(
                link.bus.in_good_standing(j),
                "{who}: writers wait for it again"
            );
        }
    }

    /// A receive uses the link the interface was brought up on, which it
    /// keeps beside its receive core: down, it says so; with the link
    /// unset, that there is none; on another bus once up again, that bus.
    #[test]
    fn a_receive_follows_the_link_through_down_unset_and_up() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        let b = Interface::attach(&one).unwrap();
        let a1 = Interface::attach(&one).unwrap();
        let a2 = Interface::attach(&two).unwrap();
        b.down();
        assert!(matches!(b.try_recv(), Err(Error::Down)));
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert!(matches!(b.try_recv_into(&mut buf), Err(Error::Down)));
        b.unset_link().unwrap();
        assert!(matches!(b.try_recv(), Err(Error::NoLink)));
        assert!(matches!(
            b.try_recv_in_place(|v, _| v.len()),
            Err(Error::NoLink)
        ));
        b.set_link(&two).unwrap();
        assert!(matches!(b.try_recv_into(&mut buf), Err(Error::Down)));
        b.up().unwrap();
        a1.send(&frame(a1.mac(), 1)).unwrap();
        a2.send(&frame(a2.mac(), 2)).unwrap();
        let got = b.try_recv().unwrap().unwrap();
        assert_eq!(got.data[14], 2, "from the bus it is up on");
        assert!(b.try_recv().unwrap().is_none());
    }

    #[test]
    fn untimed_wait_sleeps_in_read_while_others_poll_and_drain() {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        let a = Interface::attach(&bus).unwrap();
        let b = Arc::new(Interface::attach(&bus).unwrap());
        b.clear_wakeups().unwrap();
        let b2 = b.clone();
        let sleeper = std::thread::spawn(move || b2.recv());
        std::thread::sleep(Duration::from_millis(50));
        // Consuming wake-ups from another thread never blocks, even while
        // one thread sleeps on them.
        let t = Instant::now();
        b.clear_wakeups().unwrap();
        assert!(!b.wait_for_wakeup(Some(Duration::ZERO)).unwrap());
        assert!(t.elapsed() < Duration::from_millis(500));
        a.send(&frame(a.mac(), 7)).unwrap();
        assert_eq!(sleeper.join().unwrap().unwrap().data[14], 7);
    }
}
