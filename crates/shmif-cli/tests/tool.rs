//! Issue 14: `top`, `completions`, `man`, and the `--json` outputs, parsed
//! back.

mod common;

use common::{shmif, show, text, Proc, Stream, SHMIF};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// Starts `shmif host BUS ARGS` and waits until it is up.
fn host(bus: &Path, args: &[&str]) -> Proc {
    let mut h = Proc::shmif("host", bus, args, Stream::Lines, Stream::Null);
    h.out().expect_containing(" up on ", LIMIT);
    h
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn top_once_json_names_the_senders_and_their_rates() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let _a = host(&bus, &["--ip", "10.0.0.1/24", "--mac", "b2:a0:00:00:00:01"]);
    // 100 echo requests a second, and as many replies.
    let _pinger = Proc::shmif(
        "ping",
        &bus,
        &[
            "--ip",
            "10.0.0.2/24",
            "--mac",
            "b2:a0:00:00:00:02",
            "10.0.0.1",
            "-i",
            "0.01",
            "-q",
        ],
        Stream::Null,
        Stream::Null,
    );
    std::thread::sleep(Duration::from_millis(500));
    let o = shmif(&["top", b, "--once", "--json"]);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 1, "one JSON object: {out}");
    let v = json(out.trim());
    assert_eq!(v["bus"], b);
    assert!(v["interval_s"].as_f64().unwrap() >= 0.9, "{v}");
    assert!(v["generation"].is_u64(), "{v}");
    assert!(v["wraps_per_sec"].is_f64(), "{v}");
    assert_eq!(v["overrun_bytes"], 0, "{v}");
    let senders = v["senders"].as_array().unwrap();
    for (mac, kind) in [("b2:a0:00:00:00:01", "ipv4"), ("b2:a0:00:00:00:02", "ipv4")] {
        let s = senders
            .iter()
            .find(|s| s["mac"] == mac)
            .unwrap_or_else(|| panic!("no sender {mac}: {v}"));
        let fps = s["frames_per_sec"].as_f64().unwrap();
        assert!((40.0..=150.0).contains(&fps), "{mac}: {fps} frames/s: {v}");
        // An echo request or reply of 56 data bytes is a 98-byte frame.
        let bps = s["bytes_per_sec"].as_f64().unwrap();
        assert!((bps / fps - 98.0).abs() < 1.0, "{mac}: {bps} bytes/s: {v}");
        assert!(s["kinds"][kind].as_u64().unwrap() > 30, "{v}");
        assert!(s["sender_id"].as_str().unwrap().starts_with("0x"), "{v}");
    }
    // Text, for people: a header line and a line per sender.
    let o = shmif(&["top", b, "--once", "--sort", "mac"]);
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("shmif top {b}: generation ")),
        "{out}"
    );
    assert!(lines[2].starts_with("b2:a0:00:00:00:01 "), "{out}");
    assert!(
        lines[3].starts_with("b2:a0:00:00:00:02 ") && lines[3].ends_with("IPv4 100%"),
        "{out}"
    );
}

#[test]
fn completions_for_bash_load_in_bash() {
    let o = Command::new("bash")
        .args([
            "-c",
            "source <(\"$0\" completions bash) && complete -p shmif",
            SHMIF,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        text(&o.stdout).trim(),
        "complete -o bashdefault -o default -o nosort -F _shmif shmif"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let o = shmif(&["completions", shell]);
        assert!(o.status.success(), "{shell}");
        assert!(text(&o.stdout).contains("tcp-send"), "{shell}");
    }
    let o = shmif(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn man_renders_with_man() {
    let o = shmif(&["man"]);
    assert!(o.status.success());
    let roff = text(&o.stdout);
    assert!(roff.contains(".TH shmif 1"), "{roff}");
    if Command::new("man").arg("--version").output().is_err() {
        eprintln!("SKIPPED: rendering with man: man-db is not installed (.ci/deps/man.sh)");
        return;
    }
    let rendered = Command::new("bash")
        .args(["-c", "\"$0\" man | MANWIDTH=80 man -l -", SHMIF])
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{}", show(&rendered));
    let page = text(&rendered.stdout);
    for want in [
        "NAME",
        "SYNOPSIS",
        "SUBCOMMANDS",
        "shmif-dump(1)",
        "shmif-top(1)",
    ] {
        assert!(page.contains(want), "no {want}: {page}");
    }
    // A subcommand's page, with its options and exit status.
    let rendered = Command::new("bash")
        .args(["-c", "\"$0\" man dump | MANWIDTH=80 man -l -", SHMIF])
        .output()
        .unwrap();
    let page = text(&rendered.stdout);
    assert!(page.contains("shmif-dump"), "{page}");
    assert!(page.contains("--header-only"), "{page}");
    assert!(page.contains("Exit status"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let o = shmif(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(dir.path().join("shmif.1").exists());
    assert!(dir.path().join("shmif-tcp-send.1").exists());
    assert!(!dir.path().join("shmif-bench-worker.1").exists());
}

#[test]
fn json_frames_from_dump_listen_and_capture_parse_back() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let mut listen = Proc::shmif(
        "listen",
        &bus,
        &["--json", "-c", "2", "--promisc"],
        Stream::Lines,
        Stream::Null,
    );
    let mut capture = Proc::shmif(
        "capture",
        &bus,
        &["--json", "-c", "2"],
        Stream::Lines,
        Stream::Lines,
    );
    capture.err().expect_containing("capturing on", LIMIT);
    std::thread::sleep(Duration::from_millis(300));
    let _a = host(
        &bus,
        &[
            "--ip",
            "10.0.0.1/24",
            "--mac",
            "b2:a0:00:00:00:01",
            "--no-dad",
        ],
    );
    let o = shmif(&[
        "ping",
        b,
        "--ip",
        "10.0.0.2/24",
        "--mac",
        "b2:a0:00:00:00:02",
        "10.0.0.1",
        "-c",
        "1",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    // The first two frames: the ARP request (broadcast) and its reply.
    for p in [&mut listen, &mut capture] {
        let (lines, _) = p.out().until_end(LIMIT);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let who = json(&lines[0]);
        assert_eq!(who["kind"], "ARP");
        assert_eq!(who["ethertype"], 0x0806);
        assert_eq!(who["src"], "b2:a0:00:00:00:02");
        assert_eq!(who["dst"], "ff:ff:ff:ff:ff:ff");
        assert_eq!(who["ip_dst"], "10.0.0.1");
        assert_eq!(who["len"], 42);
        assert!(who["summary"]
            .as_str()
            .unwrap()
            .contains("who-has 10.0.0.1 tell 10.0.0.2"));
        let reply = json(&lines[1]);
        assert_eq!(reply["src"], "b2:a0:00:00:00:01");
        assert!(reply["summary"]
            .as_str()
            .unwrap()
            .contains("10.0.0.1 is-at b2:a0:00:00:00:01"));
    }
    // dump: every frame still on the bus, the ICMP ones decoded.
    let o = shmif(&["dump", "--json", b]);
    assert!(o.status.success(), "{}", show(&o));
    let frames: Vec<Value> = text(&o.stdout).lines().map(json).collect();
    assert!(frames.len() >= 4, "{frames:?}");
    assert_eq!(frames[0]["packet"], 0);
    let echo = frames
        .iter()
        .find(|f| f["protocol"] == "ICMP")
        .unwrap_or_else(|| panic!("no ICMP frame: {frames:?}"));
    assert_eq!(echo["kind"], "IPv4");
    assert_eq!(echo["ip_src"], "10.0.0.2");
    assert_eq!(echo["ip_dst"], "10.0.0.1");
    assert!(echo["offset"].is_u64());
    assert!(echo["sec"].as_u64().unwrap() > 1_600_000_000);
}

#[test]
fn json_results_from_ping_and_tcp_send_parse_back() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let _a = host(
        &bus,
        &[
            "--ip",
            "10.0.0.1/24",
            "--tcp-sink",
            "9000",
            "--tcp-echo",
            "7",
        ],
    );
    let o = shmif(&[
        "ping",
        b,
        "--ip",
        "10.0.0.2/24",
        "10.0.0.1",
        "-c",
        "3",
        "-i",
        "0.01",
        "--json",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v = json(out.trim());
    assert_eq!(v["dest"], "10.0.0.1");
    assert_eq!(v["src"], "10.0.0.2");
    assert_eq!(v["transmitted"], 3);
    assert_eq!(v["received"], 3);
    assert_eq!(v["loss_percent"], 0.0);
    assert_eq!(v["ok"], true);
    assert_eq!(v["replies"].as_array().unwrap().len(), 3);
    let rtt = &v["rtt_ms"];
    assert!(
        rtt["min"].as_f64().unwrap() <= rtt["max"].as_f64().unwrap(),
        "{v}"
    );

    let o = shmif(&[
        "tcp-send",
        b,
        "--ip",
        "10.0.0.3/24",
        "10.0.0.1:7",
        "-m",
        "1",
        "--expect-echo",
        "--json",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v = json(out.trim());
    assert_eq!(v["dest"], "10.0.0.1:7");
    assert_eq!(v["bytes"], 1048576);
    assert_eq!(v["bytes_acked"], 1048576);
    assert_eq!(v["echoed"], 1048576);
    assert_eq!(v["echo_ok"], true);
    assert_eq!(v["connected"], true);
    assert_eq!(v["ok"], true);
    assert!(v["mib_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(v["error"], Value::Null);

    // A failure is an object too, and the message goes to stderr.
    let o = shmif(&[
        "tcp-send",
        b,
        "--ip",
        "10.0.0.3/24",
        "10.0.0.99:9000",
        "-W",
        "0.5",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(text(&o.stdout).trim());
    assert_eq!(v["ok"], false);
    assert_eq!(v["connected"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("nobody answered ARP for 10.0.0.99"),
        "{v}"
    );
}

#[test]
fn no_progress_bar_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let _a = host(&bus, &["--ip", "10.0.0.1/24", "--tcp-sink", "9000"]);
    let o = shmif(&[
        "tcp-send",
        b,
        "--ip",
        "10.0.0.2/24",
        "10.0.0.1:9000",
        "-m",
        "20",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stderr), "", "nothing extra on stderr");
}

#[test]
fn a_progress_bar_when_stderr_is_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let _a = host(&bus, &["--ip", "10.0.0.1/24", "--tcp-sink", "9000"]);
    let cmd = format!("'{SHMIF}' tcp-send '{b}' --ip 10.0.0.2/24 10.0.0.1:9000 -m 300 >/dev/null");
    let Ok(o) = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
    else {
        eprintln!("SKIPPED: script(1) is not installed");
        return;
    };
    let tty = text(&o.stdout);
    assert!(tty.contains("tcp-send to 10.0.0.1:9000 ["), "{tty}");
    assert!(tty.contains("MiB"), "{tty}");
}

#[test]
fn top_on_a_terminal_sorts_on_a_key_and_quits_on_q() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let _a = host(&bus, &["--ip", "10.0.0.1/24"]);
    // Keys typed into the terminal: m (sort by MAC), then q.
    let cmd = format!("(sleep 1.5; printf m; sleep 1.5; printf q) | script -qec \"'{SHMIF}' top '{b}'\" /dev/null");
    let Ok(o) = Command::new("bash").args(["-c", &cmd]).output() else {
        return;
    };
    if !o.status.success() && text(&o.stderr).contains("script") {
        eprintln!("SKIPPED: script(1) is not usable here");
        return;
    }
    let tty = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        tty.contains("sorted by bytes/s; keys: f frames/s, b bytes/s, m MAC, i sender id, q quit"),
        "{tty}"
    );
    assert!(tty.contains("sorted by MAC;"), "{tty}");
    assert!(
        tty.contains(&format!("shmif top {b}: generation ")),
        "{tty}"
    );
}
