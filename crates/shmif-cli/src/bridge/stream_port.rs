//! QEMU's socket back-ends as ports of the engine: the length-framed
//! stream of `-netdev stream` (and the legacy `-netdev socket`), over UNIX
//! or TCP sockets, accepted by a [`StreamListener`] or dialled (and
//! redialled) by a [`StreamPort`] itself; and the one-frame-per-datagram
//! socket of `-netdev dgram` ([`DgramPort`]).
//!
//! Stream framing: a 4-byte big-endian length, then the frame. A length
//! under 14 or over [`MAX_FRAME`], or a frame left half-written for
//! [`HALF_FRAME_TIMEOUT`], ends that connection with one log line. Output
//! to a peer is buffered up to [`OUT_LIMIT`] bytes; frames beyond it are
//! dropped (counted), and a peer that has taken nothing for
//! [`STALL_LIMIT`] while frames were being dropped is disconnected.

use super::{read_ready, Ctx, Port, Service};
use anyhow::{anyhow, Result};
use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketType};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The largest frame QEMU takes or sends on these back-ends (its
/// `NET_BUFSIZE`: 4096 + 65536).
pub const MAX_FRAME: usize = 4096 + 65_536;
/// Bytes of the length prefix.
const HEADER: usize = 4;
/// The smallest frame: an Ethernet header.
const MIN_FRAME: usize = 14;
/// How long a frame may stay half-written with nothing more arriving.
pub const HALF_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes queued for a peer, at most.
pub const OUT_LIMIT: usize = 1 << 20;
/// How long a peer may take nothing, while frames for it are dropped,
/// before it is disconnected.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Input buffer: room for two of the largest frames.
const IN_ROOM: usize = 2 * (HEADER + MAX_FRAME);
/// First and longest wait between attempts to redial.
const REDIAL_FIRST: Duration = Duration::from_millis(100);
const REDIAL_MAX: Duration = Duration::from_secs(5);

/// Where to listen or connect: a UNIX socket path or a TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A UNIX socket.
    Unix(PathBuf),
    /// HOST:PORT (TCP or UDP, by context).
    Inet(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Inet(a) => write!(f, "{a}"),
        }
    }
}

impl Endpoint {
    /// The first address HOST:PORT resolves to.
    pub fn resolve(addr: &str) -> io::Result<SocketAddr> {
        addr.to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address")))
    }
}

/// A connected stream, UNIX or TCP.
pub enum Conn {
    /// A UNIX stream.
    Unix(UnixStream),
    /// A TCP stream.
    Tcp(TcpStream),
}

impl Conn {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Unix(s) => s.as_fd(),
            Conn::Tcp(s) => s.as_fd(),
        }
    }
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(b),
            Conn::Tcp(s) => s.read(b),
        }
    }
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(b),
            Conn::Tcp(s) => s.write(b),
        }
    }
}

/// A dialling port's state between connections.
enum Dial {
    /// Wait until then, then try.
    Wait(Instant),
    /// A non-blocking TCP connect under way.
    Connecting(OwnedFd),
}

/// How a dialling port reaches its peer again.
struct Redial {
    to: Endpoint,
    state: Dial,
    backoff: Duration,
    /// Whether the "not reachable" line was printed for this outage.
    told: bool,
}

/// One stream peer (a QEMU `-netdev stream`/`socket`), accepted or
/// dialled.
pub struct StreamPort {
    name: String,
    conn: Option<Conn>,
    redial: Option<Redial>,
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    partial_since: Option<Instant>,
    out: Vec<u8>,
    out_start: usize,
    stalled_since: Option<Instant>,
    /// Frames dropped because the output buffer was full.
    out_drops: u64,
    connections: u64,
}

impl StreamPort {
    /// A port over an accepted connection: it closes when the peer goes.
    pub fn accepted(name: String, conn: Conn) -> io::Result<StreamPort> {
        set_nonblocking(&conn)?;
        Ok(StreamPort::new(name, Some(conn), None))
    }

    /// A port that connects to `to` and reconnects, with back-off,
    /// whenever the connection drops (QEMU's `server=on`).
    pub fn dialler(to: Endpoint) -> StreamPort {
        let r = Redial {
            to: to.clone(),
            state: Dial::Wait(Instant::now()),
            backoff: REDIAL_FIRST,
            told: false,
        };
        StreamPort::new(format!("qemu stream to {to}"), None, Some(r))
    }

    fn new(name: String, conn: Option<Conn>, redial: Option<Redial>) -> StreamPort {
        StreamPort {
            name,
            connections: u64::from(conn.is_some()),
            conn,
            redial,
            inbuf: vec![0; IN_ROOM],
            in_start: 0,
            in_end: 0,
            partial_since: None,
            out: Vec::new(),
            out_start: 0,
            stalled_since: None,
            out_drops: 0,
        }
    }

    /// Ends the connection: an accepted port closes; a dialling one waits
    /// and redials.
    fn lost(&mut self, why: String) -> Result<Service> {
        self.conn = None;
        self.in_start = 0;
        self.in_end = 0;
        self.partial_since = None;
        self.out.clear();
        self.out_start = 0;
        self.stalled_since = None;
        match &mut self.redial {
            None => Ok(Service::Closed(why)),
            Some(r) => {
                eprintln!("shmif: {}: connection lost: {why}; reconnecting", self.name);
                r.backoff = REDIAL_FIRST;
                r.state = Dial::Wait(Instant::now() + r.backoff);
                r.told = false;
                Ok(Service::Idle)
            }
        }
    }

    /// Drives a dialling port towards a connection.
    fn dial(&mut self, now: Instant) {
        let Some(r) = &mut self.redial else { return };
        let failed = |r: &mut Redial, why: String, name: &str| {
            if !r.told {
                eprintln!(
                    "shmif: {name}: cannot connect: {why}; retrying (every {} s at most)",
                    REDIAL_MAX.as_secs()
                );
                r.told = true;
            }
            r.state = Dial::Wait(now + r.backoff);
            r.backoff = (r.backoff * 2).min(REDIAL_MAX);
        };
        match &r.state {
            Dial::Wait(at) if *at > now => {}
            Dial::Wait(_) => match &r.to {
                Endpoint::Unix(p) => match UnixStream::connect(p) {
                    Ok(s) => self.conn = Some(Conn::Unix(s)),
                    Err(e) => failed(r, e.to_string(), &self.name),
                },
                Endpoint::Inet(a) => match start_tcp_connect(a) {
                    Ok(Ok(s)) => self.conn = Some(Conn::Tcp(s)),
                    Ok(Err(fd)) => r.state = Dial::Connecting(fd),
                    Err(e) => failed(r, e.to_string(), &self.name),
                },
            },
            Dial::Connecting(fd) => {
                let mut pfd = [rustix::event::PollFd::new(fd, PollFlags::OUT)];
                if !matches!(rustix::event::poll(&mut pfd, Some(&rustix::event::Timespec::default())), Ok(n) if n > 0)
                {
                    return;
                }
                let err = rustix::net::sockopt::socket_error(fd);
                let Dial::Connecting(fd) = std::mem::replace(&mut r.state, Dial::Wait(now)) else {
                    unreachable!()
                };
                match err {
                    Ok(Ok(())) => self.conn = Some(Conn::Tcp(TcpStream::from(fd))),
                    Ok(Err(e)) | Err(e) => failed(r, io::Error::from(e).to_string(), &self.name),
                }
            }
        }
        if let Some(c) = &self.conn {
            if let Err(e) = set_nonblocking(c) {
                eprintln!("shmif: {}: {e}", self.name);
                self.conn = None;
                return;
            }
            self.connections += 1;
            if let Some(r) = &mut self.redial {
                r.backoff = REDIAL_FIRST;
                r.told = false;
            }
            eprintln!("shmif: {}: connected", self.name);
        }
    }

    /// Writes what is queued, as much as the peer takes now.
    fn flush(&mut self) -> io::Result<()> {
        let Some(c) = &mut self.conn else {
            return Ok(());
        };
        while self.out_start < self.out.len() {
            match c.write(&self.out[self.out_start..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_start += n;
                    self.stalled_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        } else if self.out_start > OUT_LIMIT / 2 {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        Ok(())
    }

    /// Hands the complete frames in the input buffer to `ctx`; an error
    /// for a bad length.
    fn frames_out(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, String> {
        while self.in_end - self.in_start >= HEADER {
            if ctx.full() {
                return Ok(true);
            }
            let h = &self.inbuf[self.in_start..self.in_start + HEADER];
            let len = u32::from_be_bytes(h.try_into().expect("4 bytes")) as usize;
            if !(MIN_FRAME..=MAX_FRAME).contains(&len) {
                return Err(format!(
                    "bad frame length {len} (a frame is {MIN_FRAME} to {MAX_FRAME} bytes): is \
                     this QEMU's stream protocol?"
                ));
            }
            if self.in_end - self.in_start < HEADER + len {
                break;
            }
            let s = self.in_start + HEADER;
            ctx.frame(&self.inbuf[s..s + len]);
            self.in_start = s + len;
        }
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
        } else if self.in_start > 0 && self.inbuf.len() - self.in_end < HEADER + MAX_FRAME {
            self.inbuf.copy_within(self.in_start..self.in_end, 0);
            self.in_end -= self.in_start;
            self.in_start = 0;
        }
        Ok(false)
    }
}

fn set_nonblocking(c: &Conn) -> io::Result<()> {
    match c {
        Conn::Unix(s) => s.set_nonblocking(true),
        Conn::Tcp(s) => {
            let _ = s.set_nodelay(true);
            s.set_nonblocking(true)
        }
    }
}

/// Starts a non-blocking TCP connect: a stream at once, or the socket
/// still connecting.
fn start_tcp_connect(addr: &str) -> io::Result<Result<TcpStream, OwnedFd>> {
    let sa = Endpoint::resolve(addr)?;
    let family = if sa.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    match rustix::net::connect(&fd, &sa) {
        Ok(()) => Ok(Ok(TcpStream::from(fd))),
        Err(Errno::INPROGRESS) | Err(Errno::INTR) => Ok(Err(fd)),
        Err(e) => Err(e.into()),
    }
}

impl Port for StreamPort {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        match (&self.conn, &self.redial) {
            (Some(c), _) => {
                let mut ev = PollFlags::IN;
                if self.out_start < self.out.len() {
                    ev |= PollFlags::OUT;
                }
                vec![(c.fd(), ev)]
            }
            (
                None,
                Some(Redial {
                    state: Dial::Connecting(fd),
                    ..
                }),
            ) => vec![(fd.as_fd(), PollFlags::OUT)],
            _ => Vec::new(),
        }
    }

    fn max_frame(&self) -> usize {
        MAX_FRAME
    }

    fn is_station(&self) -> bool {
        self.conn.is_some()
    }

    fn deadline(&self) -> Option<Instant> {
        if self.conn.is_some() {
            return self.partial_since.map(|t| t + HALF_FRAME_TIMEOUT);
        }
        match &self.redial {
            Some(Redial {
                state: Dial::Wait(at),
                ..
            }) => Some(*at),
            _ => None,
        }
    }

    fn service(&mut self, ctx: &mut Ctx<'_>) -> Result<Service> {
        let now = Instant::now();
        if self.conn.is_none() {
            self.dial(now);
            if self.conn.is_none() {
                return Ok(Service::Idle);
            }
        }
        if let Err(e) = self.flush() {
            return self.lost(format!("writing to the peer: {e}"));
        }
        // Frames left over from the last round first.
        match self.frames_out(ctx) {
            Ok(true) => return Ok(Service::More),
            Ok(false) => {}
            Err(why) => return self.lost(why),
        }
        let mut arrived = false;
        loop {
            if self.inbuf.len() - self.in_end < HEADER + MAX_FRAME {
                break; // full: hand frames over first
            }
            let c = self.conn.as_mut().expect("connected");
            match c.read(&mut self.inbuf[self.in_end..]) {
                Ok(0) => {
                    let left = self.in_end - self.in_start;
                    let why = if left > 0 {
                        format!(
                            "the peer closed the connection in the middle of a frame ({left} \
                             bytes of it)"
                        )
                    } else {
                        "the peer closed the connection".into()
                    };
                    return self.lost(why);
                }
                Ok(n) => {
                    self.in_end += n;
                    arrived = true;
                    match self.frames_out(ctx) {
                        Ok(true) => return Ok(Service::More),
                        Ok(false) => {}
                        Err(why) => return self.lost(why),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.lost(format!("reading from the peer: {e}")),
            }
        }
        if self.in_end > self.in_start {
            if arrived || self.partial_since.is_none() {
                self.partial_since = Some(now);
            } else if self
                .partial_since
                .is_some_and(|t| now >= t + HALF_FRAME_TIMEOUT)
            {
                return self.lost(format!(
                    "a half-written frame ({} bytes of it) and nothing more for {} s",
                    self.in_end - self.in_start,
                    HALF_FRAME_TIMEOUT.as_secs()
                ));
            }
        } else {
            self.partial_since = None;
        }
        Ok(Service::Idle)
    }

    fn send_batch(&mut self, frames: &[&[u8]]) -> Result<()> {
        if self.conn.is_none() {
            return Ok(());
        }
        let now = Instant::now();
        let mut dropped = 0;
        for f in frames {
            if self.out.len() - self.out_start + HEADER + f.len() > OUT_LIMIT {
                dropped += 1;
                continue;
            }
            self.out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            self.out.extend_from_slice(f);
        }
        let flushed = self.flush();
        if let Err(e) = flushed {
            // Closed at the next service (the reason is logged then).
            if self.redial.is_some() {
                let _ = self.lost(format!("writing to the peer: {e}"));
                return Ok(());
            }
            return Err(anyhow!("writing to the peer: {e}"));
        }
        if dropped > 0 {
            self.out_drops += dropped;
            let since = *self.stalled_since.get_or_insert(now);
            if now.duration_since(since) >= STALL_LIMIT {
                let why = format!(
                    "the peer has read nothing for {} s ({} frames dropped for it): \
                     disconnected",
                    STALL_LIMIT.as_secs(),
                    self.out_drops
                );
                if self.redial.is_some() {
                    let _ = self.lost(why);
                    return Ok(());
                }
                return Err(anyhow!(why));
            }
        }
        Ok(())
    }

    fn report(&self) -> String {
        let mut parts = Vec::new();
        if self.redial.is_some() {
            parts.push(format!("{} connections", self.connections));
        }
        if self.out_drops > 0 {
            parts.push(format!("{} lost to a full output buffer", self.out_drops));
        }
        parts.join(", ")
    }
}

/// A listening socket, UNIX or TCP.
pub enum Listener {
    /// A UNIX stream listener (its path is removed by the command).
    Unix(UnixListener, PathBuf),
    /// A TCP listener.
    Tcp(TcpListener),
}

/// A listener for QEMU guests (`-netdev stream,server=off`): each
/// connection becomes a [`StreamPort`]. Not a station.
pub struct StreamListener {
    listener: Listener,
    accepted: u64,
}

impl StreamListener {
    /// Serves on `listener`.
    pub fn new(listener: Listener) -> io::Result<StreamListener> {
        match &listener {
            Listener::Unix(l, _) => l.set_nonblocking(true)?,
            Listener::Tcp(l) => l.set_nonblocking(true)?,
        }
        Ok(StreamListener {
            listener,
            accepted: 0,
        })
    }

    fn shown(&self) -> String {
        match &self.listener {
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("tcp:{a}"),
                Err(_) => "tcp".into(),
            },
        }
    }
}

impl Port for StreamListener {
    fn name(&self) -> String {
        format!("qemu listener {}", self.shown())
    }

    fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let fd = match &self.listener {
            Listener::Unix(l, _) => l.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
        };
        vec![(fd, PollFlags::IN)]
    }

    fn max_frame(&self) -> usize {
        MAX_FRAME
    }

    fn is_station(&self) -> bool {
        false
    }

    fn service(&mut self, ctx: &mut Ctx<'_>) -> Result<Service> {
        loop {
            let got = match &self.listener {
                Listener::Unix(l, _) => l.accept().map(|(s, _)| (Conn::Unix(s), String::new())),
                Listener::Tcp(l) => l
                    .accept()
                    .map(|(s, a)| (Conn::Tcp(s), format!(" from {a}"))),
            };
            match got {
                Ok((conn, from)) => {
                    self.accepted += 1;
                    let name = format!("qemu {} #{}{from}", self.shown(), self.accepted);
                    match StreamPort::accepted(name.clone(), conn) {
                        Ok(p) => ctx.add_port(Box::new(p)),
                        Err(e) => eprintln!("shmif: {name}: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Service::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("shmif: {}: accept: {e} (ignored)", self.name());
                    return Ok(Service::Idle);
                }
            }
        }
    }

    fn send_batch(&mut self, _frames: &[&[u8]]) -> Result<()> {
        Ok(())
    }

    fn report(&self) -> String {
        format!("{} connections accepted", self.accepted)
    }
}

/// A datagram socket, UNIX or UDP, with the peer's address.
pub enum Dgram {
    /// Bound to our path; sends to the peer's path.
    Unix(UnixDatagram, PathBuf),
    /// Bound to our address; sends to the peer's.
    Udp(UdpSocket, SocketAddr),
}

/// QEMU's `-netdev dgram`: one frame per datagram, sent to the peer's
/// address; datagrams from anyone else are dropped and counted.
pub struct DgramPort {
    sock: Dgram,
    name: String,
    strangers: u64,
    undelivered: u64,
    warned: bool,
}

impl DgramPort {
    /// A port on `sock`.
    pub fn new(sock: Dgram, name: String) -> io::Result<DgramPort> {
        match &sock {
            Dgram::Unix(s, _) => s.set_nonblocking(true)?,
            Dgram::Udp(s, _) => s.set_nonblocking(true)?,
        }
        Ok(DgramPort {
            sock,
            name,
            strangers: 0,
            undelivered: 0,
            warned: false,
        })
    }
}

impl Port for DgramPort {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let fd = match &self.sock {
            Dgram::Unix(s, _) => s.as_fd(),
            Dgram::Udp(s, _) => s.as_fd(),
        };
        vec![(fd, PollFlags::IN)]
    }

    fn max_frame(&self) -> usize {
        MAX_FRAME
    }

    fn service(&mut self, ctx: &mut Ctx<'_>) -> Result<Service> {
        let strangers = &mut self.strangers;
        let r = match &self.sock {
            Dgram::Unix(s, peer) => read_ready(ctx, MAX_FRAME + 1, |room| {
                let (n, from) = s.recv_from(room)?;
                if from.as_pathname() == Some(peer.as_path()) {
                    Ok(Some(n))
                } else {
                    *strangers += 1;
                    Ok(None)
                }
            }),
            Dgram::Udp(s, peer) => read_ready(ctx, MAX_FRAME + 1, |room| {
                let (n, from) = s.recv_from(room)?;
                if from == *peer {
                    Ok(Some(n))
                } else {
                    *strangers += 1;
                    Ok(None)
                }
            }),
        };
        r.map_err(|e| anyhow!("receiving: {e}"))
    }

    fn send_batch(&mut self, frames: &[&[u8]]) -> Result<()> {
        for f in frames {
            let r = match &self.sock {
                Dgram::Unix(s, peer) => s.send_to(f, peer),
                Dgram::Udp(s, peer) => s.send_to(f, peer),
            };
            if let Err(e) = r {
                // The peer is not there (yet), or its buffer is full: the
                // frame is lost, as on a wire.
                self.undelivered += 1;
                if !self.warned && e.kind() != io::ErrorKind::WouldBlock {
                    self.warned = true;
                    eprintln!(
                        "shmif: {}: cannot deliver: {e} (is QEMU running? further losses are \
                         only counted)",
                        self.name
                    );
                }
            }
        }
        Ok(())
    }

    fn report(&self) -> String {
        format!(
            "{} undelivered, {} from other senders ignored",
            self.undelivered, self.strangers
        )
    }
}
