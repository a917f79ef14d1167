//! `shmif vde`: VDE clients on a bus. Real QEMU guests on `-netdev vde`
//! talk to `shmif host` across the bus (ping, TCP both ways, every byte
//! checked); a guest killed and replaced on the same switch; 16 `vde_plug`
//! clients at once; a guest and a network namespace behind `shmif tap`;
//! the switch directory's rules (stale `ctl` taken over, foreign
//! directories refused, everything removed on SIGTERM); jumbo frames
//! between clients and an extended bus; and every kind of bad client
//! input, each ending only that client's connection.
//!
//! Tests that need QEMU and the guest kernel (see tests/guest/mod.rs),
//! `vde_plug` or root print `*** SKIPPED` and pass without them. Guest
//! traffic stays on the test's own bus, on 10.213.5.0/24.

mod common;
mod guest;

use common::{Proc, Stream, SHMIF};
use guest::{Guest, Spec};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `shmif vde BUS DIR`, started and serving.
fn start_vde(bus: &Path, dir: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut p = Proc::shmif("vde", bus, &args, Stream::Lines, Stream::Lines);
    p.out()
        .expect_containing("serving", Duration::from_secs(10));
    p
}

/// `shmif host BUS ARGS`, started and up.
fn start_host(bus: &Path, args: &[&str]) -> Proc {
    let mut p = Proc::shmif("host", bus, args, Stream::Lines, Stream::Lines);
    p.out()
        .expect_containing(" up on ", Duration::from_secs(10));
    p
}

/// The sha256 (hex) of the first `len` bytes of `shmif tcp-send`'s
/// pattern: byte i is byte i % 8 of the little-endian word (i / 8) *
/// 0x9e3779b97f4a7c15.
fn pattern_sha256(len: usize, dir: &Path) -> String {
    let mut v = Vec::with_capacity(len);
    let mut w = 0u64;
    while v.len() < len {
        let word = w.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
        let n = (len - v.len()).min(8);
        v.extend_from_slice(&word[..n]);
        w += 1;
    }
    let f = dir.join("pattern");
    std::fs::write(&f, &v).unwrap();
    let out = Command::new("sha256sum").arg(&f).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The first word after `label` in `line`.
fn field<'a>(line: &'a str, label: &str) -> &'a str {
    line.split(label)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} in {line:?}"))
}

#[test]
fn a_guest_on_netdev_vde_and_shmif_host_ping_each_other_and_move_tcp_both_ways() {
    let test = "a_guest_on_netdev_vde_and_shmif_host_ping_each_other_and_move_tcp_both_ways";
    let Some(kernel) = guest::kernel(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let sw = tmp.path().join("sw");
    let mut vde = start_vde(&bus, &sw, &[]);
    let _echo = start_host(&bus, &["--ip", "10.213.5.1/24", "--tcp-echo", "7"]);
    let script = "\
        nc -l -p 9000 > /tmp/r &\n\
        sleep 0.3\n\
        echo GUEST-LISTENING\n\
        ping -c 3 -W 5 10.213.5.1 > /tmp/p; echo \"PING-RC $?\"; cat /tmp/p\n\
        dd if=/dev/urandom of=/tmp/d bs=1024 count=1024 2>/dev/null\n\
        nc 10.213.5.1 7 < /tmp/d > /tmp/e; echo \"ECHO-RC $?\"\n\
        echo \"ECHO-SENT $(wc -c < /tmp/d) $(sha256sum < /tmp/d)\"\n\
        echo \"ECHO-BACK $(wc -c < /tmp/e) $(sha256sum < /tmp/e)\"\n\
        wait\n\
        echo \"RECEIVED $(wc -c < /tmp/r) $(sha256sum < /tmp/r)\"\n";
    let spec = Spec {
        name: "vde-guest",
        mac: 0x11,
        ip: "10.213.5.11/24",
        netdev: format!("vde,sock={}", sw.display()),
        script,
    };
    let mut g = Guest::start(&kernel, &spec, tmp.path());
    g.wait_up();
    g.expect("GUEST-LISTENING", Duration::from_secs(30));
    vde.err()
        .expect_containing("joined", Duration::from_secs(5));
    // The bus side: ping the guest and send it 2 MiB of the pattern.
    let mb = 2usize;
    let out = Command::new(SHMIF)
        .args(["host", bus.to_str().unwrap(), "--ip", "10.213.5.2/24"])
        .args(["--ping", "10.213.5.11", "--ping-count", "3"])
        .args([
            "--tcp-send",
            "10.213.5.11:9000",
            "--megabytes",
            &mb.to_string(),
        ])
        .args(["--tcp-timeout", "30", "--exit-when-done"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("actions done: 2 of 2 succeeded"),
        "shmif host to the guest: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 received"), "{text}");
    // The guest side: ping, echo through shmif host, the stream received.
    let ping = g.expect("PING-RC", Duration::from_secs(60));
    assert_eq!(ping, "PING-RC 0", "{}", g.console().so_far());
    let rc = g.expect("ECHO-RC", Duration::from_secs(120));
    assert_eq!(rc, "ECHO-RC 0", "{}", g.console().so_far());
    let sent = g.expect("ECHO-SENT", Duration::from_secs(10));
    let back = g.expect("ECHO-BACK", Duration::from_secs(10));
    assert_eq!(field(&sent, "ECHO-SENT"), "1048576", "{sent}");
    assert_eq!(
        sent.replace("ECHO-SENT", ""),
        back.replace("ECHO-BACK", ""),
        "the echo came back different"
    );
    let recv = g.expect("RECEIVED", Duration::from_secs(60));
    let want = pattern_sha256(mb << 20, tmp.path());
    assert_eq!(
        recv,
        format!("RECEIVED {} {want}  -", mb << 20),
        "the stream from shmif host arrived different"
    );
    g.wait_done(Duration::from_secs(30));
    // The guest's port went with it.
    vde.err().expect_containing(
        "closed: the client closed its control stream",
        Duration::from_secs(10),
    );
}

// A VDE client of the test's own (what libvdeplug does), for the cases
// the real clients never produce.

/// A VDE request for the client socket `sock`.
fn vde_request(sock: &Path, descr: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0xfeed_faceu32.to_ne_bytes());
    b.extend_from_slice(&3u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    let mut addr = [0u8; 110];
    addr[..2].copy_from_slice(&1u16.to_ne_bytes());
    let p = sock.as_os_str().as_encoded_bytes();
    addr[2..2 + p.len()].copy_from_slice(p);
    b.extend_from_slice(&addr);
    b.extend_from_slice(descr.as_bytes());
    b
}

/// A client attached to the switch in `dir`: its control stream and its
/// connected datagram socket.
struct Client {
    ctl: UnixStream,
    data: UnixDatagram,
}

fn attach(dir: &Path, scratch: &Path, descr: &str) -> Client {
    let sock = scratch.join(format!("c-{descr}"));
    let _ = std::fs::remove_file(&sock);
    let data = UnixDatagram::bind(&sock).unwrap();
    let mut ctl = UnixStream::connect(dir.join("ctl")).unwrap();
    ctl.write_all(&vde_request(&sock, descr)).unwrap();
    ctl.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = [0u8; 110];
    ctl.read_exact(&mut reply).unwrap();
    let end = reply[2..].iter().position(|&c| c == 0).unwrap() + 2;
    let port = PathBuf::from(std::str::from_utf8(&reply[2..end]).unwrap());
    assert!(port.is_absolute(), "{port:?}");
    data.connect(&port).unwrap();
    data.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = std::fs::remove_file(&sock);
    Client { ctl, data }
}

/// A broadcast frame of EtherType 0x88b5 from 02:00:00:00:00:`src`.
fn frame(src: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, src]);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// A switch on a new bus in a temporary directory, with `n` clients of
/// the test's own attached.
struct Setup {
    tmp: tempfile::TempDir,
    bus: PathBuf,
    dir: PathBuf,
    vde: Proc,
    clients: Vec<Client>,
}

fn setup(n: usize) -> Setup {
    setup_on(n, |_| {})
}

/// [`setup`], with `make_bus` making the bus file first (else the switch
/// creates a NetBSD one).
fn setup_on(n: usize, make_bus: impl FnOnce(&Path)) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    make_bus(&bus);
    let dir = tmp.path().join("sw");
    let mut vde = start_vde(&bus, &dir, &[]);
    let clients = (0..n)
        .map(|i| attach(&dir, tmp.path(), &format!("t{i}")))
        .collect();
    for _ in 0..n {
        vde.err()
            .expect_containing("joined", Duration::from_secs(5));
    }
    Setup {
        tmp,
        bus,
        dir,
        vde,
        clients,
    }
}

impl Setup {
    /// Client `from` sends a frame; client `to` receives it.
    fn check_path(&self, from: usize, to: usize, tag: &str) {
        let f = frame(from as u8, tag.as_bytes());
        self.clients[from].data.send(&f).unwrap();
        let mut b = [0u8; 2048];
        loop {
            let n = self.clients[to]
                .data
                .recv(&mut b)
                .unwrap_or_else(|e| panic!("client {to} got no frame {tag:?}: {e}"));
            if b[..n] == f[..] {
                return;
            }
        }
    }
}

/// Waits until the names in `dir` are `want` (sorted).
fn wait_entries(dir: &Path, want: &[&str]) {
    let names = || {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let t = Instant::now();
    while names() != want {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{}: {:?}, not {want:?}",
            dir.display(),
            names()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects a bare control stream to the switch in `dir`.
fn raw_ctl(dir: &Path) -> UnixStream {
    let s = UnixStream::connect(dir.join("ctl")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Reads until the switch closes `s`; fails if it does not.
fn closed_by_switch(mut s: UnixStream) {
    let mut b = [0u8; 256];
    match s.read(&mut b) {
        Ok(0) => {}
        other => panic!("the switch did not close the connection: {other:?}"),
    }
}

#[test]
fn frames_go_between_clients_and_to_the_bus_never_back_to_their_sender() {
    let s = setup(3);
    s.check_path(0, 1, "zero to one");
    s.check_path(2, 0, "two to zero");
    // Client 0 got only client 2's frame, never its own.
    s.clients[0]
        .data
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 2048];
    let n = s.clients[0].data.recv(&mut b).map(|n| b[..n].to_vec());
    assert!(n.is_err(), "client 0 got a frame back: {n:?}");
    // And the bus saw them all.
    let out = Command::new(SHMIF)
        .args(["dump", s.bus.to_str().unwrap()])
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(dump.matches("02:00:00:00:00:").count() >= 2, "{dump}");
}

#[test]
fn a_garbage_control_request_ends_only_that_connection() {
    let mut s = setup(2);
    let mut bad = raw_ctl(&s.dir);
    bad.write_all(b"GET / HTTP/1.1\r\nHost: switch\r\n\r\n")
        .unwrap();
    closed_by_switch(bad);
    s.vde
        .err()
        .expect_containing("magic", Duration::from_secs(5));
    s.check_path(0, 1, "still fine");
    assert!(s.vde.running());
}

#[test]
fn a_request_of_another_version_ends_only_that_connection() {
    let mut s = setup(2);
    let mut bad = raw_ctl(&s.dir);
    let mut req = vde_request(&s.tmp.path().join("nobody"), "old");
    req[4..8].copy_from_slice(&2u32.to_ne_bytes());
    bad.write_all(&req).unwrap();
    closed_by_switch(bad);
    s.vde
        .err()
        .expect_containing("version 2", Duration::from_secs(5));
    s.check_path(1, 0, "still fine");
}

#[test]
fn a_request_for_a_client_socket_that_does_not_exist_ends_only_that_connection() {
    let mut s = setup(2);
    let mut bad = raw_ctl(&s.dir);
    bad.write_all(&vde_request(&s.tmp.path().join("nobody"), "ghost"))
        .unwrap();
    closed_by_switch(bad);
    s.vde.err().expect_containing(
        "cannot connect to the client's socket",
        Duration::from_secs(5),
    );
    s.check_path(0, 1, "still fine");
    // The port socket it had started to make is gone again.
    wait_entries(&s.dir, &["ctl", "port-1", "port-2"]);
}

#[test]
fn a_half_written_request_is_dropped_after_the_timeout() {
    let mut s = setup(2);
    let mut bad = raw_ctl(&s.dir);
    let req = vde_request(&s.tmp.path().join("slow"), "slow");
    bad.write_all(&req[..60]).unwrap();
    let t = Instant::now();
    closed_by_switch(bad);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(12),
        "closed after {waited:?}"
    );
    s.vde
        .err()
        .expect_containing("incomplete VDE request (60 of", Duration::from_secs(5));
    s.check_path(0, 1, "still fine");
}

#[test]
fn a_client_that_closes_its_control_stream_loses_its_port() {
    let mut s = setup(3);
    let gone = s.clients.remove(1);
    drop(gone.ctl);
    s.vde.err().expect_containing(
        "closed: the client closed its control stream",
        Duration::from_secs(5),
    );
    // Its counters came with it.
    s.vde
        .err()
        .expect_containing("in 0 frames", Duration::from_secs(5));
    s.check_path(0, 1, "to the client that was third");
    wait_entries(&s.dir, &["ctl", "port-1", "port-3"]);
}

#[test]
fn a_reader_slower_than_its_sender_paces_the_sender_and_loses_nothing() {
    // Back-pressure: client 1 reads at most 50,000 frames/s, client 0
    // sends with blocking sends as fast as the switch takes them; the
    // switch holds client 0 back instead of dropping frames for client 1.
    let mut s = setup(2);
    const N: u32 = 20_000;
    let reader = {
        let data = s.clients[1].data.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 2048];
            let mut seqs = Vec::with_capacity(N as usize);
            data.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            while let Ok(n) = data.recv(&mut b) {
                if n >= 18 && b[12..14] == [0x88, 0xb5] {
                    seqs.push(u32::from_be_bytes(b[14..18].try_into().unwrap()));
                    if seqs.len() % 100 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    if seqs.len() == N as usize {
                        break;
                    }
                }
            }
            seqs
        })
    };
    let sender = s.clients[0].data.try_clone().unwrap();
    sender
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut f = frame(0, &[0xcd; 1000]);
    let t = Instant::now();
    for seq in 0..N {
        f[14..18].copy_from_slice(&seq.to_be_bytes());
        sender.send(&f).expect("a blocking send to the switch");
    }
    let sent_in = t.elapsed();
    let seqs = reader.join().unwrap();
    assert_eq!(
        seqs.len(),
        N as usize,
        "the slow reader got {} of {N} frames (sent in {sent_in:?})",
        seqs.len()
    );
    assert!(
        seqs.iter().enumerate().all(|(i, &q)| q == i as u32),
        "frames out of order"
    );
    // The sender was paced: it could not finish much before the reader.
    assert!(sent_in >= Duration::from_millis(250), "sent in {sent_in:?}");
    s.vde
        .stop(rustix::process::Signal::TERM, Duration::from_secs(10));
    let (lines, _) = s.vde.err().until_end(Duration::from_secs(5));
    let err = lines.join("\n");
    assert!(err.contains("vde port 2 (t1)"), "no report: {err}");
    assert!(
        !err.contains("lost to a full client buffer"),
        "frames were dropped: {err}"
    );
}

#[test]
fn a_client_that_never_reads_is_disconnected_and_nobody_else_suffers() {
    let mut s = setup(3);
    // Client 2 never reads; client 0 floods; client 1 reads everything.
    let reader = {
        let data = s.clients[1].data.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 2048];
            let mut n = 0u64;
            data.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            while data.recv(&mut b).is_ok() {
                n += 1;
            }
            n
        })
    };
    let f = frame(0, &[0xab; 1400]);
    let t = Instant::now();
    let mut sent = 0u64;
    let mut disconnected = false;
    while t.elapsed() < Duration::from_secs(20) {
        for _ in 0..50 {
            if s.clients[0].data.send(&f).is_ok() {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
        if let Ok(l) = s
            .vde
            .err()
            .next_matching(|l| l.contains("read nothing"), Duration::from_millis(1))
        {
            assert!(l.contains("vde port 3 (t2)"), "{l}");
            disconnected = true;
            break;
        }
    }
    assert!(
        disconnected,
        "the stalled client was not disconnected; sent {sent}"
    );
    assert!(t.elapsed() >= Duration::from_secs(9), "{:?}", t.elapsed());
    let got = reader.join().unwrap();
    assert!(got > sent / 2, "the reading client got {got} of {sent}");
    s.check_path(1, 0, "still fine");
    assert!(s.vde.running());
}

#[test]
fn frames_too_large_for_the_bus_still_go_between_vde_ports_and_are_counted() {
    let mut s = setup(2);
    let big = frame(0, &[7u8; 3000]);
    s.clients[0].data.send(&big).unwrap();
    let mut b = [0u8; 9000];
    let n = s.clients[1].data.recv(&mut b).unwrap();
    assert_eq!(n, big.len());
    s.clients[0].data.send(&big).unwrap();
    s.clients[1].data.recv(&mut b).unwrap();
    let warn = s
        .vde
        .err()
        .expect_containing("dropped a 3014-byte frame", Duration::from_secs(5));
    assert!(warn.contains("carries at most 1514"), "{warn}");
    // A runt is dropped for everyone.
    s.clients[0].data.send(&[1, 2, 3]).unwrap();
    s.check_path(0, 1, "after the runt");
    let status = s
        .vde
        .stop(rustix::process::Signal::TERM, Duration::from_secs(10));
    assert!(status.code() == Some(130));
    let (rest, _) = s.vde.err().until_end(Duration::from_secs(5));
    let rest = rest.join("\n");
    assert!(
        rest.contains("dropped: 2 too large, 1 runts"),
        "one warning, two counted: {rest}"
    );
    assert_eq!(
        s.vde
            .err()
            .seen
            .iter()
            .filter(|l| l.contains("dropped a"))
            .count(),
        1
    );
}

#[test]
fn jumbo_frames_go_between_vde_clients_and_an_extended_bus() {
    let mut s = setup_on(2, |bus| common::create_extended(bus, "4M", "9234"));
    let bus = s.bus.to_str().unwrap().to_owned();
    // 9,000 bytes from client 0: to client 1 and onto the bus, whole.
    let big = frame(0, &[9u8; 8986]);
    assert_eq!(big.len(), 9000);
    s.clients[0].data.send(&big).unwrap();
    let mut b = [0u8; 9300];
    let n = s.clients[1].data.recv(&mut b).unwrap();
    assert_eq!(b[..n], big[..]);
    common::wait_for(
        Duration::from_secs(10),
        "the 9000-byte frame on the bus",
        || {
            let o = common::shmif(&["dump", &bus]);
            common::text(&o.stdout)
                .contains(
                    "02:00:00:00:00:00 > ff:ff:ff:ff:ff:ff, 0x88b5, length 9000: 8986 bytes: 09 09",
                )
                .then_some(())
        },
    );
    // And 9,000 bytes from the bus reach both clients.
    let o = common::send_broadcast(&bus, &"ab".repeat(8986));
    assert!(o.status.success(), "{}", common::show(&o));
    for c in &s.clients {
        let n = c.data.recv(&mut b).unwrap();
        assert_eq!(n, 9000);
        assert!(b[14..n].iter().all(|&x| x == 0xab));
    }
    let status = s
        .vde
        .stop(rustix::process::Signal::TERM, Duration::from_secs(10));
    assert!(status.code() == Some(130));
    s.vde.err().until_end(Duration::from_secs(5));
    let all = s.vde.err().seen.join("\n");
    assert!(!all.contains("dropped a"), "nothing too large: {all}");
    assert!(all.contains("dropped: 0 too large"), "{all}");
}

#[test]
fn sigterm_removes_the_sockets_and_the_directory_it_made() {
    let mut s = setup(2);
    let meta = std::fs::metadata(&s.dir).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let ctl = std::fs::metadata(s.dir.join("ctl")).unwrap();
    assert!(ctl.file_type().is_socket());
    assert_eq!(ctl.permissions().mode() & 0o777, 0o600);
    let status = s
        .vde
        .stop(rustix::process::Signal::TERM, Duration::from_secs(10));
    assert!(status.code() == Some(130), "{status:?}");
    assert!(!s.dir.exists(), "{:?} is still there", s.dir);
    let (rest, _) = s.vde.err().until_end(Duration::from_secs(5));
    assert!(
        rest.iter().filter(|l| l.contains("vde port")).count() >= 2,
        "{rest:?}"
    );
}

#[test]
fn mode_shares_the_directory_and_sockets_with_the_group() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sw");
    let _vde = start_vde(&tmp.path().join("bus"), &dir, &["--mode", "660"]);
    let c = attach(&dir, tmp.path(), "m");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o770);
    assert_eq!(mode(&dir.join("ctl")), 0o660);
    assert_eq!(mode(&dir.join("port-1")), 0o660);
    drop(c);
}

#[test]
fn a_stale_directory_is_taken_over_and_a_live_or_foreign_one_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let dir = tmp.path().join("sw");
    // A crashed run: SIGKILL leaves ctl and a port socket behind.
    let mut first = start_vde(&bus, &dir, &[]);
    let c = attach(&dir, tmp.path(), "x");
    first.signal(rustix::process::Signal::KILL);
    first.wait(Duration::from_secs(5));
    drop(c);
    assert!(dir.join("ctl").exists() && dir.join("port-1").exists());
    let mut second = start_vde(&bus, &dir, &[]);
    second
        .err()
        .expect_containing("taking over", Duration::from_secs(5));
    let _c = attach(&dir, tmp.path(), "y");
    // While it serves, a third is refused.
    let out = Command::new(SHMIF)
        .args(["vde", bus.to_str().unwrap(), dir.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already serving"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    drop(second);
    // A directory with other files is refused, and left alone.
    let other = tmp.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("todo.txt"), "hi").unwrap();
    let out = Command::new(SHMIF)
        .args(["vde", bus.to_str().unwrap(), other.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("not a VDE switch directory") && err.contains("todo.txt"),
        "{err}"
    );
    assert!(other.join("todo.txt").exists());
    // A file is not a directory.
    let out = Command::new(SHMIF)
        .args([
            "vde",
            bus.to_str().unwrap(),
            other.join("todo.txt").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}

/// Whether `cmd` is on PATH.
fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn sixteen_vde_plug_clients_attached_at_once_all_exchange_frames() {
    let test = "sixteen_vde_plug_clients_attached_at_once_all_exchange_frames";
    if !have("vde_plug") {
        guest::skip::<()>(test, "vde_plug is not installed (apt-get install vdeplug)");
        return;
    }
    const N: usize = 16;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sw");
    let mut vde = start_vde(&tmp.path().join("bus"), &dir, &[]);
    // Half name the switch as a path, half as a vde:// URL.
    let mut children: Vec<std::process::Child> = (0..N)
        .map(|i| {
            let url = if i % 2 == 0 {
                dir.display().to_string()
            } else {
                format!("vde://{}", dir.display())
            };
            Command::new("vde_plug")
                .arg(url)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    struct Kill(Vec<std::process::Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut joined = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while joined < N {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = vde
            .err()
            .next_matching(|l| l.contains("joined"), left)
            .unwrap_or_else(|e| panic!("{joined} of {N} joined ({e})"));
        assert!(l.contains("vdeplug"), "{l}");
        joined += 1;
    }
    // Each reads in VDE stream form (2-byte big-endian length, frame) and
    // reports the senders it heard.
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let mut out = c.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut heard = std::collections::BTreeSet::new();
                let mut len = [0u8; 2];
                while heard.len() < N - 1 && out.read_exact(&mut len).is_ok() {
                    let mut f = vec![0u8; u16::from_be_bytes(len) as usize];
                    if out.read_exact(&mut f).is_err() {
                        break;
                    }
                    if f.len() >= 15 && f[12..14] == [0x88, 0xb5] {
                        heard.insert(f[11]);
                    }
                }
                heard
            })
        })
        .collect();
    for (i, c) in children.iter_mut().enumerate() {
        let f = frame(i as u8, format!("from plug {i}").as_bytes());
        let stdin = c.stdin.as_mut().unwrap();
        stdin.write_all(&(f.len() as u16).to_be_bytes()).unwrap();
        stdin.write_all(&f).unwrap();
        stdin.flush().unwrap();
    }
    let kill = Kill(children);
    let watchdog = std::thread::spawn({
        let pids: Vec<u32> = kill.0.iter().map(|c| c.id()).collect();
        move || {
            std::thread::sleep(Duration::from_secs(20));
            for p in pids {
                let _ = Command::new("kill").arg(p.to_string()).status();
            }
        }
    });
    for (i, r) in readers.into_iter().enumerate() {
        let heard = r.join().unwrap();
        let want: std::collections::BTreeSet<u8> = (0..N as u8).filter(|&j| j != i as u8).collect();
        if heard != want {
            std::thread::sleep(Duration::from_secs(1));
            let _ = vde.err().until_end(Duration::from_millis(500));
            panic!(
                "vde_plug {i} heard only from {heard:?}; switch {}",
                vde.err().so_far()
            );
        }
    }
    drop(kill);
    drop(watchdog);
    for _ in 0..N {
        vde.err()
            .expect_containing("closed its control stream", Duration::from_secs(10));
    }
    wait_entries(&dir, &["ctl"]);
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
fn a_guest_killed_loses_its_port_and_a_new_one_on_the_same_switch_works() {
    let test = "a_guest_killed_loses_its_port_and_a_new_one_on_the_same_switch_works";
    let Some(kernel) = guest::kernel(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let sw = tmp.path().join("sw");
    let mut vde = start_vde(&bus, &sw, &[]);
    let _host = start_host(&bus, &["--ip", "10.213.5.1/24"]);
    let script = ping_then_stay("10.213.5.1");
    let mut spec = Spec {
        name: "first",
        mac: 0x31,
        ip: "10.213.5.31/24",
        netdev: format!("vde,sock={}", sw.display()),
        script: &script,
    };
    let mut first = Guest::start(&kernel, &spec, tmp.path());
    first.wait_up();
    assert_eq!(
        first.expect("PING RC", Duration::from_secs(60)),
        "PING RC 0"
    );
    let joined = vde
        .err()
        .expect_containing("joined", Duration::from_secs(5));
    first.proc.signal(rustix::process::Signal::KILL);
    first.proc.wait(Duration::from_secs(10));
    let port = joined.split(':').nth(1).unwrap().trim().to_string();
    let closed = vde.err().expect_containing(
        "closed: the client closed its control stream",
        Duration::from_secs(10),
    );
    assert!(closed.contains(&port), "{closed} (joined as {port})");
    wait_entries(&sw, &["ctl"]);
    // A new guest, same address, another MAC, on the same switch.
    spec.name = "second";
    spec.mac = 0x32;
    let mut second = Guest::start(&kernel, &spec, tmp.path());
    second.wait_up();
    assert_eq!(
        second.expect("PING RC", Duration::from_secs(60)),
        "PING RC 0"
    );
    vde.err()
        .expect_containing("joined", Duration::from_secs(5));
    // The bus side reaches the new guest.
    let out = Command::new(SHMIF)
        .args([
            "ping",
            bus.to_str().unwrap(),
            "--ip",
            "10.213.5.2/24",
            "10.213.5.31",
        ])
        .args(["-c", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("3 received"),
        "{text}"
    );
}

#[test]
fn a_guest_and_a_network_namespace_behind_shmif_tap_ping_each_other() {
    let test = "a_guest_and_a_network_namespace_behind_shmif_tap_ping_each_other";
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/net/tun").exists() || !have("ip") {
        guest::skip::<()>(test, "needs root, /dev/net/tun and ip");
        return;
    }
    let Some(kernel) = guest::kernel(test) else {
        return;
    };
    let ns = format!("shmif-vde-{}", std::process::id());
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let ok = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    ok(&["netns", "add", &ns]);
    let _ns = Ns(ns.clone());
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let sw = tmp.path().join("sw");
    let _vde = start_vde(&bus, &sw, &[]);
    let mut tap = Proc::shmif(
        "tap",
        &bus,
        &["--tap", "shm-vde0", "--netns", &ns],
        Stream::Lines,
        Stream::Lines,
    );
    tap.out()
        .expect_containing("bridging", Duration::from_secs(10));
    ok(&[
        "-n",
        &ns,
        "addr",
        "add",
        "10.213.5.50/24",
        "dev",
        "shm-vde0",
    ]);
    ok(&["-n", &ns, "link", "set", "lo", "up"]);
    let script = ping_then_stay("10.213.5.50");
    let spec = Spec {
        name: "tap-peer",
        mac: 0x41,
        ip: "10.213.5.41/24",
        netdev: format!("vde,sock={}", sw.display()),
        script: &script,
    };
    let mut g = Guest::start(&kernel, &spec, tmp.path());
    g.wait_up();
    assert_eq!(g.expect("PING RC", Duration::from_secs(60)), "PING RC 0");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "ping",
            "-c",
            "3",
            "-W",
            "3",
            "10.213.5.41",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" 0% packet loss"),
        "{text}"
    );
}
