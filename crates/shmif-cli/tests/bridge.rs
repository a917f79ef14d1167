//! `shmif bridge`: two buses as one segment. Unprivileged: userspace
//! hosts (`shmif host`, `ping`, `tcp-send`) on each bus talk across the
//! bridge, also between an extended bus and a v3 bus, where a frame too
//! large for the v3 side is dropped for it, counted and warned about once;
//! unicast between stations on one side stays there; two bridges between
//! the same buses are a loop, which is warned about; a bus that is
//! repaired under the bridge does not stop it.

mod common;

use common::{
    create_extended, run, run_for, send_broadcast, show, start_host, text, Proc, Stream, SHMIF,
};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// Starts `shmif bridge A B` and waits until it bridges.
fn start_bridge(a: &Path, b: &Path) -> Proc {
    let mut cmd = Command::new(SHMIF);
    cmd.arg("bridge").arg(a).arg(b);
    let mut p = Proc::spawn("shmif bridge", &mut cmd, Stream::Lines, Stream::Lines);
    p.out()
        .expect_containing("bridging", Duration::from_secs(20));
    p
}

/// Sends `sig` and returns the exit status and every stderr line.
fn stop(mut p: Proc, sig: rustix::process::Signal) -> (ExitStatus, String) {
    let s = p.stop(sig, Duration::from_secs(10));
    p.err().until_end(Duration::from_secs(5));
    (s, p.err().seen.join("\n"))
}

/// The number right after `label` in `text` (digits only).
fn count(text: &str, label: &str) -> u64 {
    text.split(label)
        .nth(1)
        .map(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
}

/// `shmif ping BUS --ip SRC DST -c N`, which must get every reply.
fn ping(bus: &Path, src: &str, dst: &str, n: u32) -> String {
    let o = run(Command::new(SHMIF).arg("ping").arg(bus).args([
        "--ip",
        src,
        dst,
        "-c",
        &n.to_string(),
        "-i",
        "0.05",
    ]));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "ping: {}", show(&o));
    assert!(out.contains(&format!("{n} received")), "{out}");
    out
}

#[test]
fn hosts_on_two_buses_ping_and_move_verified_tcp_across_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    hosts_ping_and_move_verified_tcp(&a, &b);
}

#[test]
fn an_extended_bus_bridged_to_a_v3_bus_carries_pings_and_verified_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // A: jumbo frames (the host there has MTU 65535); B: NetBSD's v3 bus,
    // made by the bridge. TCP's MSS keeps the segments within B's 1514.
    create_extended(&a, "16M", "65549");
    hosts_ping_and_move_verified_tcp(&a, &b);
    let head = run(Command::new(SHMIF).arg("dump").arg(&b));
    assert!(
        text(&head.stdout).starts_with("bus version 3"),
        "B is a v3 bus: {}",
        show(&head)
    );
}

/// A bridge between `a` and `b`; a `shmif host` on A (TCP sink and echo);
/// pings over IPv4 and IPv6 from B, 20 MiB into the sink, 5 MiB through
/// the echo, every byte checked; no frame too large for either side.
fn hosts_ping_and_move_verified_tcp(a: &Path, b: &Path) {
    let bridge = start_bridge(a, b);
    let mut host = start_host(
        a,
        &[
            "--ip",
            "10.216.0.1/24",
            "--ip6",
            "fd42:216::1/64",
            "--tcp-sink",
            "9000",
            "--tcp-echo",
            "7",
        ],
    );
    ping(b, "10.216.0.2/24", "10.216.0.1", 3);
    ping(b, "fd42:216::2/64", "fd42:216::1", 3);
    // 20 MiB into the sink on the other bus, which checks the pattern.
    let o = run_for(
        Command::new(SHMIF).arg("tcp-send").arg(b).args([
            "--ip",
            "10.216.0.2/24",
            "10.216.0.1:9000",
            "--megabytes",
            "20",
        ]),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "tcp-send: {}", show(&o));
    let sink = host
        .out()
        .expect_containing("tcp-sink 9000:", Duration::from_secs(20));
    assert!(
        sink.contains("20971520 bytes") && sink.contains("pattern ok"),
        "{sink}"
    );
    // 5 MiB through the echo and back, over IPv6, checked by the sender.
    let o = run_for(
        Command::new(SHMIF).arg("tcp-send").arg(b).args([
            "--ip",
            "fd42:216::2/64",
            "[fd42:216::1]:7",
            "--megabytes",
            "5",
            "--expect-echo",
        ]),
        Duration::from_secs(60),
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && out.contains("pattern ok"),
        "{}",
        show(&o)
    );

    let (st, report) = stop(bridge, rustix::process::Signal::TERM);
    assert!(st.code() == Some(130), "{st}: {report}");
    let b_to_a = count(&report, &format!("{} -> {}: ", b.display(), a.display()));
    assert!(b_to_a > 14_000, "20 MiB is over 14,000 frames: {report}");
    assert!(
        report.contains("too large for the other bus: 0 from A, 0 from B"),
        "{report}"
    );
}

#[test]
fn a_frame_too_large_for_the_v3_bus_is_dropped_counted_and_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    create_extended(&a, "4M", "9014");
    let bridge = start_bridge(&a, &b);
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    // Two frames of 3014 bytes (too large for B's 1514), one of 1514 and
    // one of 60 (which fit), in that order on A.
    for payload in ["ab".repeat(3000), "cd".repeat(3000), "ef".repeat(1500)] {
        let o = send_broadcast(a_s, &payload);
        assert!(o.status.success(), "send: {}", show(&o));
    }
    let o = send_broadcast(a_s, &"01".repeat(46));
    assert!(o.status.success(), "send: {}", show(&o));
    // The bridge handles A's frames in order: once the last is on B, the
    // others have been dealt with.
    let dump = common::wait_for(Duration::from_secs(20), "the 60-byte frame on B", || {
        let d = text(&run(Command::new(SHMIF).args(["dump", b_s])).stdout);
        d.contains("length 60:").then_some(d)
    });
    let lengths: Vec<&str> = dump
        .lines()
        .filter(|l| l.starts_with("packet "))
        .filter_map(|l| l.rsplit(", length ").next())
        .collect();
    assert_eq!(lengths.len(), 2, "only the two frames that fit: {dump}");
    assert!(lengths[0].starts_with("1514: 1500 bytes: ef ef"), "{dump}");
    assert!(lengths[1].starts_with("60: 46 bytes: 01 01"), "{dump}");

    let (st, report) = stop(bridge, rustix::process::Signal::TERM);
    assert!(st.code() == Some(130), "{st}: {report}");
    assert!(
        report.contains("too large for the other bus: 2 from A, 0 from B"),
        "{report}"
    );
    let a_to_b = count(&report, &format!("{} -> {}: ", a.display(), b.display()));
    assert_eq!(a_to_b, 2, "{report}");
    let warnings: Vec<&str> = report.lines().filter(|l| l.contains("dropped a")).collect();
    assert_eq!(warnings.len(), 1, "one warning for two drops: {report}");
    assert!(
        warnings[0].contains("dropped a 3014-byte frame")
            && warnings[0].contains("carries at most 1514"),
        "{report}"
    );
}

#[test]
fn unicast_between_two_stations_on_one_side_does_not_cross() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let bridge = start_bridge(&a, &b);
    let _host = start_host(&a, &["--ip", "10.216.0.1/24"]);
    // Two stations on bus A: 20 echo requests and 20 replies, unicast
    // once each has been learnt.
    ping(&a, "10.216.0.3/24", "10.216.0.1", 20);
    let (st, report) = stop(bridge, rustix::process::Signal::INT);
    assert!(st.code() == Some(130), "{st}: {report}");
    let kept = count(&report, "kept on their side: ");
    assert!(kept >= 40, "requests and replies kept on A: {report}");
    let a_to_b = count(&report, &format!("{} -> {}: ", a.display(), b.display()));
    assert!(
        a_to_b <= 4,
        "only the broadcasts (ARP) crossed to B, not the 40 unicast frames: {report}"
    );
}

#[test]
fn two_bridges_between_the_same_buses_are_a_loop_and_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut one = start_bridge(&a, &b);
    let mut two = start_bridge(&a, &b);
    let o = common::send_broadcast(a.to_str().unwrap(), "10");
    assert!(o.status.success(), "{}", show(&o));
    // The broadcast circles: each bridge soon sees its source on both
    // sides.
    let mut warned = false;
    for _ in 0..50 {
        for p in [&mut one, &mut two] {
            if p.err()
                .next_matching(
                    |l| l.contains("moves between ports"),
                    Duration::from_millis(100),
                )
                .is_ok()
            {
                warned = true;
            }
        }
        if warned {
            break;
        }
    }
    let (s1, r1) = stop(one, rustix::process::Signal::TERM);
    let (s2, r2) = stop(two, rustix::process::Signal::TERM);
    assert!(warned, "no loop warning:\n{r1}\n{r2}");
    let all = format!("{r1}\n{r2}");
    assert!(all.contains("is there a loop"), "{all}");
    assert!(s1.code() == Some(130) && s2.code() == Some(130), "{all}");
}

#[test]
fn the_same_bus_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let o = run(Command::new(SHMIF).arg("bridge").arg(&a).arg(&a));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(err.contains("the same bus"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_bus_repaired_under_the_bridge_keeps_it_running() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut bridge = start_bridge(&a, &b);
    let _host = start_host(&b, &["--ip", "10.216.0.1/24"]);
    ping(&a, "10.216.0.2/24", "10.216.0.1", 3);
    // A holder that died mid-write on bus A: the lock held with a dead
    // pid, a frame length in the chain smashed. The next sender takes the
    // lock over and resets the ring.
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let f = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
    f.write_all_at(&1u32.to_ne_bytes(), 24).unwrap();
    f.write_all_at(&shmif::lowlevel::holder_tag(dead).to_ne_bytes(), 28)
        .unwrap();
    let at = (shmif::wire::BUS_HEADER_LEN + 24 + 84 * 2) as u64;
    f.write_all_at(&0xffffu32.to_ne_bytes(), at).unwrap();
    ping(&a, "10.216.0.2/24", "10.216.0.1", 3);
    assert!(bridge.running(), "the bridge stopped");
    let (st, report) = stop(bridge, rustix::process::Signal::TERM);
    assert!(st.code() == Some(130), "{st}: {report}");
}
