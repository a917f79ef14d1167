//! One module per subcommand.

pub mod bench;
pub mod bus_opts;
pub mod capture;
pub mod demo;
pub mod dump;
pub mod host;
pub mod listen;
pub mod net;
pub mod pcap;
pub mod ping;
pub mod send;
pub mod tap;
pub mod tcp_send;
