//! The two ways the benchmark drives a bus: the library's [`Interface`]
//! ("fast"), and a literal transcription of NetBSD's `if_shmem.c` built from
//! the library's public primitives ("baseline"): one lock and one wake-up
//! per frame sent, one frame copied per hold of the lock, and a sleep on the
//! file-change event whenever the ring looks empty.

use super::frames::{self, Kind};
use crate::cli::error::lib_error;
use anyhow::{anyhow, Result};
use shmif::lowlevel::RawBus;
use shmif::ring::{self, Reader, Step};
use shmif::wire::{FrameHeaderRepr, MIN_FRAME_LEN};
use shmif::{Bus, Interface, MacAddr, OpenOptions, Waiter};
use std::path::Path;
use std::time::Instant;

/// Something that sends and receives frames on a bus.
pub trait Endpoint {
    /// This endpoint's MAC address (the source of its frames).
    fn mac(&self) -> MacAddr;
    /// Sends frames, as one batch where the endpoint can.
    fn send_batch(&mut self, frames: &[Vec<u8>]) -> Result<()>;
    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> Result<()>;
    /// Receives the next frame into `buf` (which must hold 1514 bytes),
    /// waiting without a timeout, as `recv()` does; `None` once `deadline`
    /// has passed, which it notices only after wake-ups (see
    /// [`CLOCK_EVERY`]).
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<Option<usize>>;
    /// Overruns seen so far, and the ring bytes they lost.
    fn overruns(&self) -> (u64, u64);
    /// Receives the next frame as [`Endpoint::recv`] does, and returns its
    /// benchmark fields (`Some(None)` for a frame that is not one of ours),
    /// copying no more than the endpoint must.
    fn recv_fields(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Result<Option<Option<(Kind, u32, u64)>>> {
        Ok(self
            .recv(buf, deadline)?
            .map(|len| frames::parse(&buf[..len])))
    }
}

/// The library's interface, as an application uses it: waits without a
/// timeout, as `recv()` does.
pub struct Fast(pub Interface, FieldsQueue);

/// Benchmark fields of frames received in place in one batch and not yet
/// handed out (oldest first), and where the next one is.
#[derive(Default)]
pub struct FieldsQueue {
    fields: Vec<Option<(Kind, u32, u64)>>,
    next: usize,
}

/// How many frames a reader receives in place per call.
const FIELDS_BATCH: usize = 32;

impl Fast {
    /// The benchmark's endpoint over `interface`.
    pub fn new(interface: Interface) -> Self {
        Fast(interface, FieldsQueue::default())
    }
}

/// An untimed wait looks at the clock after this many wake-ups that found
/// nothing (the benchmark's own cost stays off the measured path; a stuck
/// wait is ended by wake-ups from a watchdog).
const CLOCK_EVERY: u32 = 16;

/// Counts an empty wake-up; whether `deadline` has passed (looked at once
/// every [`CLOCK_EVERY`]).
fn past(deadline: Instant, empty: &mut u32) -> bool {
    *empty += 1;
    *empty % CLOCK_EVERY == 0 && Instant::now() >= deadline
}

impl Endpoint for Fast {
    fn mac(&self) -> MacAddr {
        self.0.mac()
    }
    fn send_batch(&mut self, frames: &[Vec<u8>]) -> Result<()> {
        self.0
            .send_batch(frames.iter().map(Vec::as_slice))
            .map_err(lib_error)
    }
    fn send(&mut self, frame: &[u8]) -> Result<()> {
        self.0.send(frame).map_err(lib_error)
    }
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<Option<usize>> {
        let mut empty = 0;
        loop {
            if let Some(r) = self.0.try_recv_into(buf).map_err(lib_error)? {
                return Ok(Some(r.len));
            }
            if past(deadline, &mut empty) {
                return Ok(None);
            }
            self.0.wait_for_wakeup(None).map_err(lib_error)?;
        }
    }
    fn overruns(&self) -> (u64, u64) {
        let c = self.0.counters();
        (c.overruns, c.overrun_bytes)
    }
    /// Reads the fields where the frame lies, as a switch or a counter
    /// would, up to [`FIELDS_BATCH`] frames per call
    /// (`try_recv_batch_in_place`): a registered reader of an extended bus
    /// reads them from the bus itself, copying nothing else; other readers
    /// from the library's private copy.
    fn recv_fields(
        &mut self,
        _buf: &mut [u8],
        deadline: Instant,
    ) -> Result<Option<Option<(Kind, u32, u64)>>> {
        let q = &mut self.1;
        let mut empty = 0;
        loop {
            if let Some(&fields) = q.fields.get(q.next) {
                q.next += 1;
                return Ok(Some(fields));
            }
            q.fields.clear();
            q.next = 0;
            let got = self
                .0
                .try_recv_batch_in_place(FIELDS_BATCH, &mut q.fields, |v, _| {
                    let mut head = [0u8; frames::MIN_BYTES];
                    let n = v.read(0, &mut head);
                    frames::parse(&head[..n])
                });
            match got {
                Ok(_) => {}
                // Left behind mid-read: the frame it read is not in
                // `fields`; the next receive goes on past what was lost
                // (counted).
                Err(shmif::Error::LeftBehind) => continue,
                Err(e) => return Err(lib_error(e)),
            }
            if !q.fields.is_empty() {
                continue;
            }
            if past(deadline, &mut empty) {
                return Ok(None);
            }
            self.0.wait_for_wakeup(None).map_err(lib_error)?;
        }
    }
}

/// NetBSD's algorithm, literally (`shmif_start` sending one frame per call,
/// `shmif_rcv`).
pub struct Baseline {
    bus: Bus,
    waiter: Waiter,
    reader: Reader,
    mac: MacAddr,
    sender: u64,
    overruns: (u64, u64),
}

impl Baseline {
    /// Opens the bus and starts reading at its newest position.
    pub fn open(path: &Path) -> Result<Self> {
        let bus = Bus::open(path, &OpenOptions::default()).map_err(lib_error)?;
        let waiter =
            Waiter::new(path).map_err(|e| anyhow!("cannot watch {}: {e}", path.display()))?;
        let reader = {
            let g = bus.lock();
            let r = Reader::at_end(g.geometry(), &g.data(), &g.control());
            r
        }
        .map_err(|e| anyhow!("bus {}: {e}", path.display()))?;
        let id = shmif::random_mac();
        Ok(Baseline {
            bus,
            waiter,
            reader,
            mac: id,
            // Distinct per process and per endpoint: pid and the random MAC.
            sender: (u64::from(std::process::id()) << 32)
                | u64::from(u32::from_be_bytes([id.0[2], id.0[3], id.0[4], id.0[5]])),
            overruns: (0, 0),
        })
    }
}

impl Endpoint for Baseline {
    fn mac(&self) -> MacAddr {
        self.mac
    }
    fn send_batch(&mut self, frames: &[Vec<u8>]) -> Result<()> {
        for f in frames {
            self.send(f)?;
        }
        Ok(())
    }
    fn send(&mut self, frame: &[u8]) -> Result<()> {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let h = FrameHeaderRepr {
            len: frame.len() as u32,
            sec: d.as_secs() as u32,
            usec: d.subsec_micros(),
            sender: self.sender,
        };
        {
            let g = self.bus.lock();
            let mut ctl = g.control();
            let mut data = g.data();
            ring::append_with(g.geometry(), &mut data, &mut ctl, &h, frame, |first| {
                g.set_first(first)
            })
            .map_err(|e| anyhow!("append: {e}"))?;
            g.set_control(&ctl);
        }
        self.bus.wake().map_err(lib_error)
    }
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<Option<usize>> {
        let mut empty = 0;
        loop {
            let step = {
                let g = self.bus.lock();
                let s = self.reader.step(g.geometry(), &g.data(), &g.control(), buf);
                s
            };
            match step {
                Step::Empty => {
                    if past(deadline, &mut empty) {
                        return Ok(None);
                    }
                    // NetBSD sleeps in a blocking read of the watch.
                    self.waiter.wait(None).map_err(|e| anyhow!("wait: {e}"))?;
                }
                Step::Corrupt(c) => return Err(anyhow!("corrupt bus: {c}")),
                Step::Frame { header, overrun } => {
                    if let Some(o) = overrun {
                        self.overruns.0 += 1;
                        self.overruns.1 += o.bytes_lost.unwrap_or(0);
                    }
                    let len = header.len as usize;
                    if len < MIN_FRAME_LEN || header.sender == self.sender {
                        continue;
                    }
                    let dst = &buf[..6];
                    if dst != self.mac.0 && dst[0] & 1 == 0 {
                        continue;
                    }
                    return Ok(Some(len));
                }
                // `step` copies every frame; nothing else can come.
                other => return Err(anyhow!("unexpected ring step {other:?}")),
            }
        }
    }
    fn overruns(&self) -> (u64, u64) {
        self.overruns
    }
}
