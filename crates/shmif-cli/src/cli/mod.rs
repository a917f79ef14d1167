//! The shared layer under the subcommands: what every command needs and no
//! command owns.
//!
//! - [`error`]: turning library errors into one-line messages that name the
//!   file;
//! - [`signal`]: the one stop signal (SIGINT/SIGTERM as a flag and as a
//!   pollable descriptor);
//! - [`parse`]: one parser per kind of value given on the command line
//!   (durations, modes, MAC addresses, CIDRs);
//! - [`output`]: printing lines others read through pipes, rates, plurals;
//! - [`pcap`]: writing frames as pcap (`dump -p`, `capture`, `demo`);
//! - [`repair`]: saying once per episode that a bus was repaired;
//! - [`bus_opts`]: the options every command that attaches to a bus shares.
//!
//! A subcommand imports from here and from the library, never from another
//! subcommand.

pub mod bus_opts;
pub mod error;
pub mod output;
pub mod parse;
pub mod pcap;
pub mod repair;
pub mod signal;
