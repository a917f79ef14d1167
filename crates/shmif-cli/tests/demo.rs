//! `shmif demo`: the whole story end to end, as a user runs it.

use std::process::{Command, Output, Stdio};

const SHMIF: &str = env!("CARGO_BIN_EXE_shmif");

fn demo(args: &[&str]) -> Output {
    Command::new(SHMIF)
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run shmif demo")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn demo_runs_end_to_end_and_cleans_up() {
    let o = demo(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("64 bytes from 10.0.0.1: icmp_seq=0 time="),
        "{out}"
    );
    assert!(
        out.contains("64 bytes from fd00::2: icmp_seq=0 time="),
        "{out}"
    );
    assert!(out.contains("rtt min/avg/median/max = "), "{out}");
    assert!(out.contains("MiB/s"), "{out}");
    assert!(out.contains("20971520 bytes in "), "{out}");
    assert!(out.contains("pattern ok"), "{out}");
    assert!(out.contains("pcap: "), "{out}");
    assert!(out.contains("last 8 frames on the bus:"), "{out}");
    assert!(out.contains("packet "), "{out}");
    // The temporary directory is gone.
    let bus_line = out.lines().next().unwrap();
    let bus = bus_line.trim_start_matches("shmif demo: bus ");
    let dir = std::path::Path::new(bus).parent().unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
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
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("pcap: {}", pcap.display())), "{out}");
    assert!(out.contains("2097152 bytes in "), "{out}");
    assert_eq!(std::fs::metadata(&bus).unwrap().len(), 1 << 20, "bus kept");
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
    assert!(o.status.success(), "{}", text(&o));
    assert!(!bus2.exists());
    assert!(pcap2.exists());
}

#[test]
fn demo_fails_cleanly_on_a_bad_bus_path() {
    let dir = tempfile::tempdir().unwrap();
    let o = demo(&["--bus", dir.path().to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(dir.path().to_str().unwrap()),
        "{}",
        text(&o)
    );
}
