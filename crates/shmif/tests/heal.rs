//! A bus that heals: whatever a v3 bus holds (everything but the magic and
//! the size), no library call fails or panics because of it, and traffic
//! flows again as soon as the garbage stops.
//!
//! `SHMIF_HOSTILE_SECS` sets how long the hostile peer writes garbage
//! (default 3).

mod common;
use common::{field, fnv64, role, say, Kid};
use shmif::lowlevel::RawBus;
use shmif::wire::{BUS_HEADER_LEN, DATA_SIZE};
use shmif::{Bus, Interface, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const PEERS: usize = 3;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
}

/// Broadcast frame `seq` of peer `who` in `epoch`, FNV-64 trailer.
fn frame(src: [u8; 6], who: u8, epoch: u8, seq: u64) -> Vec<u8> {
    let body = 8 + (seq.wrapping_mul(2_654_435_761) % 1200) as usize;
    let mut f = Vec::with_capacity(14 + 10 + body + 8);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
    f.push(who);
    f.push(epoch);
    f.extend_from_slice(&seq.to_le_bytes());
    let mut x = seq ^ (u64::from(who) << 40);
    for _ in 0..body {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        f.push((x >> 56) as u8);
    }
    let sum = fnv64(&f[14..]);
    f.extend_from_slice(&sum.to_le_bytes());
    f
}

/// `(who, epoch)` of an intact frame, `None` if it fails its checksum.
fn check(f: &[u8]) -> Option<(u8, u8)> {
    if f.len() < 14 + 10 + 8 || f[12..14] != ETHERTYPE {
        return None;
    }
    let (body, sum) = f[14..].split_at(f.len() - 22);
    (fnv64(body) == u64::from_le_bytes(sum.try_into().unwrap())).then(|| (body[0], body[1]))
}

#[test]
#[ignore = "entry point for the heal tests' child processes"]
fn heal_child() {
    let Some((role, args)) = role() else {
        return;
    };
    let bus = Path::new(&args[0]);
    match role.as_str() {
        "hostile" => hostile(bus, args[1].parse().unwrap(), args[2].parse().unwrap()),
        "peer" => peer(bus, args[1].parse().unwrap()),
        _ => unreachable!(),
    }
}

/// Writes random bytes into the ring and random values into `first`,
/// `last`, `gen` and the version word, half the time holding the bus lock,
/// for `secs`; then says so and exits.
fn hostile(bus: &Path, seed: u64, secs: f64) {
    let raw = Bus::open(bus, &OpenOptions::new()).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(bus).unwrap();
    let mut rng = Rng(seed);
    say("ready");
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let (mut actions, mut locked) = (0u64, 0u64);
    while Instant::now() < end {
        let _guard = (rng.below(2) == 0).then(|| {
            locked += 1;
            raw.lock()
        });
        for _ in 0..1 + rng.below(4) {
            actions += 1;
            let size = u64::from(DATA_SIZE);
            // An offset in the ring, or a value anywhere.
            let value = |rng: &mut Rng| match rng.below(3) {
                0 => rng.next() as u32,
                _ => rng.below(size + 1) as u32,
            };
            match rng.below(6) {
                0 | 1 => {
                    let n = 1 + rng.below(2000) as usize;
                    let off = rng.below(size - n as u64);
                    let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    file.write_all_at(&bytes, BUS_HEADER_LEN as u64 + off)
                        .unwrap();
                }
                2 => {
                    let v = value(&mut rng);
                    file.write_all_at(&v.to_ne_bytes(), 16).unwrap();
                }
                3 => {
                    let v = value(&mut rng);
                    file.write_all_at(&v.to_ne_bytes(), 20).unwrap();
                }
                4 => {
                    let g = if rng.below(2) == 0 {
                        rng.next()
                    } else {
                        rng.below(1000)
                    };
                    file.write_all_at(&g.to_ne_bytes(), 8).unwrap();
                }
                _ => {
                    let v = rng.next() as u32;
                    file.write_all_at(&v.to_ne_bytes(), 4).unwrap();
                }
            }
        }
        drop(_guard);
        std::thread::sleep(Duration::from_micros(rng.below(1500)));
    }
    say(&format!("stopped actions={actions} locked={locked}"));
}

/// Sends broadcast frames every 200 µs and checks every frame it gets.
/// On `epoch2` it moves to epoch 2 and measures how long until it has an
/// intact epoch-2 frame from every other peer; from that moment no frame
/// may fail its checksum. On `stop` (or stdin EOF) it reports.
fn peer(bus: &Path, who: u8) {
    let ifc = Arc::new(Interface::attach(bus).unwrap());
    let epoch = Arc::new(AtomicU8::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (ifc, epoch, stop, sent) = (ifc.clone(), epoch.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mac = ifc.mac().0;
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) {
                match ifc.send(&frame(mac, who, epoch.load(Ordering::SeqCst), seq)) {
                    Ok(()) => {}
                    // Told to stop between the look above and this send:
                    // the stdin thread sets `stop` before it takes the
                    // interface down.
                    Err(shmif::Error::Down) if stop.load(Ordering::SeqCst) => break,
                    Err(e) => panic!("peer {who}: send: {e}"),
                }
                seq += 1;
                sent.store(seq, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    // When epoch 2 began, and when every other peer's epoch 2 was seen.
    let switched: Arc<Mutex<Option<Instant>>> = Arc::default();
    {
        let (epoch, stop, switched, ifc) =
            (epoch.clone(), stop.clone(), switched.clone(), ifc.clone());
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                match line.as_deref().unwrap_or("stop").trim() {
                    "epoch2" => {
                        *switched.lock().unwrap() = Some(Instant::now());
                        epoch.store(2, Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
            stop.store(true, Ordering::SeqCst);
            ifc.down();
        });
    }
    say("ready");
    let (mut good, mut bad, mut bad_after, mut good_after) = (0u64, 0u64, 0u64, 0u64);
    let mut seen2 = [false; PEERS];
    seen2[who as usize] = true;
    let mut recovered: Option<Duration> = None;
    loop {
        let f = match ifc.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(shmif::Error::Down) if stop.load(Ordering::SeqCst) => break,
            Err(e) => panic!("peer {who}: {e}"),
        };
        match check(&f.data) {
            Some((from, ep)) => {
                good += 1;
                if recovered.is_some() {
                    good_after += 1;
                }
                if ep == 2 && (from as usize) < PEERS && recovered.is_none() {
                    seen2[from as usize] = true;
                    if seen2.iter().all(|&s| s) {
                        // The other peers may switch (and be heard) before
                        // this one has read its own "epoch2" line: then it
                        // recovered at once.
                        let t = switched.lock().unwrap().unwrap_or_else(Instant::now);
                        recovered = Some(t.elapsed());
                    }
                }
            }
            None => {
                bad += 1;
                if recovered.is_some() {
                    bad_after += 1;
                }
            }
        }
    }
    sender.join().unwrap();
    let c = ifc.counters();
    say(&format!(
        "result recovered_ms={} good={good} bad={bad} good_after={good_after} bad_after={bad_after} \
         sent={} repairs={} malformed={} overruns={} takeovers={}",
        recovered.map_or(u64::MAX, |d| d.as_millis() as u64),
        sent.load(Ordering::Relaxed),
        c.ring_repairs,
        c.malformed,
        c.overruns,
        c.lock_takeovers,
    ));
}

#[test]
fn a_hostile_peer_stops_nobody_and_traffic_flows_within_a_second_after_it_stops() {
    let secs: f64 = std::env::var("SHMIF_HOSTILE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let seed = seed();
    eprintln!("hostile: {secs} s, seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.display().to_string();
    drop(Interface::attach(&bus).unwrap());
    let mut peers: Vec<Kid> = (0..PEERS)
        .map(|w| Kid::spawn("heal_child", "peer", &[b.clone(), w.to_string()]))
        .collect();
    for p in &mut peers {
        p.expect("ready");
    }
    let mut hostile = Kid::spawn(
        "heal_child",
        "hostile",
        &[b.clone(), seed.to_string(), secs.to_string()],
    );
    hostile.expect("ready");
    let stopped = hostile.expect("stopped");
    for p in &mut peers {
        writeln!(p.stdin.as_mut().unwrap(), "epoch2").unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    for p in &mut peers {
        writeln!(p.stdin.as_mut().unwrap(), "stop").unwrap();
    }
    eprintln!("hostile: {stopped}");
    let mut repairs = 0;
    for (i, p) in peers.iter_mut().enumerate() {
        let res = p.expect("result");
        eprintln!("peer {i}: {res}");
        let status = p.child.wait().unwrap();
        assert!(status.success(), "peer {i} did not stay up: {status}");
        assert!(
            field(&res, "recovered_ms") <= 1000,
            "peer {i}: no traffic from everyone within 1 s of the garbage stopping: {res}"
        );
        assert_eq!(field(&res, "bad_after"), 0, "peer {i}: {res}");
        assert!(field(&res, "good_after") > 100, "peer {i}: {res}");
        repairs += field(&res, "repairs");
    }
    assert!(
        repairs > 0,
        "the garbage never needed a repair: the test tested nothing"
    );
}

fn poke(bus: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(bus).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn bcast(src: shmif::MacAddr, tag: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5, tag]);
    f.resize(60, tag);
    f
}

/// Smashes the header's control words (and sometimes ring bytes) the way
/// `k` says: out of range, `first == last`, impossible lengths, random.
fn smash(bus: &Path, rng: &mut Rng, k: u64) {
    let size = u64::from(DATA_SIZE);
    let (first, last) = match k % 5 {
        0 => (rng.next() as u32 | 0x8000_0000, rng.below(size) as u32),
        1 => (rng.below(size) as u32, rng.next() as u32 | 0x8000_0000),
        2 => {
            let x = rng.below(size) as u32;
            (x, x)
        }
        // (`last` leaves room for the length poked there below.)
        _ => (rng.below(size + 1) as u32, rng.below(size - 4) as u32),
    };
    poke(bus, 8, &rng.next().to_ne_bytes());
    poke(bus, 16, &first.to_ne_bytes());
    poke(bus, 20, &last.to_ne_bytes());
    poke(bus, 4, &(rng.next() as u32).to_ne_bytes());
    poke(bus, 28, &(rng.next() as u32).to_ne_bytes());
    if k % 5 >= 3 {
        // An impossible length at `last`, or random bytes all over.
        let garbage: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        poke(
            bus,
            BUS_HEADER_LEN as u64 + u64::from(last.min(DATA_SIZE - 4096)),
            &garbage,
        );
        poke(
            bus,
            BUS_HEADER_LEN as u64 + u64::from(last),
            &u32::MAX.to_ne_bytes(),
        );
    }
}

#[test]
fn a_bus_whose_header_was_smashed_while_nobody_was_attached_is_repaired_by_the_next_attach() {
    let seed = seed();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    for k in 0..40u64 {
        {
            let a = Interface::attach(&bus).unwrap();
            for t in 0..50 {
                a.send(&bcast(a.mac(), t)).unwrap();
            }
        }
        smash(&bus, &mut rng, k);
        let a = Interface::attach(&bus).unwrap();
        let b = Interface::attach(&bus).unwrap();
        assert!(
            a.counters().ring_repairs + b.counters().ring_repairs >= 1,
            "round {k} (seed {seed}): attach did not repair"
        );
        a.send(&bcast(a.mac(), 7)).unwrap();
        let got = b.recv_timeout(Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(got.data, bcast(a.mac(), 7), "round {k} (seed {seed})");
        assert_eq!(
            b.counters().ring_repairs,
            0,
            "round {k}: repaired once only"
        );
    }
}

#[test]
fn a_writer_repairs_a_ring_smashed_under_it_and_readers_resync() {
    let seed = seed();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = Interface::attach(&bus).unwrap();
    let b = Interface::attach(&bus).unwrap();
    b.set_spin(Duration::from_millis(1));
    let mut repairs = 0;
    for k in 0..40u64 {
        for t in 0..(rng.below(30) as u8) {
            a.send(&bcast(a.mac(), t)).unwrap();
        }
        smash(&bus, &mut rng, k);
        // The reader meets the garbage first: no error, at most frames it
        // cannot tell from real ones.
        for _ in 0..100 {
            if b.try_recv().unwrap().is_none() {
                break;
            }
        }
        let before = a.counters().ring_repairs;
        a.send(&bcast(a.mac(), 200)).unwrap();
        repairs += a.counters().ring_repairs - before;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let f = b
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap()
                .unwrap_or_else(|| panic!("round {k} (seed {seed}): the new frame never came"));
            if f.data == bcast(a.mac(), 200) {
                break;
            }
        }
    }
    assert!(
        repairs >= 16,
        "only {repairs} of 40 smashes repaired (seed {seed})"
    );
}
