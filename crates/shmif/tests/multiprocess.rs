//! Separate processes on one bus file.
//!
//! The child processes are this test binary run again with
//! `SHMIF_TEST_ROLE` set, entering the ignored `child_entry` test; they talk
//! to the parent over stdin/stdout with lines starting `@@ `.

use shmif::Interface;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PEERS: usize = 3;
const FRAMES_PER_PEER: u32 = 10_000;
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

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

struct Children(Vec<Child>);
impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_child(role: &str, args: &[String]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHMIF_TEST_ROLE", role)
        .env("SHMIF_TEST_ARGS", args.join("\u{1f}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// The protocol part of a child's output line (libtest may print its own
/// text before it on the same line).
fn protocol(line: &str) -> Option<&str> {
    line.find("@@ ").map(|i| &line[i + 3..])
}

/// Reads protocol lines (`@@ ...`) from a child until one satisfies `want`.
fn read_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    want: &str,
) -> Option<String> {
    for line in lines.by_ref() {
        let line = line.ok()?;
        if let Some(rest) = protocol(&line) {
            if rest.starts_with(want) {
                return Some(rest.to_string());
            }
        }
    }
    None
}

/// Entry point of child processes; does nothing in a normal test run.
#[test]
#[ignore = "entry point for child processes of the other tests"]
fn child_entry() {
    let Ok(role) = std::env::var("SHMIF_TEST_ROLE") else {
        return;
    };
    let args: Vec<String> = std::env::var("SHMIF_TEST_ARGS")
        .unwrap_or_default()
        .split('\u{1f}')
        .map(String::from)
        .collect();
    match role.as_str() {
        "peer" => peer(Path::new(&args[0]), args[1].parse().unwrap()),
        "waker-receiver" => waker_receiver(Path::new(&args[0]), args[1].parse().unwrap()),
        other => panic!("unknown role {other}"),
    }
}

fn wait_for_go() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "go");
}

/// A peer: sends its numbered frames paced, receives everyone else's, and
/// reports what it got.
fn peer(bus: &Path, who: u8) {
    let ifc = Arc::new(Interface::attach(bus).unwrap());
    println!("@@ ready");
    std::io::stdout().flush().unwrap();
    wait_for_go();

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
    println!(
        "@@ result got={got} overruns={} own={} errors={}",
        c.overruns,
        c.rx_own,
        errors.len()
    );
    for e in errors.iter().take(5) {
        println!("@@ error {e}");
    }
}

#[test]
fn three_processes_exchange_ten_thousand_frames_each() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let mut kids = Children(Vec::new());
    let mut outs = Vec::new();
    let mut ins: Vec<ChildStdin> = Vec::new();
    for who in 0..PEERS {
        let mut c = spawn_child("peer", &[bus.display().to_string(), who.to_string()]);
        ins.push(c.stdin.take().unwrap());
        outs.push(BufReader::new(c.stdout.take().unwrap()).lines());
        kids.0.push(c);
    }
    for (who, out) in outs.iter_mut().enumerate() {
        read_until(out, "ready").unwrap_or_else(|| panic!("peer {who} never attached"));
    }
    for i in &mut ins {
        writeln!(i, "go").unwrap();
    }
    let want = format!("got={}", (PEERS as u32 - 1) * FRAMES_PER_PEER);
    for (who, out) in outs.iter_mut().enumerate() {
        let result = read_until(out, "result").unwrap_or_else(|| panic!("peer {who} died"));
        let mut details = Vec::new();
        for line in out.by_ref().map_while(Result::ok) {
            if let Some(rest) = protocol(&line) {
                details.push(rest.to_string());
            }
        }
        eprintln!("peer {who}: {result}");
        assert!(result.contains(&want), "peer {who}: {result} {details:?}");
        assert!(
            result.contains("overruns=0") && result.contains("errors=0"),
            "peer {who}: {result} {details:?}"
        );
        let own: u32 = result
            .split_whitespace()
            .find_map(|w| w.strip_prefix("own="))
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(
            own > 0 && own <= FRAMES_PER_PEER,
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
    println!("@@ ready");
    std::io::stdout().flush().unwrap();
    for _ in 0..rounds {
        let f = ifc.recv().unwrap();
        let now = monotonic_ns();
        let sent = u64::from_be_bytes(f.data[14..22].try_into().unwrap());
        println!("@@ latency_ns {}", now.saturating_sub(sent));
        std::io::stdout().flush().unwrap();
    }
}

#[test]
fn blocked_recv_in_another_process_wakes_on_send() {
    const ROUNDS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let mut c = spawn_child(
        "waker-receiver",
        &[bus.display().to_string(), ROUNDS.to_string()],
    );
    let mut out = BufReader::new(c.stdout.take().unwrap()).lines();
    let _kids = Children(vec![c]);
    read_until(&mut out, "ready").expect("receiver attached");
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
        let line = read_until(&mut out, "latency_ns").expect("receiver woke");
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
