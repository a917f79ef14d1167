//! Waiting for the bus file to change.
//!
//! Writers wake readers with a `pwrite` to the bus file (never through the
//! mapping: only a write through the file system raises a change event).
//! A [`Waiter`] watches for those: inotify `IN_MODIFY` on Linux, kqueue
//! `EVFILT_VNODE`/`NOTE_WRITE` on the BSDs and macOS, and a 10 ms poll
//! elsewhere. Events queue up from the moment the waiter exists, so a wake-up
//! between "the ring looks empty" and "wait" is never lost.

use std::io;
use std::path::Path;
use std::time::Duration;

/// How long to sleep between looks at the bus where the system offers no
/// file-change events (NetBSD's fallback).
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Waits for wake-ups on one bus file.
#[derive(Debug)]
pub struct Waiter {
    inner: imp::Inner,
}

impl Waiter {
    /// Starts watching `path` for changes.
    pub fn new(path: &Path) -> io::Result<Self> {
        Ok(Waiter {
            inner: imp::Inner::new(path)?,
        })
    }

    /// Blocks until the file changed since the last call, or `timeout`
    /// passes (`None`: no limit). Returns whether a change was seen; pending
    /// events are consumed. Spurious returns are possible: callers re-check
    /// the ring.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        self.inner.wait(timeout)
    }

    /// Consumes pending change events without blocking.
    pub fn drain(&self) -> io::Result<()> {
        self.inner.drain()
    }

    /// Whether, since the last call, an event said the file's metadata
    /// changed (it may have been removed, replaced or truncated), as
    /// opposed to ordinary wake-up writes. Always false where the platform
    /// does not tell.
    pub fn take_metadata_changed(&self) -> bool {
        self.inner.take_metadata_changed()
    }

    /// A new descriptor for the same watch, which polls readable when the
    /// bus file has changed, for `poll`/`epoll`/async runtimes. `None` where
    /// this platform offers none (only Linux does here; elsewhere
    /// [`Waiter::wait`] blocks on kqueue or polls). After it signals, call
    /// [`Waiter::drain`]. Poll it, never read it: it is in blocking mode
    /// (an untimed [`Waiter::wait`] sleeps in `read` on it).
    pub fn try_clone_fd(&self) -> io::Result<Option<std::os::fd::OwnedFd>> {
        self.inner.try_clone_fd()
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::fs::inotify;
    use std::io;
    use std::os::fd::{AsFd, OwnedFd};
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Room for the events one `read` takes: a watch on a file reports
    /// 16-byte events without names, so this holds hundreds.
    const EVENT_BUF: usize = 4096;

    /// One inotify instance in blocking mode, so that an untimed wait
    /// sleeps in `read` itself: one system call per wake-up, where `poll`
    /// and then `read` take two (each inotify instance watching the bus
    /// also makes every writer's wake-up `pwrite` dearer, so there is only
    /// one per waiter). Consuming without blocking asks `FIONREAD` first;
    /// a mutex and the `sleeping` flag make sure no other thread can take
    /// the events in between, so nothing but an untimed wait ever blocks.
    #[derive(Debug)]
    pub(super) struct Inner {
        fd: OwnedFd,
        /// Held while events are consumed without blocking, and while a
        /// thread decides to sleep in `read`.
        consume: Mutex<()>,
        /// A thread sleeps in `read`: the events are its to consume; other
        /// threads only poll.
        sleeping: AtomicBool,
        metadata_changed: AtomicBool,
    }

    impl Inner {
        pub(super) fn new(path: &Path) -> io::Result<Self> {
            use inotify::WatchFlags as W;
            let fd = inotify::init(inotify::CreateFlags::CLOEXEC)?;
            inotify::add_watch(
                &fd,
                path,
                W::MODIFY | W::ATTRIB | W::DELETE_SELF | W::MOVE_SELF,
            )?;
            Ok(Inner {
                fd,
                consume: Mutex::new(()),
                sleeping: AtomicBool::new(false),
                metadata_changed: AtomicBool::new(false),
            })
        }

        pub(super) fn take_metadata_changed(&self) -> bool {
            self.metadata_changed.swap(false, Ordering::Relaxed)
        }

        /// Notes events other than IN_MODIFY in a buffer of inotify events.
        fn scan(&self, mut events: &[u8]) {
            const HEADER: usize = 16;
            const IN_MODIFY: u32 = 0x2;
            while events.len() >= HEADER {
                let mask = u32::from_ne_bytes([events[4], events[5], events[6], events[7]]);
                let name_len =
                    u32::from_ne_bytes([events[12], events[13], events[14], events[15]]) as usize;
                if mask & !IN_MODIFY != 0 {
                    self.metadata_changed.store(true, Ordering::Relaxed);
                }
                events = events.get(HEADER + name_len..).unwrap_or(&[]);
            }
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
            self.consume.lock().unwrap_or_else(|p| p.into_inner())
        }

        pub(super) fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
            if timeout.is_none() {
                let me = {
                    let _g = self.lock();
                    !self.sleeping.swap(true, Ordering::AcqRel)
                };
                if me {
                    let r = self.read_blocking();
                    self.sleeping.store(false, Ordering::Release);
                    return r;
                }
            }
            // Events already queued (often the caller's own wake-up): take
            // them, no poll.
            if self.consume_pending()? {
                return Ok(true);
            }
            if timeout == Some(Duration::ZERO) {
                return Ok(false);
            }
            let ts = timeout.map(|d| Timespec {
                tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            });
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            loop {
                match poll(&mut fds, ts.as_ref()) {
                    Ok(0) => return Ok(false),
                    Ok(_) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            self.consume_pending()?;
            Ok(true)
        }

        /// Sleeps in `read` until an event is queued, and consumes what one
        /// read takes. Only the thread that set `sleeping` calls this.
        fn read_blocking(&self) -> io::Result<bool> {
            let mut buf = [0u8; EVENT_BUF];
            loop {
                match rustix::io::read(self.fd.as_fd(), &mut buf) {
                    Ok(n) => {
                        self.scan(&buf[..n]);
                        return Ok(true);
                    }
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }

        /// Consumes the queued events without blocking; whether there were
        /// any. While another thread sleeps in `read`, leaves them to it.
        fn consume_pending(&self) -> io::Result<bool> {
            let _g = self.lock();
            if self.sleeping.load(Ordering::Acquire) {
                return Ok(false);
            }
            let mut buf = [0u8; EVENT_BUF];
            let mut seen = false;
            loop {
                // Under the lock, with nobody sleeping in `read`, what
                // FIONREAD counts stays there for the read below.
                let queued = rustix::io::ioctl_fionread(&self.fd)?;
                if queued == 0 {
                    return Ok(seen);
                }
                match rustix::io::read(self.fd.as_fd(), &mut buf) {
                    Ok(n) => {
                        self.scan(&buf[..n]);
                        seen = true;
                        if n as u64 >= queued {
                            return Ok(true);
                        }
                    }
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }

        pub(super) fn drain(&self) -> io::Result<()> {
            self.consume_pending().map(|_| ())
        }

        pub(super) fn try_clone_fd(&self) -> io::Result<Option<OwnedFd>> {
            Ok(Some(self.fd.try_clone()?))
        }
    }
}

#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
mod imp {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::path::Path;
    use std::time::Duration;

    pub(super) struct Inner {
        watcher: kqueue::Watcher,
    }

    impl std::fmt::Debug for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Inner").finish_non_exhaustive()
        }
    }

    impl Inner {
        pub(super) fn new(path: &Path) -> io::Result<Self> {
            let mut watcher = kqueue::Watcher::new()?;
            watcher.add_filename(
                path,
                kqueue::EventFilter::EVFILT_VNODE,
                kqueue::FilterFlag::NOTE_WRITE,
            )?;
            watcher.watch()?;
            Ok(Inner { watcher })
        }

        pub(super) fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
            // `poll(None)` would not block; a long timeout stands in for "forever".
            let t = timeout.unwrap_or(Duration::from_secs(3600));
            let seen = self.watcher.poll(Some(t)).is_some();
            self.drain()?;
            Ok(seen)
        }

        pub(super) fn drain(&self) -> io::Result<()> {
            while self.watcher.poll(Some(Duration::ZERO)).is_some() {}
            Ok(())
        }

        pub(super) fn take_metadata_changed(&self) -> bool {
            false
        }

        pub(super) fn try_clone_fd(&self) -> io::Result<Option<OwnedFd>> {
            Ok(None)
        }
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
mod imp {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::path::Path;
    use std::time::Duration;

    #[derive(Debug)]
    pub(super) struct Inner;

    impl Inner {
        pub(super) fn new(_path: &Path) -> io::Result<Self> {
            Ok(Inner)
        }
        pub(super) fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
            let t = timeout.map_or(super::POLL_INTERVAL, |t| t.min(super::POLL_INTERVAL));
            std::thread::sleep(t);
            Ok(true)
        }
        pub(super) fn drain(&self) -> io::Result<()> {
            Ok(())
        }
        pub(super) fn take_metadata_changed(&self) -> bool {
            false
        }
        pub(super) fn try_clone_fd(&self) -> io::Result<Option<OwnedFd>> {
            Ok(None)
        }
    }
}
