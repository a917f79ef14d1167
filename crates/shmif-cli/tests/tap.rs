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

mod common;

use common::{number_after, ok, run, show, verified_kernel_tcp, Proc, Stream, SHMIF};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

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

/// SIGTERM (or another signal): the exit status and the stderr lines that
/// follow.
fn stop(mut p: Proc, sig: rustix::process::Signal) -> (ExitStatus, Vec<String>) {
    let s = p.stop(sig, Duration::from_secs(10));
    (s, p.err().until_end(Duration::from_secs(5)).0)
}

/// Starts `shmif host BUS --ip IP` and waits until it is up.
fn start_host(bus: &Path, ip: &str) -> Proc {
    let mut host = Proc::shmif("host", bus, &["--ip", ip], Stream::Lines, Stream::Lines);
    host.out()
        .expect_containing(" up on ", Duration::from_secs(20));
    host
}

/// Starts `shmif tap BUS --tap NAME --netns NS` and waits until it bridges.
fn start_tap(bus: &Path, tap: &str, ns: &Netns) -> Proc {
    let args = ["--tap", tap, "--netns", &ns.0];
    let mut p = Proc::shmif("tap", bus, &args, Stream::Lines, Stream::Lines);
    let line = p
        .out()
        .expect_containing("bridging", Duration::from_secs(20));
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

/// What a test that makes namespaces and TAPs starts with: a unique tag
/// for its names ([`tag`]) and a temporary directory for the bus; `None`
/// (after the loud notice) if it cannot run here.
fn prepare(test: &str) -> Option<(String, tempfile::TempDir)> {
    if skip(test) {
        return None;
    }
    Some((tag(), tempfile::tempdir().unwrap()))
}

/// A kernel on the bus: the namespace `shmif-{name}{t}` with a TAP
/// `sh{name}{t}` bridged to `bus`, addressed `v4` (and `v6`). Returned in
/// that order, so that the bridge is dropped before the namespace.
fn kernel(bus: &Path, name: &str, t: &str, v4: &str, v6: Option<&str>) -> (Netns, String, Proc) {
    let ns = Netns::new(format!("shmif-{name}{t}"));
    let tap = format!("sh{name}{t}");
    let bridge = start_tap(bus, &tap, &ns);
    address(&ns, &tap, v4, v6);
    (ns, tap, bridge)
}

#[test]
fn two_kernels_ping_and_move_50_mib_over_tcp_across_the_bus() {
    let Some((t, dir)) = prepare("two_kernels_ping_and_move_50_mib_over_tcp_across_the_bus") else {
        return;
    };
    let bus = dir.path().join("bus");
    let (na, ta, bridge_a) = kernel(&bus, "a", &t, "10.213.0.1/24", Some("fd42:213::1/64"));
    let (nb, tb, bridge_b) = kernel(&bus, "b", &t, "10.213.0.2/24", Some("fd42:213::2/64"));

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
    let secs = verified_kernel_tcp(
        |args| nb.exec(args),
        |args| na.exec(args),
        "10.213.0.2",
        BYTES,
    );
    loud(&format!(
        "kernel -> kernel TCP over the bus: {BYTES} bytes in {secs:.2} s = {:.1} MiB/s ({:.0} Mbit/s), sha256 ok",
        BYTES as f64 / secs / 1048576.0,
        BYTES as f64 * 8.0 / secs / 1e6
    ));

    // SIGTERM and SIGINT detach cleanly, report, and remove the TAPs.
    let (sa, err_a) = stop(bridge_a, rustix::process::Signal::TERM);
    let (sb, err_b) = stop(bridge_b, rustix::process::Signal::INT);
    for (s, err, tap, ns) in [(sa, &err_a, &ta, &na), (sb, &err_b, &tb, &nb)] {
        let report = err.join("\n");
        eprintln!("{report}");
        // Issue 14: stopped by a signal, it exits 130 (was 0).
        assert_eq!(s.code(), Some(130), "{tap}: {s}: {report}");
        assert!(report.contains(&format!("TAP {tap} removed")), "{report}");
        assert!(report.contains("0 over 1514 bytes"), "{report}");
        assert!(!has_link(ns, tap), "{tap} still exists");
    }
    let to_bus = number_after(&err_a.join(" "), "kernel to bus ").unwrap();
    assert!(
        to_bus > 30_000,
        "50 MiB is more than 30,000 frames: {to_bus}"
    );
}

#[test]
fn a_kernel_and_a_userspace_host_ping_each_other_and_capture_sees_it() {
    let Some((t, dir)) =
        prepare("a_kernel_and_a_userspace_host_ping_each_other_and_capture_sees_it")
    else {
        return;
    };
    let bus = dir.path().join("bus");
    let pcap = dir.path().join("pings.pcap");
    let (ns, _tap, _bridge) = kernel(&bus, "c", &t, "10.213.0.1/24", None);
    let _host = start_host(&bus, "10.213.0.3/24");
    let args = ["-w", pcap.to_str().unwrap()];
    let mut capture = Proc::shmif("capture", &bus, &args, Stream::Lines, Stream::Lines);
    capture
        .err()
        .expect_containing("capturing on", Duration::from_secs(20));

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

    let (s, err) = stop(capture, rustix::process::Signal::INT);
    assert_eq!(s.code(), Some(130), "capture: {s}: {err:?}");
    let report = err.join("\n");
    assert!(report.contains(" captured ("), "{report}");

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
    let Some((t, dir)) = prepare("frames_too_big_for_the_bus_are_dropped_counted_and_warned_about")
    else {
        return;
    };
    let bus = dir.path().join("bus");
    let (na, ta, mut bridge_a) = kernel(&bus, "d", &t, "10.213.0.1/24", None);
    let (_nb, _tb, _bridge_b) = kernel(&bus, "e", &t, "10.213.0.2/24", None);
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
    let warning = bridge_a
        .err()
        .expect_containing("dropped a", Duration::from_secs(10));
    assert!(warning.contains("at most 1514"), "{warning}");
    let (s, err) = stop(bridge_a, rustix::process::Signal::TERM);
    assert_eq!(s.code(), Some(130));
    let report = err.join("\n");
    let dropped = number_after(&report, "dropped: ").unwrap_or_else(|| panic!("{report}"));
    assert!(dropped >= 2, "{report}");
}

#[test]
fn an_existing_persistent_tap_is_used_and_left_in_place() {
    let Some((t, dir)) = prepare("an_existing_persistent_tap_is_used_and_left_in_place") else {
        return;
    };
    let bus = dir.path().join("bus");
    let ns = Netns::new(format!("shmif-f{t}"));
    let tap = format!("shf{t}");
    ip(&["-n", &ns.0, "tuntap", "add", "dev", &tap, "mode", "tap"]);
    let bridge = start_tap(&bus, &tap, &ns);
    let _host = start_host(&bus, "10.213.0.3/24");
    address(&ns, &tap, "10.213.0.1/24", None);
    kernel_ping(&ns, "10.213.0.3", false);
    let (s, err) = stop(bridge, rustix::process::Signal::TERM);
    assert_eq!(s.code(), Some(130), "{err:?}");
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
