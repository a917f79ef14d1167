//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong attaching to a bus or using it. Errors about
/// a file name the file; the underlying cause, where there is one, is the
/// error's `source()` (print with `{:#}` in anyhow, or walk the chain).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on the bus file failed.
    #[error("{path}: {what}")]
    Io {
        /// The bus file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The file exists but is not a shmif bus; it was left untouched.
    #[error("{path}: not a shmif bus: {reason}")]
    NotABus {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The bus holds something impossible (written by a broken or hostile
    /// peer). [`crate::Interface`] and [`crate::Bus`] no longer return it:
    /// they repair such a ring instead (counted in
    /// [`crate::Counters::ring_repairs`]); it remains for callers of the
    /// ring functions that want to report one.
    #[error("{path}: bus is corrupt")]
    Corrupt {
        /// The bus file.
        path: PathBuf,
        /// What was found.
        #[source]
        source: crate::ring::Corrupt,
    },
    /// The bus file was truncated, removed or replaced while attached: this
    /// mapping no longer reaches the other peers. Attach again.
    #[error("{path}: the bus file was {what} while attached; attach again to rejoin the bus")]
    BusGone {
        /// The bus file.
        path: PathBuf,
        /// What happened to it.
        what: &'static str,
    },
    /// A frame outside 14 bytes to the bus's frame limit (1514 on a
    /// NetBSD bus) was offered for sending.
    #[error("frame of {len} bytes cannot be sent: a frame on this bus is 14 to {max} bytes (Ethernet header + at most {} bytes of payload, no FCS)", max.saturating_sub(14))]
    FrameSize {
        /// The offered length.
        len: usize,
        /// The bus's frame limit.
        max: usize,
    },
    /// A bus shape (size, frame limit) that the format cannot hold.
    #[error("{path}: {reason}")]
    BadShape {
        /// The bus file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// The interface is up, or already has a bus: the link string can be
    /// changed only while down, and set only once.
    #[error("interface is busy: {0}")]
    Busy(&'static str),
    /// The interface has no bus (its link string is unset).
    #[error("interface has no bus: set its link (bus path) first")]
    NoLink,
    /// The interface is down: it neither sends nor receives.
    #[error("interface is down")]
    Down,
    /// A frame read in place ([`crate::Interface::try_recv_in_place`]) may
    /// have been written over while it was read: this reader made no
    /// progress for longer than the bus's reader-stall bound and writers
    /// stopped waiting for it. Discard what was made of that frame; the next
    /// receive delivers it again if it is still there, else counts it lost.
    #[error("this reader was left behind while it read a frame in place; discard that frame")]
    LeftBehind,
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, what: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    }
}
