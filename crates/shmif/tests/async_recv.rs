//! `AsyncInterface` (feature `tokio`): a pending async receive wakes when
//! another thread or process sends, times out without spinning, loses
//! nothing when cancelled, keeps order under a burst, and ends when the
//! interface is taken down.
#![cfg(feature = "tokio")]

use shmif::async_io::AsyncInterface;
use shmif::{Error, Interface, MacAddr};
use std::path::Path;
use std::process::Stdio;

mod common;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Environment variable that turns this test binary into a sending child.
const CHILD_BUS: &str = "SHMIF_ASYNC_TEST_CHILD_BUS";

fn frame(src: MacAddr, tag: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&tag.to_be_bytes());
    f.resize(len, (tag % 251) as u8);
    f
}

fn tag_of(f: &[u8]) -> u32 {
    u32::from_be_bytes(f[14..18].try_into().unwrap())
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[tokio::test]
async fn a_blocked_recv_wakes_on_a_send_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let rx = AsyncInterface::attach(&bus).unwrap();
    let tx = Interface::attach(&bus).unwrap();
    let sent = frame(tx.mac(), 7, 100);
    let to_send = sent.clone();
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        tx.send(&to_send).unwrap();
        tx
    });
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the send should wake the receive")
        .unwrap();
    let waited = start.elapsed();
    assert_eq!(got.data, sent);
    assert!(
        waited >= Duration::from_millis(150),
        "returned before the send: {waited:?}"
    );
    eprintln!("async recv woke {waited:?} after starting to wait (send at 200 ms)");
    let tx = sender.join().unwrap();
    assert_eq!(got.sender, tx.sender_id());
}

/// Entry point of the sending child process; does nothing in a normal run.
#[test]
#[ignore = "entry point for the child process of another test"]
fn child_sender() {
    let Some(bus) = std::env::var_os(CHILD_BUS) else {
        return;
    };
    let tx = Interface::attach(Path::new(&bus)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    tx.send(&frame(tx.mac(), 0xc0ffee, 200)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_recv_wakes_on_a_send_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let rx = AsyncInterface::attach(&bus).unwrap();
    let mut child = common::this_test_binary()
        .args(["--exact", "child_sender", "--ignored", "--nocapture"])
        .env(CHILD_BUS, &bus)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    let status = child.wait().unwrap();
    let got = got.expect("the other process's send should wake the receive");
    let got = got.unwrap();
    assert!(status.success(), "child: {status}");
    assert_eq!(tag_of(&got.data), 0xc0ffee);
    assert_eq!(got.data.len(), 200);
}

#[tokio::test]
async fn a_timeout_waits_without_spinning_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let rx = AsyncInterface::attach(&bus).unwrap();
    let tx = Interface::attach(&bus).unwrap();

    // Nothing is sent: the receive times out. The runtime is this thread's
    // (current_thread), so its CPU time is the waiting's cost.
    let (start, cpu) = (Instant::now(), thread_cpu());
    let r = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    let (waited, spent) = (start.elapsed(), thread_cpu() - cpu);
    assert!(r.is_err(), "nothing was sent, yet got {r:?}");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(
        spent < Duration::from_millis(30),
        "waiting 300 ms used {spent:?} of CPU: a busy loop?"
    );
    eprintln!("300 ms async wait used {spent:?} of CPU");

    // Frames that other peers send while nobody is receiving are still
    // there for the next receive, and traffic for other MACs wakes the
    // receive without being delivered.
    let other = MacAddr([0x02, 0, 0, 0, 0, 9]);
    let mut unicast = frame(tx.mac(), 1, 60);
    unicast[..6].copy_from_slice(&other.0);
    tx.send(&unicast).unwrap();
    let r = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
    assert!(r.is_err(), "a frame for another MAC was delivered: {r:?}");
    assert!(rx.interface().counters().rx_filtered >= 1);

    tx.send(&frame(tx.mac(), 2, 61)).unwrap();
    tx.send(&frame(tx.mac(), 3, 62)).unwrap();
    let a = rx.recv().await.unwrap();
    let mut buf = [0u8; 1514];
    let b = rx.recv_into(&mut buf).await.unwrap();
    assert_eq!((tag_of(&a.data), a.data.len()), (2, 61));
    assert_eq!((tag_of(&buf[..b.len]), b.len), (3, 62));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_another_thread_arrives_complete_and_in_order() {
    const N: u32 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let rx = AsyncInterface::attach(&bus).unwrap();
    let tx = Interface::attach(&bus).unwrap();
    let sender = std::thread::spawn(move || {
        let mut tag = 0;
        while tag < N {
            let batch: Vec<Vec<u8>> = (tag..(tag + 7).min(N))
                .map(|t| frame(tx.mac(), t, 60 + (t % 40) as usize))
                .collect();
            tx.send_batch(batch.iter().map(Vec::as_slice)).unwrap();
            tag += batch.len() as u32;
            if tag % 700 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let deadline = Duration::from_secs(30);
    for want in 0..N {
        let f = tokio::time::timeout(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("frame {want} never came"))
            .unwrap();
        assert_eq!(tag_of(&f.data), want);
        assert_eq!(f.data.len(), 60 + (want % 40) as usize);
    }
    sender.join().unwrap();
    let c = rx.interface().counters();
    assert_eq!((c.rx_frames, c.overruns), (u64::from(N), 0));
}

#[tokio::test]
async fn taking_the_interface_down_ends_a_pending_recv() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let iface = Arc::new(Interface::attach(&bus).unwrap());
    let rx = AsyncInterface::from_arc(Arc::clone(&iface)).unwrap();
    let downer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        iface.down();
    });
    let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("down() should wake the receive");
    assert!(matches!(r, Err(Error::Down)), "{r:?}");
    downer.join().unwrap();
}

#[tokio::test]
async fn an_interface_without_a_bus_is_refused() {
    let r = AsyncInterface::new(Interface::new());
    assert!(matches!(r, Err(Error::NoLink)), "{r:?}");
}
