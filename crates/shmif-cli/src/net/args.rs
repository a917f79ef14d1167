//! The options every command that runs a TCP/IP stack on a bus shares, and
//! the checks on the addresses they give.

use crate::cli::{bus_opts::BusOpts, parse};
use anyhow::Result;
use shmif::MacAddr;
use smoltcp::wire::IpCidr;
use std::net::IpAddr;
use std::path::PathBuf;

use super::Stack;

/// What the commands that run a TCP/IP stack on a bus (`host`, `ping`,
/// `tcp-send`) share: the bus, how it is opened, and the interface's
/// addresses and MAC address. Flattened into each command's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// The bus file (created if missing).
    pub bus: PathBuf,

    #[command(flatten)]
    pub bus_opts: BusOpts,
    /// This interface's address, ADDR/PREFIX: IPv4 (10.0.0.1/24) or IPv6
    /// (fd00::1/64); a destination needs an address of its family. Without
    /// /PREFIX: /24 or /64.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse::cidr)]
    pub ip: Option<IpCidr>,
    /// An IPv6 address as well, ADDR/PREFIX (fd00::1/64), for IPv6
    /// destinations.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse::cidr)]
    pub ip6: Option<IpCidr>,
    /// This interface's MAC address (default: random b2:a0:xx:xx:xx:xx).
    #[arg(long, value_parser = parse::mac)]
    pub mac: Option<MacAddr>,
}

impl StackArgs {
    /// The interface addresses from `--ip` and `--ip6` (see [`addresses`]).
    pub fn addresses(&self) -> Result<Vec<IpCidr>> {
        addresses(self.ip, self.ip6)
    }

    /// Attaches a [`Stack`] to the bus, with `addrs` (from
    /// [`StackArgs::addresses`]) and the MAC address given.
    pub fn attach(&self, addrs: &[IpCidr]) -> Result<Stack> {
        Stack::attach(&self.bus, &self.bus_opts, self.mac, addrs)
    }
}

/// The interface addresses from `--ip` and `--ip6`: at least one, at most
/// one of each family.
pub fn addresses(ip: Option<IpCidr>, ip6: Option<IpCidr>) -> Result<Vec<IpCidr>> {
    if let Some(c) = ip6 {
        if !matches!(c, IpCidr::Ipv6(_)) {
            anyhow::bail!("--ip6 {c}: not an IPv6 address");
        }
    }
    let addrs: Vec<IpCidr> = ip.into_iter().chain(ip6).collect();
    if addrs.is_empty() {
        anyhow::bail!("give the interface an address with --ip ADDR/PREFIX (or --ip6)");
    }
    if addrs.len() == 2 && matches!(addrs[0], IpCidr::Ipv6(_)) {
        anyhow::bail!(
            "--ip {} and --ip6 {} are both IPv6: give the IPv4 address with --ip",
            addrs[0],
            addrs[1]
        );
    }
    Ok(addrs)
}

/// Fails unless `addrs` has an address of `dest`'s family; `what` names
/// the destination in the message (`DEST 10.0.0.1`, `--ping fd00::1`).
pub fn check_family(what: &str, dest: IpAddr, addrs: &[IpCidr]) -> Result<()> {
    let same = |c: &IpCidr| matches!(c, IpCidr::Ipv4(_)) == dest.is_ipv4();
    if !addrs.iter().any(same) {
        anyhow::bail!(
            "{what} is {}, but this interface has no such address: add --ip{} ADDR/PREFIX",
            if dest.is_ipv4() { "IPv4" } else { "IPv6" },
            if dest.is_ipv4() { "" } else { "6" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_sets() {
        let v4 = parse::cidr("10.0.0.1/24").ok();
        let v6 = parse::cidr("fd00::1/64").ok();
        assert_eq!(addresses(v4, v6).unwrap().len(), 2);
        assert_eq!(addresses(v6, None).unwrap().len(), 1);
        assert!(addresses(None, None).is_err());
        assert!(addresses(v6, v6).is_err());
        assert!(addresses(None, v4).is_err());
    }
}
