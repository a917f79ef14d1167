//! The two ways the benchmark drives a bus: the library's [`Interface`]
//! ("fast"), and a literal transcription of NetBSD's `if_shmem.c` built from
//! the library's public primitives ("baseline"): one lock and one wake-up
//! per frame sent, one frame copied per hold of the lock, and a sleep on the
//! file-change event whenever the ring looks empty.

use super::frames::{self, Kind};
use crate::cmd::dump::lib_error;
use anyhow::{anyhow, Result};
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
    /// waiting until `deadline` (checked after each wake-up: an endpoint
    /// that waits without a timeout needs a wake-up to notice it); `None`
    /// if nothing came.
    ///
    /// Waiting until
    /// `deadline`; `None` if nothing came.
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

/// The library's interface, as an application uses it.
pub struct Fast {
    /// The interface.
    pub iface: Interface,
    /// Whether waits carry the deadline as a timeout (`poll` on the
    /// wake-up descriptor) or block without one (`recv()`'s way).
    pub timed: bool,
}

impl Endpoint for Fast {
    fn mac(&self) -> MacAddr {
        self.iface.mac()
    }
    fn send_batch(&mut self, frames: &[Vec<u8>]) -> Result<()> {
        self.iface
            .send_batch(frames.iter().map(Vec::as_slice))
            .map_err(lib_error)
    }
    fn send(&mut self, frame: &[u8]) -> Result<()> {
        self.iface.send(frame).map_err(lib_error)
    }
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<Option<usize>> {
        loop {
            if let Some(r) = self.iface.try_recv_into(buf).map_err(lib_error)? {
                return Ok(Some(r.len));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(None);
            };
            let timeout = self.timed.then_some(left);
            self.iface.wait_for_wakeup(timeout).map_err(lib_error)?;
        }
    }
    fn overruns(&self) -> (u64, u64) {
        let c = self.iface.counters();
        (c.overruns, c.overrun_bytes)
    }
    /// Reads the fields where the frame lies (`try_recv_with`): no copy
    /// into `buf`.
    fn recv_fields(
        &mut self,
        _buf: &mut [u8],
        deadline: Instant,
    ) -> Result<Option<Option<(Kind, u32, u64)>>> {
        loop {
            let got = self
                .iface
                .try_recv_with(|data, _| frames::parse(data))
                .map_err(lib_error)?;
            if got.is_some() {
                return Ok(got);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(None);
            };
            let timeout = self.timed.then_some(left);
            self.iface.wait_for_wakeup(timeout).map_err(lib_error)?;
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
    timed: bool,
}

impl Baseline {
    /// Opens the bus and starts reading at its newest position; `timed`
    /// as for [`Fast`].
    pub fn open(path: &Path, timed: bool) -> Result<Self> {
        let bus = Bus::open(path, &OpenOptions::default()).map_err(lib_error)?;
        let waiter =
            Waiter::new(path).map_err(|e| anyhow!("cannot watch {}: {e}", path.display()))?;
        let reader = {
            let g = bus.lock();
            let r = Reader::at_end(&g.data(), &g.control());
            r
        }
        .map_err(|e| anyhow!("bus {}: {e}", path.display()))?;
        let id = shmif::interface::random_mac();
        Ok(Baseline {
            bus,
            waiter,
            reader,
            mac: id,
            // Distinct per process and per endpoint: pid and the random MAC.
            sender: (u64::from(std::process::id()) << 32)
                | u64::from(u32::from_be_bytes([id.0[2], id.0[3], id.0[4], id.0[5]])),
            overruns: (0, 0),
            timed,
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
            ring::append_with(&mut data, &mut ctl, &h, frame, |first| g.set_first(first))
                .map_err(|e| anyhow!("append: {e}"))?;
            g.set_control(&ctl);
        }
        self.bus.wake().map_err(lib_error)
    }
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<Option<usize>> {
        loop {
            let step = {
                let g = self.bus.lock();
                let s = self.reader.step(&g.data(), &g.control(), buf);
                s
            };
            match step {
                Step::Empty => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return Ok(None);
                    };
                    if deadline <= Instant::now() {
                        return Ok(None);
                    }
                    // NetBSD sleeps in a blocking read of the watch.
                    let timeout = self.timed.then_some(left);
                    self.waiter
                        .wait(timeout)
                        .map_err(|e| anyhow!("wait: {e}"))?;
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
            }
        }
    }
    fn overruns(&self) -> (u64, u64) {
        self.overruns
    }
}
