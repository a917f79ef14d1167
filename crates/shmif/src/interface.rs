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

use crate::bus::{Bus, OpenOptions};
use crate::error::Error;
use crate::ring::{self, Reader, Step};
use crate::wait::Waiter;
use crate::wire::{FrameHeaderRepr, MacAddr, MAX_FRAME_LEN, MIN_FRAME_LEN};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

/// How many ring entries one receive call looks at before giving up (they
/// may all be for other interfaces, or a hostile peer may have made the
/// chain a cycle). A full ring of minimum-size frames is about 27,000.
const MAX_STEPS_PER_CALL: usize = 65_536;

/// How many frames one hold of the bus lock copies out for a reader. More
/// means fewer lock round trips under load; each hold stays a few
/// microseconds.
const RX_BATCH: usize = 16;

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
    /// Frame length (bytes copied: the buffer must hold 1514).
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
    /// the distance was knowable.
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
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// After an overrun, moves a reader from the oldest frame (where the
/// resync put it) to the newest, and returns the ring bytes skipped (0 if
/// it is there already or cannot tell, and then it stays).
///
/// A reader resynchronised to the oldest frame sits where writers evict
/// next: it is overrun again within a frame or two, and again, reading the
/// very cache lines the writer is overwriting, so that it stays slower than
/// the writer and loses frames for as long as the traffic lasts (measured:
/// a reader good for over 2 Mframes/s kept at 0.7 against 1.1 offered).
/// Dropping the backlog at once costs at most one ring of frames more per
/// overrun and gives the reader a whole ring of slack again. The skipped
/// bytes are counted as lost, so the accounting stays exact. This changes
/// only this reader's private position, nothing on the bus.
fn skip_to_newest<R: ring::Region + ?Sized>(
    reader: &mut Reader,
    data: &R,
    ctl: &ring::Control,
) -> u64 {
    let Ok(end) = ring::next_offset(data, ctl.last) else {
        return 0;
    };
    // The newest frame lies in the previous lap if it wrapped.
    let newest = Reader {
        next: ctl.last,
        devgen: if end <= ctl.last {
            ctl.gen.wrapping_sub(1)
        } else {
            ctl.gen
        },
    };
    let size = u128::from(data.size());
    let linear = |r: &Reader| u128::from(r.devgen) * size + u128::from(r.next);
    let (from, to) = (linear(reader), linear(&newest));
    match u64::try_from(to.wrapping_sub(from)) {
        Ok(skipped) if to > from && u128::from(skipped) < size => {
            *reader = newest;
            skipped
        }
        _ => 0,
    }
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

#[derive(Debug)]
struct RxState {
    reader: Option<Reader>,
    /// Frames copied out of the ring in one hold of the lock, not yet
    /// handed to the user: `slots[head..head + count]` (by index).
    slots: Box<[[u8; MAX_FRAME_LEN]; RX_BATCH]>,
    meta: [FrameHeaderRepr; RX_BATCH],
    head: usize,
    count: usize,
    /// The ring's `gen` and `last` when it was last found empty: a waiter
    /// spinning on the header knows something new came when they change.
    quiet: Option<(u64, u32)>,
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
    rx: Mutex<RxState>,
    counters: AtomicCounters,
    /// How long a blocking receive polls the ring before sleeping, in ns;
    /// `u64::MAX`: never sleep (busy-poll).
    spin_ns: AtomicU64,
    /// Longest deferral of a wake-up after a send, ns; 0: wake at once.
    wake_delay_ns: Arc<AtomicU64>,
    /// This interface wrote a wake-up since it last waited: its own watch
    /// holds the event (see `wait_for_wakeup`).
    woke_own: AtomicBool,
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
            rx: Mutex::new(RxState {
                reader: None,
                slots: Box::new([[0u8; MAX_FRAME_LEN]; RX_BATCH]),
                meta: [FrameHeaderRepr::default(); RX_BATCH],
                head: 0,
                count: 0,
                quiet: None,
            }),
            spin_ns: AtomicU64::new(0),
            wake_delay_ns: Arc::new(AtomicU64::new(0)),
            woke_own: AtomicBool::new(false),
            counters: AtomicCounters::default(),
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
        Ok(())
    }

    /// Brings the interface up: reception starts at the bus's newest
    /// position (frames already on the bus are not delivered).
    pub fn up(&self) -> Result<(), Error> {
        let link = self.current_link().ok_or(Error::NoLink)?;
        let mut rx = lock(&self.rx);
        let reader = {
            let g = link.bus.lock();
            let ctl = g.control();
            let r = Reader::at_end(&g.data(), &ctl);
            r
        }
        .map_err(|source| Error::Corrupt {
            path: link.bus.path().to_path_buf(),
            source,
        })?;
        let _ = link.waiter.drain();
        rx.reader = Some(reader);
        rx.count = 0;
        rx.quiet = None;
        self.up.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Takes the interface down and wakes every reader of the bus, so that
    /// a receive blocked in another thread returns [`Error::Down`].
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(link) = self.current_link() {
            // This write also stands for any deferred wake-up.
            link.wake_pending.store(false, Ordering::Release);
            let _ = link.bus.wake();
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
            ..self
                .current_link()
                .map(|l| {
                    let r = l.bus.recoveries();
                    Counters {
                        lock_takeovers: r.lock_takeovers,
                        ring_resets: r.ring_resets,
                        ..Counters::default()
                    }
                })
                .unwrap_or_default()
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

    fn check_len(frame: &[u8]) -> Result<(), Error> {
        if (MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame.len()) {
            Ok(())
        } else {
            Err(Error::FrameSize { len: frame.len() })
        }
    }

    /// Sends one Ethernet frame (14 to 1514 bytes, no FCS) and wakes the
    /// bus's readers.
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
        for f in frames.clone() {
            Self::check_len(f)?;
        }
        let link = self.active_link()?;
        let (sec, usec) = now_timestamp();
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut failure = None;
        {
            let g = link.bus.lock();
            let mut ctl = g.control();
            let mut data = g.data();
            for f in frames {
                let h = FrameHeaderRepr {
                    len: f.len() as u32,
                    sec,
                    usec,
                    sender: self.sender,
                };
                match ring::append_with(&mut data, &mut ctl, &h, f, |first| g.set_first(first)) {
                    // Publish each frame at once: a writer killed mid-batch
                    // leaves a consistent ring.
                    Ok(_) => g.set_control(&ctl),
                    Err(source) => {
                        failure = Some(source);
                        break;
                    }
                }
                n += 1;
                bytes += f.len() as u64;
            }
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

    /// Wakes the bus's readers after a send: at once, or, with a wake
    /// delay set, by marking the wake-up pending for the flusher thread.
    fn wake(&self, link: &Arc<Link>) -> Result<(), Error> {
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

    /// Whether a frame passes this interface's filter (spec, step 5).
    fn wanted(&self, data: &[u8], sender: u64) -> bool {
        let c = &self.counters;
        if data.len() < MIN_FRAME_LEN {
            if !data.is_empty() {
                bump(&c.malformed, 1);
            }
            return false;
        }
        if sender == self.sender {
            bump(&c.rx_own, 1);
            return false;
        }
        let dst = MacAddr::destination_of(data).unwrap_or_default();
        if dst == self.mac || dst.is_group() || self.is_promiscuous() {
            true
        } else {
            bump(&c.rx_filtered, 1);
            false
        }
    }

    /// Receives the next frame for this interface into `buf` without
    /// blocking. `buf` should hold 1514 bytes; a shorter one gets the start
    /// of the frame. Returns `None` when nothing is waiting.
    pub fn try_recv_into(&self, buf: &mut [u8]) -> Result<Option<Received>, Error> {
        self.try_recv_with(|data, r| {
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            r
        })
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
        let link = self.active_link()?;
        let mut guard = lock(&self.rx);
        let rx = &mut *guard;
        if rx.reader.is_none() {
            return Err(Error::Down);
        }
        // A hostile peer can make the chain a cycle of frames nobody wants;
        // one call gives up after a bounded number of steps.
        let mut steps = 0;
        while steps < MAX_STEPS_PER_CALL {
            if rx.count == 0 {
                steps += self.refill(&link, rx)?;
                if rx.count == 0 {
                    return Ok(None);
                }
            }
            let (slot, header) = (rx.head, rx.meta[rx.head]);
            rx.head += 1;
            rx.count -= 1;
            let data = &rx.slots[slot][..header.len as usize];
            if !self.wanted(data, header.sender) {
                continue;
            }
            bump(&self.counters.rx_frames, 1);
            bump(&self.counters.rx_bytes, data.len() as u64);
            return Ok(Some(f(
                data,
                Received {
                    len: data.len(),
                    sec: header.sec,
                    usec: header.usec,
                    sender: header.sender,
                },
            )));
        }
        Ok(None)
    }

    /// Copies up to [`RX_BATCH`] frames out of the ring in one hold of the
    /// lock. Returns how many ring steps it took.
    fn refill(&self, link: &Link, rx: &mut RxState) -> Result<usize, Error> {
        let RxState {
            reader,
            slots,
            meta,
            head,
            count,
            quiet,
        } = rx;
        let Some(reader) = reader.as_mut() else {
            return Err(Error::Down);
        };
        *head = 0;
        let mut steps = 0;
        {
            let g = link.bus.lock();
            let ctl = g.control();
            let data = g.data();
            while *count < RX_BATCH {
                steps += 1;
                match reader.step(&data, &ctl, &mut slots[*count][..]) {
                    Step::Empty => {
                        *quiet = Some((ctl.gen, ctl.last));
                        break;
                    }
                    Step::Corrupt(_) => {
                        bump(&self.counters.malformed, 1);
                        break;
                    }
                    Step::Frame { header, overrun } => {
                        if let Some(o) = overrun {
                            bump(&self.counters.overruns, 1);
                            match o.bytes_lost {
                                Some(b) => {
                                    bump(&self.counters.overrun_bytes, b);
                                    // Out of the writers' way: see skip_to_newest.
                                    let skipped = skip_to_newest(reader, &data, &ctl);
                                    bump(&self.counters.overrun_bytes, skipped);
                                }
                                None => bump(&self.counters.overruns_unmeasured, 1),
                            }
                        }
                        meta[*count] = header;
                        *count += 1;
                    }
                }
            }
        }
        link.bus.check_mapping()?;
        Ok(steps)
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

    /// Blocks until the bus file changes or `timeout` passes; for callers
    /// that drive [`Interface::try_recv_into`] themselves. Returns whether a
    /// change was seen (`false`: timed out), or [`Error::Down`] if the
    /// interface is down.
    pub fn wait_for_wakeup(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        let link = self.active_link()?;
        let spin = self.spin_ns.load(Ordering::Relaxed);
        let mut timeout = timeout;
        // A zero timeout only consumes pending wake-ups: no spinning.
        if spin > 0 && timeout != Some(Duration::ZERO) {
            let start = Instant::now();
            // What "nothing new" looks like: the header as of the last empty
            // look, or as of now.
            let quiet = lock(&self.rx).quiet;
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
            let quiet = lock(&self.rx).quiet;
            if let Some(q) = quiet {
                let c = link.bus.peek_control();
                if (c.gen, c.last) != q {
                    return Ok(true);
                }
            }
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

    fn frame(src: MacAddr, tag: u8) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x88, 0xb5, tag]);
        f.resize(60, 0);
        f
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
