//! `shmif tap`: the Linux kernel on a bus, through a TAP device.
//!
//! Opens (creating it if needed) a TAP device, an Ethernet interface whose
//! other end is a file descriptor, brings it up, attaches to the bus as a
//! promiscuous interface with the TAP's MAC address, and copies frames both
//! ways: what the kernel sends goes onto the bus (several frames ready at
//! once go as one batch, under one lock and one wake-up), and every frame
//! other peers put on the bus goes to the kernel. One thread waits on the
//! TAP, the bus's wake-up descriptor and the signals with one poll(2).
//!
//! The TAP is created without a packet-information header and with the
//! kernel's offloads switched off (so it never hands over a frame larger
//! than its MTU), with MTU 1500: a bus frame is at most 1514 bytes. With
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
/// A TAP this command creates has MTU 1500 and no offloads, so the kernel
/// hands over at most 1514-byte frames, the bus's limit; an existing TAP
/// with a larger MTU still works, but frames over 1514 bytes are dropped,
/// counted and warned about.
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
    Exit status: 0 after SIGINT/SIGTERM; 1 if the TAP cannot be opened (the message says which \
    privilege or device is missing) or the bus fails.")]
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

    /// How the bus file is opened or created.
    #[command(flatten)]
    pub bus_opts: super::bus_opts::BusOpts,
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
    use crate::cmd::capture::{poll_fds, StopSignals};
    use crate::cmd::dump::lib_error;
    use anyhow::{anyhow, Context as _, Result};
    use rustix::event::{PollFd, PollFlags};
    use rustix::io::Errno;
    use shmif::wire::{MAX_FRAME_LEN, MIN_FRAME_LEN};
    use shmif::{Interface, MacAddr};
    use std::fs::File;
    use std::io::{self, Write as _};
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::time::Duration;
    use tun_rs::{DeviceBuilder, Layer, SyncDevice};

    /// The MTU a created TAP gets: 1500 bytes of payload, so 1514-byte
    /// frames, the most a bus carries.
    const MTU: u16 = 1500;
    /// Longest interface name, without the terminating NUL (IFNAMSIZ - 1).
    const IFNAMSIZ_MAX: usize = 15;
    /// Frames read from the TAP and sent to the bus as one batch, at most.
    const TAP_BATCH: usize = 64;
    /// Frames moved from the bus to the TAP before looking at the TAP again.
    const BUS_BUDGET: usize = 256;
    /// Room for one read from the TAP: more than any frame the kernel can
    /// hand over, so that an oversized frame is seen whole and counted.
    const READ_ROOM: usize = 65_536;

    /// What the bridge has done, for the report.
    #[derive(Debug, Default)]
    struct Stats {
        to_bus_frames: u64,
        to_bus_bytes: u64,
        to_kernel_frames: u64,
        to_kernel_bytes: u64,
        oversized: u64,
        runts: u64,
        tap_write_errors: u64,
    }

    /// The TAP, and what this command did to get it.
    struct Tap {
        dev: SyncDevice,
        name: String,
        created: bool,
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
    fn open_tap(name: Option<&str>) -> Result<Tap> {
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
            builder = builder.mtu(MTU);
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
        let mtu = dev
            .mtu()
            .map_err(|e| anyhow!("TAP {name}: cannot read its MTU: {e}"))?;
        if mtu > MTU {
            eprintln!(
                "shmif: warning: TAP {name} has MTU {mtu}: frames over {MAX_FRAME_LEN} bytes \
                 cannot go on a bus and will be dropped (ip link set {name} mtu {MTU})"
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

    /// Moves frames from the bus to the kernel, at most [`BUS_BUDGET`];
    /// returns whether the budget ran out (more may be waiting).
    fn bus_to_kernel(iface: &Interface, tap: &Tap, stats: &mut Stats) -> Result<bool> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        for _ in 0..BUS_BUDGET {
            let Some(r) = iface.try_recv_into(&mut buf).map_err(lib_error)? else {
                return Ok(false);
            };
            match tap.dev.send(&buf[..r.len]) {
                Ok(_) => {
                    stats.to_kernel_frames += 1;
                    stats.to_kernel_bytes += r.len as u64;
                }
                Err(e) => {
                    // The kernel refused one frame (the TAP was taken down,
                    // or memory is short): it is lost, as on a wire.
                    if stats.tap_write_errors == 0 {
                        eprintln!(
                            "shmif: warning: TAP {}: the kernel refused a frame from the bus: \
                             {e} (further refusals are only counted)",
                            tap.name
                        );
                    }
                    stats.tap_write_errors += 1;
                }
            }
        }
        Ok(true)
    }

    /// Reads the frames the kernel has ready (at most [`TAP_BATCH`]) and
    /// sends them to the bus as one batch; returns whether the batch was
    /// full (more may be waiting).
    fn kernel_to_bus(
        iface: &Interface,
        tap: &Tap,
        room: &mut [u8],
        stats: &mut Stats,
    ) -> Result<bool> {
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(TAP_BATCH);
        let mut at = 0;
        let full = loop {
            if spans.len() == TAP_BATCH {
                break true;
            }
            let n = match tap.dev.recv(&mut room[at..at + READ_ROOM]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(anyhow!(
                        "TAP {}: cannot read from it: {e} (was it deleted?)",
                        tap.name
                    ))
                }
            };
            if n > MAX_FRAME_LEN {
                if stats.oversized == 0 {
                    eprintln!(
                        "shmif: warning: TAP {}: dropped a {n}-byte frame from the kernel: a bus \
                         carries at most {MAX_FRAME_LEN} (set the MTU to {MTU}; further drops \
                         are only counted)",
                        tap.name
                    );
                }
                stats.oversized += 1;
            } else if n < MIN_FRAME_LEN {
                stats.runts += 1;
            } else {
                spans.push((at, n));
                at += n;
            }
        };
        if !spans.is_empty() {
            let frames = spans.iter().map(|&(s, n)| &room[s..s + n]);
            iface.send_batch(frames).map_err(lib_error)?;
            stats.to_bus_frames += spans.len() as u64;
            stats.to_bus_bytes += spans.iter().map(|&(_, n)| n as u64).sum::<u64>();
        }
        Ok(full)
    }

    pub(super) fn run(args: Args) -> Result<ExitCode> {
        let signals = StopSignals::new().context("cannot catch SIGINT/SIGTERM")?;
        if let Some(ns) = &args.netns {
            enter_netns(ns)?;
        }
        // Check the bus before making a TAP, so that a bad path leaves no
        // device behind even for a moment.
        Interface::new()
            .with_open_options(args.bus_opts.open_options())
            .set_link(&args.bus)
            .map_err(lib_error)?;
        let tap = open_tap(args.tap.as_deref())?;
        let mac = tap
            .dev
            .mac_address()
            .map_err(|e| anyhow!("TAP {}: cannot read its MAC address: {e}", tap.name))?;
        let iface = args
            .bus_opts
            .attach(&args.bus, Some(MacAddr(mac)))
            .map_err(lib_error)?;
        iface.set_promiscuous(true);
        let wake = iface
            .wakeup_fd()
            .map_err(lib_error)?
            .ok_or_else(|| anyhow!("{}: no wake-up descriptor to poll", args.bus.display()))?;

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

        let mut stats = Stats::default();
        let mut room = vec![0u8; TAP_BATCH * MAX_FRAME_LEN + READ_ROOM];
        let (mut bus_pending, mut tap_pending) = (false, false);
        loop {
            let busy = bus_pending || tap_pending;
            let mut fds = [
                PollFd::from_borrowed_fd(signals.fd(), PollFlags::IN),
                PollFd::new(&tap.dev, PollFlags::IN),
                PollFd::new(&wake, PollFlags::IN),
            ];
            // Work left over from the last round: look without waiting.
            poll_fds(&mut fds, busy.then_some(Duration::ZERO)).context("poll")?;
            let ready = |f: &PollFd<'_>| !f.revents().is_empty();
            let (sig, tap_ready, bus_ready) = (ready(&fds[0]), ready(&fds[1]), ready(&fds[2]));
            if sig && signals.caught() {
                break;
            }
            if bus_ready || bus_pending {
                // Consume the wake-ups (and check the bus file is still the
                // one mapped) before reading the ring: a frame written after
                // this raises a new event.
                iface
                    .wait_for_wakeup(Some(Duration::ZERO))
                    .map_err(lib_error)?;
                bus_pending = bus_to_kernel(&iface, &tap, &mut stats)?;
            }
            if tap_ready || tap_pending {
                tap_pending = kernel_to_bus(&iface, &tap, &mut room, &mut stats)?;
            }
        }

        let c = iface.counters();
        let Tap { dev, name, created } = tap;
        drop(dev);
        drop(iface);
        let removed = if created {
            format!("; TAP {name} removed")
        } else {
            String::new()
        };
        eprintln!(
            "shmif: tap {name} <-> {}: kernel to bus {} frames ({} bytes), bus to kernel {} \
             frames ({} bytes); dropped: {} over {MAX_FRAME_LEN} bytes, {} runts, {} refused by \
             the kernel; bus overruns {} ({} bytes lost), malformed {}{removed}",
            args.bus.display(),
            stats.to_bus_frames,
            stats.to_bus_bytes,
            stats.to_kernel_frames,
            stats.to_kernel_bytes,
            stats.oversized,
            stats.runts,
            stats.tap_write_errors,
            c.overruns,
            c.overrun_bytes,
            c.malformed,
        );
        Ok(ExitCode::SUCCESS)
    }
}
