//! A smoltcp TCP/IP host on a bus, for `host`, `ping`, `tcp-send` and
//! `demo`:
//! - [`args`]: the options those commands share (bus, addresses, MAC);
//! - [`stack`]: the stack itself (a shmif interface under smoltcp);
//! - [`activity`]: things a host does over many polls (a ping run, a TCP
//!   transfer) and the driver that runs one alone;
//! - [`ping`]: a ping run (`shmif ping`, `shmif host --ping`);
//! - [`transfer`]: a TCP transfer of the test pattern (`shmif tcp-send`,
//!   `shmif host --tcp-send`);
//! - [`pattern`]: the test pattern `tcp-send` sends and a sink checks;
//! - [`dad`]: duplicate address detection (the probe a host makes before
//!   it serves, the answers every stack gives for its own addresses);
//! - [`reset`]: the second reset an aborted transfer sends, which a server
//!   that lost frames of it still takes.

pub mod activity;
pub mod args;
pub mod dad;
pub mod pattern;
pub mod ping;
pub mod reset;
pub mod stack;
pub mod transfer;

pub use activity::{run_alone, Activity, Step};
pub use args::StackArgs;
pub use stack::Stack;
