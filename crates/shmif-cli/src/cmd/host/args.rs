//! `shmif host`'s arguments: the options, the actions in command-line
//! order (a parser of their own), and the settings derived from them.

use crate::cli::parse;
use crate::net::ping::PingOptions;
use crate::net::transfer::TcpSendOptions;
use crate::net::{self};
use anyhow::Result;
use clap::{Arg, ArgAction, ArgMatches, FromArgMatches};
use smoltcp::wire::IpCidr;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Run a TCP/IP host on a bus: serve ports, and optionally ping and send
/// to other hosts.
///
/// The host attaches to the bus as a new interface, answers ARP and ping
/// (ICMP echo, IPv4 and IPv6, with IPv6 neighbour discovery), and serves
/// the ports given: a TCP sink that checks what it receives against the
/// `shmif tcp-send` pattern, TCP and UDP echo. It prints one line when it
/// is up and one per finished TCP connection, on standard output.
///
/// Once up, it carries out the actions given by --ping, --tcp-send and
/// --tcp-send-echo, one after the other in command-line order, while it
/// goes on serving (and answering ARP and ping). Each prints what
/// `shmif ping` or `shmif tcp-send` would print; then a line `actions
/// done: N of M succeeded` (`actions interrupted: ...` on a signal). A
/// ping succeeds if a reply came back and none had wrong data; a transfer
/// if every byte was acknowledged (and, for --tcp-send-echo, came back
/// intact).
///
/// Before it serves, the host checks that no other interface on the bus
/// has its addresses (an ARP probe, RFC 5227; IPv6 duplicate address
/// detection, RFC 4862; about 0.4 s) and refuses to start if one has,
/// naming its MAC address (--no-dad skips the check). An empty existing
/// file is made a bus, with the permissions of --mode.
///
/// With --exit-when-done the host detaches after the actions and exits 0
/// if all succeeded, 1 otherwise. Without it, it serves until SIGINT or
/// SIGTERM, then detaches and exits 130.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif host /tmp/bus --ip 10.0.0.1/24 --ip6 fd00::1/64 --tcp-sink 9000 --tcp-echo 7\n  \
    shmif ping /tmp/bus --ip 10.0.0.2/24 10.0.0.1 -c 3     # from another terminal\n  \
    shmif tcp-send /tmp/bus --ip 10.0.0.2/24 10.0.0.1:9000 --megabytes 100\n\n  \
    # a second host: pings the first over IPv4 and IPv6, sends it 100 MiB, exits\n  \
    shmif host /tmp/bus --ip 10.0.0.2/24 --ip6 fd00::2/64 \\\n      \
    --ping 10.0.0.1 --ping fd00::1 --ping-count 3 --ping-interval 0.01 \\\n      \
    --tcp-send 10.0.0.1:9000 --megabytes 100 --exit-when-done\n  \
    # through the first host's echo over IPv6, every byte checked on return\n  \
    shmif host /tmp/bus --ip6 fd00::3/64 --tcp-send-echo '[fd00::1]:7' --megabytes 5 --exit-when-done\n  \
    # latency: 1000 back-to-back pings, summary only\n  \
    shmif host /tmp/bus --ip 10.0.0.4/24 --ping 10.0.0.1 --ping-count 1000 --ping-interval 0 \\\n      \
    --ping-quiet --exit-when-done\n\n\
    Exit status: 0 when --exit-when-done and every action succeeded; 1 when an action failed, an \
    address is taken on the bus, or on an error; 2 on a usage error; 130 when stopped by SIGINT or \
    SIGTERM.")]
pub struct Args {
    #[command(flatten)]
    pub stack: net::StackArgs,
    /// Serve TCP echo on PORT: send back everything received (repeatable).
    #[arg(long, value_name = "PORT", value_parser = parse::port)]
    pub tcp_echo: Vec<u16>,
    /// Serve a TCP sink on PORT: receive and count, check the bytes against
    /// the `shmif tcp-send` pattern, and report each connection's bytes,
    /// seconds, MiB/s and verdict (repeatable).
    #[arg(long, value_name = "PORT", value_parser = parse::port)]
    pub tcp_sink: Vec<u16>,
    /// Serve UDP echo on PORT: send every datagram back (repeatable).
    #[arg(long, value_name = "PORT", value_parser = parse::port)]
    pub udp_echo: Vec<u16>,
    /// Skip duplicate address detection: by default the host first asks
    /// the bus whether its addresses are taken (an ARP probe as RFC 5227
    /// has it, IPv6 DAD as RFC 4862 has it) and refuses to start, naming
    /// the MAC address that has one, if so.
    #[arg(long)]
    pub no_dad: bool,
    /// Connections each TCP port serves at the same time (one that waits
    /// only for the peer's ACK of the host's FIN no longer counts).
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub backlog: u16,
    /// Size of each TCP socket's send and receive buffer, in KiB.
    /// [default: 512; on an extended bus, 32 of its largest frames if
    /// that is more (2 MiB with 64 KiB frames)]
    #[arg(long, value_name = "KIB")]
    pub tcp_buffer: Option<usize>,
    /// What to do once up, in command-line order.
    #[command(flatten)]
    pub actions: Actions,
    /// Echo requests each --ping sends.
    #[arg(long, default_value_t = 5, value_name = "N", help_heading = ACTIONS, value_parser = crate::cli::parse::count)]
    pub ping_count: u64,
    /// Seconds between a --ping's requests; 0 sends each as soon as the
    /// previous reply is in (or has timed out).
    #[arg(long, default_value = "1", value_name = "SECONDS", help_heading = ACTIONS, value_parser = parse::seconds_to_an_hour)]
    pub ping_interval: Duration,
    /// Bytes of data in each echo request (after the 8-byte ICMP header).
    #[arg(long, default_value_t = 56, value_name = "SIZE", help_heading = ACTIONS)]
    pub ping_size: usize,
    /// Seconds to wait for each echo reply.
    #[arg(long, default_value = "2", value_name = "SECONDS", help_heading = ACTIONS, value_parser = parse::seconds_to_an_hour)]
    pub ping_timeout: Duration,
    /// Print only each --ping's summary, not a line per reply.
    #[arg(long, help_heading = ACTIONS)]
    pub ping_quiet: bool,
    /// How much each --tcp-send and --tcp-send-echo sends, in mebibytes
    /// (1 MiB = 1,048,576 bytes); fractions are fine.
    #[arg(short = 'm', long, default_value_t = 10.0, value_name = "N", help_heading = ACTIONS, value_parser = parse::megabytes, allow_negative_numbers = true)]
    pub megabytes: f64,
    /// Give a transfer up after this many seconds without progress.
    #[arg(long, default_value = "10", value_name = "SECONDS", help_heading = ACTIONS, value_parser = parse::seconds_to_an_hour)]
    pub tcp_timeout: Duration,
    /// Detach and exit once the actions are done: 0 if all succeeded, 1
    /// otherwise.
    #[arg(long, help_heading = ACTIONS)]
    pub exit_when_done: bool,
}

/// The help heading of the action options.
const ACTIONS: &str = "Actions (once up, in command-line order)";

/// One thing the host does once it is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ping DEST (`--ping`).
    Ping(IpAddr),
    /// Send the test pattern to DEST:PORT (`--tcp-send`), expecting it
    /// all back if `echo` (`--tcp-send-echo`).
    TcpSend {
        /// The server.
        dest: SocketAddr,
        /// Whether the server must echo the whole stream back.
        echo: bool,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Ping(d) => write!(f, "--ping {d}"),
            Action::TcpSend { dest, echo: false } => write!(f, "--tcp-send {dest}"),
            Action::TcpSend { dest, echo: true } => write!(f, "--tcp-send-echo {dest}"),
        }
    }
}

/// The host's actions in command-line order. Its own [`clap::Args`]
/// implementation reads where each option stood, which the derived one
/// cannot: `--ping A --tcp-send B --ping C` runs in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions(pub Vec<Action>);

impl clap::Args for Actions {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        /// A repeatable option `--LONG VALUE` (id ID), under the actions
        /// heading.
        fn action(id: &'static str, long: &'static str, value: &'static str) -> Arg {
            Arg::new(id)
                .long(long)
                .value_name(value)
                .action(ArgAction::Append)
                .help_heading(ACTIONS)
        }
        cmd.arg(
            action("ping", "ping", "DEST")
                .value_parser(clap::value_parser!(IpAddr))
                .help("Ping DEST (IPv4 or IPv6) with --ping-count requests (repeatable)"),
        )
        .arg(
            action("tcp_send", "tcp-send", "DEST:PORT")
                .value_parser(parse::socket_addr)
                .help(
                    "Send --megabytes of the test pattern to a TCP server (a sink) at \
                     DEST:PORT, or [DEST]:PORT for IPv6, as `shmif tcp-send` does (repeatable)",
                ),
        )
        .arg(
            action("tcp_send_echo", "tcp-send-echo", "DEST:PORT")
                .value_parser(parse::socket_addr)
                .help(
                    "Like --tcp-send, to an echo server: fail unless the whole stream comes \
                     back intact (`shmif tcp-send --expect-echo`; repeatable)",
                ),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Actions {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        fn placed<T: Clone + Send + Sync + 'static>(
            m: &ArgMatches,
            id: &str,
            make: impl Fn(T) -> Action,
        ) -> Vec<(usize, Action)> {
            match (m.indices_of(id), m.get_many::<T>(id)) {
                (Some(at), Some(values)) => at.zip(values.cloned().map(make)).collect(),
                _ => Vec::new(),
            }
        }
        let mut all = placed(m, "ping", Action::Ping);
        all.extend(placed(m, "tcp_send", |dest| Action::TcpSend {
            dest,
            echo: false,
        }));
        all.extend(placed(m, "tcp_send_echo", |dest| Action::TcpSend {
            dest,
            echo: true,
        }));
        all.sort_by_key(|(at, _)| *at);
        Ok(Actions(all.into_iter().map(|(_, a)| a).collect()))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args {
    pub(super) fn ping_options(&self, dest: IpAddr) -> PingOptions {
        PingOptions {
            dest,
            count: Some(self.ping_count),
            interval: self.ping_interval,
            size: self.ping_size,
            timeout: self.ping_timeout,
            quiet: self.ping_quiet,
            json: false,
        }
    }

    pub(super) fn tcp_options(&self, dest: SocketAddr, echo: bool) -> TcpSendOptions {
        TcpSendOptions {
            dest,
            megabytes: self.megabytes,
            expect_echo: echo,
            tcp_buffer: self.tcp_buffer,
            timeout: self.tcp_timeout.max(Duration::from_millis(1)),
            json: false,
            progress: false,
        }
    }

    /// The TCP ports served, each once: a port given twice (`--tcp-sink
    /// 9000 --tcp-echo 9000`) would leave one service unreachable.
    pub(super) fn check_ports(&self) -> Result<(), String> {
        let mut seen: Vec<(u16, &str)> = Vec::new();
        let tcp = (self.tcp_sink.iter().map(|p| (*p, "--tcp-sink")))
            .chain(self.tcp_echo.iter().map(|p| (*p, "--tcp-echo")));
        for (port, flag) in tcp {
            if let Some((_, first)) = seen.iter().find(|(p, _)| *p == port) {
                return Err(format!(
                    "TCP port {port} is given to both {first} and {flag}: one port serves one service"
                ));
            }
            seen.push((port, flag));
        }
        let mut udp = self.udp_echo.clone();
        udp.sort_unstable();
        if let Some(w) = udp.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("UDP port {} is given to --udp-echo twice", w[0]));
        }
        Ok(())
    }

    /// Checks every action against the host's addresses, before attaching.
    pub(super) fn check_actions(&self, addrs: &[IpCidr]) -> Result<()> {
        for a in &self.actions.0 {
            match *a {
                Action::Ping(d) => self.ping_options(d).check(
                    &a.to_string(),
                    "--ping-size",
                    addrs,
                    &self.stack.bus,
                )?,
                Action::TcpSend { dest, echo } => {
                    self.tcp_options(dest, echo).check(&a.to_string(), addrs)?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        host: Args,
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(["shmif-host"].iter().chain(args)).map(|c| c.host)
    }

    #[test]
    fn actions_keep_command_line_order() {
        let a = parse(&[
            "/tmp/bus",
            "--ip",
            "10.0.0.2/24",
            "--tcp-send",
            "10.0.0.1:9000",
            "--ping",
            "10.0.0.1",
            "--megabytes",
            "2",
            "--tcp-send-echo",
            "[fd00::1]:7",
            "--ping",
            "fd00::1",
            "--exit-when-done",
        ])
        .unwrap();
        let shown: Vec<String> = a.actions.0.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            shown,
            [
                "--tcp-send 10.0.0.1:9000",
                "--ping 10.0.0.1",
                "--tcp-send-echo [fd00::1]:7",
                "--ping fd00::1"
            ]
        );
        assert!(a.exit_when_done);
        assert_eq!(a.megabytes, 2.0);
        assert_eq!(parse(&["/tmp/bus"]).unwrap().actions, Actions::default());
    }

    #[test]
    fn actions_are_checked_against_the_addresses() {
        let a = parse(&["/tmp/bus", "--ip", "10.0.0.2/24", "--ping", "fd00::1"]).unwrap();
        let addrs = a.stack.addresses().unwrap();
        let e = a.check_actions(&addrs).unwrap_err().to_string();
        assert!(e.contains("--ping fd00::1") && e.contains("--ip6"), "{e}");
        let a = parse(&[
            "/tmp/bus",
            "--ip",
            "10.0.0.2/24",
            "--tcp-send",
            "10.0.0.1:0",
        ])
        .unwrap();
        let e = a.check_actions(&addrs).unwrap_err().to_string();
        assert!(e.contains("port 0"), "{e}");
        let a = parse(&[
            "/tmp/bus",
            "--ip",
            "10.0.0.2/24",
            "--ping",
            "10.0.0.1",
            "--ping-size",
            "1473",
        ])
        .unwrap();
        let e = a.check_actions(&addrs).unwrap_err().to_string();
        assert!(e.contains("--ping-size 1473"), "{e}");
        assert!(parse(&["/tmp/bus", "--ping", "not-an-address"]).is_err());
        assert!(parse(&["/tmp/bus", "--tcp-send", "fd00::1:7"]).is_err());
    }

    #[test]
    fn a_port_serves_one_service() {
        let a = parse(&["/tmp/bus", "--tcp-sink", "9000", "--tcp-echo", "9000"]).unwrap();
        assert_eq!(
            a.check_ports().unwrap_err(),
            "TCP port 9000 is given to both --tcp-sink and --tcp-echo: one port serves one service"
        );
        let a = parse(&["/tmp/bus", "--tcp-sink", "9000", "--udp-echo", "9000"]).unwrap();
        assert!(a.check_ports().is_ok());
    }
}
