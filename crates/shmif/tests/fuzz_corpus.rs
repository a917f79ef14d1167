//! Replays the fuzz targets' seed corpus through the same harnesses as
//! plain tests, so that they run even where cargo-fuzz (nightly) is not
//! installed: every NetBSD fixture and its damaged variants through the
//! bus-image harness, the ring seeds through the ring harness.

use std::io::Read;
use std::path::Path;

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
