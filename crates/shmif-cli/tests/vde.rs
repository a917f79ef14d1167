//! `shmif vde`: VDE clients on a bus. Real QEMU guests on `-netdev vde`
//! talk to `shmif host` across the bus (ping, TCP both ways, every byte
//! checked); a guest killed and replaced on the same switch; 16 `vde_plug`
//! clients at once; a guest and a network namespace behind `shmif tap`;
//! the switch directory's rules (stale `ctl` taken over, foreign
//! directories refused, everything removed on SIGTERM); and every kind of
//! bad client input, each ending only that client's connection.
//!
//! Tests that need QEMU and the guest kernel (see tests/guest/mod.rs),
//! `vde_plug` or root print `*** SKIPPED` and pass without them. Guest
//! traffic stays on the test's own bus, on 10.213.5.0/24.

mod common;
mod guest;

use common::{Proc, Stream, SHMIF};
use guest::{Guest, Spec};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `shmif vde BUS DIR`, started and serving.
fn start_vde(bus: &Path, dir: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut p = Proc::shmif("vde", bus, &args, Stream::Lines, Stream::Lines);
    p.out()
        .expect_containing("serving", Duration::from_secs(10));
    p
}

/// `shmif host BUS ARGS`, started and up.
fn start_host(bus: &Path, args: &[&str]) -> Proc {
    let mut p = Proc::shmif("host", bus, args, Stream::Lines, Stream::Lines);
    p.out()
        .expect_containing(" up on ", Duration::from_secs(10));
    p
}

/// The sha256 (hex) of the first `len` bytes of `shmif tcp-send`'s
/// pattern: byte i is byte i % 8 of the little-endian word (i / 8) *
/// 0x9e3779b97f4a7c15.
fn pattern_sha256(len: usize, dir: &Path) -> String {
    let mut v = Vec::with_capacity(len);
    let mut w = 0u64;
    while v.len() < len {
        let word = w.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
        let n = (len - v.len()).min(8);
        v.extend_from_slice(&word[..n]);
        w += 1;
    }
    let f = dir.join("pattern");
    std::fs::write(&f, &v).unwrap();
    let out = Command::new("sha256sum").arg(&f).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The first word after `label` in `line`.
fn field<'a>(line: &'a str, label: &str) -> &'a str {
    line.split(label)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} in {line:?}"))
}

#[test]
fn a_guest_on_netdev_vde_and_shmif_host_ping_each_other_and_move_tcp_both_ways() {
    let test = "a_guest_on_netdev_vde_and_shmif_host_ping_each_other_and_move_tcp_both_ways";
    let Some(kernel) = guest::kernel(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let sw = tmp.path().join("sw");
    let mut vde = start_vde(&bus, &sw, &[]);
    let _echo = start_host(&bus, &["--ip", "10.213.5.1/24", "--tcp-echo", "7"]);
    let script = "\
        nc -l -p 9000 > /tmp/r &\n\
        sleep 0.3\n\
        echo GUEST-LISTENING\n\
        ping -c 3 -W 5 10.213.5.1 > /tmp/p; echo \"PING-RC $?\"; cat /tmp/p\n\
        dd if=/dev/urandom of=/tmp/d bs=1024 count=1024 2>/dev/null\n\
        nc 10.213.5.1 7 < /tmp/d > /tmp/e; echo \"ECHO-RC $?\"\n\
        echo \"ECHO-SENT $(wc -c < /tmp/d) $(sha256sum < /tmp/d)\"\n\
        echo \"ECHO-BACK $(wc -c < /tmp/e) $(sha256sum < /tmp/e)\"\n\
        wait\n\
        echo \"RECEIVED $(wc -c < /tmp/r) $(sha256sum < /tmp/r)\"\n";
    let spec = Spec {
        name: "vde-guest",
        mac: 0x11,
        ip: "10.213.5.11/24",
        netdev: format!("vde,sock={}", sw.display()),
        script,
    };
    let mut g = Guest::start(&kernel, &spec, tmp.path());
    g.wait_up();
    g.expect("GUEST-LISTENING", Duration::from_secs(30));
    vde.err()
        .expect_containing("joined", Duration::from_secs(5));
    // The bus side: ping the guest and send it 2 MiB of the pattern.
    let mb = 2usize;
    let out = Command::new(SHMIF)
        .args(["host", bus.to_str().unwrap(), "--ip", "10.213.5.2/24"])
        .args(["--ping", "10.213.5.11", "--ping-count", "3"])
        .args([
            "--tcp-send",
            "10.213.5.11:9000",
            "--megabytes",
            &mb.to_string(),
        ])
        .args(["--tcp-timeout", "30", "--exit-when-done"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("actions done: 2 of 2 succeeded"),
        "shmif host to the guest: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 received"), "{text}");
    // The guest side: ping, echo through shmif host, the stream received.
    let ping = g.expect("PING-RC", Duration::from_secs(60));
    assert_eq!(ping, "PING-RC 0", "{}", g.console().so_far());
    let rc = g.expect("ECHO-RC", Duration::from_secs(120));
    assert_eq!(rc, "ECHO-RC 0", "{}", g.console().so_far());
    let sent = g.expect("ECHO-SENT", Duration::from_secs(10));
    let back = g.expect("ECHO-BACK", Duration::from_secs(10));
    assert_eq!(field(&sent, "ECHO-SENT"), "1048576", "{sent}");
    assert_eq!(
        sent.replace("ECHO-SENT", ""),
        back.replace("ECHO-BACK", ""),
        "the echo came back different"
    );
    let recv = g.expect("RECEIVED", Duration::from_secs(60));
    let want = pattern_sha256(mb << 20, tmp.path());
    assert_eq!(
        recv,
        format!("RECEIVED {} {want}  -", mb << 20),
        "the stream from shmif host arrived different"
    );
    g.wait_done(Duration::from_secs(30));
    // The guest's port went with it.
    vde.err().expect_containing(
        "closed: the client closed its control stream",
        Duration::from_secs(10),
    );
}
