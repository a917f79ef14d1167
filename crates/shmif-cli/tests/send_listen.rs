//! `shmif send` and `shmif listen` as separate processes on one bus, and
//! how both refuse bad arguments.

mod common;

use common::{
    finish, send_broadcast, shmif, shmif_command, spawn_piped, text, wait_for_bus, BROADCAST,
};
use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// `--dst ff:ff:ff:ff:ff:ff --ethertype 0x88b5 --payload PAYLOAD`.
fn good(payload: &str) -> Vec<&str> {
    [&BROADCAST[..], &["--payload", payload]].concat()
}

/// Runs `shmif ARGS` with `input` on its standard input; the result of
/// writing it, and the output.
fn with_stdin(args: &[&str], input: &[u8]) -> (std::io::Result<()>, Output) {
    let mut c = shmif_command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Dropped at once: the command sees the end of its input.
    let written = c.stdin.take().unwrap().write_all(input);
    (written, c.wait_with_output().unwrap())
}

#[test]
fn listen_receives_what_send_sends() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    let bus_s = bus.to_str().unwrap();
    let mut listen =
        spawn_piped(shmif_command().args(["listen", bus_s, "-c", "2", "--timeout", "10"]));
    wait_for_bus(&bus, &mut listen);

    let s = shmif(&[&["send", bus_s][..], &good("68656c6c6f"), &["--count", "2"]].concat());
    assert!(s.status.success(), "send: {}", text(&s.stderr));
    assert!(
        text(&s.stderr).contains("sent 2 frames"),
        "{}",
        text(&s.stderr)
    );

    let o = finish(listen, "listen", Duration::from_secs(15));
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    assert!(o.status.success(), "listen: {:?} {err}", o.status);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        assert!(l.contains("> ff:ff:ff:ff:ff:ff, 0x88b5, length 19"), "{l}");
        assert!(l.ends_with("5 bytes: 68 65 6c 6c 6f"), "{l}");
        // HH:MM:SS.uuuuuu, then the summary.
        let (clock, _) = l.split_once(' ').unwrap();
        assert_eq!(clock.len(), 15, "{l}");
        assert_eq!(&clock[2..3], ":", "{l}");
        assert_eq!(&clock[8..9], ".", "{l}");
    }
    assert!(err.contains("received 2 frames"), "{err}");
    assert!(err.contains("overruns 0"), "{err}");
}

#[test]
fn listen_times_out_without_traffic() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    let start = Instant::now();
    let o = shmif(&[
        "listen",
        bus.to_str().unwrap(),
        "-c",
        "1",
        "--timeout",
        "0.3",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(o.stdout.is_empty());
    let err = text(&o.stderr);
    assert!(err.contains("received 0 frames"), "{err}");
    assert!(err.contains("timed out"), "{err}");
}

#[test]
fn listen_filters_unless_promiscuous() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    let bus_s = bus.to_str().unwrap();
    let spawn = |promisc: bool| {
        let mut c = shmif_command();
        c.args(["listen", bus_s, "-c", "1", "--timeout", "3"]);
        if promisc {
            c.arg("--promisc");
        }
        spawn_piped(&mut c)
    };
    let mut plain = spawn(false);
    wait_for_bus(&bus, &mut plain);
    let promisc = spawn(true);
    std::thread::sleep(Duration::from_millis(300));
    // Unicast to a MAC that neither listener has.
    let s = shmif(&[
        "send",
        bus_s,
        "--dst",
        "02:00:00:00:00:01",
        "--src",
        "02:00:00:00:00:02",
        "--ethertype",
        "0x88b5",
        "--payload",
        "00",
    ]);
    assert!(s.status.success(), "{}", text(&s.stderr));
    let p = finish(promisc, "listen --promisc", Duration::from_secs(10));
    assert!(p.status.success(), "promisc: {}", text(&p.stderr));
    assert!(
        text(&p.stdout).contains("02:00:00:00:00:02 > 02:00:00:00:00:01, 0x88b5"),
        "{}",
        text(&p.stdout)
    );
    let o = finish(plain, "listen", Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("filtered 1"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn sent_frames_show_up_in_dump() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    let bus_s = bus.to_str().unwrap();
    let (written, s) = with_stdin(
        &[
            "send",
            bus_s,
            "--dst",
            "b2:a0:01:02:03:04",
            "--src",
            "b2:a0:0a:0b:0c:0d",
            "--ethertype",
            "0x88b5",
            "--payload",
            "-",
            "--count",
            "3",
        ],
        &[0u8, 1, 0xfe, 0xff],
    );
    written.unwrap();
    assert!(s.status.success(), "{}", text(&s.stderr));

    let o = shmif(&["dump", bus_s]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let frames: Vec<&str> = out.lines().filter(|l| l.starts_with("packet ")).collect();
    assert_eq!(frames.len(), 3, "{out}");
    for l in frames {
        assert!(l.contains("length 0x0012"), "{l}");
        assert!(
            l.ends_with(
                "b2:a0:0a:0b:0c:0d > b2:a0:01:02:03:04, 0x88b5, length 18: 4 bytes: 00 01 fe ff"
            ),
            "{l}"
        );
    }
}

/// Runs `shmif send` with bad arguments on a bus path that must stay
/// untouched, and checks the refusal names `needle`.
fn assert_send_refused(extra: &[&str], needle: &str) {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    let mut args = vec!["send", bus.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = shmif(&args);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(
        err.contains(needle),
        "{args:?}: expected '{needle}' in: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !bus.exists(),
        "{args:?}: bad arguments must not create the bus"
    );
}

#[test]
fn send_refuses_a_bad_mac() {
    assert_send_refused(
        &[
            "--dst",
            "ff:ff:ff:ff:ff",
            "--ethertype",
            "0x88b5",
            "--payload",
            "00",
        ],
        "--dst",
    );
    assert_send_refused(&[&good("00")[..], &["--src", "nope"]].concat(), "--src");
}

#[test]
fn send_refuses_odd_or_bad_hex() {
    for bad in ["686", "6g", "0x00"] {
        assert_send_refused(&good(bad), "--payload");
    }
}

#[test]
fn send_refuses_a_bad_ethertype() {
    assert_send_refused(
        &[
            BROADCAST[0],
            BROADCAST[1],
            "--ethertype",
            "0x123456",
            "--payload",
            "00",
        ],
        "--ethertype",
    );
}

#[test]
fn send_refuses_a_payload_too_big() {
    let big = "00".repeat(1501);
    assert_send_refused(&good(&big), "--payload");
    assert_send_refused(&good(&big), "too big");

    // The same from standard input.
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    // (Writing may fail: send stops reading after 1501 bytes.)
    let args = [&["send", bus.to_str().unwrap()][..], &good("-")].concat();
    let (_, o) = with_stdin(&args, &[0u8; 1501]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--payload"), "{err}");
    assert!(
        !bus.exists(),
        "an oversized payload must not create the bus"
    );
}

#[test]
fn the_largest_payload_is_accepted() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    let big = "ab".repeat(1500);
    let o = send_broadcast(bus.to_str().unwrap(), &big);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let dump = text(&shmif(&["dump", bus.to_str().unwrap()]).stdout);
    assert!(dump.contains("length 0x05ea"), "{dump}");
}

#[test]
fn send_and_listen_refuse_a_directory() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    let o = send_broadcast(dir, "00");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("shmif: "), "{err}");
    assert!(err.contains(dir), "{err}");
    assert!(err.contains("directory"), "{err}");

    let o = shmif(&["listen", dir, "--timeout", "1"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(dir) && err.contains("directory"), "{err}");
}

#[test]
fn send_refuses_a_file_that_is_not_a_bus() {
    let d = tempfile::tempdir().unwrap();
    let notes = d.path().join("notes.txt");
    std::fs::write(&notes, "keep me\n").unwrap();
    let o = send_broadcast(notes.to_str().unwrap(), "00");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(notes.to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read(&notes).unwrap(), b"keep me\n");
}

#[test]
fn listen_refuses_bad_arguments() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().join("bus");
    let b = bus.to_str().unwrap();
    for (args, needle) in [
        (vec!["listen", b, "-c", "0"], "--count"),
        (vec!["listen", b, "-c", "many"], "--count"),
        (vec!["listen", b, "--timeout=-1"], "--timeout"),
        (vec!["listen", b, "--timeout", "soon"], "--timeout"),
    ] {
        let o = shmif(&args);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            !bus.exists(),
            "{args:?}: bad arguments must not create the bus"
        );
    }
}
