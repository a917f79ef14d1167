//! `shmif tap`: Linux kernels on a bus. Each test makes its own network
//! namespaces (named after this process's id, so runs never collide), puts
//! a TAP bridged by `shmif tap --netns` in each, and drives real kernel
//! traffic across the bus: ping v4 and v6 between two kernels, 50 MiB of
//! TCP between kernel sockets, ping between a kernel and a `shmif host`,
//! a `shmif capture` of it read back by tcpdump, oversized frames dropped,
//! an existing TAP reused and left in place, and the privilege errors.
//!
//! Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN), /dev/net/tun, `ip` and
//! python3; without them each test says SKIPPED on stderr and passes. All
//! traffic stays inside the test's namespaces, on 10.213.0.0/24 and
//! fd42:213::/64. Guards delete the namespaces and stop every process
//! even when an assertion fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const SHMIF: &str = env!("CARGO_BIN_EXE_shmif");

/// A TCP receiver: accepts one connection, hashes everything until EOF,
/// prints `<bytes> <sha256>`.
const TCP_SERVER: &str = r#"
import hashlib, socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest(), flush=True)
c.close()
"#;

/// A TCP sender: sends N bytes of a pattern, waits for the receiver to
/// close, prints `<bytes> <sha256> <seconds>`.
const TCP_CLIENT: &str = r#"
import hashlib, socket, sys, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = bytes((i * 7 + i // 251) % 256 for i in range(1 << 16))
h, n = hashlib.sha256(), 0
t = time.monotonic()
c = socket.create_connection((host, port), timeout=60)
while n < total:
    b = block[: min(len(block), total - n)]
    c.sendall(b)
    h.update(b)
    n += len(b)
c.shutdown(socket.SHUT_WR)
c.recv(1)
print(n, h.hexdigest(), time.monotonic() - t, flush=True)
"#;

/// ICMP echo with a raw socket, for machines without `ping`: prints
/// `reply seq=N time=X ms` per reply, exits 0 if all came back.
const PY_PING: &str = r#"
import os, socket, struct, sys, time
v6, dst, count = sys.argv[1] == "6", sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if v6 else socket.AF_INET
proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
s = socket.socket(fam, socket.SOCK_RAW, proto)
s.settimeout(2)
ident, ok = os.getpid() & 0xFFFF, 0
def csum(b):
    if len(b) % 2:
        b += b"\0"
    x = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    x = (x >> 16) + (x & 0xFFFF)
    x += x >> 16
    return ~x & 0xFFFF
for seq in range(count):
    data = bytes(range(56))
    kind = 128 if v6 else 8
    pkt = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + data
    if not v6:
        pkt = struct.pack("!BBHHH", kind, 0, csum(pkt), ident, seq) + data
    t = time.monotonic()
    s.sendto(pkt, (dst, 0))
    while True:
        try:
            r, _ = s.recvfrom(4096)
        except socket.timeout:
            print("timeout seq=%d" % seq)
            break
        if not v6:
            r = r[(r[0] & 15) * 4:]
        if r[0] == (129 if v6 else 0) and struct.unpack("!HH", r[4:8]) == (ident, seq):
            print("reply seq=%d time=%.3f ms" % (seq, (time.monotonic() - t) * 1000))
            ok += 1
            break
    time.sleep(0.2)
sys.exit(0 if ok == count else 1)
"#;

/// Writes a line straight to standard error: unlike `eprintln!`, not
/// captured by the test harness, so it shows in every test run's log.
fn loud(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Whether this process may make namespaces and TAPs; if not, why.
fn missing_privilege() -> Option<String> {
    let caps = rustix::thread::capabilities(None).ok();
    let has = |c| caps.is_some_and(|s| s.effective.contains(c));
    use rustix::thread::CapabilitySet as C;
    let mut missing = Vec::new();
    if !has(C::NET_ADMIN) {
        missing.push("root/CAP_NET_ADMIN");
    }
    if !has(C::SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN (network namespaces)");
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun");
    }
    for tool in ["ip", "python3"] {
        if !on_path(tool) {
            missing.push(tool);
        }
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Prints the loud skip notice and returns true if the test cannot run.
fn skip(test: &str) -> bool {
    match missing_privilege() {
        None => false,
        Some(what) => {
            loud(&format!(
                "\n*** SKIPPED: {test}: needs root/CAP_NET_ADMIN and /dev/net/tun; missing here: \
                 {what} ***\n"
            ));
            true
        }
    }
}

/// A unique short tag for this test's names: pid and a counter.
fn tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command to its end (killed after `limit`).
fn run_for(cmd: &mut Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).unwrap();
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).unwrap();
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

fn run(cmd: &mut Command) -> Output {
    run_for(cmd, Duration::from_secs(60))
}

/// Runs a command that must succeed; returns its stdout.
fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let o = run(cmd);
    assert!(o.status.success(), "{shown}: {}", show(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "{}\nstdout:\n{}stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ip(args: &[&str]) -> String {
    ok(Command::new("ip").args(args))
}

/// A network namespace, deleted on drop (which also deletes what is in
/// it, such as a TAP whose bridge was killed).
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        let _ = run(Command::new("ip").args(["netns", "del", &name]));
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NS ARGS...`
    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A long-running child whose stdout and stderr lines arrive on channels;
/// dropping it sends SIGTERM, then SIGKILL if it lingers.
struct Proc {
    what: String,
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

fn lines(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    fn spawn(what: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        Proc {
            what: what.into(),
            child,
            out,
            err,
        }
    }

    /// The next line on `stream` containing `want`, within `limit`.
    fn expect(&self, stderr: bool, want: &str, limit: Duration) -> String {
        let rx = if stderr { &self.err } else { &self.out };
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l.contains(want) => return l,
                Ok(l) => seen.push(l),
                Err(e) => panic!(
                    "{}: no line with {want:?} ({e}); saw {seen:?}; stderr: {:?}",
                    self.what,
                    self.err.try_iter().collect::<Vec<_>>()
                ),
            }
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig).unwrap();
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.what);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM (or another signal), the exit status and the stderr lines.
    fn stop(mut self, sig: rustix::process::Signal) -> (ExitStatus, Vec<String>) {
        self.signal(sig);
        let s = self.wait(Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut err = Vec::new();
        while let Ok(l) = self
            .err
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            err.push(l);
        }
        (s, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `shmif tap BUS --tap NAME --netns NS` and waits until it bridges.
fn start_tap(bus: &Path, tap: &str, ns: &Netns) -> Proc {
    let p = Proc::spawn(
        &format!("shmif tap {tap}"),
        Command::new(SHMIF)
            .arg("tap")
            .arg(bus)
            .args(["--tap", tap, "--netns", &ns.0]),
    );
    let line = p.expect(false, "bridging", Duration::from_secs(20));
    assert!(line.contains(&format!("tap {tap} (")), "{line}");
    assert!(line.contains(&format!("in netns {}", ns.0)), "{line}");
    p
}

/// Gives a TAP in `ns` MTU 1500 and the addresses (IPv6 without duplicate
/// address detection, so it is usable at once).
fn address(ns: &Netns, tap: &str, v4: &str, v6: Option<&str>) {
    ip(&["-n", &ns.0, "link", "set", "dev", tap, "mtu", "1500"]);
    ip(&["-n", &ns.0, "addr", "add", v4, "dev", tap]);
    if let Some(v6) = v6 {
        ip(&["-n", &ns.0, "addr", "add", v6, "dev", tap, "nodad"]);
    }
}

/// Pings `dst` from the kernel in `ns` (3 requests): `ping` if installed,
/// else raw ICMP from python3. Returns the RTTs in milliseconds.
fn kernel_ping(ns: &Netns, dst: &str, v6: bool) -> Vec<f64> {
    let mut cmd = if on_path("ping") {
        let mut args = vec!["ping"];
        if v6 {
            args.push("-6");
        }
        args.extend(["-n", "-c", "3", "-i", "0.2", "-W", "2", dst]);
        ns.exec(&args)
    } else {
        loud("(no ping command here: raw ICMP from python3 instead)");
        ns.exec(&[
            "python3",
            "-c",
            PY_PING,
            if v6 { "6" } else { "4" },
            dst,
            "3",
        ])
    };
    let out = ok(&mut cmd);
    let rtts: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(rtts.len(), 3, "3 replies expected: {out}");
    rtts
}

fn summary(rtts: &[f64]) -> String {
    let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rtts.iter().copied().fold(0.0, f64::max);
    let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
    format!("min/avg/max {min:.3}/{avg:.3}/{max:.3} ms")
}

/// Whether the namespace still has an interface called `name`.
fn has_link(ns: &Netns, name: &str) -> bool {
    run(Command::new("ip").args(["-n", &ns.0, "link", "show", "dev", name]))
        .status
        .success()
}

#[test]
fn two_kernels_ping_and_move_50_mib_over_tcp_across_the_bus() {
    if skip("two_kernels_ping_and_move_50_mib_over_tcp_across_the_bus") {
        return;
    }
    let t = tag();
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let (na, nb) = (
        Netns::new(format!("shmif-a{t}")),
        Netns::new(format!("shmif-b{t}")),
    );
    let (ta, tb) = (format!("sha{t}"), format!("shb{t}"));
    let bridge_a = start_tap(&bus, &ta, &na);
    let bridge_b = start_tap(&bus, &tb, &nb);
    address(&na, &ta, "10.213.0.1/24", Some("fd42:213::1/64"));
    address(&nb, &tb, "10.213.0.2/24", Some("fd42:213::2/64"));

    let v4 = kernel_ping(&na, "10.213.0.2", false);
    let v6 = kernel_ping(&nb, "fd42:213::1", true);
    loud(&format!(
        "kernel -> kernel ping over the bus, IPv4: {}",
        summary(&v4)
    ));
    loud(&format!(
        "kernel -> kernel ping over the bus, IPv6: {}",
        summary(&v6)
    ));

    // 50 MiB between kernel sockets, hashed on both ends.
    const BYTES: u64 = 50 * 1024 * 1024;
    let server = Proc::spawn(
        "tcp server",
        &mut nb.exec(&["python3", "-c", TCP_SERVER, "10.213.0.2", "5001"]),
    );
    server.expect(false, "listening", Duration::from_secs(20));
    let client = run_for(
        &mut na.exec(&[
            "python3",
            "-c",
            TCP_CLIENT,
            "10.213.0.2",
            "5001",
            &BYTES.to_string(),
        ]),
        Duration::from_secs(180),
    );
    assert!(client.status.success(), "client: {}", show(&client));
    let sent = String::from_utf8_lossy(&client.stdout).into_owned();
    let got = server.expect(false, " ", Duration::from_secs(30));
    let sent: Vec<&str> = sent.split_whitespace().collect();
    let got: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(sent[0], BYTES.to_string());
    assert_eq!(got[0], BYTES.to_string(), "bytes received");
    assert_eq!(got[1], sent[1], "sha256 of what arrived = of what was sent");
    let secs: f64 = sent[2].parse().unwrap();
    loud(&format!(
        "kernel -> kernel TCP over the bus: {BYTES} bytes in {secs:.2} s = {:.1} MiB/s ({:.0} Mbit/s), sha256 ok",
        BYTES as f64 / secs / 1048576.0,
        BYTES as f64 * 8.0 / secs / 1e6
    ));
    drop(server);

    // SIGTERM and SIGINT detach cleanly, report, and remove the TAPs.
    let (sa, err_a) = bridge_a.stop(rustix::process::Signal::TERM);
    let (sb, err_b) = bridge_b.stop(rustix::process::Signal::INT);
    for (s, err, tap, ns) in [(sa, &err_a, &ta, &na), (sb, &err_b, &tb, &nb)] {
        let report = err.join("\n");
        eprintln!("{report}");
        assert!(s.success(), "{tap}: {s}: {report}");
        assert!(report.contains(&format!("TAP {tap} removed")), "{report}");
        assert!(report.contains("0 over 1514 bytes"), "{report}");
        assert!(!has_link(ns, tap), "{tap} still exists");
    }
    let to_bus: u64 = err_a
        .join(" ")
        .split("kernel to bus ")
        .nth(1)
        .and_then(|s| s.split(' ').next()?.parse().ok())
        .unwrap();
    assert!(
        to_bus > 30_000,
        "50 MiB is more than 30,000 frames: {to_bus}"
    );
}

#[test]
fn a_kernel_and_a_userspace_host_ping_each_other_and_capture_sees_it() {
    if skip("a_kernel_and_a_userspace_host_ping_each_other_and_capture_sees_it") {
        return;
    }
    let t = tag();
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let pcap = dir.path().join("pings.pcap");
    let ns = Netns::new(format!("shmif-c{t}"));
    let tap = format!("shc{t}");
    let _bridge = start_tap(&bus, &tap, &ns);
    address(&ns, &tap, "10.213.0.1/24", None);
    let host = Proc::spawn(
        "shmif host",
        Command::new(SHMIF)
            .arg("host")
            .arg(&bus)
            .args(["--ip", "10.213.0.3/24"]),
    );
    host.expect(false, " up on ", Duration::from_secs(20));
    let capture = Proc::spawn(
        "shmif capture",
        Command::new(SHMIF)
            .arg("capture")
            .arg(&bus)
            .arg("-w")
            .arg(&pcap),
    );
    capture.expect(true, "capturing on", Duration::from_secs(20));

    // The namespace's kernel pings the smoltcp host...
    let rtts = kernel_ping(&ns, "10.213.0.3", false);
    loud(&format!("kernel -> shmif host ping: {}", summary(&rtts)));
    // ...and a smoltcp `shmif ping` pings the kernel.
    let o = run(Command::new(SHMIF).arg("ping").arg(&bus).args([
        "--ip",
        "10.213.0.4/24",
        "10.213.0.1",
        "-c",
        "3",
        "-i",
        "0.2",
    ]));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "shmif ping: {}", show(&o));
    assert!(text.contains("3 received"), "{text}");
    loud(&format!(
        "shmif ping -> kernel: {}",
        text.lines().last().unwrap_or_default()
    ));

    let (s, err) = capture.stop(rustix::process::Signal::INT);
    assert!(s.success(), "capture: {s}: {err:?}");
    let report = err.join("\n");
    assert!(report.contains("frames captured"), "{report}");

    if !on_path("tcpdump") {
        loud("\n*** SKIPPED: reading the capture with tcpdump: tcpdump is not installed ***\n");
        return;
    }
    let out = ok(Command::new("tcpdump").args(["-n", "-e", "-r"]).arg(&pcap));
    for want in [
        "10.213.0.1 > 10.213.0.3: ICMP echo request",
        "10.213.0.3 > 10.213.0.1: ICMP echo reply",
        "10.213.0.4 > 10.213.0.1: ICMP echo request",
        "10.213.0.1 > 10.213.0.4: ICMP echo reply",
    ] {
        let n = out.lines().filter(|l| l.contains(want)).count();
        assert_eq!(n, 3, "{want:?} x3 in tcpdump's reading:\n{out}");
    }
    assert!(out.contains("ARP"), "{out}");
}

#[test]
fn frames_too_big_for_the_bus_are_dropped_counted_and_warned_about() {
    if skip("frames_too_big_for_the_bus_are_dropped_counted_and_warned_about") {
        return;
    }
    let t = tag();
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let (na, nb) = (
        Netns::new(format!("shmif-d{t}")),
        Netns::new(format!("shmif-e{t}")),
    );
    let (ta, tb) = (format!("shd{t}"), format!("she{t}"));
    let bridge_a = start_tap(&bus, &ta, &na);
    let _bridge_b = start_tap(&bus, &tb, &nb);
    address(&na, &ta, "10.213.0.1/24", None);
    address(&nb, &tb, "10.213.0.2/24", None);
    kernel_ping(&na, "10.213.0.2", false);
    // A jumbo MTU on one side: its 3000-byte pings cannot cross the bus.
    ip(&["-n", &na.0, "link", "set", "dev", &ta, "mtu", "9000"]);
    if on_path("ping") {
        let o = run(&mut na.exec(&[
            "ping",
            "-n",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            "-s",
            "3000",
            "-M",
            "dont",
            "10.213.0.2",
        ]));
        assert!(
            !o.status.success(),
            "a 3028-byte frame crossed: {}",
            show(&o)
        );
    } else {
        let udp = "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
                   [s.sendto(b'x'*3000, ('10.213.0.2', 9)) for _ in range(2)]";
        ok(&mut na.exec(&["python3", "-c", udp]));
    }
    let warning = bridge_a.expect(true, "dropped a", Duration::from_secs(10));
    assert!(warning.contains("at most 1514"), "{warning}");
    let (s, err) = bridge_a.stop(rustix::process::Signal::TERM);
    assert!(s.success());
    let report = err.join("\n");
    let dropped: u64 = report
        .split("dropped: ")
        .nth(1)
        .and_then(|s| s.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(dropped >= 2, "{report}");
}

#[test]
fn an_existing_persistent_tap_is_used_and_left_in_place() {
    if skip("an_existing_persistent_tap_is_used_and_left_in_place") {
        return;
    }
    let t = tag();
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let ns = Netns::new(format!("shmif-f{t}"));
    let tap = format!("shf{t}");
    ip(&["-n", &ns.0, "tuntap", "add", "dev", &tap, "mode", "tap"]);
    let bridge = start_tap(&bus, &tap, &ns);
    let host = Proc::spawn(
        "shmif host",
        Command::new(SHMIF)
            .arg("host")
            .arg(&bus)
            .args(["--ip", "10.213.0.3/24"]),
    );
    host.expect(false, " up on ", Duration::from_secs(20));
    address(&ns, &tap, "10.213.0.1/24", None);
    kernel_ping(&ns, "10.213.0.3", false);
    let (s, err) = bridge.stop(rustix::process::Signal::TERM);
    assert!(s.success(), "{err:?}");
    assert!(!err.join(" ").contains("removed"), "{err:?}");
    assert!(has_link(&ns, &tap), "the persistent TAP was removed");
}

#[test]
fn without_privileges_it_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let name = format!("shg{}", tag());
    let mut cmd = if missing_privilege().is_some() {
        Command::new(SHMIF)
    } else if on_path("setpriv") {
        // Root, without CAP_NET_ADMIN.
        let mut c = Command::new("setpriv");
        c.args(["--inh-caps=-all", "--bounding-set=-net_admin", SHMIF]);
        c
    } else {
        loud(
            "\n*** SKIPPED: without_privileges_it_says_what_is_missing: root here and no setpriv \
             to drop CAP_NET_ADMIN ***\n",
        );
        return;
    };
    let o = run(cmd.arg("tap").arg(&bus).args(["--tap", &name]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        err.contains("needs root or CAP_NET_ADMIN") || err.contains("/dev/net/tun is missing"),
        "{err}"
    );
    assert!(err.contains(&name), "names the TAP: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    // A namespace that does not exist is named.
    let o = run(Command::new(SHMIF)
        .arg("tap")
        .arg(&bus)
        .args(["--netns", "shmif-no-such-ns"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        err.contains("--netns shmif-no-such-ns: no such network namespace"),
        "{err}"
    );
}
