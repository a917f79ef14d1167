//! `shmif`: the command-line tool for shmif buses.
//!
//! A thin layer over the `shmif` library: each subcommand is one module in
//! `cmd/`, with its arguments (clap) and a `run` function.

use clap::{CommandFactory as _, Parser, Subcommand};
use std::process::ExitCode;

mod bridge;
mod cli;
mod cmd;
mod net;
mod summary;

/// Work with NetBSD shmif buses: shared-memory Ethernet segments in a 1 MiB
/// file that processes, rump kernels and VMs attach to without root.
#[derive(Debug, Parser)]
#[command(name = "shmif", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Examples:\n  \
    shmif demo                                  # two TCP/IP hosts on a new bus, end to end\n  \
    shmif dump -p - /tmp/bus | tcpdump -n -e -r -  # what is on a bus, as pcap\n  \
    shmif listen /tmp/bus -c 5                  # print the next 5 frames\n\n\
    Run `shmif help <command>` for each command's options and examples.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Create(cmd::create::Args),
    Dump(cmd::dump::Args),
    Send(cmd::send::Args),
    Listen(cmd::listen::Args),
    Host(cmd::host::Args),
    Ping(cmd::ping::Args),
    TcpSend(cmd::tcp_send::Args),
    Demo(cmd::demo::Args),
    Capture(cmd::capture::Args),
    Tap(cmd::tap::Args),
    Vde(cmd::vde::Args),
    Qemu(cmd::qemu::Args),
    Vxlan(cmd::vxlan::Args),
    Bridge(cmd::bridge::Args),
    Bench(cmd::bench::Args),
    Top(cmd::top::Args),
    Completions(cmd::completions::Args),
    Man(cmd::man::Args),
    #[command(hide = true)]
    BenchWorker(cmd::bench::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Create(a) => cmd::create::run(a),
        Command::Dump(a) => cmd::dump::run(a),
        Command::Send(a) => cmd::send::run(a),
        Command::Listen(a) => cmd::listen::run(a),
        Command::Host(a) => cmd::host::run(a),
        Command::Ping(a) => cmd::ping::run(a),
        Command::TcpSend(a) => cmd::tcp_send::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Capture(a) => cmd::capture::run(a),
        Command::Tap(a) => cmd::tap::run(a),
        Command::Vxlan(a) => cmd::vxlan::run(a),
        Command::Bridge(a) => cmd::bridge::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Vde(a) => cmd::vde::run(a),
        Command::Qemu(a) => cmd::qemu::run(a),
        Command::Top(a) => cmd::top::run(a),
        Command::Completions(a) => cmd::completions::run(a, Cli::command()),
        Command::Man(a) => cmd::man::run(a, Cli::command()),
        Command::BenchWorker(a) => cmd::bench::run_worker(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shmif: {e:#}");
            ExitCode::FAILURE
        }
    }
}
