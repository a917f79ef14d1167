//! The VDE switch protocol as ports of the engine: a [`VdeSwitch`]
//! listening on a directory's `ctl` socket, which turns each client's
//! request into a [`VdePort`], one datagram socket per client.
//!
//! The protocol (libvdeplug's `vde://` module, which QEMU's `-netdev vde`,
//! `vde_plug` and `vde_plug2tap` use):
//! 1. the client binds a datagram socket of its own, connects a stream to
//!    `DIR/ctl` and writes one request: `u32 magic 0xfeedface`, `u32
//!    version 3`, `u32 type` (0, or a wanted port number shifted left by 8),
//!    its datagram socket's `struct sockaddr_un` (110 bytes) and a
//!    description of up to 128 bytes, all in the host's byte order;
//! 2. the switch makes a datagram socket for the port, connects it to the
//!    client's, binds it in DIR and writes its `struct sockaddr_un` back;
//! 3. from then on each datagram is one Ethernet frame; the port lives as
//!    long as the control stream: when the client closes it, the port goes.
//!
//! A request that is garbage, or that does not arrive whole within
//! [`REQUEST_TIMEOUT`], ends that connection with one log line. A client
//! that stops reading loses frames (its socket buffer is full: counted, as
//! on a wire) once a bounded queue of its own is full; one that has read
//! nothing for [`STALL_LIMIT`] while frames were dropped is disconnected.

use super::{read_ready, Ctx, Port, Service};
use anyhow::{anyhow, Result};
use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags};
use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::io::{self, IoSlice, Read as _, Write as _};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The request's magic number.
pub const MAGIC: u32 = 0xfeed_face;
/// The protocol version libvdeplug speaks.
pub const VERSION: u32 = 3;
/// `sizeof(struct sockaddr_un)` on Linux: family (2) and path (108).
pub const SOCKADDR_UN_LEN: usize = 110;
/// The fixed part of a request: magic, version, type, address.
pub const REQUEST_MIN: usize = 12 + SOCKADDR_UN_LEN;
/// Longest description (libvdeplug's `MAXDESCR`).
pub const MAX_DESCR: usize = 128;
/// The largest frame VDE carries: a 9,216-byte jumbo payload with its
/// Ethernet and VLAN headers.
pub const MAX_FRAME: usize = 9216 + 14 + 4;
/// Room for one datagram: more than [`MAX_FRAME`], so that an oversized
/// one shows whole and is counted.
const READ_ROOM: usize = 65_536;
/// How long a connected client may take to send its whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may go without taking a frame, while frames for it
/// keep being dropped, before it is disconnected.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Frames kept for a client that cannot take them yet, at most.
const QUEUE_FRAMES: usize = 1024;
/// Bytes kept for such a client, at most.
const QUEUE_BYTES: usize = 1 << 20;
/// Control connections still sending their request, at most.
const MAX_PENDING: usize = 64;
/// The socket buffers asked for each port's datagram socket.
const SOCKET_BUFFER: usize = 4 << 20;
/// `AF_UNIX`.
const AF_UNIX: u16 = 1;

/// A client's request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The port asked for (0: any).
    pub port: u32,
    /// The client's datagram socket.
    pub sock: PathBuf,
    /// Its description (printable characters only).
    pub descr: String,
}

/// Decodes a request; `Ok(None)` while it is still incomplete.
pub fn parse_request(b: &[u8]) -> Result<Option<Request>, String> {
    let word = |i: usize| -> Option<u32> {
        b.get(i..i + 4)
            .map(|w| u32::from_ne_bytes(w.try_into().expect("4 bytes")))
    };
    // Check what has arrived as early as possible, so that garbage is
    // refused at once rather than after the timeout.
    if let Some(m) = word(0) {
        if m != MAGIC {
            return Err(format!(
                "not a VDE request: magic {m:#010x}, not {MAGIC:#010x}"
            ));
        }
    }
    if let Some(v) = word(4) {
        if v != VERSION {
            return Err(format!(
                "VDE request version {v}: only version {VERSION} is served"
            ));
        }
    }
    if b.len() > REQUEST_MIN + MAX_DESCR {
        return Err(format!(
            "VDE request of {} bytes: at most {} expected",
            b.len(),
            REQUEST_MIN + MAX_DESCR
        ));
    }
    if b.len() < REQUEST_MIN {
        return Ok(None);
    }
    let ty = word(8).expect("complete");
    let port = match ty & 0xff {
        0 => ty >> 8,
        1 => 0, // REQ_NEW_PORT0: the management port; any will do here
        t => return Err(format!("VDE request type {t}: not a port request")),
    };
    let family = u16::from_ne_bytes([b[12], b[13]]);
    if family != AF_UNIX {
        return Err(format!(
            "VDE request with address family {family}, not AF_UNIX"
        ));
    }
    let path = &b[14..REQUEST_MIN];
    let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
    if end == 0 {
        return Err("VDE request with an empty or abstract socket address".into());
    }
    let sock = PathBuf::from(std::ffi::OsStr::from_bytes(&path[..end]));
    let d = &b[REQUEST_MIN..];
    let d = &d[..d.iter().position(|&c| c == 0).unwrap_or(d.len())];
    let descr: String = String::from_utf8_lossy(d)
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    Ok(Some(Request { port, sock, descr }))
}

/// The `struct sockaddr_un` of `path`, as the switch sends it back.
pub fn sockaddr_un(path: &Path) -> Result<[u8; SOCKADDR_UN_LEN]> {
    let p = path.as_os_str().as_bytes();
    if p.len() >= SOCKADDR_UN_LEN - 2 {
        return Err(anyhow!(
            "{}: socket path too long ({} bytes; at most {})",
            path.display(),
            p.len(),
            SOCKADDR_UN_LEN - 3
        ));
    }
    let mut a = [0u8; SOCKADDR_UN_LEN];
    a[..2].copy_from_slice(&AF_UNIX.to_ne_bytes());
    a[2..2 + p.len()].copy_from_slice(p);
    Ok(a)
}

/// Port numbers in use, shared by the switch and its ports (a port frees
/// its number when it is dropped).
type Numbers = Rc<RefCell<BTreeSet<u32>>>;

/// A control connection whose request has not arrived whole.
struct Pending {
    stream: UnixStream,
    buf: Vec<u8>,
    since: Instant,
    id: u64,
}

/// The listener on `DIR/ctl`: accepts clients and makes their ports. Not
/// a station (it carries no frames).
pub struct VdeSwitch {
    listener: UnixListener,
    dir: PathBuf,
    mode: u32,
    pending: Vec<Pending>,
    numbers: Numbers,
    accepted: u64,
    refused: u64,
}

impl VdeSwitch {
    /// Serves on `listener` (bound to `DIR/ctl`); port sockets are made in
    /// `dir` with permission bits `mode`.
    pub fn new(listener: UnixListener, dir: &Path, mode: u32) -> Result<VdeSwitch> {
        listener.set_nonblocking(true)?;
        Ok(VdeSwitch {
            listener,
            dir: dir.to_path_buf(),
            mode,
            pending: Vec::new(),
            numbers: Rc::new(RefCell::new(BTreeSet::new())),
            accepted: 0,
            refused: 0,
        })
    }

    fn log_refused(&mut self, id: u64, why: &str) {
        self.refused += 1;
        eprintln!(
            "shmif: vde {}: client connection {id}: closed: {why}",
            self.dir.display()
        );
    }

    /// Makes the port for a complete request and answers the client.
    fn open_port(&mut self, mut stream: UnixStream, req: Request) -> Result<VdePort, String> {
        let number = {
            let used = self.numbers.borrow();
            if req.port != 0 && !used.contains(&req.port) {
                req.port
            } else {
                (1..).find(|n| !used.contains(n)).expect("a free number")
            }
        };
        let path = self.dir.join(format!("port-{number}"));
        let _ = std::fs::remove_file(&path);
        let data = UnixDatagram::bind(&path)
            .map_err(|e| format!("cannot bind the port socket {}: {e}", path.display()))?;
        let cleanup = |e: String| {
            let _ = std::fs::remove_file(&path);
            e
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(self.mode))
            .map_err(|e| cleanup(format!("{}: cannot set its mode: {e}", path.display())))?;
        data.connect(&req.sock).map_err(|e| {
            cleanup(format!(
                "cannot connect to the client's socket {}: {e}",
                req.sock.display()
            ))
        })?;
        data.set_nonblocking(true)
            .map_err(|e| cleanup(e.to_string()))?;
        // Room for bursts (the kernel caps it at net.core.wmem_max).
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&data, SOCKET_BUFFER);
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&data, SOCKET_BUFFER);
        let reply = sockaddr_un(&path).map_err(|e| cleanup(format!("{e:#}")))?;
        // 110 bytes into a fresh connection's empty buffer: all or nothing.
        match stream.write(&reply) {
            Ok(n) if n == reply.len() => {}
            Ok(_) => return Err(cleanup("could not send the whole reply".into())),
            Err(e) => return Err(cleanup(format!("cannot send the reply: {e}"))),
        }
        self.numbers.borrow_mut().insert(number);
        Ok(VdePort {
            number,
            descr: req.descr,
            ctl: stream,
            data,
            path,
            numbers: self.numbers.clone(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            full_drops: 0,
            stalled_since: None,
        })
    }
}

impl Port for VdeSwitch {
    fn name(&self) -> String {
        format!("vde switch {}", self.dir.display())
    }

    fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut v = vec![(self.listener.as_fd(), PollFlags::IN)];
        v.extend(
            self.pending
                .iter()
                .map(|p| (p.stream.as_fd(), PollFlags::IN)),
        );
        v
    }

    fn max_frame(&self) -> usize {
        MAX_FRAME
    }

    fn is_station(&self) -> bool {
        false
    }

    fn deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.since + REQUEST_TIMEOUT).min()
    }

    fn service(&mut self, ctx: &mut Ctx<'_>) -> Result<Service> {
        // New connections.
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.accepted += 1;
                    let id = self.accepted;
                    if self.pending.len() >= MAX_PENDING {
                        self.log_refused(
                            id,
                            &format!("{MAX_PENDING} connections are already sending requests"),
                        );
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        self.log_refused(id, &e.to_string());
                        continue;
                    }
                    self.pending.push(Pending {
                        stream,
                        buf: Vec::with_capacity(REQUEST_MIN + MAX_DESCR),
                        since: Instant::now(),
                        id,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ECONNABORTED and the like concern one connection only.
                Err(e) => {
                    eprintln!("shmif: vde {}: accept: {e} (ignored)", self.dir.display());
                    break;
                }
            }
        }
        // Requests arriving.
        let now = Instant::now();
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            let mut chunk = [0u8; REQUEST_MIN + MAX_DESCR + 1];
            let outcome: Result<Option<Request>, String> = loop {
                match p.stream.read(&mut chunk) {
                    Ok(0) => {
                        break Err(format!(
                            "the client closed the connection after {} bytes of its request",
                            p.buf.len()
                        ))
                    }
                    Ok(n) => {
                        p.buf.extend_from_slice(&chunk[..n]);
                        match parse_request(&p.buf) {
                            Ok(None) => continue,
                            other => break other,
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if now >= p.since + REQUEST_TIMEOUT {
                            break Err(format!(
                                "incomplete VDE request ({} of at least {REQUEST_MIN} bytes) \
                                 after {} s",
                                p.buf.len(),
                                REQUEST_TIMEOUT.as_secs()
                            ));
                        }
                        break Ok(None);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(format!("reading the request: {e}")),
                }
            };
            match outcome {
                Ok(None) => i += 1,
                Ok(Some(req)) => {
                    let p = self.pending.swap_remove(i);
                    match self.open_port(p.stream, req) {
                        Ok(port) => ctx.add_port(Box::new(port)),
                        Err(why) => self.log_refused(p.id, &why),
                    }
                }
                Err(why) => {
                    let p = self.pending.swap_remove(i);
                    self.log_refused(p.id, &why);
                }
            }
        }
        Ok(Service::Idle)
    }

    fn send_batch(&mut self, _frames: &[&[u8]]) -> Result<()> {
        Ok(())
    }

    fn report(&self) -> String {
        format!(
            "{} client connections, {} refused",
            self.accepted, self.refused
        )
    }
}

/// One client of the switch: its control stream and its datagram socket.
pub struct VdePort {
    number: u32,
    descr: String,
    ctl: UnixStream,
    data: UnixDatagram,
    path: PathBuf,
    numbers: Numbers,
    /// Frames the client's socket could not take yet (its buffer was
    /// full, or it had not connected back yet), oldest first.
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    /// Frames lost because the queue was full.
    full_drops: u64,
    /// Since when the client has taken nothing while frames waited.
    stalled_since: Option<Instant>,
}

impl Drop for VdePort {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.numbers.borrow_mut().remove(&self.number);
    }
}

/// Whether a send error means the client's socket is gone.
fn peer_gone(e: Errno) -> bool {
    matches!(e, Errno::CONNREFUSED | Errno::NOTCONN | Errno::PIPE)
}

/// What one `sendmmsg` of some frames came to.
enum Sent {
    /// This many went (at least one).
    Some(usize),
    /// None: the client cannot take more now.
    Full,
    /// The first frame was refused for itself (skip it).
    Refused,
}

impl VdePort {
    /// Sends as many of `frames` (at most 64) as the client takes now.
    fn send_some<F: AsRef<[u8]>>(&self, frames: &[F]) -> Result<Sent> {
        let chunk = &frames[..frames.len().min(64)];
        let iovs: Vec<[IoSlice<'_>; 1]> =
            chunk.iter().map(|f| [IoSlice::new(f.as_ref())]).collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = chunk
            .iter()
            .map(|_| SendAncillaryBuffer::default())
            .collect();
        let mut msgs: Vec<MMsgHdr<'_>> = iovs
            .iter()
            .zip(controls.iter_mut())
            .map(|(iov, c)| MMsgHdr::new(iov, c))
            .collect();
        loop {
            return match sendmmsg(self.data.as_fd(), &mut msgs, SendFlags::DONTWAIT) {
                Ok(0) | Err(Errno::AGAIN) => Ok(Sent::Full),
                Ok(n) => Ok(Sent::Some(n)),
                Err(Errno::INTR) => continue,
                Err(e) if peer_gone(e) => Err(anyhow!(
                    "the client's socket is gone: {}",
                    io::Error::from(e)
                )),
                Err(_) => Ok(Sent::Refused),
            };
        }
    }

    /// Sends what is queued, as far as the client takes it.
    fn flush(&mut self, now: Instant) -> Result<()> {
        while !self.queue.is_empty() {
            let (a, b) = self.queue.as_slices();
            let front = if a.is_empty() { b } else { a };
            match self.send_some(front)? {
                Sent::Some(n) => {
                    for f in self.queue.drain(..n) {
                        self.queued_bytes -= f.len();
                    }
                    self.stalled_since = None;
                }
                Sent::Refused => {
                    if let Some(f) = self.queue.pop_front() {
                        self.queued_bytes -= f.len();
                        self.full_drops += 1;
                    }
                }
                Sent::Full => {
                    self.stalled_since.get_or_insert(now);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Queues frames the client cannot take now; beyond the bound they are
    /// dropped, and a client stalled for [`STALL_LIMIT`] is disconnected.
    fn enqueue(&mut self, frames: &[&[u8]], now: Instant) -> Result<()> {
        let mut dropped = 0;
        for f in frames {
            if self.queue.len() >= QUEUE_FRAMES || self.queued_bytes + f.len() > QUEUE_BYTES {
                dropped += 1;
            } else {
                self.queued_bytes += f.len();
                self.queue.push_back(f.to_vec());
            }
        }
        let since = *self.stalled_since.get_or_insert(now);
        if dropped > 0 {
            self.full_drops += dropped;
            if now.duration_since(since) >= STALL_LIMIT {
                return Err(anyhow!(
                    "the client has read nothing for {} s ({} frames dropped for it): \
                     disconnected",
                    STALL_LIMIT.as_secs(),
                    self.full_drops
                ));
            }
        }
        Ok(())
    }
}

impl Port for VdePort {
    fn name(&self) -> String {
        if self.descr.is_empty() {
            format!("vde port {}", self.number)
        } else {
            format!("vde port {} ({})", self.number, self.descr)
        }
    }

    fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let data = if self.queue.is_empty() {
            PollFlags::IN
        } else {
            PollFlags::IN | PollFlags::OUT
        };
        vec![(self.ctl.as_fd(), PollFlags::IN), (self.data.as_fd(), data)]
    }

    fn max_frame(&self) -> usize {
        MAX_FRAME
    }

    fn service(&mut self, ctx: &mut Ctx<'_>) -> Result<Service> {
        // The control stream: EOF ends the port; anything a client writes
        // there after its request is read and ignored.
        let mut scratch = [0u8; 512];
        loop {
            match self.ctl.read(&mut scratch) {
                Ok(0) => {
                    return Ok(Service::Closed(
                        "the client closed its control stream".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Ok(Service::Closed(format!("control stream: {e}"))),
            }
        }
        self.flush(Instant::now())?;
        let data = &self.data;
        read_ready(ctx, READ_ROOM, |room| data.recv(room).map(Some))
            .map_err(|e| anyhow!("receiving from the client: {e}"))
    }

    fn send_batch(&mut self, frames: &[&[u8]]) -> Result<()> {
        let now = Instant::now();
        if !self.queue.is_empty() {
            // Keep the order: behind what waits.
            self.enqueue(frames, now)?;
            return self.flush(now);
        }
        let mut rest = frames;
        while !rest.is_empty() {
            match self.send_some(rest)? {
                Sent::Some(n) => rest = &rest[n..],
                Sent::Refused => {
                    self.full_drops += 1;
                    rest = &rest[1..];
                }
                Sent::Full => return self.enqueue(rest, now),
            }
        }
        Ok(())
    }

    fn report(&self) -> String {
        if self.full_drops == 0 {
            String::new()
        } else {
            format!("{} lost to a full client buffer", self.full_drops)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(magic: u32, version: u32, ty: u32, path: &str, descr: &str) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&magic.to_ne_bytes());
        b.extend_from_slice(&version.to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&sockaddr_un(Path::new(path)).unwrap());
        b.extend_from_slice(descr.as_bytes());
        b
    }

    #[test]
    fn requests_decode() {
        let r = request(MAGIC, 3, 0, "/tmp/sw/.01234-00000", "qemu\0");
        assert_eq!(
            parse_request(&r).unwrap().unwrap(),
            Request {
                port: 0,
                sock: "/tmp/sw/.01234-00000".into(),
                descr: "qemu".into()
            }
        );
        let r = request(MAGIC, 3, 7 << 8, "/x", "");
        assert_eq!(parse_request(&r).unwrap().unwrap().port, 7);
        assert_eq!(parse_request(&r[..REQUEST_MIN - 1]), Ok(None));
        assert_eq!(parse_request(&r[..3]), Ok(None));
    }

    #[test]
    fn garbage_is_refused_early() {
        assert!(parse_request(b"GET / HTTP/1.0\r\n")
            .unwrap_err()
            .contains("magic"));
        let r = request(MAGIC, 2, 0, "/x", "");
        assert!(parse_request(&r[..8]).unwrap_err().contains("version 2"));
        let r = request(MAGIC, 3, 5, "/x", "");
        assert!(parse_request(&r).unwrap_err().contains("type 5"));
        let mut r = request(MAGIC, 3, 0, "/x", "");
        r.extend_from_slice(&[b'a'; 200]);
        assert!(parse_request(&r).unwrap_err().contains("at most"));
        let mut r = request(MAGIC, 3, 0, "/x", "");
        r[14] = 0;
        assert!(parse_request(&r).unwrap_err().contains("abstract"));
    }
}
