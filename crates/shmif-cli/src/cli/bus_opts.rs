//! Options every command that attaches to a bus shares: how a new bus file
//! is created, whether a symbolic link is followed, and when a stuck bus
//! lock is taken over. Flattened into each such command's arguments.

use super::parse;
use shmif::{Interface, MacAddr, OpenOptions};
use std::path::Path;
use std::time::Duration;

/// How to open (or create) the bus file.
#[derive(Debug, Clone, clap::Args)]
pub struct BusOpts {
    /// Permission bits, in octal, of a bus file this command creates
    /// (an existing bus keeps its own; an existing empty file, made a bus
    /// now, gets these). The default lets only your own processes join;
    /// 660 shares the bus with the file's group.
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse::mode)]
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
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse::seconds)]
    pub stuck_lock_timeout: Duration,

    /// On an extended bus (`shmif create`), how long this command's writes
    /// wait for a registered reader that makes no progress before leaving
    /// it behind to be overrun (readers that keep up lose nothing).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse::seconds)]
    pub reader_stall: Duration,
}

impl BusOpts {
    /// The options the commands default to, for unit tests that attach a
    /// stack without parsing a command line (a stuck lock taken over after
    /// 2 s rather than the command's default).
    #[cfg(test)]
    pub fn for_tests() -> BusOpts {
        BusOpts {
            mode: 0o600,
            follow_symlinks: false,
            stuck_lock_timeout: Duration::from_secs(2),
            reader_stall: Duration::from_secs(1),
        }
    }

    /// The library's open options for these flags.
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions::new()
            .mode(self.mode)
            .follow_symlinks(self.follow_symlinks)
            .stuck_lock_timeout(
                (!self.stuck_lock_timeout.is_zero()).then_some(self.stuck_lock_timeout),
            )
            .reader_stall(self.reader_stall)
    }

    /// A new interface (random MAC unless given), attached to `bus` and up.
    /// An existing empty regular file is made a bus, as a missing one is,
    /// and given the permissions of `--mode` as a created one would be.
    pub fn attach(&self, bus: &Path, mac: Option<MacAddr>) -> Result<Interface, shmif::Error> {
        self.attach_lossy(bus, mac, false)
    }

    /// [`BusOpts::attach`], receiving lossy on an extended bus if `lossy`
    /// (writers never wait for it; see `Interface::set_lossy`).
    pub fn attach_lossy(
        &self,
        bus: &Path,
        mac: Option<MacAddr>,
        lossy: bool,
    ) -> Result<Interface, shmif::Error> {
        use std::os::unix::fs::PermissionsExt as _;
        let empty =
            std::fs::symlink_metadata(bus).is_ok_and(|m| m.file_type().is_file() && m.len() == 0);
        if empty {
            std::fs::set_permissions(bus, std::fs::Permissions::from_mode(self.mode)).map_err(
                |source| shmif::Error::Io {
                    path: bus.to_path_buf(),
                    what: "cannot set the mode of the empty file made a bus",
                    source,
                },
            )?;
        }
        let iface = match mac {
            Some(m) => Interface::with_mac(m),
            None => Interface::new(),
        }
        .with_open_options(self.open_options());
        iface.set_lossy(lossy);
        iface.set_link(bus)?;
        iface.up()?;
        Ok(iface)
    }
}
