//! `shmif dump` against NetBSD's own `shmif_dumpbus`: for every bus in
//! `tests/fixtures`, the header line, the text and the pcap must be
//! byte-identical to what the NetBSD tool printed and wrote. Bad input must
//! give one clear error naming the file, exit status 1, and no changes.

mod common;

use common::{fixtures_dir, gunzip, shmif, shmif_command, text, BUS_SIZE};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The names of every fixture (`NAME.bus.gz`), sorted.
fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".bus.gz").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(
        names.len() >= 5,
        "expected the five fixtures, found {names:?}"
    );
    names
}

/// A fixture, decompressed into a temporary directory.
struct Fixture {
    name: String,
    dir: tempfile::TempDir,
    bus: PathBuf,
    pcap: Vec<u8>,
    header: Vec<u8>,
    txt: Vec<u8>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let fx = fixtures_dir();
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join(format!("{name}.bus"));
        std::fs::write(&bus, gunzip(&fx.join(format!("{name}.bus.gz")))).unwrap();
        Fixture {
            name: name.to_string(),
            bus,
            pcap: gunzip(&fx.join(format!("{name}.pcap.gz"))),
            header: std::fs::read(fx.join(format!("{name}.header"))).unwrap(),
            txt: std::fs::read(fx.join(format!("{name}.txt"))).unwrap(),
            dir,
        }
    }
}

fn dump(args: &[&str], bus: &Path) -> Output {
    let mut a: Vec<&std::ffi::OsStr> = vec!["dump".as_ref()];
    a.extend(args.iter().map(|s| std::ffi::OsStr::new(*s)));
    a.push(bus.as_os_str());
    shmif(&a)
}

fn assert_success(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: exit {:?}, stderr: {}",
        o.status,
        text(&o.stderr)
    );
}

#[test]
fn header_line_matches_shmif_dumpbus() {
    for name in fixture_names() {
        let f = Fixture::load(&name);
        let o = dump(&["-h"], &f.bus);
        assert_success(&o, &name);
        assert_eq!(text(&o.stdout), text(&f.header), "{name}: -h output");
        assert!(o.stderr.is_empty(), "{name}: stderr {}", text(&o.stderr));
    }
}

#[test]
fn pcap_file_and_text_match_shmif_dumpbus() {
    for name in fixture_names() {
        let f = Fixture::load(&name);
        let before = std::fs::read(&f.bus).unwrap();
        let out = f.dir.path().join("out.pcap");
        let o = dump(&["-p", out.to_str().unwrap()], &f.bus);
        assert_success(&o, &name);
        assert_eq!(text(&o.stdout), text(&f.txt), "{name}: text with -p FILE");
        let pcap = std::fs::read(&out).unwrap();
        assert_eq!(pcap.len(), f.pcap.len(), "{name}: pcap length");
        assert!(pcap == f.pcap, "{name}: pcap differs from shmif_dumpbus's");
        assert!(
            std::fs::read(&f.bus).unwrap() == before,
            "{}: the bus was modified",
            f.name
        );
    }
}

#[test]
fn pcap_to_stdout_and_text_to_stderr() {
    for name in fixture_names() {
        let f = Fixture::load(&name);
        let o = dump(&["-p", "-"], &f.bus);
        assert_success(&o, &name);
        assert!(o.stdout == f.pcap, "{name}: pcap on stdout differs");
        assert_eq!(text(&o.stderr), text(&f.txt), "{name}: text on stderr");
    }
}

#[test]
fn header_only_with_pcap_writes_no_pcap() {
    let f = Fixture::load("ping-fresh");
    let out = f.dir.path().join("out.pcap");
    let o = dump(&["-h", "-p", out.to_str().unwrap()], &f.bus);
    assert_success(&o, "-h -p FILE");
    assert_eq!(text(&o.stdout), text(&f.header));
    assert!(!out.exists(), "-h must stop before the pcap is created");
    let o = dump(&["-h", "-p", "-"], &f.bus);
    assert_success(&o, "-h -p -");
    assert!(o.stdout.is_empty());
    assert_eq!(text(&o.stderr), text(&f.header));
}

#[test]
fn plain_dump_adds_a_summary_to_every_line() {
    for name in fixture_names() {
        let f = Fixture::load(&name);
        let o = dump(&[], &f.bus);
        assert_success(&o, &name);
        let got = text(&o.stdout);
        let want = text(&f.txt);
        let got: Vec<&str> = got.lines().collect();
        let want: Vec<&str> = want.lines().collect();
        assert_eq!(got.len(), want.len(), "{name}: line count");
        assert_eq!(got[0], want[0], "{name}: header line");
        for (g, w) in got.iter().zip(&want).skip(1) {
            let rest = g
                .strip_prefix(w)
                .unwrap_or_else(|| panic!("{name}: '{g}' does not start with '{w}'"));
            let summary = rest
                .strip_prefix("  ")
                .unwrap_or_else(|| panic!("{name}: no summary after '{w}'"));
            assert!(summary.contains(" > "), "{name}: summary '{summary}'");
            assert!(summary.contains(", length "), "{name}: summary '{summary}'");
        }
    }
    let f = Fixture::load("ping-fresh");
    let out = text(&dump(&[], &f.bus).stdout);
    for needle in [
        "ARP, length 42: who-has 10.0.0.1 tell 10.0.0.2",
        "ARP, length 42: 10.0.0.1 is-at b2:a0:6d:14:77:36",
        "10.0.0.2 > 10.0.0.1: ICMP echo request, id 31672, seq 0, length 64",
        "10.0.0.1 > 10.0.0.2: ICMP echo reply, id 31672, seq 2, length 64",
    ] {
        assert!(out.contains(needle), "ping-fresh: no '{needle}' in\n{out}");
    }
    let f = Fixture::load("tcp-wrapped");
    let out = text(&dump(&[], &f.bus).stdout);
    assert!(
        out.contains("10.0.0.2.57964 > 10.0.0.1.5001: Flags [.]"),
        "{out}"
    );
    let f = Fixture::load("udp-sizes");
    let out = text(&dump(&[], &f.bus).stdout);
    assert!(out.contains(": UDP, length 999"), "{out}");
}

/// Runs every form of `dump` on a bad input and checks the refusal: exit
/// status 1, one `shmif: ` error naming the file and containing `why`,
/// nothing on stdout, no pcap created, the file unchanged.
fn assert_refused(bus: &Path, why: &str) {
    let before = std::fs::read(bus).ok();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.pcap");
    let shown = bus.display().to_string();
    for args in [
        vec![],
        vec!["-h"],
        vec!["-p", out.to_str().unwrap()],
        vec!["-p", "-"],
    ] {
        let o = dump(&args, bus);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?} {shown}: {err}");
        assert!(err.starts_with("shmif: "), "{args:?}: {err}");
        assert!(
            err.contains(&shown),
            "{args:?}: error does not name the file: {err}"
        );
        assert!(err.contains(why), "{args:?}: expected '{why}' in: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line expected: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(o.stdout.is_empty(), "{args:?}: stdout {}", text(&o.stdout));
        assert!(!out.exists(), "{args:?}: a pcap was created for bad input");
        assert_eq!(
            std::fs::read(bus).ok(),
            before,
            "{args:?}: the file changed"
        );
    }
}

#[test]
fn missing_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("no-such-bus");
    assert_refused(&bus, "no such bus file");
    assert!(!bus.exists(), "dump must not create the bus");
}

#[test]
fn directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    assert_refused(d.path(), "directory");
}

#[test]
fn empty_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("empty");
    std::fs::write(&bus, b"").unwrap();
    assert_refused(&bus, "empty");
}

#[test]
fn text_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("notes.txt");
    std::fs::write(&bus, "bus version 3, not really\n".repeat(100)).unwrap();
    assert_refused(&bus, "text file");
}

#[test]
fn random_megabyte_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("random");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes: Vec<u8> = (0..BUS_SIZE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    // Neither the magic nor the byte-swapped magic.
    bytes[..4].copy_from_slice(&0x1234_5678u32.to_ne_bytes());
    std::fs::write(&bus, &bytes).unwrap();
    assert_refused(&bus, "magic 0x12345678");
}

#[test]
fn right_magic_wrong_size_is_refused() {
    let f = Fixture::load("ping-fresh");
    let image = std::fs::read(&f.bus).unwrap();
    let small = f.dir.path().join("small.bus");
    std::fs::write(&small, &image[..4096]).unwrap();
    assert_refused(&small, "4096 bytes");
    let big = f.dir.path().join("big.bus");
    let mut image = image;
    image.extend_from_slice(&[0u8; 10]);
    std::fs::write(&big, &image).unwrap();
    assert_refused(&big, &format!("{} bytes", BUS_SIZE + 10));
}

#[test]
fn unknown_version_is_refused() {
    let f = Fixture::load("ping-fresh");
    let mut image = std::fs::read(&f.bus).unwrap();
    image[4..8].copy_from_slice(&7u32.to_ne_bytes());
    std::fs::write(&f.bus, &image).unwrap();
    assert_refused(&f.bus, "bus version 7, program 3");
}

/// Header offsets of the non-empty frames of a bus that has not wrapped.
fn frame_headers(image: &[u8]) -> Vec<usize> {
    let data = &image[32..];
    let last = u32::from_ne_bytes(image[20..24].try_into().unwrap()) as usize;
    let mut off = 0;
    let mut out = Vec::new();
    while off <= last {
        let len = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        if len > 0 {
            out.push(off);
        }
        off += 24 + len;
    }
    out
}

#[test]
fn corrupt_frame_mid_chain_prints_what_came_before() {
    let f = Fixture::load("ping-fresh");
    let mut image = std::fs::read(&f.bus).unwrap();
    let headers = frame_headers(&image);
    assert_eq!(headers.len(), 10);
    let bad = headers[headers.len() / 2];
    image[32 + bad..32 + bad + 4].copy_from_slice(&60_000u32.to_ne_bytes());
    std::fs::write(&f.bus, &image).unwrap();
    let shown = f.bus.display().to_string();
    let where_ = format!("{bad:#x}");

    let want: String = text(&f.txt)
        .lines()
        .take(1 + headers.len() / 2)
        .map(|l| format!("{l}\n"))
        .collect();
    let out = f.dir.path().join("out.pcap");
    for args in [vec![], vec!["-p", out.to_str().unwrap()], vec!["-p", "-"]] {
        let o = dump(&args, &f.bus);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("shmif: "), "{args:?}: {err}");
        assert!(
            last.contains(&shown),
            "{args:?}: error does not name the file: {err}"
        );
        assert!(
            last.contains(&where_),
            "{args:?}: error does not give the offset: {err}"
        );
        assert!(last.contains("60000"), "{args:?}: {err}");
        // The frames before the corruption were printed.
        let printed = if args.len() == 2 && args[1] == "-" {
            err.lines()
                .take(1 + headers.len() / 2)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        } else {
            text(&o.stdout)
        };
        if args.is_empty() {
            let lines: Vec<&str> = printed.lines().collect();
            let want_lines: Vec<&str> = want.lines().collect();
            assert_eq!(lines.len(), want_lines.len(), "{printed}");
            for (l, w) in lines.iter().zip(want_lines) {
                assert!(l.starts_with(w), "'{l}' vs '{w}'");
            }
        } else {
            assert_eq!(printed, want, "{args:?}");
        }
    }
    assert_eq!(
        std::fs::read(&f.bus).unwrap(),
        image,
        "the bus was modified"
    );
}

#[test]
fn refuses_to_write_the_pcap_over_the_bus() {
    let f = Fixture::load("ping-fresh");
    let before = std::fs::read(&f.bus).unwrap();
    let o = dump(&["-p", f.bus.to_str().unwrap()], &f.bus);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(&f.bus.display().to_string()));
    assert_eq!(std::fs::read(&f.bus).unwrap(), before);
}

#[test]
fn closed_stdout_ends_quietly() {
    let f = Fixture::load("tcp-wrapped");
    for pcap in [false, true] {
        let mut cmd = shmif_command();
        cmd.arg("dump");
        if pcap {
            cmd.args(["-p", "-"]);
        }
        let mut child = cmd
            .arg(&f.bus)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut first = Vec::new();
            out.read_until(b'\n', &mut first).unwrap();
            assert!(!first.is_empty());
            // Dropping the reader closes the pipe, like `| head -1`.
        }
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!err.contains("panicked"), "pcap={pcap}: {err}");
        assert!(!err.contains("Broken pipe"), "pcap={pcap}: {err}");
        assert!(status.success(), "pcap={pcap}: {status:?} {err}");
    }
}

#[test]
fn full_disk_on_stdout_is_an_error() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("SKIPPED: no /dev/full");
        return;
    };
    let f = Fixture::load("ping-fresh");
    let o = shmif_command()
        .arg("dump")
        .arg(&f.bus)
        .stdout(full)
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("shmif: writing to standard output"),
        "{err}"
    );
}

#[test]
fn tcpdump_reads_the_pcap_stream() {
    if Command::new("tcpdump")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!(
            "\n*** SKIPPED: tcpdump not installed: `shmif dump -p - BUS | tcpdump -n -e -r -` \
             NOT TESTED (CI installs tcpdump) ***\n"
        );
        return;
    }
    let f = Fixture::load("ping-fresh");
    let o = dump(&["-p", "-"], &f.bus);
    assert_success(&o, "dump -p -");
    let mut td = Command::new("tcpdump")
        .args(["-n", "-e", "-r", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    td.stdin.take().unwrap().write_all(&o.stdout).unwrap();
    let r = td.wait_with_output().unwrap();
    let out = text(&r.stdout);
    assert!(r.status.success(), "tcpdump: {}", text(&r.stderr));
    assert!(out.contains("ICMP echo request"), "{out}");
    assert!(out.contains("ICMP echo reply"), "{out}");
    assert_eq!(out.lines().count(), 10, "{out}");
}

#[test]
fn hostile_timestamps_are_copied_as_they_are() {
    // libpcap copies the frame header's sec/usec into the record unchecked;
    // so must we, even for a microseconds field of a million or more.
    let f = Fixture::load("ping-fresh");
    let mut image = std::fs::read(&f.bus).unwrap();
    let first = frame_headers(&image)[0];
    let usec = 2_999_999u32;
    let sec = u32::MAX;
    image[32 + first + 4..32 + first + 8].copy_from_slice(&sec.to_ne_bytes());
    image[32 + first + 8..32 + first + 12].copy_from_slice(&usec.to_ne_bytes());
    std::fs::write(&f.bus, &image).unwrap();

    let out = f.dir.path().join("out.pcap");
    let o = dump(&["-p", out.to_str().unwrap()], &f.bus);
    assert_success(&o, "hostile timestamp");
    let mut want = f.pcap.clone();
    // First record header: right after the 24-byte global header.
    want[24..28].copy_from_slice(&sec.to_ne_bytes());
    want[28..32].copy_from_slice(&usec.to_ne_bytes());
    assert!(
        std::fs::read(&out).unwrap() == want,
        "pcap record not copied raw"
    );
    let txt = text(&o.stdout);
    assert!(
        txt.lines()
            .nth(1)
            .unwrap()
            .ends_with(&format!("ts {sec}/{usec}")),
        "{txt}"
    );
}
