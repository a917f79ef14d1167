//! Telling the user that a bus was repaired: once per episode, on standard
//! error, not once per frame.
//!
//! The library repairs a bus whose contents are impossible (a crashed or
//! misbehaving peer, a stray write into the file) and counts each repair in
//! [`shmif::Counters::ring_repairs`]; traffic goes on. A hostile peer can
//! make that happen thousands of times a second, so a command says it when
//! repairs start and stays quiet until they have stopped for
//! [`EPISODE_GAP`].

use shmif::Counters;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Repairs this far apart belong to different episodes.
pub const EPISODE_GAP: Duration = Duration::from_secs(5);

/// Watches an interface's repair counter and reports each episode once.
#[derive(Debug)]
pub struct RepairNotice {
    bus: PathBuf,
    seen: u64,
    last: Option<Instant>,
}

impl RepairNotice {
    /// A watch for the bus at `bus` (named in the message).
    pub fn new(bus: &Path) -> Self {
        RepairNotice {
            bus: bus.to_path_buf(),
            seen: 0,
            last: None,
        }
    }

    /// Looks at `c`; prints one line when repairs start (again); returns
    /// whether it printed.
    pub fn check(&mut self, c: &Counters) -> bool {
        self.check_at(c.ring_repairs, Instant::now())
    }

    fn check_at(&mut self, repairs: u64, now: Instant) -> bool {
        if repairs <= self.seen {
            return false;
        }
        self.seen = repairs;
        let new_episode = self
            .last
            .is_none_or(|t| now.duration_since(t) >= EPISODE_GAP);
        self.last = Some(now);
        if new_episode {
            eprintln!(
                "shmif: warning: {}: the bus held impossible contents (a crashed or misbehaving \
                 peer, or a stray write into the file); repaired it and carrying on ({repairs} \
                 {} so far; more are only counted)",
                self.bus.display(),
                if repairs == 1 { "repair" } else { "repairs" }
            );
        }
        new_episode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_episode() {
        let t0 = Instant::now();
        let mut n = RepairNotice::new(Path::new("/tmp/bus"));
        assert!(!n.check_at(0, t0), "nothing repaired, nothing said");
        assert!(n.check_at(3, t0), "the first repairs are reported");
        assert!(
            !n.check_at(900, t0 + Duration::from_secs(1)),
            "the same episode"
        );
        assert!(
            !n.check_at(900, t0 + Duration::from_secs(30)),
            "no new repair"
        );
        assert!(
            n.check_at(901, t0 + Duration::from_secs(31)),
            "a new episode"
        );
    }
}
