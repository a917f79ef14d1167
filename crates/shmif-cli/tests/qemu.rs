//! `shmif qemu`: QEMU guests on a bus through QEMU's own socket back-ends.
//! Real guests (tests/guest/mod.rs): one on `-netdev stream` and one on
//! `-netdev vde` (through `shmif vde` on the same bus) ping each other, a
//! third on `-netdev dgram` reaches both; a guest killed and a new one
//! started on the same socket; `--connect` redialling a restarted QEMU
//! (`server=on`); and every kind of bad stream input, each ending only
//! that peer's connection.
//!
//! Tests that need QEMU and the guest kernel print `*** SKIPPED` and pass
//! without them. Guest traffic stays on the test's bus, on 10.213.6.0/24.

mod common;
mod guest;

use common::{Proc, Stream};
use guest::{Guest, Spec};
use std::path::Path;
use std::time::Duration;

/// `shmif qemu BUS ARGS`, started and serving.
fn start_qemu_bridge(bus: &Path, args: &[&str]) -> Proc {
    let mut p = Proc::shmif("qemu", bus, args, Stream::Lines, Stream::Lines);
    p.out()
        .expect_containing("qemu bridge up", Duration::from_secs(10));
    p
}

/// Guest commands: wait until each address answers, then ping it 3 times
/// and print `PING <addr> RC <status>`; then stay up (answering pings)
/// until killed.
fn pinger(addrs: &[&str]) -> String {
    let mut s = String::new();
    for a in addrs {
        s.push_str(&format!(
            "for i in $(seq 60); do ping -c 1 -W 1 {a} >/dev/null 2>&1 && break; done\n\
             ping -c 3 -W 3 {a} >/dev/null 2>&1; echo \"PING {a} RC $?\"\n"
        ));
    }
    s.push_str("echo PINGS-DONE\nsleep 600\n");
    s
}

#[test]
fn guests_on_netdev_stream_vde_and_dgram_reach_each_other_across_the_bus() {
    let test = "guests_on_netdev_stream_vde_and_dgram_reach_each_other_across_the_bus";
    let Some(kernel) = guest::kernel(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let sw = tmp.path().join("sw");
    let stream_sock = tmp.path().join("stream.sock");
    let br = tmp.path().join("br.sock");
    let vm = tmp.path().join("vm.sock");
    let mut vde = Proc::shmif(
        "vde",
        &bus,
        &[sw.to_str().unwrap()],
        Stream::Lines,
        Stream::Lines,
    );
    vde.out()
        .expect_containing("serving", Duration::from_secs(10));
    let listen = format!("unix:{}", stream_sock.display());
    let dgram = format!("unix:{}", br.display());
    let remote = format!("unix:{}", vm.display());
    let mut bridge = start_qemu_bridge(
        &bus,
        &["--listen", &listen, "--dgram", &dgram, "--remote", &remote],
    );
    let (a, b) = ("10.213.6.21", "10.213.6.22");
    let on_vde = pinger(&[b]);
    let on_stream = pinger(&[a]);
    let on_dgram = pinger(&[a, b]);
    let specs = [
        Spec {
            name: "on-vde",
            mac: 0x21,
            ip: "10.213.6.21/24",
            netdev: format!("vde,sock={}", sw.display()),
            script: &on_vde,
        },
        Spec {
            name: "on-stream",
            mac: 0x22,
            ip: "10.213.6.22/24",
            netdev: format!(
                "stream,server=off,addr.type=unix,addr.path={}",
                stream_sock.display()
            ),
            script: &on_stream,
        },
        Spec {
            name: "on-dgram",
            mac: 0x23,
            ip: "10.213.6.23/24",
            netdev: format!(
                "dgram,local.type=unix,local.path={},remote.type=unix,remote.path={}",
                vm.display(),
                br.display()
            ),
            script: &on_dgram,
        },
    ];
    let mut guests: Vec<Guest> = specs
        .iter()
        .map(|s| Guest::start(&kernel, s, tmp.path()))
        .collect();
    for g in &mut guests {
        g.wait_up();
    }
    let limit = Duration::from_secs(120);
    assert_eq!(guests[0].expect("PING", limit), format!("PING {b} RC 0"));
    assert_eq!(guests[1].expect("PING", limit), format!("PING {a} RC 0"));
    assert_eq!(guests[2].expect("PING", limit), format!("PING {a} RC 0"));
    assert_eq!(guests[2].expect("PING", limit), format!("PING {b} RC 0"));
    bridge
        .err()
        .expect_containing("joined", Duration::from_secs(5));
    drop(guests);
    // The stream guest's port goes when its QEMU does.
    bridge.err().expect_containing(
        "closed: the peer closed the connection",
        Duration::from_secs(10),
    );
    // SIGTERM: counters for every port, the sockets removed, exit 0.
    let status = bridge.stop(rustix::process::Signal::TERM, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let (rest, _) = bridge.err().until_end(Duration::from_secs(5));
    let rest = rest.join("\n");
    assert!(rest.contains("qemu dgram"), "{rest}");
    assert!(rest.contains("bus "), "{rest}");
    assert!(!stream_sock.exists() && !br.exists());
}
