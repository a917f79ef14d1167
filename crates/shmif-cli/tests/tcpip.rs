//! TCP/IP over a bus, between separate `shmif` processes: `host`, `ping`
//! (IPv4 and IPv6) and `tcp-send` to a sink and through an echo, and hosts
//! that ping and send to each other (`host --ping --tcp-send`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const SHMIF: &str = env!("CARGO_BIN_EXE_shmif");

/// A running `shmif host`: its stdout lines arrive on a channel. Dropping
/// it kills the process, so that a failed assertion leaves nothing behind.
struct Host {
    child: Child,
    lines: Receiver<String>,
    /// Every line read so far, in order.
    seen: Vec<String>,
}

impl Host {
    fn start(bus: &Path, args: &[&str]) -> Host {
        let mut child = Command::new(SHMIF)
            .arg("host")
            .arg(bus)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start shmif host");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut h = Host {
            child,
            lines,
            seen: Vec::new(),
        };
        let up = h.expect(|l| l.contains(" up on "), Duration::from_secs(10));
        assert!(up.starts_with("host "), "{up}");
        h
    }

    /// The next line `want` accepts, within `timeout`.
    fn expect(&mut self, want: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if want(&l) {
                        return l;
                    }
                }
                Err(e) => panic!(
                    "host printed no expected line: {e}; so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits (up to `timeout`) for the host to exit by itself; its status
    /// and every line it printed.
    fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "host did not finish within {timeout:?}; so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s, std::mem::take(&mut self.seen));
            }
            assert!(
                Instant::now() < deadline,
                "host closed stdout but did not exit"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, and the exit status.
    fn terminate(self) -> std::process::ExitStatus {
        self.terminate_with_output().0
    }

    /// SIGTERM; the exit status and every line the host printed.
    fn terminate_with_output(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // The reader passes on the last lines, then disconnects.
                while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(l);
                }
                return (s, std::mem::take(&mut self.seen));
            }
            assert!(Instant::now() < deadline, "host ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // SIGTERM first (the host detaches cleanly), SIGKILL if it lingers.
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already reaped: its pid may belong to someone else now
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `shmif ARGS` to its end; kills it and fails after a minute, so
/// that a hang cannot stall the test run.
fn shmif(args: &[&str]) -> Output {
    let mut child = Command::new(SHMIF)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shmif");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut o).unwrap();
        o
    });
    let mut e = Vec::new();
    let err_reader = std::thread::spawn(move || {
        std::io::Read::read_to_end(&mut err, &mut e).unwrap();
        e
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shmif {} did not finish within 60 s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn reply_lines(o: &Output) -> usize {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(" bytes from ") && l.contains("time="))
        .count()
}

#[test]
fn ping_v4_v6_and_tcp_between_processes() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let mut host = Host::start(
        &bus,
        &[
            "--ip",
            "10.0.0.1/24",
            "--ip6",
            "fd00::1/64",
            "--tcp-sink",
            "9000",
            "--tcp-echo",
            "7",
        ],
    );

    // IPv4 ping: one line per reply with its time, a summary, exit 0.
    let o = shmif(&[
        "ping",
        b,
        "--ip",
        "10.0.0.2/24",
        "10.0.0.1",
        "-c",
        "3",
        "-i",
        "0.02",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(reply_lines(&o), 3, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("3 packets transmitted, 3 received, 0% packet loss"),
        "{out}"
    );
    assert!(out.contains("rtt min/avg/median/max = "), "{out}");

    // IPv6 ping, with neighbour discovery, with only an IPv6 address.
    let o = shmif(&[
        "ping",
        b,
        "--ip",
        "fd00::2/64",
        "fd00::1",
        "-c",
        "3",
        "-i",
        "0.02",
        "-s",
        "1000",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(reply_lines(&o), 3, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1008 bytes from fd00::1"));

    // Nobody has this address: no reply, non-zero exit.
    let o = shmif(&[
        "ping",
        b,
        "--ip",
        "10.0.0.2/24",
        "10.0.0.99",
        "-c",
        "2",
        "-i",
        "0.05",
        "-W",
        "0.3",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(reply_lines(&o), 0, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("100% packet loss"));

    // TCP to the sink: every byte arrives and matches the pattern.
    let o = shmif(&[
        "tcp-send",
        b,
        "--ip",
        "10.0.0.2/24",
        "10.0.0.1:9000",
        "--megabytes",
        "8",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(": 8388608 bytes in "), "{out}");
    assert!(out.contains(" MiB/s"), "{out}");
    let report = host.expect(|l| l.starts_with("tcp-sink 9000:"), Duration::from_secs(10));
    assert!(report.contains(": 8388608 bytes in "), "{report}");
    assert!(report.contains("pattern ok"), "{report}");

    // A second connection to the same sink, over IPv6.
    let o = shmif(&[
        "tcp-send",
        b,
        "--ip",
        "fd00::3/64",
        "[fd00::1]:9000",
        "--megabytes",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report = host.expect(|l| l.starts_with("tcp-sink 9000:"), Duration::from_secs(10));
    assert!(report.contains("from fd00::3"), "{report}");
    assert!(
        report.contains(": 1048576 bytes in ") && report.contains("pattern ok"),
        "{report}"
    );

    // Through the echo: everything comes back intact.
    let o = shmif(&[
        "tcp-send",
        b,
        "--ip",
        "10.0.0.2/24",
        "10.0.0.1:7",
        "--megabytes",
        "2",
        "--expect-echo",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("echo: 2097152 bytes back, pattern ok"),
        "{out}"
    );
    let report = host.expect(|l| l.starts_with("tcp-echo 7:"), Duration::from_secs(10));
    assert!(report.contains("echoed 2097152 bytes"), "{report}");

    // A port nobody serves: refused, non-zero exit, a clear message.
    let o = shmif(&[
        "tcp-send",
        b,
        "--ip",
        "10.0.0.2/24",
        "10.0.0.1:9999",
        "--megabytes",
        "1",
        "-W",
        "3",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refused"),
        "{}",
        text(&o)
    );

    // SIGTERM: the host detaches and exits 0.
    let status = host.terminate();
    assert!(status.success(), "host exited with {status}");
}

/// The index of the first line of `lines` that `want` accepts.
fn line_at(lines: &[String], want: impl Fn(&str) -> bool) -> usize {
    lines
        .iter()
        .position(|l| want(l))
        .unwrap_or_else(|| panic!("no such line in:\n{}", lines.join("\n")))
}

#[test]
fn host_pings_and_sends_to_another_host_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let mut server = Host::start(
        &bus,
        &[
            "--ip",
            "10.0.0.1/24",
            "--ip6",
            "fd00::1/64",
            "--tcp-sink",
            "9000",
            "--tcp-echo",
            "7",
        ],
    );
    // The client serves a sink of its own, and its actions (in this
    // order) take about two seconds: the pings, at 10 ms intervals.
    let mut client = Host::start(
        &bus,
        &[
            "--ip",
            "10.0.0.2/24",
            "--ip6",
            "fd00::2/64",
            "--tcp-sink",
            "9001",
            "--ping",
            "10.0.0.1",
            "--tcp-send",
            "10.0.0.1:9000",
            "--ping",
            "fd00::1",
            "--tcp-send-echo",
            "[fd00::1]:7",
            "--ping-count",
            "100",
            "--ping-interval",
            "0.01",
            "--megabytes",
            "3",
            "--exit-when-done",
        ],
    );

    // While the client is busy with its first action, a third interface
    // pings it and sends to its sink: it answers and serves as usual.
    client.expect(|l| l.starts_with("PING 10.0.0.1 "), Duration::from_secs(5));
    let o = shmif(&[
        "ping",
        b,
        "--ip",
        "10.0.0.3/24",
        "10.0.0.2",
        "-c",
        "3",
        "-i",
        "0.01",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(reply_lines(&o), 3, "{}", text(&o));
    let o = shmif(&[
        "tcp-send",
        b,
        "--ip",
        "10.0.0.3/24",
        "10.0.0.2:9001",
        "--megabytes",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o));

    let (status, out) = client.finish(Duration::from_secs(30));
    let all = out.join("\n");
    assert!(status.success(), "client exited with {status}:\n{all}");
    // Its own sink report came while its actions were still running.
    let served = line_at(&out, |l| {
        l.starts_with("tcp-sink 9001: from 10.0.0.3:")
            && l.contains(": 1048576 bytes in ")
            && l.contains("pattern ok")
    });
    let last_ping = line_at(&out, |l| l == "--- fd00::1 ping statistics ---");
    assert!(served < last_ping, "served only after the actions:\n{all}");
    // The actions ran in order and printed what ping and tcp-send print.
    let order = [
        line_at(&out, |l| l.starts_with("PING 10.0.0.1 from 10.0.0.2 ")),
        line_at(&out, |l| {
            l.starts_with("tcp-send 10.0.0.2 -> 10.0.0.1:9000: ")
        }),
        line_at(&out, |l| l.starts_with("PING fd00::1 from fd00::2 ")),
        line_at(&out, |l| l.starts_with("tcp-send fd00::2 -> [fd00::1]:7: ")),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "order {order:?}:\n{all}"
    );
    assert_eq!(
        out.iter()
            .filter(|l| l.contains("packets transmitted, 100 received, 0% packet loss"))
            .count(),
        2,
        "{all}"
    );
    assert!(
        all.contains("64 bytes from fd00::1: icmp_seq=99 time="),
        "{all}"
    );
    assert_eq!(
        out.iter()
            .filter(|l| l.starts_with("rtt min/avg/median/max = "))
            .count(),
        2,
        "{all}"
    );
    assert!(
        all.contains("tcp-send 10.0.0.2 -> 10.0.0.1:9000: 3145728 bytes in "),
        "{all}"
    );
    assert!(
        all.contains("echo: 3145728 bytes back, pattern ok"),
        "{all}"
    );
    assert!(all.contains(": actions done: 4 of 4 succeeded"), "{all}");
    assert!(all.contains("stopping (actions done)"), "{all}");

    // The server's side: every byte from the client checked, and echoed.
    let sink = server.expect(|l| l.starts_with("tcp-sink 9000:"), Duration::from_secs(10));
    assert!(
        sink.contains("from 10.0.0.2:")
            && sink.contains(": 3145728 bytes in ")
            && sink.contains("pattern ok"),
        "{sink}"
    );
    let echo = server.expect(|l| l.starts_with("tcp-echo 7:"), Duration::from_secs(10));
    assert!(
        echo.contains("from fd00::2") && echo.contains("echoed 3145728 bytes"),
        "{echo}"
    );
    assert!(server.terminate().success());
}

#[test]
fn host_actions_against_a_missing_host_fail() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    // Nobody has 10.0.0.99: no reply, no connection; exit 1.
    let client = Host::start(
        &bus,
        &[
            "--ip",
            "10.0.0.2/24",
            "--ping",
            "10.0.0.99",
            "--tcp-send",
            "10.0.0.99:9000",
            "--ping-count",
            "2",
            "--ping-interval",
            "0.05",
            "--ping-timeout",
            "0.3",
            "--tcp-timeout",
            "1",
            "--exit-when-done",
        ],
    );
    let (status, out) = client.finish(Duration::from_secs(30));
    let all = out.join("\n");
    assert_eq!(status.code(), Some(1), "{all}");
    assert!(
        all.contains("2 packets transmitted, 0 received, 100% packet loss"),
        "{all}"
    );
    assert!(
        all.contains("tcp-send 10.0.0.2 -> 10.0.0.99:9000: 0 bytes in "),
        "{all}"
    );
    assert!(all.contains(": actions done: 0 of 2 succeeded"), "{all}");

    // Without --exit-when-done, a host whose action failed goes on
    // serving, and exits 1 on SIGTERM.
    let mut host = Host::start(
        &bus,
        &[
            "--ip",
            "10.0.0.3/24",
            "--ping",
            "10.0.0.99",
            "--ping-count",
            "1",
            "--ping-timeout",
            "0.2",
        ],
    );
    host.expect(
        |l| l.contains(": actions done: 0 of 1 succeeded"),
        Duration::from_secs(10),
    );
    let o = shmif(&["ping", b, "--ip", "10.0.0.4/24", "10.0.0.3", "-c", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let (status, out) = host.terminate_with_output();
    assert_eq!(status.code(), Some(1), "{}", out.join("\n"));
    assert!(
        out.iter().any(|l| l.contains("stopping (signal)")),
        "{}",
        out.join("\n")
    );
}

/// A TCP/IP stack in this test process, on the library and smoltcp
/// directly: a peer that can send what `tcp-send` would not.
struct Peer {
    dev: shmif::smoltcp_device::ShmifDevice,
    ip: smoltcp::iface::Interface,
    sockets: smoltcp::iface::SocketSet<'static>,
}

impl Peer {
    fn attach(bus: &Path, addr: [u8; 4]) -> Peer {
        use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
        let mut dev =
            shmif::smoltcp_device::ShmifDevice::new(shmif::Interface::attach(bus).unwrap());
        let mac = EthernetAddress(dev.interface().mac().0);
        let mut ip = smoltcp::iface::Interface::new(
            smoltcp::iface::Config::new(mac.into()),
            &mut dev,
            smoltcp::time::Instant::now(),
        );
        ip.update_ip_addrs(|a| {
            a.push(IpCidr::new(
                IpAddress::v4(addr[0], addr[1], addr[2], addr[3]),
                24,
            ))
            .unwrap()
        });
        Peer {
            dev,
            ip,
            sockets: smoltcp::iface::SocketSet::new(vec![]),
        }
    }

    /// Polls until `done` says so; panics after `timeout`.
    fn run_until(&mut self, timeout: Duration, mut done: impl FnMut(&mut Self) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            self.ip.poll(
                smoltcp::time::Instant::now(),
                &mut self.dev,
                &mut self.sockets,
            );
            if done(self) {
                self.dev.flush().unwrap();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out");
            self.dev
                .poll_wait(&mut self.ip, &self.sockets, Some(left))
                .unwrap();
        }
    }
}

#[test]
fn sink_reports_wrong_data_and_udp_echo_answers() {
    use smoltcp::socket::{tcp, udp};
    use smoltcp::wire::{IpAddress, IpEndpoint};
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let mut host = Host::start(
        &bus,
        &[
            "--ip",
            "10.0.0.1/24",
            "--tcp-sink",
            "9000",
            "--udp-echo",
            "7",
        ],
    );
    let mut peer = Peer::attach(&bus, [10, 0, 0, 5]);

    // Bytes that are not the tcp-send pattern: the sink says where they
    // first differ (the pattern starts with eight zero bytes).
    let h = peer.sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    ));
    let remote = IpEndpoint::new(IpAddress::v4(10, 0, 0, 1), 9000);
    peer.sockets
        .get_mut::<tcp::Socket>(h)
        .connect(peer.ip.context(), remote, 50000)
        .unwrap();
    let mut sent = false;
    peer.run_until(Duration::from_secs(10), |p| {
        let s = p.sockets.get_mut::<tcp::Socket>(h);
        if !sent && s.can_send() {
            s.send_slice(b"\0\0\0not the pattern").unwrap();
            s.close();
            sent = true;
        }
        sent && !s.is_active()
    });
    let report = host.expect(|l| l.starts_with("tcp-sink 9000:"), Duration::from_secs(10));
    assert!(report.contains(": 18 bytes in "), "{report}");
    assert!(report.contains("pattern MISMATCH at byte 3"), "{report}");

    // UDP echo: the datagram comes back from port 7.
    let u = peer.sockets.add(udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
    ));
    peer.sockets.get_mut::<udp::Socket>(u).bind(40000).unwrap();
    let to = IpEndpoint::new(IpAddress::v4(10, 0, 0, 1), 7);
    peer.sockets
        .get_mut::<udp::Socket>(u)
        .send_slice(b"echo me", to)
        .unwrap();
    let mut back = Vec::new();
    peer.run_until(Duration::from_secs(10), |p| {
        let s = p.sockets.get_mut::<udp::Socket>(u);
        if let Ok((data, meta)) = s.recv() {
            assert_eq!(meta.endpoint, to);
            back = data.to_vec();
        }
        !back.is_empty()
    });
    assert_eq!(back, b"echo me");

    // A sender that stops in the middle of a transfer: the sink goes on
    // serving, and the next transfer is verified.
    let mut sender = Command::new(SHMIF)
        .args([
            "tcp-send",
            bus.to_str().unwrap(),
            "--ip",
            "10.0.0.2/24",
            "10.0.0.1:9000",
            "--megabytes",
            "100000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SIGTERM: it detaches at once, sending neither FIN nor RST.
    let pid = rustix::process::Pid::from_child(&sender);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let _ = sender.wait();
    let o = shmif(&[
        "tcp-send",
        bus.to_str().unwrap(),
        "--ip",
        "10.0.0.3/24",
        "10.0.0.1:9000",
        "--megabytes",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report = host.expect(
        |l| l.starts_with("tcp-sink 9000:") && l.contains("10.0.0.3"),
        Duration::from_secs(10),
    );
    assert!(
        report.contains(": 1048576 bytes in ") && report.contains("pattern ok"),
        "{report}"
    );
}

#[test]
fn bad_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let o = shmif(&["ping", b, "--ip", "10.0.0.300/24", "10.0.0.1"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("10.0.0.300"),
        "{}",
        text(&o)
    );
    let o = shmif(&["ping", b, "--ip", "10.0.0.2/24", "fd00::1", "-c", "1"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--ip6"),
        "{}",
        text(&o)
    );
    let o = shmif(&["host", b]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--ip"),
        "{}",
        text(&o)
    );
    let o = shmif(&["host", dir.path().to_str().unwrap(), "--ip", "10.0.0.1/24"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(dir.path().to_str().unwrap()),
        "{}",
        text(&o)
    );
    let o = shmif(&[
        "tcp-send",
        b,
        "--ip",
        "10.0.0.2/24",
        "10.0.0.1:9000",
        "--megabytes",
        "-1",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("megabytes"),
        "{}",
        text(&o)
    );
}
