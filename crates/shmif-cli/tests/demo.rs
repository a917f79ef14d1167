//! `shmif demo`: the whole story end to end, as a user runs it.

mod common;

use common::{assert_fails_saying, run_for, show, BUS_SIZE, SHMIF};
use std::process::{Command, Output};
use std::time::Duration;

/// Runs `shmif demo ARGS` to its end (killed, failing, after two minutes).
fn demo(args: &[&str]) -> Output {
    run_for(
        Command::new(SHMIF).arg("demo").args(args),
        Duration::from_secs(120),
    )
}

#[test]
fn demo_runs_end_to_end_and_cleans_up() {
    let o = demo(&[]);
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // Host B's own pings of host A, over IPv4 and IPv6, with their RTTs.
    for dest in ["10.0.0.1", "fd00::1"] {
        assert!(
            out.contains(&format!("host B: 64 bytes from {dest}: icmp_seq=0 time=")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "ping B -> A {dest}: 5 packets transmitted, 5 received"
            )),
            "{out}"
        );
    }
    assert_eq!(
        out.matches("host B: rtt min/avg/median/max = ").count(),
        2,
        "{out}"
    );
    // 20 MiB from B to A's sink, verified on both sides; and through A's
    // echo back to B over IPv6.
    assert!(
        out.contains("host B: tcp-send 10.0.0.2 -> 10.0.0.1:9000: 20971520 bytes in "),
        "{out}"
    );
    let sink = out
        .lines()
        .find(|l| l.starts_with("  host A: tcp-sink 9000: from 10.0.0.2:"))
        .unwrap_or_else(|| panic!("no sink report from B's transfer:\n{out}"));
    assert!(
        sink.contains(": 20971520 bytes in ") && sink.contains("pattern ok"),
        "{sink}"
    );
    assert!(
        out.contains("host B: tcp-send fd00::2 -> [fd00::1]:7: 20971520 bytes in "),
        "{out}"
    );
    assert!(
        out.contains("host B: echo: 20971520 bytes back, pattern ok"),
        "{out}"
    );
    assert!(out.contains("actions done: 4 of 4 succeeded"), "{out}");
    assert!(out.contains("MiB/s"), "{out}");
    assert!(out.contains("host B exited 0 after its actions"), "{out}");
    assert!(out.contains("detached and exited 130"), "{out}");
    assert!(out.contains("pcap: "), "{out}");
    assert!(out.contains("last 8 frames on the bus:"), "{out}");
    assert!(out.contains("packet "), "{out}");
    // Issue 14: the pcap the demo tells you to read is kept, with nothing
    // else: the bus is removed, and the demo says so.
    let bus_line = out.lines().next().unwrap();
    let bus = bus_line.trim_start_matches("shmif demo: bus ");
    let dir = std::path::Path::new(bus).parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["demo.pcap"], "{out}");
    assert!(
        out.contains(&format!(
            "removed the bus; kept {} with the pcap in it",
            dir.display()
        )),
        "{out}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn demo_keeps_the_bus_and_pcap_where_asked() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("my-bus");
    let pcap = dir.path().join("out.pcap");
    let o = demo(&[
        "--bus",
        bus.to_str().unwrap(),
        "--keep",
        "--pcap",
        pcap.to_str().unwrap(),
        "--megabytes",
        "2",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("pcap: {}", pcap.display())), "{out}");
    assert!(
        out.contains("tcp-send 10.0.0.2 -> 10.0.0.1:9000: 2097152 bytes in "),
        "{out}"
    );
    assert!(
        out.contains("echo: 2097152 bytes back, pattern ok"),
        "{out}"
    );
    assert_eq!(
        std::fs::metadata(&bus).unwrap().len(),
        BUS_SIZE as u64,
        "bus kept"
    );
    let p = std::fs::read(&pcap).unwrap();
    assert!(
        p.len() > 24 && p[..4] == [0xd4, 0xc3, 0xb2, 0xa1],
        "a pcap file"
    );

    // Without --keep, a bus the demo created is removed; the pcap asked
    // for with --pcap stays.
    let bus2 = dir.path().join("bus2");
    let pcap2 = dir.path().join("two.pcap");
    let o = demo(&[
        "--bus",
        bus2.to_str().unwrap(),
        "--pcap",
        pcap2.to_str().unwrap(),
        "--megabytes",
        "1",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!bus2.exists());
    assert!(pcap2.exists());
}

#[test]
fn demo_fails_cleanly_on_a_bad_bus_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_fails_saying(&demo(&["--bus", d]), d);
}
