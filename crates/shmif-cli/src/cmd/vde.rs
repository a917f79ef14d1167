//! `shmif vde`: a VDE switch whose every port is a station on a bus.
//!
//! Serves the VDE switch protocol in a directory (its `ctl` socket and
//! one datagram socket per client, see [`crate::bridge::vde_port`]), so
//! that QEMU's `-netdev vde`, `vde_plug`, `vde_plug2tap` and every other
//! libvdeplug client attach unchanged. The switch and the bus are ports of
//! a [`crate::bridge::Engine`] forwarding as a hub; each client becomes a
//! port of its own when its request arrives and goes when its control
//! stream closes. This module prepares the directory, wires the ports
//! together and cleans up.

use crate::bridge::bus_port::BusPort;
use crate::bridge::vde_port::VdeSwitch;
use crate::bridge::{End, Engine, Forwarding};
use crate::cli::error::lib_error;
use crate::cli::output::say;
use crate::cli::signal::StopSignal;
use anyhow::{anyhow, Context as _, Result};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Serve a VDE switch in DIR whose ports are stations on BUS: VMs and VDE
/// programs join the bus without root.
///
/// Creates DIR (or takes an empty one) and listens on DIR/ctl with the VDE
/// switch protocol that libvdeplug speaks, so that any VDE client attaches
/// unchanged: QEMU's `-netdev vde,sock=DIR`, `vde_plug DIR` or `vde_plug
/// vde://DIR`, `vde_plug2tap`, VirtualBox, User-Mode Linux. Each client
/// gets a port (a datagram socket DIR/port-N); every port is a station on
/// the bus: it sees every frame of every other port and of every other
/// peer on the bus (rump kernels, `shmif host`, `shmif tap`...), never its
/// own. A client that goes away (its control stream closes) frees its
/// port; its counters are printed then, and every port's on exit.
///
/// Frames larger than the bus carries (its frame limit: 1514 bytes on a
/// NetBSD v3 bus, so guests need MTU 1500; up to 9,234, VDE's own limit,
/// on an extended bus made with a larger --max-frame) still go between VDE
/// ports, but are dropped for the bus, counted, and warned about once per
/// port. A client that reads slower than the others
/// send holds them back (its queue fills and the switch stops reading until
/// it drains), so that blocking senders are paced and nothing is lost; a
/// client that takes nothing for 100 ms is left behind (frames for it are
/// dropped, counted) so that it cannot stop the others. A client that sends
/// a garbage request, or none within 5 s, is disconnected with one log
/// line; one that reads nothing for 10 s while frames for it are dropped
/// too.
///
/// DIR, its sockets and a bus file it creates are for your own user only
/// unless --mode says otherwise (660: your group too). A DIR left behind by
/// a crashed run (a `ctl` nobody answers on) is taken over; a DIR holding
/// anything but sockets, or where a switch is still answering, is refused.
/// On SIGINT or SIGTERM the sockets, and DIR if this command created it,
/// are removed. Prints one line to standard output once it is serving.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif vde /tmp/bus /tmp/sw &                          # a switch in /tmp/sw on /tmp/bus\n  \
    qemu-system-x86_64 ... -netdev vde,id=n0,sock=/tmp/sw -device virtio-net-pci,netdev=n0\n  \
    vde_plug vde:///tmp/sw                                # frames in VDE stream form on stdio\n  \
    shmif host /tmp/bus --ip 10.0.0.1/24                  # a userspace host the VMs can ping\n  \
    vde_plug2tap -s /tmp/sw tap0                          # (root) a kernel TAP on the switch\n\n\
    Exit status: 130 when stopped by SIGINT or SIGTERM (it runs until then); 1 if DIR or BUS cannot be used (the message says why: \
    not a directory, holds other files, another switch serves it, path too long, permissions) \
    or the bus fails while serving.")]
pub struct Args {
    /// The bus file (created if missing).
    #[arg(value_name = "BUS")]
    pub bus: PathBuf,

    /// The switch directory (created if missing; an existing one must be
    /// empty or a stale switch directory of a crashed run).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// How the bus file is opened or created; --mode also sets the
    /// permissions of DIR and its sockets.
    #[command(flatten)]
    pub bus_opts: crate::cli::bus_opts::BusOpts,
}

/// Longest socket path (`sun_path` is 108 bytes with its NUL).
const SUN_PATH_MAX: usize = 107;

/// The permission bits of a directory for a file mode: search wherever
/// reading is allowed.
fn dir_mode(mode: u32) -> u32 {
    mode | (mode & 0o444) >> 2
}

/// Whether the directory at `dir` was made here (and is removed on exit).
struct Prepared {
    dir: PathBuf,
    created: bool,
}

/// Creates DIR, or checks that an existing one may be used: empty, or
/// holding only sockets of a switch that no longer answers (which are
/// removed).
fn prepare_dir(dir: &Path, mode: u32, follow_symlinks: bool) -> Result<Prepared> {
    let shown = dir.display();
    let created = match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(dir)
                .map_err(|e| anyhow!("{shown}: cannot create the directory: {e}"))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(dir_mode(mode)))
                .map_err(|e| anyhow!("{shown}: cannot set its permissions: {e}"))?;
            true
        }
        Err(e) => return Err(anyhow!("{shown}: {e}")),
        Ok(m) if m.file_type().is_symlink() && !follow_symlinks => {
            return Err(anyhow!(
                "{shown}: is a symbolic link (refused; --follow-symlinks accepts it)"
            ))
        }
        Ok(_) => {
            let m = fs::metadata(dir).map_err(|e| anyhow!("{shown}: {e}"))?;
            if !m.is_dir() {
                return Err(anyhow!(
                    "{shown}: not a directory (a VDE switch is a directory; give a new or empty one)"
                ));
            }
            false
        }
    };
    let dir = fs::canonicalize(dir).map_err(|e| anyhow!("{shown}: {e}"))?;
    if !created {
        take_over(&dir)?;
    }
    // The longest name this switch binds, and what clients bind beside it.
    let longest = dir
        .join("port-99999")
        .as_os_str()
        .len()
        .max(dir.join(".99999-99999").as_os_str().len());
    if longest > SUN_PATH_MAX {
        if created {
            let _ = fs::remove_dir(&dir);
        }
        return Err(anyhow!(
            "{}: path too long for sockets in it ({longest} bytes with a socket name; at most \
             {SUN_PATH_MAX}): choose a shorter directory",
            dir.display()
        ));
    }
    Ok(Prepared { dir, created })
}

/// Checks an existing DIR: it may hold only sockets, and no switch may be
/// answering on its `ctl`; removes a stale `ctl` and stale port sockets.
fn take_over(dir: &Path) -> Result<()> {
    let shown = dir.display();
    let entries = fs::read_dir(dir).map_err(|e| anyhow!("{shown}: cannot list it: {e}"))?;
    let mut stale = Vec::new();
    for e in entries {
        let e = e.map_err(|e| anyhow!("{shown}: cannot list it: {e}"))?;
        let ty = e
            .file_type()
            .map_err(|err| anyhow!("{}: {err}", e.path().display()))?;
        let name = e.file_name();
        if !ty.is_socket() {
            return Err(anyhow!(
                "{shown}: not a VDE switch directory: it holds {}, which is not a socket \
                 (give a new or empty directory)",
                name.to_string_lossy()
            ));
        }
        let n = name.to_string_lossy();
        if n == "ctl"
            || n.strip_prefix("port-")
                .is_some_and(|d| d.parse::<u32>().is_ok())
        {
            stale.push(e.path());
        }
    }
    let ctl = dir.join("ctl");
    if ctl.exists() {
        match UnixStream::connect(&ctl) {
            Ok(_) => {
                return Err(anyhow!(
                    "{}: a VDE switch is already serving there (it accepts connections): stop \
                     it or choose another directory",
                    ctl.display()
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                eprintln!(
                    "shmif: vde {shown}: taking over from a switch that is gone ({} stale \
                     sockets removed)",
                    stale.len()
                );
            }
            Err(e) => return Err(anyhow!("{}: cannot check it: {e}", ctl.display())),
        }
    }
    for s in stale {
        fs::remove_file(&s).map_err(|e| anyhow!("{}: cannot remove it: {e}", s.display()))?;
    }
    Ok(())
}

/// Runs `shmif vde`.
pub fn run(args: Args) -> Result<ExitCode> {
    let stop = StopSignal::install()?;
    let mode = args.bus_opts.mode;
    // The bus first: a bad bus path leaves no directory behind.
    let iface = args.bus_opts.attach(&args.bus, None).map_err(lib_error)?;
    let bus = BusPort::new(iface, &args.bus)?;
    let prepared = prepare_dir(&args.dir, mode, args.bus_opts.follow_symlinks)?;
    let ctl = prepared.dir.join("ctl");
    let served = (|| -> Result<ExitCode> {
        let listener = UnixListener::bind(&ctl)
            .map_err(|e| anyhow!("{}: cannot listen: {e}", ctl.display()))?;
        fs::set_permissions(&ctl, fs::Permissions::from_mode(mode))
            .map_err(|e| anyhow!("{}: cannot set its mode: {e}", ctl.display()))?;
        let switch = VdeSwitch::new(listener, &prepared.dir, mode).context("the ctl socket")?;
        let mut engine = Engine::new(Forwarding::Hub);
        engine.add_essential(Box::new(bus));
        engine.add(Box::new(switch));
        say(&format!(
            "vde switch {} up on {}: serving",
            prepared.dir.display(),
            args.bus.display()
        ));
        let end = engine.run(&stop);
        engine.print_reports();
        // Dropping the ports removes their sockets.
        drop(engine);
        Ok(match end? {
            End::Signal => crate::cli::error::interrupted(),
            End::EssentialClosed => ExitCode::FAILURE,
        })
    })();
    let _ = fs::remove_file(&ctl);
    if prepared.created {
        if let Err(e) = fs::remove_dir(&prepared.dir) {
            eprintln!(
                "shmif: warning: {}: not removed: {e} (a client left a socket there?)",
                prepared.dir.display()
            );
        }
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_modes_allow_search_where_reading_is_allowed() {
        assert_eq!(dir_mode(0o600), 0o700);
        assert_eq!(dir_mode(0o660), 0o770);
        assert_eq!(dir_mode(0o644), 0o755);
    }
}
