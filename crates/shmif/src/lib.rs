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
//!   validity check and resync), pure functions over a byte region;
//! - [`dump`]: the walk `shmif_dumpbus` makes over a bus image;
//! - [`Bus`]: the mapped file, its lock and wake-ups;
//! - [`Interface`]: identity, filters, counters, send and receive.
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
pub mod bus;
pub mod dump;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod interface;
#[allow(unsafe_code)]
mod mapping;
pub mod ring;
#[cfg(feature = "smoltcp")]
pub mod smoltcp_device;
pub mod wait;
pub mod wire;

pub use bus::{Bus, OpenOptions};
pub use error::Error;
pub use interface::{Counters, Frame, Interface, Received};
pub use ring::Overrun;
pub use wait::Waiter;
pub use wire::MacAddr;
