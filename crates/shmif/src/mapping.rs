//! The shared mapping of a bus file, and the only `unsafe` code in the crate.
//!
//! Other processes write this memory concurrently, so nothing here ever
//! hands out a Rust reference to the shared bytes (`&[u8]` would promise
//! they do not change). Header words are accessed as atomics, which are
//! defined for shared memory; the ring is copied in and out through raw
//! pointers, bounds-checked against the mapping, and everything copied out
//! is validated by [`crate::ring`] before it is trusted.

use crate::ring::{Control, Region};
use crate::wire::{field, BUS_HEADER_LEN, BUS_SIZE, DATA_SIZE};
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A `MAP_SHARED`, read-write mapping of a whole bus file.
pub(crate) struct Mapping {
    raw: memmap2::MmapRaw,
}

impl Mapping {
    /// Maps the first [`BUS_SIZE`] bytes of `file`, which the caller has
    /// sized to exactly that, with its pages populated up front (NetBSD's
    /// prefault, so that no page fault happens while the bus lock is held).
    pub(crate) fn new(file: &File) -> io::Result<Self> {
        let raw = memmap2::MmapOptions::new()
            .len(BUS_SIZE)
            .populate()
            .map_raw(file)?;
        if raw.len() != BUS_SIZE {
            return Err(io::Error::other("mapping has the wrong size"));
        }
        Ok(Mapping { raw })
    }

    fn u32_word(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= BUS_HEADER_LEN);
        // SAFETY: the mapping is BUS_SIZE bytes, page-aligned, and lives as
        // long as `self`; `off` is a 4-aligned offset inside the header (just
        // asserted), so the pointer is valid and aligned for an AtomicU32.
        // Atomics may be shared with other threads and processes, and no
        // non-atomic Rust reference to these bytes is ever created.
        unsafe { AtomicU32::from_ptr(self.raw.as_mut_ptr().add(off).cast::<u32>()) }
    }

    fn u64_word(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= BUS_HEADER_LEN);
        // SAFETY: as in `u32_word`, with an 8-aligned offset inside the
        // header (the mapping itself is page-aligned).
        unsafe { AtomicU64::from_ptr(self.raw.as_mut_ptr().add(off).cast::<u64>()) }
    }

    /// The lock word (`shm_lock`).
    pub(crate) fn lock_word(&self) -> &AtomicU32 {
        self.u32_word(field::LOCK)
    }

    /// The spare word, where a lock holder of ours records itself.
    pub(crate) fn spare_word(&self) -> &AtomicU32 {
        self.u32_word(field::SPARE)
    }

    /// The magic word.
    pub(crate) fn magic_word(&self) -> &AtomicU32 {
        self.u32_word(field::MAGIC)
    }

    /// The version (wake-up) word.
    pub(crate) fn version_word(&self) -> &AtomicU32 {
        self.u32_word(field::VERSION)
    }

    /// Loads `gen`, `first` and `last`. Call with the bus lock held, whose
    /// acquire ordering makes the last holder's stores visible.
    pub(crate) fn load_control(&self) -> Control {
        Control {
            gen: self.u64_word(field::GEN).load(Ordering::Relaxed),
            first: self.u32_word(field::FIRST).load(Ordering::Relaxed),
            last: self.u32_word(field::LAST).load(Ordering::Relaxed),
        }
    }

    /// Stores `gen`, `first` and `last`. Call with the bus lock held.
    pub(crate) fn store_control(&self, c: &Control) {
        self.u64_word(field::GEN).store(c.gen, Ordering::Relaxed);
        self.u32_word(field::FIRST)
            .store(c.first, Ordering::Relaxed);
        self.u32_word(field::LAST).store(c.last, Ordering::Relaxed);
    }

    /// Stores `first` alone (see [`crate::ring::append_with`]).
    pub(crate) fn store_first(&self, first: u32) {
        self.u32_word(field::FIRST).store(first, Ordering::Relaxed);
    }

    /// The data region, for reading and writing frames under the lock.
    pub(crate) fn data(&self) -> SharedData<'_> {
        SharedData { map: self }
    }
}

/// The ring part of a mapped bus, as a [`Region`].
pub(crate) struct SharedData<'a> {
    map: &'a Mapping,
}

impl SharedData<'_> {
    /// Bounds check shared by read and write: `off..off+len` must lie in
    /// the data region. Offsets come from validated ring arithmetic, so a
    /// failure is a bug in this crate, not bad bus contents.
    fn base(&self, off: u32, len: usize) -> *mut u8 {
        let off = off as usize;
        assert!(
            off.checked_add(len)
                .is_some_and(|end| end <= DATA_SIZE as usize),
            "ring access {off}+{len} outside the data region"
        );
        // SAFETY: BUS_HEADER_LEN + off + len <= BUS_SIZE (asserted above),
        // so the offset stays inside the mapping.
        unsafe { self.map.raw.as_mut_ptr().add(BUS_HEADER_LEN + off) }
    }
}

impl Region for SharedData<'_> {
    fn size(&self) -> u32 {
        DATA_SIZE
    }

    fn read(&self, off: u32, buf: &mut [u8]) {
        let src = self.base(off, buf.len());
        // SAFETY: `src..src+len` is inside the mapping (checked by `base`)
        // and cannot overlap `buf`, which is process-private memory. The
        // bytes may be changed by a misbehaving process that ignores the
        // bus lock; the copy then yields garbage, which the ring code
        // validates, never a Rust reference to changing memory.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) }
    }

    fn write(&mut self, off: u32, data: &[u8]) {
        let dst = self.base(off, data.len());
        // SAFETY: `dst..dst+len` is inside the mapping (checked by `base`),
        // the mapping is writable, and `data` is private memory that cannot
        // overlap it.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) }
    }
}
