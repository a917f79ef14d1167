//! The shared mapping of a bus file, and the only `unsafe` code in the crate.
//!
//! Other processes write this memory concurrently, so nothing here ever
//! hands out a Rust reference to the shared bytes (`&[u8]` would promise
//! they do not change). Header words are accessed as atomics, which are
//! defined for shared memory; the ring is copied in and out through raw
//! pointers, bounds-checked against the mapping, and everything copied out
//! is validated by [`crate::ring`] before it is trusted.
//!
//! A bus file can be truncated by another process while it is mapped; the
//! next access to a page past the new end raises SIGBUS, which would kill
//! the process. A SIGBUS handler installed here recognises faults inside a
//! bus mapping, replaces that whole mapping with private zero pages (so the
//! faulting access completes and reads zeros), and marks the mapping gone;
//! the layers above check the mark after each operation and report a clear
//! error. Faults elsewhere go to the previous handler or the default action.

use crate::ring::{Control, Region};
use crate::wire::{field, FRAME_HEADER_LEN};
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// How many bus mappings one process can have at once (a mapping beyond
/// that is refused: the SIGBUS handler could not protect it).
pub(crate) const MAX_MAPPINGS: usize = 1024;

/// Where a live bus mapping is, for the SIGBUS handler (which can only use
/// atomics). `start == 0`: free slot.
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    gone: AtomicBool,
}

static SLOTS: [Slot; MAX_MAPPINGS] = [const {
    Slot {
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        gone: AtomicBool::new(false),
    }
}; MAX_MAPPINGS];

/// The SIGBUS disposition before ours, to pass foreign faults on to.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// The calling thread's `errno`.
fn errno_location() -> *mut libc::c_int {
    // SAFETY: each libc returns a pointer to the calling thread's errno,
    // valid for the thread's lifetime; the call is async-signal-safe.
    unsafe {
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "emscripten"))]
        {
            libc::__errno_location()
        }
        #[cfg(any(
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd",
            target_os = "dragonfly"
        ))]
        {
            libc::__error()
        }
        #[cfg(any(target_os = "netbsd", target_os = "openbsd"))]
        {
            libc::__errno()
        }
    }
}

/// Restores the interrupted code's `errno` when the handler returns: the
/// system calls the handler makes (mmap, sigaction) may change it.
struct SavedErrno(libc::c_int);

impl SavedErrno {
    fn save() -> Self {
        // SAFETY: the pointer is this thread's errno (see errno_location).
        SavedErrno(unsafe { *errno_location() })
    }
}

impl Drop for SavedErrno {
    fn drop(&mut self) {
        // SAFETY: as in `save`.
        unsafe { *errno_location() = self.0 }
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let errno = SavedErrno::save();
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // A SIGBUS sent with kill(2), sigqueue(3) or tgkill(2) (si_code <= 0)
    // is not a fault: its si_addr means nothing, and it is not ours.
    if code > 0 {
        // SAFETY: as above; for a fault, si_addr is the faulting address.
        let addr = unsafe { (*info).si_addr() } as usize;
        for slot in &SLOTS {
            let start = slot.start.load(Ordering::Acquire);
            let len = slot.len.load(Ordering::Acquire);
            if start != 0 && start != usize::MAX && addr >= start && addr < start + len {
                // SAFETY: [start, start+len) is a mapping this module made
                // and still owns (the slot is cleared before it is unmapped);
                // replacing it with anonymous memory of the same size keeps
                // every pointer into it valid. mmap is a plain system call,
                // safe in a handler.
                let p = unsafe {
                    libc::mmap(
                        start as *mut libc::c_void,
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                };
                if p != libc::MAP_FAILED {
                    slot.gone.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }
    // Not ours: hand it to whatever disposition SIGBUS had before, with
    // errno as the interrupted code left it.
    drop(errno);
    let user_sent = code <= 0;
    match PREVIOUS.get() {
        Some(prev) if prev.sa_sigaction == libc::SIG_IGN => {}
        Some(prev) if prev.sa_sigaction != libc::SIG_DFL => {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: with SA_SIGINFO the previous handler has this type.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: without SA_SIGINFO the previous handler has this type.
                let f: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // SAFETY: the default action, as without this handler: restore
            // it, then either return to re-run the faulting access (a
            // fault), or raise the signal again (one sent with kill(2),
            // which returning would swallow). Either terminates the
            // process as SIGBUS does by default.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
                if user_sent {
                    libc::raise(libc::SIGBUS);
                }
            }
        }
    }
}

fn install_sigbus_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sigaction with a zeroed, then filled, struct; the handler
        // only touches atomics and errno, calls mmap, sigaction and raise,
        // or chains. The previous disposition is read and saved before the
        // handler is installed, so that a SIGBUS arriving in between finds
        // it (installing and saving in one call would leave a window in
        // which a foreign SIGBUS found nothing to forward to).
        unsafe {
            let mut prev: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut prev) != 0 {
                return;
            }
            let _ = PREVIOUS.set(prev);
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigbus as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut());
        }
    });
}

/// This process's lock-holder tag, computed once per process: 0 until then,
/// and reset to 0 in the child after `fork`, whose pid differs.
static PROCESS_TAG: AtomicU32 = AtomicU32::new(0);

extern "C" fn reset_process_tag_in_child() {
    PROCESS_TAG.store(0, Ordering::Relaxed);
}

/// The tag this process records as lock holder (`compute` makes it), cached
/// without a system call per lock, and correct in forked children.
pub(crate) fn process_tag(compute: fn() -> u32) -> u32 {
    let t = PROCESS_TAG.load(Ordering::Relaxed);
    if t != 0 {
        return t;
    }
    static ATFORK: std::sync::Once = std::sync::Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registers a child-side fork handler that only stores to an
        // atomic, which is async-signal-safe as fork handlers must be.
        unsafe {
            libc::pthread_atfork(None, None, Some(reset_process_tag_in_child));
        }
    });
    let t = compute();
    PROCESS_TAG.store(t, Ordering::Relaxed);
    t
}

/// Where the parts of a bus file are: its whole length, the header before
/// the ring, and the ring's size (`header + ring == len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The whole file (and mapping) length.
    pub len: usize,
    /// Bytes before the ring; header words lie inside them.
    pub header: usize,
    /// Size of the ring.
    pub ring: u32,
}

impl Layout {
    /// A version-3 bus: 1 MiB, a 32-byte header.
    pub(crate) const V3: Layout = Layout {
        len: crate::wire::BUS_SIZE,
        header: crate::wire::BUS_HEADER_LEN,
        ring: crate::wire::DATA_SIZE,
    };
}

/// A `MAP_SHARED`, read-write mapping of a whole bus file.
pub(crate) struct Mapping {
    raw: memmap2::MmapRaw,
    slot: &'static Slot,
    layout: Layout,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        self.slot.start.store(0, Ordering::Release);
    }
}

impl Mapping {
    /// Maps the first `layout.len` bytes of `file`, which the caller has
    /// sized to exactly that, with its pages populated up front (NetBSD's
    /// prefault, so that no page fault happens while the bus lock is held).
    pub(crate) fn new(file: &File, layout: Layout) -> io::Result<Self> {
        if layout.header < crate::wire::BUS_HEADER_LEN
            || layout.header.checked_add(layout.ring as usize) != Some(layout.len)
        {
            return Err(io::Error::other("inconsistent bus layout"));
        }
        let raw = memmap2::MmapOptions::new()
            .len(layout.len)
            .populate()
            .map_raw(file)?;
        if raw.len() != layout.len {
            return Err(io::Error::other("mapping has the wrong size"));
        }
        install_sigbus_handler();
        let start = raw.as_mut_ptr() as usize;
        let Some(slot) = SLOTS.iter().find(|s| {
            s.start
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) else {
            // Without a slot the SIGBUS handler could not recognise this
            // mapping, and a truncation would kill the process: refuse.
            return Err(io::Error::other(format!(
                "this process already has {MAX_MAPPINGS} bus mappings, the most it can protect \
                 against truncation"
            )));
        };
        slot.gone.store(false, Ordering::Relaxed);
        slot.len.store(layout.len, Ordering::Relaxed);
        slot.start.store(start, Ordering::Release);
        Ok(Mapping { raw, slot, layout })
    }

    /// Whether the file under this mapping was truncated (a SIGBUS was
    /// caught and the mapping replaced by zero pages).
    pub(crate) fn is_gone(&self) -> bool {
        self.slot.gone.load(Ordering::Acquire)
    }

    /// The layout this mapping was made with.
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// The header word at `off` (4-aligned, inside the header): the
    /// extended format's reader table and counters.
    pub(crate) fn header_u32(&self, off: usize) -> &AtomicU32 {
        self.u32_word(off)
    }

    /// The 8-byte header word at `off` (8-aligned, inside the header).
    pub(crate) fn header_u64(&self, off: usize) -> &AtomicU64 {
        self.u64_word(off)
    }

    fn u32_word(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= self.layout.header);
        // SAFETY: the mapping is `layout.len` bytes (checked in `new`),
        // page-aligned, and lives as long as `self`; `off` is a 4-aligned
        // offset inside the header, which is inside the mapping (just
        // asserted), so the pointer is valid and aligned for an AtomicU32.
        // Atomics may be shared with other threads and processes, and no
        // non-atomic Rust reference to these bytes is ever created.
        unsafe { AtomicU32::from_ptr(self.raw.as_mut_ptr().add(off).cast::<u32>()) }
    }

    fn u64_word(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.layout.header);
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
        let mut c = Control {
            gen: self.u64_word(field::GEN).load(Ordering::Relaxed),
            first: self.u32_word(field::FIRST).load(Ordering::Relaxed),
            last: self.u32_word(field::LAST).load(Ordering::Relaxed),
            ..Control::default()
        };
        if self.layout.header > crate::wire::BUS_HEADER_LEN {
            // An extended bus: the skip records' words (EXTENDED-FORMAT.md).
            use crate::wire::ext::field as ext;
            c.skipped = self.u64_word(ext::SKIPPED).load(Ordering::Relaxed);
            c.last_skip = self.u64_word(ext::LAST_SKIP).load(Ordering::Relaxed);
        }
        c
    }

    /// Stores `gen`, `first` and `last`, after the frame bytes they
    /// publish. Call with the bus lock held.
    ///
    /// Release stores: the frame copy before them (plain stores through a
    /// raw pointer) may not be moved after them, by the compiler or the
    /// processor, so that a holder killed at any instruction never leaves
    /// `last` naming a frame whose bytes are not all in memory.
    pub(crate) fn store_control(&self, c: &Control) {
        self.u64_word(field::GEN).store(c.gen, Ordering::Release);
        self.u32_word(field::FIRST)
            .store(c.first, Ordering::Release);
        self.u32_word(field::LAST).store(c.last, Ordering::Release);
        if self.layout.header > crate::wire::BUS_HEADER_LEN {
            // These change only with a skip record, and share a cache line
            // with the cursor hint that registered readers poll: storing
            // them unchanged after every frame would take that line from
            // the readers each time. (What the file holds is the same
            // either way.)
            use crate::wire::ext::field as ext;
            for (at, value) in [(ext::SKIPPED, c.skipped), (ext::LAST_SKIP, c.last_skip)] {
                let word = self.u64_word(at);
                if word.load(Ordering::Relaxed) != value {
                    word.store(value, Ordering::Release);
                }
            }
        }
    }

    /// Stores `first` alone, before a frame copy overwrites what it
    /// evicted (see [`crate::ring::append_with`]).
    ///
    /// The fence after the store keeps the copy's plain stores from being
    /// moved before it, by the compiler or the processor: a holder killed
    /// mid-copy must never leave `first` naming a frame it had begun to
    /// overwrite. (A relaxed store orders nothing that follows it. The
    /// release fence is a store-store barrier on weakly ordered processors
    /// and, with the compiler fence, keeps the compiler from sinking the
    /// store past the copy; x86 keeps stores in order by itself.)
    pub(crate) fn store_first(&self, first: u32) {
        self.u32_word(field::FIRST).store(first, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
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
    #[inline]
    fn base(&self, off: u32, len: usize) -> *mut u8 {
        let off = off as usize;
        let layout = self.map.layout;
        assert!(
            off.checked_add(len)
                .is_some_and(|end| end <= layout.ring as usize),
            "ring access {off}+{len} outside the data region"
        );
        // SAFETY: header + off + len <= header + ring == len of the mapping
        // (asserted above and in `Mapping::new`), so the offset stays
        // inside the mapping.
        unsafe { self.map.raw.as_mut_ptr().add(layout.header + off) }
    }
}

impl Region for SharedData<'_> {
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

    #[inline]
    fn prefetch_for_write(&self, off: u32, len: u32) {
        let ring = self.map.layout.ring;
        let end = off.saturating_add(len).min(ring);
        if off >= end || !has_prefetchw() {
            return;
        }
        let base = self.base(off, (end - off) as usize);
        // Each cache line the bytes touch lies in a page of the mapping
        // that holds one of them.
        let first_line = base.wrapping_sub(base as usize % 64);
        let lines = (base as usize % 64 + (end - off) as usize).div_ceil(64);
        for k in 0..lines {
            prefetch_line_for_write(first_line.wrapping_add(k * 64));
        }
    }

    #[inline]
    fn read_header(&self, off: u32) -> [u8; FRAME_HEADER_LEN] {
        let src = self.base(off, FRAME_HEADER_LEN);
        // SAFETY: `src..src+24` is inside the mapping (checked by `base`),
        // and `[u8; 24]` has no alignment or validity requirement, so any
        // bytes there read as a value; as with `read`, bytes a misbehaving
        // process changes meanwhile yield garbage that the ring code
        // validates.
        unsafe { std::ptr::read_unaligned(src.cast::<[u8; FRAME_HEADER_LEN]>()) }
    }
}

/// Whether this processor has `PREFETCHW` (CPUID 8000_0001h, ECX bit 8),
/// which fetches a cache line in the state a store needs; looked up once.
/// (`__cpuid` is a safe function from Rust 1.87 on, unsafe in 1.85, this
/// crate's oldest supported Rust.)
#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)]
#[inline]
fn has_prefetchw() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        use std::arch::x86_64::__cpuid;
        // SAFETY: CPUID exists on every x86-64 processor; leaf 8000_0000h
        // says which extended leaves do, and only those are asked.
        let max = unsafe { __cpuid(0x8000_0000) }.eax;
        // SAFETY: as above; 8000_0001h is asked only if it exists.
        max >= 0x8000_0001 && unsafe { __cpuid(0x8000_0001) }.ecx & (1 << 8) != 0
    })
}

/// On 64-bit Arm the prefetch for writing (`PRFM PSTL1KEEP`, what Linux's
/// own `prefetchw` is there) is part of the base A64 instruction set, so
/// every processor has it.
#[cfg(target_arch = "aarch64")]
#[inline]
fn has_prefetchw() -> bool {
    true
}

/// Elsewhere no prefetch for writing is issued (see
/// [`prefetch_line_for_write`]).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn has_prefetchw() -> bool {
    false
}

/// Asks the processor to fetch the cache line at `p` for writing: a hint,
/// with no fault and no access anyone can observe, whatever `p` is. Call
/// only where [`has_prefetchw`] says the instruction exists.
#[inline]
fn prefetch_line_for_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW is a hint: it never faults, reads or writes
    // nothing a program can observe, and leaves registers and flags as
    // they were; callers check that the processor has it.
    unsafe {
        std::arch::asm!(
            "prefetchw [{p}]",
            p = in(reg) p,
            options(nostack, preserves_flags, readonly)
        )
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is a hint: a prefetch of any address, mapped or not,
    // never faults, makes no access a program can observe, and leaves
    // registers and flags as they were.
    unsafe {
        std::arch::asm!(
            "prfm pstl1keep, [{p}]",
            p = in(reg) p,
            options(nostack, preserves_flags, readonly)
        )
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// One 32-bit word at the start of a `MAP_SHARED` mapping of a file: the
/// same kind of memory a bus lives in, for measuring floors between
/// processes (the bare futex round trip of `shmif bench`) without a bus
/// around it. The word is an atomic, as every shared word here is; the file
/// is the caller's own and must not be truncated while it is mapped (this
/// mapping is not protected against SIGBUS as a bus's is).
pub struct SharedWord {
    raw: memmap2::MmapRaw,
}

impl std::fmt::Debug for SharedWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWord")
            .field("value", &self.word().load(Ordering::Relaxed))
            .finish()
    }
}

impl SharedWord {
    /// Maps the first 4 bytes of `file` (opened read-write, at least 4
    /// bytes long) shared.
    pub fn map(file: &File) -> io::Result<Self> {
        if file.metadata()?.len() < 4 {
            return Err(io::Error::other("the file is shorter than 4 bytes"));
        }
        let raw = memmap2::MmapOptions::new().len(4).map_raw(file)?;
        if raw.len() < 4 {
            return Err(io::Error::other("mapping has the wrong size"));
        }
        Ok(SharedWord { raw })
    }

    /// The word, for atomic operations and futex calls.
    pub fn word(&self) -> &AtomicU32 {
        // SAFETY: the mapping is page-aligned (so 4-aligned), at least 4
        // bytes long (checked in `map`) and lives as long as `self`, which
        // the returned reference borrows; an `AtomicU32` is sound over
        // memory that other processes write, since every access is atomic.
        unsafe { AtomicU32::from_ptr(self.raw.as_mut_ptr().cast::<u32>()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Region;

    #[test]
    fn the_prefetch_for_writing_is_there_on_the_processors_that_have_it() {
        // Every 64-bit Arm processor has PRFM; on x86-64 it is the CPUID
        // bit that Linux lists as `3dnowprefetch`; elsewhere none is used.
        #[cfg(target_arch = "aarch64")]
        assert!(has_prefetchw());
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        assert!(!has_prefetchw());
        #[cfg(target_arch = "x86_64")]
        if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
            let listed = info
                .lines()
                .filter(|l| l.starts_with("flags"))
                .all(|l| l.split_whitespace().any(|f| f == "3dnowprefetch"));
            assert_eq!(has_prefetchw(), listed, "CPUID against /proc/cpuinfo");
        }
    }

    #[test]
    fn a_prefetch_for_writing_anywhere_changes_no_byte_and_never_faults() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(Layout::V3.len as u64).unwrap();
        let map = Mapping::new(&file, Layout::V3).unwrap();
        let ring = Layout::V3.ring;
        let pattern: Vec<u8> = (0..ring).map(|i| (i % 251) as u8).collect();
        map.data().write(0, &pattern);
        // At the start, across lines, at the last byte, running past the
        // ring's end (cut there; the last line's neighbours are outside
        // the mapping), wholly outside it, and the whole ring.
        for (off, len) in [
            (0, 0),
            (0, 1),
            (63, 2),
            (ring - 1, 1),
            (ring - 100, 4096),
            (ring, 10),
            (u32::MAX, u32::MAX),
            (0, ring),
        ] {
            map.data().prefetch_for_write(off, len);
        }
        let mut back = vec![0u8; ring as usize];
        map.data().read(0, &mut back);
        assert!(back == pattern, "a prefetch changed the ring's bytes");
    }
}
