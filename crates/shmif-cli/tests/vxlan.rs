//! `shmif vxlan`: a bus on a VXLAN segment with the Linux kernel's own
//! `vxlan` devices and with other buses.
//!
//! The namespaced tests make network namespaces joined by veth pairs as
//! the underlay (names carry this process's id, so runs never collide)
//! and drive real kernel traffic: a kernel `vxlan` device (VNI 42, dstport
//! 4789) against `shmif vxlan` + `shmif host`, over IPv4 and IPv6; two
//! sites each with a bus, `shmif vxlan` and `shmif tap`, 50 MiB of TCP
//! between their kernels; three sites on a multicast group. They need
//! root (CAP_NET_ADMIN, CAP_SYS_ADMIN), `ip`, python3 and the kernel's
//! vxlan module; without them each says SKIPPED on stderr and passes.
//! Underlay traffic stays in the namespaces (10.214.0.0/24,
//! fd42:214::/64), overlay traffic on 10.215.0.0/24 and fd42:215::/64.
//!
//! The bad-input tests run unprivileged, on the loopback interface: the
//! test itself plays the remote with a UDP socket, sending garbage,
//! truncated, oversized, wrongly flagged and foreign datagrams, going
//! away, and repairing the bus under the tunnel; and jumbo frames both
//! ways on an extended bus, whose frame limit the MTU check uses.

mod common;

use common::{ok, run, run_for, show, start_host, verified_kernel_tcp, Proc, Stream, SHMIF};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A TCP echo server for one connection: prints `listening`, echoes
/// everything until EOF.
const ECHO_SERVER: &str = r#"
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    c.sendall(b)
c.close()
print("done", flush=True)
"#;

/// A TCP echo client: sends N bytes, reads the echo on a thread, prints
/// `<sent sha256> <echoed bytes> <echoed sha256>`.
const ECHO_CLIENT: &str = r#"
import hashlib, socket, sys, threading
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection((host, port), timeout=60)
got = [0, hashlib.sha256()]
def reader():
    while got[0] < total:
        b = c.recv(1 << 16)
        if not b:
            break
        got[1].update(b)
        got[0] += len(b)
t = threading.Thread(target=reader)
t.start()
block = bytes((i * 13 + i // 253) % 256 for i in range(1 << 14))
h, n = hashlib.sha256(), 0
while n < total:
    b = block[: min(len(block), total - n)]
    c.sendall(b)
    h.update(b)
    n += len(b)
t.join(60)
print(h.hexdigest(), got[0], got[1].hexdigest(), flush=True)
"#;

/// `ethtool -K DEV tx off` without ethtool (SIOCETHTOOL, ETHTOOL_STXCSUM).
const TX_CSUM_OFF: &str = r#"
import ctypes, fcntl, socket, struct, sys
ev = ctypes.create_string_buffer(struct.pack("II", 0x17, 0), 8)
ifr = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(ev))
ifr += b"\0" * (40 - len(ifr))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
fcntl.ioctl(s.fileno(), 0x8946, ifr)
"#;

/// Switches off transmit checksum offload on `dev` in `ns`. A kernel
/// vxlan device leaves the inner TCP/UDP checksum for the hardware to
/// fill in; over a veth there is none, and a userspace receiver gets the
/// frame with the checksum unfilled (a real NIC fills it).
fn tx_checksum_off(ns: &Netns, dev: &str) {
    ok(&mut ns.exec(&["python3", "-c", TX_CSUM_OFF, dev]));
}

/// Writes a line straight to standard error: unlike `eprintln!`, not
/// captured by the test harness, so it shows in every test run's log.
fn loud(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Whether this process may make namespaces and vxlan devices; if not,
/// what is missing.
fn missing_privilege() -> Option<String> {
    let caps = rustix::thread::capabilities(None).ok();
    let has = |c| caps.is_some_and(|s| s.effective.contains(c));
    use rustix::thread::CapabilitySet as C;
    let mut missing = Vec::new();
    if !has(C::NET_ADMIN) {
        missing.push("root/CAP_NET_ADMIN".to_string());
    }
    if !has(C::SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN (network namespaces)".to_string());
    }
    for tool in ["ip", "python3"] {
        if !on_path(tool) {
            missing.push(tool.to_string());
        }
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// Prints the loud skip notice and returns true if the test cannot run.
fn skip(test: &str, why: &str) -> bool {
    loud(&format!("\n*** SKIPPED: {test}: {why} ***\n"));
    true
}

/// A unique short tag for this test's names: pid and a counter.
fn tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn ip(args: &[&str]) -> String {
    ok(Command::new("ip").args(args))
}

/// A network namespace, deleted on drop (with what is in it).
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

    /// `ip -n NS ARGS...`
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        ip(&all)
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

/// Joins `a` and `b` with a veth pair `a_if`/`b_if` of the given MTU,
/// both up, addressed `a_addr` and `b_addr` (IPv6 without duplicate
/// address detection).
fn veth(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str, mtu: u32) {
    let mtu = mtu.to_string();
    ip(&[
        "link", "add", a_if, "netns", &a.0, "mtu", &mtu, "type", "veth", "peer", "name", b_if,
        "netns", &b.0, "mtu", &mtu,
    ]);
    for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        if !addr.is_empty() {
            ns.ip(&["addr", "add", addr, "dev", ifname, "nodad"]);
        }
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// What a namespaced test starts with: a tag for its names and a
/// temporary directory for the buses; `None` (after the loud notice) if
/// it cannot run here.
fn prepare(test: &str) -> Option<(String, tempfile::TempDir)> {
    if let Some(what) = missing_privilege() {
        skip(
            test,
            &format!("needs root (network namespaces, vxlan devices); missing here: {what}"),
        );
        return None;
    }
    // The kernel's vxlan module: try making a device in a scratch namespace.
    let t = tag();
    let probe = Netns::new(format!("shvx-probe{t}"));
    let o = run(Command::new("ip").args([
        "-n", &probe.0, "link", "add", "vxp", "type", "vxlan", "id", "1", "dstport", "4789",
    ]));
    if !o.status.success() {
        skip(
            test,
            &format!(
                "the kernel cannot make vxlan devices here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        );
        return None;
    }
    Some((t, tempfile::tempdir().unwrap()))
}

/// Starts `shmif vxlan BUS ARGS` in `ns` and waits until it bridges.
fn start_vxlan(ns: &Netns, bus: &Path, args: &[&str]) -> Proc {
    let mut cmd = ns.exec(&[SHMIF, "vxlan", bus.to_str().unwrap()]);
    cmd.args(args);
    start_vxlan_cmd(cmd)
}

fn start_vxlan_cmd(mut cmd: Command) -> Proc {
    let mut p = Proc::spawn("shmif vxlan", &mut cmd, Stream::Lines, Stream::Lines);
    p.out()
        .expect_containing("bridging", Duration::from_secs(20));
    p
}

/// SIGTERM (or another signal): the exit status and the stderr lines that
/// follow, joined.
fn stop(mut p: Proc, sig: rustix::process::Signal) -> (ExitStatus, String) {
    let s = p.stop(sig, Duration::from_secs(10));
    let (lines, _) = p.err().until_end(Duration::from_secs(5));
    let mut all = p.err().seen.clone();
    all.retain(|l| !lines.contains(l));
    all.extend(lines);
    (s, all.join("\n"))
}

/// Pings `dst` from the kernel in `ns` (3 requests); returns the output.
fn kernel_ping(ns: &Netns, dst: &str) -> String {
    let out = ok(&mut ns.exec(&["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", dst]));
    assert!(out.contains("3 received"), "{out}");
    out
}

/// `shmif ping BUS --ip SRC DST -c N -i I` from userspace, which must get
/// every reply; returns the summary line.
fn shmif_ping(bus: &Path, src: &str, dst: &str, count: u32, interval: &str) -> String {
    let o = run(Command::new(SHMIF).arg("ping").arg(bus).args([
        "--ip",
        src,
        dst,
        "-c",
        &count.to_string(),
        "-i",
        interval,
    ]));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "shmif ping {dst}: {}", show(&o));
    assert!(text.contains(&format!("{count} received")), "{text}");
    text.lines().last().unwrap_or_default().to_string()
}

/// The number after `label` on the line of `report` that contains `line`.
fn count_on(report: &str, line: &str, label: &str) -> u64 {
    report
        .lines()
        .filter(|l| l.contains(line))
        .find_map(|l| {
            let rest = l.split(label).nth(1)?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {label:?} on a line with {line:?}:\n{report}"))
}

/// The kernel's vxlan device against `shmif vxlan` + `shmif host`: pings
/// both ways, a TCP stream from each side through an echo on the other,
/// every byte checked.
fn kernel_interop(test: &str, v6: bool) {
    let Some((t, dir)) = prepare(test) else {
        return;
    };
    let bus = dir.path().join("bus");
    let k = Netns::new(format!("shvx-k{t}"));
    let s = Netns::new(format!("shvx-s{t}"));
    let (ka, sa) = if v6 {
        ("fd42:214::1", "fd42:214::2")
    } else {
        ("10.214.0.1", "10.214.0.2")
    };
    let plen = if v6 { "/64" } else { "/24" };
    let (kif, sif) = (format!("k{t}"), format!("s{t}"));
    veth(
        &k,
        &kif,
        &format!("{ka}{plen}"),
        &s,
        &sif,
        &format!("{sa}{plen}"),
        1600,
    );
    // The kernel's end: VNI 42, the IANA port, the shmif end as remote.
    k.ip(&[
        "link", "add", "vx42", "type", "vxlan", "id", "42", "local", ka, "remote", sa, "dstport",
        "4789", "dev", &kif,
    ]);
    k.ip(&["link", "set", "vx42", "mtu", "1500", "up"]);
    k.ip(&["addr", "add", "10.215.0.1/24", "dev", "vx42"]);
    k.ip(&["addr", "add", "fd42:215::1/64", "dev", "vx42", "nodad"]);
    tx_checksum_off(&k, "vx42");

    let vx = start_vxlan(&s, &bus, &["--vni", "42", "--local", sa, "--remote", ka]);
    let _host = start_host(
        &bus,
        &[
            "--ip",
            "10.215.0.2/24",
            "--ip6",
            "fd42:215::2/64",
            "--tcp-echo",
            "7",
        ],
    );

    // Pings both ways, IPv4 and IPv6 inside.
    kernel_ping(&k, "10.215.0.2");
    kernel_ping(&k, "fd42:215::2");
    let p = shmif_ping(&bus, "10.215.0.3/24", "10.215.0.1", 3, "0.2");
    loud(&format!("{test}: shmif -> kernel ping: {p}"));
    shmif_ping(&bus, "fd42:215::3/64", "fd42:215::1", 3, "0.2");

    // The kernel sends 4 MiB through the shmif host's echo.
    const BYTES: u64 = 4 * 1024 * 1024;
    let o = run_for(
        &mut k.exec(&[
            "python3",
            "-c",
            ECHO_CLIENT,
            "10.215.0.2",
            "7",
            &BYTES.to_string(),
        ]),
        Duration::from_secs(90),
    );
    assert!(o.status.success(), "echo client: {}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f.len(), 3, "{out}");
    assert_eq!(f[1], BYTES.to_string(), "all echoed back: {out}");
    assert_eq!(f[0], f[2], "the echo is what was sent: {out}");

    // A shmif stack sends 4 MiB of its pattern through the kernel's echo.
    let mut echo = Proc::spawn(
        "echo server",
        &mut k.exec(&["python3", "-c", ECHO_SERVER, "10.215.0.1", "5007"]),
        Stream::Lines,
        Stream::Lines,
    );
    echo.out()
        .expect_containing("listening", Duration::from_secs(20));
    let o = run_for(
        Command::new(SHMIF).arg("tcp-send").arg(&bus).args([
            "--ip",
            "10.215.0.4/24",
            "10.215.0.1:5007",
            "--megabytes",
            "4",
            "--expect-echo",
        ]),
        Duration::from_secs(90),
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "tcp-send: {}", show(&o));
    assert!(out.contains("pattern ok"), "{out}");
    loud(&format!(
        "{test}: {}",
        out.lines().next().unwrap_or_default()
    ));

    let (st, report) = stop(vx, rustix::process::Signal::TERM);
    assert!(st.code() == Some(130), "{st}: {report}");
    for zero in [
        "bad flags: 0",
        "other VNI: 0",
        "truncated: 0",
        "unknown source: 0",
        "send errors: 0",
    ] {
        assert!(report.contains(zero), "{zero}: {report}");
    }
    assert!(
        !report.contains("has MTU"),
        "no MTU warning at 1600: {report}"
    );
    let rx = count_on(&report, "datagrams received", "datagrams received: ");
    assert!(
        rx > 2_000,
        "4 MiB each way is thousands of datagrams: {report}"
    );
}

#[test]
fn kernel_vxlan_and_shmif_vxlan_ping_and_tcp_both_ways_ipv4_underlay() {
    kernel_interop(
        "kernel_vxlan_and_shmif_vxlan_ping_and_tcp_both_ways_ipv4_underlay",
        false,
    );
}

#[test]
fn kernel_vxlan_and_shmif_vxlan_ping_and_tcp_both_ways_ipv6_underlay() {
    kernel_interop(
        "kernel_vxlan_and_shmif_vxlan_ping_and_tcp_both_ways_ipv6_underlay",
        true,
    );
}

/// Starts `shmif tap BUS --tap NAME --netns NS` and waits until it
/// bridges.
fn start_tap(bus: &Path, tap: &str, ns: &Netns) -> Proc {
    let args = ["--tap", tap, "--netns", &ns.0];
    let mut p = Proc::shmif("tap", bus, &args, Stream::Lines, Stream::Lines);
    p.out()
        .expect_containing("bridging", Duration::from_secs(20));
    p
}

#[test]
fn two_sites_with_a_bus_each_ping_and_move_50_mib_over_tcp() {
    let test = "two_sites_with_a_bus_each_ping_and_move_50_mib_over_tcp";
    let Some((t, dir)) = prepare(test) else {
        return;
    };
    if !Path::new("/dev/net/tun").exists() {
        skip(test, "no /dev/net/tun for the TAPs");
        return;
    }
    let (bus_a, bus_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = Netns::new(format!("shvx-a{t}"));
    let b = Netns::new(format!("shvx-b{t}"));
    let (aif, bif) = (format!("a{t}"), format!("b{t}"));
    veth(&a, &aif, "10.214.0.1/24", &b, &bif, "10.214.0.2/24", 1600);
    // At each site: the bus on the segment through shmif vxlan, the
    // kernel on the bus through a TAP. The tunnels first: a TAP's first
    // frames (IPv6 neighbour discovery) would otherwise reach one tunnel
    // before the other listens, and count as send errors there.
    let (ta, tb) = (format!("ta{t}"), format!("tb{t}"));
    let vx_a = start_vxlan(
        &a,
        &bus_a,
        &[
            "--vni",
            "42",
            "--local",
            "10.214.0.1",
            "--remote",
            "10.214.0.2",
        ],
    );
    let vx_b = start_vxlan(
        &b,
        &bus_b,
        &[
            "--vni",
            "42",
            "--local",
            "10.214.0.2",
            "--remote",
            "10.214.0.1",
        ],
    );
    let tap_a = start_tap(&bus_a, &ta, &a);
    let tap_b = start_tap(&bus_b, &tb, &b);
    a.ip(&["addr", "add", "10.215.0.1/24", "dev", &ta]);
    b.ip(&["addr", "add", "10.215.0.2/24", "dev", &tb]);
    let p = kernel_ping(&a, "10.215.0.2");
    loud(&format!("{test}: {}", p.lines().last().unwrap_or_default()));
    kernel_ping(&b, "10.215.0.1");

    const BYTES: u64 = 50 * 1024 * 1024;
    let secs = verified_kernel_tcp(
        |args| b.exec(args),
        |args| a.exec(args),
        "10.215.0.2",
        BYTES,
    );
    loud(&format!(
        "{test}: kernel -> kernel TCP over two buses and VXLAN: {BYTES} bytes in {secs:.2} s = \
         {:.1} MiB/s, sha256 ok",
        BYTES as f64 / secs / 1048576.0
    ));
    for vx in [vx_a, vx_b] {
        let (st, report) = stop(vx, rustix::process::Signal::INT);
        assert!(st.code() == Some(130), "{st}: {report}");
        assert!(report.contains("send errors: 0"), "{report}");
    }
    drop((tap_a, tap_b));
}

/// Three sites on a multicast group, one of them a kernel vxlan device:
/// everyone reaches everyone; after learning, unicast goes to one remote.
fn three_sites(test: &str, v6: bool) {
    let Some((t, dir)) = prepare(test) else {
        return;
    };
    let (bus1, bus2) = (dir.path().join("s1"), dir.path().join("s2"));
    // The underlay: a switch namespace with a Linux bridge, one veth to
    // each site.
    let sw = Netns::new(format!("shvx-w{t}"));
    sw.ip(&[
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ]);
    sw.ip(&["link", "set", "br0", "up"]);
    let k = Netns::new(format!("shvx-k{t}"));
    let s1 = Netns::new(format!("shvx-1{t}"));
    let s2 = Netns::new(format!("shvx-2{t}"));
    let mut sites = Vec::new();
    let (prefix, plen, group) = if v6 {
        ("fd42:214::", "/64", "ff05::4242")
    } else {
        ("10.214.0.", "/24", "239.1.1.1")
    };
    let u: Vec<String> = (1..=3).map(|i| format!("{prefix}{i}{plen}")).collect();
    let kernel_remote = if v6 {
        format!("remote [{prefix}1]:4789")
    } else {
        format!("remote {prefix}1:4789")
    };
    let group_remote = if v6 {
        format!("remote [{group}]:4789")
    } else {
        format!("remote {group}:4789")
    };
    for (ns, n, addr) in [
        (&k, "k", u[0].as_str()),
        (&s1, "1", u[1].as_str()),
        (&s2, "2", u[2].as_str()),
    ] {
        let (inner, outer) = (format!("u{n}{t}"), format!("w{n}{t}"));
        veth(ns, &inner, addr, &sw, &outer, "", 1600);
        sw.ip(&["link", "set", &outer, "master", "br0"]);
        sites.push(inner);
    }
    k.ip(&[
        "link", "add", "vx42", "type", "vxlan", "id", "42", "group", group, "dev", &sites[0],
        "dstport", "4789",
    ]);
    k.ip(&["link", "set", "vx42", "mtu", "1500", "up"]);
    k.ip(&["addr", "add", "10.215.0.1/24", "dev", "vx42"]);
    tx_checksum_off(&k, "vx42");
    let vx1 = start_vxlan(
        &s1,
        &bus1,
        &["--vni", "42", "--group", group, "--dev", &sites[1]],
    );
    let vx2 = start_vxlan(
        &s2,
        &bus2,
        &["--vni", "42", "--group", group, "--dev", &sites[2]],
    );
    let _h1 = start_host(&bus1, &["--ip", "10.215.0.2/24"]);
    let _h2 = start_host(&bus2, &["--ip", "10.215.0.3/24"]);

    // Everyone reaches everyone.
    kernel_ping(&k, "10.215.0.2");
    kernel_ping(&k, "10.215.0.3");
    shmif_ping(&bus1, "10.215.0.12/24", "10.215.0.1", 3, "0.1");
    shmif_ping(&bus1, "10.215.0.12/24", "10.215.0.3", 3, "0.1");
    shmif_ping(&bus2, "10.215.0.13/24", "10.215.0.1", 3, "0.1");
    shmif_ping(&bus2, "10.215.0.13/24", "10.215.0.2", 3, "0.1");

    // After learning, 100 pings from site 1 to the kernel (and its 100
    // replies) are unicast between the two: site 2 sees none of them.
    let p = shmif_ping(&bus1, "10.215.0.12/24", "10.215.0.1", 100, "0.01");
    loud(&format!("{test}: site 1 -> kernel: {p}"));
    let (st1, r1) = stop(vx1, rustix::process::Signal::TERM);
    let (st2, r2) = stop(vx2, rustix::process::Signal::TERM);
    assert!(
        st1.code() == Some(130) && st2.code() == Some(130),
        "{r1}\n{r2}"
    );
    let to_kernel = count_on(&r1, &kernel_remote, "sent unicast: ");
    let to_group = count_on(&r1, &group_remote, "sent flooded: ");
    assert!(to_kernel >= 100, "{r1}");
    assert!(to_group < 20, "floods are only the few ARP requests: {r1}");
    let from_kernel = count_on(&r1, &kernel_remote, "received: ");
    assert!(from_kernel >= 100, "{r1}");
    let at_2 = count_on(&r2, "datagrams received", "datagrams received: ");
    assert!(
        at_2 < 60,
        "site 2 got only the first round and floods, not the 200 unicast frames: {r2}"
    );
    loud(&format!(
        "{test}: site 1 sent {to_kernel} unicast datagrams to the kernel and {to_group} to the \
         group; site 2 received {at_2} datagrams in all"
    ));
}

#[test]
fn three_sites_on_a_multicast_group_reach_each_other_and_unicast_goes_to_one() {
    three_sites(
        "three_sites_on_a_multicast_group_reach_each_other_and_unicast_goes_to_one",
        false,
    );
}

#[test]
fn three_sites_on_an_ipv6_multicast_group_reach_each_other_and_unicast_goes_to_one() {
    three_sites(
        "three_sites_on_an_ipv6_multicast_group_reach_each_other_and_unicast_goes_to_one",
        true,
    );
}

// Bad input: unprivileged, on loopback.

/// A UDP port nobody uses now (bound and released).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A broadcast frame from `src`, EtherType 0x88b5, `len` bytes.
fn frame(src: u8, tag: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, src, 0x88, 0xb5, tag]);
    f.resize(len, tag);
    f
}

/// `frame` in a VXLAN datagram for `vni`.
fn datagram(vni: u32, f: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut d = vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0];
    d.extend_from_slice(f);
    d
}

/// A `shmif vxlan` on a new bus at 127.0.0.1, whose one remote is the
/// returned socket (the test), plus the bus path and the tunnel's port.
fn loopback_tunnel(dir: &Path, extra: &[&str]) -> (Proc, UdpSocket, u16) {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = free_port();
    let remote = peer.local_addr().unwrap().to_string();
    let mut cmd = Command::new(SHMIF);
    cmd.arg("vxlan").arg(dir.join("bus")).args([
        "--vni",
        "42",
        "--local",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--remote",
        &remote,
    ]);
    cmd.args(extra);
    (start_vxlan_cmd(cmd), peer, port)
}

/// A frame sent on `bus` by `shmif send` (broadcast, 0x88b5, payload
/// `hex`).
fn send_on_bus(bus: &Path, hex: &str) {
    let o = common::send_broadcast(bus.to_str().unwrap(), hex);
    assert!(o.status.success(), "{}", show(&o));
}

/// Waits until the peer socket receives a datagram whose frame carries
/// `hex`'s bytes; returns the datagram.
fn expect_datagram(peer: &UdpSocket, payload: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0; 65536];
    while Instant::now() < deadline {
        if let Ok((n, _)) = peer.recv_from(&mut buf) {
            if n >= 22 && buf[22..n].starts_with(payload) {
                return buf[..n].to_vec();
            }
        }
    }
    panic!("no datagram with payload {payload:02x?} came");
}

/// Waits until `shmif listen` on `bus` sees a frame whose first payload
/// byte is `tag`; returns what it printed.
fn expect_on_bus(bus: &Path, tag: u8) -> String {
    let o = run_for(
        Command::new(SHMIF)
            .arg("listen")
            .arg(bus)
            .args(["-c", "1", "--promisc", "--timeout", "5"]),
        Duration::from_secs(20),
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "listen: {}", show(&o));
    assert!(
        out.contains(&format!("{tag:02x} {tag:02x} {tag:02x}")),
        "frame {tag:#x} on the bus: {out}"
    );
    out
}

/// `peer` sends the tunnel at `to` a VNI 42 datagram with a `len`-byte
/// frame of 0x5a bytes, which a `shmif listen` on `bus` must see; returns
/// what the listener printed.
fn datagram_onto_bus(peer: &UdpSocket, to: &str, bus: &Path, len: usize) -> String {
    let listener = std::thread::spawn({
        let bus = bus.to_path_buf();
        move || expect_on_bus(&bus, 0x5a)
    });
    std::thread::sleep(Duration::from_millis(300));
    peer.send_to(&datagram(42, &frame(7, 0x5a, len)), to)
        .unwrap();
    listener.join().unwrap()
}

#[test]
fn garbage_truncated_oversized_foreign_and_badly_flagged_datagrams_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let (vx, peer, port) = loopback_tunnel(dir.path(), &[]);
    let to = format!("127.0.0.1:{port}");
    // Bad datagrams of every kind, from the configured remote.
    let good = frame(7, 0xab, 60);
    let mut bad_flags = datagram(42, &good);
    bad_flags[0] = 0x0c;
    let mut reserved = datagram(42, &good);
    reserved[7] = 1;
    let mut no_i = datagram(42, &good);
    no_i[0] = 0;
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x08],
        vec![0x08, 0, 0, 0, 0, 0, 42],
        datagram(42, &[]),
        datagram(42, &good[..13]),
        bad_flags,
        reserved,
        no_i,
        datagram(43, &good),
        datagram(42, &frame(7, 0xcd, 60_000)),
    ];
    let (mut want_bad_flags, mut want_truncated) = (3, 5);
    // Garbage: a deterministic pseudo-random spray (never a valid flags
    // byte, so each is either too short or badly flagged).
    let mut x: u32 = 0x1234_5678;
    for i in 0..500 {
        let len = (i * 37) % 1600;
        let mut d = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            d.push(x as u8);
        }
        if !d.is_empty() && d[0] == 0x08 {
            d[0] = 0x09;
        }
        if d.len() < 8 {
            want_truncated += 1;
        } else {
            want_bad_flags += 1;
        }
        cases.push(d);
    }
    for d in &cases {
        peer.send_to(d, &to).unwrap();
    }
    // From a source that is not a remote: dropped.
    let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
    stranger
        .send_to(&datagram(42, &frame(8, 0xee, 60)), &to)
        .unwrap();
    // Still alive: a good datagram comes onto the bus, and a frame on the
    // bus goes out to the remote.
    std::thread::sleep(Duration::from_millis(300));
    datagram_onto_bus(&peer, &to, &bus, 60);
    send_on_bus(&bus, "c0ffee");
    let d = expect_datagram(&peer, &[0xc0, 0xff, 0xee]);
    assert_eq!(
        &d[..8],
        &[0x08, 0, 0, 0, 0, 0, 42, 0],
        "the header Linux expects"
    );

    let (st, report) = stop(vx, rustix::process::Signal::TERM);
    assert!(st.code() == Some(130), "{st}: {report}");
    assert_eq!(
        count_on(&report, "bad flags", "bad flags: "),
        want_bad_flags,
        "{report}"
    );
    assert_eq!(
        count_on(&report, "truncated", "truncated: "),
        want_truncated,
        "{report}"
    );
    assert!(report.contains("other VNI: 1"), "{report}");
    assert!(report.contains("unknown source: 1"), "{report}");
    let too_large = count_on(&report, "too large for the bus", "too large for the bus: ");
    assert!(too_large >= 1, "{report}");
    assert!(
        report.contains("dropped a"),
        "the oversize warning: {report}"
    );
    let rx = count_on(&report, "datagrams received", "datagrams received: ");
    assert_eq!(
        rx as usize,
        cases.len() + 1,
        "every datagram of the remote: {report}"
    );
}

#[test]
fn on_an_extended_bus_jumbo_frames_cross_and_the_mtu_check_takes_the_bus_limit() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    common::create_extended(&bus, "4M", "65549");
    let (vx, peer, port) = loopback_tunnel(dir.path(), &[]);
    let to = format!("127.0.0.1:{port}");
    // A 60,000-byte frame in a datagram comes onto the bus whole.
    let seen = datagram_onto_bus(&peer, &to, &bus, 60_000);
    assert!(seen.contains("length 60000: 59986 bytes"), "{seen}");
    // A 9,000-byte frame on the bus goes out in one datagram.
    send_on_bus(&bus, &"ab".repeat(8986));
    let d = expect_datagram(&peer, &[0xab; 16]);
    assert_eq!(d.len(), 8 + 9000);

    let (st, report) = stop(vx, rustix::process::Signal::TERM);
    assert!(st.code() == Some(130), "{st}: {report}");
    assert_eq!(
        count_on(&report, "too large for the bus", "too large for the bus: "),
        0,
        "{report}"
    );
    // The MTU check is against this bus's frame limit, not a v3 bus's
    // 1514: a 65,549-byte frame in VXLAN over IPv4 is a 65,585-byte
    // packet, more than loopback carries (65,535 or 65,536).
    let lo: usize = std::fs::read_to_string("/sys/class/net/lo/mtu")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if lo < 65_585 {
        assert!(
            report.contains("but a 65549-byte bus frame") && report.contains("needs 65585"),
            "{report}"
        );
        assert_eq!(report.matches("has MTU").count(), 1, "{report}");
    }
}

#[test]
fn a_remote_that_vanishes_does_not_stop_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    // Two remotes: the test's socket, and one that goes away (its port
    // then answers with ICMP port unreachable).
    let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let gone_addr = gone.local_addr().unwrap().to_string();
    let (vx, peer, _port) = loopback_tunnel(dir.path(), &["--remote", &gone_addr]);
    send_on_bus(&bus, "01");
    expect_datagram(&peer, &[0x01]);
    drop(gone);
    for i in 0..50u8 {
        send_on_bus(&bus, &format!("{:02x}", 0x10 + i));
    }
    // Every frame still reaches the live remote, the last one too.
    expect_datagram(&peer, &[0x10 + 49]);
    let mut vx = vx;
    assert!(vx.running(), "the tunnel stopped");
    let (st, report) = stop(vx, rustix::process::Signal::TERM);
    assert!(st.code() == Some(130), "{st}: {report}");
    // Each datagram to the vanished port draws an ICMP port unreachable,
    // which the next send to it reports (ECONNREFUSED): that one is lost,
    // counted, warned about once, and the tunnel goes on.
    let to_gone = count_on(&report, &format!("remote {gone_addr}"), "sent flooded: ");
    let errors = count_on(&report, "send errors", "send errors: ");
    assert!(errors >= 1, "{report}");
    assert!(to_gone + errors >= 50, "{report}");
    assert!(report.contains("Connection refused"), "{report}");
    assert_eq!(report.matches("cannot send to").count(), 1, "{report}");
}

#[test]
fn a_bus_repaired_under_the_tunnel_keeps_it_running() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let (mut vx, peer, port) = loopback_tunnel(dir.path(), &[]);
    for k in 0..20u8 {
        send_on_bus(&bus, &format!("{:02x}", 0x30 + k));
    }
    expect_datagram(&peer, &[0x30 + 19]);
    // A holder that died mid-write: the lock held with a dead pid, and the
    // length of a frame in the chain smashed. The next sender takes the
    // lock over and resets the ring.
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let f = std::fs::OpenOptions::new().write(true).open(&bus).unwrap();
    f.write_all_at(&1u32.to_ne_bytes(), 24).unwrap();
    f.write_all_at(&shmif::lowlevel::holder_tag(dead).to_ne_bytes(), 28)
        .unwrap();
    let at = (shmif::wire::BUS_HEADER_LEN + 24 + 84 * 3) as u64;
    f.write_all_at(&0xffffu32.to_ne_bytes(), at).unwrap();
    send_on_bus(&bus, "77");
    expect_datagram(&peer, &[0x77]);
    // And the other way.
    let listener = std::thread::spawn({
        let bus = bus.clone();
        move || expect_on_bus(&bus, 0x78)
    });
    std::thread::sleep(Duration::from_millis(300));
    peer.send_to(
        &datagram(42, &frame(9, 0x78, 60)),
        format!("127.0.0.1:{port}"),
    )
    .unwrap();
    listener.join().unwrap();
    assert!(vx.running());
    let (st, report) = stop(vx, rustix::process::Signal::INT);
    assert!(st.code() == Some(130), "{st}: {report}");
}

#[test]
fn bad_arguments_are_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let port = free_port().to_string();
    let own = format!("127.0.0.1:{port}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--vni",
                "1",
                "--local",
                "127.0.0.1",
                "--port",
                &port,
                "--remote",
                &own,
            ],
            "that is this end",
        ),
        (
            vec![
                "--vni",
                "16777216",
                "--local",
                "127.0.0.1",
                "--remote",
                "127.0.0.2",
            ],
            "--vni",
        ),
        (
            vec![
                "--vni",
                "x",
                "--local",
                "127.0.0.1",
                "--remote",
                "127.0.0.2",
            ],
            "--vni",
        ),
        (vec!["--vni", "1", "--remote", "127.0.0.2"], "--local"),
        (vec!["--vni", "1", "--local", "127.0.0.1"], "--remote"),
        (
            vec!["--vni", "1", "--local", "127.0.0.1", "--remote", "nowhere"],
            "nowhere",
        ),
        (
            vec![
                "--vni",
                "1",
                "--local",
                "127.0.0.1",
                "--remote",
                "239.1.1.1",
            ],
            "--group",
        ),
        (
            vec!["--vni", "1", "--local", "127.0.0.1", "--remote", "::1"],
            "address family",
        ),
        (
            vec![
                "--vni",
                "1",
                "--local",
                "192.0.2.77",
                "--port",
                &port,
                "--remote",
                "127.0.0.2",
            ],
            "--local 192.0.2.77",
        ),
        (
            vec!["--vni", "1", "--group", "10.0.0.1", "--dev", "lo"],
            "--group 10.0.0.1",
        ),
        (
            vec!["--vni", "1", "--group", "239.1.1.1", "--dev", "no-such-if0"],
            "--dev no-such-if0",
        ),
        (vec!["--vni", "1", "--group", "239.1.1.1"], "--dev"),
    ];
    for (args, needle) in cases {
        let o = run(Command::new(SHMIF).arg("vxlan").arg(b).args(&args));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}: {}", show(&o));
        assert!(err.contains(needle), "{args:?}: no {needle:?}: {err}");
    }
    // A port in use is named.
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let used = holder.local_addr().unwrap().port().to_string();
    let o = run(Command::new(SHMIF).arg("vxlan").arg(b).args([
        "--vni",
        "1",
        "--local",
        "127.0.0.1",
        "--port",
        &used,
        "--remote",
        "127.0.0.2",
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        err.contains(&format!("--port {used}")) && err.contains("in use"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn an_underlay_too_small_for_a_bus_frame_is_warned_about_once_and_still_carries_tcp() {
    let test = "an_underlay_too_small_for_a_bus_frame_is_warned_about_once_and_still_carries_tcp";
    let Some((t, dir)) = prepare(test) else {
        return;
    };
    let a = Netns::new(format!("shvx-m{t}"));
    let b = Netns::new(format!("shvx-n{t}"));
    veth(
        &a,
        &format!("m{t}"),
        "fd42:214::1/64",
        &b,
        &format!("n{t}"),
        "fd42:214::2/64",
        1500,
    );
    let (bus_a, bus_b) = (dir.path().join("a"), dir.path().join("b"));
    let vx = start_vxlan(
        &a,
        &bus_a,
        &[
            "--vni",
            "5",
            "--local",
            "fd42:214::1",
            "--remote",
            "fd42:214::2",
            "--remote",
            "[fd42:214::2]:4790",
        ],
    );
    let vx_b = start_vxlan(
        &b,
        &bus_b,
        &[
            "--vni",
            "5",
            "--local",
            "fd42:214::2",
            "--remote",
            "fd42:214::1",
        ],
    );
    // Full-sized frames do not fit the underlay: the kernel fragments the
    // datagrams (and refuses to segment them), and TCP still gets through.
    let mut sink = start_host(&bus_b, &["--ip", "10.215.0.2/24", "--tcp-sink", "9000"]);
    let o = run_for(
        Command::new(SHMIF).arg("tcp-send").arg(&bus_a).args([
            "--ip",
            "10.215.0.1/24",
            "10.215.0.2:9000",
            "--megabytes",
            "2",
        ]),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "tcp-send: {}", show(&o));
    let report = sink
        .out()
        .expect_containing("tcp-sink 9000:", Duration::from_secs(20));
    assert!(
        report.contains("2097152 bytes") && report.contains("pattern ok"),
        "{report}"
    );
    let (st, report) = stop(vx, rustix::process::Signal::TERM);
    assert!(st.code() == Some(130), "{report}");
    assert_eq!(report.matches("has MTU 1500").count(), 1, "{report}");
    assert!(report.contains("needs 1570"), "{report}");
    let (st, report) = stop(vx_b, rustix::process::Signal::TERM);
    assert!(st.code() == Some(130), "{report}");
}

#[test]
fn help_teaches_with_examples_and_exit_statuses() {
    for sub in ["vxlan", "bridge"] {
        let o = run(Command::new(SHMIF).args([sub, "--help"]));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{}", show(&o));
        assert!(out.contains("Examples"), "{out}");
        assert!(out.contains("Exit status"), "{out}");
    }
    let o = run(Command::new(SHMIF).args(["vxlan", "--help"]));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("no authentication"), "{out}");
    assert!(out.contains("dstport 4789"), "{out}");
}

#[test]
fn with_learn_remotes_endpoints_join_by_sending_and_unicast_goes_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let port = free_port();
    let mut cmd = Command::new(SHMIF);
    cmd.arg("vxlan").arg(&bus).args([
        "--vni",
        "42",
        "--local",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--learn-remotes",
    ]);
    let mut vx = start_vxlan_cmd(cmd);
    let to = format!("127.0.0.1:{port}");
    // Two endpoints on other loopback addresses, at the same port (where
    // a learnt remote is sent to, as on Linux).
    let e1 = UdpSocket::bind(format!("127.0.0.2:{port}")).unwrap();
    let e2 = UdpSocket::bind(format!("127.0.0.3:{port}")).unwrap();
    for e in [&e1, &e2] {
        e.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    let listener = std::thread::spawn({
        let bus = bus.clone();
        move || expect_on_bus(&bus, 0xe1)
    });
    std::thread::sleep(Duration::from_millis(300));
    e1.send_to(&datagram(42, &frame(0xe1, 0xe1, 60)), &to)
        .unwrap();
    listener.join().unwrap();
    e2.send_to(&datagram(42, &frame(0xe2, 0xe2, 60)), &to)
        .unwrap();
    vx.err().expect_containing(
        &format!("learnt remote 127.0.0.3:{port}"),
        Duration::from_secs(5),
    );
    // A broadcast from the bus goes to both.
    send_on_bus(&bus, "b0");
    expect_datagram(&e1, &[0xb0]);
    expect_datagram(&e2, &[0xb0]);
    // Unicast to the address behind e1 goes to e1 only.
    let o = common::shmif(&[
        "send",
        bus.to_str().unwrap(),
        "--dst",
        "02:00:00:00:00:e1",
        "--ethertype",
        "0x88b5",
        "--payload",
        "a1a1",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    expect_datagram(&e1, &[0xa1, 0xa1]);
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Ok((n, _)) = e2.recv_from(&mut buf) {
            assert!(
                !(n >= 24 && buf[22..24] == [0xa1, 0xa1]),
                "the unicast frame reached e2 too"
            );
        }
    }
    let (st, report) = stop(vx, rustix::process::Signal::TERM);
    assert!(st.code() == Some(130), "{st}: {report}");
    assert_eq!(
        count_on(
            &report,
            &format!("remote 127.0.0.2:{port}"),
            "sent unicast: "
        ),
        1,
        "{report}"
    );
    assert_eq!(
        count_on(
            &report,
            &format!("remote 127.0.0.3:{port}"),
            "sent unicast: "
        ),
        0,
        "{report}"
    );
}
