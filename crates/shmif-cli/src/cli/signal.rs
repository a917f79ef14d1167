//! The one stop signal every command uses: SIGINT and SIGTERM set a flag
//! and make a descriptor readable, so that a command can test the flag,
//! poll the descriptor beside its own, or have a blocked receive on an
//! interface woken by taking the interface down.

use anyhow::{Context as _, Result};
use rustix::event::{poll, PollFd, Timespec};
use shmif::Interface;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The signals that ask a command to stop.
const STOP_SIGNALS: [i32; 2] = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];

/// SIGINT/SIGTERM caught from [`StopSignal::install`] on: they no longer
/// kill the process; the command sees them through [`StopSignal::stopped`]
/// or [`StopSignal::fd`] and stops in its own time.
///
/// Dropping it restores nothing (the handlers stay, setting a flag nobody
/// reads), which is what a command that is about to exit wants.
pub struct StopSignal {
    flag: Arc<AtomicBool>,
    read: UnixStream,
    ids: Vec<signal_hook::SigId>,
}

impl std::fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSignal")
            .field("stopped", &self.stopped())
            .finish()
    }
}

impl StopSignal {
    /// Catches SIGINT and SIGTERM from now on.
    pub fn install() -> Result<StopSignal> {
        Self::try_install().context("cannot catch SIGINT/SIGTERM")
    }

    fn try_install() -> io::Result<StopSignal> {
        let flag = Arc::new(AtomicBool::new(false));
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut ids = Vec::new();
        for sig in STOP_SIGNALS {
            ids.push(signal_hook::flag::register(sig, flag.clone())?);
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                write.try_clone()?,
            )?);
        }
        Ok(StopSignal { flag, read, ids })
    }

    /// Whether SIGINT or SIGTERM has arrived.
    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The flag itself, for a helper that outlives borrows of this value
    /// (it is set, never cleared, by SIGINT/SIGTERM).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// A descriptor that becomes readable when a signal arrives (and stays
    /// readable), to poll beside a command's own descriptors.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Takes `iface` down when a signal arrives, which wakes a receive or
    /// a smoltcp wait blocked on it (they return [`shmif::Error::Down`]).
    /// A small thread waits for the signal; it holds the interface weakly.
    pub fn take_down_on_stop(&self, iface: &Arc<Interface>) -> Result<()> {
        let weak: Weak<Interface> = Arc::downgrade(iface);
        let read = self
            .read
            .try_clone()
            .context("cannot watch for SIGINT/SIGTERM")?;
        let flag = self.flag.clone();
        std::thread::Builder::new()
            .name("stop-signal".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    let mut fds = [PollFd::new(&read, rustix::event::PollFlags::IN)];
                    let _ = poll(&mut fds, None);
                }
                if let Some(i) = weak.upgrade() {
                    i.down();
                }
            })
            .context("cannot start the signal thread")?;
        Ok(())
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// poll(2) on `fds`, retried on EINTR; `None` waits for ever. Returns how
/// many descriptors have events.
pub fn poll_fds(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|d| Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    loop {
        match poll(fds, ts.as_ref()) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::PollFlags;

    #[test]
    fn a_signal_sets_the_flag_and_makes_the_fd_readable() {
        let s = StopSignal::install().unwrap();
        assert!(!s.stopped());
        let mut fds = [PollFd::from_borrowed_fd(s.fd(), PollFlags::IN)];
        assert_eq!(poll_fds(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
        signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
        let mut fds = [PollFd::from_borrowed_fd(s.fd(), PollFlags::IN)];
        assert_eq!(poll_fds(&mut fds, Some(Duration::from_secs(5))).unwrap(), 1);
        assert!(s.stopped());
    }
}
