//! The test pattern: what `tcp-send` sends and `host --tcp-sink` (and
//! `tcp-send --echo`) check, byte for byte.

use smoltcp::socket::tcp;

/// The multiplier of the test pattern: byte `i` of a `tcp-send` stream is
/// byte `i % 8` (little-endian) of the 64-bit word
/// `(i / 8) * PATTERN_MUL` (wrapping). Every 8-byte word of the stream is
/// different, so a lost, repeated, reordered or shifted piece shows.
pub const PATTERN_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

fn pattern_word(word: u64) -> [u8; 8] {
    word.wrapping_mul(PATTERN_MUL).to_le_bytes()
}

/// Walks `len` bytes of the pattern from stream offset `offset` in pieces
/// split at its word boundaries: a partial word up to the first boundary,
/// whole words, a partial last word. Calls `piece(i, bytes)` for each, `i`
/// being where the piece starts in the caller's buffer and `bytes` the
/// pattern there; stops early when `piece` returns false.
#[inline(always)]
fn pattern_pieces(offset: u64, len: usize, mut piece: impl FnMut(usize, &[u8]) -> bool) {
    let head = head_len(offset, len);
    if head > 0 {
        let at = (offset % 8) as usize;
        if !piece(0, &pattern_word(offset / 8)[at..at + head]) {
            return;
        }
    }
    let mut i = head;
    while i + 8 <= len {
        if !piece(i, &pattern_word((offset + i as u64) / 8)) {
            return;
        }
        i += 8;
    }
    if i < len {
        piece(i, &pattern_word((offset + i as u64) / 8)[..len - i]);
    }
}

/// Words handled per block by the whole-word loops below: enough for the
/// compiler to vectorise the multiply and compare, small enough that a
/// mismatch is found again quickly.
const BLOCK_WORDS: usize = 32;

/// Splits `len` bytes at stream offset `offset` into a head up to the first
/// word boundary and the rest (whose first byte starts a word).
fn head_len(offset: u64, len: usize) -> usize {
    ((8 - offset % 8) % 8).min(len as u64) as usize
}

/// Fills `buf` with the test pattern from stream offset `offset`.
pub fn pattern_fill(offset: u64, buf: &mut [u8]) {
    let (len, head) = (buf.len(), head_len(offset, buf.len()));
    let (first, body) = buf.split_at_mut(head);
    fill_pieces(offset, first);
    let mut word = (offset + head as u64) / 8;
    let mut words = body.chunks_exact_mut(8);
    for c in &mut words {
        c.copy_from_slice(&pattern_word(word));
        word = word.wrapping_add(1);
    }
    let tail = words.into_remainder();
    let at = offset + (len - tail.len()) as u64;
    fill_pieces(at, tail);
}

/// [`pattern_fill`] piece by piece (for the partial words at either end).
fn fill_pieces(offset: u64, buf: &mut [u8]) {
    pattern_pieces(offset, buf.len(), |i, want| {
        buf[i..i + want.len()].copy_from_slice(want);
        true
    });
}

/// Checks `buf` against the test pattern from stream offset `offset`;
/// returns the stream offset of the first byte that differs.
pub fn pattern_check(offset: u64, buf: &[u8]) -> Option<u64> {
    let head = head_len(offset, buf.len());
    let (first, body) = buf.split_at(head);
    if let Some(bad) = check_pieces(offset, first) {
        return Some(bad);
    }
    // Whole words, a block at a time: one branch per block.
    let mut at = offset + head as u64;
    let mut blocks = body.chunks_exact(8 * BLOCK_WORDS);
    for block in &mut blocks {
        let word = at / 8;
        let mut diff = 0u64;
        for (j, c) in block.chunks_exact(8).enumerate() {
            let got = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
            diff |= got ^ word.wrapping_add(j as u64).wrapping_mul(PATTERN_MUL);
        }
        if diff != 0 {
            return check_pieces(at, block);
        }
        at += block.len() as u64;
    }
    check_pieces(at, blocks.remainder())
}

/// [`pattern_check`] piece by piece (the partial words, and a block found
/// to differ somewhere).
fn check_pieces(offset: u64, buf: &[u8]) -> Option<u64> {
    let mut bad = None;
    pattern_pieces(offset, buf.len(), |i, want| {
        let got = &buf[i..i + want.len()];
        if got != want {
            bad = first_difference(offset + i as u64, got);
        }
        bad.is_none()
    });
    bad
}

/// Receives everything waiting in `s`, checking it against the test
/// pattern: `bytes` counts the stream received so far (the offset of what
/// comes next), and `mismatch` keeps the offset of the first wrong byte.
/// Returns whether anything came in.
pub fn recv_pattern(s: &mut tcp::Socket, bytes: &mut u64, mismatch: &mut Option<u64>) -> bool {
    let mut got_any = false;
    while s.can_recv() {
        let at = *bytes;
        match s.recv(|buf| (buf.len(), (buf.len(), pattern_check(at, buf)))) {
            Ok((n, bad)) if n > 0 => {
                if mismatch.is_none() {
                    *mismatch = bad;
                }
                *bytes += n as u64;
                got_any = true;
            }
            _ => break,
        }
    }
    got_any
}

fn first_difference(offset: u64, buf: &[u8]) -> Option<u64> {
    let mut one = [0u8; 1];
    buf.iter().enumerate().find_map(|(i, &b)| {
        let at = offset + i as u64;
        pattern_fill(at, &mut one);
        (one[0] != b).then_some(at)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_position_dependent_and_chunking_free() {
        let mut whole = vec![0u8; 1000];
        pattern_fill(0, &mut whole);
        assert_eq!(&whole[..8], &0u64.to_le_bytes());
        assert_eq!(&whole[8..16], &PATTERN_MUL.to_le_bytes());
        // Filled or checked in odd pieces, the same stream.
        let mut pieces = vec![0u8; 1000];
        let mut at = 0;
        for n in [1usize, 3, 7, 8, 9, 15, 100, 857] {
            pattern_fill(at as u64, &mut pieces[at..at + n]);
            assert_eq!(pattern_check(at as u64, &whole[at..at + n]), None);
            at += n;
        }
        assert_eq!(at, 1000);
        assert_eq!(whole, pieces);
        // Any damage is found, at the right place.
        for bad in [0usize, 5, 8, 13, 999] {
            let mut b = whole.clone();
            b[bad] ^= 0x40;
            assert_eq!(pattern_check(0, &b), Some(bad as u64));
            assert_eq!(pattern_check(3, &b[3..]), (bad >= 3).then_some(bad as u64));
        }
        // Long buffers go a block of words at a time: damage inside a
        // block, at its edges and in the tail, from odd starts too.
        let mut long = vec![0u8; 5000];
        pattern_fill(5, &mut long);
        let mut again = vec![0u8; 5000];
        fill_pieces(5, &mut again);
        assert_eq!(long, again, "word loop and piece walk agree");
        assert_eq!(pattern_check(5, &long), None);
        for bad in [0usize, 2, 3, 258, 259, 600, 2051, 4990, 4999] {
            let mut b = long.clone();
            b[bad] ^= 1;
            assert_eq!(
                pattern_check(5, &b),
                Some(5 + bad as u64),
                "damage at {bad}"
            );
        }
        // A shifted stream does not match.
        assert!(pattern_check(1, &whole[..64]).is_some());
        assert!(pattern_check(8, &whole[..64]).is_some());
    }
}
