//! `shmif host`: a userspace TCP/IP host on a bus.

use super::net::{self, Stack, StopSignal};
use anyhow::{Context, Result};
use shmif::MacAddr;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpCidr, IpEndpoint};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Run a TCP/IP host on a bus until SIGINT or SIGTERM.
///
/// The host attaches to the bus as a new interface, answers ARP and ping
/// (ICMP echo, IPv4 and IPv6, with IPv6 neighbour discovery), and serves
/// the ports given: a TCP sink that checks what it receives against the
/// `shmif tcp-send` pattern, TCP and UDP echo. It prints one line when it
/// is up and one per finished TCP connection, on standard output. On
/// SIGINT or SIGTERM it detaches from the bus and exits 0.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif host /tmp/bus --ip 10.0.0.1/24 --ip6 fd00::1/64 --tcp-sink 9000 --tcp-echo 7\n  \
    shmif ping /tmp/bus --ip 10.0.0.2/24 10.0.0.1 -c 3     # from another terminal\n  \
    shmif tcp-send /tmp/bus --ip 10.0.0.2/24 10.0.0.1:9000 --megabytes 100")]
pub struct Args {
    /// The bus file (created if missing).
    pub bus: PathBuf,
    /// The host's address, ADDR/PREFIX: IPv4 (10.0.0.1/24) or IPv6
    /// (fd00::1/64). Without /PREFIX: /24 or /64.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = net::parse_cidr)]
    pub ip: Option<IpCidr>,
    /// An IPv6 address as well, ADDR/PREFIX (fd00::1/64).
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = net::parse_cidr)]
    pub ip6: Option<IpCidr>,
    /// The interface's MAC address (default: random b2:a0:xx:xx:xx:xx).
    #[arg(long, value_parser = net::parse_mac)]
    pub mac: Option<MacAddr>,
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
    #[arg(long, default_value_t = net::DEFAULT_TCP_BUFFER_KIB, value_name = "KIB")]
    pub tcp_buffer: usize,
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
    let addrs = net::addresses(args.ip, args.ip6)?;
    let mut stack = Stack::attach(&args.bus, args.mac, &addrs)?;
    let stop = StopSignal::install(&stack.shmif)?;

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
                let mut s = net::tcp_socket(args.tcp_buffer);
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
    net::say(&format!(
        "host {} ({}) up on {}{serving}",
        stack.addresses_text(),
        stack.mac(),
        args.bus.display()
    ));

    let mut scratch = vec![0u8; 64 * 1024];
    loop {
        stack.poll();
        let mut progressed = false;
        for slot in &mut slots {
            progressed |= serve_tcp(&mut stack, slot, &mut scratch);
        }
        for &h in &udp_handles {
            progressed |= serve_udp(&mut stack, h, &mut scratch);
        }
        if progressed {
            // Socket buffers changed: let smoltcp send now, without sleeping.
            continue;
        }
        if !stack.wait(None)? {
            break;
        }
    }
    let c = stack.shmif.counters();
    let why = if stop.stopped() {
        "signal"
    } else {
        "interface down"
    };
    net::say(&format!(
        "host {}: stopping ({why}); {} frames sent, {} received, {} overruns; detached from {}",
        stack.addresses_text(),
        c.tx_frames,
        c.rx_frames,
        c.overruns,
        args.bus.display()
    ));
    Ok(ExitCode::SUCCESS)
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
            while s.can_recv() {
                let at = conn.bytes;
                let got = s.recv(|buf| (buf.len(), (buf.len(), net::pattern_check(at, buf))));
                match got {
                    Ok((n, bad)) if n > 0 => {
                        if conn.mismatch.is_none() {
                            conn.mismatch = bad;
                        }
                        conn.bytes += n as u64;
                        moved = true;
                    }
                    _ => break,
                }
            }
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
    let rate = net::mib_per_sec(conn.bytes, secs);
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
    net::say(&line);
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
