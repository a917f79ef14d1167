//! A [`smoltcp`] network device on a shmif bus (feature `smoltcp`).
//!
//! [`ShmifDevice`] wraps an [`Interface`] (owned, borrowed or in an `Arc`)
//! and implements [`smoltcp::phy::Device`] for Ethernet frames of up to
//! 1514 bytes. With it, a process runs a whole userspace TCP/IP host on a
//! bus: ARP, IPv6 neighbour discovery, ICMP echo, TCP and UDP sockets.
//!
//! Receiving copies each frame once, into a buffer the device owns and
//! reuses. Sending queues the frames smoltcp produces in one poll in a
//! reused buffer and writes them to the bus together, under one hold of the
//! bus lock and with one wake-up for the readers ([`Interface::send_batch`]).
//! Queued frames go out when [`ShmifDevice::flush`] is called, when the
//! device waits ([`ShmifDevice::wait`], [`ShmifDevice::poll_wait`]), when
//! the queue is full, and when the device is dropped. A program that sleeps
//! some other way (on [`Interface::wakeup_fd`] with its own `poll`, say)
//! calls [`ShmifDevice::flush`] after each `poll`, or turns batching off
//! with [`ShmifDevice::set_tx_batch`].
//!
//! A host that receives bulk TCP does better with its ingress bounded than
//! with [`smoltcp::iface::Interface::poll`], which takes in every waiting
//! frame before it sends anything: on a jumbo extended bus a receiver took
//! in a whole window before it acknowledged any of it, and its sender slept
//! once a window. Calling `poll_maintenance`, then `poll_ingress_single` a
//! few frames' worth (the `shmif` tool takes 256 KiB a poll), then
//! `poll_egress` and [`ShmifDevice::flush`], and reading the sockets in
//! between, lets the acknowledgements overlap the sender's work; it moved
//! 1.2-1.7x more between two `shmif host`s (`BENCHMARKS.md`, "An ingress
//! budget"). [`ShmifDevice::wait`] returns at once while frames wait.
//!
//! Errors from the bus cannot be returned through smoltcp's token calls: the
//! first one is kept and returned by the next [`ShmifDevice::flush`],
//! [`ShmifDevice::wait`] or [`ShmifDevice::take_error`]; frames that could
//! not be sent are dropped, as a network card drops them.
//!
//! ```no_run
//! use shmif::smoltcp_device::ShmifDevice;
//! use smoltcp::iface::{Config, Interface as IpInterface, SocketSet};
//! use smoltcp::time::Instant;
//! use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
//!
//! let mut dev = ShmifDevice::new(shmif::Interface::attach("/tmp/bus")?);
//! let mac = EthernetAddress(dev.interface().mac().0);
//! let mut ip = IpInterface::new(Config::new(mac.into()), &mut dev, Instant::now());
//! ip.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(10, 0, 0, 1), 24)).unwrap());
//! let mut sockets = SocketSet::new(vec![]);
//! loop {
//!     // Answers ARP and ping; add sockets to do more.
//!     ip.poll(Instant::now(), &mut dev, &mut sockets);
//!     dev.poll_wait(&mut ip, &sockets, None)?;
//! }
//! # Ok::<(), shmif::Error>(())
//! ```

use crate::error::Error;
use crate::interface::Interface;
use crate::wire::MAX_FRAME_LEN;
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use std::borrow::Borrow;
use std::time::Duration;

/// The Ethernet MTU the device reports on a NetBSD (version-3) bus: 1500
/// bytes of IP plus the 14-byte Ethernet header, the most a NetBSD peer
/// accepts. On an extended bus it is the bus's frame limit
/// ([`Interface::max_frame_len`]).
pub const MTU: usize = MAX_FRAME_LEN;

/// Queued bytes at which the send queue is written out whatever the frame
/// count: 128 full version-3 frames, so that a batch of jumbo frames stays
/// a small part of even the smallest ring.
const TX_BATCH_BYTES: usize = DEFAULT_TX_BATCH * MAX_FRAME_LEN;

/// How many frames [`ShmifDevice`] queues before it writes them out, unless
/// changed with [`ShmifDevice::set_tx_batch_limit`]: 128 full frames are
/// about 200 KiB, a fifth of the bus's ring.
pub const DEFAULT_TX_BATCH: usize = 128;

/// Frames waiting to be written, back to back in one reused buffer.
#[derive(Debug)]
struct TxQueue {
    /// The frames' bytes, concatenated.
    buf: Vec<u8>,
    /// Where each frame ends in `buf`.
    ends: Vec<usize>,
    /// Flush when this many frames are queued (1: no batching).
    limit: usize,
}

impl TxQueue {
    fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        TxQueue {
            buf: Vec::with_capacity(TX_BATCH_BYTES + MTU),
            ends: Vec::with_capacity(limit),
            limit,
        }
    }

    /// Writes the queued frames to the bus and empties the queue, whatever
    /// the outcome.
    fn flush(&mut self, iface: &Interface) -> Result<(), Error> {
        if self.ends.is_empty() {
            return Ok(());
        }
        let buf = &self.buf;
        let ends = &self.ends;
        let frames = (0..ends.len()).map(|i| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &buf[start..ends[i]]
        });
        let r = iface.send_batch(frames);
        self.buf.clear();
        self.ends.clear();
        r
    }
}

/// A shmif [`Interface`] as a [`smoltcp::phy::Device`].
///
/// `I` is how the interface is held: `Interface` (owned), `&Interface`, or
/// `Arc<Interface>` (to take it [`Interface::down`] from another thread,
/// for example on a signal, which makes a blocked [`ShmifDevice::wait`]
/// return [`Error::Down`]).
#[derive(Debug)]
pub struct ShmifDevice<I: Borrow<Interface> = Interface> {
    iface: I,
    /// The receive buffer, reused for every frame: the bus's frame limit.
    rx: Box<[u8]>,
    /// Length of a frame already read into `rx` and not yet handed over.
    rx_pending: Option<usize>,
    tx: TxQueue,
    /// The first bus error seen by a token, not yet reported.
    error: Option<Error>,
    checksum: ChecksumCapabilities,
}

impl<I: Borrow<Interface>> ShmifDevice<I> {
    /// A device over `iface`, which should be up (attached), with send
    /// batching on and checksums computed and verified.
    ///
    /// It turns the interface's receive coalescing off
    /// ([`Interface::set_rx_coalesce`]): a TCP/IP stack answers what it
    /// receives (acknowledgements open the sender's window), and a nap
    /// after each burst cost `shmif host` ↔ `shmif host` TCP on a jumbo
    /// extended bus about 15 % (`BENCHMARKS.md`, "Receive coalescing").
    pub fn new(iface: I) -> Self {
        iface.borrow().set_rx_coalesce(Duration::ZERO);
        let rx = vec![0u8; iface.borrow().max_frame_len()].into_boxed_slice();
        ShmifDevice {
            iface,
            rx,
            rx_pending: None,
            tx: TxQueue::new(DEFAULT_TX_BATCH),
            error: None,
            checksum: ChecksumCapabilities::default(),
        }
    }

    /// The interface underneath.
    pub fn interface(&self) -> &Interface {
        self.iface.borrow()
    }

    /// Turns send batching on (the default) or off. Off, every frame is
    /// written to the bus, and the readers woken, as soon as smoltcp
    /// produces it.
    pub fn set_tx_batch(&mut self, on: bool) {
        self.set_tx_batch_limit(if on { DEFAULT_TX_BATCH } else { 1 });
    }

    /// Sets how many frames are queued at most before they are written out
    /// together (1 turns batching off). Queued frames are sent first.
    pub fn set_tx_batch_limit(&mut self, frames: usize) {
        let _ = self.flush();
        self.tx = TxQueue::new(frames);
    }

    /// Whether received IPv4 header, TCP, UDP and ICMP checksums are
    /// verified (the default). Checksums of sent packets are always
    /// computed, since other peers on the bus (NetBSD kernels) check them.
    /// A bus is memory shared on one host: frames cannot be damaged in
    /// transit, so a host that trusts the other processes on its bus may
    /// skip the check and save the time.
    pub fn set_verify_checksums(&mut self, on: bool) {
        let c = if on { Checksum::Both } else { Checksum::Tx };
        let mut caps = ChecksumCapabilities::default();
        caps.ipv4 = c;
        caps.udp = c;
        caps.tcp = c;
        caps.icmpv4 = c;
        caps.icmpv6 = c;
        self.checksum = caps;
    }

    /// Frames queued and not yet written to the bus.
    pub fn queued(&self) -> usize {
        self.tx.ends.len()
    }

    /// Writes the queued frames to the bus now, and reports the first error
    /// kept since the last report.
    pub fn flush(&mut self) -> Result<(), Error> {
        let r = self.tx.flush(self.iface.borrow());
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        r
    }

    /// The first bus error kept since the last report, if any.
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    fn keep_error(&mut self, e: Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// Sends what is queued, then sleeps until a frame for this interface
    /// may be waiting or `timeout` passes (`None`: no limit). Returns at
    /// once if a frame is already waiting. Returns [`Error::Down`] if the
    /// interface is (or is taken) down.
    ///
    /// No wake-up is lost: pending change events are consumed before the
    /// ring is looked at, so a frame written after that look raises a new
    /// one. The frame found by the look is kept for the next
    /// [`smoltcp::phy::Device::receive`].
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        self.flush()?;
        if self.rx_pending.is_some() || timeout == Some(Duration::ZERO) {
            return Ok(());
        }
        let iface = self.iface.borrow();
        iface.clear_wakeups()?;
        if let Some(r) = iface.try_recv_into(&mut self.rx[..])? {
            self.rx_pending = Some(r.len);
            return Ok(());
        }
        iface.wait_for_wakeup(timeout).map(drop)
    }

    /// Sends what is queued, then sleeps until the next frame arrives or
    /// smoltcp's next timer is due ([`smoltcp::iface::Interface::poll_delay`]),
    /// whichever comes first, and at most `max` if given. Call it after
    /// each [`smoltcp::iface::Interface::poll`].
    pub fn poll_wait(
        &mut self,
        ip: &mut smoltcp::iface::Interface,
        sockets: &smoltcp::iface::SocketSet<'_>,
        max: Option<Duration>,
    ) -> Result<(), Error> {
        let delay = ip
            .poll_delay(smoltcp::time::Instant::now(), sockets)
            .map(Duration::from);
        let timeout = match (delay, max) {
            (Some(d), Some(m)) => Some(d.min(m)),
            (d, m) => d.or(m),
        };
        self.wait(timeout)
    }
}

impl<I: Borrow<Interface>> Drop for ShmifDevice<I> {
    fn drop(&mut self) {
        let _ = self.tx.flush(self.iface.borrow());
    }
}

/// A received frame, lent from the device's buffer.
#[derive(Debug)]
pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame)
    }
}

/// Room for one frame to send, in the device's queue.
#[derive(Debug)]
pub struct TxToken<'a> {
    iface: &'a Interface,
    tx: &'a mut TxQueue,
    error: &'a mut Option<Error>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let start = self.tx.buf.len();
        self.tx.buf.resize(start + len, 0);
        let r = f(&mut self.tx.buf[start..]);
        self.tx.ends.push(start + len);
        if self.tx.ends.len() >= self.tx.limit || self.tx.buf.len() >= TX_BATCH_BYTES {
            if let Err(e) = self.tx.flush(self.iface) {
                if self.error.is_none() {
                    *self.error = Some(e);
                }
            }
        }
        r
    }
}

impl<I: Borrow<Interface>> phy::Device for ShmifDevice<I> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let len = match self.rx_pending.take() {
            Some(len) => len,
            None => match self.iface.borrow().try_recv_into(&mut self.rx[..]) {
                Ok(Some(r)) => r.len,
                Ok(None) => return None,
                Err(e) => {
                    self.keep_error(e);
                    return None;
                }
            },
        };
        Some((
            RxToken {
                frame: &self.rx[..len.min(self.rx.len())],
            },
            TxToken {
                iface: self.iface.borrow(),
                tx: &mut self.tx,
                error: &mut self.error,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken {
            iface: self.iface.borrow(),
            tx: &mut self.tx,
            error: &mut self.error,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // The bus's frame limit (known when the device was made).
        caps.max_transmission_unit = self.rx.len();
        caps.max_burst_size = None;
        caps.checksum = self.checksum.clone();
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, RxToken as _, TxToken as _};
    use smoltcp::time::Instant;

    fn frame(dst: [u8; 6], src: [u8; 6], n: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5, n]);
        f
    }

    #[test]
    fn frames_cross_between_devices() {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        let mut a = ShmifDevice::new(Interface::attach(&bus).unwrap());
        let b = Interface::attach(&bus).unwrap();
        let mut b = ShmifDevice::new(&b);
        assert!(b.receive(Instant::now()).is_none());

        let dst = b.interface().mac().0;
        let src = a.interface().mac().0;
        for n in 0..3u8 {
            let f = frame(dst, src, n);
            a.transmit(Instant::now())
                .unwrap()
                .consume(f.len(), |buf| buf.copy_from_slice(&f));
        }
        assert_eq!(a.queued(), 3);
        assert!(b.receive(Instant::now()).is_none(), "batched, not sent yet");
        a.flush().unwrap();
        assert_eq!(a.queued(), 0);
        assert_eq!(a.interface().counters().tx_frames, 3);

        b.wait(Some(Duration::from_secs(1))).unwrap();
        for n in 0..3u8 {
            let (rx, _tx) = b.receive(Instant::now()).expect("frame");
            rx.consume(|got| assert_eq!(got, &frame(dst, src, n)[..]));
        }
        assert!(b.receive(Instant::now()).is_none());
    }

    #[test]
    fn unbatched_sends_at_once_and_limit_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        let mut a = ShmifDevice::new(Interface::attach(&bus).unwrap());
        let b = Interface::attach(&bus).unwrap();
        let f = frame([0xff; 6], a.interface().mac().0, 1);
        a.set_tx_batch(false);
        a.transmit(Instant::now())
            .unwrap()
            .consume(f.len(), |buf| buf.copy_from_slice(&f));
        assert_eq!(a.queued(), 0);
        assert_eq!(b.try_recv().unwrap().map(|r| r.data), Some(f.clone()));

        a.set_tx_batch_limit(2);
        for _ in 0..5 {
            a.transmit(Instant::now())
                .unwrap()
                .consume(f.len(), |buf| buf.copy_from_slice(&f));
        }
        assert_eq!(a.queued(), 1);
        assert_eq!(a.interface().counters().tx_frames, 5);
        drop(a);
        let mut n = 0;
        while b.try_recv().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 5, "the last frame is flushed on drop");
    }

    #[test]
    fn wait_times_out_and_reports_down() {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        let iface = std::sync::Arc::new(Interface::attach(&bus).unwrap());
        assert!(!iface.rx_coalesce().is_zero());
        let mut dev = ShmifDevice::new(iface.clone());
        assert!(
            iface.rx_coalesce().is_zero(),
            "a TCP/IP stack answers at once"
        );
        let t = std::time::Instant::now();
        dev.wait(Some(Duration::from_millis(30))).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(25));
        let i2 = iface.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            i2.down();
        });
        assert!(matches!(dev.wait(None), Err(Error::Down)));
        h.join().unwrap();
    }

    #[test]
    fn bus_errors_are_kept_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        let mut dev = ShmifDevice::new(Interface::attach(&bus).unwrap());
        dev.set_tx_batch(false);
        // Too short for Ethernet: the bus refuses it.
        dev.transmit(Instant::now())
            .unwrap()
            .consume(4, |buf| buf.fill(0));
        assert!(matches!(
            dev.take_error(),
            Some(Error::FrameSize { len: 4, .. })
        ));
        assert!(dev.take_error().is_none());
        dev.interface().down();
        assert!(dev.receive(Instant::now()).is_none());
        assert!(matches!(dev.flush(), Err(Error::Down)));
    }

    #[test]
    fn capabilities_are_ethernet_1514() {
        let mut dev = ShmifDevice::new(Interface::new());
        let c = dev.capabilities();
        assert_eq!(c.medium, Medium::Ethernet);
        assert_eq!(c.max_transmission_unit, 1514);
        assert_eq!(c.ip_mtu(), 1500);
        dev.set_verify_checksums(false);
        assert!(matches!(dev.capabilities().checksum.tcp, Checksum::Tx));
    }
}
