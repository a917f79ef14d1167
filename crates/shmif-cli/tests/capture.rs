//! `shmif capture`: frames sent by `shmif send` (another process) land in a
//! pcap, a pcapng or a summary line, byte for byte; `-w -` streams while it
//! runs and stops when its reader goes away; SIGINT and overruns are
//! reported; bad arguments and bad buses fail naming what is wrong.

mod common;

use common::{number_after, send_broadcast, shmif, wait_for, Proc, Stream, BROADCAST, BUS_SIZE};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::ChildStdout;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SRC: &str = "02:00:5e:00:53:01";
const SRC_BYTES: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x01];
/// How long capture may take to print a line or to exit.
const LIMIT: Duration = Duration::from_secs(20);

/// Starts `shmif capture BUS ARGS` and waits until it has attached; its
/// stderr lines arrive on a channel, its stdout is left piped.
fn start(bus: &Path, args: &[&str]) -> Proc {
    let mut cap = Proc::shmif("capture", bus, args, Stream::Piped, Stream::Lines);
    let line = cap.err().expect_containing("capturing on", LIMIT);
    assert!(line.contains("promiscuous"), "{line}");
    cap
}

/// The report capture prints on its way out.
fn report(cap: &mut Proc) -> String {
    // "N frames captured (", "1 frame captured (".
    cap.err().expect_containing(" captured (", LIMIT)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sends one frame from SRC with `shmif send`; returns its bytes.
fn send(bus: &Path, dst: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let dst_s = dst
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let o = shmif(&[
        "send",
        bus.to_str().unwrap(),
        "--dst",
        &dst_s,
        "--src",
        SRC,
        "--ethertype",
        "0x88b5",
        "--payload",
        &hex(payload),
    ]);
    assert!(o.status.success(), "send: {o:?}");
    let mut f = dst.to_vec();
    f.extend_from_slice(&SRC_BYTES);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(payload);
    f
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
}

/// One classic-pcap record: (seconds, microseconds, frame).
type Record = (u32, u32, Vec<u8>);

/// Checks a classic pcap's global header (native order, µs, Ethernet) and
/// returns its records.
fn parse_pcap(b: &[u8]) -> Vec<Record> {
    assert!(b.len() >= 24, "pcap of {} bytes", b.len());
    assert_eq!(u32_at(b, 0), 0xa1b2_c3d4, "pcap magic (microseconds)");
    assert_eq!((u16_at(b, 4), u16_at(b, 6)), (2, 4), "version");
    assert_eq!(u32_at(b, 20), 1, "link type Ethernet");
    let mut out = Vec::new();
    let mut at = 24;
    while at < b.len() {
        let (sec, usec) = (u32_at(b, at), u32_at(b, at + 4));
        let (incl, orig) = (u32_at(b, at + 8) as usize, u32_at(b, at + 12) as usize);
        assert_eq!(incl, orig, "whole frames are captured");
        out.push((sec, usec, b[at + 16..at + 16 + incl].to_vec()));
        at += 16 + incl;
    }
    assert_eq!(at, b.len(), "no trailing bytes");
    out
}

/// Reads exactly `n` bytes from a child's stdout, failing after 20 s.
fn read_exact_timeout(out: ChildStdout, n: usize) -> (ChildStdout, Vec<u8>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = out;
        let mut buf = vec![0u8; n];
        let r = out.read_exact(&mut buf).map(|()| buf);
        let _ = tx.send((out, r));
    });
    let (out, r) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("capture did not write in time");
    (out, r.expect("read the capture's stdout"))
}

#[test]
fn count_frames_go_to_a_pcap_file_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let pcap = dir.path().join("out.pcap");
    let mut cap = start(&bus, &["-c", "3", "-w", pcap.to_str().unwrap()]);
    let t0 = now_secs();
    // Broadcast, and unicast to a MAC nobody has: promiscuous sees both.
    let sent = [
        send(&bus, [0xff; 6], b"first frame"),
        send(&bus, [0x02, 0, 0, 0, 0, 0x42], &[0xab; 1500]),
        send(&bus, [0xff; 6], b"third"),
    ];
    let status = cap.wait(LIMIT);
    assert!(status.success(), "{status}");
    let report = report(&mut cap);
    assert!(report.contains(" 3 frames captured"), "{report}");
    assert!(report.contains("lost to overruns: 0 bytes"), "{report}");

    let records = parse_pcap(&std::fs::read(&pcap).unwrap());
    assert_eq!(records.len(), 3);
    for ((sec, usec, data), want) in records.iter().zip(&sent) {
        assert_eq!(data, want);
        assert!(*usec < 1_000_000);
        // The sender's wall-clock stamp.
        assert!((t0 - 2..=now_secs()).contains(&u64::from(*sec)), "{sec}");
    }
}

#[test]
fn dash_w_dash_streams_while_running_and_stops_when_the_reader_goes() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let mut cap = start(&bus, &["-w", "-"]);
    let out = cap.stdout();
    // The header comes at once, before any frame.
    let (out, header) = read_exact_timeout(out, 24);
    assert!(parse_pcap(&header).is_empty());
    let mut out = out;
    for i in 0..3u8 {
        let f = send(&bus, [0xff; 6], &[i; 50]);
        let (o, rec) = read_exact_timeout(out, 16 + f.len());
        out = o;
        assert_eq!(u32_at(&rec, 8) as usize, f.len());
        assert_eq!(&rec[16..], &f[..], "frame {i} while capture runs");
        assert!(cap.running(), "still running");
    }
    // The reader goes away: capture notices without any further traffic.
    drop(out);
    let status = cap.wait(LIMIT);
    assert!(status.success(), "{status}");
    let report = report(&mut cap);
    assert!(report.contains(" 3 frames captured"), "{report}");
    assert!(
        report.contains("reader of standard output went away"),
        "{report}"
    );
}

#[test]
fn pcapng_has_a_section_an_ethernet_interface_and_the_frames() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let file = dir.path().join("out.pcapng");
    let mut cap = start(&bus, &["-c", "2", "--pcapng", "-w", file.to_str().unwrap()]);
    let t0 = now_secs();
    let sent = [
        send(&bus, [0xff; 6], b"one"),
        send(&bus, [0xff; 6], &[7; 333]),
    ];
    assert!(cap.wait(LIMIT).success());
    let b = std::fs::read(&file).unwrap();

    // Blocks: type, total length, body, total length again.
    let mut blocks = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let (kind, len) = (u32_at(&b, at), u32_at(&b, at + 4) as usize);
        assert!(
            len >= 12 && len % 4 == 0 && at + len <= b.len(),
            "block at {at}"
        );
        assert_eq!(u32_at(&b, at + len - 4) as usize, len, "trailing length");
        blocks.push((kind, b[at + 8..at + len - 4].to_vec()));
        at += len;
    }
    let kinds: Vec<u32> = blocks.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, [0x0a0d_0d0a, 1, 6, 6], "SHB, IDB, two EPBs");
    let shb = &blocks[0].1;
    assert_eq!(u32_at(shb, 0), 0x1a2b_3c4d, "byte-order magic");
    assert_eq!((u16_at(shb, 4), u16_at(shb, 6)), (1, 0), "pcapng 1.0");
    let idb = &blocks[1].1;
    assert_eq!(u16_at(idb, 0), 1, "link type Ethernet");
    // Options: if_tsresol (code 9) is nanoseconds, as the EPBs are written.
    let mut opt = 8;
    let mut tsresol = None;
    while opt + 4 <= idb.len() {
        let (code, olen) = (u16_at(idb, opt), u16_at(idb, opt + 2) as usize);
        if code == 0 {
            break;
        }
        if code == 9 {
            tsresol = Some(idb[opt + 4]);
        }
        opt += 4 + olen.div_ceil(4) * 4;
    }
    assert_eq!(tsresol, Some(9));
    for ((_, epb), want) in blocks[2..].iter().zip(&sent) {
        assert_eq!(u32_at(epb, 0), 0, "interface 0");
        let ts = (u64::from(u32_at(epb, 4)) << 32) | u64::from(u32_at(epb, 8));
        let secs = ts / 1_000_000_000;
        assert!((t0 - 2..=now_secs()).contains(&secs), "{secs}");
        let (cap_len, orig) = (u32_at(epb, 12) as usize, u32_at(epb, 16) as usize);
        assert_eq!((cap_len, orig), (want.len(), want.len()));
        assert_eq!(&epb[20..20 + cap_len], &want[..]);
    }
}

#[test]
fn without_w_it_prints_a_summary_line_per_frame() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let mut cap = start(&bus, &["-c", "2"]);
    let mut out = BufReader::new(cap.stdout());
    send(&bus, [0xff; 6], b"hello");
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // Printed (and flushed) while capture is still waiting for frame two.
    assert!(cap.running());
    assert!(
        line.contains(&format!("{SRC} > ff:ff:ff:ff:ff:ff, 0x88b5, length 19")),
        "{line}"
    );
    assert_eq!(line.as_bytes()[2], b':', "starts with the time: {line}");
    send(&bus, [0x02, 0, 0, 0, 0, 0x42], b"hi");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(
        line.contains("> 02:00:00:00:00:42, 0x88b5, length 16"),
        "{line}"
    );
    assert!(cap.wait(LIMIT).success());
}

#[test]
fn sigint_stops_it_with_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let pcap = dir.path().join("out.pcap");
    let mut cap = start(&bus, &["-w", pcap.to_str().unwrap()]);
    let f = send(&bus, [0xff; 6], b"only one");
    // The frame is flushed to the file before any signal.
    wait_for(LIMIT, "frame not written while running", || {
        (std::fs::metadata(&pcap).unwrap().len() >= (24 + 16 + f.len()) as u64).then_some(())
    });
    cap.signal(rustix::process::Signal::INT);
    // Issue 14: a command stopped by SIGINT/SIGTERM exits 130 (was 0).
    assert_eq!(cap.wait(LIMIT).code(), Some(130));
    let report = report(&mut cap);
    assert!(report.contains(" 1 frame captured"), "{report}");
    assert!(report.contains("interrupted"), "{report}");
    let records = parse_pcap(&std::fs::read(&pcap).unwrap());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].2, f);
}

#[test]
fn overruns_are_reported_with_the_bytes_lost() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let pcap = dir.path().join("out.pcap");
    let mut cap = start(&bus, &["-w", pcap.to_str().unwrap()]);
    // Stopped, the capture falls behind while 1.5 MB go round the 1 MiB ring.
    cap.signal(rustix::process::Signal::STOP);
    let payload = hex(&[0x5a; 1500]);
    let o = shmif(
        &[
            &["send", bus.to_str().unwrap()][..],
            &BROADCAST,
            &["--payload", &payload, "--count", "1000"],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{o:?}");
    cap.signal(rustix::process::Signal::CONT);
    let last = send(&bus, [0xff; 6], b"last");
    wait_for(LIMIT, "the last frame never arrived", || {
        let b = std::fs::read(&pcap).unwrap();
        (b.len() > 24 && parse_pcap(&b).last().is_some_and(|r| r.2 == last)).then_some(())
    });
    cap.signal(rustix::process::Signal::TERM);
    assert_eq!(cap.wait(LIMIT).code(), Some(130));
    let report = report(&mut cap);
    let records = parse_pcap(&std::fs::read(&pcap).unwrap());
    assert!(
        records.len() < 1001,
        "{} frames: nothing lost?",
        records.len()
    );
    assert!(
        report.contains(&format!(" {} captured", plural(records.len(), "frame"))),
        "{report}"
    );
    let lost = number_after(&report, "lost to overruns: ")
        .unwrap_or_else(|| panic!("no byte count in {report}"));
    assert!(lost > 0, "{report}");
    // What was captured plus what was lost is everything sent (each frame
    // takes its length plus a 24-byte header on the ring).
    let captured_ring: u64 = records.iter().map(|r| r.2.len() as u64 + 24).sum();
    let sent_ring = 1000 * (1514 + 24) + (last.len() as u64 + 24);
    assert_eq!(captured_ring + lost, sent_ring, "{report}");
}

#[test]
fn bad_arguments_and_bad_buses_fail_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["capture", d, "-c", "1"], "is a directory"),
        (&["capture", b, "-c", "0"], "--count"),
        (&["capture", b, "--pcapng"], "--write"),
        (&["capture", b, "--timestamps", "later"], "--timestamps"),
        (
            &["capture", b, "-w", "/nonexistent-dir/x.pcap"],
            "/nonexistent-dir/x.pcap",
        ),
        (&["capture", b, "-w", b], "over the bus file itself"),
    ];
    // The bus exists for the last case.
    assert!(send_broadcast(b, "00").status.success());
    for (args, want) in cases {
        let o = shmif(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        if want == "is a directory" {
            assert!(err.contains(d), "names the bus: {err}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
        }
    }
    assert_eq!(
        std::fs::metadata(&bus).unwrap().len(),
        BUS_SIZE as u64,
        "bus untouched"
    );
}

/// `1 frame`, `2 frames`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
