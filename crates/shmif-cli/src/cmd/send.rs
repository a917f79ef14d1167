//! `shmif send`: put Ethernet frames on a bus.
//!
//! Attaches to the bus as a new interface, builds one Ethernet II frame from
//! the arguments (destination, source, EtherType, payload) and sends it one
//! or more times. Every argument is checked before the bus is touched.

use crate::cli::error::lib_error;
use crate::cli::output::plural;
use crate::cli::repair::RepairNotice;
use anyhow::{anyhow, Context as _};
use shmif::wire::MIN_FRAME_LEN;
use shmif::MacAddr;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Send Ethernet frames on a shmif bus.
///
/// Attaches to BUS (creating it if missing) as a new interface, builds the
/// frame DST + SRC + ETHERTYPE + PAYLOAD (no padding, no FCS; at most 1500
/// payload bytes on a NetBSD bus, the bus's frame limit less 14 on an
/// extended one) and sends it COUNT times, waking every reader. A one-line
/// confirmation goes to standard error.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif send /tmp/bus --dst ff:ff:ff:ff:ff:ff --ethertype 0x88b5 --payload 68656c6c6f\n  \
    shmif send /tmp/bus --dst b2:a0:01:02:03:04 --ethertype 0x88b5 --payload 'de:ad be:ef' --count 3\n  \
    printf 'hello' | shmif send /tmp/bus --dst ff:ff:ff:ff:ff:ff --ethertype 0x88b5 --payload -\n\n\
    EtherType 0x88b5 (and 0x88b6) is reserved for local experiments; 0x0800 is IPv4, 0x0806 ARP, \
    0x86dd IPv6.")]
pub struct Args {
    /// The bus file (created if missing).
    #[arg(value_name = "BUS")]
    pub bus: PathBuf,

    #[command(flatten)]
    pub bus_opts: crate::cli::bus_opts::BusOpts,

    /// Destination MAC address, e.g. ff:ff:ff:ff:ff:ff for broadcast.
    #[arg(long, value_name = "MAC")]
    pub dst: MacAddr,

    /// Source MAC address, also the sending interface's address; unicast
    /// [default: a random b2:a0:xx:xx:xx:xx].
    #[arg(long, value_name = "MAC", value_parser = crate::cli::parse::mac)]
    pub src: Option<MacAddr>,

    /// EtherType, in hex with 0x (0x88b5) or in decimal.
    #[arg(long, value_name = "TYPE", value_parser = parse_ether_type)]
    pub ethertype: u16,

    /// Frame payload: hex digits, optionally separated by spaces or colons
    /// ("68656c6c6f", "68:65:6c", "68 65 6c"), or `-` to read raw bytes
    /// from standard input. At most 1500 bytes (an extended bus: its frame
    /// limit less 14).
    #[arg(long, value_name = "HEX|-", value_parser = parse_payload)]
    pub payload: Payload,

    /// How many times to send the frame.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = crate::cli::parse::count)]
    pub count: u64,
}

/// Where the payload comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Raw bytes read from standard input.
    Stdin,
    /// Bytes given in hex on the command line.
    Bytes(Vec<u8>),
}

/// Largest payload that fits in a frame of an extended bus (the bus at hand
/// may allow less: see [`payload_limit`]).
const MAX_PAYLOAD: usize = shmif::wire::ext::EXT_MAX_FRAME_LEN as usize - MIN_FRAME_LEN;

/// Largest payload the bus at `bus` carries: 1500 on a NetBSD bus (or one
/// not made yet), its frame limit less 14 on an extended bus.
fn payload_limit(bus: &std::path::Path) -> usize {
    shmif::Bus::peek_geometry(bus).max_frame() - MIN_FRAME_LEN
}

/// Parses an EtherType: hex with a `0x` prefix (`0x88b5`), or decimal.
fn parse_ether_type(s: &str) -> Result<u16, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => t.parse::<u16>(),
    };
    parsed.map_err(|_| {
        format!("'{s}' is not an EtherType (expected 0x0000 to 0xffff, like 0x88b5, or decimal)")
    })
}

/// Parses hex bytes, ignoring spaces and colons; `-` means standard input.
fn parse_payload(s: &str) -> Result<Payload, String> {
    if s == "-" {
        return Ok(Payload::Stdin);
    }
    let digits: Vec<char> = s
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && *c != ':')
        .collect();
    if let Some(bad) = digits.iter().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "'{bad}' is not a hex digit (give bytes as hex, like 68656c6c6f or 68:65:6c, or - for stdin)"
        ));
    }
    if digits.len() % 2 != 0 {
        return Err(format!(
            "odd number of hex digits ({}): each byte takes two",
            digits.len()
        ));
    }
    let bytes: Vec<u8> = digits
        .chunks(2)
        .map(|p| {
            let hi = p[0].to_digit(16).unwrap_or(0);
            let lo = p[1].to_digit(16).unwrap_or(0);
            (hi * 16 + lo) as u8
        })
        .collect();
    if bytes.len() > MAX_PAYLOAD {
        return Err(too_big(bytes.len(), MAX_PAYLOAD));
    }
    Ok(Payload::Bytes(bytes))
}

/// Why a payload of `n` bytes can be no bigger than `limit`.
fn too_big(n: usize, limit: usize) -> String {
    format!(
        "{n} bytes is too big: a frame on this bus carries at most {limit} payload bytes ({} with \
         the 14-byte Ethernet header; `shmif create` makes buses with larger frames)",
        limit + MIN_FRAME_LEN
    )
}

/// Builds the Ethernet frame: destination, source, EtherType, payload.
fn build_frame(dst: MacAddr, src: MacAddr, ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(MIN_FRAME_LEN + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Runs `shmif send`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let limit = payload_limit(&args.bus);
    let payload = match args.payload {
        Payload::Bytes(b) => {
            if b.len() > limit {
                return Err(anyhow!("--payload: {}", too_big(b.len(), limit)));
            }
            b
        }
        Payload::Stdin => {
            let mut b = Vec::new();
            io::stdin()
                .lock()
                .take(limit as u64 + 1)
                .read_to_end(&mut b)
                .context("--payload -: cannot read standard input")?;
            if b.len() > limit {
                return Err(anyhow!(
                    "--payload -: standard input holds more than {limit} bytes: {}",
                    too_big(b.len(), limit)
                ));
            }
            b
        }
    };
    let iface = match args.src {
        Some(mac) => args
            .bus_opts
            .attach(&args.bus, Some(mac))
            .map_err(lib_error)?,
        None => args.bus_opts.attach(&args.bus, None).map_err(lib_error)?,
    };
    let frame = build_frame(args.dst, iface.mac(), args.ethertype, &payload);
    for _ in 0..args.count {
        iface.send(&frame).map_err(lib_error)?;
    }
    RepairNotice::new(&args.bus).check(&iface.counters());
    let _ = writeln!(
        io::stderr().lock(),
        "shmif: sent {} of {} bytes ({} > {}, ethertype 0x{:04x}, {}) on {}",
        plural(args.count, "frame"),
        frame.len(),
        iface.mac(),
        args.dst,
        args.ethertype,
        plural(payload.len() as u64, "payload byte"),
        args.bus.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ether_types() {
        assert_eq!(parse_ether_type("0x88b5"), Ok(0x88b5));
        assert_eq!(parse_ether_type("0X0800"), Ok(0x0800));
        assert_eq!(parse_ether_type("2048"), Ok(0x0800));
        assert!(parse_ether_type("0x10000").is_err());
        assert!(parse_ether_type("ip").is_err());
        assert!(parse_ether_type("").is_err());
    }

    #[test]
    fn payloads() {
        assert_eq!(parse_payload("-"), Ok(Payload::Stdin));
        assert_eq!(
            parse_payload("68656c6c6f"),
            Ok(Payload::Bytes(b"hello".to_vec()))
        );
        assert_eq!(
            parse_payload("68:65 6C:6c 6f"),
            Ok(Payload::Bytes(b"hello".to_vec()))
        );
        assert_eq!(parse_payload(""), Ok(Payload::Bytes(vec![])));
        assert!(parse_payload("686").unwrap_err().contains("odd"));
        assert!(parse_payload("zz").unwrap_err().contains("hex digit"));
        assert!(parse_payload(&"00".repeat(65_535)).is_ok());
        assert!(parse_payload(&"00".repeat(65_536))
            .unwrap_err()
            .contains("too big"));
    }

    #[test]
    fn frame_layout() {
        let f = build_frame(
            MacAddr::BROADCAST,
            MacAddr([0xb2, 0xa0, 1, 2, 3, 4]),
            0x88b5,
            b"hi",
        );
        assert_eq!(
            f,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xb2, 0xa0, 1, 2, 3, 4, 0x88, 0xb5, b'h', b'i']
        );
    }
}
