//! What the CLI's integration tests share: running `shmif` (or any command)
//! to its end within a time limit, long-running children whose output lines
//! arrive on channels and that are stopped when dropped (so that a failed
//! assertion leaves nothing running), waiting for a condition, the bus
//! file, and the fixtures.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `shmif` binary under test.
pub const SHMIF: &str = env!("CARGO_BIN_EXE_shmif");

/// A command that runs the `shmif` binary under test: as it is, or under
/// the emulator that `SHMIF_TEST_RUNNER` names (its words separated by
/// spaces), where the tests were built for another architecture
/// (`tests/aarch64.sh` runs some of them that way under `qemu-aarch64`).
pub fn shmif_command() -> Command {
    let runner = std::env::var("SHMIF_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(SHMIF);
            c
        }
        None => Command::new(SHMIF),
    }
}

/// The size of a bus file.
pub const BUS_SIZE: usize = 1024 * 1024;

/// How long a command run by [`run`] or [`shmif`] may take before it is
/// killed and the test fails, so that a hang cannot stall the test run.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// `--dst` and `--ethertype` of a broadcast frame of the EtherType for
/// local experiments, 0x88b5: what most tests send.
pub const BROADCAST: [&str; 4] = ["--dst", "ff:ff:ff:ff:ff:ff", "--ethertype", "0x88b5"];

// Running a command to its end.

/// Starts `cmd` with standard input from /dev/null and standard output and
/// error piped.
pub fn spawn_piped(cmd: &mut Command) -> Child {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {shown}: {e}"))
}

/// Reads `r` to its end on a thread of its own.
fn read_to_end_behind<R: Read + Send + 'static>(r: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        v
    })
}

/// Waits for a started child to exit, reading its piped standard output and
/// error as it runs (so that a full pipe cannot stall it), and kills it if
/// it runs longer than `limit`. Returns its output, and whether it had to
/// be killed.
pub fn collect(mut child: Child, limit: Duration) -> (Output, bool) {
    let out = read_to_end_behind(child.stdout.take());
    let err = read_to_end_behind(child.stderr.take());
    let deadline = Instant::now() + limit;
    let mut killed = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            killed = true;
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let output = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    (output, killed)
}

/// Like [`collect`], but the test fails (naming `what`, with the output so
/// far) if the child has to be killed.
pub fn finish(child: Child, what: &str, limit: Duration) -> Output {
    let (o, killed) = collect(child, limit);
    assert!(
        !killed,
        "{what} did not finish within {limit:?}: {}",
        show(&o)
    );
    o
}

/// Runs `cmd` to its end (standard input from /dev/null); killed after
/// `limit`, failing the test.
pub fn run_for(cmd: &mut Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    finish(spawn_piped(cmd), &shown, limit)
}

/// Runs `cmd` to its end, within [`RUN_LIMIT`].
pub fn run(cmd: &mut Command) -> Output {
    run_for(cmd, RUN_LIMIT)
}

/// Runs a command that must succeed; returns its standard output.
pub fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let o = run(cmd);
    assert!(o.status.success(), "{shown}: {}", show(&o));
    text(&o.stdout)
}

/// Runs `shmif ARGS` to its end, within [`RUN_LIMIT`].
pub fn shmif<S: AsRef<OsStr>>(args: &[S]) -> Output {
    run(shmif_command().args(args))
}

/// Runs `shmif create BUS --size SIZE --max-frame MAX` (an extended bus).
pub fn shmif_create(bus: &Path, size: &str, max: &str) -> Output {
    shmif(&[
        "create",
        bus.to_str().unwrap(),
        "--size",
        size,
        "--max-frame",
        max,
    ])
}

/// [`shmif_create`], which must succeed.
pub fn create_extended(bus: &Path, size: &str, max: &str) {
    let o = shmif_create(bus, size, max);
    assert!(o.status.success(), "create: {}", show(&o));
}

/// Sends one frame with `shmif send` on `bus`: broadcast, EtherType
/// 0x88b5, `payload` in hex.
pub fn send_broadcast(bus: &str, payload: &str) -> Output {
    shmif(&[&["send", bus][..], &BROADCAST, &["--payload", payload]].concat())
}

/// Bytes as text (invalid UTF-8 replaced).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command's exit status and output, for a failure message.
pub fn show(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts that a command failed and said `needle` on standard error.
pub fn assert_fails_saying(o: &Output, needle: &str) {
    assert!(!o.status.success(), "succeeded: {}", show(o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(needle),
        "no {needle:?} on stderr: {}",
        show(o)
    );
}

/// The number after the first `label` in `text` (`lost: 42 bytes` with
/// label `lost: ` gives 42).
pub fn number_after(text: &str, label: &str) -> Option<u64> {
    text.split(label).nth(1)?.split(' ').next()?.parse().ok()
}

// Waiting.

/// Polls `done` every 10 ms until it gives a value; the test fails, saying
/// `what` did not happen, if none came within `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = done() {
            return t;
        }
        assert!(Instant::now() < deadline, "{what} (waited {limit:?})");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `child` (which attaches to `bus`, creating it) has attached:
/// the file exists at its full size, then a little longer for the interface
/// to come up. Fails if the child exits first or the bus does not appear
/// within 10 s.
pub fn wait_for_bus(bus: &Path, child: &mut Child) {
    wait_for(Duration::from_secs(10), "the bus was not created", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("exited before creating the bus: {status:?}");
        }
        std::fs::metadata(bus)
            .is_ok_and(|m| m.len() == BUS_SIZE as u64)
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
}

// Long-running children.

/// Reads `r` line by line on a thread of its own; the lines arrive on the
/// channel, which disconnects at the end of the stream.
pub fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// One output stream of a child, line by line as it comes, and every line
/// read from it so far.
pub struct Lines {
    /// The stream, for failure messages (`shmif host stdout`).
    what: String,
    rx: Receiver<String>,
    /// Every line read so far, in order.
    pub seen: Vec<String>,
}

impl Lines {
    pub fn new(what: String, r: impl Read + Send + 'static) -> Lines {
        Lines {
            what,
            rx: lines(r),
            seen: Vec::new(),
        }
    }

    /// The next line `want` accepts, within `limit`; the lines before it
    /// are passed over (all are kept in `seen`).
    pub fn next_matching(
        &mut self,
        want: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Result<String, RecvTimeoutError> {
        let deadline = Instant::now() + limit;
        loop {
            let l = self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
            self.seen.push(l.clone());
            if want(&l) {
                return Ok(l);
            }
        }
    }

    /// [`Lines::next_matching`], failing the test if no such line comes.
    pub fn expect(&mut self, want: impl Fn(&str) -> bool, limit: Duration) -> String {
        self.next_matching(want, limit)
            .unwrap_or_else(|e| panic!("{}: no expected line ({e}); {}", self.what, self.so_far()))
    }

    /// The next line containing `want`, failing the test if none comes
    /// within `limit`.
    pub fn expect_containing(&mut self, want: &str, limit: Duration) -> String {
        self.next_matching(|l| l.contains(want), limit)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: no line with {want:?} ({e}); {}",
                    self.what,
                    self.so_far()
                )
            })
    }

    /// Every line until the stream ends, waiting at most `limit`: the lines
    /// this call read (also added to `seen`), and whether the stream ended.
    pub fn until_end(&mut self, limit: Duration) -> (Vec<String>, bool) {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        let ended = loop {
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => got.push(l),
                Err(RecvTimeoutError::Disconnected) => break true,
                Err(RecvTimeoutError::Timeout) => break false,
            }
        };
        self.seen.extend(got.iter().cloned());
        (got, ended)
    }

    /// The lines seen so far, for a failure message.
    pub fn so_far(&self) -> String {
        format!("so far:\n{}", self.seen.join("\n"))
    }
}

/// What a [`Proc`] does with its child's standard output or error.
pub enum Stream {
    /// Read line by line ([`Lines`]).
    Lines,
    /// A pipe left to the test ([`Proc::stdout`]).
    Piped,
    /// The test's own.
    Inherit,
    /// /dev/null.
    Null,
}

impl Stream {
    fn stdio(&self) -> Stdio {
        match self {
            Stream::Lines | Stream::Piped => Stdio::piped(),
            Stream::Inherit => Stdio::inherit(),
            Stream::Null => Stdio::null(),
        }
    }
}

/// A long-running child (standard input from /dev/null). Dropping it
/// stops the child: SIGTERM (so that it detaches cleanly), then SIGKILL if
/// it is still there after 3 s; so a failed assertion leaves nothing
/// running.
pub struct Proc {
    /// What it is, for failure messages.
    pub what: String,
    pub child: Child,
    out: Option<Lines>,
    err: Option<Lines>,
}

impl Proc {
    /// Starts `cmd`, its standard output and error handled as `out` and
    /// `err` say.
    pub fn spawn(what: &str, cmd: &mut Command, out: Stream, err: Stream) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out.stdio())
            .stderr(err.stdio())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let out = matches!(out, Stream::Lines)
            .then(|| Lines::new(format!("{what} stdout"), child.stdout.take().unwrap()));
        let err = matches!(err, Stream::Lines)
            .then(|| Lines::new(format!("{what} stderr"), child.stderr.take().unwrap()));
        Proc {
            what: what.into(),
            child,
            out,
            err,
        }
    }

    /// Starts `shmif SUB BUS ARGS`.
    pub fn shmif(sub: &str, bus: &Path, args: &[&str], out: Stream, err: Stream) -> Proc {
        let mut cmd = shmif_command();
        cmd.arg(sub).arg(bus).args(args);
        Proc::spawn(&format!("shmif {sub}"), &mut cmd, out, err)
    }

    /// The standard output's lines (started with [`Stream::Lines`]).
    pub fn out(&mut self) -> &mut Lines {
        self.out.as_mut().expect("stdout is read as lines")
    }

    /// The standard error's lines (started with [`Stream::Lines`]).
    pub fn err(&mut self) -> &mut Lines {
        self.err.as_mut().expect("stderr is read as lines")
    }

    /// The standard output's pipe (started with [`Stream::Piped`]).
    pub fn stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout is piped")
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (at most `limit`) for the child to exit; the test fails if it
    /// does not.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let mut what = format!("{} did not exit", self.what);
        for l in [&self.out, &self.err].into_iter().flatten() {
            what.push_str(&format!("; {}: {}", l.what, l.so_far()));
        }
        wait_for(limit, &what, || self.child.try_wait().unwrap())
    }

    /// Sends `sig` and waits (at most `limit`) for the child to exit.
    pub fn stop(&mut self, sig: rustix::process::Signal, limit: Duration) -> ExitStatus {
        self.signal(sig);
        self.wait(limit)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already reaped: its pid may belong to someone else now
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// Fixtures.

/// The directory of the bus fixtures (`NAME.bus.gz` and what NetBSD's
/// `shmif_dumpbus` made of each).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The decompressed contents of a gzip file.
pub fn gunzip(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    out
}

/// A `shmif host`'s addresses and services: the server of the TCP tests
/// (10.0.0.1 and fd00::1, a sink on 9000, an echo on 7).
pub const SERVER: [&str; 8] = [
    "--ip",
    "10.0.0.1/24",
    "--ip6",
    "fd00::1/64",
    "--tcp-sink",
    "9000",
    "--tcp-echo",
    "7",
];

/// A TCP receiver: accepts one connection, hashes everything until EOF,
/// prints `<bytes> <sha256>`.
pub const TCP_SERVER: &str = r#"
import hashlib, socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest(), flush=True)
c.close()
"#;

/// A TCP sender: sends N bytes of a pattern, waits for the receiver to
/// close, prints `<bytes> <sha256> <seconds>`.
pub const TCP_CLIENT: &str = r#"
import hashlib, socket, sys, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = bytes((i * 7 + i // 251) % 256 for i in range(1 << 16))
h, n = hashlib.sha256(), 0
t = time.monotonic()
c = socket.create_connection((host, port), timeout=60)
while n < total:
    b = block[: min(len(block), total - n)]
    c.sendall(b)
    h.update(b)
    n += len(b)
c.shutdown(socket.SHUT_WR)
c.recv(1)
print(n, h.hexdigest(), time.monotonic() - t, flush=True)
"#;

/// Starts `shmif host BUS ARGS` and waits until it is up.
pub fn start_host(bus: &Path, args: &[&str]) -> Proc {
    let mut host = Proc::shmif("host", bus, args, Stream::Lines, Stream::Lines);
    host.out()
        .expect_containing(" up on ", Duration::from_secs(20));
    host
}

/// Moves `bytes` over TCP from one kernel to another with [`TCP_CLIENT`]
/// and [`TCP_SERVER`] (the server listening on `addr`, port 5001), and
/// checks that every byte arrived: the count and the SHA-256 of what was
/// sent and what was received. `server` and `client` make the commands
/// (e.g. `ip netns exec NS ...`). Returns the client's seconds.
pub fn verified_kernel_tcp(
    server: impl Fn(&[&str]) -> Command,
    client: impl Fn(&[&str]) -> Command,
    addr: &str,
    bytes: u64,
) -> f64 {
    let mut srv = Proc::spawn(
        "tcp server",
        &mut server(&["python3", "-c", TCP_SERVER, addr, "5001"]),
        Stream::Lines,
        Stream::Lines,
    );
    srv.out()
        .expect_containing("listening", Duration::from_secs(20));
    let total = bytes.to_string();
    let o = run_for(
        &mut client(&["python3", "-c", TCP_CLIENT, addr, "5001", &total]),
        Duration::from_secs(180),
    );
    assert!(o.status.success(), "client: {}", show(&o));
    let sent = String::from_utf8_lossy(&o.stdout).into_owned();
    let got = srv.out().expect_containing(" ", Duration::from_secs(30));
    let sent: Vec<&str> = sent.split_whitespace().collect();
    let got: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(sent[0], total);
    assert_eq!(got[0], total, "bytes received");
    assert_eq!(got[1], sent[1], "sha256 of what arrived = of what was sent");
    sent[2].parse().unwrap()
}
