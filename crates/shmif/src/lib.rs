//! A NetBSD-compatible `shmif` bus: Ethernet over a shared memory-mapped file.
//!
//! A bus is a 1 MiB file. Every process that attaches to it becomes an
//! Ethernet interface with its own MAC address; a frame one sends is seen by
//! all (a hub). The layout and rules are those of NetBSD's `if_shmem.c`,
//! bus version 3, byte for byte, so a rump kernel and this crate share a bus.
//!
//! The crate is layered, each layer thin over the one below:
//! - [`wire`]: the bus and frame header layouts, as views over bytes;
//! - [`ring`]: the ring arithmetic (append with eviction, the reader's
//!   validity check, resync and overrun policy), pure functions over a
//!   byte region of a given [`Geometry`];
//! - [`dump`]: the walk `shmif_dumpbus` makes over a bus image;
//! - [`Bus`]: the mapped file and its wake-ups; its lock and raw ring
//!   access are in [`lowlevel`], for the few programs that need them;
//! - [`Interface`]: identity, filters, counters, send and receive, over a
//!   sans-IO receive core (batch, MAC filter before the copy, counters).
//!
//! ```no_run
//! use shmif::Interface;
//! let a = Interface::attach("/tmp/bus")?;
//! let b = Interface::attach("/tmp/bus")?;
//! let mut frame = vec![0xff; 6];               // broadcast
//! frame.extend_from_slice(&a.mac().0);
//! frame.extend_from_slice(&[0x88, 0xb5]);       // local experimental EtherType
//! frame.extend_from_slice(b"hello");
//! a.send(&frame)?;
//! let got = b.recv_timeout(std::time::Duration::from_secs(1))?;
//! assert_eq!(got.map(|f| f.data), Some(frame));
//! # Ok::<(), shmif::Error>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "tokio")]
pub mod async_io;
mod bus;
pub mod dump;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod interface;
pub mod lowlevel;
#[allow(unsafe_code)]
mod mapping;
pub mod ring;
mod rx;
#[cfg(feature = "smoltcp")]
pub mod smoltcp_device;
mod wait;
pub mod wire;

pub use bus::{read_image, Bus, OpenOptions, DEAD_READER_GRACE, READER_STALL};
pub use error::Error;
pub use interface::{
    random_mac, Counters, Frame, FrameView, Interface, Received, DEFAULT_RX_COALESCE,
    MAX_RX_COALESCE, RX_COALESCE_BURST,
};
pub use ring::{Geometry, Overrun};
pub use wait::{Waiter, POLL_INTERVAL};
pub use wire::MacAddr;
