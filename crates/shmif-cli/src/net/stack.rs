//! A TCP/IP host on a bus: a shmif interface, smoltcp's interface over it,
//! and the sockets.

use super::dad::{Guard, Guarded};
use crate::cli::bus_opts::BusOpts;
use crate::cli::error::lib_error;
use crate::cli::repair::RepairNotice;
use anyhow::{anyhow, Context, Result};
use shmif::smoltcp_device::ShmifDevice;
use shmif::{Interface, MacAddr};
use smoltcp::iface::{Config, Interface as IpInterface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Default size of each TCP socket's send and receive buffer, in KiB. Large
/// enough to keep the bus busy, small enough that one window of data (plus
/// its acknowledgements) fits in the bus's 1 MiB ring, so a sender never
/// laps a receiver that is keeping up.
pub const DEFAULT_TCP_BUFFER_KIB: usize = 512;

/// How much one [`Stack::poll`] takes in, in bytes of the bus's largest
/// frames (at least two frames): four on a jumbo bus, 173 on a NetBSD one.
/// Measured with `bench/host-jumbo.sh` (1,000 MiB runs, builds
/// interleaved): without a budget jumbo TCP moved 2,480-3,480 MiB/s, with
/// this one 2,800-5,135.
pub const INGRESS_BYTES: usize = 256 * 1024;

/// How many of the bus's largest frames a default TCP buffer holds at
/// least, on an extended bus (whose registered readers are lossless, so a
/// window larger than the ring is held back, never lost): with 64 KiB
/// frames, 512 KiB is only eight segments in flight, and throughput then
/// waits on acknowledgements (measured: 1.45 GiB/s at 512 KiB, 2.2 at 2
/// MiB, less again at 4 and 8 MiB; bench/host-jumbo.sh).
pub const TCP_BUFFER_FRAMES: usize = 32;

/// The TCP buffer size, in KiB, for sockets on `shmif`'s bus: `given`
/// (`--tcp-buffer`) if set; otherwise [`DEFAULT_TCP_BUFFER_KIB`] on a
/// NetBSD bus, and on an extended bus that or [`TCP_BUFFER_FRAMES`] of its
/// largest frames, whichever is more.
pub fn tcp_buffer_kib(given: Option<usize>, shmif: &Interface) -> usize {
    given.unwrap_or_else(|| {
        if shmif.is_extended() {
            DEFAULT_TCP_BUFFER_KIB.max((TCP_BUFFER_FRAMES * shmif.max_frame_len()).div_ceil(1024))
        } else {
            DEFAULT_TCP_BUFFER_KIB
        }
    })
}

/// A TCP/IP host on a bus: a shmif interface, smoltcp's interface over it,
/// and the sockets.
pub struct Stack {
    /// The shmif interface (shared with the signal watcher, which takes it
    /// down to stop the stack).
    pub shmif: Arc<Interface>,
    /// The smoltcp device over `shmif`.
    pub dev: ShmifDevice<Arc<Interface>>,
    /// smoltcp's IP interface.
    pub ip: IpInterface,
    /// The sockets.
    pub sockets: SocketSet<'static>,
    /// Says once per episode that the bus was repaired.
    repairs: RepairNotice,
    /// Polls since the repair counter was last looked at.
    polls: u32,
    /// Frames one [`Stack::poll`] takes in at most (see [`INGRESS_BYTES`]).
    ingress_budget: usize,
    /// Whether the last poll stopped at its budget with frames still
    /// waiting, so that [`Stack::wait`] must not sleep.
    backlog: bool,
    /// An error from writing out a poll's frames, for the next wait.
    flush_error: Option<shmif::Error>,
    /// Answers duplicate address probes for this stack's addresses, and
    /// notes the neighbours heard from.
    pub guard: Guard,
}

impl Stack {
    /// Attaches to `bus` (with `mac`, or a random one; opened as `opts`
    /// says) and sets up an IP interface with `addrs`.
    pub fn attach(
        bus: &Path,
        opts: &BusOpts,
        mac: Option<MacAddr>,
        addrs: &[IpCidr],
    ) -> Result<Stack> {
        // The library's message names the bus already.
        let shmif = opts.attach(bus, mac).map_err(lib_error)?;
        let shmif = Arc::new(shmif);
        let guard = Guard::new(shmif.clone(), addrs.iter().map(|c| c.address()).collect());
        // Received checksums are verified (the device's default): skipping
        // that made no measurable difference to throughput here.
        let mut dev = ShmifDevice::new(shmif.clone());
        let mut config = Config::new(EthernetAddress(shmif.mac().0).into());
        config.random_seed = shmif.sender_id();
        let mut ip = IpInterface::new(config, &mut dev, smoltcp::time::Instant::now());
        ip.update_ip_addrs(|a| {
            for c in addrs {
                let _ = a.push(*c);
            }
        });
        let ingress_budget = (INGRESS_BYTES / shmif.max_frame_len()).max(2);
        Ok(Stack {
            shmif,
            dev,
            ip,
            sockets: SocketSet::new(vec![]),
            repairs: RepairNotice::new(bus),
            polls: 0,
            ingress_budget,
            backlog: false,
            flush_error: None,
            guard,
        })
    }

    /// Runs smoltcp once: takes in the waiting frames, up to this stack's
    /// budget ([`INGRESS_BYTES`]), then sends what the sockets have. Returns
    /// whether a socket may have changed state or frames are still waiting;
    /// in the latter case what this poll queued is written to the bus at
    /// once and the next [`Stack::wait`] does not sleep.
    ///
    /// The budget is what lets a receiver's acknowledgements overlap its
    /// sender's work: taking in every waiting frame first, a `--tcp-sink`
    /// on a jumbo bus took in its whole window (32 frames of 64 KiB) before
    /// it read any of it or answered, so that its sender waited idle for
    /// each window in turn (BENCHMARKS.md, "An ingress budget").
    pub fn poll(&mut self) -> bool {
        use smoltcp::iface::{PollIngressSingleResult, PollResult};
        self.polls = self.polls.wrapping_add(1);
        if self.polls % 256 == 0 {
            self.repairs.check(&self.shmif.counters());
        }
        let now = smoltcp::time::Instant::now();
        let mut dev = Guarded {
            dev: &mut self.dev,
            guard: &mut self.guard,
        };
        self.ip.poll_maintenance(now);
        let mut changed = false;
        self.backlog = true;
        for _ in 0..self.ingress_budget {
            match self
                .ip
                .poll_ingress_single(now, &mut dev, &mut self.sockets)
            {
                PollIngressSingleResult::None => {
                    self.backlog = false;
                    break;
                }
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => changed = true,
            }
        }
        while self.ip.poll_egress(now, &mut dev, &mut self.sockets)
            == PollResult::SocketStateChanged
        {
            changed = true;
        }
        if self.backlog {
            // The answers to what was taken in (acknowledgements, window
            // updates) go out now, not after the backlog; an error is
            // reported by the next wait.
            if let Err(e) = self.dev.flush() {
                self.flush_error.get_or_insert(e);
            }
        }
        changed || self.backlog
    }

    /// Sends what is queued, then sleeps until a frame arrives, smoltcp has
    /// a timer due, or `max` passes; does not sleep while the last
    /// [`Stack::poll`] left frames waiting. Returns `Ok(false)` when the
    /// interface was taken down (by [`crate::cli::signal::StopSignal`]),
    /// `Ok(true)` otherwise.
    pub fn wait(&mut self, max: Option<Duration>) -> Result<bool> {
        self.repairs.check(&self.shmif.counters());
        let r = match self.flush_error.take() {
            Some(e) => Err(e),
            // That poll wrote out what it queued; only smoltcp queues.
            None if self.backlog => Ok(()),
            None => self.dev.poll_wait(&mut self.ip, &self.sockets, max),
        };
        match r {
            Ok(()) => Ok(true),
            Err(shmif::Error::Down) => Ok(false),
            Err(e) => Err(anyhow!(e)),
        }
    }

    /// Whether another interface on the bus has shown it has `addr` (an
    /// ARP packet from it, a neighbour advertisement for it).
    pub fn heard(&self, addr: IpAddress) -> bool {
        self.guard.heard(addr)
    }

    /// This interface's MAC address.
    pub fn mac(&self) -> MacAddr {
        self.shmif.mac()
    }

    /// The interface's addresses, as text: `10.0.0.1/24 fd00::1/64`.
    pub fn addresses_text(&self) -> String {
        self.ip
            .ip_addrs()
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Asks the bus who has `dest` (an ARP request, or an IPv6 neighbour
    /// solicitation), written straight to the bus; smoltcp learns the
    /// answer as it would its own. Does nothing for a `dest` outside this
    /// interface's networks.
    ///
    /// smoltcp sends at most one request per second per interface (its
    /// neighbour cache's rate limit covers every neighbour and both
    /// families), so a host that has just resolved one neighbour would
    /// wait up to a second for the next; asking here first avoids that.
    pub fn solicit(&self, dest: IpAddress) -> Result<()> {
        use super::dad::{arp_frame, ndisc_frame, solicited_node};
        use smoltcp::wire::{ArpOperation, ArpRepr, NdiscRepr};
        let local = |c: &&IpCidr| c.contains_addr(&dest) && c.address() != dest;
        let Some(src) = self.ip.ip_addrs().iter().find(local).map(|c| c.address()) else {
            return Ok(());
        };
        let mac = EthernetAddress(self.mac().0);
        let frame = match (src, dest) {
            (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => arp_frame(
                mac,
                EthernetAddress::BROADCAST,
                ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request,
                    source_hardware_addr: mac,
                    source_protocol_addr: s,
                    target_hardware_addr: EthernetAddress([0; 6]),
                    target_protocol_addr: d,
                },
            ),
            (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
                // To the target's solicited-node group.
                let (group, group_mac) = solicited_node(d);
                let ns = NdiscRepr::NeighborSolicit {
                    target_addr: d,
                    lladdr: Some(mac.into()),
                };
                ndisc_frame(mac, s, group, group_mac, ns)
            }
            _ => return Ok(()),
        };
        self.shmif
            .send(&frame)
            .with_context(|| format!("cannot send a neighbour request for {dest}"))
    }

    /// The source address this host uses towards `dest`, if it has one of
    /// the same family.
    pub fn source_for(&self, dest: IpAddress) -> Option<IpAddress> {
        self.ip
            .ip_addrs()
            .iter()
            .map(|c| c.address())
            .find(|a| std::mem::discriminant(a) == std::mem::discriminant(&dest))
    }
}

/// A new TCP socket with `kib` KiB send and receive buffers, tuned for a
/// bus: no Nagle delay, no delayed ACKs, Reno congestion control.
pub fn tcp_socket(kib: usize) -> tcp::Socket<'static> {
    let bytes = kib.max(4) * 1024;
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; bytes]),
        tcp::SocketBuffer::new(vec![0; bytes]),
    );
    s.set_nagle_enabled(false);
    s.set_ack_delay(None);
    // Without congestion control, a sender that loses frames (its window
    // larger than what the bus's ring holds for the receiver, or several
    // connections at once) retransmits its whole window again and again,
    // overrunning the reader each time; Reno backs off and recovers.
    s.set_congestion_control(tcp::CongestionControl::Reno);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An ARP request from `mac` (at 10.0.0.2) for 10.0.0.1.
    fn arp_request(mac: [u8; 6]) -> Vec<u8> {
        use smoltcp::wire::{ArpOperation, ArpRepr, Ipv4Address};
        let mac = EthernetAddress(mac);
        crate::net::dad::arp_frame(
            mac,
            EthernetAddress::BROADCAST,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: mac,
                source_protocol_addr: Ipv4Address::new(10, 0, 0, 2),
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: Ipv4Address::new(10, 0, 0, 1),
            },
        )
    }

    /// A poll takes in no more than its budget; when frames are left
    /// waiting, what it answered is on the bus at once (not held for a
    /// wait that may never come while the backlog lasts), and the wait
    /// after it returns without sleeping.
    #[test]
    fn a_poll_takes_in_its_budget_answers_at_once_and_the_wait_does_not_sleep() {
        let dir = tempfile::tempdir().unwrap();
        let bus = dir.path().join("bus");
        let addr: IpCidr = "10.0.0.1/24".parse().unwrap();
        let mut stack = Stack::attach(&bus, &BusOpts::for_tests(), None, &[addr]).unwrap();
        let peer = Interface::attach(&bus).unwrap();
        let budget = stack.ingress_budget as u64;
        assert_eq!(budget, (INGRESS_BYTES / 1514) as u64);

        // The ARP request first, then two budgets' worth of frames of an
        // EtherType nobody takes.
        peer.send(&arp_request(peer.mac().0)).unwrap();
        let mut filler = vec![0xff; 6];
        filler.extend_from_slice(&peer.mac().0);
        filler.extend_from_slice(&[0x88, 0xb5]);
        filler.resize(60, 0);
        for _ in 0..2 * budget {
            peer.send(&filler).unwrap();
        }

        assert!(stack.poll(), "frames are left waiting");
        assert_eq!(stack.shmif.counters().rx_frames, budget);
        let reply = peer
            .try_recv()
            .unwrap()
            .expect("the ARP reply is on the bus");
        assert_eq!(&reply.data[12..14], &[0x08, 0x06]);
        assert_eq!(&reply.data[20..22], &[0, 2], "an ARP reply");

        let t = Instant::now();
        assert!(stack.wait(Some(Duration::from_secs(10))).unwrap());
        assert!(t.elapsed() < Duration::from_secs(2), "the wait slept");

        stack.poll();
        assert_eq!(stack.shmif.counters().rx_frames, 2 * budget);
        stack.poll();
        assert_eq!(stack.shmif.counters().rx_frames, 2 * budget + 1);
        assert!(!stack.backlog, "nothing is left waiting");
    }
}
