//! Receiving: the calls over the sans-IO receive core ([`crate::rx`]).

use super::{bump, lock, Frame, Interface, Received};
use crate::error::Error;
use crate::rx::Filter;
use std::time::{Duration, Instant};

/// How many ring entries one receive call looks at before giving up (they
/// may all be for other interfaces, or a hostile peer may have made the
/// chain a cycle). A full ring of minimum-size frames is about 27,000.
const MAX_STEPS_PER_CALL: usize = 65_536;

impl Interface {
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
        let Some(core) = guard.as_mut() else {
            return Err(Error::Down);
        };
        // A hostile peer can make the chain a cycle of frames nobody wants;
        // one call gives up after a bounded number of steps.
        let filter = self.filter();
        let slot = self.slot();
        if let Some(i) = slot {
            link.bus.reader_heartbeat(i);
        }
        let mut steps = 0;
        loop {
            if let Some((header, data)) = core.pop() {
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
            if steps >= MAX_STEPS_PER_CALL {
                return Ok(None);
            }
            let (n, done) = {
                let g = link.bus.acquire();
                let r = core.refill(&g.data(), &g.control(), &filter);
                // Under the lock, so that the position is valid (resynced
                // after any overrun) when writers next look at it.
                match slot {
                    // Everything before this position is copied out.
                    Some(i) => link.bus.publish_reader(i, core.position()),
                    None => self.maybe_register(&link, core.position()),
                }
                r
            };
            self.counters.absorb(core.take_tally());
            link.bus.check_mapping()?;
            steps += n;
            if done && core.is_empty() {
                return Ok(None);
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
