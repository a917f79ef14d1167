//! TCP/IP over a bus, between separate `shmif` processes: `host`, `ping`
//! (IPv4 and IPv6) and `tcp-send` to a sink and through an echo, and hosts
//! that ping and send to each other (`host --ping --tcp-send`).

mod common;

use common::{assert_fails_saying, shmif, show, Proc, Stream, SERVER};
use std::path::Path;
use std::process::{ExitStatus, Output};
use std::time::{Duration, Instant};

/// Starts `shmif host BUS ARGS` (its stdout lines on a channel) and waits
/// until it is up. Dropping it stops the host (SIGTERM first, so that it
/// detaches cleanly).
fn start_host(bus: &Path, args: &[&str]) -> Proc {
    let mut h = Proc::shmif("host", bus, args, Stream::Lines, Stream::Inherit);
    let up = h
        .out()
        .expect(|l| l.contains(" up on "), Duration::from_secs(10));
    assert!(up.starts_with("host "), "{up}");
    h
}

/// The next line of a host's that starts with `prefix` (a report), within
/// 10 s.
fn next_report(host: &mut Proc, prefix: &str) -> String {
    host.out()
        .expect(|l| l.starts_with(prefix), Duration::from_secs(10))
}

/// Waits (up to `limit`) for the host to exit by itself; its status and
/// every line it printed.
fn finish(mut host: Proc, limit: Duration) -> (ExitStatus, Vec<String>) {
    let (_, ended) = host.out().until_end(limit);
    assert!(
        ended,
        "host did not finish within {limit:?}; {}",
        host.out().so_far()
    );
    let status = host.wait(limit);
    (status, std::mem::take(&mut host.out().seen))
}

/// SIGTERM; the exit status and every line the host printed.
fn terminate(mut host: Proc) -> (ExitStatus, Vec<String>) {
    let status = host.stop(rustix::process::Signal::TERM, Duration::from_secs(5));
    // The reader passes on the last lines, then disconnects.
    host.out().until_end(Duration::from_secs(2));
    (status, std::mem::take(&mut host.out().seen))
}

/// `shmif ping BUS --ip IP DEST ARGS`.
fn ping(bus: &str, ip: &str, dest: &str, args: &[&str]) -> Output {
    shmif(&[&["ping", bus, "--ip", ip, dest][..], args].concat())
}

/// `shmif tcp-send BUS --ip IP DEST --megabytes MB ARGS`.
fn tcp_send(bus: &str, ip: &str, dest: &str, mb: &str, args: &[&str]) -> Output {
    shmif(
        &[
            &["tcp-send", bus, "--ip", ip, dest, "--megabytes", mb][..],
            args,
        ]
        .concat(),
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
    let mut host = start_host(&bus, &SERVER);

    // IPv4 ping: one line per reply with its time, a summary, exit 0.
    let o = ping(b, "10.0.0.2/24", "10.0.0.1", &["-c", "3", "-i", "0.02"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(reply_lines(&o), 3, "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("3 packets transmitted, 3 received, 0% packet loss"),
        "{out}"
    );
    assert!(out.contains("rtt min/avg/median/max = "), "{out}");

    // IPv6 ping, with neighbour discovery, with only an IPv6 address.
    let o = ping(
        b,
        "fd00::2/64",
        "fd00::1",
        &["-c", "3", "-i", "0.02", "-s", "1000"],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(reply_lines(&o), 3, "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1008 bytes from fd00::1"));

    // Nobody has this address: no reply, non-zero exit.
    let o = ping(
        b,
        "10.0.0.2/24",
        "10.0.0.99",
        &["-c", "2", "-i", "0.05", "-W", "0.3"],
    );
    assert!(!o.status.success(), "{}", show(&o));
    assert_eq!(reply_lines(&o), 0, "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("100% packet loss"));

    // TCP to the sink: every byte arrives and matches the pattern.
    let o = tcp_send(b, "10.0.0.2/24", "10.0.0.1:9000", "8", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(": 8388608 bytes in "), "{out}");
    assert!(out.contains(" MiB/s"), "{out}");
    let report = next_report(&mut host, "tcp-sink 9000:");
    assert!(report.contains(": 8388608 bytes in "), "{report}");
    assert!(report.contains("pattern ok"), "{report}");

    // A second connection to the same sink, over IPv6.
    let o = tcp_send(b, "fd00::3/64", "[fd00::1]:9000", "1", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let report = next_report(&mut host, "tcp-sink 9000:");
    assert!(report.contains("from fd00::3"), "{report}");
    assert!(
        report.contains(": 1048576 bytes in ") && report.contains("pattern ok"),
        "{report}"
    );

    // Through the echo: everything comes back intact.
    let o = tcp_send(b, "10.0.0.2/24", "10.0.0.1:7", "2", &["--expect-echo"]);
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("echo: 2097152 bytes back, pattern ok"),
        "{out}"
    );
    let report = next_report(&mut host, "tcp-echo 7:");
    assert!(report.contains("echoed 2097152 bytes"), "{report}");

    // A port nobody serves: refused, non-zero exit, a clear message.
    let o = tcp_send(b, "10.0.0.2/24", "10.0.0.1:9999", "1", &["-W", "3"]);
    assert_fails_saying(&o, "refused");

    // SIGTERM: the host detaches and exits 130 (issue 14: every command
    // stopped by a signal does; it was 0).
    let (status, _) = terminate(host);
    assert_eq!(status.code(), Some(130), "host exited with {status}");
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
    let mut server = start_host(&bus, &SERVER);
    // The client serves a sink of its own, and its actions (in this
    // order) take about two seconds: the pings, at 10 ms intervals.
    let mut client = start_host(
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
    client
        .out()
        .expect(|l| l.starts_with("PING 10.0.0.1 "), Duration::from_secs(5));
    let o = ping(b, "10.0.0.3/24", "10.0.0.2", &["-c", "3", "-i", "0.01"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(reply_lines(&o), 3, "{}", show(&o));
    let o = tcp_send(b, "10.0.0.3/24", "10.0.0.2:9001", "1", &[]);
    assert!(o.status.success(), "{}", show(&o));

    let (status, out) = finish(client, Duration::from_secs(30));
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
    let sink = next_report(&mut server, "tcp-sink 9000:");
    assert!(
        sink.contains("from 10.0.0.2:")
            && sink.contains(": 3145728 bytes in ")
            && sink.contains("pattern ok"),
        "{sink}"
    );
    let echo = next_report(&mut server, "tcp-echo 7:");
    assert!(
        echo.contains("from fd00::2") && echo.contains("echoed 3145728 bytes"),
        "{echo}"
    );
    assert_eq!(terminate(server).0.code(), Some(130));
}

#[test]
fn host_actions_against_a_missing_host_fail() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    // Nobody has 10.0.0.99: no reply, no connection; exit 1.
    let client = start_host(
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
    let (status, out) = finish(client, Duration::from_secs(30));
    let all = out.join("\n");
    assert_eq!(status.code(), Some(1), "{all}");
    assert!(
        all.contains("2 packets transmitted, 0 received, 100% packet loss"),
        "{all}"
    );
    // Issue 14: a transfer that never connected prints no `0 bytes in
    // 0.000 s` report line (its failure goes to stderr).
    assert!(
        !all.contains("tcp-send 10.0.0.2 -> 10.0.0.99:9000:"),
        "{all}"
    );
    assert!(all.contains(": actions done: 0 of 2 succeeded"), "{all}");

    // Without --exit-when-done, a host whose action failed goes on
    // serving, and exits 130 on SIGTERM (issue 14: it was 1).
    let mut host = start_host(
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
    host.out().expect(
        |l| l.contains(": actions done: 0 of 1 succeeded"),
        Duration::from_secs(10),
    );
    let o = ping(b, "10.0.0.4/24", "10.0.0.3", &["-c", "1"]);
    assert!(o.status.success(), "{}", show(&o));
    let (status, out) = terminate(host);
    assert_eq!(status.code(), Some(130), "{}", out.join("\n"));
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
    let mut host = start_host(
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
    let report = next_report(&mut host, "tcp-sink 9000:");
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
    let b = bus.to_str().unwrap();
    let mut sender = Proc::shmif(
        "tcp-send",
        &bus,
        &[
            "--ip",
            "10.0.0.2/24",
            "10.0.0.1:9000",
            "--megabytes",
            "100000",
        ],
        Stream::Null,
        Stream::Null,
    );
    std::thread::sleep(Duration::from_millis(300));
    // SIGTERM: it aborts its connection with a reset and detaches.
    sender.stop(rustix::process::Signal::TERM, Duration::from_secs(10));
    let o = tcp_send(b, "10.0.0.3/24", "10.0.0.1:9000", "1", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let report = host.out().expect(
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
    let d = dir.path().to_str().unwrap();
    let o = ping(b, "10.0.0.300/24", "10.0.0.1", &[]);
    assert_fails_saying(&o, "10.0.0.300");
    let o = ping(b, "10.0.0.2/24", "fd00::1", &["-c", "1"]);
    assert_fails_saying(&o, "--ip6");
    assert_fails_saying(&shmif(&["host", b]), "--ip");
    assert_fails_saying(&shmif(&["host", d, "--ip", "10.0.0.1/24"]), d);
    let o = tcp_send(b, "10.0.0.2/24", "10.0.0.1:9000", "-1", &[]);
    assert_fails_saying(&o, "megabytes");
}
