//! Receiving with Tokio (feature `tokio`): [`AsyncInterface`].
//!
//! An [`AsyncInterface`] wraps an [`Interface`] and registers its wake-up
//! descriptor ([`Interface::wakeup_fd`], the inotify watch on the bus file)
//! with Tokio's reactor. [`AsyncInterface::recv`] then never blocks a
//! thread and never spins: it consumes pending wake-ups, tries the ring,
//! and only if the ring has nothing for it awaits the descriptor becoming
//! readable, which happens when any peer writes to the bus.
//!
//! ```no_run
//! # async fn example() -> Result<(), shmif::Error> {
//! use shmif::async_io::AsyncInterface;
//! let bus = AsyncInterface::attach("/tmp/bus")?;
//! loop {
//!     let frame = bus.recv().await?;
//!     println!("{} bytes from sender {:x}", frame.data.len(), frame.sender);
//! }
//! # }
//! ```
//!
//! Sending never waits (a send takes the bus lock, copies, and wakes the
//! readers), so [`AsyncInterface::send`] is the plain synchronous call.
//!
//! Only Linux offers a pollable wake-up descriptor here; elsewhere
//! [`AsyncInterface::new`] returns an error.

use crate::error::Error;
use crate::interface::{Frame, Interface, Received};
use crate::wire::MAX_FRAME_LEN;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// An [`Interface`] whose receives are `async` (Tokio).
///
/// Receiving is cancel-safe: a frame is taken off the ring only in a
/// synchronous step after the wait, so dropping a [`AsyncInterface::recv`]
/// future (for example in `tokio::time::timeout` or `select!`) loses
/// nothing. Several tasks may receive at once; each frame goes to one.
#[derive(Debug)]
pub struct AsyncInterface {
    iface: Arc<Interface>,
    wake: AsyncFd<OwnedFd>,
}

/// The error for a failure of the wake-up descriptor, naming the bus.
fn wake_error(iface: &Interface, what: &'static str, source: io::Error) -> Error {
    Error::Io {
        path: iface.link().unwrap_or_else(|| PathBuf::from("(no bus)")),
        what,
        source,
    }
}

impl AsyncInterface {
    /// Wraps an interface that has a bus (see [`Interface::set_link`]); it
    /// may be up or down.
    ///
    /// # Errors
    /// [`Error::NoLink`] without a bus; [`Error::Io`] where the platform
    /// has no pollable wake-up descriptor (only Linux has one) or the
    /// reactor refuses it.
    ///
    /// # Panics
    /// Outside a Tokio runtime with I/O enabled, as
    /// [`tokio::io::unix::AsyncFd::new`] does.
    pub fn new(iface: Interface) -> Result<Self, Error> {
        Self::from_arc(Arc::new(iface))
    }

    /// Like [`AsyncInterface::new`], for an interface that is shared (for
    /// example with a thread that sends, or with code that counts).
    ///
    /// # Errors
    /// As [`AsyncInterface::new`].
    ///
    /// # Panics
    /// Outside a Tokio runtime with I/O enabled.
    pub fn from_arc(iface: Arc<Interface>) -> Result<Self, Error> {
        let fd = iface.wakeup_fd()?.ok_or_else(|| {
            wake_error(
                &iface,
                "no pollable wake-up descriptor on this platform (only Linux has one)",
                io::Error::from(io::ErrorKind::Unsupported),
            )
        })?;
        // Tokio 1.54 deprecated the safe constructors in favour of an
        // `unsafe fn register`, because a caller holding `&mut T` through
        // `AsyncFd::get_mut` could swap the descriptor out from under the
        // reactor. Here `T` is an `OwnedFd` in a private field that is never
        // handed out mutably, so the condition the unsafe variant asks for
        // (the same open descriptor for the AsyncFd's whole life) holds, and
        // this crate keeps its unsafe code in its one private module.
        #[allow(deprecated)]
        let wake = AsyncFd::with_interest(fd, tokio::io::Interest::READABLE).map_err(|e| {
            wake_error(
                &iface,
                "cannot register the wake-up descriptor with Tokio",
                e,
            )
        })?;
        Ok(AsyncInterface { iface, wake })
    }

    /// Attaches to the bus at `path` (created if missing) with a random MAC
    /// and brings the interface up, as [`Interface::attach`] does.
    ///
    /// # Errors
    /// As [`Interface::attach`] and [`AsyncInterface::new`].
    ///
    /// # Panics
    /// Outside a Tokio runtime with I/O enabled.
    pub fn attach(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::new(Interface::attach(path)?)
    }

    /// The wrapped interface: its MAC, filters, counters, life cycle.
    pub fn interface(&self) -> &Arc<Interface> {
        &self.iface
    }

    /// Gives the interface back (the wake-up registration is dropped).
    pub fn into_inner(self) -> Arc<Interface> {
        self.iface
    }

    /// Receives the next frame for this interface, waiting without
    /// blocking the thread until one arrives.
    ///
    /// # Errors
    /// [`Error::Down`] if the interface is down or taken down while
    /// waiting; [`Error::BusGone`] if the bus file is removed, replaced or
    /// truncated; [`Error::Io`] if the reactor fails.
    pub async fn recv(&self) -> Result<Frame, Error> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let r = self.recv_into(&mut buf).await?;
        Ok(Frame {
            data: buf[..r.len].to_vec(),
            sec: r.sec,
            usec: r.usec,
            sender: r.sender,
        })
    }

    /// Receives the next frame into `buf` (which should hold 1514 bytes; a
    /// shorter one gets the start of the frame), waiting without blocking
    /// the thread until one arrives. No allocation.
    ///
    /// # Errors
    /// As [`AsyncInterface::recv`].
    pub async fn recv_into(&self, buf: &mut [u8]) -> Result<Received, Error> {
        loop {
            // Consume pending wake-ups first (and check the bus file is
            // still the one mapped): a frame written after this point
            // raises a fresh event, so the wait below cannot miss it.
            self.iface.wait_for_wakeup(Some(Duration::ZERO))?;
            if let Some(r) = self.iface.try_recv_into(buf)? {
                return Ok(r);
            }
            let mut ready = self
                .wake
                .readable()
                .await
                .map_err(|e| wake_error(&self.iface, "cannot wait for bus wake-up", e))?;
            // The events are consumed at the top of the loop; clearing the
            // readiness now is safe because the ring is read after it.
            ready.clear_ready();
        }
    }

    /// Receives the next frame if one is waiting, without waiting; see
    /// [`Interface::try_recv`].
    ///
    /// # Errors
    /// As [`Interface::try_recv`].
    pub fn try_recv(&self) -> Result<Option<Frame>, Error> {
        self.iface.try_recv()
    }

    /// Sends one frame; see [`Interface::send`]. Sending never waits for
    /// readers, so this is synchronous.
    ///
    /// # Errors
    /// As [`Interface::send`].
    pub fn send(&self, frame: &[u8]) -> Result<(), Error> {
        self.iface.send(frame)
    }

    /// Sends several frames with one lock and one wake-up; see
    /// [`Interface::send_batch`].
    ///
    /// # Errors
    /// As [`Interface::send_batch`].
    pub fn send_batch<'f, I>(&self, frames: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = &'f [u8]>,
        I::IntoIter: Clone,
    {
        self.iface.send_batch(frames)
    }
}

impl AsRef<Interface> for AsyncInterface {
    fn as_ref(&self) -> &Interface {
        &self.iface
    }
}
