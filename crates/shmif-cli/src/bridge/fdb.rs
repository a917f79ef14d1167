//! The learning bridge's forwarding table: which port each source MAC
//! address was last seen behind, with ageing, and the sign of a loop (an
//! address flapping between ports). Pure: the caller passes the time.

use shmif::MacAddr;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many entries the table holds at most; past that, the oldest are
/// forgotten (a flood of made-up source addresses cannot grow it without
/// bound).
pub const MAX_ENTRIES: usize = 16_384;

/// Moves of one address between ports within this time count as
/// flapping (a loop), not as a station that moved.
pub const FLAP_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Entry {
    port: usize,
    seen: Instant,
}

/// An address seen behind another port than before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The port it was behind.
    pub from: usize,
    /// Whether it moved within [`FLAP_WINDOW`] of last being seen there:
    /// the first such move is reported (once per address).
    pub flapping: bool,
}

/// Source address → port, with ageing.
#[derive(Debug)]
pub struct Fdb {
    entries: HashMap<MacAddr, Entry>,
    ageing: Duration,
    warned: HashMap<MacAddr, ()>,
}

impl Fdb {
    /// An empty table whose entries live `ageing` after last being seen.
    pub fn new(ageing: Duration) -> Self {
        Fdb {
            entries: HashMap::new(),
            ageing,
            warned: HashMap::new(),
        }
    }

    /// Records that `mac` sent from `port` at `now`. Group addresses are
    /// not learnt. Returns where it was before if it moved.
    pub fn learn(&mut self, mac: MacAddr, port: usize, now: Instant) -> Option<Moved> {
        if mac.is_group() {
            return None;
        }
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&mac) {
            self.expire(now);
            if self.entries.len() >= MAX_ENTRIES {
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.seen)
                    .map(|(m, _)| *m)
                {
                    self.entries.remove(&oldest);
                }
            }
        }
        let prev = self.entries.insert(mac, Entry { port, seen: now });
        match prev {
            Some(e) if e.port != port && now.duration_since(e.seen) < self.ageing => {
                let quick = now.duration_since(e.seen) < FLAP_WINDOW;
                let flapping = quick && self.warned.insert(mac, ()).is_none();
                Some(Moved {
                    from: e.port,
                    flapping,
                })
            }
            _ => None,
        }
    }

    /// The port `mac` was last seen behind, if it is known and fresh.
    pub fn lookup(&self, mac: MacAddr, now: Instant) -> Option<usize> {
        if mac.is_group() {
            return None;
        }
        self.entries
            .get(&mac)
            .filter(|e| now.duration_since(e.seen) < self.ageing)
            .map(|e| e.port)
    }

    /// Forgets every address behind `port` (it went away).
    pub fn forget_port(&mut self, port: usize) {
        self.entries.retain(|_, e| e.port != port);
    }

    /// Drops the entries not seen for the ageing time.
    pub fn expire(&mut self, now: Instant) {
        let ageing = self.ageing;
        self.entries
            .retain(|_, e| now.duration_since(e.seen) < ageing);
    }

    /// How many addresses it knows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it knows none.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0xb2, 0xa0, 0, 0, 0, n])
    }

    #[test]
    fn learns_looks_up_and_ages() {
        let t0 = Instant::now();
        let mut f = Fdb::new(Duration::from_secs(300));
        assert_eq!(f.lookup(mac(1), t0), None);
        assert_eq!(f.learn(mac(1), 2, t0), None);
        assert_eq!(f.lookup(mac(1), t0), Some(2));
        assert_eq!(f.lookup(mac(1), t0 + Duration::from_secs(299)), Some(2));
        assert_eq!(f.lookup(mac(1), t0 + Duration::from_secs(300)), None);
        f.expire(t0 + Duration::from_secs(301));
        assert!(f.is_empty());
    }

    #[test]
    fn group_addresses_are_never_learnt() {
        let t0 = Instant::now();
        let mut f = Fdb::new(Duration::from_secs(300));
        assert_eq!(f.learn(MacAddr::BROADCAST, 1, t0), None);
        assert_eq!(f.lookup(MacAddr::BROADCAST, t0), None);
        assert!(f.is_empty());
    }

    #[test]
    fn a_quick_move_is_flapping_once_a_slow_one_is_a_move() {
        let t0 = Instant::now();
        let mut f = Fdb::new(Duration::from_secs(300));
        f.learn(mac(1), 0, t0);
        let m = f.learn(mac(1), 1, t0 + Duration::from_millis(10)).unwrap();
        assert_eq!(
            m,
            Moved {
                from: 0,
                flapping: true
            }
        );
        let m = f.learn(mac(1), 0, t0 + Duration::from_millis(20)).unwrap();
        assert_eq!(
            m,
            Moved {
                from: 1,
                flapping: false
            },
            "reported once"
        );
        f.learn(mac(2), 0, t0);
        let m = f.learn(mac(2), 1, t0 + Duration::from_secs(5)).unwrap();
        assert!(!m.flapping);
        assert_eq!(f.lookup(mac(2), t0 + Duration::from_secs(5)), Some(1));
    }

    #[test]
    fn forgetting_a_port_and_the_size_bound() {
        let t0 = Instant::now();
        let mut f = Fdb::new(Duration::from_secs(300));
        f.learn(mac(1), 0, t0);
        f.learn(mac(2), 1, t0);
        f.forget_port(0);
        assert_eq!(f.lookup(mac(1), t0), None);
        assert_eq!(f.lookup(mac(2), t0), Some(1));
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let b = i.to_be_bytes();
            f.learn(
                MacAddr([0x02, 0, b[0], b[1], b[2], b[3]]),
                3,
                t0 + Duration::from_micros(u64::from(i)),
            );
        }
        assert_eq!(f.len(), MAX_ENTRIES);
    }
}
