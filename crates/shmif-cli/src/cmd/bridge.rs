//! `shmif bridge`: two buses as one Ethernet segment, through a learning
//! bridge: two [`BusPort`]s in an [`Engine`] with
//! [`Forwarding::Learning`].

use crate::bridge::bus_port::BusPort;
use crate::bridge::{End, Engine, Forwarding};
use crate::cli::error::lib_error;
use crate::cli::output::say;
use crate::cli::parse;
use crate::cli::signal::StopSignal;
use anyhow::{anyhow, Result};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Join two buses into one Ethernet segment with a learning bridge.
///
/// Attaches to BUS_A and BUS_B (each created if missing) as a
/// promiscuous interface and passes frames between them as an Ethernet
/// switch does: the source address of every frame is learnt behind the
/// bus it came from (forgotten after --ageing); a unicast frame crosses
/// only if its destination was last seen on the other bus, or not seen at
/// all; broadcast and multicast always cross. Frames between two stations
/// on the same bus stay there. A frame too large for the other bus (its
/// frame limit: 1514 bytes on a NetBSD v3 bus, more on an extended bus) is
/// dropped for it, counted, and warned about the first time.
///
/// Loops: there is no spanning tree. Two bridges between the same two
/// buses (or a ring of bridges and VXLAN tunnels) pass every broadcast
/// around for ever, at full speed, until one of them is stopped. A bridge
/// that sees an address move between the buses within a second warns
/// about it (once per address): stop one of the bridges.
///
/// Needs no privileges. Runs until SIGINT or SIGTERM, then prints each
/// side's counters to standard error. Prints one line to standard output
/// once it is bridging.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif bridge /tmp/netbsd.bus /tmp/lab.bus &          # rump kernels on one, hosts on the other\n  \
    shmif host /tmp/netbsd.bus --ip 10.0.0.1/24 --tcp-echo 7 &\n  \
    shmif ping /tmp/lab.bus --ip 10.0.0.2/24 10.0.0.1 -c 3  # across the bridge\n\n\
    Exit status: 130 when stopped by SIGINT or SIGTERM (it runs until then); 1 if a bus cannot be opened, both paths are the same \
    bus, or a bus fails while bridging.")]
pub struct Args {
    /// One bus file (created if missing).
    #[arg(value_name = "BUS_A")]
    pub bus_a: PathBuf,

    /// The other bus file (created if missing).
    #[arg(value_name = "BUS_B")]
    pub bus_b: PathBuf,

    /// How long a learnt address is trusted without being seen again, in
    /// seconds.
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse::seconds)]
    pub ageing: Duration,

    /// How the bus files are opened or created.
    #[command(flatten)]
    pub bus_opts: crate::cli::bus_opts::BusOpts,
}

/// Runs `shmif bridge`.
pub fn run(args: Args) -> Result<ExitCode> {
    let stop = StopSignal::install()?;
    let a = args.bus_opts.attach(&args.bus_a, None).map_err(lib_error)?;
    let b = args.bus_opts.attach(&args.bus_b, None).map_err(lib_error)?;
    if let (Ok(ma), Ok(mb)) = (
        std::fs::metadata(&args.bus_a),
        std::fs::metadata(&args.bus_b),
    ) {
        if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) {
            return Err(anyhow!(
                "{}: BUS_A and BUS_B are the same bus ({}): a bridge needs two",
                args.bus_b.display(),
                args.bus_a.display()
            ));
        }
    }
    let a = BusPort::new(a, &args.bus_a)?;
    let b = BusPort::new(b, &args.bus_b)?;
    say(&format!(
        "bridge {} <-> {}: bridging",
        args.bus_a.display(),
        args.bus_b.display()
    ));
    let mut engine = Engine::new(Forwarding::Learning {
        ageing: args.ageing,
    });
    engine.set_verbose_ports(false);
    let sa = engine.add_essential(Box::new(a));
    let sb = engine.add_essential(Box::new(b));
    let end = engine.run(&stop)?;
    let ca = engine.counters(sa).unwrap_or_default();
    let cb = engine.counters(sb).unwrap_or_default();
    let learnt = engine.fdb().len();
    engine.print_reports();
    eprintln!(
        "shmif: bridge: {} -> {}: {} frames ({} bytes); {} -> {}: {} frames ({} bytes); kept \
         on their side: {} on A, {} on B; too large for the other bus: {} from A, {} from B; \
         {learnt} addresses learnt",
        args.bus_a.display(),
        args.bus_b.display(),
        cb.out_frames,
        cb.out_bytes,
        args.bus_b.display(),
        args.bus_a.display(),
        ca.out_frames,
        ca.out_bytes,
        ca.filtered,
        cb.filtered,
        ca.oversized,
        cb.oversized,
    );
    Ok(match end {
        End::Signal => crate::cli::error::interrupted(),
        End::EssentialClosed => ExitCode::FAILURE,
    })
}
