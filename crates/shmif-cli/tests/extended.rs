//! Every subcommand on an extended bus (`shmif create`): send, listen,
//! capture, dump (snap length = the frame limit), host/ping/tcp-send with
//! 64 KiB frames, and tap's `--mtu` check against the bus's limit.

mod common;

use common::{
    create_extended, finish, shmif, shmif_create, show, spawn_piped, text, Proc, Stream, BROADCAST,
    SERVER, SHMIF,
};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

/// `shmif send BUS` (broadcast, 0x88b5) with `payload` on standard input.
fn send_stdin(bus: &Path, payload: &[u8]) -> std::process::Output {
    let mut c = Command::new(SHMIF)
        .args(
            [
                &["send", bus.to_str().unwrap()][..],
                &BROADCAST,
                &["--payload", "-"],
            ]
            .concat(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = c.stdin.take().unwrap().write_all(payload);
    c.wait_with_output().unwrap()
}

/// The pcap records of a classic pcap (native order): the snap length and
/// each record's data.
fn parse_pcap(b: &[u8]) -> (u32, Vec<Vec<u8>>) {
    assert_eq!(u32_at(b, 0), 0xa1b2_c3d4);
    let snaplen = u32_at(b, 16);
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let incl = u32_at(b, at + 8) as usize;
        out.push(b[at + 16..at + 16 + incl].to_vec());
        at += 16 + incl;
    }
    (snaplen, out)
}

#[test]
fn create_makes_a_bus_of_the_size_asked_and_refuses_bad_arguments() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    create_extended(&bus, "4M", "65549");
    let bytes = std::fs::read(&bus).unwrap();
    assert_eq!(bytes.len(), 4 << 20);
    assert_ne!(
        u32_at(&bytes, 0),
        0xca11_d054,
        "a NetBSD peer must find it not magical"
    );
    assert_eq!(u32_at(&bytes, 44), 65_549, "frame limit in the header");
    // An existing path is refused and left as it is.
    let o = shmif(&["create", bus.to_str().unwrap(), "--size", "2M"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("exists"), "{}", show(&o));
    assert_eq!(std::fs::read(&bus).unwrap(), bytes);
    for (size, max, needle) in [
        ("512K", "1514", "--size"),
        ("2G", "1514", "--size"),
        ("1M+1", "1514", "--size"),
        ("64M", "65550", "--max-frame"),
        ("64M", "13", "--max-frame"),
    ] {
        let other = d.path().join("other");
        let o = shmif_create(&other, size, max);
        assert!(!o.status.success(), "{size} {max}");
        assert!(
            text(&o.stderr).contains(needle),
            "{size} {max}: {}",
            show(&o)
        );
        assert!(!other.exists());
    }
    // dump reads it: its own header line.
    let o = shmif(&["dump", "-h", bus.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stdout).starts_with("extended bus format 1, ring size 4186112, max frame 65549,"),
        "{}",
        show(&o)
    );
}

#[test]
fn send_listen_capture_and_dump_carry_jumbo_frames() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    let bus_s = bus.to_str().unwrap();
    create_extended(&bus, "8M", "65549");
    let pcap = d.path().join("cap.pcap");
    let mut cap = Proc::shmif(
        "capture",
        &bus,
        &["-c", "3", "-w", pcap.to_str().unwrap()],
        Stream::Piped,
        Stream::Lines,
    );
    cap.err().expect_containing("capturing on", LIMIT);
    let mut listen =
        spawn_piped(Command::new(SHMIF).args(["listen", bus_s, "-c", "3", "--timeout", "10"]));
    std::thread::sleep(Duration::from_millis(300));

    let payloads: Vec<Vec<u8>> = [100usize, 8986, 65_535]
        .iter()
        .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
        .collect();
    for p in &payloads {
        let o = send_stdin(&bus, p);
        assert!(o.status.success(), "send {}: {}", p.len(), show(&o));
    }
    // One byte more than the bus carries is refused before anything is sent.
    let o = send_stdin(&bus, &vec![0u8; 65_536]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("at most 65535 payload bytes"),
        "{}",
        show(&o)
    );

    let o = finish(listen_take(&mut listen), "listen", LIMIT);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    for n in [114, 9000, 65_549] {
        assert!(out.contains(&format!("length {n}")), "{n}: {out}");
    }
    assert!(cap.wait(LIMIT).success());
    let (snaplen, records) = parse_pcap(&std::fs::read(&pcap).unwrap());
    assert_eq!(snaplen, 65_549, "snap length = the bus's frame limit");
    assert_eq!(records.len(), 3);
    for (r, p) in records.iter().zip(&payloads) {
        assert_eq!(&r[14..], &p[..]);
    }
    // dump -p: the same frames, the same snap length.
    let dumped = d.path().join("dump.pcap");
    let o = shmif(&["dump", "-p", dumped.to_str().unwrap(), bus_s]);
    assert!(o.status.success(), "{}", show(&o));
    let (snaplen, records) = parse_pcap(&std::fs::read(&dumped).unwrap());
    assert_eq!(snaplen, 65_549);
    let big: Vec<_> = records.iter().filter(|r| r.len() == 65_549).collect();
    assert_eq!(big.len(), 1);
    assert_eq!(&big[0][14..], &payloads[2][..]);
}

/// Moves the child out of the `Option`-less slot (for `finish`).
fn listen_take(c: &mut std::process::Child) -> std::process::Child {
    let placeholder = Command::new("true").spawn().unwrap();
    std::mem::replace(c, placeholder)
}

#[test]
fn a_v3_bus_keeps_its_limits() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    let o = send_stdin(&bus, &[0u8; 1501]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("at most 1500 payload bytes"),
        "{}",
        show(&o)
    );
    assert!(!bus.exists(), "refused before the bus is made");
    // tap: an MTU the bus cannot carry is refused before any TAP is made.
    let o = shmif(&[
        "tap",
        bus.to_str().unwrap(),
        "--tap",
        "shmx0",
        "--mtu",
        "9000",
    ]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--mtu 9000"), "{}", show(&o));
    let ext = d.path().join("ext");
    create_extended(&ext, "2M", "9014");
    let o = shmif(&[
        "tap",
        ext.to_str().unwrap(),
        "--tap",
        "shmx0",
        "--mtu",
        "9001",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("at most --mtu 9000"),
        "{}",
        show(&o)
    );
}

#[test]
fn two_hosts_exchange_tcp_in_64k_frames_verified() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    let bus_s = bus.to_str().unwrap();
    create_extended(&bus, "64M", "65549");
    let mut server = Proc::shmif("host", &bus, &SERVER, Stream::Lines, Stream::Inherit);
    server.out().expect(|l| l.contains(" up on "), LIMIT);
    // A ping that needs jumbo frames.
    let o = shmif(&[
        "ping",
        bus_s,
        "--ip",
        "10.0.0.3/24",
        "10.0.0.1",
        "-c",
        "2",
        "-s",
        "30000",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("2 received"), "{}", show(&o));
    // A second host sends 64 MiB to the sink and 8 MiB through the echo
    // over IPv6; the sink and the sender check every byte.
    let mut client = Proc::shmif(
        "host",
        &bus,
        &[
            "--ip",
            "10.0.0.2/24",
            "--ip6",
            "fd00::2/64",
            "--tcp-send",
            "10.0.0.1:9000",
            "--tcp-send-echo",
            "[fd00::1]:7",
            "--megabytes",
            "64",
            "--exit-when-done",
        ],
        Stream::Lines,
        Stream::Inherit,
    );
    let status = client.wait(Duration::from_secs(60));
    let (lines, _) = client.out().until_end(Duration::from_secs(2));
    let all = [std::mem::take(&mut client.out().seen), lines]
        .concat()
        .join("\n");
    assert!(status.success(), "client: {status}\n{all}");
    assert!(all.contains("pattern ok"), "{all}");
    let report = server
        .out()
        .expect(|l| l.starts_with("tcp-sink 9000:"), LIMIT);
    assert!(
        report.contains("67108864 bytes") && report.contains("pattern ok"),
        "{report}"
    );
    // The frames on the bus were jumbo: the largest is the frame limit.
    // (While both hosts keep up, laps end early after about 4 MiB: what
    // the ring still holds is about 64 such frames, not 64 MiB of them.)
    let o = shmif(&["dump", bus_s]);
    let big = text(&o.stdout)
        .lines()
        .filter(|l| l.contains("length 0x1000d"))
        .count();
    assert!(big >= 16, "only {big} frames of 65549 bytes");
}

/// `shmif send BUS --count N` of 1514-byte broadcast frames, with `extra`
/// options; how long it took.
fn send_many(bus: &Path, n: &str, extra: &[&str]) -> Duration {
    let payload = "ab".repeat(1500);
    let t0 = std::time::Instant::now();
    let o = shmif(
        &[
            &["send", bus.to_str().unwrap()][..],
            &BROADCAST,
            &["--payload", &payload, "--count", n],
            extra,
        ]
        .concat(),
    );
    assert!(o.status.success(), "send: {}", show(&o));
    t0.elapsed()
}

#[test]
fn capture_is_lossless_on_an_extended_bus_unless_asked_to_be_lossy() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    create_extended(&bus, "8M", "65549");
    // 20,000 frames of 1514 bytes: 30 MB through an 8 MiB ring.
    let pcap = d.path().join("all.pcap");
    let mut cap = Proc::shmif(
        "capture",
        &bus,
        &["-c", "20000", "-w", pcap.to_str().unwrap()],
        Stream::Piped,
        Stream::Lines,
    );
    cap.err().expect_containing("capturing on", LIMIT);
    std::thread::sleep(Duration::from_millis(300));
    send_many(&bus, "20000", &[]);
    assert!(cap.wait(LIMIT).success());
    let report = cap.err().expect_containing("frames captured", LIMIT);
    assert!(report.contains(" 20000 frames captured"), "{report}");
    assert!(report.contains("lost to overruns: 0 bytes"), "{report}");

    // A lossy capture, stopped, does not hold the sender back even with a
    // long stall bound; it reports what it lost.
    let mut lossy = Proc::shmif(
        "capture",
        &bus,
        &[
            "--lossy",
            "-w",
            d.path().join("lossy.pcap").to_str().unwrap(),
        ],
        Stream::Piped,
        Stream::Lines,
    );
    lossy.err().expect_containing("capturing on", LIMIT);
    std::thread::sleep(Duration::from_millis(300));
    lossy.signal(rustix::process::Signal::STOP);
    let took = send_many(&bus, "20000", &["--reader-stall", "30"]);
    assert!(took < Duration::from_secs(10), "{took:?}");
    lossy.signal(rustix::process::Signal::CONT);
    std::thread::sleep(Duration::from_millis(300));
    // Issue 14: a command stopped by SIGINT/SIGTERM exits 130.
    assert_eq!(
        lossy.stop(rustix::process::Signal::INT, LIMIT).code(),
        Some(130)
    );
    let report = lossy.err().expect_containing("frames captured", LIMIT);
    assert!(!report.contains("lost to overruns: 0 bytes"), "{report}");
}

#[test]
fn top_counts_jumbo_frames_on_an_extended_bus() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    create_extended(&bus, "4M", "65549");
    let b = bus.to_str().unwrap();
    // top's receive buffer is the bus's frame limit: a 9014-byte frame is
    // counted whole (with a 1514-byte buffer, as merged from main, top
    // panicked slicing it).
    let top = spawn_piped(Command::new(SHMIF).args(["top", b, "--once", "--json"]));
    std::thread::sleep(Duration::from_millis(300));
    let payload = "ab".repeat(9000);
    let o = shmif(
        &[
            &["send", b][..],
            &BROADCAST,
            &["--payload", &payload, "--count", "20"],
        ]
        .concat(),
    );
    assert!(o.status.success(), "send: {}", show(&o));
    let o = finish(top, "top", LIMIT);
    assert!(o.status.success(), "top: {}", show(&o));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    let s = &v["senders"][0];
    let (fps, bps) = (
        s["frames_per_sec"].as_f64().unwrap(),
        s["bytes_per_sec"].as_f64().unwrap(),
    );
    assert!(fps > 0.0, "{v}");
    assert!((bps / fps - 9014.0).abs() < 1.0, "{v}");
}
