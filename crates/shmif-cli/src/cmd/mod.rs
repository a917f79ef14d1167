//! One module per subcommand.

pub mod dump;
pub mod host;
pub mod listen;
pub mod net;
pub mod ping;
pub mod send;
pub mod tcp_send;
