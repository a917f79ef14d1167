//! One module per subcommand: its arguments (clap) and its `run`. Each
//! builds on the shared layer ([`crate::cli`]), the TCP/IP host
//! ([`crate::net`]) and the bridging engine ([`crate::bridge`]), never on
//! another subcommand.

pub mod bench;
pub mod bridge;
pub mod capture;
pub mod completions;
pub mod create;
pub mod demo;
pub mod dump;
pub mod host;
pub mod listen;
pub mod man;
pub mod ping;
pub mod qemu;
pub mod send;
pub mod tap;
pub mod tcp_send;
pub mod top;
pub mod vde;
pub mod vxlan;
