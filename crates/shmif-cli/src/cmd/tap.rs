//! `shmif tap`: the Linux kernel on a bus, through a TAP device.
//!
//! Opens (creating it if needed) a TAP device, an Ethernet interface whose
//! other end is a file descriptor, brings it up, attaches to the bus as a
//! promiscuous interface with the TAP's MAC address, and copies frames both
//! ways: what the kernel sends goes onto the bus (several frames ready at
//! once go as one batch, under one lock and one wake-up), and every frame
//! other peers put on the bus goes to the kernel. The TAP and the bus are
//! the two ports of a [`crate::bridge::Engine`], which owns the loop, the
//! batching, the size policy and the counters; this module only opens the
//! TAP and reads and writes it.
//!
//! The TAP is created without a packet-information header and with the
//! kernel's offloads switched off (so it never hands over a frame larger
//! than its MTU), with MTU 1500 (`--mtu`): a NetBSD bus frame is at most
//! 1514 bytes; an extended bus allows up to its frame limit less 14. With
//! `--netns` the thread enters the named network namespace first, so the
//! TAP is created in it (and its file descriptor, like any, keeps working
//! from here). A TAP this command created disappears when it exits.

use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// Bridge a Linux TAP device to a shmif bus: the kernel joins the bus.
///
/// Opens the TAP device NAME, creating it if it does not exist (without
/// --tap the kernel picks the next free tapN), brings it up, and bridges it
/// to BUS (created if missing): every frame the kernel sends on the TAP
/// goes onto the bus, and every frame another peer writes to the bus goes
/// to the kernel, whoever it is addressed to (the bus side is promiscuous
/// and uses the TAP's MAC address). Give the TAP addresses with `ip` as
/// for any interface; the kernel then talks to rump kernels, `shmif host`
/// and other TAPs on the bus.
///
/// A TAP this command creates has MTU 1500 (or --mtu) and no offloads, so
/// the kernel hands over at most MTU + 14-byte frames: 1514, a NetBSD bus's
/// limit, unless the bus is an extended one (`shmif create`) that carries
/// more. An existing TAP with a larger MTU still works, but frames over the
/// bus's limit are dropped, counted and warned about.
///
/// With --netns the TAP is created in (or opened from) the network
/// namespace NAME (`ip netns add NAME` makes one; a path such as
/// /proc/PID/ns/net works too). Needs root, or CAP_NET_ADMIN to create a
/// TAP (and CAP_SYS_ADMIN to enter a namespace); a TAP made persistent for
/// this user (`ip tuntap add mode tap user $USER`) can be opened without.
///
/// Runs until SIGINT or SIGTERM, then removes a TAP it created and prints
/// its counters to standard error. Prints one line to standard output
/// once the bridge is up.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples (as root):\n  \
    shmif tap /tmp/bus --tap shmif0 &                   # the kernel joins the bus as shmif0\n  \
    ip addr add 10.0.0.1/24 dev shmif0\n  \
    shmif ping /tmp/bus --ip 10.0.0.2/24 10.0.0.1 -c 3  # a userspace stack pings the kernel\n\n  \
    ip netns add red\n  \
    shmif tap /tmp/bus --tap shm-red --netns red &      # a second kernel: a namespace's\n  \
    ip -n red addr add 10.0.0.3/24 dev shm-red\n  \
    ip netns exec red ping -c 3 10.0.0.1                # kernel to kernel across the bus\n\n\
    Exit status: 130 when stopped by SIGINT or SIGTERM (it runs until then); 1 if the TAP cannot \
    be opened (the message says which privilege or device is missing) or the bus fails; 2 on a \
    usage error.")]
pub struct Args {
    /// The bus file (created if missing).
    #[arg(value_name = "BUS")]
    pub bus: PathBuf,

    /// The TAP device's name (at most 15 bytes; `%d` is replaced by the
    /// kernel with the first free number) [default: the kernel's next free
    /// tapN].
    #[arg(long, value_name = "NAME")]
    pub tap: Option<String>,

    /// Create (or open) the TAP in this network namespace: a name under
    /// /run/netns (as `ip netns add NAME` makes) or a path to a namespace
    /// file such as /proc/PID/ns/net.
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,

    /// MTU of a TAP this command creates: 68 to the bus's frame limit less
    /// 14 (1500 on a NetBSD bus; up to 65535 on an extended bus made with
    /// `shmif create --max-frame 65549`).
    #[arg(long, value_name = "BYTES", default_value_t = 1500,
          value_parser = clap::value_parser!(u16).range(68..))]
    pub mtu: u16,

    /// How the bus file is opened or created.
    #[command(flatten)]
    pub bus_opts: crate::cli::bus_opts::BusOpts,
}

/// Runs `shmif tap`.
#[cfg(not(target_os = "linux"))]
pub fn run(_args: Args) -> Result<ExitCode> {
    Err(anyhow::anyhow!(
        "shmif tap: TAP devices are only supported on Linux here"
    ))
}

/// Runs `shmif tap`.
#[cfg(target_os = "linux")]
pub fn run(args: Args) -> Result<ExitCode> {
    linux::run(args)
}

#[cfg(target_os = "linux")]
mod linux {
    use super::Args;
    use crate::bridge::bus_port::BusPort;
    use crate::bridge::{read_ready, Ctx, End, Engine, Forwarding, Port, Service};
    use crate::cli::error::lib_error;
    use crate::cli::signal::StopSignal;
    use anyhow::{anyhow, Context as _, Result};
    use rustix::event::PollFlags;
    use rustix::io::Errno;
    use shmif::{Interface, MacAddr};
    use std::cell::Cell;
    use std::fs::File;
    use std::io::{self, Write as _};
    use std::os::fd::{AsFd, BorrowedFd};
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::rc::Rc;
    use tun_rs::{DeviceBuilder, Layer, SyncDevice};

    /// Longest interface name, without the terminating NUL (IFNAMSIZ - 1).
    const IFNAMSIZ_MAX: usize = 15;
    /// Room for one read from the TAP: more than any frame the kernel can
    /// hand over, so that an oversized frame is seen whole and counted.
    /// (The largest MTU is 65,535: frames of up to 65,549 bytes.)
    const READ_ROOM: usize = 65_536 + 64;

    /// The TAP, and what this command did to get it.
    struct Tap {
        dev: SyncDevice,
        name: String,
        created: bool,
    }

    /// The TAP as a port of the engine.
    struct TapPort {
        tap: Rc<Tap>,
        /// Frames the kernel refused (shared with the report).
        refused: Rc<Cell<u64>>,
    }

    impl Port for TapPort {
        fn name(&self) -> String {
            format!("TAP {}", self.tap.name)
        }

        fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
            vec![(self.tap.dev.as_fd(), PollFlags::IN)]
        }

        fn max_frame(&self) -> usize {
            READ_ROOM
        }

        fn service(&mut self, ctx: &mut Ctx<'_>) -> Result<Service> {
            let dev = &self.tap.dev;
            read_ready(ctx, READ_ROOM, |room| dev.recv(room).map(Some)).map_err(|e| {
                anyhow!(
                    "TAP {}: cannot read from it: {e} (was it deleted?)",
                    self.tap.name
                )
            })
        }

        fn send_batch(&mut self, frames: &[&[u8]]) -> Result<()> {
            for f in frames {
                if let Err(e) = self.tap.dev.send(f) {
                    // The kernel refused one frame (the TAP was taken
                    // down, or memory is short): it is lost, as on a wire.
                    if self.refused.get() == 0 {
                        eprintln!(
                            "shmif: warning: TAP {}: the kernel refused a frame from the bus: \
                             {e} (further refusals are only counted)",
                            self.tap.name
                        );
                    }
                    self.refused.set(self.refused.get() + 1);
                }
            }
            Ok(())
        }
    }

    /// The one-line message for a failure to open or create the TAP.
    fn open_error(name: &str, existed: bool, e: io::Error) -> anyhow::Error {
        let what = if existed {
            format!("cannot open TAP {name}")
        } else {
            format!("cannot create TAP {name}")
        };
        match Errno::from_io_error(&e) {
            Some(Errno::PERM) | Some(Errno::ACCESS) if existed => anyhow!(
                "{what}: permission denied: needs root or CAP_NET_ADMIN, or a TAP made \
                 persistent for this user (ip tuntap add dev {name} mode tap user $USER)"
            ),
            Some(Errno::PERM) | Some(Errno::ACCESS) => {
                anyhow!("{what}: permission denied: needs root or CAP_NET_ADMIN")
            }
            Some(Errno::NOENT) | Some(Errno::NODEV) | Some(Errno::NXIO)
                if !Path::new("/dev/net/tun").exists() =>
            {
                let also = if has_net_admin() {
                    ""
                } else {
                    "; and this process also lacks root or CAP_NET_ADMIN, which creating a TAP needs"
                };
                anyhow!(
                    "{what}: /dev/net/tun is missing: load the tun module (modprobe tun), \
                     or give this container the device{also}"
                )
            }
            Some(Errno::BUSY) => {
                anyhow!("{what}: device busy: another process has it open, or {name} is not a TAP")
            }
            Some(Errno::INVAL) if existed => anyhow!(
                "{what}: {name} exists but is not a TAP device with these settings (a TUN, a \
                 multi-queue TAP, or another kind of interface): {e}"
            ),
            _ => anyhow!("{what}: {e}"),
        }
    }

    /// Whether this process has CAP_NET_ADMIN (root normally has).
    fn has_net_admin() -> bool {
        rustix::thread::capabilities(None)
            .map(|c| {
                c.effective
                    .contains(rustix::thread::CapabilitySet::NET_ADMIN)
            })
            .unwrap_or(false)
    }

    /// Enters the network namespace `ns` (this thread, and the threads it
    /// starts from now on).
    fn enter_netns(ns: &str) -> Result<()> {
        let path = if ns.contains('/') {
            PathBuf::from(ns)
        } else {
            Path::new("/run/netns").join(ns)
        };
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound && !ns.contains('/') {
                anyhow!(
                    "--netns {ns}: no such network namespace ({} does not exist; \
                     `ip netns add {ns}` makes one)",
                    path.display()
                )
            } else {
                anyhow!("--netns {ns}: cannot open {}: {e}", path.display())
            }
        })?;
        use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
        use std::os::fd::AsFd as _;
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).map_err(|e| {
            match e {
                Errno::PERM => anyhow!(
                    "--netns {ns}: cannot enter the network namespace: permission denied: needs \
                 root or CAP_SYS_ADMIN"
                ),
                Errno::INVAL => anyhow!(
                    "--netns {ns}: {} is not a network namespace",
                    path.display()
                ),
                e => anyhow!("--netns {ns}: cannot enter the network namespace: {e}"),
            }
        })
    }

    /// Whether an interface called `name` exists in this thread's network
    /// namespace.
    fn interface_exists(name: &str) -> Result<bool> {
        use rustix::net::{socket, AddressFamily, SocketType};
        let sock = socket(AddressFamily::INET, SocketType::DGRAM, None)
            .context("cannot open a socket to look up network interfaces")?;
        match rustix::net::netdevice::name_to_index(&sock, name) {
            Ok(_) => Ok(true),
            Err(Errno::NODEV) => Ok(false),
            Err(e) => Err(anyhow!("cannot look up interface {name}: {e}")),
        }
    }

    /// Opens or creates the TAP (in this thread's network namespace),
    /// brings it up and makes its descriptor non-blocking.
    fn open_tap(name: Option<&str>, mtu: u16, max_frame: usize) -> Result<Tap> {
        let shown = name.unwrap_or("tap%d");
        if let Some(n) = name {
            if n.is_empty() || n.len() > IFNAMSIZ_MAX || n.contains(['/', ' ', '\0']) {
                return Err(anyhow!(
                    "--tap {n:?}: not a valid interface name (1 to {IFNAMSIZ_MAX} bytes, no '/', \
                     spaces or NUL)"
                ));
            }
        }
        // A name with %d is a pattern: the kernel makes a new device.
        let existed = match name {
            Some(n) if !n.contains('%') => interface_exists(n)?,
            _ => false,
        };
        let mut builder = DeviceBuilder::new()
            .layer(Layer::L2)
            .packet_information(false)
            .offload(false);
        if let Some(n) = name {
            builder = builder.name(n);
        }
        if !existed {
            builder = builder.mtu(mtu);
        }
        let dev = builder
            .build_sync()
            .map_err(|e| open_error(shown, existed, e))?;
        let name = dev
            .name()
            .map_err(|e| anyhow!("TAP {shown}: cannot read its name: {e}"))?;
        if !dev
            .is_running()
            .map_err(|e| anyhow!("TAP {name}: cannot read its flags: {e}"))?
        {
            dev.enabled(true)
                .map_err(|e| match Errno::from_io_error(&e) {
                    Some(Errno::PERM) | Some(Errno::ACCESS) => anyhow!(
                        "TAP {name}: cannot bring it up: permission denied: needs root or \
                     CAP_NET_ADMIN (or bring it up first: ip link set {name} up)"
                    ),
                    _ => anyhow!("TAP {name}: cannot bring it up: {e}"),
                })?;
        }
        let dev_mtu = dev
            .mtu()
            .map_err(|e| anyhow!("TAP {name}: cannot read its MTU: {e}"))?;
        let fits = max_frame - 14;
        if usize::from(dev_mtu) > fits {
            eprintln!(
                "shmif: warning: TAP {name} has MTU {dev_mtu}: frames over {max_frame} bytes \
                 cannot go on this bus and will be dropped (ip link set {name} mtu {fits})"
            );
        }
        dev.set_nonblocking(true)
            .map_err(|e| anyhow!("TAP {name}: cannot make it non-blocking: {e}"))?;
        Ok(Tap {
            dev,
            name,
            created: !existed,
        })
    }

    pub(super) fn run(args: Args) -> Result<ExitCode> {
        let stop = StopSignal::install()?;
        if let Some(ns) = &args.netns {
            enter_netns(ns)?;
        }
        // Check the bus before making a TAP, so that a bad path leaves no
        // device behind even for a moment.
        let probe = Interface::new().with_open_options(args.bus_opts.open_options());
        probe.set_link(&args.bus).map_err(lib_error)?;
        let max_frame = probe.max_frame_len();
        drop(probe);
        if usize::from(args.mtu) + 14 > max_frame {
            return Err(anyhow!(
                "--mtu {}: frames of {} bytes do not fit this bus, whose limit is {max_frame} \
                 (at most --mtu {}; `shmif create --max-frame` makes buses with larger frames)",
                args.mtu,
                usize::from(args.mtu) + 14,
                max_frame - 14
            ));
        }
        let tap = Rc::new(open_tap(args.tap.as_deref(), args.mtu, max_frame)?);
        let mac = tap
            .dev
            .mac_address()
            .map_err(|e| anyhow!("TAP {}: cannot read its MAC address: {e}", tap.name))?;
        let iface = args
            .bus_opts
            .attach(&args.bus, Some(MacAddr(mac)))
            .map_err(lib_error)?;
        let bus = BusPort::new(iface, &args.bus)?;
        let refused = Rc::new(Cell::new(0));

        let ns = args
            .netns
            .as_deref()
            .map(|n| format!(" in netns {n}"))
            .unwrap_or_default();
        let how = if tap.created { "created" } else { "existing" };
        println!(
            "tap {} ({}, {how}){ns} up on {}: bridging",
            tap.name,
            MacAddr(mac),
            args.bus.display()
        );
        let _ = io::stdout().flush();

        let mut engine = Engine::new(Forwarding::Hub);
        engine.set_verbose_ports(false);
        let bus_slot = engine.add_essential(Box::new(bus));
        let tap_slot = engine.add_essential(Box::new(TapPort {
            tap: tap.clone(),
            refused: refused.clone(),
        }));
        // A failing port (the bus gone, the TAP deleted) ends the bridge
        // with its error.
        let end = engine.run(&stop)?;
        let bus_counters = engine.counters(bus_slot).unwrap_or_default();
        let tap_counters = engine.counters(tap_slot).unwrap_or_default();
        let lib = engine
            .take_port(bus_slot)
            .map(|p| p.report())
            .unwrap_or_default();
        drop(engine);
        let Ok(Tap { dev, name, created }) = Rc::try_unwrap(tap) else {
            return Err(anyhow!("TAP still in use"));
        };
        drop(dev);
        let removed = if created {
            format!("; TAP {name} removed")
        } else {
            String::new()
        };
        eprintln!(
            "shmif: tap {name} <-> {}: kernel to bus {} frames ({} bytes), bus to kernel {} \
             frames ({} bytes); dropped: {} over {max_frame} bytes, {} runts, {} refused by \
             the kernel; {lib}{removed}",
            args.bus.display(),
            bus_counters.out_frames,
            bus_counters.out_bytes,
            tap_counters.out_frames,
            tap_counters.out_bytes,
            tap_counters.oversized,
            tap_counters.runts,
            refused.get(),
        );
        Ok(match end {
            End::Signal => crate::cli::error::interrupted(),
            End::EssentialClosed => ExitCode::FAILURE,
        })
    }
}
