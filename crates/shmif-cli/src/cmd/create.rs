//! `shmif create`: make an extended bus (a format of ours: larger ring,
//! jumbo frames; see the library's `EXTENDED-FORMAT.md`).

use crate::cli::error::lib_error;
use crate::cli::parse;
use std::path::PathBuf;
use std::process::ExitCode;

/// Create an extended bus: a ring of up to 1 GiB carrying frames of up to
/// 65,549 bytes, for peers of this project only.
///
/// The file gets its own magic, so a NetBSD rump kernel refuses it ("not
/// magical") rather than misreading it. Every other subcommand attaches to
/// it as to any bus and reads its size and frame limit from its header.
/// The path must not exist.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif create /tmp/fast --size 64M --max-frame 65549    # jumbo frames (TAP MTU 65535)\n  \
    shmif create /tmp/big --size 1G --max-frame 9014 --mode 660\n  \
    shmif host /tmp/fast --ip 10.0.0.1/24 &                # then use it as any bus")]
pub struct Args {
    /// The bus file to create (must not exist).
    #[arg(value_name = "PATH")]
    pub bus: PathBuf,

    /// Size of the bus file: 1M to 1G in whole 4K pages (K, M, G suffixes;
    /// 8 KiB of it is header).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse::bus_size)]
    pub size: u64,

    /// Longest frame the bus carries, Ethernet header included, no FCS:
    /// 14 to 65549 (a TAP MTU of 65535 plus 14).
    #[arg(long, value_name = "BYTES", default_value_t = 65_549,
          value_parser = clap::value_parser!(u32).range(14..=65_549))]
    pub max_frame: u32,

    /// Permission bits, in octal, of the new file (default: only your own
    /// processes may join).
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse::mode)]
    pub mode: u32,
}

/// Runs `shmif create`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = shmif::OpenOptions::new().mode(args.mode);
    let bus = shmif::Bus::create(&args.bus, args.size, args.max_frame, &opts).map_err(lib_error)?;
    let g = bus.geometry();
    eprintln!(
        "shmif create: {}: extended bus of {} bytes (ring {} bytes), frames up to {} bytes",
        args.bus.display(),
        args.size,
        g.size,
        g.max_frame()
    );
    Ok(ExitCode::SUCCESS)
}
