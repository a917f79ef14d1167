//! One parser per kind of value given on the command line. Each is a clap
//! `value_parser`: it returns the value, or a message that quotes the text
//! and says what was expected (clap names the argument).

use shmif::MacAddr;
use smoltcp::wire::{IpAddress, IpCidr};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A non-negative number of seconds, fractions allowed: `2`, `0.5`.
pub fn seconds(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .and_then(|x| Duration::try_from_secs_f64(x).ok())
        .ok_or_else(|| format!("'{s}' is not a number of seconds (like 2 or 0.5)"))
}

/// A number of seconds from 0 to 3600 (`--interval`, `--timeout`).
pub fn seconds_to_an_hour(s: &str) -> Result<Duration, String> {
    match seconds(s) {
        Ok(d) if d <= Duration::from_secs(3600) => Ok(d),
        _ => Err(format!("`{s}` is not a number of seconds from 0 to 3600")),
    }
}

/// A positive number of mebibytes, fractions allowed (`--megabytes`).
pub fn megabytes(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of mebibytes")),
    }
}

/// An octal permission mode for a file the command creates: `600`, `0660`;
/// the owner must keep read and write.
pub fn mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("'{s}' is not an octal mode like 600 or 660"))?;
    if m > 0o777 {
        return Err(format!("'{s}' is not a permission mode (at most 777)"));
    }
    if m & 0o600 != 0o600 {
        return Err(format!(
            "mode '{s}' would not let the owner read and write the file (use at least 600)"
        ));
    }
    Ok(m)
}

/// A unicast MAC address such as `b2:a0:00:00:00:01`.
pub fn mac(s: &str) -> Result<MacAddr, String> {
    let mac: MacAddr = s.parse().map_err(|_| {
        format!("`{s}` is not a MAC address (expected six hex octets, e.g. b2:a0:00:00:00:01)")
    })?;
    if mac.is_group() {
        return Err(format!(
            "{mac} is a multicast address: an interface needs a unicast one"
        ));
    }
    Ok(mac)
}

/// An interface address `ADDR/PREFIX` (IPv4 or IPv6); a missing prefix
/// means /24 for IPv4 and /64 for IPv6.
pub fn cidr(s: &str) -> Result<IpCidr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address (expected ADDR/PREFIX, e.g. 10.0.0.1/24 or fd00::1/64)"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| format!("`{p}` is not a prefix length (0 to {max})"))?,
        None if addr.is_ipv4() => 24,
        None => 64,
    };
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(format!("{addr} cannot be an interface address"));
    }
    Ok(IpCidr::new(IpAddress::from(addr), prefix))
}

/// A size in bytes with an optional binary suffix: `1048576`, `64K`,
/// `64M`, `1G` (K = 1024; `KiB`, `MiB`, `GiB` and lower case also).
pub fn size(s: &str) -> Result<u64, String> {
    let err = || format!("'{s}' is not a size (a number of bytes, or with K, M or G: 64M, 1G)");
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &t[digits.len()..];
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(err()),
    };
    let n: u64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(1 << shift).ok_or_else(err)
}

/// An extended bus's file size (`shmif create --size`): whole 4 KiB pages
/// from 1 MiB to 1 GiB.
pub fn bus_size(s: &str) -> Result<u64, String> {
    let n = size(s)?;
    if !(1 << 20..=1 << 30).contains(&n) || n % 4096 != 0 {
        return Err(format!(
            "a bus is 1M to 1G in whole 4K pages; '{s}' is {n} bytes"
        ));
    }
    Ok(n)
}

/// A server's address, `ADDR:PORT` (IPv4) or `[ADDR]:PORT` (IPv6), with
/// a message that says what is missing: the port, or the brackets.
pub fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a); // port 0 is refused with the other checks on DEST
    }
    if let Some((addr, port)) = s.rsplit_once(':') {
        if addr.parse::<std::net::Ipv6Addr>().is_ok() && port.parse::<u16>().is_ok() {
            return Err(format!(
                "`{s}`: an IPv6 address with a port needs brackets: [{addr}]:{port}"
            ));
        }
    }
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
        let example = match ip {
            IpAddr::V4(_) => format!("{ip}:9000"),
            IpAddr::V6(_) => format!("[{ip}]:9000"),
        };
        return Err(format!("`{s}` has no port: give ADDR:PORT, e.g. {example}"));
    }
    if let Some((addr, port)) = s.rsplit_once(':') {
        if port.parse::<u16>().is_err() && addr.parse::<IpAddr>().is_ok() {
            return Err(format!("`{port}` is not a port number (1 to 65535)"));
        }
    }
    Err(format!(
        "`{s}` is not ADDR:PORT (e.g. 10.0.0.1:9000, or [fd00::1]:9000 for IPv6)"
    ))
}

/// A port to serve on, 1 to 65535.
pub fn port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be served on: give a port from 1 to 65535".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("`{s}` is not a port number (1 to 65535)")),
    }
}

/// A count of at least one (`--count`, `-c`).
pub fn count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("a count of 0 would do nothing: give 1 or more (or leave it out)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number of 1 or more")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64K"), Ok(64 << 10));
        assert_eq!(size("64M"), Ok(64 << 20));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("1g"), Ok(1 << 30));
        assert!(size("").is_err());
        assert!(size("M").is_err());
        assert!(size("12T").is_err());
        assert!(size("-1M").is_err());
        assert!(size("99999999999G").is_err(), "overflow");
        assert_eq!(bus_size("1M"), Ok(1 << 20));
        assert_eq!(bus_size("1G"), Ok(1 << 30));
        assert!(bus_size("512K").unwrap_err().contains("1M to 1G"));
        assert!(bus_size("2G").is_err());
        assert!(bus_size("1048577").is_err(), "whole pages");
    }

    #[test]
    fn modes() {
        assert_eq!(mode("600"), Ok(0o600));
        assert_eq!(mode("0660"), Ok(0o660));
        assert!(mode("9").is_err());
        assert!(mode("1777").is_err());
        assert!(mode("400").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        assert_eq!(seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(seconds("-1").is_err());
        assert!(seconds("soon").is_err());
        assert!(seconds("inf").is_err());
        assert_eq!(seconds_to_an_hour("3600"), Ok(Duration::from_secs(3600)));
        assert!(seconds_to_an_hour("3601")
            .unwrap_err()
            .contains("0 to 3600"));
    }

    #[test]
    fn cidrs_and_macs_parse_with_clear_errors() {
        assert_eq!(
            cidr("10.0.0.1/24").unwrap(),
            IpCidr::new(IpAddress::v4(10, 0, 0, 1), 24)
        );
        assert_eq!(cidr("10.0.0.1").unwrap().prefix_len(), 24);
        assert_eq!(cidr("fd00::1").unwrap().prefix_len(), 64);
        assert_eq!(cidr("fd00::1/120").unwrap().prefix_len(), 120);
        assert!(cidr("10.0.0.1/33").unwrap_err().contains("33"));
        assert!(cidr("host/24").unwrap_err().contains("host"));
        assert!(cidr("0.0.0.0/8").is_err());
        assert!(mac("b2:a0:00:00:00:01").is_ok());
        assert!(mac("ff:ff:ff:ff:ff:ff").is_err());
        assert!(mac("nonsense").is_err());
    }

    #[test]
    fn socket_addresses_say_what_is_missing() {
        assert_eq!(socket_addr("10.0.0.1:9000").unwrap().port(), 9000);
        assert_eq!(socket_addr("[fd00::1]:7").unwrap().port(), 7);
        assert_eq!(
            socket_addr("10.0.0.1").unwrap_err(),
            "`10.0.0.1` has no port: give ADDR:PORT, e.g. 10.0.0.1:9000"
        );
        assert_eq!(
            socket_addr("fd00::1:9000").unwrap_err(),
            "`fd00::1:9000`: an IPv6 address with a port needs brackets: [fd00::1]:9000"
        );
        assert!(socket_addr("10.0.0.1:x").unwrap_err().contains("`x`"));
        assert_eq!(count("3"), Ok(3));
        assert!(count("0").unwrap_err().contains("would do nothing"));
        assert!(port("0").unwrap_err().contains("port 0"));
    }
}
