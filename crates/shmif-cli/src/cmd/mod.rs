//! One module per subcommand: its arguments (clap) and its `run`. Each
//! builds on the shared layer ([`crate::cli`]), the TCP/IP host
//! ([`crate::net`]) and the bridging engine ([`crate::bridge`]), never on
//! another subcommand.

pub mod bench;
pub mod capture;
pub mod create;
pub mod demo;
pub mod dump;
pub mod host;
pub mod listen;
pub mod ping;
pub mod send;
pub mod tap;
pub mod tcp_send;
