//! The bus file: opening, checking, mapping, locking and waking.
//!
//! This is the thin layer between the pure ring code and the operating
//! system. A [`Bus`] is one mapping of one bus file; its lock (reached
//! through [`crate::lowlevel`]) gives a [`BusGuard`] through which the ring
//! is read and written.

use crate::error::Error;
use crate::mapping::Mapping;
use crate::ring::{Control, Geometry};
use crate::wire::{BUS_SIZE, MAGIC, VERSION};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Failed compare-and-swap attempts before a lock waiter sleeps
/// (NetBSD's `LOCK_COOLDOWN`).
pub const LOCK_COOLDOWN: u32 = 1001;
/// How long a lock waiter sleeps after [`LOCK_COOLDOWN`] failed attempts.
pub const LOCK_SLEEP: Duration = Duration::from_millis(1);
/// Before its first sleep, a waiter of ours yields the processor up to this
/// many times (each followed by another round of tries). When processes
/// outnumber processors, the usual reason for a lock to stay held past the
/// spinning is a holder preempted in mid-copy, waiting for a processor:
/// yielding lets it finish within microseconds, where a 1 ms sleep would
/// stall the waiter (and overrun readers behind it) a thousand times
/// longer. A NetBSD peer only ever sees the lock word change as before.
pub const LOCK_YIELDS: u32 = 64;
/// Failed tries after each yield before the next.
const TRIES_PER_YIELD: u32 = 64;

/// How long a lock waiter lets a holder that is known to be dead keep the
/// bus lock before taking it over.
pub const DEAD_HOLDER_GRACE: Duration = Duration::from_millis(100);
/// How long the lock may stay held, by a holder that cannot be identified
/// (a NetBSD peer, or one of ours in another PID namespace), with nothing
/// changing on the bus, before a waiter takes it over. No real critical
/// section takes more than microseconds; a NetBSD peer that panicked or was
/// killed inside the lock leaves it held forever.
pub const STUCK_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// How to open a bus file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenOptions {
    create: bool,
    mode: u32,
    follow_symlinks: bool,
    stuck_lock_timeout: Option<Duration>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create: true,
            mode: 0o600,
            follow_symlinks: false,
            stuck_lock_timeout: Some(STUCK_LOCK_TIMEOUT),
        }
    }
}

impl OpenOptions {
    /// Defaults: create a missing file with mode 0600; refuse symlinks.
    pub fn new() -> Self {
        Self::default()
    }
    /// Whether a missing file is created (default: yes).
    pub fn create(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }
    /// Permission bits of a newly created bus (default 0600: only the
    /// owner's processes may join or write the bus).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    /// Whether a bus path that is a symbolic link is followed (default: no,
    /// so that a link planted in a shared directory cannot redirect writes).
    pub fn follow_symlinks(mut self, yes: bool) -> Self {
        self.follow_symlinks = yes;
        self
    }
    /// After how long a lock held by an unidentifiable holder, with the bus
    /// unchanged meanwhile, is taken over (default [`STUCK_LOCK_TIMEOUT`]);
    /// `None`: never, as NetBSD. Holders of ours that died are always taken
    /// over after [`DEAD_HOLDER_GRACE`]; live ones never are.
    pub fn stuck_lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stuck_lock_timeout = timeout;
        self
    }
}

/// What a lock holder of ours writes into the header's spare word: its PID
/// (22 bits cover Linux's largest `pid_max`) and 10 bits naming its PID
/// namespace, so that a waiter in another namespace knows it cannot judge
/// the PID. 0 means "no holder recorded" (a NetBSD peer, or none).
fn my_holder_tag() -> u32 {
    crate::mapping::process_tag(|| holder_tag(std::process::id()))
}

/// The spare-word tag a lock holder with process id `pid` in this PID
/// namespace records (for tools and tests that inspect a bus).
pub fn holder_tag(pid: u32) -> u32 {
    (pid & PID_MASK) | (namespace_tag() << 22)
}

const PID_MASK: u32 = (1 << 22) - 1;

fn namespace_tag() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| (m.ino() as u32 ^ (m.ino() >> 32) as u32 ^ m.dev() as u32) % 1023 + 1)
        .unwrap_or(0)
}

/// What a waiter can tell about the lock's holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// A peer of ours in this PID namespace whose process exists.
    Alive,
    /// A peer of ours in this PID namespace whose process is gone (or a
    /// zombie).
    Dead,
    /// Nothing recorded, or recorded from another PID namespace.
    Unknown,
}

fn judge_holder(tag: u32, bus: Option<FileId>) -> Holder {
    let pid = tag & PID_MASK;
    if tag == 0 || pid == 0 || (tag >> 22) != (my_holder_tag() >> 22) {
        return Holder::Unknown;
    }
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return Holder::Unknown;
    };
    match rustix::process::test_kill_process(p) {
        Err(rustix::io::Errno::SRCH) => Holder::Dead,
        _ => {
            // A killed process that nobody has reaped yet still answers
            // kill(0); its state in /proc says it is a zombie.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            match stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
            {
                Some('Z') | Some('X') => Holder::Dead,
                _ if bus.and_then(|id| maps_file(pid, id)) == Some(false) => {
                    // A live process that has no mapping of this bus cannot
                    // hold its lock: the tag is stale (its pid was reused)
                    // or was written by someone else. Judge it as an
                    // unidentifiable holder.
                    Holder::Unknown
                }
                _ => Holder::Alive,
            }
        }
    }
}

/// A file's device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(file: &File) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        file.metadata().ok().map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Whether process `pid` has a mapping of the file `id`, from
/// `/proc/<pid>/maps`; `None` where that cannot be read (another user's
/// process, no procfs).
fn maps_file(pid: u32, id: FileId) -> Option<bool> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let (major, minor) = (
        libc::major(id.dev as libc::dev_t),
        libc::minor(id.dev as libc::dev_t),
    );
    Some(maps.lines().any(|line| {
        // start-end perms offset major:minor inode path
        let mut f = line.split_ascii_whitespace().skip(3);
        let (Some(dev), Some(ino)) = (f.next(), f.next()) else {
            return false;
        };
        let Some((ma, mi)) = dev.split_once(':') else {
            return false;
        };
        ino.parse::<u64>() == Ok(id.ino)
            && i64::from_str_radix(ma, 16).ok() == Some(i64::from(major))
            && i64::from_str_radix(mi, 16).ok() == Some(i64::from(minor))
    }))
}

/// A waiter's view of one continuous holding of the lock.
struct Watch {
    since: std::time::Instant,
    holder: u32,
    ctl: Control,
}

/// Checks that `path` names something a bus may live in, before it is
/// opened for writing: not a directory, device, pipe or socket, and not a
/// symbolic link unless allowed. A missing path is fine (it will be made).
fn check_path(path: &Path, opts: &OpenOptions) -> Result<(), Error> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, "cannot inspect bus file", e)),
    };
    let ft = meta.file_type();
    if ft.is_symlink() && !opts.follow_symlinks {
        return Err(Error::NotABus {
            path: path.into(),
            reason: "it is a symbolic link (refused unless following symlinks is asked for)".into(),
        });
    }
    let ft = if ft.is_symlink() {
        std::fs::metadata(path)
            .map_err(|e| Error::io(path, "cannot follow symbolic link", e))?
            .file_type()
    } else {
        ft
    };
    let kind = if ft.is_dir() {
        "a directory"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        return Ok(());
    };
    Err(Error::NotABus {
        path: path.into(),
        reason: format!("it is {kind}, not a regular file"),
    })
}

/// Checks a bus file's size and magic without changing it. An empty file is
/// a new bus; a 1 MiB file with magic 0 is a bus nobody has initialised yet.
fn check_file(path: &Path, file: &mut File) -> Result<u64, Error> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(path, "cannot stat bus file", e))?;
    if !meta.file_type().is_file() {
        return Err(Error::NotABus {
            path: path.into(),
            reason: "not a regular file".into(),
        });
    }
    let size = meta.len();
    if size == 0 {
        return Ok(0);
    }
    let mut magic = [0u8; 4];
    let got = file
        .read_at(&mut magic, 0)
        .map_err(|e| Error::io(path, "cannot read bus header", e))?;
    let magic = u32::from_ne_bytes(magic);
    if got == 4 && magic == MAGIC {
        if size != BUS_SIZE as u64 {
            return Err(Error::NotABus {
                path: path.into(),
                reason: format!(
                    "it has the shmif magic but is {size} bytes long instead of {BUS_SIZE}"
                ),
            });
        }
        return Ok(size);
    }
    if got == 4 && magic == MAGIC.swap_bytes() {
        return Err(Error::NotABus {
            path: path.into(),
            reason: "it was written by a host of the other byte order (only `shmif dump` reads it)"
                .into(),
        });
    }
    if got == 4 && magic == 0 && size == BUS_SIZE as u64 {
        return Ok(size);
    }
    let mut head = [0u8; 16];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    let text = head[..n]
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    Err(Error::NotABus {
        path: path.into(),
        reason: if text {
            format!("it is a {size}-byte text file")
        } else {
            format!("{size} bytes with magic {magic:#010x} (expected {MAGIC:#010x})")
        },
    })
}

/// One mapping of a bus file.
pub struct Bus {
    path: PathBuf,
    file: File,
    map: Mapping,
    stuck_lock_timeout: Option<Duration>,
    /// The mapped file's identity, to tell whether a recorded lock holder
    /// is on this bus at all.
    id: Option<FileId>,
    takeovers: std::sync::atomic::AtomicU64,
    resets: std::sync::atomic::AtomicU64,
    repairs: std::sync::atomic::AtomicU64,
}

/// What this mapping of a bus has had to repair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recoveries {
    /// Times a lock left by a dead or stuck holder was taken over.
    pub lock_takeovers: u64,
    /// Times the ring was found inconsistent after a takeover and reset.
    pub ring_resets: u64,
    /// Times the ring was reset because it could not be trusted, for any
    /// reason: after a takeover (the resets above), or because a writer,
    /// an attach or an interface coming up found impossible contents (a
    /// broken or hostile peer, a stray write into the file).
    pub ring_repairs: u64,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("path", &self.path).finish()
    }
}

impl Bus {
    /// Opens (creating if allowed and missing) the bus at `path`, sizes a new
    /// file to 1 MiB, maps it, and initialises it under the bus lock if
    /// nobody has. A file that is not a bus is refused and left untouched.
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Bus, Error> {
        let path = path.as_ref();
        check_path(path, opts)?;
        let open = |create_new: bool| {
            let mut oo = std::fs::OpenOptions::new();
            oo.read(true).write(true).mode(opts.mode);
            if create_new {
                oo.create_new(true);
            }
            if !opts.follow_symlinks {
                oo.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
            }
            oo.open(path)
        };
        // Create exclusively first, so that only a file made here gets the
        // requested mode (exactly: the umask is not meant to narrow a mode
        // asked for to share the bus).
        let created = if opts.create {
            match open(true) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                Err(e) => {
                    let what = if e.kind() == std::io::ErrorKind::NotFound {
                        "cannot create bus file: its directory does not exist"
                    } else {
                        "cannot create bus file"
                    };
                    return Err(Error::io(path, what, e));
                }
            }
        } else {
            None
        };
        let is_new = created.is_some();
        let mut file = match created {
            Some(f) => f,
            None => open(false).map_err(|e| {
                let what = if e.kind() == std::io::ErrorKind::NotFound {
                    "no such bus file"
                } else {
                    "cannot open bus file"
                };
                Error::io(path, what, e)
            })?,
        };
        if is_new {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(opts.mode))
                .map_err(|e| Error::io(path, "cannot set the new bus file's mode", e))?;
        }
        let size = check_file(path, &mut file)?;
        if size == 0 {
            if let Err(e) = allocate(path, &file, is_new) {
                if is_new {
                    // Leave nothing behind: the file did not exist before.
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        }
        let map = Mapping::new(&file).map_err(|e| Error::io(path, "cannot map bus file", e))?;
        let id = FileId::of(&file);
        let bus = Bus {
            path: path.to_path_buf(),
            file,
            map,
            stuck_lock_timeout: opts.stuck_lock_timeout,
            id,
            takeovers: Default::default(),
            resets: Default::default(),
            repairs: Default::default(),
        };
        {
            let guard = bus.acquire();
            match guard.bus.map.magic_word().load(Ordering::Relaxed) {
                0 => {
                    guard.bus.map.store_control(&Control::fresh(Geometry::V3));
                    guard.bus.map.magic_word().store(MAGIC, Ordering::Relaxed);
                }
                MAGIC => {
                    // Whatever a peer left in the ring, the next user of
                    // this mapping finds it usable.
                    guard.repair_unless(|data, ctl| {
                        crate::ring::check_chain(Geometry::V3, data, ctl)
                    });
                }
                other => {
                    return Err(Error::NotABus {
                        path: path.into(),
                        reason: format!("magic changed to {other:#010x} while attaching"),
                    })
                }
            }
        }
        Ok(bus)
    }

    /// The bus file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shape of this bus's ring ([`Geometry::V3`]).
    pub fn geometry(&self) -> Geometry {
        Geometry::V3
    }

    /// Takes the bus lock: compare-and-swap 0 to 1, sleeping 1 ms after
    /// every [`LOCK_COOLDOWN`] failed tries, as NetBSD peers do; before the
    /// first sleep of a wait, up to [`LOCK_YIELDS`] yields of the processor
    /// give a preempted holder the chance to finish.
    ///
    /// Unlike NetBSD, a waiter does not wait forever for a holder that will
    /// never release: each holder of ours records itself in the header's
    /// spare word, and a waiter takes the lock over from a recorded holder
    /// whose process is gone after [`DEAD_HOLDER_GRACE`], or from an
    /// unidentifiable one after the stuck-lock timeout with nothing on the
    /// bus changing. After a takeover the ring is checked and, if the dead
    /// holder left it inconsistent, reset (see [`crate::ring::reset`]).
    pub(crate) fn acquire(&self) -> BusGuard<'_> {
        let word = self.map.lock_word();
        let mut tries = 0u32;
        let mut yields = 0u32;
        let mut watch: Option<Watch> = None;
        loop {
            if try_lock(word) {
                break;
            }
            tries += 1;
            if tries <= LOCK_COOLDOWN {
                std::hint::spin_loop();
                continue;
            }
            if yields < LOCK_YIELDS {
                // Between rounds of tries, let a preempted holder run.
                if (tries - LOCK_COOLDOWN) % TRIES_PER_YIELD == 0 {
                    yields += 1;
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            tries = 0;
            if let Some(guard) = self.consider_takeover(&mut watch) {
                return guard;
            }
            std::thread::sleep(LOCK_SLEEP);
        }
        self.map
            .spare_word()
            .store(my_holder_tag(), Ordering::Relaxed);
        BusGuard { bus: self }
    }

    /// Decides, after a cooldown, whether the current holding of the lock
    /// is one to take over, and if so takes it.
    fn consider_takeover(&self, watch: &mut Option<Watch>) -> Option<BusGuard<'_>> {
        let holder = self.map.spare_word().load(Ordering::Relaxed);
        // Read without the lock: only to notice that the bus is moving.
        let ctl = self.map.load_control();
        let now = std::time::Instant::now();
        let since = match watch {
            Some(w) if w.holder == holder && w.ctl == ctl => w.since,
            _ => {
                *watch = Some(Watch {
                    since: now,
                    holder,
                    ctl,
                });
                return None;
            }
        };
        let waited = now.duration_since(since);
        let steal = match judge_holder(holder, self.id) {
            Holder::Alive => false,
            Holder::Dead => waited >= DEAD_HOLDER_GRACE,
            Holder::Unknown => self.stuck_lock_timeout.is_some_and(|t| waited >= t),
        };
        if !steal {
            return None;
        }
        let guard = self.take_over(holder);
        if guard.is_none() {
            *watch = None;
        }
        guard
    }

    /// Takes over the holding of the lock recorded as `holder` in the spare
    /// word: of several waiters, the one whose swap of the spare word from
    /// `holder` to its own tag succeeds. `None` if another waiter won, or
    /// if the lock turned out to have been released meanwhile: then the
    /// claim is withdrawn (the spare word never names a holder of ours
    /// while the lock word is 0, or a NetBSD peer taking the lock next and
    /// dying in it would be judged alive for good), and the caller takes
    /// the lock the ordinary way.
    pub(crate) fn take_over(&self, holder: u32) -> Option<BusGuard<'_>> {
        let me = my_holder_tag();
        let spare = self.map.spare_word();
        if spare
            .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        if self.map.lock_word().load(Ordering::Acquire) == 0 {
            // Released meanwhile: withdraw the claim, unless a new holder
            // of ours has written its own tag over it already.
            let _ = spare.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
            return None;
        }
        std::sync::atomic::fence(Ordering::Acquire);
        self.takeovers.fetch_add(1, Ordering::Relaxed);
        let guard = BusGuard { bus: self };
        if guard.repair_unless(|data, ctl| crate::ring::check_chain(Geometry::V3, data, ctl)) {
            self.resets.fetch_add(1, Ordering::Relaxed);
        }
        Some(guard)
    }

    /// How often this mapping has recovered the bus from a dead holder.
    pub(crate) fn recoveries(&self) -> Recoveries {
        Recoveries {
            lock_takeovers: self.takeovers.load(Ordering::Relaxed),
            ring_resets: self.resets.load(Ordering::Relaxed),
            ring_repairs: self.repairs.load(Ordering::Relaxed),
        }
    }

    /// Wakes every reader on the bus: writes the version word (3) at file
    /// offset 4 through the file descriptor, which raises the file-change
    /// event readers sleep on. Call after a batch of frames, unlocked.
    ///
    /// Writes nothing, and returns [`Error::BusGone`], once this mapping
    /// has caught a fault (the file was truncated under it): a bus emptied
    /// under a peer is left as it is rather than made an 8-byte file. The
    /// check is one atomic load, since this runs after every send; a peer
    /// that leaves without having touched the bus since a truncation
    /// checks the file's size too (see `Interface::down`).
    pub fn wake(&self) -> Result<(), Error> {
        self.check_mapping()?;
        self.file
            .write_all_at(&VERSION.to_ne_bytes(), crate::wire::field::VERSION as u64)
            .map_err(|e| Error::io(&self.path, "cannot write wake-up word", e))
    }

    /// [`Error::BusGone`] if the file was truncated under this mapping: a
    /// fault was caught, or the file is shorter than a bus (one `fstat`).
    pub(crate) fn check_size(&self) -> Result<(), Error> {
        use std::os::unix::fs::MetadataExt;
        self.check_mapping()?;
        match self.file.metadata() {
            Ok(m) if m.size() >= BUS_SIZE as u64 => Ok(()),
            Ok(_) => Err(Error::BusGone {
                path: self.path.clone(),
                what: "truncated",
            }),
            Err(e) => Err(Error::io(&self.path, "cannot stat bus file", e)),
        }
    }

    /// The ring's shared state read without the lock: a consistent snapshot
    /// is not guaranteed, but a change shows that something was written.
    pub(crate) fn peek_control(&self) -> Control {
        self.map.load_control()
    }

    /// Fails with [`Error::BusGone`] if the file was truncated under this
    /// mapping (its pages then read as zeros). Cheap: one atomic load.
    pub fn check_mapping(&self) -> Result<(), Error> {
        if self.map.is_gone() {
            return Err(Error::BusGone {
                path: self.path.clone(),
                what: "truncated",
            });
        }
        Ok(())
    }

    /// Fails with [`Error::BusGone`] if the path no longer names the file
    /// this mapping is of (removed, or replaced by another file), or the
    /// file was truncated. Two system calls: call when the file's metadata
    /// changed, not on every frame.
    pub fn check_identity(&self) -> Result<(), Error> {
        use std::os::unix::fs::MetadataExt;
        self.check_mapping()?;
        let gone = |what| {
            Err(Error::BusGone {
                path: self.path.clone(),
                what,
            })
        };
        let mine = match self.file.metadata() {
            Ok(m) => m,
            Err(e) => return Err(Error::io(&self.path, "cannot stat bus file", e)),
        };
        if mine.len() < BUS_SIZE as u64 {
            return gone("truncated");
        }
        match std::fs::metadata(&self.path) {
            Ok(m) if m.dev() == mine.dev() && m.ino() == mine.ino() => Ok(()),
            Ok(_) => gone("replaced by another file"),
            Err(_) => gone("removed"),
        }
    }

    /// The version word as currently in the mapping (0 on a bus that never
    /// saw a wake-up).
    pub fn version(&self) -> u32 {
        self.map.version_word().load(Ordering::Relaxed)
    }
}

/// The lock word as the spin loop sees it (a trait so that a test can
/// count what the loop does to it).
pub(crate) trait LockWord {
    /// Loads the word (relaxed).
    fn peek(&self) -> u32;
    /// Compare-and-swap 0 to 1 with acquire ordering; may fail spuriously.
    fn try_swap(&self) -> bool;
}

impl LockWord for std::sync::atomic::AtomicU32 {
    fn peek(&self) -> u32 {
        self.load(Ordering::Relaxed)
    }
    fn try_swap(&self) -> bool {
        self.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
}

/// One try of the lock, test-and-test-and-set: the compare-and-swap, which
/// takes the cache line exclusive, only when a plain load saw the lock
/// free. A waiter that swapped on every try would pull the header's cache
/// line away from the holder, who is writing `first`, `last` and `gen` in
/// it, on each of its thousand tries.
pub(crate) fn try_lock(word: &impl LockWord) -> bool {
    word.peek() == 0 && word.try_swap()
}

/// Gives a new bus file its 1 MiB, with its blocks allocated up front where
/// the file system can, so that a full disk is an error now rather than a
/// SIGBUS later. On failure, a file this call's caller `created` is cut
/// back to 0 bytes; any other is left as it is (another peer may have
/// sized and initialised it meanwhile).
fn allocate(path: &Path, file: &File, created: bool) -> Result<(), Error> {
    allocate_with(path, file, created, |f| {
        rustix::fs::fallocate(f, rustix::fs::FallocateFlags::empty(), 0, BUS_SIZE as u64)
    })
}

fn allocate_with(
    path: &Path,
    file: &File,
    created: bool,
    fallocate: impl FnOnce(&File) -> Result<(), rustix::io::Errno>,
) -> Result<(), Error> {
    match fallocate(file) {
        Ok(()) => {}
        Err(rustix::io::Errno::NOSPC) => {
            if created {
                let _ = file.set_len(0);
            }
            return Err(Error::io(
                path,
                "cannot allocate 1 MiB for the bus",
                std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
            ));
        }
        // Not supported here (tmpfs on old kernels, some FUSE): size it plainly.
        Err(_) => {}
    }
    file.set_len(BUS_SIZE as u64)
        .map_err(|e| Error::io(path, "cannot size bus file to 1 MiB", e))
}

/// The bus lock, held. Dropping it releases the lock (swap to 0, release
/// ordering).
pub struct BusGuard<'a> {
    bus: &'a Bus,
}

impl BusGuard<'_> {
    /// The shape of the ring ([`Geometry::V3`]).
    pub fn geometry(&self) -> Geometry {
        Geometry::V3
    }
    /// Loads the ring's shared state.
    pub fn control(&self) -> Control {
        self.bus.map.load_control()
    }
    /// Stores the ring's shared state.
    pub fn set_control(&self, c: &Control) {
        self.bus.map.store_control(c)
    }
    /// Stores `first` alone, before frame bytes are written over evicted
    /// frames (see [`crate::ring::append_with`]).
    pub fn set_first(&self, first: u32) {
        self.bus.map.store_first(first)
    }
    /// The data region, as a [`crate::ring::Region`] that reads and writes
    /// the shared ring (only while this guard holds the lock).
    pub fn data(&self) -> impl crate::ring::Region + '_ {
        self.bus.map.data()
    }

    /// Resets the ring ([`crate::ring::reset`]) unless `check` accepts its
    /// contents, and counts the repair ([`Recoveries::ring_repairs`]).
    /// Returns whether it reset.
    pub fn repair_unless(
        &self,
        check: impl FnOnce(&dyn crate::ring::Region, &Control) -> Result<(), crate::ring::Corrupt>,
    ) -> bool {
        let ctl = self.control();
        let mut data = self.bus.map.data();
        if check(&data, &ctl).is_ok() {
            return false;
        }
        self.reset_ring(&mut data, &ctl);
        true
    }

    /// Resets the ring unconditionally, counting the repair.
    pub fn repair(&self) {
        let ctl = self.control();
        let mut data = self.bus.map.data();
        self.reset_ring(&mut data, &ctl);
    }

    fn reset_ring(&self, data: &mut crate::mapping::SharedData<'_>, ctl: &Control) {
        let fresh = crate::ring::reset(Geometry::V3, data, ctl);
        self.set_control(&fresh);
        self.bus.repairs.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for BusGuard<'_> {
    fn drop(&mut self) {
        self.bus.map.spare_word().store(0, Ordering::Relaxed);
        self.bus.map.lock_word().swap(0, Ordering::Release);
    }
}

/// Reads a whole bus file into memory for inspection (no mapping, no lock:
/// what `shmif dump` looks at). Refuses directories and other non-files.
pub fn read_image(path: &Path) -> Result<Vec<u8>, Error> {
    check_path(
        path,
        &OpenOptions {
            follow_symlinks: true,
            ..OpenOptions::default()
        },
    )?;
    let mut file = File::open(path).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "no such bus file"
        } else {
            "cannot open bus file"
        };
        Error::io(path, what, e)
    })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(path, "cannot stat bus file", e))?;
    if meta.len() == 0 {
        return Err(Error::NotABus {
            path: path.into(),
            reason: "the file is empty".into(),
        });
    }
    let mut image = Vec::with_capacity(BUS_SIZE);
    file.by_ref()
        .take(BUS_SIZE as u64 + 1)
        .read_to_end(&mut image)
        .map_err(|e| Error::io(path, "cannot read bus file", e))?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Counts what the spin loop does to the lock word.
    struct Counted {
        value: u32,
        swaps: Cell<u32>,
    }

    impl LockWord for Counted {
        fn peek(&self) -> u32 {
            self.value
        }
        fn try_swap(&self) -> bool {
            self.swaps.set(self.swaps.get() + 1);
            self.value == 0
        }
    }

    #[test]
    fn lock_spin_tests_before_it_swaps() {
        let held = Counted {
            value: 1,
            swaps: Cell::new(0),
        };
        for _ in 0..LOCK_COOLDOWN {
            assert!(!try_lock(&held));
        }
        assert_eq!(
            held.swaps.get(),
            0,
            "a held lock's cache line must not be swapped at by waiters"
        );
        let free = Counted {
            value: 0,
            swaps: Cell::new(0),
        };
        assert!(try_lock(&free));
        assert_eq!(free.swaps.get(), 1);
    }

    #[test]
    fn allocate_never_truncates_a_file_it_did_not_create() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        // Between our look (0 bytes: a new bus) and the allocation, another
        // peer sized and initialised the file; then the disk filled up.
        let peer_made_it = |f: &File| {
            let mut image = vec![0u8; BUS_SIZE];
            image[..4].copy_from_slice(&MAGIC.to_ne_bytes());
            f.write_all_at(&image, 0).unwrap();
            Err(rustix::io::Errno::NOSPC)
        };
        assert!(allocate_with(&path, &file, false, peer_made_it).is_err());
        let image = std::fs::read(&path).unwrap();
        assert_eq!(image.len(), BUS_SIZE, "a bus we did not create was cut");
        assert_eq!(image[..4], MAGIC.to_ne_bytes());
        // A file this open created is cut back (and then removed by open).
        assert!(allocate_with(&path, &file, true, |_| Err(rustix::io::Errno::NOSPC)).is_err());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
