//! `shmif qemu`: QEMU guests on a bus through QEMU's own socket back-ends.
//! Real guests (tests/guest/mod.rs): one on `-netdev stream` and one on
//! `-netdev vde` (through `shmif vde` on the same bus) ping each other, a
//! third on `-netdev dgram` reaches both; a guest killed and a new one
//! started on the same socket; `--connect` redialling a restarted QEMU
//! (`server=on`); and every kind of bad stream input, each ending only
//! that peer's connection.
//!
//! Tests that need QEMU and the guest kernel print `*** SKIPPED` and pass
//! without them. Guest traffic stays on the test's bus, on 10.213.6.0/24.

mod common;
mod guest;

use common::{Proc, Stream};
use guest::{Guest, Spec};
use std::path::Path;
use std::time::Duration;

/// `shmif qemu BUS ARGS`, started and serving.
fn start_qemu_bridge(bus: &Path, args: &[&str]) -> Proc {
    let mut p = Proc::shmif("qemu", bus, args, Stream::Lines, Stream::Lines);
    p.out()
        .expect_containing("qemu bridge up", Duration::from_secs(10));
    p
}

/// Guest commands: wait until each address answers, then ping it 3 times
/// and print `PING <addr> RC <status>`; then stay up (answering pings)
/// until killed.
fn pinger(addrs: &[&str]) -> String {
    let mut s = String::new();
    for a in addrs {
        s.push_str(&format!(
            "for i in $(seq 60); do ping -c 1 -W 1 {a} >/dev/null 2>&1 && break; done\n\
             ping -c 3 -W 3 {a} >/dev/null 2>&1; echo \"PING {a} RC $?\"\n"
        ));
    }
    s.push_str("echo PINGS-DONE\nsleep 600\n");
    s
}

#[test]
fn guests_on_netdev_stream_vde_and_dgram_reach_each_other_across_the_bus() {
    let test = "guests_on_netdev_stream_vde_and_dgram_reach_each_other_across_the_bus";
    let Some(kernel) = guest::kernel(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let sw = tmp.path().join("sw");
    let stream_sock = tmp.path().join("stream.sock");
    let br = tmp.path().join("br.sock");
    let vm = tmp.path().join("vm.sock");
    let mut vde = Proc::shmif(
        "vde",
        &bus,
        &[sw.to_str().unwrap()],
        Stream::Lines,
        Stream::Lines,
    );
    vde.out()
        .expect_containing("serving", Duration::from_secs(10));
    let listen = format!("unix:{}", stream_sock.display());
    let dgram = format!("unix:{}", br.display());
    let remote = format!("unix:{}", vm.display());
    let mut bridge = start_qemu_bridge(
        &bus,
        &["--listen", &listen, "--dgram", &dgram, "--remote", &remote],
    );
    let (a, b) = ("10.213.6.21", "10.213.6.22");
    let on_vde = pinger(&[b]);
    let on_stream = pinger(&[a]);
    let on_dgram = pinger(&[a, b]);
    let specs = [
        Spec {
            name: "on-vde",
            mac: 0x21,
            ip: "10.213.6.21/24",
            netdev: format!("vde,sock={}", sw.display()),
            script: &on_vde,
        },
        Spec {
            name: "on-stream",
            mac: 0x22,
            ip: "10.213.6.22/24",
            netdev: format!(
                "stream,server=off,addr.type=unix,addr.path={}",
                stream_sock.display()
            ),
            script: &on_stream,
        },
        Spec {
            name: "on-dgram",
            mac: 0x23,
            ip: "10.213.6.23/24",
            netdev: format!(
                "dgram,local.type=unix,local.path={},remote.type=unix,remote.path={}",
                vm.display(),
                br.display()
            ),
            script: &on_dgram,
        },
    ];
    let mut guests: Vec<Guest> = specs
        .iter()
        .map(|s| Guest::start(&kernel, s, tmp.path()))
        .collect();
    for g in &mut guests {
        g.wait_up();
    }
    let limit = Duration::from_secs(120);
    assert_eq!(guests[0].expect("PING", limit), format!("PING {b} RC 0"));
    assert_eq!(guests[1].expect("PING", limit), format!("PING {a} RC 0"));
    assert_eq!(guests[2].expect("PING", limit), format!("PING {a} RC 0"));
    assert_eq!(guests[2].expect("PING", limit), format!("PING {b} RC 0"));
    bridge
        .err()
        .expect_containing("joined", Duration::from_secs(5));
    drop(guests);
    // The stream guest's port goes when its QEMU does.
    bridge.err().expect_containing(
        "closed: the peer closed the connection",
        Duration::from_secs(10),
    );
    // SIGTERM: counters for every port, the sockets removed, exit 130.
    let status = bridge.stop(rustix::process::Signal::TERM, Duration::from_secs(10));
    assert!(status.code() == Some(130), "{status:?}");
    let (rest, _) = bridge.err().until_end(Duration::from_secs(5));
    let rest = rest.join("\n");
    assert!(rest.contains("qemu dgram"), "{rest}");
    assert!(rest.contains("bus "), "{rest}");
    assert!(!stream_sock.exists() && !br.exists());
}

// Stream peers of the test's own, for the cases QEMU never produces.

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::Instant;

/// A broadcast frame of EtherType 0x88b5 from 02:00:00:00:00:`src`.
fn frame(src: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, src]);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// `f` with QEMU's 4-byte big-endian length in front.
fn framed(f: &[u8]) -> Vec<u8> {
    let mut v = (f.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(f);
    v
}

/// Reads frames from `s` until one equals `want`.
fn receive(s: &mut UnixStream, want: &[u8]) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).expect("a frame");
        let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut f).expect("the frame's bytes");
        if f == want {
            return;
        }
    }
}

/// A bridge listening on a UNIX socket and a dgram pair, with `n` stream
/// peers of the test's own connected.
struct Setup {
    tmp: tempfile::TempDir,
    sock: PathBuf,
    bridge: Proc,
    peers: Vec<UnixStream>,
    dgram: UnixDatagram,
    dgram_bridge: PathBuf,
}

fn setup(n: usize) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let sock = tmp.path().join("q.sock");
    let br = tmp.path().join("br.sock");
    let vm = tmp.path().join("vm.sock");
    let dgram = UnixDatagram::bind(&vm).unwrap();
    dgram
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut bridge = start_qemu_bridge(
        &bus,
        &[
            "--listen",
            &format!("unix:{}", sock.display()),
            "--dgram",
            &format!("unix:{}", br.display()),
            "--remote",
            &format!("unix:{}", vm.display()),
        ],
    );
    let peers = (0..n)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    for _ in 0..n {
        bridge
            .err()
            .expect_containing("joined", Duration::from_secs(5));
    }
    Setup {
        tmp,
        sock,
        bridge,
        peers,
        dgram,
        dgram_bridge: br,
    }
}

impl Setup {
    /// Peer `from` sends a frame; peer `to` and the dgram peer get it.
    fn check_path(&mut self, from: usize, to: usize, tag: &str) {
        // What the dgram peer did not read yet (its queue is short).
        self.dgram.set_nonblocking(true).unwrap();
        while self.dgram.recv(&mut [0u8; 2048]).is_ok() {}
        self.dgram.set_nonblocking(false).unwrap();
        let f = frame(from as u8 + 1, tag.as_bytes());
        self.peers[from].write_all(&framed(&f)).unwrap();
        receive(&mut self.peers[to], &f);
        let mut b = [0u8; 2048];
        loop {
            let n = self.dgram.recv(&mut b).expect("the dgram peer got it");
            if b[..n] == f[..] {
                break;
            }
        }
    }

    /// Sends `bytes` on a new connection and checks the bridge closes it
    /// with a log line containing `why`; the others are unaffected.
    fn bad_peer(&mut self, bytes: &[u8], why: &str) {
        let mut bad = UnixStream::connect(&self.sock).unwrap();
        self.bridge
            .err()
            .expect_containing("joined", Duration::from_secs(5));
        bad.write_all(bytes).unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut b = [0u8; 4096];
        loop {
            match bad.read(&mut b) {
                Ok(0) => break,
                Ok(_) => {} // frames from others before it was closed
                Err(e) => panic!("the bridge did not close the connection: {e}"),
            }
        }
        let l = self
            .bridge
            .err()
            .expect_containing("closed:", Duration::from_secs(5));
        assert!(l.contains(why), "{l}");
        self.check_path(0, 1, "still fine");
        assert!(self.bridge.running());
    }
}

#[test]
fn stream_and_dgram_peers_get_each_others_frames_never_their_own() {
    let mut s = setup(2);
    s.check_path(0, 1, "zero to one");
    s.check_path(1, 0, "one to zero");
    // From the dgram side to both stream peers.
    let f = frame(9, b"from the dgram side");
    s.dgram.send_to(&f, &s.dgram_bridge).unwrap();
    receive(&mut s.peers[0], &f);
    receive(&mut s.peers[1], &f);
    // A datagram from a stranger is ignored.
    let stranger = UnixDatagram::unbound().unwrap();
    let g = frame(10, b"stranger");
    stranger.send_to(&g, &s.dgram_bridge).unwrap();
    s.check_path(0, 1, "after the stranger");
    // Peer 0 got nothing of its own: the next frame it reads is peer 1's.
    let h = frame(2, b"one again");
    s.peers[1].write_all(&framed(&h)).unwrap();
    s.peers[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let mut len = [0u8; 4];
        s.peers[0].read_exact(&mut len).unwrap();
        let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
        s.peers[0].read_exact(&mut f).unwrap();
        assert_ne!(f[11], 1, "peer 0 got its own frame back");
        assert_ne!(f, g, "the stranger's frame was forwarded");
        if f == h {
            break;
        }
        seen.push(f);
    }
    let status = s
        .bridge
        .stop(rustix::process::Signal::TERM, Duration::from_secs(10));
    assert!(status.code() == Some(130));
    let (rest, _) = s.bridge.err().until_end(Duration::from_secs(5));
    let rest = rest.join("\n");
    assert!(rest.contains("1 from other senders ignored"), "{rest}");
    assert!(!s.sock.exists() && !s.dgram_bridge.exists());
    drop(s.tmp);
}

#[test]
fn a_stream_length_under_14_ends_only_that_connection() {
    let mut s = setup(2);
    s.bad_peer(&[0, 0, 0, 5, 1, 2, 3, 4, 5], "bad frame length 5");
}

#[test]
fn a_stream_length_over_the_limit_ends_only_that_connection() {
    let mut s = setup(2);
    s.bad_peer(&[0, 1, 0x10, 1], "bad frame length 69633");
}

#[test]
fn garbage_on_a_stream_ends_only_that_connection() {
    let mut s = setup(2);
    s.bad_peer(b"GET / HTTP/1.1\r\n\r\n", "bad frame length");
}

#[test]
fn a_half_written_stream_frame_ends_only_that_connection_after_the_timeout() {
    let mut s = setup(2);
    let f = framed(&frame(7, b"half"));
    let t = Instant::now();
    s.bad_peer(&f[..30], "a half-written frame (30 bytes of it)");
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn a_stream_peer_that_never_reads_is_disconnected_and_nobody_else_suffers() {
    let mut s = setup(3);
    // Peer 2 never reads; peer 0 floods; peer 1 reads everything.
    let mut reader = s.peers[1].try_clone().unwrap();
    let counter = std::thread::spawn(move || {
        reader
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut b = vec![0u8; 1 << 16];
        let mut bytes = 0u64;
        while let Ok(n) = reader.read(&mut b) {
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
        bytes
    });
    let f = framed(&frame(1, &[0xcd; 1400]));
    let t = Instant::now();
    let mut sent = 0u64;
    let mut disconnected = false;
    while t.elapsed() < Duration::from_secs(20) {
        for _ in 0..50 {
            s.peers[0].write_all(&f).unwrap();
            sent += f.len() as u64;
        }
        std::thread::sleep(Duration::from_millis(5));
        if let Ok(l) = s
            .bridge
            .err()
            .next_matching(|l| l.contains("read nothing"), Duration::from_millis(1))
        {
            assert!(l.contains("#3"), "{l}");
            disconnected = true;
            break;
        }
    }
    assert!(disconnected, "the stalled peer was not disconnected");
    assert!(t.elapsed() >= Duration::from_secs(9), "{:?}", t.elapsed());
    let got = counter.join().unwrap();
    assert!(got > sent / 2, "the reading peer got {got} of {sent} bytes");
    let mut s2 = s;
    s2.peers.remove(2);
    s2.check_path(1, 0, "still fine");
}

#[test]
fn refuses_a_listen_path_that_is_not_a_socket_and_replaces_a_stale_one() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let out = std::process::Command::new(common::SHMIF)
        .args(["qemu", bus.to_str().unwrap(), "--listen"])
        .arg(format!("unix:{}", file.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not a socket"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    // A socket nobody listens on (left by a crash) is replaced.
    let stale = tmp.path().join("q.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let mut p = start_qemu_bridge(&bus, &["--listen", &format!("unix:{}", stale.display())]);
    let _c = UnixStream::connect(&stale).unwrap();
    p.err().expect_containing("joined", Duration::from_secs(5));
    // While it listens, a second bridge on the same path is refused.
    let out = std::process::Command::new(common::SHMIF)
        .args(["qemu", bus.to_str().unwrap(), "--listen"])
        .arg(format!("unix:{}", stale.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("another program"),
        "{err}"
    );
    // Nothing to do is an error too.
    let out = std::process::Command::new(common::SHMIF)
        .args(["qemu", bus.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to bridge"));
}

/// Guest commands: ping `addr` until it answers, then 3 times, print
/// `PING RC <status>`, and stay up.
fn ping_then_stay(addr: &str) -> String {
    format!(
        "for i in $(seq 60); do ping -c 1 -W 1 {addr} >/dev/null 2>&1 && break; done\n\
         ping -c 3 -W 3 {addr} >/dev/null 2>&1; echo \"PING RC $?\"\n\
         sleep 600\n"
    )
}

#[test]
fn a_guest_on_a_stream_socket_killed_and_replaced_and_a_server_on_qemu_redialled() {
    let test = "a_guest_on_a_stream_socket_killed_and_replaced_and_a_server_on_qemu_redialled";
    let Some(kernel) = guest::kernel(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let listen = tmp.path().join("listen.sock");
    let server = tmp.path().join("server.sock");
    let mut bridge = start_qemu_bridge(
        &bus,
        &[
            "--listen",
            &format!("unix:{}", listen.display()),
            "--connect",
            &format!("unix:{}", server.display()),
        ],
    );
    let mut host = Proc::shmif(
        "host",
        &bus,
        &["--ip", "10.213.6.1/24"],
        Stream::Lines,
        Stream::Lines,
    );
    host.out()
        .expect_containing(" up on ", Duration::from_secs(10));
    let script = ping_then_stay("10.213.6.1");
    let client = |name: &'static str, mac: u8| Spec {
        name,
        mac,
        ip: "10.213.6.31/24",
        netdev: format!(
            "stream,server=off,addr.type=unix,addr.path={}",
            listen.display()
        ),
        script: &script,
    };
    let serving = |name: &'static str, mac: u8| Spec {
        name,
        mac,
        ip: "10.213.6.41/24",
        netdev: format!(
            "stream,server=on,addr.type=unix,addr.path={}",
            server.display()
        ),
        script: &script,
    };
    // First generation: one guest connecting, one listening.
    let mut c1 = Guest::start(&kernel, &client("client-1", 0x31), tmp.path());
    let mut s1 = Guest::start(&kernel, &serving("server-1", 0x41), tmp.path());
    c1.wait_up();
    s1.wait_up();
    let limit = Duration::from_secs(90);
    assert_eq!(c1.expect("PING RC", limit), "PING RC 0");
    assert_eq!(s1.expect("PING RC", limit), "PING RC 0");
    // Both killed: the accepted port goes, the dialler says it lost its
    // connection and redials.
    c1.proc.signal(rustix::process::Signal::KILL);
    s1.proc.signal(rustix::process::Signal::KILL);
    c1.proc.wait(Duration::from_secs(10));
    s1.proc.wait(Duration::from_secs(10));
    bridge.err().expect_containing(
        "#1: closed: the peer closed the connection",
        Duration::from_secs(10),
    );
    // Second generation on the same sockets.
    let _ = std::fs::remove_file(&server);
    let mut c2 = Guest::start(&kernel, &client("client-2", 0x32), tmp.path());
    let mut s2 = Guest::start(&kernel, &serving("server-2", 0x42), tmp.path());
    c2.wait_up();
    s2.wait_up();
    assert_eq!(c2.expect("PING RC", limit), "PING RC 0");
    assert_eq!(s2.expect("PING RC", limit), "PING RC 0");
    // The new client is a new port; the dialler connected a second time.
    bridge
        .err()
        .expect_containing("listen.sock #2: joined", Duration::from_secs(5));
    let log = bridge.err().so_far();
    assert!(log.contains("connection lost"), "{log}");
    let connected = format!("qemu stream to unix:{}: connected", server.display());
    if log.matches(&connected).count() < 2 {
        bridge
            .err()
            .expect_containing(&connected, Duration::from_secs(5));
    }
}

#[test]
fn tcp_listen_and_tcp_connect_carry_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    // A QEMU-like server for --connect, and a free port for --listen.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen_port = free.local_addr().unwrap().port();
    drop(free);
    let connect = format!("tcp:{}", server.local_addr().unwrap());
    let listen = format!("tcp:127.0.0.1:{listen_port}");
    let mut bridge = start_qemu_bridge(&bus, &["--listen", &listen, "--connect", &connect]);
    let (mut dialled, _) = server.accept().unwrap();
    bridge
        .err()
        .expect_containing("connected", Duration::from_secs(5));
    let mut guest = std::net::TcpStream::connect(("127.0.0.1", listen_port)).unwrap();
    bridge
        .err()
        .expect_containing("joined", Duration::from_secs(5));
    let read_frame = |s: &mut std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut f).unwrap();
        f
    };
    let f = frame(1, b"over tcp, accepted side");
    guest.write_all(&framed(&f)).unwrap();
    assert_eq!(read_frame(&mut dialled), f);
    let g = frame(2, b"over tcp, dialled side");
    dialled.write_all(&framed(&g)).unwrap();
    assert_eq!(read_frame(&mut guest), g);
    // The server drops the connection: the bridge redials.
    drop(dialled);
    bridge
        .err()
        .expect_containing("connection lost", Duration::from_secs(5));
    let (mut again, _) = server.accept().unwrap();
    let h = frame(1, b"after the redial");
    guest.write_all(&framed(&h)).unwrap();
    assert_eq!(read_frame(&mut again), h);
}
