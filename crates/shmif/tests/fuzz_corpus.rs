//! Replays the fuzz targets' seed corpus through the same harnesses as
//! plain tests, so that they run even where cargo-fuzz (nightly) is not
//! installed: every NetBSD fixture and its damaged variants through the
//! bus-image harness, the ring seeds through the ring harness, and the
//! extended-bus seeds (and freshly made extended buses) and their damaged
//! variants through the extended-image harness.
//!
//! The extended-bus seeds in `fuzz/seeds/ext_image/` are made by the
//! library itself: `cargo test -p shmif --test fuzz_corpus --
//! --ignored write_ext_image_seeds` writes them again.

use shmif::wire::ext::{field, slot, ExtHeader, ExtHeaderRepr, SlotFlags, EXT_HEADER_LEN};
use shmif::{Bus, Interface, MacAddr, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root().join("tests/fixtures")).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".bus.gz") {
            let mut bytes = Vec::new();
            flate2::read::GzDecoder::new(std::fs::File::open(&p).unwrap())
                .read_to_end(&mut bytes)
                .unwrap();
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), bytes));
        }
    }
    assert!(out.len() >= 5, "the NetBSD fixtures are missing");
    out
}

#[test]
fn bus_image_harness_on_fixtures_and_damaged_fixtures() {
    for (name, bus) in fixtures() {
        shmif::fuzzing::bus_image(&bus);
        // Deterministic damage: smash words all over the header and ring.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..200 {
            let mut b = bus.clone();
            for _ in 0..(1 + round % 8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = (x as usize) % (b.len() - 4);
                let off = if round % 3 == 0 { off % 64 } else { off };
                b[off..off + 4].copy_from_slice(&(x >> 32).to_le_bytes()[..4]);
            }
            shmif::fuzzing::bus_image(&b);
        }
        eprintln!("{name}: ok");
    }
    // Truncated and oversized images.
    shmif::fuzzing::bus_image(&[]);
    shmif::fuzzing::bus_image(&[0x54, 0xd0, 0x11, 0xca]);
}

/// Inputs the fuzzers once crashed on, kept so they stay fixed.
#[test]
fn regressions_found_by_fuzzing() {
    for (target, harness) in [
        ("ring", shmif::fuzzing::ring_ops as fn(&[u8])),
        ("bus_image", shmif::fuzzing::bus_image),
        ("ext_image", shmif::fuzzing::ext_image),
    ] {
        let dir = root().join("fuzz/regressions").join(target);
        for e in std::fs::read_dir(&dir).into_iter().flatten() {
            let p = e.unwrap().path();
            eprintln!("replaying {}", p.display());
            harness(&std::fs::read(&p).unwrap());
        }
    }
}

#[test]
fn ring_harness_on_seeds() {
    let dir = root().join("fuzz/seeds/ring");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let seed = std::fs::read(e.unwrap().path()).unwrap();
        shmif::fuzzing::ring_ops(&seed);
        // And every prefix and a few bit flips of it.
        for cut in (0..seed.len()).step_by(37) {
            shmif::fuzzing::ring_ops(&seed[..cut]);
        }
        for bit in (0..seed.len() * 8).step_by(53) {
            let mut s = seed.clone();
            s[bit / 8] ^= 1 << (bit % 8);
            shmif::fuzzing::ring_ops(&s);
        }
        n += 1;
    }
    assert!(n > 0, "no ring seeds in {}", dir.display());
}

const MIB: u64 = 1 << 20;

fn ext_seed_dir() -> PathBuf {
    root().join("fuzz/seeds/ext_image")
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A frame of `len` bytes from `src` with a counter pattern after the
/// Ethernet header (compresses well: the seeds are stored gzipped).
fn frame(src: MacAddr, tag: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&tag.to_le_bytes());
    f.resize(len.max(18), (tag % 251) as u8);
    f.truncate(len);
    f
}

/// A bus file's bytes: the header and the ring up to `ring_len` bytes
/// (the whole file if it is shorter).
fn image_of(path: &Path, ring_len: usize) -> Vec<u8> {
    let mut b = std::fs::read(path).unwrap();
    b.truncate(EXT_HEADER_LEN.saturating_add(ring_len));
    b
}

fn poke(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

/// Extended buses made by the library, as seeds: `valid-*` have headers
/// that validate (some over a damaged ring), `bad-*` are mutations whose
/// headers must be refused. Header-only seeds and cut rings are padded by the harness.
fn make_ext_seeds() -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let bus = |name: &str, size: u64, max: u32| {
        let p = dir.path().join(name);
        Bus::create(&p, size, max, &OpenOptions::new()).unwrap();
        p
    };

    // A fresh bus: the header alone.
    let p = bus("fresh", MIB, 65_549);
    out.push(("valid-fresh-1m-65549".into(), image_of(&p, 0)));

    // Frames of every size, and a registered reader part of the way.
    let p = bus("frames", MIB, 9000);
    let a = Interface::attach(&p).unwrap();
    let b = Interface::attach(&p).unwrap();
    assert!(b.try_recv().unwrap().is_none());
    assert!(b.is_registered());
    for tag in 0..30u32 {
        a.send(&frame(a.mac(), tag, 14 + (tag as usize * 331) % 8987))
            .unwrap();
        if tag < 10 {
            assert!(b.try_recv().unwrap().is_some());
        }
    }
    let frames = image_of(&p, 160 << 10);
    out.push(("valid-frames-1m-9000".into(), frames.clone()));

    // Three laps of a 1 MiB ring of 1514-byte frames, a reader keeping up.
    let p = bus("laps", MIB, 1514);
    let a = Interface::attach(&p).unwrap();
    let b = Interface::attach(&p).unwrap();
    assert!(b.try_recv().unwrap().is_none());
    for tag in 0..4000u32 {
        a.send(&frame(a.mac(), tag, 60 + (tag as usize * 97) % 1455))
            .unwrap();
        while b.try_recv().unwrap().is_some() {}
    }
    assert_eq!(b.counters().overruns, 0);
    out.push(("valid-laps-1m-1514".into(), image_of(&p, usize::MAX)));

    // Jumbo frames wrapping the end of the ring, a lossy reader behind.
    let p = bus("jumbo", MIB, 65_549);
    let a = Interface::attach(&p).unwrap();
    let b = Interface::attach(&p).unwrap();
    b.set_lossy(true);
    assert!(b.try_recv().unwrap().is_none());
    for tag in 0..23u32 {
        a.send(&frame(a.mac(), tag, 65_549 - tag as usize * 7))
            .unwrap();
    }
    out.push(("valid-jumbo-1m-65549".into(), image_of(&p, usize::MAX)));

    // Larger rings, cut: padded to 2 MiB, and walked over the bytes given.
    for (name, size) in [("valid-2m-cut", 2 * MIB), ("valid-64m-cut", 64 * MIB)] {
        let p = bus(name, size, 9000);
        let a = Interface::attach(&p).unwrap();
        for tag in 0..12u32 {
            a.send(&frame(a.mac(), tag, 100 + tag as usize * 700))
                .unwrap();
        }
        out.push((name.into(), image_of(&p, 96 << 10)));
    }

    // A ring repaired on attach (a frame length over the limit at `last`).
    let p = bus("repaired", MIB, 9000);
    let a = Interface::attach(&p).unwrap();
    a.send(&frame(a.mac(), 1, 3000)).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    let img = std::fs::read(&p).unwrap();
    let last = u32::from_ne_bytes(img[20..24].try_into().unwrap()) as u64;
    f.write_all_at(&70_000u32.to_ne_bytes(), EXT_HEADER_LEN as u64 + last)
        .unwrap();
    let c = Interface::attach(&p).unwrap();
    assert_eq!(c.counters().ring_repairs, 1);
    c.send(&frame(c.mac(), 2, 500)).unwrap();
    out.push(("valid-repaired-1m-9000".into(), image_of(&p, 16 << 10)));

    // Mutations of the frames seed: values a hostile peer could write.
    let m = |name: &str, edits: &[(usize, &[u8])]| {
        let mut b = frames.clone();
        for (off, v) in edits {
            poke(&mut b, *off, v);
        }
        (name.to_string(), b)
    };
    let slot0 = shmif::wire::ext::READER_TABLE;
    let stalled = (SlotFlags::ACTIVE | SlotFlags::STALLED).to_ne_bytes();
    let last = u32::from_ne_bytes(frames[20..24].try_into().unwrap()) as usize;
    out.extend([
        m(
            "valid-gen-max",
            &[(field::GEN, &(u64::MAX - 1).to_ne_bytes())],
        ),
        m(
            "valid-slot-far-ahead",
            &[
                (slot0 + slot::POSITION, &u64::MAX.to_ne_bytes()),
                (slot0 + slot::FLAGS, &stalled),
                (slot0 + 64 + slot::OWNER, &7u32.to_ne_bytes()),
                (slot0 + 64 + slot::POSITION, &(MIB * 3 + 5).to_ne_bytes()),
            ],
        ),
        m("valid-first-is-last", &[(field::FIRST, &frames[20..24])]),
        m(
            "valid-newest-frame-too-long",
            &[(EXT_HEADER_LEN + last, &9001u32.to_ne_bytes())],
        ),
        m(
            "valid-oldest-frame-too-long",
            &[(EXT_HEADER_LEN, &(MIB as u32).to_ne_bytes())],
        ),
        m(
            "bad-max-frame",
            &[(field::MAX_FRAME, &70_000u32.to_ne_bytes())],
        ),
        m(
            "bad-ring-size",
            &[(field::RING_SIZE, &12_345u32.to_ne_bytes())],
        ),
        m("bad-last", &[(field::LAST, &u32::MAX.to_ne_bytes())]),
        m(
            "bad-v3-magic",
            &[(field::MAGIC, &shmif::wire::MAGIC.to_ne_bytes())],
        ),
    ]);
    out
}

#[test]
#[ignore = "writes fuzz/seeds/ext_image/ again; run by hand"]
fn write_ext_image_seeds() {
    let dir = ext_seed_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in make_ext_seeds() {
        let f = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
        let mut z = flate2::write::GzEncoder::new(f, flate2::Compression::best());
        z.write_all(&bytes).unwrap();
        z.finish().unwrap();
    }
}

/// Runs the extended-image harness on a seed, its prefixes, bits of its
/// header flipped, and words smashed all over it.
fn ext_image_and_damage(seed: &[u8]) {
    shmif::fuzzing::ext_image(seed);
    for cut in [
        0, 3, 4, 31, 32, 255, 256, 4095, 4096, 4159, 4160, 8191, 8192, 8216,
    ] {
        shmif::fuzzing::ext_image(&seed[..cut.min(seed.len())]);
    }
    shmif::fuzzing::ext_image(&seed[..seed.len() / 2]);
    // Every third bit of the header's fields (bytes 0..72), a bit of each
    // byte of the rest of page 0's first 256 bytes (reserved, futex words).
    for bit in (0..72 * 8)
        .step_by(3)
        .chain((72..256).map(|b| b * 8 + b % 8))
    {
        let mut s = seed.to_vec();
        if bit / 8 < s.len() {
            s[bit / 8] ^= 1 << (bit % 8);
        }
        shmif::fuzzing::ext_image(&s);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..64 {
        let mut b = seed.to_vec();
        for _ in 0..(1 + round % 6) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // The header, the reader table, the ring's first frames, anywhere.
            let span = match round % 4 {
                0 => 256,
                1 => EXT_HEADER_LEN,
                2 => EXT_HEADER_LEN + 4096,
                _ => b.len(),
            };
            let off = (x as usize) % (span.min(b.len()) - 4);
            b[off..off + 4].copy_from_slice(&(x >> 32).to_ne_bytes()[..4]);
        }
        shmif::fuzzing::ext_image(&b);
    }
}

fn is_valid_ext(b: &[u8]) -> bool {
    ExtHeader::new_checked(b)
        .ok()
        .is_some_and(|h| ExtHeaderRepr::parse(&h, None).is_ok())
}

#[test]
fn ext_image_harness_on_seeds_and_fresh_buses() {
    let mut n = 0;
    for e in std::fs::read_dir(ext_seed_dir()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let seed = gunzip(&std::fs::read(&p).unwrap());
        // A seed named valid is one: the format has not drifted from it.
        assert_eq!(is_valid_ext(&seed), name.starts_with("valid-"), "{name}");
        if name.starts_with("valid-laps") || name.starts_with("valid-jumbo") {
            // Whole images full of frames: the harness walks real traffic.
            let d = shmif::dump::Dump::parse(&seed).unwrap();
            let frames = d.frames().filter(|f| f.is_ok()).count();
            assert!(frames >= 15, "{name}: {frames} frames");
        }
        ext_image_and_damage(&seed);
        n += 1;
    }
    assert!(n >= 10, "only {n} extended-bus seeds");
    // The same kinds of bus, made by this build of the library.
    for (name, seed) in make_ext_seeds() {
        assert_eq!(is_valid_ext(&seed), name.starts_with("valid-"), "{name}");
        shmif::fuzzing::ext_image(&seed);
    }
}
