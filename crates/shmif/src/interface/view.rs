//! A received frame seen where it lies ([`FrameView`]), for
//! [`crate::Interface::try_recv_in_place`].

use crate::ring::{read_wrapped, Geometry, Region};

/// A received frame where it lies: in the bus itself (a registered reader of
/// an extended bus reading its window of published frames, which writers do
/// not overwrite while it keeps up), or else in the interface's private
/// copy. Nothing is copied until asked for: a consumer that looks at a few
/// header bytes (a counter, a filter, a switch deciding where a frame goes)
/// or copies the frame once to where it is going saves the copy that
/// [`crate::Interface::try_recv_with`] makes of every frame.
///
/// Reads from the bus go through the mapping's own copy routines, so a
/// peer that writes the bytes meanwhile (a hostile one, or a writer that
/// gave up waiting for this reader) can change what is read but never make
/// it unsound; [`crate::Interface::try_recv_in_place`] says afterwards
/// whether the frame stood.
pub struct FrameView<'a> {
    at: Place<'a>,
    len: usize,
}

/// Where a [`FrameView`]'s bytes are.
enum Place<'a> {
    /// In the ring, from offset `first` (wrapping at the ring's end).
    Ring {
        region: &'a dyn Region,
        geom: Geometry,
        first: u32,
    },
    /// Already copied out.
    Copied(&'a [u8]),
}

impl<'a> FrameView<'a> {
    /// A frame of `len` bytes in the ring `region`, from offset `first`.
    pub(crate) fn in_ring(region: &'a dyn Region, geom: Geometry, first: u32, len: usize) -> Self {
        FrameView {
            at: Place::Ring {
                region,
                geom,
                first,
            },
            len,
        }
    }

    /// A frame already copied out of the bus.
    pub(crate) fn copied(data: &'a [u8]) -> Self {
        FrameView {
            at: Place::Copied(data),
            len: data.len(),
        }
    }

    /// The frame's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame has no bytes (never, for a delivered frame: the
    /// bus delivers 14 bytes at least).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the view is of the bus itself (nothing was copied to make
    /// it), rather than of the interface's private copy.
    pub fn is_in_bus(&self) -> bool {
        matches!(self.at, Place::Ring { .. })
    }

    /// Copies the frame's bytes from `offset` into `buf`, as many as both
    /// have; returns how many (0 at or past the frame's end).
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> usize {
        let n = self.len.saturating_sub(offset).min(buf.len());
        if n == 0 {
            return 0;
        }
        match &self.at {
            Place::Copied(data) => buf[..n].copy_from_slice(&data[offset..offset + n]),
            Place::Ring {
                region,
                geom,
                first,
            } => {
                // `first` < the ring size and `offset` < `len` <= the
                // frame limit, under half the ring: the sum is under two
                // rings, so one subtraction is the remainder.
                let size = u64::from(geom.size);
                let sum = u64::from(*first) + offset as u64;
                let start = if sum >= size { sum - size } else { sum };
                read_wrapped(*geom, *region, start as u32, &mut buf[..n]);
            }
        }
        n
    }

    /// The whole frame, copied.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.read(0, &mut v);
        v
    }
}

impl std::fmt::Debug for FrameView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameView")
            .field("len", &self.len)
            .field("in_bus", &self.is_in_bus())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_reads_what_it_covers_and_nothing_past_it() {
        // A ring of 64 bytes holding a 10-byte frame that wraps: offsets
        // 60..64 and 0..6.
        let geom = Geometry::new(64, 32).unwrap();
        let mut ring = vec![0u8; 64];
        let frame: Vec<u8> = (1..=10).collect();
        ring[60..].copy_from_slice(&frame[..4]);
        ring[..6].copy_from_slice(&frame[4..]);
        let v = FrameView::in_ring(&ring, geom, 60, 10);
        assert!(v.is_in_bus());
        assert_eq!(v.to_vec(), frame);
        let mut buf = [0u8; 4];
        assert_eq!(v.read(3, &mut buf), 4);
        assert_eq!(buf, [4, 5, 6, 7]);
        assert_eq!(v.read(8, &mut buf), 2);
        assert_eq!(&buf[..2], &[9, 10]);
        assert_eq!(v.read(10, &mut buf), 0);
        assert_eq!(v.read(usize::MAX, &mut buf), 0);
        let c = FrameView::copied(&frame);
        assert!(!c.is_in_bus());
        assert_eq!((c.len(), c.to_vec()), (10, frame.clone()));
        assert_eq!(c.read(9, &mut buf), 1);
        assert_eq!(buf[0], 10);
        assert_eq!(c.read(11, &mut buf), 0);
    }
}
