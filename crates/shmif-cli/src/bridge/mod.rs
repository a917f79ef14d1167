//! The bridging engine: one poll loop that pumps Ethernet frames between
//! any number of [`Port`]s, each a frame source and sink — a bus, a TAP
//! device, a VDE client, a QEMU guest, a VXLAN tunnel, another bus.
//!
//! Every bridge subcommand (`tap`, and the coming `vde`, `qemu`, `vxlan`,
//! `bridge`) is a thin adapter: it opens its ports and hands them to an
//! [`Engine`], which owns what they share:
//! - **the loop**: one poll(2) over every port's descriptors and the stop
//!   signal; a port that left work undone (its budget ran out) is serviced
//!   again without sleeping;
//! - **forwarding**: as a hub (every port sees every frame from every other
//!   port, never its own) or as a learning bridge ([`Forwarding::Learning`]:
//!   unicast goes only to the port where its destination was last seen);
//! - **batching**: the frames all ports produced in one round are handed to
//!   each destination as one batch ([`Port::send_batch`]; a bus sends a
//!   batch under one lock with one wake-up);
//! - **the size policy**: a frame larger than a destination can carry is
//!   dropped for it and counted, with one warning per source port;
//! - **counters** per port, printed when a port goes away and on exit;
//! - **ports that come and go**: a listener port (a VDE control socket, a
//!   QEMU listening socket) adds new ports through [`Ctx::add_port`]; a
//!   port whose peer went away says [`Service::Closed`] and is removed.
//!
//! The forwarding decisions themselves ([`fdb::Fdb`]) are pure, with no
//! I/O, and tested on their own.

pub mod bus_port;
pub mod fdb;
pub mod stream_port;
pub mod vde_port;
pub mod vxlan;

use crate::cli::signal::{poll_fds, StopSignal};
use anyhow::{Context as _, Result};
use fdb::Fdb;
use rustix::event::{PollFd, PollFlags};
use shmif::MacAddr;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

/// How many frames one port may hand over in one round before the engine
/// moves on to the others (it comes back without sleeping).
pub const ROUND_BUDGET: usize = 64;

/// Room for the frames of one round: generous for the largest frames.
const BATCH_ROOM: usize = 1 << 20;

/// What a port asks of the loop after it was serviced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// Nothing more to do until one of its descriptors is ready or its
    /// deadline passes.
    Idle,
    /// It stopped because its budget ran out: service it again at once.
    More,
    /// Its peer went away or broke its protocol: remove the port. The text
    /// says why, for the one log line.
    Closed(String),
}

/// A frame source and sink that the engine pumps frames to and from.
///
/// A port is serviced when one of its descriptors ([`Port::fds`]) is
/// ready, when its deadline ([`Port::deadline`]) has passed, and right
/// after it answered [`Service::More`]. Servicing reads what is ready
/// without blocking and hands each frame to the engine through
/// [`Ctx::frame`] (or [`Ctx::room`] and [`Ctx::commit`], to receive into
/// the engine's buffer without a copy). Frames from other ports reach it
/// through [`Port::send_batch`], which must not block either: a peer that
/// cannot take a frame now loses it (counted), as on a wire, or the port
/// buffers it boundedly and closes a peer that never reads.
pub trait Port {
    /// A short name for log lines and counters: `tap shm0`,
    /// `vde port 3 (qemu pid 1234)`.
    fn name(&self) -> String;

    /// The descriptors to poll, each with the events wanted (readable,
    /// and writable while the port has output queued).
    fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)>;

    /// The largest frame (Ethernet header and payload, no FCS) it can
    /// carry; larger frames bound for it are dropped and counted.
    fn max_frame(&self) -> usize;

    /// When it wants to be serviced even if nothing is ready (timers:
    /// reconnecting, ageing); `None`: never.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Whether frames are delivered to it. A listener (a control socket
    /// that only accepts new ports) is not a station.
    fn is_station(&self) -> bool {
        true
    }

    /// Reads what is ready, without blocking, handing frames to `ctx`;
    /// stops when [`Ctx::full`] says so and then answers
    /// [`Service::More`].
    fn service(&mut self, ctx: &mut Ctx<'_>) -> Result<Service>;

    /// Delivers frames from other ports and the bus. An `Err` closes the
    /// port (with the error as the reason).
    fn send_batch(&mut self, frames: &[&[u8]]) -> Result<()>;

    /// Counters of its own for the report (e.g. `3 runts, 1 refused by
    /// the kernel`); empty when it has none beyond the engine's.
    fn report(&self) -> String {
        String::new()
    }
}

/// The engine's counters for one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames the port handed to the engine.
    pub in_frames: u64,
    /// Bytes of those frames.
    pub in_bytes: u64,
    /// Frames delivered to the port.
    pub out_frames: u64,
    /// Bytes of those frames.
    pub out_bytes: u64,
    /// Frames from this port too large for a destination (dropped there;
    /// counted once per frame).
    pub oversized: u64,
    /// Frames from this port shorter than an Ethernet header (dropped).
    pub runts: u64,
    /// Unicast frames from this port kept on its side by the learning
    /// bridge (their destination lives behind the same port).
    pub filtered: u64,
}

/// The frames of one round, as one buffer and their spans.
#[derive(Debug)]
struct Batch {
    buf: Vec<u8>,
    /// (source port slot, start, length)
    frames: Vec<(usize, usize, usize)>,
    used: usize,
}

/// What a port being serviced hands its frames and new ports to.
pub struct Ctx<'a> {
    batch: &'a mut Batch,
    slot: usize,
    taken: usize,
    new_ports: &'a mut Vec<Box<dyn Port>>,
    largest: usize,
}

impl Ctx<'_> {
    /// Whether this port has handed over its share of the round: stop and
    /// answer [`Service::More`].
    pub fn full(&self) -> bool {
        self.taken >= ROUND_BUDGET || self.batch.used + self.largest > self.batch.buf.len()
    }

    /// Room to receive one frame into, at least `max` bytes (more than
    /// the largest frame the port accepts, so that an oversized one shows
    /// whole); follow with [`Ctx::commit`].
    pub fn room(&mut self, max: usize) -> &mut [u8] {
        let need = self.batch.used + max;
        if self.batch.buf.len() < need {
            self.batch.buf.resize(need, 0);
        }
        &mut self.batch.buf[self.batch.used..need]
    }

    /// Takes the first `len` bytes of [`Ctx::room`] as a frame.
    pub fn commit(&mut self, len: usize) {
        self.batch.frames.push((self.slot, self.batch.used, len));
        self.batch.used += len;
        self.taken += 1;
    }

    /// Hands over one frame (copied).
    pub fn frame(&mut self, frame: &[u8]) {
        self.room(frame.len()).copy_from_slice(frame);
        self.commit(frame.len());
    }

    /// Adds a port (a new client of a listener); it takes part from the
    /// next round on.
    pub fn add_port(&mut self, port: Box<dyn Port>) {
        self.new_ports.push(port);
    }
}

/// How frames are forwarded between ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// A hub: every port sees every frame of every other port.
    Hub,
    /// A learning bridge: unicast to a known destination goes only to the
    /// port it was last seen behind (nowhere, if that is the source's
    /// own port); broadcast, multicast and unknown unicast go to all.
    Learning {
        /// How long a learnt address is trusted without being seen again.
        ageing: Duration,
    },
}

/// One port in the engine, with its counters.
struct Slot {
    port: Box<dyn Port>,
    counters: PortCounters,
    /// Whether it has work left over from the last round.
    more: bool,
    /// Whether the oversize warning was printed for frames from it.
    warned_oversize: bool,
}

/// Why [`Engine::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// SIGINT or SIGTERM.
    Signal,
    /// A port that the bridge cannot do without closed (see
    /// [`Engine::add_essential`]).
    EssentialClosed,
}

/// The bridging engine: ports, forwarding, counters, and the loop.
pub struct Engine {
    slots: Vec<Option<Slot>>,
    essential: Vec<usize>,
    forwarding: Forwarding,
    fdb: Fdb,
    batch: Batch,
    /// Print a line when a port comes and goes.
    verbose_ports: bool,
}

impl Engine {
    /// An engine with no ports yet.
    pub fn new(forwarding: Forwarding) -> Self {
        let ageing = match forwarding {
            Forwarding::Hub => Duration::from_secs(300),
            Forwarding::Learning { ageing } => ageing,
        };
        Engine {
            slots: Vec::new(),
            essential: Vec::new(),
            forwarding,
            fdb: Fdb::new(ageing),
            batch: Batch {
                buf: vec![0; BATCH_ROOM],
                frames: Vec::with_capacity(4 * ROUND_BUDGET),
                used: 0,
            },
            verbose_ports: true,
        }
    }

    /// Whether to print a line to standard error when a port is added or
    /// removed (on by default; the bridges with fixed ports turn it off).
    pub fn set_verbose_ports(&mut self, on: bool) {
        self.verbose_ports = on;
    }

    /// Adds a port; returns its slot number.
    pub fn add(&mut self, port: Box<dyn Port>) -> usize {
        let slot = Slot {
            port,
            counters: PortCounters::default(),
            more: true,
            warned_oversize: false,
        };
        match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    /// Adds a port the bridge cannot do without (the bus, the TAP): when
    /// it closes, [`Engine::run`] returns.
    pub fn add_essential(&mut self, port: Box<dyn Port>) -> usize {
        let i = self.add(port);
        self.essential.push(i);
        i
    }

    /// The counters of the port in `slot`, while it is there.
    pub fn counters(&self, slot: usize) -> Option<PortCounters> {
        self.slots.get(slot)?.as_ref().map(|s| s.counters)
    }

    /// How many ports are there now (listeners included).
    #[cfg(test)]
    pub fn port_count(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// The learning table (for reports and tests).
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// Runs until SIGINT/SIGTERM or until an essential port closes.
    pub fn run(&mut self, stop: &StopSignal) -> Result<End> {
        loop {
            if stop.stopped() {
                return Ok(End::Signal);
            }
            if let Some(end) = self.round(Some(stop), None)? {
                return Ok(end);
            }
        }
    }

    /// Prints every port's counters to standard error, one line each.
    pub fn print_reports(&self) {
        for s in self.slots.iter().flatten() {
            eprintln!("shmif: {}", Self::report_line(s));
        }
    }

    /// Takes the port in `slot` out of the engine (to report on it, or to
    /// close it before the others).
    pub fn take_port(&mut self, slot: usize) -> Option<Box<dyn Port>> {
        self.fdb.forget_port(slot);
        self.essential.retain(|&e| e != slot);
        self.slots.get_mut(slot)?.take().map(|s| s.port)
    }

    /// One round: wait until something is ready (not at all if a port has
    /// work left over), service what is ready, deliver the frames.
    /// Returns `Some` when the engine should stop.
    fn round(
        &mut self,
        stop: Option<&StopSignal>,
        max_wait: Option<Duration>,
    ) -> Result<Option<End>> {
        let now = Instant::now();
        let busy = self.slots.iter().flatten().any(|s| s.more);
        let deadline = self
            .slots
            .iter()
            .flatten()
            .filter_map(|s| s.port.deadline())
            .min();
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            let until = deadline.map(|d| d.saturating_duration_since(now));
            match (until, max_wait) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let mut ready = vec![false; self.slots.len()];
        {
            let mut fds: Vec<PollFd<'_>> = Vec::new();
            let mut owner: Vec<usize> = Vec::new();
            if let Some(stop) = stop {
                fds.push(PollFd::from_borrowed_fd(stop.fd(), PollFlags::IN));
                owner.push(usize::MAX);
            }
            for (i, s) in self.slots.iter().enumerate() {
                let Some(s) = s else { continue };
                for (fd, events) in s.port.fds() {
                    fds.push(PollFd::from_borrowed_fd(fd, events));
                    owner.push(i);
                }
            }
            poll_fds(&mut fds, timeout).context("poll")?;
            for (f, &o) in fds.iter().zip(&owner) {
                if o != usize::MAX && !f.revents().is_empty() {
                    ready[o] = true;
                }
            }
        }
        if stop.is_some_and(StopSignal::stopped) {
            return Ok(Some(End::Signal));
        }
        let now = Instant::now();
        let mut new_ports = Vec::new();
        let mut closed: Vec<(usize, String)> = Vec::new();
        self.batch.frames.clear();
        self.batch.used = 0;
        let largest = self.largest_station_frame();
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(s) = s.as_mut() else {
                continue;
            };
            let due = s.port.deadline().is_some_and(|d| d <= now);
            if !(ready[i] || s.more || due) {
                continue;
            }
            let before = self.batch.frames.len();
            let mut ctx = Ctx {
                batch: &mut self.batch,
                slot: i,
                taken: 0,
                new_ports: &mut new_ports,
                largest,
            };
            let outcome = s.port.service(&mut ctx);
            s.more = false;
            match outcome {
                Ok(Service::Idle) => {}
                Ok(Service::More) => s.more = true,
                Ok(Service::Closed(why)) => closed.push((i, why)),
                Err(e) => closed.push((i, format!("{e:#}"))),
            }
            // Account for and screen what it handed over.
            let c = &mut s.counters;
            for f in &mut self.batch.frames[before..] {
                c.in_frames += 1;
                c.in_bytes += f.2 as u64;
                if f.2 < shmif::wire::MIN_FRAME_LEN {
                    c.runts += 1;
                    f.2 = 0; // dropped: delivered to nobody
                }
            }
        }
        self.deliver(now, &mut closed);
        for (i, why) in closed {
            if let Some(end) = self.remove(i, &why) {
                return Ok(Some(end));
            }
        }
        for p in new_ports {
            let name = p.name();
            let i = self.add(p);
            if self.verbose_ports {
                eprintln!("shmif: {name}: joined (port slot {i})");
            }
        }
        Ok(None)
    }

    /// The largest frame any station port carries (room the batch keeps
    /// free for one more frame).
    fn largest_station_frame(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.port.max_frame())
            .max()
            .unwrap_or(shmif::wire::MAX_FRAME_LEN)
            .max(shmif::wire::MAX_FRAME_LEN)
    }

    /// Hands every frame of the round to every port it is for, one batch
    /// per destination.
    fn deliver(&mut self, now: Instant, closed: &mut Vec<(usize, String)>) {
        if self.batch.frames.is_empty() {
            return;
        }
        // The batch is set aside while it is delivered, so that the
        // counters of the ports can change meanwhile.
        let batch = std::mem::replace(
            &mut self.batch,
            Batch {
                buf: Vec::new(),
                frames: Vec::new(),
                used: 0,
            },
        );
        self.deliver_batch(&batch, now, closed);
        self.batch = batch;
    }

    fn deliver_batch(&mut self, batch: &Batch, now: Instant, closed: &mut Vec<(usize, String)>) {
        // Learning first, so that a reply in the same round finds its way.
        let learning = matches!(self.forwarding, Forwarding::Learning { .. });
        // Where each frame goes: None = flood, Some(slot) = that port only,
        // Some(usize::MAX) = nowhere.
        let mut target: Vec<Option<usize>> = Vec::with_capacity(batch.frames.len());
        for &(src, start, len) in &batch.frames {
            if len == 0 {
                target.push(Some(usize::MAX));
                continue;
            }
            let frame = &batch.buf[start..start + len];
            if !learning {
                target.push(None);
                continue;
            }
            if let Some(mac) = MacAddr::source_of(frame) {
                if let Some(moved) = self.fdb.learn(mac, src, now) {
                    if moved.flapping {
                        eprintln!(
                            "shmif: warning: {mac} moves between ports (last seen behind {} and \
                             now {}): is there a loop, such as two bridges between the same \
                             buses?",
                            self.port_name(moved.from),
                            self.port_name(src)
                        );
                    }
                }
            }
            let to = MacAddr::destination_of(frame).and_then(|d| self.fdb.lookup(d, now));
            target.push(match to {
                Some(t) if t == src => Some(usize::MAX),
                Some(t) if self.slots.get(t).is_some_and(Option::is_some) => Some(t),
                _ => None,
            });
        }
        let mut frames: Vec<&[u8]> = Vec::with_capacity(batch.frames.len());
        for dst in 0..self.slots.len() {
            let Some(d) = self.slots[dst].as_ref() else {
                continue;
            };
            if !d.port.is_station() || closed.iter().any(|(c, _)| *c == dst) {
                continue;
            }
            let limit = d.port.max_frame();
            frames.clear();
            let mut too_big: Vec<(usize, usize)> = Vec::new();
            for (k, &(src, start, len)) in batch.frames.iter().enumerate() {
                if src == dst {
                    continue;
                }
                if matches!(target[k], Some(t) if t != dst) {
                    continue;
                }
                if len > limit {
                    too_big.push((src, len));
                    continue;
                }
                frames.push(&batch.buf[start..start + len]);
            }
            for (src, len) in too_big {
                self.note_oversized(src, len, dst, limit);
            }
            if frames.is_empty() {
                continue;
            }
            let n = frames.len() as u64;
            let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
            let Some(d) = self.slots[dst].as_mut() else {
                continue;
            };
            match d.port.send_batch(&frames) {
                Ok(()) => {
                    d.counters.out_frames += n;
                    d.counters.out_bytes += bytes;
                }
                Err(e) => closed.push((dst, format!("{e:#}"))),
            }
        }
        // Unicast kept on its own side.
        for (k, &(src, _, len)) in batch.frames.iter().enumerate() {
            if len > 0 && target[k] == Some(usize::MAX) {
                if let Some(s) = self.slots[src].as_mut() {
                    s.counters.filtered += 1;
                }
            }
        }
    }

    /// Counts (and the first time, warns about) a frame from `src` too
    /// large for `dst`.
    fn note_oversized(&mut self, src: usize, len: usize, dst: usize, limit: usize) {
        let dst_name = self.port_name(dst);
        let Some(s) = self.slots[src].as_mut() else {
            return;
        };
        s.counters.oversized += 1;
        if !s.warned_oversize {
            s.warned_oversize = true;
            eprintln!(
                "shmif: warning: {}: dropped a {len}-byte frame: {dst_name} carries at most \
                 {limit} (further drops are only counted)",
                s.port.name()
            );
        }
    }

    fn port_name(&self, slot: usize) -> String {
        match self.slots.get(slot) {
            Some(Some(s)) => s.port.name(),
            _ => format!("port slot {slot} (gone)"),
        }
    }

    /// Removes a port, printing why and its counters.
    fn remove(&mut self, slot: usize, why: &str) -> Option<End> {
        let s = self.slots.get_mut(slot)?.take()?;
        self.fdb.forget_port(slot);
        eprintln!("shmif: {}: closed: {why}", s.port.name());
        if self.verbose_ports || self.essential.contains(&slot) {
            eprintln!("shmif: {}", Self::report_line(&s));
        }
        self.essential
            .contains(&slot)
            .then_some(End::EssentialClosed)
    }

    fn report_line(s: &Slot) -> String {
        let c = &s.counters;
        let own = s.port.report();
        let own = if own.is_empty() {
            String::new()
        } else {
            format!("; {own}")
        };
        format!(
            "{}: in {} frames ({} bytes), out {} frames ({} bytes); dropped: {} too large, {} \
             runts, {} kept on their side{own}",
            s.port.name(),
            c.in_frames,
            c.in_bytes,
            c.out_frames,
            c.out_bytes,
            c.oversized,
            c.runts,
            c.filtered,
        )
    }

    /// Runs one round without a stop signal (tests drive the engine step
    /// by step).
    #[cfg(test)]
    fn step(&mut self) -> Result<Option<End>> {
        self.round(None, Some(Duration::from_millis(20)))
    }
}

/// Reads datagrams or records from a non-blocking source into the round's
/// batch until it would block or the round is full: the loop most ports'
/// [`Port::service`] needs. `read` receives into the room given and
/// returns the length, `Ok(None)` for a record to skip, or an error
/// (`WouldBlock` ends the loop).
pub fn read_ready(
    ctx: &mut Ctx<'_>,
    room: usize,
    mut read: impl FnMut(&mut [u8]) -> io::Result<Option<usize>>,
) -> io::Result<Service> {
    loop {
        if ctx.full() {
            return Ok(Service::More);
        }
        match read(ctx.room(room)) {
            Ok(Some(n)) => ctx.commit(n),
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Service::Idle),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
