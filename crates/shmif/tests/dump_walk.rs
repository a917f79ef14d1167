//! The dump walk over real NetBSD buses, intact and damaged.

use shmif::dump::Dump;
use shmif::wire::BUS_HEADER_LEN;
use std::io::Read;

fn fixture(name: &str) -> Vec<u8> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/").to_string() + name;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn every_fixture_walks_to_last_without_error() {
    for name in [
        "ping-fresh",
        "tcp-wrapped",
        "udp-sizes",
        "v2-ping",
        "bigendian-ping",
    ] {
        let bus = fixture(&format!("{name}.bus.gz"));
        let d = Dump::parse(&bus).unwrap();
        let frames: Result<Vec<_>, _> = d.frames().collect();
        let frames = frames.unwrap_or_else(|e| panic!("{name}: {e}"));
        let txt = std::fs::read_to_string(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/").to_string()
                + name
                + ".txt",
        )
        .unwrap();
        assert_eq!(frames.len(), txt.lines().count() - 1, "{name}");
    }
}

#[test]
fn a_length_damaged_into_another_plausible_value_is_reported() {
    let mut bus = fixture("ping-fresh.bus.gz");
    // The third frame's header: change its length 42 -> 40.
    let d = Dump::parse(&bus).unwrap();
    let third = d.frames().nth(2).unwrap().unwrap();
    let hdr = BUS_HEADER_LEN + third.offset as usize - 24;
    assert_eq!(&bus[hdr..hdr + 4], &42u32.to_ne_bytes());
    bus[hdr..hdr + 4].copy_from_slice(&40u32.to_ne_bytes());
    let d = Dump::parse(&bus).unwrap();
    let results: Vec<_> = d.frames().collect();
    assert!(
        results.last().unwrap().is_err(),
        "the walk must not end quietly off `last`"
    );
}
