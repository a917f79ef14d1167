//! Issue 14: what a new user tripped on, one test each, the exact message
//! or exit status asserted.

mod common;

use common::{shmif, show, text, Proc, Stream, SHMIF};
use rustix::process::Signal;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// Starts `shmif host BUS ARGS` and waits until it is up.
fn host(bus: &Path, args: &[&str]) -> Proc {
    let mut h = Proc::shmif("host", bus, args, Stream::Lines, Stream::Lines);
    h.out().expect_containing(" up on ", LIMIT);
    h
}

/// The whole of a command's standard error, trimmed.
fn err_of(o: &std::process::Output) -> String {
    text(&o.stderr).trim_end().to_string()
}

#[test]
fn interrupted_tcp_send_resets_its_connection_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    // One slot: a connection left open would make the next send fail.
    let mut server = host(
        &bus,
        &[
            "--ip",
            "10.0.0.1/24",
            "--tcp-sink",
            "9000",
            "--backlog",
            "1",
        ],
    );
    for round in 0..2 {
        // Each round's sender has its own address, so that the wait below
        // sees this sender's data, not the last round's (still on the
        // bus): a SIGINT before the sender has its handler kills it.
        let ip = format!("10.0.0.{}", 2 + round);
        let mut sender = Proc::shmif(
            "tcp-send",
            &bus,
            &["--ip", &format!("{ip}/24"), "10.0.0.1:9000", "-m", "100000"],
            Stream::Lines,
            Stream::Lines,
        );
        // Wait until data flows to the sink.
        let from = format!(" {ip}.");
        common::wait_for(LIMIT, "no data segment on the bus", || {
            let o = shmif(&["dump", b]);
            text(&o.stdout)
                .lines()
                .any(|l| {
                    l.contains(&from)
                        && l.contains("> 10.0.0.1.9000: Flags [")
                        && !l.ends_with("length 0")
                })
                .then_some(())
        });
        let status = sender.stop(Signal::INT, LIMIT);
        let err = sender.err().until_end(LIMIT).0.join("\n");
        assert_eq!(
            status.code(),
            Some(130),
            "round {round}: {status:?}, stderr: {err}"
        );
        assert_eq!(err, "shmif tcp-send: interrupted");
        // The reset frees the server's slot at once (not after its 20 s
        // timeout): the sink reports the connection.
        let t0 = Instant::now();
        let report = server
            .out()
            .expect(|l| l.starts_with("tcp-sink 9000:"), Duration::from_secs(3));
        assert!(t0.elapsed() < Duration::from_secs(3), "{report}");
    }
    let o = shmif(&[
        "tcp-send",
        b,
        "--ip",
        "10.0.0.9/24",
        "10.0.0.1:9000",
        "-m",
        "1",
    ]);
    assert!(o.status.success(), "{}", show(&o));
}

#[test]
fn one_port_for_two_services_is_a_usage_error() {
    let o = shmif(&[
        "host",
        "/nonexistent/bus",
        "--ip",
        "10.0.0.1/24",
        "--tcp-sink",
        "9000",
        "--tcp-echo",
        "9000",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert_eq!(
        err_of(&o),
        "error: TCP port 9000 is given to both --tcp-sink and --tcp-echo: one port serves one service"
    );
}

#[test]
fn a_host_refuses_an_address_already_on_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let _a = host(
        &bus,
        &[
            "--ip",
            "10.0.0.1/24",
            "--ip6",
            "fd00::1/64",
            "--mac",
            "b2:a0:00:00:00:0a",
        ],
    );
    let o = shmif(&["host", b, "--ip", "10.0.0.1/24"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(
        err_of(&o),
        "shmif: 10.0.0.1 is already in use on the bus: b2:a0:00:00:00:0a answered the ARP probe; \
         give this host another address (or --no-dad to start anyway)"
    );
    let o = shmif(&["host", b, "--ip", "10.0.0.2/24", "--ip6", "fd00::1/64"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(
        err_of(&o),
        "shmif: fd00::1 is already in use on the bus: b2:a0:00:00:00:0a answered the neighbour \
         solicitation; give this host another address (or --no-dad to start anyway)"
    );
    // --no-dad starts anyway; a free address starts without a word.
    let mut dup = host(&bus, &["--ip", "10.0.0.1/24", "--no-dad"]);
    assert!(dup.running());
    let _free = host(&bus, &["--ip", "10.0.0.3/24"]);
}

/// Starts `shmif ARGS` (its output as lines), waits `settle`, sends `sig`
/// and returns the exit code.
fn code_after_signal(args: &[&str], ready: &str, sig: Signal) -> Option<i32> {
    let mut cmd = Command::new(SHMIF);
    cmd.args(args);
    let mut p = Proc::spawn(&args.join(" "), &mut cmd, Stream::Lines, Stream::Lines);
    if ready.is_empty() {
        std::thread::sleep(Duration::from_millis(700));
    } else {
        p.out().expect_containing(ready, LIMIT);
    }
    p.stop(sig, LIMIT).code()
}

#[test]
fn every_command_stopped_by_a_signal_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let _a = host(&bus, &["--ip", "10.0.0.1/24", "--tcp-sink", "9000"]);
    let cases: [(&[&str], &str); 6] = [
        (&["host", b, "--ip", "10.0.0.5/24"], " up on "),
        (&["listen", b], ""),
        (&["capture", b], ""),
        (
            &["ping", b, "--ip", "10.0.0.6/24", "10.0.0.1"],
            "icmp_seq=0",
        ),
        (
            &[
                "tcp-send",
                b,
                "--ip",
                "10.0.0.7/24",
                "10.0.0.1:9000",
                "-m",
                "100000",
            ],
            "",
        ),
        (
            &["demo", "--megabytes", "100000", "--no-pcap"],
            "host B pings",
        ),
    ];
    for (args, ready) in cases {
        for sig in [Signal::INT, Signal::TERM] {
            assert_eq!(
                code_after_signal(args, ready, sig),
                Some(130),
                "{args:?} {sig:?}"
            );
        }
    }
    // And each long-running command's --help says so.
    for sub in [
        "host", "listen", "capture", "ping", "tcp-send", "tap", "demo", "vde", "qemu", "vxlan",
        "bridge",
    ] {
        let o = shmif(&[sub, "--help"]);
        let help = text(&o.stdout);
        let exit = help
            .lines()
            .skip_while(|l| !l.starts_with("Exit status:"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            exit.contains("130 when stopped by SIGINT or SIGTERM"),
            "{sub}: {help}"
        );
    }
}

/// Writes a gzip file and a pcap file in `dir`.
fn gzip_and_pcap(dir: &Path) -> [(std::path::PathBuf, &'static str, usize); 2] {
    let gz = dir.join("bus.gz");
    let mut gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    gzip.extend_from_slice(&[0u8; 30]);
    std::fs::write(&gz, &gzip).unwrap();
    let pcap = dir.join("trace.pcap");
    let mut p = 0xa1b2_c3d4u32.to_ne_bytes().to_vec();
    p.extend_from_slice(&[
        2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xee, 5, 0, 0, 1, 0, 0, 0,
    ]);
    std::fs::write(&pcap, &p).unwrap();
    [(gz, "gzip", gzip.len()), (pcap, "pcap", p.len())]
}

#[test]
fn gzip_and_pcap_files_are_named_the_same_way_by_dump_and_attaching_commands() {
    let dir = tempfile::tempdir().unwrap();
    for (path, kind, len) in gzip_and_pcap(dir.path()) {
        let p = path.to_str().unwrap();
        let want = format!("shmif: {p}: not a shmif bus: it is a {len}-byte {kind} file");
        for args in [
            &["dump", p][..],
            &["listen", p, "-c", "1"],
            &["capture", p],
            &[
                "send",
                p,
                "--dst",
                "ff:ff:ff:ff:ff:ff",
                "--ethertype",
                "0x88b5",
                "--payload",
                "00",
            ],
            &["host", p, "--ip", "10.0.0.1/24"],
            &["ping", p, "--ip", "10.0.0.1/24", "10.0.0.2"],
            &["tcp-send", p, "--ip", "10.0.0.1/24", "10.0.0.2:9"],
        ] {
            let o = shmif(args);
            assert_eq!(o.status.code(), Some(1), "{args:?}");
            assert_eq!(err_of(&o), want, "{args:?}");
        }
    }
}

#[test]
fn a_path_is_named_once_and_the_same_problem_worded_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "hello\n").unwrap();
    let n = notes.to_str().unwrap();
    let want = format!("shmif: {n}: not a shmif bus: it is a 6-byte text file");
    for args in [
        &["dump", n][..],
        &["listen", n],
        &["host", n, "--ip", "10.0.0.1/24"],
        &["ping", n, "--ip", "10.0.0.1/24", "10.0.0.2"],
        &["tcp-send", n, "--ip", "10.0.0.1/24", "10.0.0.2:9"],
    ] {
        let o = shmif(args);
        assert_eq!(err_of(&o), want, "{args:?}");
    }
    let o = shmif(&["demo", "--bus", n, "--no-pcap"]);
    let err = err_of(&o);
    assert_eq!(err.matches(n).count(), 1, "{err}");
    // A bus of the right magic and the wrong size: the same words.
    let short = dir.path().join("short.bus");
    let mut s = vec![0u8; 4096];
    s[0..4].copy_from_slice(&0xca11_d054u32.to_ne_bytes());
    std::fs::write(&short, &s).unwrap();
    let p = short.to_str().unwrap();
    let want = format!(
        "shmif: {p}: not a shmif bus: it has the shmif magic but is 4096 bytes long instead of 1048576"
    );
    assert_eq!(err_of(&shmif(&["dump", p])), want);
    assert_eq!(err_of(&shmif(&["listen", p])), want);
}

#[test]
fn server_addresses_without_a_port_or_brackets_get_help() {
    let cases = [
        (
            "10.0.0.1",
            "error: invalid value '10.0.0.1' for '<DEST:PORT>': `10.0.0.1` has no port: give \
             ADDR:PORT, e.g. 10.0.0.1:9000",
        ),
        (
            "fd00::1:9000",
            "error: invalid value 'fd00::1:9000' for '<DEST:PORT>': `fd00::1:9000`: an IPv6 \
             address with a port needs brackets: [fd00::1]:9000",
        ),
    ];
    for (dest, want) in cases {
        let o = shmif(&["tcp-send", "/tmp/no-bus", "--ip", "10.0.0.2/24", dest]);
        assert_eq!(o.status.code(), Some(2));
        assert_eq!(err_of(&o).lines().next().unwrap(), want);
    }
    let o = shmif(&[
        "host",
        "/tmp/no-bus",
        "--ip",
        "10.0.0.2/24",
        "--tcp-send",
        "fd00::1:7",
    ]);
    assert!(
        err_of(&o).contains("an IPv6 address with a port needs brackets: [fd00::1]:7"),
        "{}",
        show(&o)
    );
}

#[test]
fn zero_counts_ports_and_megabytes_are_usage_errors() {
    for args in [
        &["listen", "/tmp/no-bus", "--count", "0"][..],
        &["capture", "/tmp/no-bus", "-c", "0"],
        &[
            "ping",
            "/tmp/no-bus",
            "--ip",
            "10.0.0.2/24",
            "10.0.0.1",
            "-c",
            "0",
        ],
    ] {
        let o = shmif(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let first = err_of(&o).lines().next().unwrap().to_string();
        assert!(
            first.ends_with("a count of 0 would do nothing: give 1 or more (or leave it out)"),
            "{first}"
        );
    }
    let o = shmif(&[
        "host",
        "/tmp/no-bus",
        "--ip",
        "10.0.0.2/24",
        "--tcp-sink",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        err_of(&o).lines().next().unwrap(),
        "error: invalid value '0' for '--tcp-sink <PORT>': port 0 cannot be served on: give a \
         port from 1 to 65535"
    );
    let o = shmif(&["demo", "--megabytes", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        err_of(&o).lines().next().unwrap(),
        "error: invalid value '0' for '--megabytes <N>': `0` is not a positive number of mebibytes"
    );
}

#[test]
fn nobody_at_the_address_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let o = shmif(&[
        "tcp-send",
        b,
        "--ip",
        "10.0.0.2/24",
        "10.0.0.99:9000",
        "-W",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stdout), "", "no `0 bytes in 0.000 s` line");
    assert_eq!(
        err_of(&o),
        "shmif tcp-send: nobody answered ARP for 10.0.0.99 in 1.0 s: no host on the bus has that address"
    );
    let o = shmif(&[
        "ping",
        b,
        "--ip",
        "10.0.0.2/24",
        "10.0.0.99",
        "-c",
        "1",
        "-W",
        "0.3",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        err_of(&o),
        "shmif ping: nobody answered ARP for 10.0.0.99: no host on the bus has that address"
    );
    let o = shmif(&[
        "ping",
        b,
        "--ip",
        "fd00::2/64",
        "fd00::99",
        "-c",
        "1",
        "-W",
        "0.3",
    ]);
    assert_eq!(
        err_of(&o),
        "shmif ping: nobody answered neighbour discovery for fd00::99: no host on the bus has that address"
    );
}

#[test]
fn an_empty_file_made_a_bus_gets_the_mode_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = empty.to_str().unwrap();
    // dump reads only: it calls it empty.
    let o = shmif(&["dump", e]);
    assert_eq!(
        err_of(&o),
        format!("shmif: {e}: not a shmif bus: the file is empty")
    );
    let o = shmif(&[
        "send",
        e,
        "--mode",
        "660",
        "--dst",
        "ff:ff:ff:ff:ff:ff",
        "--ethertype",
        "0x88b5",
        "--payload",
        "00",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let m = std::fs::metadata(&empty).unwrap();
    assert_eq!(m.len(), 1024 * 1024);
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
}

#[test]
fn dump_into_a_missing_directory_fails_before_printing() {
    let f = common::fixtures_dir().join("ping-fresh.bus.gz");
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    std::fs::write(&bus, common::gunzip(&f)).unwrap();
    let out = dir.path().join("no-such-dir").join("x.pcap");
    let o = shmif(&["dump", "-p", out.to_str().unwrap(), bus.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stdout), "", "nothing printed");
    assert_eq!(
        err_of(&o),
        format!(
            "shmif: {}: cannot create: No such file or directory (os error 2)",
            out.display()
        )
    );
}

#[test]
fn a_broadcast_source_address_is_refused() {
    let o = shmif(&[
        "send",
        "/tmp/no-bus",
        "--src",
        "ff:ff:ff:ff:ff:ff",
        "--dst",
        "ff:ff:ff:ff:ff:ff",
        "--ethertype",
        "0x88b5",
        "--payload",
        "00",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        err_of(&o).lines().next().unwrap(),
        "error: invalid value 'ff:ff:ff:ff:ff:ff' for '--src <MAC>': ff:ff:ff:ff:ff:ff is a \
         multicast address: an interface needs a unicast one"
    );
}

/// Runs `shmif ARGS` with standard output on a terminal (script(1)'s
/// pseudo-terminal); what the terminal showed. `None` without script.
fn on_a_terminal(args: &[&str]) -> Option<String> {
    let cmd = std::iter::once(SHMIF)
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .ok()?;
    Some(format!("{}|{:?}", text(&o.stdout), o.status.code()))
}

#[test]
fn a_binary_pcap_is_not_written_to_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    assert!(common::send_broadcast(b, "00").status.success());
    let Some(dump) = on_a_terminal(&["dump", "-p", "-", b]) else {
        eprintln!("SKIPPED: script(1) is not installed");
        return;
    };
    assert_eq!(
        dump.trim_end_matches(|c| c != '|')
            .trim_end_matches('|')
            .trim(),
        "shmif: refusing to write a pcap to a terminal: redirect standard output (`-p - | tcpdump \
         -n -r -`, `-p - > FILE`) or give -p a file"
    );
    assert!(dump.ends_with("|Some(1)"), "{dump}");
    let cap = on_a_terminal(&["capture", b, "-w", "-"]).unwrap();
    assert!(
        cap.contains("shmif: refusing to write a pcap to a terminal") && cap.ends_with("|Some(1)"),
        "{cap}"
    );
}

#[test]
fn one_is_singular() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let mut l = Proc::shmif("listen", &bus, &["-c", "1"], Stream::Lines, Stream::Lines);
    std::thread::sleep(Duration::from_millis(300));
    let o = common::send_broadcast(b, "00");
    assert_eq!(
        err_of(&o).split(" (").next().unwrap(),
        "shmif: sent 1 frame of 15 bytes"
    );
    assert!(
        err_of(&o).contains(", ethertype 0x88b5, 1 payload byte) on "),
        "{}",
        show(&o)
    );
    assert!(l.wait(LIMIT).success());
    let report = l.err().until_end(LIMIT).0.join("\n");
    assert!(report.contains(": received 1 frame (15 bytes)"), "{report}");
}

#[test]
fn an_interrupted_demo_prints_what_it_has() {
    let mut cmd = Command::new(SHMIF);
    cmd.args(["demo", "--megabytes", "100000", "--no-pcap"]);
    let mut demo = Proc::spawn("demo", &mut cmd, Stream::Lines, Stream::Lines);
    demo.out().expect_containing("host B pings", LIMIT);
    // The pings take 50 ms; then the transfer runs.
    std::thread::sleep(Duration::from_millis(1500));
    let status = demo.stop(Signal::INT, LIMIT);
    assert_eq!(status.code(), Some(130));
    let (out, _) = demo.out().until_end(LIMIT);
    let out = out.join("\n");
    assert!(
        out.contains("interrupted; what the hosts reported until then:"),
        "{out}"
    );
    for dest in ["10.0.0.1", "fd00::1"] {
        assert!(
            out.contains(&format!("  host B: --- {dest} ping statistics ---")),
            "{out}"
        );
    }
    assert!(
        out.contains("  host B: tcp-send 10.0.0.2 -> 10.0.0.1:9000: "),
        "{out}"
    );
    assert!(out.contains("removed the temporary directory"), "{out}");
    let err = demo.err().until_end(LIMIT).0.join("\n");
    assert!(err.contains("shmif demo: interrupted after "), "{err}");
}
