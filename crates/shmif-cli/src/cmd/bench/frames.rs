//! The benchmark's frames: broadcast Ethernet frames with EtherType 0x88b5
//! whose payload starts with a kind, a trial number and a sequence number,
//! so that a reader counts exactly what it got of each trial.

use shmif::MacAddr;

/// The local-experiment EtherType the benchmark frames use.
pub const ETHERTYPE: u16 = 0x88b5;
/// Offset of the kind byte (after the 14-byte Ethernet header).
const KIND: usize = 14;
/// Offset of the trial number (u32, little-endian).
const TRIAL: usize = 16;
/// Offset of the sequence number (u64, little-endian).
const SEQ: usize = 20;
/// The shortest benchmark frame: the fields above.
pub const MIN_BYTES: usize = SEQ + 8;

/// What a benchmark frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A measured frame: `seq` numbers it within its trial.
    Data,
    /// The end of a trial: `seq` is how many data frames were sent.
    End,
    /// The writer is done: readers exit.
    Quit,
    /// A ping (latency runs): the echo sends it back as `Pong`.
    Ping,
    /// The echo of a `Ping`, with the same `seq`.
    Pong,
    /// Traffic before a trial's measured frames, not counted.
    Warm,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Data => 1,
            Kind::End => 2,
            Kind::Quit => 3,
            Kind::Ping => 4,
            Kind::Pong => 5,
            Kind::Warm => 6,
        }
    }
    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::Data,
            2 => Kind::End,
            3 => Kind::Quit,
            4 => Kind::Ping,
            5 => Kind::Pong,
            6 => Kind::Warm,
            _ => return None,
        })
    }
}

/// A frame of `bytes` bytes (at least [`MIN_BYTES`]) from `src`, to the
/// broadcast address, with the given fields.
pub fn build(bytes: usize, src: MacAddr, kind: Kind, trial: u32, seq: u64) -> Vec<u8> {
    let mut f = vec![0u8; bytes.max(MIN_BYTES)];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    for (i, b) in f[MIN_BYTES..].iter_mut().enumerate() {
        *b = i as u8;
    }
    set(&mut f, kind, trial, seq);
    f
}

/// Rewrites a frame's fields in place (no allocation).
pub fn set(f: &mut [u8], kind: Kind, trial: u32, seq: u64) {
    f[KIND] = kind.code();
    f[TRIAL..TRIAL + 4].copy_from_slice(&trial.to_le_bytes());
    f[SEQ..SEQ + 8].copy_from_slice(&seq.to_le_bytes());
}

/// Rewrites only the sequence number.
pub fn set_seq(f: &mut [u8], seq: u64) {
    f[SEQ..SEQ + 8].copy_from_slice(&seq.to_le_bytes());
}

/// The fields of a benchmark frame, or `None` for any other frame.
pub fn parse(f: &[u8]) -> Option<(Kind, u32, u64)> {
    if f.len() < MIN_BYTES || f[12..14] != ETHERTYPE.to_be_bytes() {
        return None;
    }
    let kind = Kind::from_code(f[KIND])?;
    let trial = u32::from_le_bytes(f[TRIAL..TRIAL + 4].try_into().ok()?);
    let seq = u64::from_le_bytes(f[SEQ..SEQ + 8].try_into().ok()?);
    Some((kind, trial, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut f = build(60, MacAddr([2, 0, 0, 0, 0, 1]), Kind::Data, 7, 9);
        assert_eq!(f.len(), 60);
        assert_eq!(parse(&f), Some((Kind::Data, 7, 9)));
        set_seq(&mut f, 10);
        assert_eq!(parse(&f), Some((Kind::Data, 7, 10)));
        set(&mut f, Kind::End, 8, 3);
        assert_eq!(parse(&f), Some((Kind::End, 8, 3)));
        f[12] = 0x08;
        assert_eq!(parse(&f), None);
    }
}
