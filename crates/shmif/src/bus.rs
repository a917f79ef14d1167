//! The bus file: opening, checking, mapping, locking and waking.
//!
//! This is the thin layer between the pure ring code and the operating
//! system. A [`Bus`] is one mapping of one bus file; its lock (reached
//! through [`crate::lowlevel`]) gives a [`BusGuard`] through which the ring
//! is read and written.

use crate::error::Error;
use crate::mapping::{Layout, Mapping};
use crate::ring::{Control, Geometry};
use crate::wire::ext::{ExtHeader, ExtHeaderRepr, EXT_HEADER_LEN, EXT_MAGIC};
use crate::wire::{BUS_SIZE, MAGIC, VERSION};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
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
    reader_stall: Duration,
}

/// How long a writer on an extended bus waits for a registered reader that
/// makes no progress before leaving it behind (default of
/// [`OpenOptions::reader_stall`]).
pub const READER_STALL: Duration = Duration::from_secs(1);
/// How long a writer waits for a registered reader whose process is gone
/// before freeing its slot.
pub const DEAD_READER_GRACE: Duration = Duration::from_millis(100);

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create: true,
            mode: 0o600,
            follow_symlinks: false,
            stuck_lock_timeout: Some(STUCK_LOCK_TIMEOUT),
            reader_stall: READER_STALL,
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
    /// On an extended bus, how long this peer's writes wait for a
    /// registered (lossless) reader that makes no progress before leaving
    /// it behind to be overrun (default [`READER_STALL`]).
    pub fn reader_stall(mut self, stall: Duration) -> Self {
        self.reader_stall = stall;
        self
    }
}

/// This process's tag: its PID (22 bits cover Linux's largest `pid_max`)
/// and 9 bits naming its PID namespace, so that a waiter in another
/// namespace knows it cannot judge the PID. A lock waiter of ours claims
/// the header's spare word with it before it swaps the lock word, and marks
/// it [`HELD`] once the lock word is its (see [`try_lock`]); a registered
/// reader names its slot's owner with it. 0 means "nobody recorded" (a
/// NetBSD peer, or none).
fn my_holder_tag() -> u32 {
    crate::mapping::process_tag(|| claim_tag(std::process::id()))
}

/// The spare-word tag a lock holder with process id `pid` in this PID
/// namespace records while it holds the lock (for tools and tests that
/// inspect a bus): its claim tag ([`claim_tag`]) marked held (bit 31).
pub fn holder_tag(pid: u32) -> u32 {
    claim_tag(pid) | HELD
}

/// The tag of process `pid` in this PID namespace, unmarked: what the spare
/// word holds while the process claims the lock or lets it go, and what a
/// registered reader's slot names as its owner (for tools and tests that
/// inspect a bus).
pub fn claim_tag(pid: u32) -> u32 {
    (pid & PID_MASK) | (namespace_tag() << 22)
}

const PID_MASK: u32 = (1 << 22) - 1;
/// The spare word's top bit: set while the tagged process holds the lock
/// word, clear while it is only claiming it or letting it go.
const HELD: u32 = 1 << 31;
/// The 9 bits between the PID and [`HELD`].
const NAMESPACE_MASK: u32 = 0x1ff << 22;

fn namespace_tag() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| (m.ino() as u32 ^ (m.ino() >> 32) as u32 ^ m.dev() as u32) % 511 + 1)
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
    if tag == 0 || pid == 0 || tag & NAMESPACE_MASK != my_holder_tag() & NAMESPACE_MASK {
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

/// A waiter's view of one continuous holding of the lock (or, with the
/// lock word 0, of one claim of the spare word that has not gone away).
struct Watch {
    since: std::time::Instant,
    locked: bool,
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

/// What [`check_file`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// An empty file: a new version-3 bus, to be sized.
    Empty,
    /// A version-3 bus (or a 1 MiB file with magic 0, not initialised yet).
    V3,
    /// An extended bus, its header validated.
    Extended(ExtHeaderRepr),
}

impl Found {
    fn layout(self) -> Layout {
        match self {
            Found::Empty | Found::V3 => Layout::V3,
            Found::Extended(h) => Layout {
                len: h.file_size() as usize,
                header: EXT_HEADER_LEN,
                ring: h.ring_size,
            },
        }
    }
    fn geometry(self) -> Geometry {
        match self {
            Found::Empty | Found::V3 => Geometry::V3,
            // A validated header's size is at least 1 MiB less 8 KiB,
            // far above Geometry::MIN_SIZE.
            Found::Extended(h) => Geometry::of_extended(&h).unwrap_or(Geometry::V3),
        }
    }
}

/// Checks a bus file's size and magic without changing it. An empty file is
/// a new bus; a 1 MiB file with magic 0 is a bus nobody has initialised yet;
/// a file with the extended magic must have a valid extended header.
fn check_file(path: &Path, file: &mut File) -> Result<Found, Error> {
    let found = check_file_size(path, file)?;
    if found != 0 {
        let mut magic = [0u8; 4];
        let _ = file.read_at(&mut magic, 0);
        if u32::from_ne_bytes(magic) == EXT_MAGIC {
            let mut head = vec![0u8; EXT_HEADER_LEN];
            let got = file
                .read_at(&mut head, 0)
                .map_err(|e| Error::io(path, "cannot read bus header", e))?;
            head.truncate(got);
            let parsed = ExtHeader::new_checked(&head[..])
                .and_then(|h| ExtHeaderRepr::parse(&h, Some(found)));
            return match parsed {
                Ok(h) => Ok(Found::Extended(h)),
                Err(e) => Err(Error::NotABus {
                    path: path.into(),
                    reason: format!("it has the extended shmif magic but its header is bad: {e}"),
                }),
            };
        }
        return Ok(Found::V3);
    }
    Ok(Found::Empty)
}

/// The size check of a version-3 bus (an extended magic passes, for
/// [`check_file`] to validate): the file's size, 0 for an empty file.
fn check_file_size(path: &Path, file: &mut File) -> Result<u64, Error> {
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
    if got == 4 && magic == EXT_MAGIC {
        return Ok(size);
    }
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
    reader_stall: Duration,
    /// The ring's shape, from the format found at attach time.
    geometry: Geometry,
    /// Whether this is an extended bus (`wire::ext`).
    extended: bool,
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
        let found = check_file(path, &mut file)?;
        if found == Found::Empty {
            if let Err(e) = allocate(path, &file, is_new) {
                if is_new {
                    // Leave nothing behind: the file did not exist before.
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        }
        let map = Mapping::new(&file, found.layout())
            .map_err(|e| Error::io(path, "cannot map bus file", e))?;
        let id = FileId::of(&file);
        let geometry = found.geometry();
        let bus = Bus {
            path: path.to_path_buf(),
            file,
            map,
            reader_stall: opts.reader_stall,
            geometry,
            extended: matches!(found, Found::Extended(_)),
            stuck_lock_timeout: opts.stuck_lock_timeout,
            id,
            takeovers: Default::default(),
            resets: Default::default(),
            repairs: Default::default(),
        };
        {
            let guard = bus.acquire();
            let expected = if bus.extended { EXT_MAGIC } else { MAGIC };
            match guard.bus.map.magic_word().load(Ordering::Relaxed) {
                0 if !bus.extended => {
                    guard.bus.map.store_control(&Control::fresh(Geometry::V3));
                    guard.bus.map.magic_word().store(MAGIC, Ordering::Relaxed);
                }
                m if m == expected => {
                    // Whatever a peer left in the ring, the next user of
                    // this mapping finds it usable.
                    guard.repair_unless(|data, ctl| crate::ring::check_chain(geometry, data, ctl));
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

    /// The shape of this bus's ring: [`Geometry::V3`] for a NetBSD bus,
    /// the size and frame limit from the header for an extended bus.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Whether this is an extended bus (see `EXTENDED-FORMAT.md`), not a
    /// NetBSD version-3 one.
    pub fn is_extended(&self) -> bool {
        self.extended
    }

    /// The geometry a bus at `path` would be attached with, without
    /// attaching, locking or changing anything: an extended bus's (its
    /// header validated), or [`Geometry::V3`] for anything else (a NetBSD
    /// bus, a missing file, a file that is no bus: attaching says what is
    /// wrong with those). For commands that check their arguments against
    /// the bus before they touch it.
    pub fn peek_geometry(path: impl AsRef<Path>) -> Geometry {
        let Ok(mut file) = File::open(path.as_ref()) else {
            return Geometry::V3;
        };
        match check_file(path.as_ref(), &mut file) {
            Ok(found) => found.geometry(),
            Err(_) => Geometry::V3,
        }
    }

    /// Creates an extended bus (see `EXTENDED-FORMAT.md`) at `path`, which
    /// must not exist: a file of `file_size` bytes (whole pages, 1 MiB to
    /// 1 GiB) carrying frames of up to `max_frame` bytes (14..=65,549),
    /// then attaches to it. The file is written complete under a temporary
    /// name in the same directory and then linked to `path`, so no peer
    /// sees it half made; `path` existing is an error and leaves it as it
    /// is. `opts` gives the mode and the lock timeout.
    pub fn create(
        path: impl AsRef<Path>,
        file_size: u64,
        max_frame: u32,
        opts: &OpenOptions,
    ) -> Result<Bus, Error> {
        let path = path.as_ref();
        let Some(header) = ExtHeaderRepr::new(file_size, max_frame) else {
            return Err(Error::BadShape {
                path: path.into(),
                reason: format!(
                    "an extended bus is 1 MiB to 1 GiB in whole 4 KiB pages, with frames of 14 to \
                     65549 bytes under half the ring: {file_size} bytes and frames of {max_frame} \
                     do not fit"
                ),
            });
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            ".{}.creating.{}",
            name.unwrap_or_default(),
            std::process::id()
        ));
        let made = (|| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(opts.mode)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&tmp)
                .map_err(|e| Error::io(path, "cannot create bus file", e))?;
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(opts.mode))
                .map_err(|e| Error::io(path, "cannot set the new bus file's mode", e))?;
            allocate_len(path, &file, true, file_size)?;
            file.write_all_at(&header.to_bytes(), 0)
                .map_err(|e| Error::io(path, "cannot write the bus header", e))?;
            std::fs::hard_link(&tmp, path).map_err(|e| {
                let what = if e.kind() == std::io::ErrorKind::AlreadyExists {
                    "cannot create bus: the path exists already"
                } else {
                    "cannot create bus file"
                };
                Error::io(path, what, e)
            })
        })();
        let _ = std::fs::remove_file(&tmp);
        made?;
        Bus::open(
            path,
            &OpenOptions {
                create: false,
                ..opts.clone()
            },
        )
    }

    /// Takes the bus lock: compare-and-swap 0 to 1, sleeping 1 ms after
    /// every [`LOCK_COOLDOWN`] failed tries, as NetBSD peers do; before the
    /// first sleep of a wait, up to [`LOCK_YIELDS`] yields of the processor
    /// give a preempted holder the chance to finish.
    ///
    /// Unlike NetBSD, a waiter does not wait forever for a holder that will
    /// never release: each holder of ours records itself in the header's
    /// spare word (claimed before the lock word is swapped, so that no
    /// instant of its holding is unrecorded: see [`try_lock`]), and a
    /// waiter takes the lock over from a recorded holder whose process is
    /// gone after [`DEAD_HOLDER_GRACE`], or from an unidentifiable one
    /// after the stuck-lock timeout with nothing on the bus changing. After
    /// a takeover the ring is checked and, if the dead holder left it
    /// inconsistent, reset (see [`crate::ring::reset`]).
    pub(crate) fn acquire(&self) -> BusGuard<'_> {
        let (word, spare) = (self.map.lock_word(), self.map.spare_word());
        let me = my_holder_tag();
        let mut tries = 0u32;
        let mut yields = 0u32;
        let mut watch: Option<Watch> = None;
        loop {
            if try_lock(word, spare, me) {
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
        BusGuard { bus: self }
    }

    /// Decides, after a cooldown, whether the current holding of the lock
    /// is one to take over, and if so takes it; with the lock word free, it
    /// clears a claim of the spare word that its maker left behind.
    fn consider_takeover(&self, watch: &mut Option<Watch>) -> Option<BusGuard<'_>> {
        let spare = self.map.spare_word();
        let holder = spare.load(Ordering::Relaxed);
        let locked = self.map.lock_word().load(Ordering::Relaxed) != 0;
        // Read without the lock: only to notice that the bus is moving.
        let ctl = self.map.load_control();
        let now = std::time::Instant::now();
        let since = match watch {
            // A claim with the lock word free is stale however busy the
            // bus is; a holding is judged stuck only if nothing moves.
            Some(w) if w.locked == locked && w.holder == holder && (w.ctl == ctl || !locked) => {
                w.since
            }
            _ => {
                *watch = Some(Watch {
                    since: now,
                    locked,
                    holder,
                    ctl,
                });
                return None;
            }
        };
        let waited = now.duration_since(since);
        if !locked {
            // The lock word is free but the spare word still names someone:
            // a peer of ours between claiming it and swapping the lock word,
            // or between releasing the lock word and clearing it, each a
            // matter of nanoseconds, or one that died there. Cleared if its
            // maker is gone, or if it stays for the grace (its maker, if
            // alive and only stopped, finds its claim gone when it resumes,
            // which `try_lock` allows for).
            if holder == 0
                || judge_holder(holder, self.id) == Holder::Dead
                || waited >= DEAD_HOLDER_GRACE
            {
                let _ = spare.compare_exchange(holder, 0, Ordering::Relaxed, Ordering::Relaxed);
                *watch = None;
            }
            return None;
        }
        let steal = match judge_holder(holder, self.id) {
            // A claim seen with the lock word set: its maker is between
            // swapping the lock word and marking the claim held, or is
            // claiming while a NetBSD peer holds the lock. Which one cannot
            // be told, so a live maker is waited on as an unidentifiable
            // holder would be.
            Holder::Alive if holder & HELD == 0 => {
                self.stuck_lock_timeout.is_some_and(|t| waited >= t)
            }
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
    /// `holder` to its own tag succeeds (marked [`HELD`] once it is sure
    /// the lock word is still set). `None` if another waiter won, or if the
    /// lock turned out to have been released meanwhile: then the claim is
    /// withdrawn (the spare word names a live peer of ours with the lock
    /// word 0 only for the nanoseconds of a claim or a release, or a NetBSD
    /// peer taking the lock next and dying in it would wait on that peer),
    /// and the caller takes the lock the ordinary way.
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
        spare.store(me | HELD, Ordering::Relaxed);
        self.takeovers.fetch_add(1, Ordering::Relaxed);
        let guard = BusGuard { bus: self };
        let geometry = self.geometry;
        if guard.repair_unless(|data, ctl| crate::ring::check_chain(geometry, data, ctl)) {
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
    ///
    /// On an extended bus (Linux), the readers that sleep on the futex are
    /// woken through it, and only if the sleeper count says someone sleeps
    /// (no system call otherwise); the `pwrite` is made only while some
    /// interface has handed out its wake-up descriptor (`fd_waiters`).
    pub fn wake(&self) -> Result<(), Error> {
        self.check_mapping()?;
        if self.futex_wakeups() {
            use crate::wire::ext::field;
            // Orders the frames' control stores before the sleeper count is
            // read; a sleeper counts itself before it looks at the ring.
            std::sync::atomic::fence(Ordering::SeqCst);
            if self
                .map
                .header_u32(field::DATA_SLEEPERS)
                .load(Ordering::SeqCst)
                != 0
            {
                let seq = self.map.header_u32(field::DATA_SEQ);
                seq.fetch_add(1, Ordering::SeqCst);
                let _ = rustix::thread::futex::wake(
                    seq,
                    rustix::thread::futex::Flags::empty(),
                    i32::MAX as u32,
                );
            }
            if self
                .map
                .header_u32(field::FD_WAITERS)
                .load(Ordering::SeqCst)
                == 0
            {
                return Ok(());
            }
        }
        self.file
            .write_all_at(&VERSION.to_ne_bytes(), crate::wire::field::VERSION as u64)
            .map_err(|e| Error::io(&self.path, "cannot write wake-up word", e))
    }

    /// Whether readers of this bus sleep on its futex word (an extended bus,
    /// on Linux) rather than on the file-change event alone.
    pub(crate) fn futex_wakeups(&self) -> bool {
        cfg!(any(target_os = "linux", target_os = "android")) && self.extended
    }

    /// Sleeps on the extended bus's futex until a writer wakes sleepers or
    /// `timeout` passes, unless `changed` (called after this reader has
    /// counted itself as a sleeper, so a writer publishing after the check
    /// sees the count) says there is something to read already. Returns
    /// whether it was woken (or found something) rather than timed out.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) fn futex_sleep(&self, timeout: Duration, changed: impl FnOnce() -> bool) -> bool {
        use crate::wire::ext::field;
        let sleepers = self.map.header_u32(field::DATA_SLEEPERS);
        let seq = self.map.header_u32(field::DATA_SEQ);
        sleepers.fetch_add(1, Ordering::SeqCst);
        let seen = seq.load(Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let woken = if changed() {
            true
        } else {
            let ts = rustix::time::Timespec {
                tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(timeout.subsec_nanos()),
            };
            match rustix::thread::futex::wait(
                seq,
                rustix::thread::futex::Flags::empty(),
                seen,
                Some(&ts),
            ) {
                Err(rustix::io::Errno::TIMEDOUT) => seq.load(Ordering::SeqCst) != seen,
                _ => true,
            }
        };
        sleepers.fetch_sub(1, Ordering::SeqCst);
        woken
    }

    /// Without futexes: never sleeps (the caller uses its file watch).
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(crate) fn futex_sleep(&self, _timeout: Duration, _changed: impl FnOnce() -> bool) -> bool {
        true
    }

    /// Counts (or uncounts) one interface that waits on the file-change
    /// event of an extended bus, so that writers keep making the wake-up
    /// `pwrite` for it.
    pub(crate) fn count_fd_waiter(&self, add: bool) {
        if self.extended {
            let w = self.map.header_u32(crate::wire::ext::field::FD_WAITERS);
            if add {
                w.fetch_add(1, Ordering::SeqCst);
            } else {
                w.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// [`Error::BusGone`] if the file was truncated under this mapping: a
    /// fault was caught, or the file is shorter than a bus (one `fstat`).
    pub(crate) fn check_size(&self) -> Result<(), Error> {
        use std::os::unix::fs::MetadataExt;
        self.check_mapping()?;
        match self.file.metadata() {
            Ok(m) if m.size() >= self.map.layout().len as u64 => Ok(()),
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
        if mine.len() < self.map.layout().len as u64 {
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

/// A writer's watch over the registered readers it waits for (see
/// [`Bus::judge_readers`]): per slot, the position and heartbeat last seen
/// and since when they have not changed.
#[derive(Debug)]
pub(crate) struct ReaderWatch {
    seen: [Option<(u64, u64, std::time::Instant)>; crate::wire::ext::READER_SLOTS],
    /// When the owners were last judged (a look into /proc).
    judged: Option<std::time::Instant>,
}

impl Default for ReaderWatch {
    fn default() -> Self {
        ReaderWatch {
            seen: [None; crate::wire::ext::READER_SLOTS],
            judged: None,
        }
    }
}

/// The registered readers of an extended bus: the reader table of
/// `EXTENDED-FORMAT.md`. Every value in it is written by other processes
/// and only used as a bound on how long a writer waits: a bad one makes a
/// writer wait at most the stall bound, never read or write out of place.
impl Bus {
    fn slot_u32(&self, i: usize, field: usize) -> &std::sync::atomic::AtomicU32 {
        use crate::wire::ext::{READER_SLOT_LEN, READER_TABLE};
        self.map
            .header_u32(READER_TABLE + i * READER_SLOT_LEN + field)
    }
    fn slot_u64(&self, i: usize, field: usize) -> &std::sync::atomic::AtomicU64 {
        use crate::wire::ext::{READER_SLOT_LEN, READER_TABLE};
        self.map
            .header_u64(READER_TABLE + i * READER_SLOT_LEN + field)
    }
    fn reader_mask(&self) -> &std::sync::atomic::AtomicU64 {
        self.map.header_u64(crate::wire::ext::field::READER_MASK)
    }

    /// Registers a lossless reader whose next unread byte is at linear
    /// position `pos` (generation × ring size + offset): writers will not
    /// overwrite it. Call with the bus lock held (so that no writer is
    /// between its space check and its copy). `None` on a version-3 bus or
    /// with every slot taken (the reader is then lossy).
    pub(crate) fn register_reader(&self, pos: u64) -> Option<usize> {
        use crate::wire::ext::{slot, SlotFlags, READER_SLOTS};
        if !self.extended {
            return None;
        }
        let me = my_holder_tag().max(1);
        for i in 0..READER_SLOTS {
            if self
                .slot_u32(i, slot::OWNER)
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.slot_u64(i, slot::POSITION)
                    .store(pos, Ordering::Relaxed);
                self.slot_u64(i, slot::LEFT_BEHIND)
                    .store(0, Ordering::Relaxed);
                self.slot_u32(i, slot::FLAGS)
                    .store(SlotFlags::ACTIVE, Ordering::Release);
                self.reader_mask().fetch_or(1 << i, Ordering::AcqRel);
                return Some(i);
            }
        }
        None
    }

    /// Publishes a registered reader's new position (after it copied out
    /// everything before it) and its liveness; a reader left behind as
    /// stalled becomes one writers wait for again.
    pub(crate) fn publish_reader(&self, i: usize, pos: u64) {
        use crate::wire::ext::{slot, SlotFlags};
        self.slot_u64(i, slot::POSITION)
            .store(pos, Ordering::Release);
        self.slot_u64(i, slot::HEARTBEAT)
            .fetch_add(1, Ordering::Relaxed);
        let flags = self.slot_u32(i, slot::FLAGS);
        if flags.load(Ordering::Relaxed) != SlotFlags::ACTIVE {
            flags.store(SlotFlags::ACTIVE, Ordering::Release);
        }
    }

    /// With the bus lock held: makes registered reader `i`, left behind
    /// or excused by a writer but with nothing it has not read written
    /// over (its position `pos` checked under this holding), one writers
    /// wait for again, as [`Bus::publish_reader`] does; `false`, writing
    /// nothing, if the slot is not this process's own.
    pub(crate) fn reinstate_reader(&self, i: usize, pos: u64) -> bool {
        use crate::wire::ext::slot;
        if self.slot_u32(i, slot::OWNER).load(Ordering::Acquire) != my_holder_tag().max(1) {
            return false;
        }
        self.publish_reader(i, pos);
        true
    }

    /// Publishes a registered reader's new position after a batch read
    /// without the lock ([`Bus::in_good_standing`] held for it), and its
    /// liveness. Unlike [`Bus::publish_reader`] it never clears `STALLED`:
    /// a writer that set it meanwhile has stopped waiting for this reader,
    /// and only a position checked under the lock may make it wait again.
    pub(crate) fn publish_position(&self, i: usize, pos: u64) {
        use crate::wire::ext::slot;
        self.slot_u64(i, slot::POSITION)
            .store(pos, Ordering::Release);
        self.slot_u64(i, slot::HEARTBEAT)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Whether registered reader `i` is still one that writers wait for
    /// (its own slot, `ACTIVE`, not `STALLED`), as seen *after* everything
    /// it read from the ring so far: if it is, no writer overwrote the
    /// bytes it read since its last position checked under the lock. (A
    /// writer marks a reader `STALLED`, or any reader before a repair,
    /// and fences, before it writes over unread bytes; the acquire fence
    /// here pairs with that one.)
    pub(crate) fn in_good_standing(&self, i: usize) -> bool {
        use crate::wire::ext::{slot, SlotFlags};
        std::sync::atomic::fence(Ordering::Acquire);
        self.slot_u32(i, slot::FLAGS).load(Ordering::Relaxed) == SlotFlags::ACTIVE
            && self.slot_u32(i, slot::OWNER).load(Ordering::Relaxed) == my_holder_tag().max(1)
    }

    /// The ring, for a registered reader to read a window of published
    /// frames without the lock ([`crate::ring::Reader::step_window`]);
    /// what it reads is checked with [`Bus::in_good_standing`] before use.
    pub(crate) fn window_data(&self) -> impl crate::ring::Region + '_ {
        self.map.data()
    }

    /// A writer's note, after publishing a frame, of where the next one
    /// goes (linear): the extended header's cursor hint. Nothing on a
    /// version-3 bus.
    pub(crate) fn publish_cursor(&self, cursor: u64) {
        if self.extended {
            self.map
                .header_u64(crate::wire::ext::field::CURSOR)
                .store(cursor, Ordering::Release);
        }
    }

    /// How long a writer waits for a registered reader that makes no
    /// progress before it leaves it behind ([`OpenOptions::reader_stall`]).
    pub(crate) fn reader_stall(&self) -> Duration {
        self.reader_stall
    }

    /// Whether someone holds the bus lock now (a peek, no claim).
    pub(crate) fn lock_is_held(&self) -> bool {
        self.map.lock_word().load(Ordering::Relaxed) != 0
    }

    /// The cursor hint, if it promises frames after linear position `pos`
    /// and no further than one ring on (a registered reader's window,
    /// without the lock); `None` otherwise, and always on a version-3 bus.
    pub(crate) fn cursor_after(&self, pos: u64) -> Option<u64> {
        if !self.extended {
            return None;
        }
        let c = self
            .map
            .header_u64(crate::wire::ext::field::CURSOR)
            .load(Ordering::Acquire);
        crate::ring::window_end(self.geometry, pos, c)
    }

    /// Whether a writer sleeps on the extended bus's space futex, waiting
    /// for a registered reader to move on (one load, no system call).
    pub(crate) fn space_sleepers(&self) -> bool {
        self.extended && {
            std::sync::atomic::fence(Ordering::SeqCst);
            self.map
                .header_u32(crate::wire::ext::field::SPACE_SLEEPERS)
                .load(Ordering::SeqCst)
                != 0
        }
    }

    /// Wakes the writers asleep on the space futex (after this reader
    /// published a position they may be waiting for).
    pub(crate) fn wake_space_sleepers(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self.extended {
            let seq = self.map.header_u32(crate::wire::ext::field::SPACE_SEQ);
            seq.fetch_add(1, Ordering::SeqCst);
            let _ = rustix::thread::futex::wake(
                seq,
                rustix::thread::futex::Flags::empty(),
                i32::MAX as u32,
            );
        }
    }

    /// A writer's sleep while registered readers hold the space it needs:
    /// on the space futex until a reader wakes it or `timeout` passes,
    /// unless `ready` (called after counting itself as a sleeper, so that a
    /// reader publishing after the check sees the count) says the space is
    /// there already. Without futexes: sleeps for `timeout`, at most 50 µs.
    pub(crate) fn space_sleep(&self, timeout: Duration, ready: impl FnOnce() -> bool) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self.extended {
            use crate::wire::ext::field;
            let sleepers = self.map.header_u32(field::SPACE_SLEEPERS);
            let seq = self.map.header_u32(field::SPACE_SEQ);
            sleepers.fetch_add(1, Ordering::SeqCst);
            let seen = seq.load(Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            if !ready() {
                let ts = rustix::time::Timespec {
                    tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
                    tv_nsec: i64::from(timeout.subsec_nanos()),
                };
                let _ = rustix::thread::futex::wait(
                    seq,
                    rustix::thread::futex::Flags::empty(),
                    seen,
                    Some(&ts),
                );
            }
            sleepers.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        if !ready() {
            std::thread::sleep(timeout.min(Duration::from_micros(50)));
        }
    }

    /// Before a repair writes over the ring: every registered reader is
    /// marked `STALLED` (and the mark fenced), so that one reading a window
    /// without the lock discards what it read and resynchronises.
    pub(crate) fn leave_all_readers_behind(&self) {
        use crate::wire::ext::{slot, SlotFlags, READER_SLOTS};
        if !self.extended {
            return;
        }
        for i in 0..READER_SLOTS {
            if self.slot_u32(i, slot::OWNER).load(Ordering::Acquire) != 0 {
                self.slot_u32(i, slot::FLAGS)
                    .fetch_or(SlotFlags::STALLED, Ordering::AcqRel);
            }
        }
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Marks a registered reader as one writers need not wait for, until it
    /// publishes a position again (a writer that waits for space does not
    /// read meanwhile: two peers each waiting for the other would
    /// otherwise both wait until the stall bound).
    pub(crate) fn excuse_reader(&self, i: usize) {
        use crate::wire::ext::{slot, SlotFlags};
        self.slot_u32(i, slot::FLAGS)
            .fetch_or(SlotFlags::STALLED, Ordering::AcqRel);
    }

    /// A registered reader's sign of life without a new position.
    pub(crate) fn reader_heartbeat(&self, i: usize) {
        use crate::wire::ext::slot;
        self.slot_u64(i, slot::HEARTBEAT)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Frees a registered reader's slot.
    pub(crate) fn unregister_reader(&self, i: usize) {
        use crate::wire::ext::slot;
        self.slot_u32(i, slot::FLAGS).store(0, Ordering::Release);
        self.reader_mask().fetch_and(!(1 << i), Ordering::AcqRel);
        self.slot_u32(i, slot::OWNER).store(0, Ordering::Release);
    }

    /// The linear position writers may write up to without overwriting an
    /// unread byte of a live registered reader: the least position of the
    /// active readers plus the ring size, less a frame header and a byte
    /// (so that the eviction walk, which evicts a frame whose header the
    /// write reaches, never evicts the reader's next frame). `None`: no
    /// reader to wait for (always on a version-3 bus).
    /// `except` is the caller's own slot, never waited for.
    pub(crate) fn write_limit(&self, except: Option<usize>) -> Option<u64> {
        use crate::wire::ext::{slot, SlotFlags};
        if !self.extended {
            return None;
        }
        let mut mask = self.reader_mask().load(Ordering::Acquire);
        let mut least: Option<u64> = None;
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if Some(i) == except
                || self.slot_u32(i, slot::OWNER).load(Ordering::Relaxed) == 0
                || !SlotFlags(self.slot_u32(i, slot::FLAGS).load(Ordering::Acquire)).is_active()
            {
                continue;
            }
            let pos = self.slot_u64(i, slot::POSITION).load(Ordering::Acquire);
            least = Some(least.map_or(pos, |l| l.min(pos)));
        }
        // The flags were read before this writer's frame bytes are written:
        // a reader it judged stalled that reads a window without the lock
        // sees the mark if it sees any of those bytes (`in_good_standing`).
        std::sync::atomic::fence(Ordering::Release);
        least.map(|l| {
            l.saturating_add(u64::from(self.geometry.size))
                .saturating_sub(crate::wire::FRAME_HEADER_LEN as u64 + 1)
        })
    }

    /// Called by a writer, without the lock, while it waits to write up to
    /// linear position `end`: judges each active reader holding it back.
    /// One whose position and heartbeat have not changed for the stall
    /// bound is marked stalled (writers stop waiting for it; it is overrun
    /// and counts what it lost, and waits for writers again once it moves);
    /// one whose process is gone is dropped after [`DEAD_READER_GRACE`].
    pub(crate) fn judge_readers(&self, end: u64, watch: &mut ReaderWatch) {
        use crate::wire::ext::{slot, SlotFlags};
        let now = std::time::Instant::now();
        let judge = watch
            .judged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(10));
        if judge {
            watch.judged = Some(now);
        }
        let size = u64::from(self.geometry.size);
        let margin = crate::wire::FRAME_HEADER_LEN as u64 + 1;
        let mut mask = self.reader_mask().load(Ordering::Acquire);
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let owner = self.slot_u32(i, slot::OWNER).load(Ordering::Acquire);
            let flags = self.slot_u32(i, slot::FLAGS).load(Ordering::Acquire);
            if owner == 0 || !SlotFlags(flags).is_active() {
                watch.seen[i] = None;
                continue;
            }
            let pos = self.slot_u64(i, slot::POSITION).load(Ordering::Acquire);
            let beat = self.slot_u64(i, slot::HEARTBEAT).load(Ordering::Relaxed);
            if pos.saturating_add(size) >= end.saturating_add(margin) {
                watch.seen[i] = None;
                continue;
            }
            let since = match watch.seen[i] {
                Some((p, b, t)) if p == pos && b == beat => t,
                _ => {
                    watch.seen[i] = Some((pos, beat, now));
                    now
                }
            };
            let waited = now.duration_since(since);
            let dead = judge
                && waited >= DEAD_READER_GRACE
                && judge_holder(owner, self.id) == Holder::Dead;
            if dead {
                // Free the slot, unless its owner changed meanwhile.
                if self
                    .slot_u32(i, slot::OWNER)
                    .compare_exchange(owner, u32::MAX, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    self.slot_u32(i, slot::FLAGS).store(0, Ordering::Release);
                    self.reader_mask().fetch_and(!(1 << i), Ordering::AcqRel);
                    self.slot_u32(i, slot::OWNER).store(0, Ordering::Release);
                }
                watch.seen[i] = None;
            } else if waited >= self.reader_stall {
                let _ = self.slot_u32(i, slot::FLAGS).compare_exchange(
                    flags,
                    flags | SlotFlags::STALLED,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                // Before any write over its unread bytes: pairs with the
                // acquire fence of `in_good_standing` in a reader that is
                // reading a window without the lock.
                std::sync::atomic::fence(Ordering::SeqCst);
                watch.seen[i] = None;
            }
        }
    }
}

/// The lock word as the spin loop sees it (a trait so that a test can
/// count what the loop does to it).
pub(crate) trait LockWord {
    /// Loads the word (relaxed).
    fn peek(&self) -> u32;
    /// Compare-and-swap 0 to 1, acquire (and release, so that the claim of
    /// the spare word before it is never seen after it); may fail
    /// spuriously.
    fn try_swap(&self) -> bool;
}

impl LockWord for std::sync::atomic::AtomicU32 {
    fn peek(&self) -> u32 {
        self.load(Ordering::Relaxed)
    }
    fn try_swap(&self) -> bool {
        self.compare_exchange_weak(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// One try of the lock by the process tagged `me`: claim the spare word
/// (0 to `me`), swap the lock word (0 to 1), mark the claim [`HELD`].
///
/// The claim comes first so that no instant of a holding of ours goes
/// unrecorded: a holder killed between the swap and the tag would leave
/// the lock word set and the spare word 0, which looks like a NetBSD holder
/// and is taken over only after the stuck-lock timeout (2 s), where a
/// recorded dead holder is taken over after [`DEAD_HOLDER_GRACE`]. If the
/// swap fails (a NetBSD peer, which never looks at the spare word, took the
/// lock word first), the claim is withdrawn. A claim that a waiter cleared
/// as stale while its maker was stopped is written again on a win.
///
/// Test-and-test-and-set: the atomic operations, which take the cache line
/// exclusive, only when plain loads saw both words 0. A waiter that swapped
/// on every try would pull the header's cache line away from the holder,
/// who is writing `first`, `last` and `gen` in it, on each of its thousand
/// tries.
pub(crate) fn try_lock(word: &impl LockWord, spare: &AtomicU32, me: u32) -> bool {
    if word.peek() != 0
        || spare.load(Ordering::Relaxed) != 0
        || spare
            .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return false;
    }
    if word.try_swap() {
        spare.store(me | HELD, Ordering::Relaxed);
        return true;
    }
    let _ = spare.compare_exchange(me, 0, Ordering::Relaxed, Ordering::Relaxed);
    false
}

/// Gives a new bus file its 1 MiB, with its blocks allocated up front where
/// the file system can, so that a full disk is an error now rather than a
/// SIGBUS later. On failure, a file this call's caller `created` is cut
/// back to 0 bytes; any other is left as it is (another peer may have
/// sized and initialised it meanwhile).
fn allocate(path: &Path, file: &File, created: bool) -> Result<(), Error> {
    allocate_len(path, file, created, BUS_SIZE as u64)
}

/// [`allocate`] for a file of `len` bytes.
fn allocate_len(path: &Path, file: &File, created: bool, len: u64) -> Result<(), Error> {
    allocate_with(path, file, created, len, |f| {
        rustix::fs::fallocate(f, rustix::fs::FallocateFlags::empty(), 0, len)
    })
}

fn allocate_with(
    path: &Path,
    file: &File,
    created: bool,
    len: u64,
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
                if len == BUS_SIZE as u64 {
                    "cannot allocate 1 MiB for the bus"
                } else {
                    "cannot allocate the bus's size"
                },
                std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
            ));
        }
        // Not supported here (tmpfs on old kernels, some FUSE): size it plainly.
        Err(_) => {}
    }
    file.set_len(len)
        .map_err(|e| Error::io(path, "cannot size bus file", e))
}

/// The bus lock, held. Dropping it releases the lock (swap to 0, release
/// ordering).
pub struct BusGuard<'a> {
    bus: &'a Bus,
}

impl BusGuard<'_> {
    /// The shape of the ring ([`Bus::geometry`]).
    pub fn geometry(&self) -> Geometry {
        self.bus.geometry
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
        self.bus.leave_all_readers_behind();
        let fresh = crate::ring::reset(self.bus.geometry, data, ctl);
        self.set_control(&fresh);
        if let Ok(c) = crate::ring::cursor(self.bus.geometry, data, &fresh) {
            self.bus.publish_cursor(c);
        }
        self.bus.repairs.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for BusGuard<'_> {
    /// Lets the lock go in the opposite order to taking it: unmarks the
    /// tag, frees the lock word, clears the tag, so that a holder killed at
    /// any point of its release leaves a tag naming it.
    fn drop(&mut self) {
        let (word, spare) = (self.bus.map.lock_word(), self.bus.map.spare_word());
        let me = my_holder_tag();
        spare.store(me, Ordering::Relaxed);
        word.store(0, Ordering::Release);
        // Release: never seen before the lock word's 0.
        let _ = spare.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
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
    // A version-3 bus is 1 MiB; an extended one up to 1 GiB. One byte more
    // than the size expected shows a file too long for its format.
    let cap = if meta.len() > BUS_SIZE as u64 && meta.len() <= crate::wire::ext::EXT_MAX_FILE_SIZE {
        meta.len()
    } else {
        BUS_SIZE as u64
    };
    let mut image = Vec::with_capacity(cap as usize);
    file.by_ref()
        .take(cap + 1)
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
        let spare = AtomicU32::new(0);
        let me = claim_tag(std::process::id());
        for _ in 0..LOCK_COOLDOWN {
            assert!(!try_lock(&held, &spare, me));
        }
        assert_eq!(
            held.swaps.get(),
            0,
            "a held lock's cache line must not be swapped at by waiters"
        );
        assert_eq!(spare.load(Ordering::Relaxed), 0, "a waiter left a claim");
        let free = Counted {
            value: 0,
            swaps: Cell::new(0),
        };
        assert!(try_lock(&free, &spare, me));
        assert_eq!(free.swaps.get(), 1);
        assert_eq!(spare.load(Ordering::Relaxed), me | HELD);
    }

    #[test]
    fn a_lock_try_claims_the_spare_word_first_and_withdraws_a_lost_claim() {
        let me = claim_tag(std::process::id());
        // Someone else's claim or holding: no swap of the lock word.
        let free = Counted {
            value: 0,
            swaps: Cell::new(0),
        };
        let claimed = AtomicU32::new(claim_tag(1));
        assert!(!try_lock(&free, &claimed, me));
        assert_eq!(free.swaps.get(), 0);
        assert_eq!(claimed.load(Ordering::Relaxed), claim_tag(1));
        // A lock word that records what the spare word held when it was
        // swapped, and that a NetBSD peer (which never looks at the spare
        // word) may have taken first.
        struct Watched<'a> {
            spare: &'a AtomicU32,
            free: bool,
            seen: Cell<Option<u32>>,
        }
        impl LockWord for Watched<'_> {
            fn peek(&self) -> u32 {
                0
            }
            fn try_swap(&self) -> bool {
                self.seen.set(Some(self.spare.load(Ordering::Relaxed)));
                self.free
            }
        }
        // Won: the claim was in place before the swap, so that a holder
        // killed right after it is on record; marked held after it.
        let spare = AtomicU32::new(0);
        let word = Watched {
            spare: &spare,
            free: true,
            seen: Cell::new(None),
        };
        assert!(try_lock(&word, &spare, me));
        assert_eq!(word.seen.get(), Some(me), "swapped before claiming");
        assert_eq!(spare.load(Ordering::Relaxed), me | HELD);
        // Lost to a NetBSD peer: the claim is withdrawn.
        let spare = AtomicU32::new(0);
        let word = Watched {
            spare: &spare,
            free: false,
            seen: Cell::new(None),
        };
        assert!(!try_lock(&word, &spare, me));
        assert_eq!(word.seen.get(), Some(me));
        assert_eq!(spare.load(Ordering::Relaxed), 0, "the lost claim stayed");
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
        assert!(allocate_with(&path, &file, false, BUS_SIZE as u64, peer_made_it).is_err());
        let image = std::fs::read(&path).unwrap();
        assert_eq!(image.len(), BUS_SIZE, "a bus we did not create was cut");
        assert_eq!(image[..4], MAGIC.to_ne_bytes());
        // A file this open created is cut back (and then removed by open).
        assert!(allocate_with(&path, &file, true, BUS_SIZE as u64, |_| Err(
            rustix::io::Errno::NOSPC
        ))
        .is_err());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
