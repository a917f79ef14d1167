//! Real QEMU guests for the VM tests: a Debian cloud kernel with its
//! virtio-net modules, and a busybox initramfs built here (a newc cpio
//! writer) whose init loads the modules, configures eth0 and runs the
//! test's commands, printing results on the serial console (the guest's
//! standard output here). TCG only (no KVM on these machines): a guest
//! boots in about 3 s.
//!
//! The kernel is unpacked once into `target/guest-kernel` by
//! `.ci/deps/qemu.sh` (which CI sources; these helpers run it themselves,
//! under a lock, when it is missing). Without QEMU, busybox or the kernel
//! every test that needs a guest says `*** SKIPPED` and passes.

#![allow(dead_code)]

use crate::common::{Lines, Proc, Stream, SHMIF};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How long a guest may take to boot and bring eth0 up (TCG on two busy
/// cores: usually 3 s).
pub const BOOT_LIMIT: Duration = Duration::from_secs(60);

/// The unpacked guest kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// The modules to load, in order.
    pub modules: Vec<PathBuf>,
    /// The static busybox.
    pub busybox: PathBuf,
}

/// Prints the loud skip line and returns `None`.
pub fn skip<T>(test: &str, why: &str) -> Option<T> {
    eprintln!("*** SKIPPED {test}: {why} ***");
    None
}

/// The `target` directory the binary under test lives in.
fn target_dir() -> PathBuf {
    Path::new(SHMIF)
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

/// The guest kernel and busybox, fetched if missing; `Err` says why not.
fn find_kernel() -> Result<Kernel, String> {
    if which("qemu-system-x86_64").is_none() {
        return Err("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into());
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("busybox is not installed (apt-get install busybox-static)")?;
    let dir = std::env::var_os("SHMIF_GUEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("guest-kernel"));
    if !dir.join("ready").exists() {
        // Several test binaries may get here at once: one fetches.
        let lock_path = dir.with_extension("lock");
        let lock =
            fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
        if !dir.join("ready").exists() {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/deps/qemu.sh");
            eprintln!("fetching the guest kernel into {} ...", dir.display());
            let out = Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .output()
                .map_err(|e| format!("bash {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "no guest kernel in {} and {} could not fetch one: {}",
                    dir.display(),
                    script.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    let order = fs::read_to_string(dir.join("modules.load"))
        .map_err(|e| format!("{}/modules.load: {e}", dir.display()))?;
    let modules = order
        .lines()
        .filter(|l| !l.is_empty())
        .map(|m| dir.join("modules").join(format!("{m}.ko")))
        .collect();
    Ok(Kernel {
        vmlinuz: dir.join("vmlinuz"),
        modules,
        busybox,
    })
}

/// The guest kernel, or `None` after printing why the test is skipped.
pub fn kernel(test: &str) -> Option<Kernel> {
    static KERNEL: OnceLock<Result<Kernel, String>> = OnceLock::new();
    match KERNEL.get_or_init(find_kernel) {
        Ok(k) => Some(k.clone()),
        Err(why) => skip(test, why),
    }
}

/// A newc ("070701") cpio archive, as the kernel unpacks an initramfs.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    /// A directory.
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, (0, 0), data);
    }

    /// A character device.
    pub fn chardev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    /// The archive with its trailer, gzipped.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&self.out).unwrap();
        gz.finish().unwrap()
    }
}

/// What a guest is: its network, address and commands.
pub struct Spec<'a> {
    /// For messages and file names.
    pub name: &'a str,
    /// The last octet of its MAC address (52:54:00:12:34:NN).
    pub mac: u8,
    /// Its IPv4 address with prefix, e.g. `10.213.5.11/24`.
    pub ip: &'a str,
    /// QEMU's `-netdev` value without the id: `vde,sock=DIR`,
    /// `stream,server=off,addr.type=unix,addr.path=P`...
    pub netdev: String,
    /// Shell commands run once eth0 is up; their output goes to the
    /// serial console. The guest prints `GUEST-UP` before and
    /// `GUEST-DONE` after them, then powers off.
    pub script: &'a str,
}

/// The init script: mount, load modules, configure eth0, run the test's
/// commands, power off.
fn init_script(kernel: &Kernel, spec: &Spec<'_>) -> String {
    let insmods: String = kernel
        .modules
        .iter()
        .map(|m| {
            let name = m.file_name().unwrap().to_string_lossy();
            format!("insmod /lib/modules/{name} || echo \"GUEST-ERROR insmod {name}\"\n")
        })
        .collect();
    format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev 2>/dev/null\n\
         mount -t tmpfs tmp /tmp\n\
         {insmods}\
         ip link set lo up\n\
         ip addr add {ip} dev eth0 && ip link set eth0 up || echo GUEST-ERROR eth0\n\
         echo \"GUEST-UP $(cat /proc/uptime)\"\n\
         {script}\n\
         echo GUEST-DONE\n\
         poweroff -f\n",
        ip = spec.ip,
        script = spec.script
    )
}

/// Writes the guest's initramfs into `dir` and returns its path.
pub fn initramfs(kernel: &Kernel, spec: &Spec<'_>, dir: &Path) -> PathBuf {
    let mut c = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        c.dir(d);
    }
    c.chardev("dev/console", 5, 1);
    c.chardev("dev/null", 1, 3);
    let bb = fs::read(&kernel.busybox).unwrap();
    c.file("bin/busybox", 0o755, &bb);
    for m in &kernel.modules {
        let name = m.file_name().unwrap().to_string_lossy();
        c.file(&format!("lib/modules/{name}"), 0o644, &fs::read(m).unwrap());
    }
    c.file("init", 0o755, init_script(kernel, spec).as_bytes());
    let path = dir.join(format!("{}.initrd.gz", spec.name));
    fs::write(&path, c.finish()).unwrap();
    path
}

/// A running guest; dropping it kills QEMU.
pub struct Guest {
    /// QEMU, its standard output (the serial console) read as lines.
    pub proc: Proc,
    /// The guest's name.
    pub name: String,
}

/// Guests booting at once, at most (TCG boots are CPU-bound).
static BOOTING: Mutex<()> = Mutex::new(());

impl Guest {
    /// Boots a guest (the initramfs is written into `dir`).
    pub fn start(kernel: &Kernel, spec: &Spec<'_>, dir: &Path) -> Guest {
        let initrd = initramfs(kernel, spec, dir);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-display", "none", "-monitor", "none"])
            .args(["-serial", "stdio", "-nodefaults", "-no-reboot", "-m", "256"])
            .arg("-kernel")
            .arg(&kernel.vmlinuz)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1 loglevel=3"])
            .arg("-netdev")
            .arg(format!("{},id=n0", spec.netdev))
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:{:02x},romfile=",
                spec.mac
            ));
        let proc = Proc::spawn(
            &format!("guest {}", spec.name),
            &mut cmd,
            Stream::Lines,
            Stream::Lines,
        );
        Guest {
            proc,
            name: spec.name.into(),
        }
    }

    /// The serial console.
    pub fn console(&mut self) -> &mut Lines {
        self.proc.out()
    }

    /// Waits for `GUEST-UP`; fails on a `GUEST-ERROR` before it.
    pub fn wait_up(&mut self) {
        let l = self.console().expect(
            |l| l.contains("GUEST-UP") || l.contains("GUEST-ERROR"),
            BOOT_LIMIT,
        );
        if !l.contains("GUEST-UP") {
            let so_far = self.console().so_far();
            panic!("guest {}: {l}; {so_far}", self.name);
        }
    }

    /// The next console line starting with `prefix`, within `limit`.
    pub fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        let name = self.name.clone();
        let l = self
            .console()
            .next_matching(|l| l.starts_with(prefix), limit);
        match l {
            Ok(l) => l,
            Err(e) => {
                let err = self.proc.err().so_far();
                panic!(
                    "guest {name}: no line {prefix:?} ({e}); console {}; qemu stderr {err}",
                    self.console().so_far()
                )
            }
        }
    }

    /// Waits for `GUEST-DONE` and for QEMU to exit.
    pub fn wait_done(&mut self, limit: Duration) {
        self.expect("GUEST-DONE", limit);
        self.proc.wait(Duration::from_secs(20));
    }
}

/// A locked guard against too many boots at once (kept while booting).
pub fn boot_slot() -> std::sync::MutexGuard<'static, ()> {
    BOOTING.lock().unwrap_or_else(|e| e.into_inner())
}
