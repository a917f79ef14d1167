//! The ring against reference models.
//!
//! 1. `append` against a literal port of NetBSD's `shmif_buswrite` (which
//!    interleaves eviction and copying): identical bytes and header fields.
//! 2. Writers and readers at random lags against a model of what was sent:
//!    a reader gets exactly the next frame, or reports an overrun whose
//!    byte count matches exactly the frames it skipped; never a corrupted,
//!    misaligned, duplicated or reordered frame.

use proptest::prelude::*;
use shmif::ring::{self, Control, Geometry, Overrun, Reader, Resync, Step};
use shmif::wire::{FrameHeaderRepr, DATA_SIZE, FRAME_HEADER_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN};

/// A small deterministic generator, so each case replays from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A frame length from 14 to 1514, kept below half the ring as NetBSD's
    /// `shmif_buswrite` requires (`KASSERT(len < DATASIZE/2)`); on a smaller
    /// ring its own eviction walk reads frames it has just overwritten.
    fn frame_len(&mut self, ring: usize) -> usize {
        let max = MAX_FRAME_LEN.min(ring / 2 - FRAME_HEADER_LEN - 1);
        MIN_FRAME_LEN + self.below((max - MIN_FRAME_LEN + 1) as u64) as usize
    }
}

mod netbsd {
    //! A literal port of `shmif_busops.c` (v3) and `shmif_start`, for
    //! comparison only.
    use super::*;

    pub fn busread(mem: &[u8], off: u32, dest: &mut [u8], wrap: &mut bool) -> u32 {
        let size = mem.len() as u32;
        let len = dest.len() as u32;
        let chunk = len.min(size - off);
        dest[..chunk as usize].copy_from_slice(&mem[off as usize..(off + chunk) as usize]);
        let rest = len - chunk;
        if off + chunk == size {
            *wrap = true;
        }
        if rest == 0 {
            return (off + chunk) % size;
        }
        dest[chunk as usize..].copy_from_slice(&mem[..rest as usize]);
        rest
    }

    pub fn nextpktoff(mem: &[u8], off: u32) -> u32 {
        let mut h = [0u8; FRAME_HEADER_LEN];
        let mut w = false;
        busread(mem, off, &mut h, &mut w);
        let len = u32::from_ne_bytes(h[0..4].try_into().unwrap());
        assert!(
            len as usize <= MAX_FRAME_LEN,
            "NetBSD itself read length {len} at {off}"
        );
        let n = off + FRAME_HEADER_LEN as u32 + len;
        if n >= mem.len() as u32 {
            n - mem.len() as u32
        } else {
            n
        }
    }

    fn advancefirst(mem: &[u8], first: &mut u32, off: u32, len: u32) {
        while off <= *first + FRAME_HEADER_LEN as u32 && off + len > *first {
            *first = nextpktoff(mem, *first);
        }
    }

    fn buswrite(mem: &mut [u8], first: &mut u32, off: u32, data: &[u8], wrap: &mut bool) -> u32 {
        let size = mem.len() as u32;
        let len = data.len() as u32;
        let chunk = len.min(size - off);
        let rest = len - chunk;
        let filled = off + chunk == size;
        advancefirst(mem, first, off, chunk + u32::from(filled));
        mem[off as usize..(off + chunk) as usize].copy_from_slice(&data[..chunk as usize]);
        if filled {
            *wrap = true;
        }
        if rest == 0 {
            return (off + chunk) % size;
        }
        advancefirst(mem, first, 0, rest);
        mem[..rest as usize].copy_from_slice(&data[chunk as usize..]);
        rest
    }

    pub fn send(mem: &mut [u8], ctl: &mut Control, h: &FrameHeaderRepr, payload: &[u8]) {
        ctl.last = nextpktoff(mem, ctl.last);
        let mut wrap = false;
        let off = buswrite(mem, &mut ctl.first, ctl.last, &h.to_bytes(), &mut wrap);
        buswrite(mem, &mut ctl.first, off, payload, &mut wrap);
        if wrap {
            ctl.gen += 1;
        }
    }
}

fn frame_for(id: u64, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..14].copy_from_slice(&id.to_be_bytes());
    for (i, b) in f.iter_mut().enumerate().skip(14) {
        *b = (id as usize).wrapping_mul(31).wrapping_add(i * 7) as u8;
    }
    f
}

fn header(len: usize, id: u64) -> FrameHeaderRepr {
    FrameHeaderRepr {
        len: len as u32,
        sec: id as u32,
        usec: 0,
        sender: id,
    }
}

fn check_append_matches_netbsd(size: usize, seed: u64, frames: usize) {
    let mut rng = Rng(seed | 1);
    let mut ours = vec![0u8; size];
    let mut theirs = vec![0u8; size];
    let g = Geometry::with_size(size as u32).unwrap();
    let mut c1 = Control::fresh(g);
    let mut c2 = c1;
    for id in 0..frames as u64 {
        let len = rng.frame_len(size);
        let f = frame_for(id, len);
        let h = header(len, id);
        netbsd::send(&mut theirs, &mut c2, &h, &f);
        let a = ring::append(g, &mut ours[..], &mut c1, &h, &f).expect("append");
        assert_eq!(
            c1, c2,
            "control differs after frame {id} (size {size}, seed {seed})"
        );
        assert_eq!(a.at, c1.last);
        assert!(
            ours == theirs,
            "ring bytes differ after frame {id} (size {size}, seed {seed})"
        );
    }
}

#[test]
fn append_matches_netbsd_on_a_full_size_ring() {
    // ~5 laps of a real 1 MiB ring.
    check_append_matches_netbsd(DATA_SIZE as usize, 42, 7_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn append_matches_netbsd_on_small_rings(seed in any::<u64>(), size in prop::sample::select(vec![2000usize, 3000, 4096, 8191])) {
        check_append_matches_netbsd(size, seed, 400);
    }
}

/// What the model knows about each frame sent.
struct Sent {
    len: usize,
}

struct SimReader {
    r: Reader,
    /// Id of the next frame this reader must get if nothing is lost.
    expect: u64,
    got: u64,
    lost: u64,
    overruns: u64,
    /// Frames dropped by [`Resync::OldestThenNewest`] after an overrun.
    skipped: u64,
}

/// Checks one delivered frame against the model and moves the reader's
/// expectations on.
fn take(
    sr: &mut SimReader,
    h: FrameHeaderRepr,
    overrun: Option<Overrun>,
    data: &[u8],
    sent: &[Sent],
    ctx: &str,
) {
    let id = h.sender;
    assert!(
        id < sent.len() as u64,
        "frame id {id} was never sent ({ctx})"
    );
    assert_eq!(
        data,
        &frame_for(id, sent[id as usize].len)[..],
        "corrupt frame {id} ({ctx})"
    );
    match overrun {
        None => assert_eq!(id, sr.expect, "frame out of order without overrun ({ctx})"),
        Some(o) => {
            assert!(
                id > sr.expect,
                "overrun delivered an old or duplicate frame {id} < {} ({ctx})",
                sr.expect
            );
            if let Some(bytes) = o.bytes_lost {
                let want: u64 = (sr.expect..id)
                    .map(|k| (FRAME_HEADER_LEN + sent[k as usize].len) as u64)
                    .sum();
                assert_eq!(bytes, want, "overrun byte count ({ctx})");
            }
            sr.lost += id - sr.expect;
            sr.overruns += 1;
        }
    }
    sr.expect = id + 1;
    sr.got += 1;
    let skipped = overrun.map_or(0, |o| o.skipped);
    if skipped > 0 {
        assert_eq!(sr.r.resync, Resync::OldestThenNewest, "{ctx}");
        // The skip drops whole frames, to the byte, up to the newest one.
        let mut left = skipped;
        while left > 0 {
            let k = sr.expect as usize;
            assert!(k < sent.len(), "skipped past the newest frame ({ctx})");
            let n = (FRAME_HEADER_LEN + sent[k].len) as u64;
            assert!(n <= left, "skip ends inside frame {k} ({ctx})");
            left -= n;
            sr.expect += 1;
            sr.lost += 1;
            sr.skipped += 1;
        }
        assert_eq!(
            sr.expect,
            sent.len() as u64 - 1,
            "the skip lands on the newest frame ({ctx})"
        );
    }
}

/// Runs writers and readers at random lags; returns (frames delivered,
/// overruns, frames skipped) over all readers.
fn simulate(
    size: usize,
    seed: u64,
    steps: usize,
    readers: usize,
    resync: Resync,
) -> (u64, u64, u64) {
    let g = Geometry::with_size(size as u32).unwrap();
    let ctx = format!("size {size}, seed {seed}, {resync:?}");
    let mut rng = Rng(seed | 1);
    let mut mem = vec![0u8; size];
    let mut ctl = Control::fresh(g);
    let mut sent: Vec<Sent> = Vec::new();
    let mut rs: Vec<SimReader> = (0..readers)
        .map(|_| SimReader {
            r: Reader::at_end(g, &mem[..], &ctl)
                .unwrap()
                .with_resync(resync),
            expect: 0,
            got: 0,
            lost: 0,
            overruns: 0,
            skipped: 0,
        })
        .collect();
    let mut buf = [0u8; MAX_FRAME_LEN];
    for _ in 0..steps {
        if rng.below(2) == 0 {
            for _ in 0..=rng.below(3) {
                let id = sent.len() as u64;
                let len = rng.frame_len(size);
                ring::append(
                    g,
                    &mut mem[..],
                    &mut ctl,
                    &header(len, id),
                    &frame_for(id, len),
                )
                .expect("append");
                sent.push(Sent { len });
            }
        } else {
            let i = rng.below(readers as u64) as usize;
            // Readers at different paces: reader 0 is fast, the last slowest.
            let budget = 1 + rng.below(8 / (i as u64 + 1) + 1);
            let sr = &mut rs[i];
            for _ in 0..budget {
                match sr.r.step(g, &mem[..], &ctl, &mut buf) {
                    Step::Empty => {
                        assert_eq!(
                            sr.expect,
                            sent.len() as u64,
                            "reader says empty but frames are pending"
                        );
                        break;
                    }
                    Step::Frame { header: h, overrun } => {
                        if h.len == 0 {
                            continue; // the fresh ring's placeholder
                        }
                        take(sr, h, overrun, &buf[..h.len as usize], &sent, &ctx);
                    }
                    s => panic!("valid ring: {s:?} ({ctx})"),
                }
            }
        }
    }
    // Drain: the fastest possible catch-up must end exactly at the last frame.
    for sr in &mut rs {
        loop {
            match sr.r.step(g, &mem[..], &ctl, &mut buf) {
                Step::Empty => break,
                Step::Frame { header: h, overrun } => {
                    if h.len == 0 {
                        continue;
                    }
                    take(sr, h, overrun, &buf[..h.len as usize], &sent, &ctx);
                }
                s => panic!("{s:?} ({ctx})"),
            }
        }
        assert_eq!(
            sr.expect,
            sent.len() as u64,
            "reader did not catch up to the end"
        );
        assert_eq!(
            sr.got + sr.lost,
            sent.len() as u64,
            "every frame is delivered or counted lost"
        );
    }
    (
        rs.iter().map(|r| r.got).sum(),
        rs.iter().map(|r| r.overruns).sum(),
        rs.iter().map(|r| r.skipped).sum(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn readers_at_random_lags_get_model_frames_or_overruns(
        seed in any::<u64>(),
        size in prop::sample::select(vec![2000usize, 4096, 9000]),
        readers in 1usize..4,
    ) {
        simulate(size, seed, 4_000, readers, Resync::Oldest);
    }

    #[test]
    fn readers_that_skip_to_the_newest_after_an_overrun_drop_exactly_the_backlog(
        seed in any::<u64>(),
        size in prop::sample::select(vec![2000usize, 4096, 9000]),
        readers in 1usize..4,
    ) {
        simulate(size, seed, 4_000, readers, Resync::OldestThenNewest);
    }
}

#[test]
fn long_runs_wrap_many_times_and_do_overrun() {
    for resync in [Resync::Oldest, Resync::OldestThenNewest] {
        let (mut total_overruns, mut total_skipped) = (0, 0);
        for seed in 1..=20u64 {
            let (got, overruns, skipped) = simulate(4096, seed * 7919, 20_000, 2, resync);
            assert!(got > 1000, "seed {seed}: only {got} frames delivered");
            total_overruns += overruns;
            total_skipped += skipped;
        }
        // The test is meaningless if the lagging readers are never overrun.
        assert!(
            total_overruns > 100,
            "only {total_overruns} overruns: the slow path went untested ({resync:?})"
        );
        if resync == Resync::OldestThenNewest {
            assert!(total_skipped > 100, "only {total_skipped} frames skipped");
        } else {
            assert_eq!(total_skipped, 0);
        }
    }
}

#[test]
fn full_size_ring_with_lagging_readers() {
    for resync in [Resync::Oldest, Resync::OldestThenNewest] {
        let (got, overruns, _) = simulate(DATA_SIZE as usize, 99, 30_000, 3, resync);
        assert!(got > 10_000);
        assert!(overruns > 0, "the slowest reader should be lapped");
    }
}

/// NetBSD's own resync rule (`devgen = gen - 1` iff `first > last`) goes
/// wrong when the newest frame wraps; ours must not. This replays the
/// situation directly.
#[test]
fn resync_when_newest_frame_wraps_does_not_redeliver() {
    let size = 4096usize;
    let g = Geometry::with_size(size as u32).unwrap();
    let mut mem = vec![0u8; size];
    let mut ctl = Control::fresh(g);
    let mut reader = Reader::at_end(g, &mem[..], &ctl).unwrap();
    let mut id = 0u64;
    // Fill until the newest frame itself wraps past the end.
    loop {
        let len = 600;
        let a = ring::append(
            g,
            &mut mem[..],
            &mut ctl,
            &header(len, id),
            &frame_for(id, len),
        )
        .unwrap();
        id += 1;
        if a.wrapped && ctl.last > size as u32 - 600 && id > 12 {
            break;
        }
        assert!(id < 1000, "never reached a wrapping newest frame");
    }
    assert!(
        ctl.first < ctl.last,
        "the case NetBSD misjudges: first < last with last wrapping"
    );
    let mut buf = [0u8; MAX_FRAME_LEN];
    let mut seen = Vec::new();
    for _ in 0..50 {
        match reader.step(g, &mem[..], &ctl, &mut buf) {
            Step::Frame { header: h, .. } if h.len > 0 => seen.push(h.sender),
            Step::Frame { .. } => {}
            Step::Empty => break,
            s => panic!("{s:?}"),
        }
    }
    assert!(!seen.is_empty());
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted, seen, "no frame delivered twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    assert_eq!(
        *seen.last().unwrap(),
        id - 1,
        "caught up to the newest frame"
    );
}

/// 3. The mapped ring of a real bus file reads a header in one piece
///    (`Region::read_header`, a fixed-size copy) exactly as its general
///    read does, on both formats, up to the last header that fits.
#[test]
fn a_mapped_ring_reads_a_header_in_one_piece_as_its_general_read() {
    use shmif::lowlevel::RawBus;
    use shmif::ring::Region;
    use shmif::{Bus, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let v3 = Bus::open(dir.path().join("v3"), &OpenOptions::new()).unwrap();
    let ext = Bus::create(dir.path().join("ext"), 2 << 20, 9000, &OpenOptions::new()).unwrap();
    for bus in [&v3, &ext] {
        let size = bus.geometry().size;
        let g = bus.lock();
        let mut data = g.data();
        let pattern: Vec<u8> = (0..size)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
            .collect();
        data.write(0, &pattern);
        let mut rng = Rng(0x5eed);
        let mut offs: Vec<u32> = vec![0, 1, size - 25, size - FRAME_HEADER_LEN as u32];
        offs.extend((0..200).map(|_| rng.below(u64::from(size) - 23) as u32));
        for off in offs {
            let mut want = [0u8; FRAME_HEADER_LEN];
            data.read(off, &mut want);
            assert_eq!(
                &want[..],
                &pattern[off as usize..off as usize + FRAME_HEADER_LEN]
            );
            assert_eq!(data.read_header(off), want, "at {off} of {size}");
        }
    }
}
