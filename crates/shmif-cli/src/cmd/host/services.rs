//! `shmif host`'s services: TCP sinks and echo servers, UDP echo.

use super::args::Args;
use crate::cli::output;
use crate::net::{self, Stack};
use anyhow::{Context as _, Result};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::IpEndpoint;
use std::time::Instant;

/// What a TCP port serves.
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

/// One listening (or connected) TCP socket of a service.
struct TcpSlot {
    service: Service,
    port: u16,
    handle: SocketHandle,
    conn: Conn,
}

/// A service's name in options and messages.
fn name(s: Service) -> &'static str {
    match s {
        Service::Sink => "sink",
        Service::Echo => "echo",
    }
}

/// Serves one TCP socket; returns whether it moved any data. A connection
/// that is over but for the peer's ACK of our FIN (LAST-ACK) is reported
/// and handed to `closing`, and the slot listens again on a new socket.
fn serve_tcp(
    stack: &mut Stack,
    slot: &mut TcpSlot,
    closing: &mut Closing,
    tcp_buffer: usize,
    scratch: &mut [u8],
) -> bool {
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
    // LAST-ACK: the peer has sent everything and closed, we have taken
    // it all (and echoed it, acknowledged) and sent our FIN. Only the
    // peer's last ACK is missing, and it can be lost for good (a peer that
    // exits on entering TIME-WAIT, such as `shmif tcp-send`, never answers
    // our retransmitted FIN): waiting for it here would keep this slot
    // from listening for up to the 20 s timeout, and with every slot of a
    // port so held, new connections are refused.
    let last_ack = s.state() == tcp::State::LastAck;
    if conn.peer.is_some() && (!s.is_active() || last_ack) {
        // The connection is over: closed, or reset by the peer.
        report(
            slot.service,
            slot.port,
            conn,
            stack.shmif.counters().overruns,
        );
        slot.conn = Conn::default();
    }
    if last_ack {
        if let Ok(fresh) = listening_socket(tcp_buffer, slot.port) {
            // The old socket still retransmits our FIN and takes the ACK.
            let fresh = stack.sockets.add(fresh);
            let old = std::mem::replace(&mut slot.handle, fresh);
            closing.push(stack, old);
        }
    }
    let s = stack.sockets.get_mut::<tcp::Socket>(slot.handle);
    if !s.is_open() {
        // Closed or in TIME-WAIT: listen again, for the next connection.
        let _ = s.listen(slot.port);
    }
    moved
}

/// A TCP socket of `kib` KiB buffers listening on `port`, with the
/// keep-alive and timeout of every served connection.
fn listening_socket(kib: usize, port: u16) -> Result<tcp::Socket<'static>> {
    let mut s = net::stack::tcp_socket(kib);
    // A peer that vanishes (killed, no RST) is noticed, and its connection
    // reported and freed, within about half a minute.
    s.set_keep_alive(Some(smoltcp::time::Duration::from_secs(5)));
    s.set_timeout(Some(smoltcp::time::Duration::from_secs(20)));
    s.listen(port)
        .with_context(|| format!("cannot listen on TCP port {port}"))?;
    Ok(s)
}

/// Sockets of finished connections waiting in LAST-ACK for the peer's
/// final ACK (see [`serve_tcp`]), oldest first; removed once closed.
#[derive(Default)]
struct Closing(std::collections::VecDeque<SocketHandle>);

impl Closing {
    /// At most this many are kept: beyond it the oldest is aborted (a
    /// reset instead of the last FIN retransmissions), so that peers that
    /// never send the last ACK cannot make the host hold ever more
    /// sockets and their buffers.
    const MAX: usize = 16;

    fn push(&mut self, stack: &mut Stack, h: SocketHandle) {
        self.0.push_back(h);
        let excess = self.0.len().saturating_sub(Self::MAX);
        for &old in self.0.iter().take(excess) {
            // The reset goes out at the next poll; `reap` then drops it.
            stack.sockets.get_mut::<tcp::Socket>(old).abort();
        }
    }

    /// Drops the sockets that are closed (or in TIME-WAIT: nothing more
    /// will come that needs an answer).
    fn reap(&mut self, stack: &mut Stack) {
        self.0.retain(|&h| {
            let open = stack.sockets.get::<tcp::Socket>(h).is_open();
            if !open {
                stack.sockets.remove(h);
            }
            open
        });
    }
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

/// The sockets a host serves, opened from its options.
pub struct Services {
    tcp: Vec<TcpSlot>,
    udp: Vec<SocketHandle>,
    /// Finished connections waiting for their last ACK.
    closing: Closing,
    /// Each TCP socket's buffer size, in KiB (`--tcp-buffer`).
    tcp_buffer: usize,
    /// `; serving tcp-sink 9000, ...` for the start-up line.
    described: String,
}

impl Services {
    /// Opens every TCP (`--backlog` sockets per port) and UDP service on
    /// `stack`.
    pub fn open(args: &Args, stack: &mut Stack) -> Result<Services> {
        let tcp_buffer = crate::net::stack::tcp_buffer_kib(args.tcp_buffer, &stack.shmif);
        let mut tcp = Vec::new();
        for (service, ports) in [
            (Service::Sink, &args.tcp_sink),
            (Service::Echo, &args.tcp_echo),
        ] {
            for &port in ports {
                if port == 0 {
                    anyhow::bail!("--tcp-{}: port 0 cannot be served", name(service));
                }
                for _ in 0..args.backlog {
                    let s = listening_socket(tcp_buffer, port)?;
                    let handle = stack.sockets.add(s);
                    tcp.push(TcpSlot {
                        service,
                        port,
                        handle,
                        conn: Conn::default(),
                    });
                }
            }
        }
        let mut udp = Vec::new();
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
            udp.push(stack.sockets.add(s));
        }
        let names: Vec<String> = (args.tcp_sink.iter().map(|p| format!("tcp-sink {p}")))
            .chain(args.tcp_echo.iter().map(|p| format!("tcp-echo {p}")))
            .chain(args.udp_echo.iter().map(|p| format!("udp-echo {p}")))
            .collect();
        let described = if names.is_empty() {
            String::new()
        } else {
            format!("; serving {}", names.join(", "))
        };
        Ok(Services {
            tcp,
            udp,
            closing: Closing::default(),
            tcp_buffer,
            described,
        })
    }

    /// What it serves, for the start-up line (empty when nothing).
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Serves every socket once; returns whether any moved data.
    pub fn serve(&mut self, stack: &mut Stack, scratch: &mut [u8]) -> bool {
        let mut progressed = false;
        self.closing.reap(stack);
        for slot in &mut self.tcp {
            progressed |= serve_tcp(stack, slot, &mut self.closing, self.tcp_buffer, scratch);
        }
        for &h in &self.udp {
            progressed |= serve_udp(stack, h, scratch);
        }
        progressed
    }
}
