//! The walk NetBSD's `shmif_dumpbus` makes over a bus image (no I/O).
//!
//! [`Dump::parse`] checks a bus image (a whole bus file read into memory)
//! and [`Dump::frames`] yields every frame from `first` through `last`, as
//! the tool finds them: version-2 (12-byte frame headers) and byte-swapped
//! buses included. Bad images give errors, never panics or endless loops.

use crate::ring::{read_wrapped, Corrupt, Geometry};
use crate::wire::ext::{ExtHeader, ExtHeaderRepr, EXT_HEADER_LEN, EXT_MAGIC};
use crate::wire::{
    BusHeader, BusHeaderRepr, ByteOrder, FrameHeader, WireError, BUS_HEADER_LEN, BUS_SIZE,
    FRAME_HEADER_LEN, VERSION,
};

/// Why an image cannot be dumped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    /// Not a bus: wrong size or magic.
    #[error("not a shmif bus: {0}")]
    NotABus(String),
    /// A bus of a version this tool cannot read.
    #[error("bus version {0}, program 3")]
    Version(u32),
    /// The header's offsets are impossible.
    #[error("bus header is corrupt: {0}")]
    Header(WireError),
}

/// A checked bus image, ready to walk.
#[derive(Debug, Clone)]
pub struct Dump<'a> {
    data: &'a [u8],
    header: BusHeaderRepr,
    geometry: Geometry,
    extended: Option<ExtHeaderRepr>,
}

/// One frame found by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpFrame {
    /// Its number in the walk (zero-length entries are not counted).
    pub index: usize,
    /// Offset of its payload in the data region (after the frame header).
    pub offset: u32,
    /// Timestamp seconds.
    pub sec: u32,
    /// Timestamp microseconds.
    pub usec: u32,
    /// The Ethernet frame.
    pub data: Vec<u8>,
}

impl DumpFrame {
    /// The tool's line for this frame:
    /// `packet N, offset 0xOOOO, length 0xLLLL, ts SEC/USEC`.
    pub fn line(&self) -> String {
        format!(
            "packet {}, offset 0x{:04x}, length 0x{:04x}, ts {}/{:06}",
            self.index,
            self.offset,
            self.data.len(),
            self.sec,
            self.usec
        )
    }
}

fn hex4(v: u32) -> String {
    format!("0x{v:04x}")
}

impl<'a> Dump<'a> {
    /// Checks an image: exactly 1 MiB, the shmif magic in either byte order,
    /// version 2 or 3 (or 0: initialised, no wake-up yet), sane offsets.
    ///
    /// An extended bus (`EXTENDED-FORMAT.md`) is accepted too: its header
    /// is validated against the image's length, and the walk uses its ring
    /// size and frame limit.
    pub fn parse(image: &'a [u8]) -> Result<Self, DumpError> {
        let h = BusHeader::new_checked(image)
            .map_err(|_| DumpError::NotABus(format!("only {} bytes", image.len())))?;
        if h.magic() == EXT_MAGIC {
            let e = ExtHeader::new_checked(image)
                .and_then(|e| ExtHeaderRepr::parse(&e, Some(image.len() as u64)))
                .map_err(|e| DumpError::NotABus(format!("extended bus: {e}")))?;
            let geometry = Geometry::of_extended(&e)
                .ok_or_else(|| DumpError::NotABus("extended bus: ring too small".into()))?;
            return Ok(Dump {
                data: &image[EXT_HEADER_LEN..],
                header: BusHeaderRepr {
                    order: ByteOrder::Native,
                    version: VERSION,
                    generation: e.generation,
                    first: e.first,
                    last: e.last,
                    lock: e.lock,
                },
                geometry,
                extended: Some(e),
            });
        }
        if h.magic() != crate::wire::MAGIC {
            return Err(DumpError::NotABus(format!(
                "magic {:#010x}, expected {:#010x}",
                h.magic(),
                crate::wire::MAGIC
            )));
        }
        if image.len() != BUS_SIZE {
            let got = if image.len() > BUS_SIZE {
                format!("more than {BUS_SIZE} bytes")
            } else {
                format!("{} bytes", image.len())
            };
            return Err(DumpError::NotABus(format!(
                "{got} long, a bus is {BUS_SIZE}"
            )));
        }
        if !matches!(h.version(), 0 | 2 | 3) {
            return Err(DumpError::Version(h.version()));
        }
        let header = BusHeaderRepr::parse(&h).map_err(DumpError::Header)?;
        Ok(Dump {
            data: &image[BUS_HEADER_LEN..],
            header,
            geometry: Geometry::V3,
            extended: None,
        })
    }

    /// The ring's shape: [`Geometry::V3`], or an extended bus's.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The extended header, for an extended bus.
    pub fn extended(&self) -> Option<&ExtHeaderRepr> {
        self.extended.as_ref()
    }

    /// The validated header.
    pub fn header(&self) -> &BusHeaderRepr {
        &self.header
    }

    /// The tool's first line:
    /// `bus version V, lock: L, generation: G, firstoff: 0xF, lastoff: 0xL`.
    ///
    /// For an extended bus: `extended bus format 1, ring size N, max frame
    /// M, lock: ...` with the same fields after.
    pub fn header_line(&self) -> String {
        let h = &self.header;
        if let Some(e) = &self.extended {
            return format!(
                "extended bus format {}, ring size {}, max frame {}, lock: {}, generation: {}, \
                 firstoff: {}, lastoff: {}",
                crate::wire::ext::EXT_FORMAT_VERSION,
                e.ring_size,
                e.max_frame,
                h.lock,
                h.generation,
                hex4(h.first),
                hex4(h.last)
            );
        }
        format!(
            "bus version {}, lock: {}, generation: {}, firstoff: {}, lastoff: {}",
            h.version,
            h.lock,
            h.generation,
            hex4(h.first),
            hex4(h.last)
        )
    }

    /// Walks the frames from `first` (or 0 if nothing was overwritten yet)
    /// through `last`, skipping zero-length entries.
    pub fn frames(&self) -> Frames<'a> {
        let first = self.header.first;
        let size = self.geometry.size;
        let cur = if first == size { 0 } else { first };
        Frames {
            geometry: self.geometry,
            data: self.data,
            order: self.header.order,
            hlen: self.header.frame_header_len(),
            cur,
            last: self.header.last,
            bonus: self.header.last < cur,
            index: 0,
            // Each entry takes at least one header; two laps' worth is more
            // than any honest walk needs.
            budget: 2 * (size as usize / crate::wire::V2_FRAME_HEADER_LEN) + 2,
            done: false,
            last_header: None,
        }
    }
}

/// Iterator over the frames of a [`Dump`].
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    geometry: Geometry,
    data: &'a [u8],
    order: ByteOrder,
    hlen: usize,
    cur: u32,
    last: u32,
    bonus: bool,
    index: usize,
    budget: usize,
    done: bool,
    /// Offset of the last header read, to check the walk ended on `last`.
    last_header: Option<u32>,
}

impl Iterator for Frames<'_> {
    type Item = Result<DumpFrame, Corrupt>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done && (self.cur <= self.last || self.bonus) {
            if self.budget == 0 {
                self.done = true;
                return Some(Err(Corrupt::Chain { at: self.cur }));
            }
            self.budget -= 1;
            let at = self.cur;
            self.last_header = Some(at);
            if self.geometry.skips {
                // An extended bus's lap that ended early: on at offset 0.
                match crate::ring::entry_at(self.geometry, self.data, at) {
                    Ok(crate::ring::Entry::Skip { .. }) if at == self.last => {
                        self.done = true;
                        return None;
                    }
                    Ok(crate::ring::Entry::Skip { .. }) => {
                        self.cur = 0;
                        self.bonus = false;
                        continue;
                    }
                    Err(e @ Corrupt::Skip { .. }) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                    _ => {}
                }
            }
            let mut raw = [0u8; FRAME_HEADER_LEN];
            let (pay, wrapped) = read_wrapped(self.geometry, self.data, at, &mut raw[..self.hlen]);
            if wrapped {
                self.bonus = false;
            }
            self.cur = pay;
            // The slice is 24 bytes long, so the view's length check passes.
            let Ok(fh) = FrameHeader::new_checked(&raw[..], self.order) else {
                self.done = true;
                return None;
            };
            let len = fh.len();
            if len == 0 {
                continue;
            }
            if len > self.geometry.max_frame_len {
                self.done = true;
                return Some(Err(Corrupt::Length {
                    at,
                    len,
                    max: self.geometry.max_frame_len,
                }));
            }
            let mut data = vec![0u8; len as usize];
            let (after, wrapped) = read_wrapped(self.geometry, self.data, pay, &mut data);
            if wrapped {
                self.bonus = false;
            }
            self.cur = after;
            let frame = DumpFrame {
                index: self.index,
                offset: pay,
                sec: fh.sec(),
                usec: fh.usec(),
                data,
            };
            self.index += 1;
            return Some(Ok(frame));
        }
        // An intact chain ends with the header at `last` (true of every bus
        // written by NetBSD); anything else means a length in the chain was
        // damaged into another plausible value and the walk lost its way.
        if !self.done {
            self.done = true;
            if let Some(at) = self.last_header {
                if at != self.last {
                    return Some(Err(Corrupt::Chain { at }));
                }
            }
        }
        None
    }
}
