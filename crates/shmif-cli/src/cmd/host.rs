//! `shmif host`: a userspace TCP/IP host on a bus.

use super::ping::{PingOptions, Pinger};
use super::tcp_send::{self, TcpSendOptions, TcpSender};
use crate::cli::signal::StopSignal;
use crate::cli::{output, parse};
use crate::net::{self, Activity, Stack, Step};
use anyhow::{Context, Result};
use clap::{Arg, ArgAction, ArgMatches, FromArgMatches};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpCidr, IpEndpoint};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
/// With --exit-when-done the host detaches after the actions and exits 0
/// if all succeeded, 1 otherwise. Without it, it serves until SIGINT or
/// SIGTERM, then detaches and exits 0 if every action ran and succeeded
/// (or none was given), 1 otherwise.
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
    --ping-quiet --exit-when-done")]
pub struct Args {
    #[command(flatten)]
    pub stack: net::StackArgs,
    /// Serve TCP echo on PORT: send back everything received (repeatable).
    #[arg(long, value_name = "PORT")]
    pub tcp_echo: Vec<u16>,
    /// Serve a TCP sink on PORT: receive and count, check the bytes against
    /// the `shmif tcp-send` pattern, and report each connection's bytes,
    /// seconds, MiB/s and verdict (repeatable).
    #[arg(long, value_name = "PORT")]
    pub tcp_sink: Vec<u16>,
    /// Serve UDP echo on PORT: send every datagram back (repeatable).
    #[arg(long, value_name = "PORT")]
    pub udp_echo: Vec<u16>,
    /// Connections each TCP port serves at the same time.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub backlog: u16,
    /// Size of each TCP socket's send and receive buffer, in KiB.
    #[arg(long, default_value_t = net::stack::DEFAULT_TCP_BUFFER_KIB, value_name = "KIB")]
    pub tcp_buffer: usize,
    /// What to do once up, in command-line order.
    #[command(flatten)]
    pub actions: Actions,
    /// Echo requests each --ping sends.
    #[arg(long, default_value_t = 5, value_name = "N", help_heading = ACTIONS, value_parser = clap::value_parser!(u64).range(1..))]
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
    #[arg(short = 'm', long, default_value_t = 10.0, value_name = "N", help_heading = ACTIONS, value_parser = tcp_send::parse_megabytes, allow_negative_numbers = true)]
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
                .value_parser(clap::value_parser!(SocketAddr))
                .help(
                    "Send --megabytes of the test pattern to a TCP server (a sink) at \
                     DEST:PORT, or [DEST]:PORT for IPv6, as `shmif tcp-send` does (repeatable)",
                ),
        )
        .arg(
            action("tcp_send_echo", "tcp-send-echo", "DEST:PORT")
                .value_parser(clap::value_parser!(SocketAddr))
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
    fn ping_options(&self, dest: IpAddr) -> PingOptions {
        PingOptions {
            dest,
            count: Some(self.ping_count),
            interval: self.ping_interval,
            size: self.ping_size,
            timeout: self.ping_timeout,
            quiet: self.ping_quiet,
        }
    }

    fn tcp_options(&self, dest: SocketAddr, echo: bool) -> TcpSendOptions {
        TcpSendOptions {
            dest,
            megabytes: self.megabytes,
            expect_echo: echo,
            tcp_buffer: self.tcp_buffer,
            timeout: self.tcp_timeout.max(Duration::from_millis(1)),
        }
    }

    /// Checks every action against the host's addresses, before attaching.
    fn check_actions(&self, addrs: &[IpCidr]) -> Result<()> {
        for a in &self.actions.0 {
            match *a {
                Action::Ping(d) => {
                    self.ping_options(d)
                        .check(&a.to_string(), "--ping-size", addrs)?
                }
                Action::TcpSend { dest, echo } => {
                    self.tcp_options(dest, echo).check(&a.to_string(), addrs)?
                }
            }
        }
        Ok(())
    }
}

/// The actions' progress: which is running, how many are done.
struct Plan {
    actions: Vec<Action>,
    /// The next action to start.
    next: usize,
    current: Option<Box<dyn Activity>>,
    succeeded: usize,
    /// Whether the `actions done` line was printed.
    reported: bool,
}

impl Plan {
    fn all_done(&self) -> bool {
        self.next == self.actions.len() && self.current.is_none()
    }

    fn all_succeeded(&self) -> bool {
        self.all_done() && self.succeeded == self.actions.len()
    }

    /// Starts action `self.next` on `stack`.
    fn start_next(&mut self, args: &Args, stack: &mut Stack) {
        let action = self.actions[self.next];
        let n = self.next;
        self.next += 1;
        let dest = match action {
            Action::Ping(d) => d,
            Action::TcpSend { dest, .. } => dest.ip(),
        };
        if let Err(e) = stack.solicit(dest.into()) {
            eprintln!("shmif host: {action}: {e:#}");
        }
        let started: Result<Box<dyn Activity>> = match action {
            Action::Ping(d) => Pinger::start(stack, args.ping_options(d), &args.stack.bus)
                .map(|p| Box::new(p) as _),
            Action::TcpSend { dest, echo } => {
                let served: Vec<u16> = args
                    .tcp_sink
                    .iter()
                    .chain(&args.tcp_echo)
                    .copied()
                    .collect();
                let port = tcp_send::local_port(stack, n as u16, &served);
                let context = format!("shmif host: {action}");
                TcpSender::start(stack, args.tcp_options(dest, echo), port, &context)
                    .map(|t| Box::new(t) as _)
            }
        };
        match started {
            Ok(a) => self.current = Some(a),
            Err(e) => eprintln!("shmif host: {action}: {e:#}"),
        }
    }

    /// Steps the running action (starting the next ones as each
    /// finishes); returns what the host loop should do about the actions.
    fn step(&mut self, args: &Args, stack: &mut Stack) -> Step {
        loop {
            if self.current.is_none() {
                if self.next == self.actions.len() {
                    return Step::Done;
                }
                self.start_next(args, stack);
                continue;
            }
            let Some(a) = self.current.as_mut() else {
                continue;
            };
            match a.step(stack) {
                Step::Done => {
                    if a.finish(stack) {
                        self.succeeded += 1;
                    }
                    self.current = None;
                }
                other => return other,
            }
        }
    }

    /// The interface went down: the running action ends with a report.
    fn interrupt(&mut self, why: &str, stack: &mut Stack) {
        if let Some(mut a) = self.current.take() {
            a.interrupt(why);
            if a.finish(stack) {
                self.succeeded += 1;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Sink,
    Echo,
}

/// One TCP connection's bookkeeping.
#[derive(Debug, Default)]
struct Conn {
    peer: Option<IpEndpoint>,
    start: Option<Instant>,
    bytes: u64,
    echoed: u64,
    mismatch: Option<u64>,
    /// When the peer's FIN came in.
    end: Option<Instant>,
    /// Whether the peer closed the connection (rather than resetting it).
    peer_closed: bool,
}

struct TcpSlot {
    service: Service,
    port: u16,
    handle: SocketHandle,
    conn: Conn,
}

/// Runs `shmif host`.
pub fn run(args: Args) -> Result<ExitCode> {
    let addrs = args.stack.addresses()?;
    args.check_actions(&addrs)?;
    let mut stack = args.stack.attach(&addrs)?;
    let stop = StopSignal::install()?;
    stop.take_down_on_stop(&stack.shmif)?;

    let mut slots = Vec::new();
    for (service, ports) in [
        (Service::Sink, &args.tcp_sink),
        (Service::Echo, &args.tcp_echo),
    ] {
        for &port in ports {
            if port == 0 {
                anyhow::bail!("--tcp-{}: port 0 cannot be served", name(service));
            }
            for _ in 0..args.backlog {
                let mut s = net::stack::tcp_socket(args.tcp_buffer);
                // A peer that vanishes (killed, no RST) is noticed, and its
                // connection reported and freed, within about half a minute.
                s.set_keep_alive(Some(smoltcp::time::Duration::from_secs(5)));
                s.set_timeout(Some(smoltcp::time::Duration::from_secs(20)));
                s.listen(port)
                    .with_context(|| format!("cannot listen on TCP port {port}"))?;
                let handle = stack.sockets.add(s);
                slots.push(TcpSlot {
                    service,
                    port,
                    handle,
                    conn: Conn::default(),
                });
            }
        }
    }
    let mut udp_handles = Vec::new();
    for &port in &args.udp_echo {
        if port == 0 {
            anyhow::bail!("--udp-echo: port 0 cannot be served");
        }
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * 1500]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * 1500]),
        );
        s.bind(port)
            .with_context(|| format!("cannot bind UDP port {port}"))?;
        udp_handles.push(stack.sockets.add(s));
    }

    let mut services = Vec::new();
    for p in &args.tcp_sink {
        services.push(format!("tcp-sink {p}"));
    }
    for p in &args.tcp_echo {
        services.push(format!("tcp-echo {p}"));
    }
    for p in &args.udp_echo {
        services.push(format!("udp-echo {p}"));
    }
    let serving = if services.is_empty() {
        String::new()
    } else {
        format!("; serving {}", services.join(", "))
    };
    output::say(&format!(
        "host {} ({}) up on {}{serving}",
        stack.addresses_text(),
        stack.mac(),
        args.stack.bus.display()
    ));

    let mut plan = Plan {
        actions: args.actions.0.clone(),
        next: 0,
        current: None,
        succeeded: 0,
        reported: false,
    };
    let mut scratch = vec![0u8; 64 * 1024];
    let mut finished_actions = false;
    loop {
        stack.poll();
        let mut progressed = false;
        for slot in &mut slots {
            progressed |= serve_tcp(&mut stack, slot, &mut scratch);
        }
        for &h in &udp_handles {
            progressed |= serve_udp(&mut stack, h, &mut scratch);
        }
        let until = match plan.step(&args, &mut stack) {
            Step::Busy => {
                progressed = true;
                None
            }
            Step::Idle(until) => until,
            Step::Done => {
                if !plan.reported && !plan.actions.is_empty() {
                    plan.reported = true;
                    output::say(&format!(
                        "host {}: actions done: {} of {} succeeded",
                        stack.addresses_text(),
                        plan.succeeded,
                        plan.actions.len()
                    ));
                }
                if args.exit_when_done {
                    finished_actions = true;
                    break;
                }
                None
            }
        };
        if progressed {
            // Socket buffers changed: let smoltcp send now, without sleeping.
            continue;
        }
        let max = until.map(|u| u.saturating_duration_since(Instant::now()));
        if max != Some(Duration::ZERO) && !stack.wait(max)? {
            plan.interrupt(net::activity::down_reason(&stop), &mut stack);
            if !plan.reported && !plan.actions.is_empty() {
                output::say(&format!(
                    "host {}: actions interrupted: {} of {} succeeded",
                    stack.addresses_text(),
                    plan.succeeded,
                    plan.actions.len()
                ));
            }
            break;
        }
    }
    // Whatever smoltcp queued last (the ACK of a peer's FIN) goes out.
    let _ = stack.dev.flush();
    let c = stack.shmif.counters();
    let why = if finished_actions {
        "actions done"
    } else if stop.stopped() {
        "signal"
    } else {
        "interface down"
    };
    output::say(&format!(
        "host {}: stopping ({why}); {} frames sent, {} received, {} overruns; detached from {}",
        stack.addresses_text(),
        c.tx_frames,
        c.rx_frames,
        c.overruns,
        args.stack.bus.display()
    ));
    Ok(if plan.all_succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn name(s: Service) -> &'static str {
    match s {
        Service::Sink => "sink",
        Service::Echo => "echo",
    }
}

/// Serves one TCP socket; returns whether it moved any data.
fn serve_tcp(stack: &mut Stack, slot: &mut TcpSlot, scratch: &mut [u8]) -> bool {
    let s = stack.sockets.get_mut::<tcp::Socket>(slot.handle);
    let conn = &mut slot.conn;
    let mut moved = false;
    if conn.peer.is_none() && s.is_active() && s.state() != tcp::State::SynReceived {
        conn.peer = s.remote_endpoint();
        conn.start = Some(Instant::now());
    }
    match slot.service {
        Service::Sink => {
            moved |= net::pattern::recv_pattern(s, &mut conn.bytes, &mut conn.mismatch);
        }
        Service::Echo => {
            while s.can_recv() && s.can_send() {
                let room = (s.send_capacity() - s.send_queue()).min(scratch.len());
                match s.recv_slice(&mut scratch[..room]) {
                    Ok(n) if n > 0 => {
                        let sent = s.send_slice(&scratch[..n]).unwrap_or(0);
                        debug_assert_eq!(sent, n);
                        conn.bytes += n as u64;
                        conn.echoed += sent as u64;
                        moved = true;
                    }
                    _ => break,
                }
            }
        }
    }
    if conn.peer.is_some() && conn.end.is_none() && !s.may_recv() && s.is_active() {
        // The peer has finished sending (its FIN is in).
        conn.end = Some(Instant::now());
        conn.peer_closed = true;
    }
    // Once everything is echoed back, close our side too.
    if conn.peer.is_some() && s.state() == tcp::State::CloseWait && s.send_queue() == 0 {
        s.close();
    }
    if conn.peer.is_some() && !s.is_active() {
        // The connection is over: closed, or reset by the peer.
        report(
            slot.service,
            slot.port,
            conn,
            stack.shmif.counters().overruns,
        );
        slot.conn = Conn::default();
    }
    let s = stack.sockets.get_mut::<tcp::Socket>(slot.handle);
    if !s.is_open() {
        // Closed or in TIME-WAIT: listen again, for the next connection.
        let _ = s.listen(slot.port);
    }
    moved
}

fn report(service: Service, port: u16, conn: &Conn, overruns: u64) {
    let secs = match (conn.start, conn.end) {
        (Some(s), Some(e)) => e.duration_since(s).as_secs_f64(),
        (Some(s), None) => s.elapsed().as_secs_f64(),
        _ => 0.0,
    };
    let peer = conn
        .peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| "?".into());
    let rate = output::mib_per_sec(conn.bytes, secs);
    let line = match service {
        Service::Sink => {
            let verdict = match (conn.mismatch, conn.peer_closed) {
                (Some(at), _) => format!("pattern MISMATCH at byte {at}"),
                (None, true) => "pattern ok".to_string(),
                (None, false) => "connection reset before the end (pattern ok so far)".to_string(),
            };
            format!(
                "tcp-sink {port}: from {peer}: {} bytes in {secs:.3} s, {rate:.1} MiB/s, {verdict} (bus overruns so far: {overruns})",
                conn.bytes
            )
        }
        Service::Echo => format!(
            "tcp-echo {port}: from {peer}: echoed {} bytes in {secs:.3} s, {rate:.1} MiB/s{}",
            conn.echoed,
            if conn.peer_closed {
                ""
            } else {
                ", connection reset"
            }
        ),
    };
    output::say(&line);
}

/// Echoes waiting UDP datagrams; returns whether it echoed any.
fn serve_udp(stack: &mut Stack, handle: SocketHandle, scratch: &mut [u8]) -> bool {
    let s = stack.sockets.get_mut::<udp::Socket>(handle);
    let mut moved = false;
    while s.can_recv() && s.can_send() {
        match s.recv_slice(scratch) {
            Ok((n, meta)) => {
                let _ = s.send_slice(&scratch[..n], meta.endpoint);
                moved = true;
            }
            Err(_) => break,
        }
    }
    moved
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
}
