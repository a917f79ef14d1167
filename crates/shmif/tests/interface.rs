//! The interface: life cycle, filters, counters, and attaching to bad files.

use shmif::wire::{BUS_SIZE, DATA_SIZE, MAGIC};
use shmif::{Error, Interface, MacAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn frame(dst: MacAddr, src: MacAddr, tag: u8, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.push(tag);
    f.resize(len, tag);
    f
}

fn recv1(i: &Interface) -> Option<Vec<u8>> {
    i.recv_timeout(Duration::from_millis(500))
        .unwrap()
        .map(|f| f.data)
}

#[test]
fn a_new_bus_is_created_and_initialised() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("new-bus");
    let _i = Interface::attach(&bus).unwrap();
    let bytes = std::fs::read(&bus).unwrap();
    assert_eq!(bytes.len(), BUS_SIZE);
    assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), MAGIC);
    assert_eq!(
        u32::from_ne_bytes(bytes[16..20].try_into().unwrap()),
        DATA_SIZE,
        "first = DATASIZE on a fresh bus"
    );
    assert_eq!(
        u32::from_ne_bytes(bytes[24..28].try_into().unwrap()),
        0,
        "unlocked"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&bus).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a bus we create is private by default");
}

#[test]
fn an_empty_file_becomes_a_bus() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("empty");
    std::fs::write(&bus, b"").unwrap();
    let a = Interface::attach(&bus).unwrap();
    let b = Interface::attach(&bus).unwrap();
    a.send(&frame(b.mac(), a.mac(), 1, 60)).unwrap();
    assert_eq!(recv1(&b).unwrap()[14], 1);
}

#[test]
fn unicast_broadcast_promiscuous_and_own_frames() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = Interface::attach(&bus).unwrap();
    let b = Interface::attach(&bus).unwrap();
    let c = Interface::attach(&bus).unwrap();
    c.set_promiscuous(true);
    assert!(c.is_promiscuous());

    a.send(&frame(b.mac(), a.mac(), 1, 60)).unwrap(); // to b only
    a.send(&frame(MacAddr::BROADCAST, a.mac(), 2, 100)).unwrap();
    a.send(&frame(MacAddr([0x01, 0, 0x5e, 0, 0, 1]), a.mac(), 3, 14))
        .unwrap(); // multicast

    assert_eq!(recv1(&b).unwrap()[14..15], [1]);
    assert_eq!(recv1(&b).unwrap()[14], 2);
    assert_eq!(recv1(&b).unwrap().len(), 14);
    assert!(b.try_recv().unwrap().is_none());

    // c is promiscuous: it sees the unicast to b too.
    assert_eq!(recv1(&c).unwrap()[14], 1);
    assert_eq!(recv1(&c).unwrap()[14], 2);
    assert!(recv1(&c).is_some());

    // a never receives its own frames.
    assert!(a.try_recv().unwrap().is_none());
    let ca = a.counters();
    assert_eq!(ca.tx_frames, 3);
    assert_eq!(ca.tx_bytes, 60 + 100 + 14);
    assert_eq!(ca.rx_own, 3);
    assert_eq!(ca.rx_frames, 0);

    // A frame to someone else is counted as filtered, not delivered.
    b.send(&frame(MacAddr([0xb2, 0xa0, 9, 9, 9, 9]), b.mac(), 4, 60))
        .unwrap();
    assert!(a
        .recv_timeout(Duration::from_millis(100))
        .unwrap()
        .is_none());
    assert_eq!(
        a.counters().rx_filtered,
        1,
        "the frame to 9:9:9:9 (a sent the one to b)"
    );
    let cb = b.counters();
    assert_eq!(cb.rx_frames, 3);
    assert_eq!(cb.rx_bytes, 60 + 100 + 14);
}

#[test]
fn a_reader_gets_only_frames_sent_after_it_came_up() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = Interface::attach(&bus).unwrap();
    for k in 0..5 {
        a.send(&frame(MacAddr::BROADCAST, a.mac(), k, 60)).unwrap();
    }
    let late = Interface::attach(&bus).unwrap();
    assert!(late.try_recv().unwrap().is_none());
    a.send(&frame(MacAddr::BROADCAST, a.mac(), 9, 60)).unwrap();
    assert_eq!(recv1(&late).unwrap()[14], 9);
}

#[test]
fn frame_sizes_outside_14_to_1514_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = Interface::attach(dir.path().join("bus")).unwrap();
    for len in [0usize, 13, 1515, 9000] {
        let err = a.send(&vec![0u8; len]).unwrap_err();
        assert!(
            matches!(err, Error::FrameSize { len: l, .. } if l == len),
            "{err}"
        );
        assert!(err.to_string().contains("1514"));
    }
    // A batch with one bad frame sends nothing.
    let good = frame(MacAddr::BROADCAST, a.mac(), 1, 60);
    let bad = vec![0u8; 2000];
    assert!(a.send_batch([&good[..], &bad[..]]).is_err());
    assert_eq!(a.counters().tx_frames, 0);
    a.send(&[0xff; 1514]).unwrap();
    a.send(&[0xff; 14]).unwrap();
}

#[test]
fn batch_send_delivers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = Interface::attach(&bus).unwrap();
    let b = Interface::attach(&bus).unwrap();
    let frames: Vec<Vec<u8>> = (0..50)
        .map(|k| frame(b.mac(), a.mac(), k, 60 + k as usize))
        .collect();
    a.send_batch(frames.iter().map(|f| &f[..])).unwrap();
    for f in &frames {
        assert_eq!(&recv1(&b).unwrap(), f);
    }
}

#[test]
fn link_life_cycle_follows_netbsd() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let other = dir.path().join("other");
    let i = Interface::new();
    assert!(i.link().is_none());
    assert!(matches!(i.up(), Err(Error::NoLink)));
    assert!(matches!(i.send(&[0u8; 60]), Err(Error::NoLink)));
    i.set_link(&bus).unwrap();
    assert_eq!(i.link().as_deref(), Some(bus.as_path()));
    // Set only once.
    assert!(matches!(i.set_link(&other), Err(Error::Busy(_))));
    // Down: no traffic.
    assert!(matches!(i.send(&[0xffu8; 60]), Err(Error::Down)));
    assert!(matches!(i.try_recv(), Err(Error::Down)));
    i.up().unwrap();
    assert!(i.is_up());
    // Not while up.
    assert!(matches!(i.set_link(&other), Err(Error::Busy(_))));
    assert!(matches!(i.unset_link(), Err(Error::Busy(_))));
    i.down();
    i.unset_link().unwrap();
    assert!(i.link().is_none());
    i.set_link(&other).unwrap();
    assert_eq!(i.link().as_deref(), Some(other.as_path()));
}

#[test]
fn going_down_wakes_a_blocked_receive() {
    let dir = tempfile::tempdir().unwrap();
    let i = Arc::new(Interface::attach(dir.path().join("bus")).unwrap());
    let j = Arc::clone(&i);
    let t = std::thread::spawn(move || {
        let start = Instant::now();
        (j.recv(), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    let down_at = Instant::now();
    i.down();
    let (res, _) = t.join().unwrap();
    assert!(matches!(res, Err(Error::Down)), "{res:?}");
    assert!(down_at.elapsed() < Duration::from_secs(1));
}

#[test]
fn recv_timeout_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let i = Interface::attach(dir.path().join("bus")).unwrap();
    let t = Instant::now();
    assert!(i
        .recv_timeout(Duration::from_millis(150))
        .unwrap()
        .is_none());
    let e = t.elapsed();
    assert!(e >= Duration::from_millis(150), "{e:?}");
}

#[test]
fn wakeup_fd_polls_readable_when_the_bus_changes() {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = Interface::attach(&bus).unwrap();
    let b = Interface::attach(&bus).unwrap();
    let fd = b.wakeup_fd().unwrap().expect("Linux has inotify");
    let ts = Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    let readable = || poll(&mut [PollFd::new(&fd, PollFlags::IN)], Some(&ts)).unwrap();
    assert_eq!(readable(), 0, "quiet bus: not readable");
    a.send(&frame(MacAddr::BROADCAST, a.mac(), 5, 60)).unwrap();
    assert_eq!(readable(), 1, "readable after a send");
    b.clear_wakeups().unwrap();
    assert_eq!(readable(), 0, "cleared");
    assert_eq!(b.try_recv().unwrap().unwrap().data[14], 5);
}

fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn attach_err(p: &Path) -> String {
    let e = Interface::attach(p).expect_err("must refuse");
    let s = e.to_string();
    assert!(
        s.contains(&p.display().to_string()),
        "error names the file: {s}"
    );
    s
}

#[test]
fn bad_files_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();

    // A directory.
    let d = dir.path().join("a-dir");
    std::fs::create_dir(&d).unwrap();
    assert!(attach_err(&d).contains("directory"));

    // A text file.
    let t = dir.path().join("notes.txt");
    std::fs::write(&t, "hello, this is not a bus\n").unwrap();
    assert!(attach_err(&t).contains("not a shmif bus"));
    assert_eq!(file_bytes(&t), b"hello, this is not a bus\n");

    // A 1 MiB file with a foreign magic.
    let f = dir.path().join("foreign");
    let mut bytes = vec![0u8; BUS_SIZE];
    bytes[0..4].copy_from_slice(&0xdead_beefu32.to_ne_bytes());
    bytes[100] = 7;
    std::fs::write(&f, &bytes).unwrap();
    assert!(attach_err(&f).contains("magic"));
    assert_eq!(file_bytes(&f), bytes);

    // The right magic, the wrong size.
    let w = dir.path().join("wrong-size");
    let mut small = vec![0u8; 4096];
    small[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
    std::fs::write(&w, &small).unwrap();
    assert!(attach_err(&w).contains("4096 bytes"));
    assert_eq!(file_bytes(&w), small);

    // A symbolic link to a bus.
    let real = dir.path().join("real-bus");
    drop(Interface::attach(&real).unwrap());
    let before = file_bytes(&real);
    let link = dir.path().join("link-bus");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(attach_err(&link).contains("symbolic link"));
    assert_eq!(file_bytes(&real), before);
    let followed =
        Interface::new().with_open_options(shmif::OpenOptions::new().follow_symlinks(true));
    followed.set_link(&link).unwrap();

    // A missing directory component.
    let m = dir.path().join("no-such-dir").join("bus");
    assert!(attach_err(&m).contains("directory does not exist"));
    assert!(!m.exists());
}

#[test]
fn a_bus_truncated_while_attached_gives_an_error_not_sigbus() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = Interface::attach(&bus).unwrap();
    let b = Interface::attach(&bus).unwrap();
    a.send(&frame(MacAddr::BROADCAST, a.mac(), 1, 60)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bus)
        .unwrap()
        .set_len(0)
        .unwrap();
    let e = a
        .send(&frame(MacAddr::BROADCAST, a.mac(), 2, 60))
        .unwrap_err();
    assert!(matches!(e, Error::BusGone { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    assert!(e.to_string().contains(&bus.display().to_string()), "{e}");
    let e = b.try_recv().unwrap_err();
    assert!(matches!(e, Error::BusGone { .. }), "{e}");
}

/// Review item: a listener whose bus was emptied under it wrote its
/// wake-up word into the file on the way out, leaving an 8-byte non-bus
/// file. Nothing may be written to a file that is no longer the bus.
#[test]
fn a_bus_truncated_to_zero_under_a_listener_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let truncate = |len| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&bus)
            .unwrap()
            .set_len(len)
            .unwrap()
    };
    // A listener that meets the truncation, and one that never looks.
    let a = Interface::attach(&bus).unwrap();
    let listener = Interface::attach(&bus).unwrap();
    let idle = Interface::attach(&bus).unwrap();
    a.send(&frame(MacAddr::BROADCAST, a.mac(), 1, 60)).unwrap();
    truncate(0);
    let e = listener
        .recv_timeout(Duration::from_millis(500))
        .unwrap_err();
    assert!(matches!(e, Error::BusGone { .. }), "{e}");
    let e = idle
        .send(&frame(MacAddr::BROADCAST, idle.mac(), 2, 60))
        .unwrap_err();
    assert!(matches!(e, Error::BusGone { .. }), "{e}");
    idle.down();
    drop((a, listener, idle));
    assert_eq!(
        std::fs::metadata(&bus).unwrap().len(),
        0,
        "written to after truncation"
    );
    // Truncated to a stub no mapping faults on: still no wake-up write.
    let a = Interface::attach(&bus).unwrap();
    truncate(0);
    truncate(4);
    a.down();
    drop(a);
    assert_eq!(file_bytes(&bus), vec![0u8; 4]);
}

#[test]
fn a_bus_replaced_or_removed_while_attached_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = Interface::attach(&bus).unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, vec![0u8; BUS_SIZE]).unwrap();
    std::fs::rename(&other, &bus).unwrap();
    let e = b.recv_timeout(Duration::from_secs(2)).unwrap_err();
    assert!(e.to_string().contains("replaced"), "{e}");

    let bus2 = dir.path().join("bus2");
    let c = Interface::attach(&bus2).unwrap();
    std::fs::remove_file(&bus2).unwrap();
    let e = c.recv_timeout(Duration::from_secs(2)).unwrap_err();
    assert!(e.to_string().contains("removed"), "{e}");

    // A poll loop that only clears wake-ups learns it too.
    let bus3 = dir.path().join("bus3");
    let d = Interface::attach(&bus3).unwrap();
    std::fs::remove_file(&bus3).unwrap();
    let e = d.clear_wakeups().unwrap_err();
    assert!(e.to_string().contains("removed"), "{e}");
}

#[test]
fn spinning_and_busy_polling_receivers_get_frames_and_honour_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = Interface::attach(&bus).unwrap();
    for spin in [Duration::from_micros(50), Duration::MAX] {
        let b = Arc::new(Interface::attach(&bus).unwrap());
        b.set_spin(spin);
        assert_eq!(b.spin(), spin);
        let t = Instant::now();
        assert!(b
            .recv_timeout(Duration::from_millis(100))
            .unwrap()
            .is_none());
        assert!(t.elapsed() >= Duration::from_millis(100));
        let b2 = b.clone();
        let rx = std::thread::spawn(move || b2.recv_timeout(Duration::from_secs(5)).unwrap());
        std::thread::sleep(Duration::from_millis(20));
        a.send(&frame(MacAddr::BROADCAST, a.mac(), 7, 60)).unwrap();
        assert_eq!(rx.join().unwrap().unwrap().data[14], 7);
        // Down ends a busy-polling receive too.
        let b3 = b.clone();
        let rx = std::thread::spawn(move || b3.recv());
        std::thread::sleep(Duration::from_millis(20));
        b.down();
        assert!(matches!(rx.join().unwrap(), Err(Error::Down)));
    }
}

#[test]
fn many_frames_arrive_in_order_through_the_batched_receive_path() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let a = Interface::attach(&bus).unwrap();
    let b = Interface::attach(&bus).unwrap();
    let c = Interface::attach(&bus).unwrap();
    // Interleave frames for b with frames for c, more than one batch.
    for k in 0..100u8 {
        let to = if k % 3 == 0 { c.mac() } else { b.mac() };
        a.send(&frame(to, a.mac(), k, 60 + usize::from(k))).unwrap();
    }
    let got: Vec<u8> = std::iter::from_fn(|| b.try_recv().unwrap().map(|f| f.data[14])).collect();
    let want: Vec<u8> = (0..100u8).filter(|k| k % 3 != 0).collect();
    assert_eq!(got, want);
    assert_eq!(b.counters().rx_filtered, 34);
}
