//! A TCP transfer of the test pattern on a stack: what `shmif tcp-send`
//! does, and `shmif host --tcp-send`.

use super::{args::check_family, pattern, reset, stack::tcp_socket, Activity, Stack, Step};
use crate::cli::output;
use anyhow::{bail, Result};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpCidr, IpEndpoint};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long an aborted transfer keeps answering the server's segments
/// with resets (see [`TcpSender`]'s `finish`).
const RESET_LINGER: Duration = Duration::from_millis(300);

/// How long to wait for the server to close its side once everything is
/// acknowledged (a sink closes at once).
const LINGER: Duration = Duration::from_secs(1);

/// The local port for this stack's `n`th outgoing connection: in the
/// dynamic range (49152 to 65535), derived from the interface's random
/// sender id, and none of `avoid` (ports the stack listens on, whose
/// listening sockets would take the connection's segments).
pub fn local_port(stack: &Stack, n: u16, avoid: &[u16]) -> u16 {
    let base = stack.shmif.sender_id() % 16384;
    (0..16384u64)
        .map(|k| 49152 + ((base + u64::from(n) + k) % 16384) as u16)
        .find(|p| !avoid.contains(p))
        .unwrap_or(49152)
}

/// One transfer of the test pattern: what `shmif tcp-send` does, and
/// `shmif host --tcp-send`.
#[derive(Debug, Clone)]
pub struct TcpSendOptions {
    /// The server.
    pub dest: SocketAddr,
    /// How much to send, in MiB.
    pub megabytes: f64,
    /// Fail unless the server sends the whole stream back.
    pub expect_echo: bool,
    /// The socket's send and receive buffer size, in KiB.
    pub tcp_buffer: Option<usize>,
    /// Give up after this long without progress.
    pub timeout: Duration,
    /// Report as one JSON object on stdout instead of text lines.
    pub json: bool,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

impl TcpSendOptions {
    /// Bytes to send.
    pub fn total(&self) -> u64 {
        (self.megabytes * output::MIB).round() as u64
    }

    /// Checks that there is something to send, a port to send it to, and
    /// an address in `addrs` of DEST's family; `what` names DEST in the
    /// messages.
    pub fn check(&self, what: &str, addrs: &[IpCidr]) -> Result<()> {
        if self.total() == 0 {
            bail!("--megabytes {}: less than one byte", self.megabytes);
        }
        if self.dest.port() == 0 {
            bail!("{what}: port 0 cannot be connected to");
        }
        check_family(what, self.dest.ip(), addrs)
    }
}

/// A transfer on a [`Stack`]: connects its own TCP socket, sends the
/// pattern, checks whatever comes back against it, and prints the
/// `tcp-send` report when finished. Succeeds when everything was sent and
/// acknowledged (and, with `expect_echo`, echoed back intact).
pub struct TcpSender {
    opts: TcpSendOptions,
    /// Prefix of the failure message on stderr (`shmif tcp-send`).
    context: String,
    handle: SocketHandle,
    total: u64,
    /// Bytes handed to the socket.
    sent: u64,
    echoed: u64,
    echo_bad: Option<u64>,
    start: Option<Instant>,
    acked_at: Option<Instant>,
    last_progress: Instant,
    /// Bytes acknowledged, bytes queued, bytes echoed, state: progress is
    /// a change in any.
    last_mark: (u64, usize, u64, tcp::State),
    failure: Option<String>,
    /// Whether the interface went down (SIGINT/SIGTERM) under it.
    interrupted: bool,
    bar: Option<output::Progress>,
}

/// The results of a transfer, as `tcp-send --json` prints them.
#[derive(Debug, serde::Serialize)]
struct Report<'a> {
    src: String,
    dest: String,
    bytes: u64,
    bytes_acked: u64,
    seconds: f64,
    mib_per_sec: f64,
    connected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    echoed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    echo_ok: Option<bool>,
    ok: bool,
    interrupted: bool,
    error: Option<&'a str>,
}

/// What to say when nobody answered for `dest`: whether anyone has said
/// on the bus that it has the address.
pub fn nobody_answered(stack: &Stack, dest: std::net::IpAddr) -> Option<String> {
    if stack.heard(IpAddress::from(dest)) {
        return None;
    }
    Some(match dest {
        std::net::IpAddr::V4(_) => format!("nobody answered ARP for {dest}"),
        std::net::IpAddr::V6(_) => format!("nobody answered neighbour discovery for {dest}"),
    })
}

impl TcpSender {
    /// Adds a socket to `stack` and starts connecting from `local_port`.
    /// `opts` should have passed [`TcpSendOptions::check`] against the
    /// stack's addresses; `context` prefixes the failure message.
    pub fn start(
        stack: &mut Stack,
        opts: TcpSendOptions,
        local_port: u16,
        context: &str,
    ) -> Result<TcpSender> {
        let kib = crate::net::stack::tcp_buffer_kib(opts.tcp_buffer, &stack.shmif);
        let handle = stack.sockets.add(tcp_socket(kib));
        let s = stack.sockets.get_mut::<tcp::Socket>(handle);
        if let Err(e) = s.connect(stack.ip.context(), IpEndpoint::from(opts.dest), local_port) {
            stack.sockets.remove(handle);
            bail!("cannot connect to {}: {e}", opts.dest);
        }
        Ok(TcpSender {
            total: opts.total(),
            opts,
            context: context.to_string(),
            handle,
            sent: 0,
            echoed: 0,
            echo_bad: None,
            start: None,
            acked_at: None,
            last_progress: Instant::now(),
            last_mark: (0, 0, 0, tcp::State::Closed),
            failure: None,
            interrupted: false,
            bar: None,
        })
    }

    fn fail(&mut self, why: String) -> Step {
        self.failure = Some(why);
        Step::Done
    }
}

impl Activity for TcpSender {
    fn step(&mut self, stack: &mut Stack) -> Step {
        let total = self.total;
        let dest = self.opts.dest;
        let s = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        let state = s.state();
        if self.start.is_none() && matches!(state, tcp::State::Established) {
            self.start = Some(Instant::now());
            if self.opts.progress {
                self.bar = output::Progress::bytes(total, &format!("tcp-send to {dest}"));
            }
        }
        if self.start.is_none() && state == tcp::State::Closed {
            return self.fail(format!(
                "connection to {dest} refused or reset (is a server listening there?)"
            ));
        }
        let mut moved = false;
        while self.sent < total && s.can_send() {
            let at = self.sent;
            let n = s
                .send(|buf| {
                    let n = buf.len().min((total - at) as usize);
                    pattern::pattern_fill(at, &mut buf[..n]);
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            self.sent += n as u64;
            moved = true;
        }
        if self.sent == total && s.may_send() {
            s.close(); // FIN after the data
        }
        moved |= pattern::recv_pattern(s, &mut self.echoed, &mut self.echo_bad);
        if self.start.is_some()
            && self.acked_at.is_none()
            && self.sent == total
            && s.send_queue() == 0
        {
            self.acked_at = Some(Instant::now());
        }
        // Done once everything (and our FIN) is acknowledged and the peer
        // has closed too, which lets it finish cleanly; a server that keeps
        // its side open gets `LINGER`, unless its echo is awaited.
        let fin_acked = matches!(
            state,
            tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closed
        );
        if let Some(t) = self.acked_at.filter(|_| fin_acked) {
            if matches!(state, tcp::State::TimeWait | tcp::State::Closed) {
                return Step::Done;
            }
            if !self.opts.expect_echo && t.elapsed() >= LINGER {
                return Step::Done;
            }
        }
        let acked = self.sent - s.send_queue() as u64;
        if self.start.is_some() && state == tcp::State::Closed && self.acked_at.is_none() {
            return self.fail(format!(
                "connection reset by {dest} after {acked} of {total} bytes"
            ));
        }
        let mark = (acked, s.send_queue(), self.echoed, state);
        if let Some(bar) = &self.bar {
            bar.set(acked);
        }
        if mark != self.last_mark {
            self.last_mark = mark;
            self.last_progress = Instant::now();
        }
        if moved {
            return Step::Busy;
        }
        let timeout = self.opts.timeout;
        let left = timeout.saturating_sub(self.last_progress.elapsed());
        if left.is_zero() {
            let secs = timeout.as_secs_f64();
            let nobody = nobody_answered(stack, dest.ip());
            return self.fail(match self.start {
                None => match nobody {
                    Some(n) => format!("{n} in {secs:.1} s: no host on the bus has that address"),
                    None => format!("no answer from {dest} in {secs:.1} s"),
                },
                Some(_) => format!(
                    "stalled: no progress for {:.1} s ({acked} of {total} bytes acknowledged, {} echoed)",
                    timeout.as_secs_f64(),
                    self.echoed
                ),
            });
        }
        let nap = if self.acked_at.is_some() {
            left.min(LINGER)
        } else {
            left
        };
        Step::Idle(Some(Instant::now() + nap))
    }

    fn interrupt(&mut self, why: &str) {
        self.interrupted = true;
        if self.failure.is_none() {
            self.failure = Some(why.to_string());
        }
    }

    fn finish(&mut self, stack: &mut Stack) -> bool {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        let s = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        if self.failure.is_some() && s.is_open() {
            // Abort with a reset, so that the server frees the connection
            // at once. The interface may have been taken down to stop the
            // wait: up again, just long enough to send it.
            s.abort();
            if !stack.shmif.is_up() {
                let _ = stack.shmif.up();
            }
            let _ = stack.guard.take_last_reset();
            stack.poll();
            let _ = stack.dev.flush();
            // That reset carries our next sequence number, which a server
            // that lost frames of ours (a hole before it) and whose window
            // is full takes for out of window and drops: the same reset
            // one earlier is in its window (see `net::reset`).
            if let Some(rst) = stack.guard.take_last_reset() {
                if let Some(earlier) = reset::one_before(&rst) {
                    let _ = stack.shmif.send(&earlier);
                }
            }
            // Linger a moment with the socket gone: every segment the
            // server sends meanwhile (an ACK, a window update, a challenge
            // ACK) is answered with a reset at exactly the sequence number
            // it expects.
            stack.sockets.remove(self.handle);
            let until = Instant::now() + RESET_LINGER;
            loop {
                stack.poll();
                let _ = stack.dev.flush();
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() || !stack.wait(Some(left)).unwrap_or(false) {
                    break;
                }
            }
        } else {
            stack.sockets.remove(self.handle);
        }
        let total = self.total;
        let acked = match self.acked_at {
            Some(_) => total,
            None => self.last_mark.0,
        };
        let secs = match (self.start, self.acked_at) {
            (Some(s), Some(e)) => e.duration_since(s).as_secs_f64(),
            (Some(s), None) => s.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        let remote = IpAddress::from(self.opts.dest.ip());
        let src = stack
            .source_for(remote)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let connected = self.start.is_some();
        // A transfer that never connected has no figures to report.
        if connected && !self.opts.json {
            output::say(&format!(
                "tcp-send {src} -> {}: {acked} bytes in {secs:.3} s, {:.1} MiB/s",
                self.opts.dest,
                output::mib_per_sec(acked, secs)
            ));
        }
        let mut ok = self.failure.is_none();
        let mut echo_ok = None;
        if self.echoed > 0 || self.opts.expect_echo {
            let verdict = match self.echo_bad {
                Some(at) => {
                    ok = false;
                    echo_ok = Some(false);
                    format!("pattern MISMATCH at byte {at}")
                }
                None if self.echoed == total => {
                    echo_ok = Some(true);
                    "pattern ok".to_string()
                }
                None => {
                    if self.opts.expect_echo {
                        ok = false;
                    }
                    echo_ok = Some(false);
                    format!("incomplete (pattern ok so far; {total} sent)")
                }
            };
            if !self.opts.json {
                output::say(&format!("echo: {} bytes back, {verdict}", self.echoed));
            }
        }
        if self.opts.json {
            let report = Report {
                src,
                dest: self.opts.dest.to_string(),
                bytes: total,
                bytes_acked: acked,
                seconds: secs,
                mib_per_sec: output::mib_per_sec(acked, secs),
                connected,
                echoed: echo_ok.map(|_| self.echoed),
                echo_ok,
                ok,
                interrupted: self.interrupted,
                error: self.failure.as_deref(),
            };
            output::say(&serde_json::to_string(&report).unwrap_or_default());
        }
        if let Some(f) = &self.failure {
            eprintln!("{}: {f}", self.context);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bus_opts::BusOpts;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;

    /// What the server thread is told and what it reports.
    const RUN: u8 = 0;
    const HOLD: u8 = 1;
    const HELD: u8 = 2;
    const RELEASE: u8 = 3;
    const RUNNING_AGAIN: u8 = 4;

    /// A sink's connection to a sender that lost frames to it (the server
    /// missed some of the stream, so a hole sits before what the sender
    /// has sent, and its window is full behind it) is still reset by the
    /// sender's abort: the abort's own reset is out of the server's window
    /// and dropped, and its companion one sequence number earlier is taken.
    #[test]
    fn an_aborted_transfer_resets_a_server_that_lost_frames() {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        let server_addr: IpCidr = "10.0.0.1/24".parse().unwrap();
        let client_addr: IpCidr = "10.0.0.2/24".parse().unwrap();
        let mut server = Stack::attach(&bus, &BusOpts::for_tests(), None, &[server_addr]).unwrap();
        let mut client = Stack::attach(&bus, &BusOpts::for_tests(), None, &[client_addr]).unwrap();

        // The server: a sink on port 9000 with no timeout of its own, run
        // in a thread that can be told to miss frames (taken down and up
        // again, its reader skips what was written meanwhile).
        let mut listener = tcp_socket(16);
        listener.listen(9000).unwrap();
        let handle = server.sockets.add(listener);
        let ctl = Arc::new(AtomicU8::new(RUN));
        let ctl2 = ctl.clone();
        let server_thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut was_established = false;
            let mut buf = vec![0u8; 65536];
            while Instant::now() < deadline {
                match ctl2.load(Ordering::SeqCst) {
                    HOLD => {
                        server.shmif.down();
                        ctl2.store(HELD, Ordering::SeqCst);
                    }
                    HELD => {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    RELEASE => {
                        server.shmif.up().unwrap();
                        ctl2.store(RUNNING_AGAIN, Ordering::SeqCst);
                    }
                    _ => {}
                }
                server.poll();
                let s = server.sockets.get_mut::<tcp::Socket>(handle);
                while let Ok(n) = s.recv_slice(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                if s.state() == tcp::State::Established {
                    was_established = true;
                } else if was_established {
                    // Reset (or closed): what the sender's abort is for.
                    return Some(s.state());
                }
                let _ = server.wait(Some(Duration::from_millis(2)));
            }
            None
        });

        let opts = TcpSendOptions {
            dest: "10.0.0.1:9000".parse().unwrap(),
            megabytes: 100.0,
            expect_echo: false,
            tcp_buffer: Some(16),
            timeout: Duration::from_secs(10),
            json: true,
            progress: false,
        };
        let port = local_port(&client, 0, &[]);
        let mut sender = TcpSender::start(&mut client, opts, port, "test").unwrap();
        let drive =
            |client: &mut Stack, sender: &mut TcpSender, until: &dyn Fn(&TcpSender) -> bool| {
                let deadline = Instant::now() + Duration::from_secs(10);
                while !until(sender) {
                    assert!(Instant::now() < deadline, "the transfer made no progress");
                    client.poll();
                    if let Step::Idle(_) = sender.step(client) {
                        let _ = client.wait(Some(Duration::from_millis(2)));
                    }
                }
            };
        // Some of the stream gets through.
        drive(&mut client, &mut sender, &|s| s.sent > 200_000);
        // Then the server misses what comes next: the sender fills the
        // window it was given, and no ACK comes back.
        ctl.store(HOLD, Ordering::SeqCst);
        while ctl.load(Ordering::SeqCst) != HELD {
            std::thread::sleep(Duration::from_millis(1));
        }
        let until = Instant::now() + Duration::from_millis(50);
        drive(&mut client, &mut sender, &|_| Instant::now() > until);
        ctl.store(RELEASE, Ordering::SeqCst);
        while ctl.load(Ordering::SeqCst) != RUNNING_AGAIN {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Interrupted (as by SIGINT): the abort.
        sender.interrupt("interrupted");
        assert!(!sender.finish(&mut client));
        let ended = server_thread.join().unwrap();
        assert!(
            ended.is_some(),
            "the server's connection was still open 10 s after the abort"
        );
    }
}
