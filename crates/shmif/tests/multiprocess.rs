//! Separate processes on one bus file: three peers exchanging 10,000
//! frames each, and a blocked receive woken from another process.

mod common;
use common::{fnv64, role, say, Kid};
use shmif::Interface;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PEERS: usize = 3;
const FRAMES_PER_PEER: u32 = 10_000;
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// Frame `seq` of peer `who`: broadcast, numbered, with a checksum trailer.
fn numbered_frame(src: [u8; 6], who: u8, seq: u32) -> Vec<u8> {
    let body_len = 16 + (seq.wrapping_mul(2_654_435_761) % 560) as usize;
    let mut f = Vec::with_capacity(14 + body_len + 8);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
    f.push(who);
    f.extend_from_slice(&seq.to_be_bytes());
    for i in 0..body_len - 5 {
        f.push((seq as usize + i * 13 + who as usize) as u8);
    }
    let sum = fnv64(&f[14..]);
    f.extend_from_slice(&sum.to_be_bytes());
    f
}

/// Checks a received numbered frame; returns (peer, seq).
fn check_frame(f: &[u8]) -> Result<(u8, u32), String> {
    if f.len() < 14 + 5 + 8 || f[12..14] != ETHERTYPE {
        return Err(format!("unexpected frame of {} bytes", f.len()));
    }
    let (body, sum) = f[14..].split_at(f.len() - 14 - 8);
    if fnv64(body) != u64::from_be_bytes(sum.try_into().unwrap()) {
        return Err("checksum mismatch: corrupt frame".into());
    }
    Ok((body[0], u32::from_be_bytes(body[1..5].try_into().unwrap())))
}

/// Entry point of child processes; does nothing in a normal test run.
#[test]
#[ignore = "entry point for child processes of the other tests"]
fn child_entry() {
    let Some((role, args)) = role() else {
        return;
    };
    match role.as_str() {
        "peer" => peer(Path::new(&args[0]), args[1].parse().unwrap()),
        "waker-receiver" => waker_receiver(Path::new(&args[0]), args[1].parse().unwrap()),
        other => panic!("unknown role {other}"),
    }
}

/// A peer: sends its numbered frames paced, receives everyone else's, and
/// reports what it got.
fn peer(bus: &Path, who: u8) {
    let ifc = Arc::new(Interface::attach(bus).unwrap());
    say("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "go");

    let rx = Arc::clone(&ifc);
    let receiver = std::thread::spawn(move || {
        let mut next = [0u32; PEERS];
        let mut errors = Vec::new();
        let want = (PEERS as u32 - 1) * FRAMES_PER_PEER;
        let mut got = 0u32;
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < want && Instant::now() < deadline {
            let Some(f) = rx.recv_timeout(Duration::from_millis(200)).unwrap() else {
                continue;
            };
            match check_frame(&f.data) {
                Ok((p, seq)) if p == who => errors.push(format!("received own frame {seq}")),
                Ok((p, seq)) if (p as usize) < PEERS => {
                    if seq != next[p as usize] {
                        errors.push(format!(
                            "from peer {p}: got seq {seq}, expected {}",
                            next[p as usize]
                        ));
                    }
                    next[p as usize] = seq + 1;
                }
                Ok((p, _)) => errors.push(format!("unknown peer {p}")),
                Err(e) => errors.push(e),
            }
            got += 1;
        }
        (got, errors)
    });

    let mac = ifc.mac().0;
    for seq in 0..FRAMES_PER_PEER {
        ifc.send(&numbered_frame(mac, who, seq)).unwrap();
        if seq % 5 == 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (got, errors) = receiver.join().unwrap();
    let c = ifc.counters();
    say(&format!(
        "result got={got} overruns={} own={} errors={}",
        c.overruns,
        c.rx_own,
        errors.len()
    ));
    for e in errors.iter().take(5) {
        say(&format!("error {e}"));
    }
}

#[test]
fn three_processes_exchange_ten_thousand_frames_each() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let mut kids: Vec<Kid> = (0..PEERS)
        .map(|who| {
            Kid::spawn(
                "child_entry",
                "peer",
                &[bus.display().to_string(), who.to_string()],
            )
        })
        .collect();
    for k in &mut kids {
        k.expect("ready");
    }
    for k in &mut kids {
        writeln!(k.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let want = (PEERS as u32 - 1) * FRAMES_PER_PEER;
    for (who, k) in kids.iter_mut().enumerate() {
        let result = k.expect("result");
        let details: Vec<String> = std::iter::from_fn(|| k.next()).collect();
        eprintln!("peer {who}: {result}");
        assert_eq!(
            common::field(&result, "got"),
            u64::from(want),
            "peer {who}: {details:?}"
        );
        assert_eq!(
            common::field(&result, "overruns"),
            0,
            "peer {who}: {details:?}"
        );
        assert_eq!(
            common::field(&result, "errors"),
            0,
            "peer {who}: {details:?}"
        );
        let own = common::field(&result, "own");
        assert!(
            own > 0 && own <= u64::from(FRAMES_PER_PEER),
            "peer {who} should have seen and skipped its own frames: {result}"
        );
    }
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Blocks in `recv` `rounds` times and reports how long each wake-up took
/// after the sender's timestamp.
fn waker_receiver(bus: &Path, rounds: usize) {
    let ifc = Interface::attach(bus).unwrap();
    say("ready");
    for _ in 0..rounds {
        let f = ifc.recv().unwrap();
        let now = monotonic_ns();
        let sent = u64::from_be_bytes(f.data[14..22].try_into().unwrap());
        say(&format!("latency_ns {}", now.saturating_sub(sent)));
    }
}

#[test]
fn blocked_recv_in_another_process_wakes_on_send() {
    const ROUNDS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let mut kid = Kid::spawn(
        "child_entry",
        "waker-receiver",
        &[bus.display().to_string(), ROUNDS.to_string()],
    );
    kid.expect("ready");
    let tx = Interface::attach(&bus).unwrap();
    let mut lat = Vec::new();
    for _ in 0..ROUNDS {
        // Give the receiver time to block in recv before each send.
        std::thread::sleep(Duration::from_millis(15));
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&tx.mac().0);
        f.extend_from_slice(&ETHERTYPE);
        f.extend_from_slice(&monotonic_ns().to_be_bytes());
        f.resize(60, 0);
        tx.send(&f).unwrap();
        let line = kid.expect("latency_ns");
        let ns: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        lat.push(ns);
    }
    lat.sort_unstable();
    let median = lat[lat.len() / 2];
    eprintln!(
        "wake-up latency across processes: median {:.1} us, max {:.1} us ({} rounds)",
        median as f64 / 1e3,
        *lat.last().unwrap() as f64 / 1e3,
        ROUNDS
    );
    assert!(
        *lat.last().unwrap() < 1_000_000_000,
        "a blocked recv took over 1 s to wake: {lat:?}"
    );
}
