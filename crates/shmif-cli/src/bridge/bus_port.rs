//! A bus as a port of the engine: frames other peers write to the bus come
//! in, frames from the other ports go out as one batch per round (one lock
//! hold, one wake-up).

use super::{Ctx, Port, Service};
use crate::cli::error::lib_error;
use crate::cli::repair::RepairNotice;
use anyhow::{anyhow, Result};
use rustix::event::PollFlags;
use shmif::Interface;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A promiscuous interface on a bus, as a port.
pub struct BusPort {
    iface: Interface,
    wake: OwnedFd,
    path: PathBuf,
    max_frame: usize,
    repairs: RepairNotice,
}

impl BusPort {
    /// Wraps an interface that is attached and up; makes it promiscuous
    /// (a bridge passes on frames for every address).
    pub fn new(iface: Interface, path: &Path) -> Result<BusPort> {
        iface.set_promiscuous(true);
        let wake = iface
            .wakeup_fd()
            .map_err(lib_error)?
            .ok_or_else(|| anyhow!("{}: no wake-up descriptor to poll", path.display()))?;
        Ok(BusPort {
            wake,
            path: path.to_path_buf(),
            repairs: RepairNotice::new(path),
            // 1514 on a NetBSD bus; an extended bus's own frame limit.
            max_frame: iface.max_frame_len(),
            iface,
        })
    }
}

impl Port for BusPort {
    fn name(&self) -> String {
        format!("bus {}", self.path.display())
    }

    fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        vec![(self.wake.as_fd(), PollFlags::IN)]
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn service(&mut self, ctx: &mut Ctx<'_>) -> Result<Service> {
        // Consume the wake-ups (and check the file is still the bus that
        // was mapped) before reading the ring: a frame written after this
        // raises a new event.
        self.iface
            .wait_for_wakeup(Some(Duration::ZERO))
            .map_err(lib_error)?;
        self.repairs.check(&self.iface.counters());
        let room = self.max_frame;
        loop {
            if ctx.full() {
                return Ok(Service::More);
            }
            match self
                .iface
                .try_recv_into(ctx.room(room))
                .map_err(lib_error)?
            {
                Some(r) => ctx.commit(r.len),
                None => return Ok(Service::Idle),
            }
        }
    }

    fn send_batch(&mut self, frames: &[&[u8]]) -> Result<()> {
        self.iface
            .send_batch(frames.iter().copied())
            .map_err(lib_error)
    }

    fn report(&self) -> String {
        let c = self.iface.counters();
        format!(
            "bus overruns {} ({} bytes lost), malformed {}, repairs {}",
            c.overruns, c.overrun_bytes, c.malformed, c.ring_repairs
        )
    }
}
