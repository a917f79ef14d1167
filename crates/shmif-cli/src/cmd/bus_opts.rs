//! Options every command that attaches to a bus shares: how a new bus file
//! is created, whether a symbolic link is followed, and when a stuck bus
//! lock is taken over. Flattened into each such command's arguments.

use shmif::{Interface, MacAddr, OpenOptions};
use std::path::Path;
use std::time::Duration;

/// How to open (or create) the bus file.
#[derive(Debug, Clone, clap::Args)]
pub struct BusOpts {
    /// Permission bits, in octal, of a bus file this command creates
    /// (an existing file keeps its own). The default lets only your own
    /// processes join; 660 shares the bus with the file's group.
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse_mode)]
    pub mode: u32,

    /// Follow the bus path if it is a symbolic link. Refused by default, so
    /// that a link planted in a shared directory cannot redirect the bus.
    #[arg(long)]
    pub follow_symlinks: bool,

    /// Take over the bus lock if it stays held this many seconds, with
    /// nothing moving on the bus, by a holder that cannot be identified
    /// (a NetBSD rump kernel that crashed inside the lock leaves it held
    /// forever). 0 never takes it over, as NetBSD peers do not. Holders of
    /// ours that died are always taken over after 100 ms.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    pub stuck_lock_timeout: Duration,
}

/// Parses an octal permission mode such as 600 or 0660.
fn parse_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("'{s}' is not an octal mode like 600 or 660"))?;
    if m > 0o777 {
        return Err(format!("'{s}' is not a permission mode (at most 777)"));
    }
    if m & 0o600 != 0o600 {
        return Err(format!(
            "mode '{s}' would not let the owner read and write the bus (use at least 600)"
        ));
    }
    Ok(m)
}

/// Parses a non-negative number of seconds (fractions allowed).
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .and_then(|x| Duration::try_from_secs_f64(x).ok())
        .ok_or_else(|| format!("'{s}' is not a number of seconds (like 2 or 0.5)"))
}

impl BusOpts {
    /// The library's open options for these flags.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions::new()
            .mode(self.mode)
            .follow_symlinks(self.follow_symlinks)
            .stuck_lock_timeout(
                (!self.stuck_lock_timeout.is_zero()).then_some(self.stuck_lock_timeout),
            )
    }

    /// A new interface (random MAC unless given), attached to `bus` and up.
    pub fn attach(&self, bus: &Path, mac: Option<MacAddr>) -> Result<Interface, shmif::Error> {
        let iface = match mac {
            Some(m) => Interface::with_mac(m),
            None => Interface::new(),
        }
        .with_open_options(self.open_options());
        iface.set_link(bus)?;
        iface.up()?;
        Ok(iface)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert!(parse_mode("9").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("400").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert_eq!(parse_secs("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
        assert!(parse_secs("inf").is_err());
    }
}
