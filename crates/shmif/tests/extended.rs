//! The extended bus (`EXTENDED-FORMAT.md`): creation, attaching with the
//! header's geometry, jumbo frames, laps of a large ring, and refusal of
//! bad headers.

use shmif::dump::Dump;
use shmif::wire::ext::{field, EXT_HEADER_LEN, EXT_MAGIC};
use shmif::{Bus, Error, Interface, MacAddr, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn frame(dst: MacAddr, src: MacAddr, tag: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&tag.to_le_bytes());
    let mut x = tag.wrapping_mul(2_654_435_761);
    while f.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        f.push(x as u8);
    }
    f.truncate(len);
    f
}

/// A fresh extended bus and two interfaces on it, `a` (to write) and `b`
/// (to read); `dir` keeps the bus's directory while the test runs.
struct Pair {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    a: Interface,
    b: Interface,
}

/// An extended bus of `size` bytes carrying frames of up to `max_frame`,
/// with two interfaces attached.
fn pair(size: u64, max_frame: u32) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    Bus::create(&path, size, max_frame, &OpenOptions::new()).unwrap();
    let a = Interface::attach(&path).unwrap();
    let b = Interface::attach(&path).unwrap();
    Pair { dir, path, a, b }
}

#[test]
fn create_makes_an_extended_bus_whose_geometry_attach_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    let bus = Bus::create(&path, 4 * MIB, 65_549, &OpenOptions::new()).unwrap();
    assert!(bus.is_extended());
    assert_eq!(bus.geometry().size as u64, 4 * MIB - EXT_HEADER_LEN as u64);
    assert_eq!(bus.geometry().max_frame(), 65_549);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, 4 * MIB);
    assert_eq!(bytes[0..4], EXT_MAGIC.to_ne_bytes());
    assert_ne!(
        bytes[0..4],
        shmif::wire::MAGIC.to_ne_bytes(),
        "NetBSD: not magical"
    );
    // Nothing else is left in the directory (the temporary name is gone).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let again = Bus::open(&path, &OpenOptions::new()).unwrap();
    assert_eq!(again.geometry(), bus.geometry());
    let i = Interface::attach(&path).unwrap();
    assert!(i.is_extended());
    assert_eq!(i.max_frame_len(), 65_549);
}

#[test]
fn create_refuses_an_existing_path_and_bad_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    std::fs::write(&path, b"precious").unwrap();
    let err = Bus::create(&path, 4 * MIB, 9000, &OpenOptions::new()).unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    let fresh = dir.path().join("fresh");
    for (size, max) in [
        (MIB / 2, 1514),
        (2 << 30, 1514),
        (MIB + 1, 1514),
        (MIB, 65_550),
        (MIB, 10),
    ] {
        let err = Bus::create(&fresh, size, max, &OpenOptions::new()).unwrap_err();
        assert!(matches!(err, Error::BadShape { .. }), "{size} {max}: {err}");
        assert!(!fresh.exists());
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn jumbo_frames_cross_and_a_v3_bus_still_refuses_them() {
    let Pair { dir, path: _, a, b } = pair(8 * MIB, 65_549);
    for (tag, len) in [(1, 14), (2, 1514), (3, 9014), (4, 65_549)] {
        let f = frame(b.mac(), a.mac(), tag, len);
        a.send(&f).unwrap();
        let got = b.recv_timeout(Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(got.data, f, "frame of {len}");
    }
    let err = a.send(&frame(b.mac(), a.mac(), 5, 65_550)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FrameSize {
                len: 65_550,
                max: 65_549
            }
        ),
        "{err}"
    );
    let v3 = Interface::attach(dir.path().join("v3")).unwrap();
    assert_eq!(v3.max_frame_len(), 1514);
    assert!(!v3.is_extended());
    assert!(matches!(
        v3.send(&frame(b.mac(), a.mac(), 6, 1515)),
        Err(Error::FrameSize { max: 1514, .. })
    ));
}

#[test]
fn many_laps_of_a_large_ring_deliver_in_order_to_a_reader_that_keeps_up() {
    let Pair {
        dir: _dir,
        path,
        a,
        b,
    } = pair(MIB, 65_549);
    // 40 MB through a 1 MiB ring in frames of every size: ~40 laps.
    let mut sent = 0u64;
    for tag in 0..2000u32 {
        let len = 14 + (tag as usize * 7919) % (65_549 - 14);
        let f = frame(b.mac(), a.mac(), tag, len);
        a.send(&f).unwrap();
        sent += len as u64;
        let got = b.try_recv().unwrap().expect("each frame, at once");
        assert_eq!(got.data, f, "frame {tag}");
    }
    assert!(sent > 40 * MIB, "{sent}");
    assert_eq!(b.counters().overruns, 0);
    // The dump walk reads the extended image.
    let image = shmif::read_image(&path).unwrap();
    let d = Dump::parse(&image).unwrap();
    assert!(d
        .header_line()
        .starts_with("extended bus format 1, ring size 1040384, max frame 65549"));
    let frames: Vec<_> = d.frames().collect::<Result<_, _>>().unwrap();
    assert!(!frames.is_empty());
    let lastf = frames.last().unwrap();
    assert_eq!(
        lastf.data,
        frame(b.mac(), a.mac(), 1999, 14 + (1999 * 7919) % (65_549 - 14))
    );
}

/// The header word of `width` bytes at `off` of the bus file.
fn header_word(path: &std::path::Path, off: usize, width: usize) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b[..width], off as u64)
        .unwrap();
    match width {
        4 => u64::from(u32::from_ne_bytes(b[..4].try_into().unwrap())),
        _ => u64::from_ne_bytes(b),
    }
}

/// Sends `n` frames of 1514 bytes numbered from `tag`, 32 per batch.
/// Returns the next tag.
fn pump(a: &Interface, to: MacAddr, tag: u32, n: u32) -> u32 {
    let mut t = tag;
    while t < tag + n {
        let batch: Vec<Vec<u8>> = (t..(t + 32).min(tag + n))
            .map(|k| frame(to, a.mac(), k, 1514))
            .collect();
        a.send_batch(batch.iter().map(|f| &f[..])).unwrap();
        t += batch.len() as u32;
    }
    t
}

/// Sends frames numbered from `tag` until `until`, 320 at a time, `b`
/// reading and checking all there is after each 320. Returns the next tag.
fn pump_keeping_up(a: &Interface, b: &Interface, tag: u32, until: u32, next_b: &mut u32) -> u32 {
    let mut tag = tag;
    while tag < until {
        tag = pump(a, b.mac(), tag, 320);
        read_all(b, b.mac(), a.mac(), next_b);
    }
    tag
}

/// Reads everything there is, checking that it is frames `*next..` in order.
fn read_all(b: &Interface, to: MacAddr, from: MacAddr, next: &mut u32) {
    while let Some(f) = b.try_recv().unwrap() {
        assert_eq!(f.data, frame(to, from, *next, 1514), "frame {next}");
        *next += 1;
    }
}

#[test]
fn laps_end_early_while_registered_readers_keep_up_and_one_that_sleeps_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    Bus::create(&path, 64 * MIB, 1514, &OpenOptions::new()).unwrap();
    assert_eq!(
        header_word(&path, field::FLAGS, 4),
        u64::from(shmif::wire::ext::EXT_FLAG_SKIPS)
    );
    let a = Interface::attach(&path).unwrap();
    let b = Interface::attach(&path).unwrap();
    assert!(b.try_recv().unwrap().is_none());
    assert!(b.is_registered());
    // 100 MB while the reader keeps up: laps of about 4 MiB, not 64.
    let (mut tag, mut next_b) = (0u32, 0u32);
    tag = pump_keeping_up(&a, &b, tag, 66_000, &mut next_b);
    assert_eq!(next_b, tag);
    let laps = header_word(&path, field::GEN, 8);
    let skipped = header_word(&path, field::SKIPPED, 8);
    assert!(laps >= 12, "{laps} laps for 100 MB through a 64 MiB ring");
    assert!(skipped > 0);
    // The dump walks across the skip records to the newest frame.
    let image = shmif::read_image(&path).unwrap();
    let d = Dump::parse(&image).unwrap();
    let frames: Vec<_> = d.frames().collect::<Result<_, _>>().unwrap();
    assert!(frames.len() > 1000, "{}", frames.len());
    let n = frames.len() as u32;
    for (k, f) in frames.iter().enumerate() {
        assert_eq!(f.data, frame(b.mac(), a.mac(), tag - n + k as u32, 1514));
    }
    // A second registered reader that reads nothing for 300 ms (its lag
    // passes a hot lap: laps would run the whole ring again, but the lap
    // begun ends early and the writer then reaches it and waits): it
    // loses nothing.
    let c = Interface::attach(&path).unwrap();
    c.set_promiscuous(true);
    assert!(c.try_recv().unwrap().is_none());
    assert!(c.is_registered());
    let from_c = tag;
    std::thread::scope(|s| {
        let lagging = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            let mut next_c = from_c;
            while next_c < from_c + 14_000 {
                let f = c.recv_timeout(Duration::from_secs(5)).unwrap();
                let f = f.unwrap_or_else(|| panic!("frame {next_c} never came"));
                assert_eq!(
                    f.data,
                    frame(b.mac(), a.mac(), next_c, 1514),
                    "frame {next_c}"
                );
                next_c += 1;
            }
        });
        // 20 MiB, b keeping up.
        tag = pump_keeping_up(&a, &b, tag, from_c + 14_000, &mut next_b);
        lagging.join().unwrap();
    });
    assert_eq!(next_b, tag);
    assert_eq!((b.counters().overruns, c.counters().overruns), (0, 0));
}

#[test]
fn a_bus_without_the_skip_flag_never_gets_a_skip_record() {
    // An extended bus made by an older build: flags 0.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    Bus::create(&path, 16 * MIB, 1514, &OpenOptions::new()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&0u32.to_ne_bytes(), field::FLAGS as u64)
        .unwrap();
    let a = Interface::attach(&path).unwrap();
    let b = Interface::attach(&path).unwrap();
    assert!(b.try_recv().unwrap().is_none());
    assert!(b.is_registered());
    let (mut tag, mut next_b) = (0u32, 0u32);
    tag = pump_keeping_up(&a, &b, tag, 33_000, &mut next_b);
    assert_eq!(next_b, tag);
    assert_eq!(header_word(&path, field::SKIPPED, 8), 0);
    let laps = header_word(&path, field::GEN, 8);
    assert!((2..=4).contains(&laps), "{laps} laps of 16 MiB for 50 MB");
    assert_eq!(header_word(&path, field::FLAGS, 4), 0, "left as it was");
}

#[test]
fn a_bad_extended_header_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (off, value) in [
        (field::FORMAT, 2u32),
        (field::RING_SIZE, 12345),
        (field::MAX_FRAME, 70_000),
        (field::HEADER_LEN, 4096),
        (field::FIRST, u32::MAX),
        (field::LAST, u32::MAX),
    ] {
        let path = dir.path().join(format!("bus{off}"));
        Bus::create(&path, MIB, 9000, &OpenOptions::new()).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&value.to_ne_bytes(), off as u64).unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = Interface::attach(&path).unwrap_err();
        assert!(matches!(err, Error::NotABus { .. }), "{off}: {err}");
        assert!(err.to_string().contains("extended"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "{off}: file changed");
    }
    // A file cut short (or grown) no longer matches its header.
    let path = dir.path().join("cut");
    Bus::create(&path, 2 * MIB, 9000, &OpenOptions::new()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(MIB)
        .unwrap();
    assert!(matches!(
        Interface::attach(&path),
        Err(Error::NotABus { .. })
    ));
}

#[test]
fn a_corrupt_ring_on_an_extended_bus_is_repaired_on_attach() {
    let Pair {
        dir: _dir,
        path,
        a,
        b,
    } = pair(MIB, 65_549);
    a.send(&frame(b.mac(), a.mac(), 1, 3000)).unwrap();
    // A length over the frame limit at `last`.
    let image = std::fs::read(&path).unwrap();
    let last = u32::from_ne_bytes(image[20..24].try_into().unwrap()) as u64;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&70_000u32.to_ne_bytes(), EXT_HEADER_LEN as u64 + last)
        .unwrap();
    let c = Interface::attach(&path).unwrap();
    assert_eq!(c.counters().ring_repairs, 1);
    // Traffic flows again for everyone.
    let g = frame(b.mac(), c.mac(), 2, 20_000);
    c.send(&g).unwrap();
    let got = loop {
        let got = b.recv_timeout(Duration::from_secs(1)).unwrap().unwrap();
        if got.data[14] == 2 {
            break got;
        }
    };
    assert_eq!(got.data, g);
}

#[test]
fn a_blocked_receive_wakes_through_the_futex_and_a_wakeup_fd_still_fires() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    Bus::create(&path, MIB, 9000, &OpenOptions::new()).unwrap();
    let a = Interface::attach(&path).unwrap();
    let b = std::sync::Arc::new(Interface::attach(&path).unwrap());
    let image = || std::fs::read(&path).unwrap();
    let word = |img: &[u8], off: usize| u32::from_ne_bytes(img[off..off + 4].try_into().unwrap());
    // Nobody sleeps and nobody polls a descriptor: a send changes neither
    // the futex word nor (no pwrite) the wake-up word.
    a.send(&frame(b.mac(), a.mac(), 0, 100)).unwrap();
    assert!(b.try_recv().unwrap().is_some());
    let before = image();
    assert_eq!(word(&before, field::DATA_SLEEPERS), 0);
    a.send(&frame(b.mac(), a.mac(), 1, 100)).unwrap();
    let after = image();
    assert_eq!(
        word(&after, field::DATA_SEQ),
        word(&before, field::DATA_SEQ)
    );
    assert_eq!(
        word(&after, field::WAKE),
        0,
        "no pwrite while nobody waits on a descriptor"
    );
    assert!(b.try_recv().unwrap().is_some());
    // A receive blocked in another thread is woken by the futex, well within
    // its 100 ms step.
    for round in 0..5u32 {
        let rb = b.clone();
        let t = std::thread::spawn(move || {
            let f = rb.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
            (f.data, std::time::Instant::now())
        });
        std::thread::sleep(Duration::from_millis(50));
        let sent = std::time::Instant::now();
        let f = frame(b.mac(), a.mac(), 10 + round, 5000);
        a.send(&f).unwrap();
        let (got, at) = t.join().unwrap();
        assert_eq!(got, f);
        assert!(
            at.duration_since(sent) < Duration::from_millis(50),
            "round {round}"
        );
    }
    assert!(
        word(&image(), field::DATA_SEQ) > 0,
        "woken through the futex"
    );
    // A descriptor handed out is counted, and the pwrite resumes for it.
    let fd = b.wakeup_fd().unwrap().unwrap();
    assert_eq!(word(&image(), field::FD_WAITERS), 1);
    b.clear_wakeups().unwrap();
    a.send(&frame(b.mac(), a.mac(), 20, 100)).unwrap();
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let n = rustix::event::poll(
        &mut fds,
        Some(&rustix::time::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        }),
    )
    .unwrap();
    assert_eq!(n, 1, "the wake-up descriptor fired");
    drop(b);
    assert_eq!(
        word(&image(), field::FD_WAITERS),
        0,
        "uncounted when the interface goes"
    );
}

/// `b` waits (up to `secs`) while another thread sends it frame `tag`
/// from `a` after `delay`; the wait must end seeing it. Returns the next tag.
fn wait_for_one_sent_after(
    a: &Interface,
    b: &Interface,
    tag: u32,
    delay: Duration,
    secs: u64,
) -> u32 {
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            std::thread::sleep(delay);
            pump(a, b.mac(), tag, 1)
        });
        assert!(b.wait_for_wakeup(Some(Duration::from_secs(secs))).unwrap());
        t.join().unwrap()
    })
}

#[test]
fn a_registered_reader_naps_after_a_burst_and_only_then() {
    let Pair { dir, path, a, b } = pair(4 * MIB, 1514);
    assert_eq!(b.rx_coalesce(), shmif::DEFAULT_RX_COALESCE);
    assert!(b.try_recv().unwrap().is_none());
    assert!(b.is_registered());
    let naps = |i: &Interface| i.counters().rx_naps;
    let short = Some(Duration::from_millis(2));
    let mut next = 0;
    // A burst: the wait after it naps first (and, nothing coming, times
    // out all the same).
    let tag = pump(&a, b.mac(), 0, shmif::RX_COALESCE_BURST as u32);
    read_all(&b, b.mac(), a.mac(), &mut next);
    assert!(!b.wait_for_wakeup(short).unwrap());
    assert_eq!(naps(&b), 1);
    // One frame (a request, an answer): no nap.
    let tag = pump(&a, b.mac(), tag, 1);
    read_all(&b, b.mac(), a.mac(), &mut next);
    assert!(!b.wait_for_wakeup(short).unwrap());
    assert_eq!(naps(&b), 1, "no nap after a single frame");
    // Fewer frames than a burst: no nap either.
    let tag = pump(&a, b.mac(), tag, shmif::RX_COALESCE_BURST as u32 - 1);
    read_all(&b, b.mac(), a.mac(), &mut next);
    assert!(!b.wait_for_wakeup(short).unwrap());
    assert_eq!(naps(&b), 1);
    // A frame sent while the reader naps (or sleeps after it) is seen.
    let tag = pump(&a, b.mac(), tag, 40);
    read_all(&b, b.mac(), a.mac(), &mut next);
    let tag = wait_for_one_sent_after(&a, &b, tag, Duration::from_micros(20), 5);
    read_all(&b, b.mac(), a.mac(), &mut next);
    assert_eq!(next, tag, "the frame sent during the nap");
    assert_eq!(naps(&b), 2);
    // A nap set longer than MAX_RX_COALESCE is cut to it: a frame sent
    // 30 ms into the wait is seen then, not after the hour asked for.
    b.set_rx_coalesce(Duration::from_secs(3600));
    let tag = pump(&a, b.mac(), tag, 40);
    read_all(&b, b.mac(), a.mac(), &mut next);
    let started = std::time::Instant::now();
    let tag = wait_for_one_sent_after(&a, &b, tag, Duration::from_millis(30), 20);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "nap cut to 10 ms"
    );
    read_all(&b, b.mac(), a.mac(), &mut next);
    assert_eq!(next, tag);
    assert_eq!(naps(&b), 3);
    // Turned off: a burst is followed by a plain sleep.
    b.set_rx_coalesce(Duration::ZERO);
    let tag = pump(&a, b.mac(), tag, 40);
    read_all(&b, b.mac(), a.mac(), &mut next);
    assert!(!b.wait_for_wakeup(short).unwrap());
    assert_eq!(naps(&b), 3, "coalescing off");
    b.set_rx_coalesce(shmif::DEFAULT_RX_COALESCE);
    // A lossy reader never naps (writers do not wait for it: a nap could
    // cost it frames).
    let c = Interface::attach(&path).unwrap();
    c.set_lossy(true);
    c.set_promiscuous(true);
    assert!(c.try_recv().unwrap().is_none());
    assert!(!c.is_registered());
    pump(&a, b.mac(), tag, 40);
    read_all(&b, b.mac(), a.mac(), &mut next);
    let mut got = 0;
    while c.try_recv().unwrap().is_some() {
        got += 1;
    }
    assert_eq!(got, 40);
    assert!(!c.wait_for_wakeup(short).unwrap());
    assert_eq!(naps(&c), 0, "a lossy reader");
    // Nor does a reader of a NetBSD bus.
    let v3 = dir.path().join("v3");
    let a3 = Interface::attach(&v3).unwrap();
    let b3 = Interface::attach(&v3).unwrap();
    assert!(b3.try_recv().unwrap().is_none());
    let mut next3 = 0;
    pump(&a3, b3.mac(), 0, 40);
    read_all(&b3, b3.mac(), a3.mac(), &mut next3);
    assert_eq!(next3, 40);
    // (The writes' file-change events are still queued: it returns at once.)
    b3.wait_for_wakeup(short).unwrap();
    assert_eq!(naps(&b3), 0, "a version-3 bus");
}

/// A writer on the bus at `path` that waits at most `stall` for a
/// registered reader that does not move before it leaves it behind.
fn writer_with_stall(path: &std::path::Path, stall: Duration) -> Interface {
    let w = Interface::new().with_open_options(OpenOptions::new().reader_stall(stall));
    w.set_link(path).unwrap();
    w.up().unwrap();
    w
}

/// Receives everything there is, checking that each frame is `len` bytes;
/// how many there were.
fn drain_frames_of(b: &Interface, len: usize) -> u64 {
    let mut got = 0;
    while let Some(f) = b.try_recv().unwrap() {
        assert_eq!(f.data.len(), len);
        got += 1;
    }
    got
}

/// Receives one frame in place: whether the view was of the bus, and the
/// frame's bytes.
fn in_place(b: &Interface) -> Option<(bool, Vec<u8>)> {
    b.try_recv_in_place(|v, r| {
        assert_eq!(v.len(), r.len);
        (v.is_in_bus(), v.to_vec())
    })
    .unwrap()
}

#[test]
fn a_registered_reader_receives_in_place_what_a_copying_receive_would() {
    let Pair {
        dir: _dir,
        path: _,
        a,
        b,
    } = pair(MIB, 65_549);
    let other = MacAddr([0xb2, 0xa0, 0, 0, 0, 0x77]);
    assert_eq!(in_place(&b), None);
    assert!(b.is_registered());
    // ~60 MB through a 1 MiB ring in frames of every size (many laps, so
    // frames at the ring's end too), with frames for another MAC between,
    // which are passed over and counted, never shown.
    let mut sent = 0u64;
    for tag in 0..2000u32 {
        let len = 14 + (tag as usize * 7919) % (65_549 - 14);
        a.send(&frame(other, a.mac(), tag, 60)).unwrap();
        let f = frame(b.mac(), a.mac(), tag, len);
        a.send(&f).unwrap();
        sent += len as u64;
        let (in_bus, got) = in_place(&b).expect("each frame, at once");
        assert!(in_bus, "frame {tag} was copied");
        assert_eq!(got, f, "frame {tag}");
    }
    assert!(sent > 40 * MIB, "{sent}");
    assert_eq!(in_place(&b), None);
    let c = b.counters();
    assert_eq!((c.rx_frames, c.rx_bytes), (2000, sent));
    assert_eq!((c.rx_filtered, c.overruns), (2000, 0));
    // A view reads parts too, and nothing past the frame's end.
    let f = frame(b.mac(), a.mac(), 7, 1000);
    a.send(&f).unwrap();
    let part = b
        .try_recv_in_place(|v, _| {
            let mut buf = [0u8; 16];
            assert_eq!(v.read(1000, &mut buf), 0);
            assert_eq!(v.read(990, &mut buf), 10);
            buf[..10].to_vec()
        })
        .unwrap();
    assert_eq!(part.as_deref(), Some(&f[990..]));
}

#[test]
fn a_lossy_reader_and_a_netbsd_bus_receive_in_place_from_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let ext = dir.path().join("ext");
    Bus::create(&ext, MIB, 9000, &OpenOptions::new()).unwrap();
    let v3 = dir.path().join("v3");
    for (path, lossy) in [(&ext, true), (&v3, false)] {
        let a = Interface::attach(path).unwrap();
        let b = Interface::attach(path).unwrap();
        b.set_lossy(lossy);
        assert_eq!(in_place(&b), None);
        for tag in 0..50u32 {
            let f = frame(b.mac(), a.mac(), tag, 14 + tag as usize * 29);
            a.send(&f).unwrap();
            assert_eq!(in_place(&b), Some((false, f)), "{path:?} frame {tag}");
        }
        assert!(!b.is_registered());
    }
}

#[test]
fn a_reader_left_behind_while_it_reads_in_place_is_told_and_counts_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    Bus::create(&path, MIB, 9000, &OpenOptions::new()).unwrap();
    let w = writer_with_stall(&path, Duration::from_millis(50));
    let b = Interface::attach(&path).unwrap();
    assert_eq!(in_place(&b), None);
    let first = frame(b.mac(), w.mac(), 0, 8000);
    w.send(&first).unwrap();
    // While the reader holds the first frame, the writer sends 4 MiB: it
    // waits the stall bound for the reader, then writes over it.
    let t0 = std::time::Instant::now();
    let r = b.try_recv_in_place(|v, _| {
        let before = v.to_vec();
        for tag in 1..=512u32 {
            w.send(&frame(b.mac(), w.mac(), tag, 8000)).unwrap();
        }
        (before, v.to_vec())
    });
    assert!(t0.elapsed() >= Duration::from_millis(50));
    assert!(
        matches!(r, Err(Error::LeftBehind)),
        "{:?}",
        r.map(|o| o.map(|(a, b)| (a.len(), a == b)))
    );
    // The next receives go on after the loss, counted.
    let got = drain_frames_of(&b, 8000);
    let c = b.counters();
    assert!(c.overruns >= 1, "{c:?}");
    assert!(got > 0 && got < 512, "{got}");
}

/// Receives in place up to `max` frames in one call: for each, whether
/// the view was of the bus, and the frame's bytes.
fn batch_in_place(b: &Interface, max: usize) -> Vec<(bool, Vec<u8>)> {
    let mut out = Vec::new();
    let n = b
        .try_recv_batch_in_place(max, &mut out, |v, r| {
            assert_eq!(v.len(), r.len);
            (v.is_in_bus(), v.to_vec())
        })
        .unwrap();
    assert_eq!(n, out.len());
    out
}

/// Sends `count` frames from `a` to `to`, of lengths that vary with the
/// tag (from `tag0`), each after a frame for another MAC; returns them.
fn send_mixed(a: &Interface, to: MacAddr, tag0: u32, count: u32) -> Vec<Vec<u8>> {
    let other = MacAddr([0xb2, 0xa0, 0, 0, 0, 0x77]);
    (tag0..tag0 + count)
        .map(|tag| {
            let len = 14 + (tag as usize * 7919) % (9000 - 14);
            a.send(&frame(other, a.mac(), tag, 60)).unwrap();
            let f = frame(to, a.mac(), tag, len);
            a.send(&f).unwrap();
            f
        })
        .collect()
}

#[test]
fn a_batch_received_in_place_is_what_single_receives_would_deliver() {
    let Pair {
        dir: _dir,
        path: _,
        a,
        b,
    } = pair(MIB, 9000);
    assert!(batch_in_place(&b, 8).is_empty());
    assert!(b.is_registered());
    // Many laps of a 1 MiB ring, in batches of every size from 1 to 40
    // (batches that end inside the window, at its end, and across the
    // publication every 16 frames), never more than asked for.
    let (mut tag, mut sent, mut bytes) = (0u32, 0u64, 0u64);
    for round in 0..400usize {
        let want = send_mixed(&a, b.mac(), tag, 1 + (round % 12) as u32 * 3);
        tag += want.len() as u32;
        let mut got = Vec::new();
        let max = 1 + round % 40;
        loop {
            let batch = batch_in_place(&b, max);
            assert!(batch.len() <= max, "{} > {max}", batch.len());
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
        }
        assert_eq!(got.len(), want.len(), "round {round}");
        for (i, ((in_bus, g), w)) in got.iter().zip(&want).enumerate() {
            assert!(in_bus, "round {round} frame {i} was copied");
            assert_eq!(g, w, "round {round} frame {i}");
        }
        sent += want.len() as u64;
        bytes += want.iter().map(|f| f.len() as u64).sum::<u64>();
    }
    assert!(bytes > 20 * MIB, "{bytes}");
    let c = b.counters();
    assert_eq!((c.rx_frames, c.rx_bytes), (sent, bytes));
    assert_eq!((c.rx_filtered, c.overruns), (sent, 0));
    // Nothing waiting, nothing asked for: nothing pushed.
    send_mixed(&a, b.mac(), tag, 3);
    assert!(batch_in_place(&b, 0).is_empty());
    assert_eq!(batch_in_place(&b, 10).len(), 3);
}

#[test]
fn a_lossy_reader_and_a_netbsd_bus_receive_a_batch_in_place_from_copies() {
    let dir = tempfile::tempdir().unwrap();
    let ext = dir.path().join("ext");
    Bus::create(&ext, MIB, 9000, &OpenOptions::new()).unwrap();
    let v3 = dir.path().join("v3");
    for (path, lossy) in [(&ext, true), (&v3, false)] {
        let a = Interface::attach(path).unwrap();
        let b = Interface::attach(path).unwrap();
        b.set_lossy(lossy);
        assert!(batch_in_place(&b, 4).is_empty());
        let want: Vec<Vec<u8>> = (0..10u32)
            .map(|tag| {
                let f = frame(b.mac(), a.mac(), tag, 14 + tag as usize * 29);
                a.send(&f).unwrap();
                f
            })
            .collect();
        let mut got = batch_in_place(&b, 4);
        assert_eq!(got.len(), 4, "{path:?}: as many as asked for");
        got.extend(batch_in_place(&b, 100));
        let got: Vec<Vec<u8>> = got
            .into_iter()
            .map(|(in_bus, f)| {
                assert!(!in_bus, "{path:?}");
                f
            })
            .collect();
        assert_eq!(got, want, "{path:?}");
        assert!(!b.is_registered());
    }
}

#[test]
fn a_reader_left_behind_mid_batch_keeps_what_it_read_before_and_drops_the_torn_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    Bus::create(&path, MIB, 9000, &OpenOptions::new()).unwrap();
    let w = writer_with_stall(&path, Duration::from_millis(50));
    let b = Interface::attach(&path).unwrap();
    assert!(batch_in_place(&b, 4).is_empty());
    let first: Vec<Vec<u8>> = (0..3u32)
        .map(|tag| {
            let f = frame(b.mac(), w.mac(), tag, 8000);
            w.send(&f).unwrap();
            f
        })
        .collect();
    // While the reader holds the third frame, the writer sends 4 MiB: it
    // waits the stall bound for the reader, then writes over it.
    let mut out = Vec::new();
    let mut seen = 0;
    let r = b.try_recv_batch_in_place(10, &mut out, |v, _| {
        seen += 1;
        if seen == 3 {
            for tag in 3..=515u32 {
                w.send(&frame(b.mac(), w.mac(), tag, 8000)).unwrap();
            }
        }
        v.to_vec()
    });
    assert!(matches!(r, Err(Error::LeftBehind)), "{r:?}");
    assert_eq!(seen, 3);
    assert_eq!(out, first[..2], "the two frames read before stand");
    // The next receives go on after the loss, counted.
    let got = drain_frames_of(&b, 8000);
    let c = b.counters();
    assert!(c.overruns >= 1, "{c:?}");
    assert!(got > 0 && got < 513, "{got}");
    assert_eq!(c.rx_frames, 2 + got);
}

/// On a 1 MiB extended bus, with a writer that would wait 20 s for a
/// reader that seems not to move: `read_ten` has the reader take ten
/// frames of 60,000 bytes its own way, then the writer sends a ring's
/// worth more, which needs the room of all ten (had the reader not
/// published its position, the writer would wait out its stall bound),
/// and `recv` (whether it got a frame) takes the 17, none lost.
fn ten_then_a_ring_more(
    read_ten: impl FnOnce(&Interface, &Interface),
    recv: impl Fn(&Interface) -> bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    Bus::create(&path, MIB, 65_549, &OpenOptions::new()).unwrap();
    let w = writer_with_stall(&path, Duration::from_secs(20));
    let b = Interface::attach(&path).unwrap();
    read_ten(&w, &b);
    let t0 = std::time::Instant::now();
    for tag in 10..27u32 {
        w.send(&frame(b.mac(), w.mac(), tag, 60_000)).unwrap();
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let mut got = 0;
    while recv(&b) {
        got += 1;
    }
    assert_eq!((got, b.counters().overruns), (17, 0));
}

/// Ten frames received one by one by `recv` (which says whether it got a
/// frame, and whether in place), then a wait, then a ring's worth more
/// ([`ten_then_a_ring_more`]): the reader publishes before it waits.
fn published_before_waiting(recv: impl Fn(&Interface) -> Option<bool>) {
    ten_then_a_ring_more(
        |w, b| {
            assert_eq!(recv(b), None);
            // Fewer than a batch read in place: no publication yet.
            for tag in 0..10u32 {
                w.send(&frame(b.mac(), w.mac(), tag, 60_000)).unwrap();
                assert!(recv(b).expect("at once"));
            }
            // (It returns at once: the sends left wake-ups pending.)
            b.wait_for_wakeup(Some(Duration::from_millis(10))).unwrap();
        },
        |b| recv(b).is_some(),
    );
}

#[test]
fn frames_read_in_place_are_published_before_the_reader_waits() {
    published_before_waiting(|b| in_place(b).map(|(in_bus, _)| in_bus));
}

#[test]
fn frames_read_in_place_in_batches_are_published_before_the_reader_waits() {
    published_before_waiting(|b| {
        let got = batch_in_place(b, 1);
        got.first().map(|(in_bus, _)| *in_bus)
    });
}

#[test]
fn frames_received_into_a_buffer_are_published_before_the_reader_waits() {
    let buf = std::cell::RefCell::new(vec![0u8; 65_549]);
    published_before_waiting(|b| {
        let r = b.try_recv_into(&mut buf.borrow_mut()).unwrap()?;
        assert_eq!(r.len, 60_000);
        Some(true)
    });
}

/// A caller that waits on the wake-up descriptor (as the bridges and the
/// async wrapper do), or stops receiving, does not tell the interface:
/// each receive into a buffer publishes what it read before it returns, or
/// a writer needing that room would wait out its 20 s stall bound.
#[test]
fn frames_received_into_a_buffer_are_published_before_each_receive_returns() {
    let buf = std::cell::RefCell::new(vec![0u8; 65_549]);
    ten_then_a_ring_more(
        |w, b| {
            let _fd = b.wakeup_fd().unwrap();
            let mut buf = buf.borrow_mut();
            assert_eq!(b.try_recv_into(&mut buf).unwrap(), None);
            // Ten frames in the ring at once, so that the reader takes
            // them from one window of published frames, then receives no
            // more.
            let sent: Vec<Vec<u8>> = (0..10u32)
                .map(|tag| frame(b.mac(), w.mac(), tag, 60_000))
                .collect();
            for f in &sent {
                w.send(f).unwrap();
            }
            for f in &sent {
                let r = b.try_recv_into(&mut buf).unwrap().expect("at once");
                assert_eq!(&buf[..r.len], &f[..]);
            }
        },
        |b| b.try_recv_into(&mut buf.borrow_mut()).unwrap().is_some(),
    );
}

#[test]
fn a_reader_that_catches_up_with_a_busy_writer_goes_on_reading_in_place() {
    // A registered reader faster than its writer catches up with it once
    // every holding, while the writer holds the lock to write the next
    // batch; what that holding publishes must still be read where it lies,
    // not copied (the copy is what a receive in place exists to save).
    let Pair {
        dir: _dir,
        path: _,
        a,
        b,
    } = pair(16 * MIB, 1514);
    assert!(batch_in_place(&b, 8).is_empty());
    assert!(b.is_registered());
    const BATCHES: u32 = 4000;
    const PER_BATCH: u32 = 32;
    let to = b.mac();
    let writer = std::thread::spawn(move || {
        for k in 0..BATCHES {
            let frames: Vec<Vec<u8>> = (0..PER_BATCH)
                .map(|j| frame(to, a.mac(), k * PER_BATCH + j, 1514))
                .collect();
            a.send_batch(frames.iter().map(|f| &f[..])).unwrap();
        }
    });
    let total = BATCHES * PER_BATCH;
    let (mut next, mut copied) = (0u32, 0u32);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while next < total {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck at frame {next}"
        );
        let batch = batch_in_place(&b, 32);
        if batch.is_empty() {
            std::thread::yield_now();
        }
        for (in_bus, f) in batch {
            assert_eq!(f[14..18], next.to_le_bytes(), "frame {next} out of order");
            copied += u32::from(!in_bus);
            next += 1;
        }
    }
    writer.join().unwrap();
    let c = b.counters();
    assert_eq!((c.rx_frames, c.overruns), (u64::from(total), 0));
    // The locked path copies the frames it finds (registering, or a reader
    // that finds the lock free and no cursor yet); anything near one frame
    // in a hundred means windows are being copied.
    assert!(copied <= total / 100, "{copied} of {total} frames copied");
}

/// What one of [`two_peers_flooding_each_other_read_in_place_through_every_excuse`]'s
/// peers has had of the other's frames: the next tag it expects, how many
/// it got, how many it missed.
#[derive(Default)]
struct Seen {
    next: u32,
    got: u32,
    missed: u32,
}

/// Takes what `me` has waiting from `peer`, in place (up to 64 frames),
/// checking each frame whole and in order; how many it took.
fn take_flood(me: &Interface, peer: MacAddr, len: usize, seen: &mut Seen) -> usize {
    let mut out = Vec::new();
    match me.try_recv_batch_in_place(64, &mut out, |v, r| {
        assert_eq!(r.len, len);
        let bytes = v.to_vec();
        let tag = u32::from_le_bytes(bytes[14..18].try_into().unwrap());
        assert!(bytes == frame(me.mac(), peer, tag, len), "frame {tag} torn");
        tag
    }) {
        Ok(_) | Err(Error::LeftBehind) => {}
        Err(e) => panic!("{e}"),
    }
    for &tag in &out {
        assert!(
            tag >= seen.next,
            "frame {tag} after {}: out of order",
            seen.next
        );
        seen.missed += tag - seen.next;
        seen.next = tag + 1;
        seen.got += 1;
    }
    out.len()
}

/// Two peers on a small extended bus, each flooding the other with
/// 9,000-byte frames and reading what comes in place between its batches.
/// Each one's send often waits for the other's reader, and excuses its
/// own reader meanwhile (so that the two do not wait for each other), so
/// both readers keep falling out of standing and coming back into it.
/// (What they lose so is a hub's loss, counted.) Every frame delivered is
/// whole and in order, and once both stop sending each reader goes through
/// to the end of the ring: every frame on it delivered, passed over as its
/// own, or counted as overrun, exactly.
#[test]
fn two_peers_flooding_each_other_read_in_place_through_every_excuse() {
    const N: u32 = 3_000;
    const LEN: usize = 9_000;
    // A third of the ring (116 frames) a send: a send often waits for
    // the other's reader, which may be in a send itself.
    const BATCH: u32 = 40;
    let Pair {
        dir: _dir, a, b, ..
    } = pair(MIB, 9_000);
    let (ma, mb) = (a.mac(), b.mac());
    let done = std::sync::Arc::new(std::sync::Barrier::new(2));
    let run = |me: Interface, peer: MacAddr| {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = Seen::default();
            let mut tag = 0;
            while tag < N {
                let batch: Vec<Vec<u8>> = (tag..(tag + BATCH).min(N))
                    .map(|t| frame(peer, me.mac(), t, LEN))
                    .collect();
                me.send_batch(batch.iter().map(Vec::as_slice)).unwrap();
                tag += batch.len() as u32;
                take_flood(&me, peer, LEN, &mut seen);
            }
            // Both done sending: what is left on the ring is read to its
            // end, however this reader's standing stood when the sending
            // stopped (a reader out of standing once got `LeftBehind`
            // call after call there, and the rest stayed unread).
            done.wait();
            while take_flood(&me, peer, LEN, &mut seen) > 0 {}
            (me, seen)
        })
    };
    let (ta, tb) = (run(a, mb), run(b, ma));
    for (who, t) in [("a", ta), ("b", tb)] {
        let (me, seen) = t.join().unwrap();
        let c = me.counters();
        // Every entry of the ring (both peers' frames) was a frame of the
        // other's delivered, a frame of its own passed over, or overrun,
        // counted exactly in bytes: the reader went through to the end.
        let entry = LEN as u64 + 24;
        assert_eq!(c.overruns_unmeasured, 0, "{who}: {c:?}");
        assert_eq!(c.overrun_bytes % entry, 0, "{who}: {c:?}");
        assert_eq!(
            c.rx_frames + c.rx_own + c.overrun_bytes / entry,
            2 * u64::from(N),
            "{who}: every frame on the ring accounted for: {c:?}"
        );
        assert_eq!(c.rx_frames, u64::from(seen.got), "{who}");
        assert!(seen.got > 0, "{who}: nothing of the peer's got through");
        eprintln!("{who}: got {}, missed {}, {c:?}", seen.got, seen.missed);
    }
}
