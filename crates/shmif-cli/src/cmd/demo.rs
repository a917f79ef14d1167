//! `shmif demo`: two TCP/IP hosts on a fresh bus, end to end, in seconds.

use crate::cli::error::{interrupted, lib_error};
use crate::cli::output::{self, plural};
use crate::cli::signal::StopSignal;
use crate::cli::{parse, pcap as pcapfmt};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Show the bus at work: two TCP/IP hosts, ping, TCP, and a pcap.
///
/// The demo creates a bus in a new temporary directory (or at --bus) and
/// starts two `shmif host` processes on it. Host A (10.0.0.1, fd00::1)
/// serves a TCP sink on port 9000 and TCP echo on port 7. Host B (10.0.0.2,
/// fd00::2) is started with actions (`shmif host --ping ... --tcp-send ...
/// --exit-when-done`): once up it pings A over IPv4 and IPv6, sends
/// --megabytes MiB over TCP to A's sink, which checks every byte, and the
/// same amount through A's echo over IPv6, checking every byte that comes
/// back; then it exits, 0 only if all of that succeeded. The demo prints
/// both hosts' reports (RTTs, throughput, verdicts) and a summary, stops A,
/// and shows the last frames on the bus. Every step is a separate `shmif`
/// process, as you would run it. From before host A starts to the end, the
/// demo captures every frame on the bus into a pcap (duplicate address
/// probes, ARP, neighbour discovery, the pings, both transfers), which it
/// keeps: the temporary directory stays with only the pcap in it (the bus
/// is removed) unless --no-pcap, when nothing stays. --keep keeps the bus
/// too. The hosts are stopped in every case. Ctrl-C stops the demo, which
/// prints what the hosts had reported so far. A spinner shows on standard
/// error while host B works, when it is a terminal.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif demo                               # a temporary directory; its pcap is kept\n  \
    shmif demo --no-pcap                     # nothing is kept\n  \
    shmif demo --keep                        # keep the directory: bus and pcap\n  \
    shmif demo --bus /tmp/bus --pcap demo.pcap\n  \
    tcpdump -n -e -r demo.pcap | less        # then read the capture\n\n\
    Exit status: 0 when every step succeeded; 1 when one failed; 2 on a usage error; 130 when \
    stopped by SIGINT or SIGTERM.")]
pub struct Args {
    /// Put the bus here instead of in a new temporary directory. A bus the
    /// demo created is removed afterwards unless --keep.
    #[arg(long, value_name = "PATH")]
    pub bus: Option<PathBuf>,
    /// Keep the bus, the temporary directory and the pcap.
    #[arg(long)]
    pub keep: bool,
    /// Write the pcap here (kept in any case). Default: demo.pcap in the
    /// temporary directory, or BUS.pcap beside --bus.
    #[arg(long, value_name = "FILE", conflicts_with = "no_pcap")]
    pub pcap: Option<PathBuf>,
    /// Capture nothing: no pcap is written, and the temporary directory is
    /// removed (unless --keep).
    #[arg(long)]
    pub no_pcap: bool,
    /// How much host B sends over TCP to host A's sink, and through host
    /// A's echo, in MiB (fractions are fine).
    #[arg(long, default_value_t = 20.0, value_name = "N", value_parser = parse::megabytes)]
    pub megabytes: f64,
    /// How many of the bus's last frames to show.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub frames: usize,
}

/// How long a step may take before the demo gives up on it.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A line from a child's standard output (`None`: the output ended).
type Line = (usize, Option<String>);

/// The demo's child processes. Dropping it stops every child still running
/// (SIGTERM, then SIGKILL after a second), on success and error paths
/// alike.
struct Children {
    list: Vec<(String, Child)>,
    lines_tx: mpsc::Sender<Line>,
    lines: Receiver<Line>,
    /// Lines received and not yet asked for.
    pending: Vec<Line>,
    /// Every line each child printed, as received.
    log: Vec<Vec<String>>,
    /// Which children's output has ended.
    ended: Vec<bool>,
    stop: Arc<AtomicBool>,
}

impl Children {
    fn new(stop: Arc<AtomicBool>) -> Self {
        let (lines_tx, lines) = mpsc::channel();
        Children {
            list: Vec::new(),
            lines_tx,
            lines,
            pending: Vec::new(),
            log: Vec::new(),
            ended: Vec::new(),
            stop,
        }
    }

    /// Notes a line (or the end of output) received from a child.
    fn note(&mut self, (id, line): &Line) {
        match line {
            Some(l) => self.log[*id].push(l.clone()),
            None => self.ended[*id] = true,
        }
    }

    /// After an interruption: stops every child still running (SIGTERM:
    /// each prints its report as it goes) and collects their last lines,
    /// for up to `limit`.
    fn wind_down(&mut self, limit: Duration) {
        for (_, child) in &mut self.list {
            if child.try_wait().ok().flatten().is_none() {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_child(child),
                    rustix::process::Signal::TERM,
                );
            }
        }
        let deadline = Instant::now() + limit;
        while self.ended.iter().any(|e| !e) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.note(&line),
                Err(_) => break,
            }
        }
    }

    /// Starts `exe args`, its stdout read line by line into the channel,
    /// its stderr passed through.
    fn spawn(&mut self, name: &str, exe: &Path, args: &[String]) -> Result<usize> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {} {}", exe.display(), args.join(" ")))?;
        let id = self.list.len();
        let out = child.stdout.take().expect("stdout is piped");
        let tx = self.lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((id, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((id, None));
        });
        self.list.push((name.to_string(), child));
        self.log.push(Vec::new());
        self.ended.push(false);
        Ok(id)
    }

    fn name(&self, id: usize) -> &str {
        &self.list[id].0
    }

    /// The next line (or end of output) of child `id`, waiting up to
    /// `deadline`; `Ok(None)` when the deadline passed.
    fn next_line(&mut self, id: usize, deadline: Instant) -> Result<Option<Option<String>>> {
        if let Some(i) = self.pending.iter().position(|(c, _)| *c == id) {
            return Ok(Some(self.pending.remove(i).1));
        }
        loop {
            self.check_stop()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) if line.0 == id => {
                    self.note(&line);
                    return Ok(Some(line.1));
                }
                Ok(other) => {
                    self.note(&other);
                    self.pending.push(other)
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(Some(None)),
            }
        }
    }

    /// Waits for a line from child `id` that `want` accepts (other lines of
    /// that child are passed over).
    fn expect_line(
        &mut self,
        id: usize,
        what: &str,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_line(id, deadline)? {
                Some(Some(l)) if want(&l) => return Ok(l),
                Some(Some(_)) => {}
                Some(None) => {
                    let status = self.list[id].1.wait().ok();
                    let status = status.map(|s| s.to_string()).unwrap_or_default();
                    bail!(
                        "{} ended ({status}) before printing its {what}",
                        self.name(id)
                    );
                }
                None => bail!(
                    "{}: no {what} within {:.0} s",
                    self.name(id),
                    timeout.as_secs_f64()
                ),
            }
        }
    }

    /// Reads child `id`'s output to its end and waits for it to exit;
    /// returns its status and its output lines.
    fn finish(&mut self, id: usize, timeout: Duration) -> Result<(ExitStatus, Vec<String>)> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            match self.next_line(id, deadline)? {
                Some(Some(l)) => out.push(l),
                Some(None) => break,
                None => bail!(
                    "{} did not finish within {:.0} s",
                    self.name(id),
                    timeout.as_secs_f64()
                ),
            }
        }
        let status = loop {
            self.check_stop()?;
            if let Some(s) = self.list[id]
                .1
                .try_wait()
                .with_context(|| format!("cannot wait for {}", self.name(id)))?
            {
                break s;
            }
            if Instant::now() >= deadline {
                bail!("{} closed its output but did not exit", self.name(id));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        Ok((status, out))
    }

    /// Sends SIGTERM to child `id` and waits for it to exit.
    fn terminate(&mut self, id: usize, timeout: Duration) -> Result<ExitStatus> {
        let (name, child) = &mut self.list[id];
        if child.try_wait().ok().flatten().is_none() {
            rustix::process::kill_process(
                rustix::process::Pid::from_child(child),
                rustix::process::Signal::TERM,
            )
            .with_context(|| format!("cannot signal {name}"))?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child
                .try_wait()
                .with_context(|| format!("cannot wait for {name}"))?
            {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name} did not stop within {:.0} s of SIGTERM",
                    timeout.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.list {
            if child.try_wait().ok().flatten().is_none() {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_child(child),
                    rustix::process::Signal::TERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        for (_, child) in &mut self.list {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }
}

/// Runs a `shmif` subcommand to its end and returns its status and output.
fn run_step(
    children: &mut Children,
    name: &str,
    exe: &Path,
    args: &[String],
) -> Result<(ExitStatus, Vec<String>)> {
    let id = children.spawn(name, exe, args)?;
    children.finish(id, STEP_TIMEOUT)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Where the bus lives, and what to clean up.
struct Place {
    bus: PathBuf,
    /// The pcap, unless --no-pcap.
    pcap: Option<PathBuf>,
    /// The temporary directory (removed on drop unless kept).
    temp: Option<tempfile::TempDir>,
    /// Whether the demo created the bus file (then it removes it).
    created_bus: bool,
}

/// The capture of the whole demo: a promiscuous interface attached before
/// host A starts, read by a thread that writes every frame to the pcap.
struct Recorder {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Recorded>>,
}

/// What the recorder wrote.
struct Recorded {
    frames: u64,
    lost_bytes: u64,
}

impl Recorder {
    /// Attaches to `bus` (creating it) and starts capturing into `pcap`.
    fn start(bus: &Path, pcap: &Path) -> Result<Recorder> {
        // The bus first: a bad bus path is reported as such, and no pcap
        // is left beside it.
        let iface = shmif::Interface::attach(bus).map_err(lib_error)?;
        let file = std::fs::File::create(pcap)
            .with_context(|| format!("{}: cannot create the pcap", pcap.display()))?;
        iface.set_promiscuous(true);
        let snaplen = pcapfmt::snaplen(iface.is_extended(), iface.max_frame_len());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let what = pcap.display().to_string();
        let thread = std::thread::Builder::new()
            .name("demo-capture".into())
            .spawn(move || -> Result<Recorded> {
                let err = |e: std::io::Error| anyhow!("{what}: cannot write the pcap: {e}");
                let mut w = pcapfmt::writer(std::io::BufWriter::new(file), snaplen).map_err(err)?;
                let mut frames = 0u64;
                loop {
                    let stopping = flag.load(Ordering::SeqCst);
                    // Once asked to stop, what is left on the ring is taken
                    // without waiting.
                    let wait = if stopping {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(50)
                    };
                    match iface.recv_timeout(wait).map_err(lib_error)? {
                        Some(f) => {
                            pcapfmt::record(&mut w, f.sec, f.usec, &f.data).map_err(err)?;
                            frames += 1;
                        }
                        None if stopping => break,
                        None => {}
                    }
                }
                w.into_writer().flush().map_err(err)?;
                Ok(Recorded {
                    frames,
                    lost_bytes: iface.counters().overrun_bytes,
                })
            })
            .context("cannot start the capture thread")?;
        Ok(Recorder { stop, thread })
    }

    /// Stops capturing (after what is on the ring now) and closes the pcap.
    fn finish(self) -> Result<Recorded> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| anyhow!("the capture thread panicked"))?
    }
}

/// Runs `shmif demo`.
pub fn run(args: Args) -> Result<ExitCode> {
    let t0 = Instant::now();
    let exe = std::env::current_exe().context("cannot find the shmif executable to run")?;
    let signals = StopSignal::install()?;
    let stop = signals.flag();

    let place = match &args.bus {
        Some(bus) => {
            if bus.is_dir() {
                bail!("--bus {}: is a directory; give a file path", bus.display());
            }
            let pcap = args
                .pcap
                .clone()
                .unwrap_or_else(|| with_suffix(bus, ".pcap"));
            Place {
                bus: bus.clone(),
                pcap: (!args.no_pcap).then_some(pcap),
                temp: None,
                created_bus: !bus.exists(),
            }
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("shmif-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            Place {
                bus: temp.path().join("bus"),
                pcap: (!args.no_pcap).then(|| {
                    args.pcap
                        .clone()
                        .unwrap_or_else(|| temp.path().join("demo.pcap"))
                }),
                temp: Some(temp),
                created_bus: true,
            }
        }
    };

    let mut children = Children::new(stop.clone());
    let result = steps(&args, &exe, &place, &mut children);
    let was_interrupted = stop.load(Ordering::SeqCst);
    if was_interrupted {
        // The results so far: what each host had reported, and its last
        // words on being stopped.
        children.wind_down(Duration::from_secs(3));
        println!("interrupted; what the hosts reported until then:");
        for (id, lines) in children.log.iter().enumerate() {
            for l in lines {
                println!("  {}: {l}", children.name(id));
            }
        }
    }
    // Every host is stopped, whatever happened.
    drop(children);

    // Clean up, or say what was kept.
    let elapsed = t0.elapsed().as_secs_f64();
    let Place {
        bus,
        pcap,
        temp,
        created_bus,
    } = place;
    if args.keep {
        if let Some(t) = temp {
            let dir = t.keep();
            println!("kept {}", dir.display());
        } else {
            println!("kept {}", bus.display());
        }
    } else {
        if created_bus {
            let _ = std::fs::remove_file(&bus);
        }
        let pcap_in_temp = match (&temp, &pcap) {
            (Some(t), Some(p)) => p.starts_with(t.path()) && p.exists(),
            _ => false,
        };
        match temp {
            Some(t) if pcap_in_temp => {
                let dir = t.keep();
                println!(
                    "removed the bus; kept {} with the pcap in it",
                    dir.display()
                );
            }
            Some(t) => {
                drop(t);
                println!("removed the temporary directory");
            }
            None if created_bus => println!("removed the bus"),
            None => {}
        }
    }
    if was_interrupted {
        eprintln!("shmif demo: interrupted after {elapsed:.2} s");
        return Ok(interrupted());
    }
    result?;
    println!("demo done in {elapsed:.2} s");
    Ok(ExitCode::SUCCESS)
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The demo proper; children are stopped by the caller's guard.
fn steps(args: &Args, exe: &Path, place: &Place, children: &mut Children) -> Result<()> {
    let bus = place.bus.to_string_lossy().into_owned();
    println!("shmif demo: bus {}", place.bus.display());
    let recorder = match &place.pcap {
        Some(p) => Some(Recorder::start(&place.bus, p)?),
        None => None,
    };
    let mb = format!("{}", args.megabytes);
    let total = (args.megabytes * output::MIB).round() as u64;

    // 1. Host A, the server.
    let a_args = strings(&[
        "host",
        &bus,
        "--ip",
        "10.0.0.1/24",
        "--ip6",
        "fd00::1/64",
        "--tcp-sink",
        "9000",
        "--tcp-echo",
        "7",
    ]);
    let a = children.spawn("host A", exe, &a_args)?;
    let up = children.expect_line(a, "ready line", Duration::from_secs(10), is_up)?;
    println!("  host A: {up}");

    // 2. Host B, the client: its actions run as soon as it is up, and it
    // exits when they are done (0 only if all succeeded).
    let b_args = strings(&[
        "host",
        &bus,
        "--ip",
        "10.0.0.2/24",
        "--ip6",
        "fd00::2/64",
        "--ping",
        "10.0.0.1",
        "--ping",
        "fd00::1",
        "--ping-count",
        "5",
        "--ping-interval",
        "0.01",
        "--tcp-send",
        "10.0.0.1:9000",
        "--tcp-send-echo",
        "[fd00::1]:7",
        "--megabytes",
        &mb,
        "--exit-when-done",
    ]);
    let b = children.spawn("host B", exe, &b_args)?;
    let up = children.expect_line(b, "ready line", Duration::from_secs(10), is_up)?;
    println!("  host B: {up}");
    println!(
        "host B pings host A (IPv4, IPv6), sends {mb} MiB to A's sink (IPv4) and {mb} MiB through A's echo (IPv6):"
    );
    // Generous for big transfers: a slow machine still does 20 MiB/s.
    let timeout = STEP_TIMEOUT + Duration::from_secs_f64(2.0 * args.megabytes / 20.0);
    let spinner =
        output::Progress::spinner(&format!("host B: pinging A, then sending {mb} MiB twice"));
    let finished = children.finish(b, timeout);
    if let Some(s) = spinner {
        s.finish();
    }
    let (status, out) = finished?;
    for l in &out {
        println!("  host B: {l}");
    }
    if !status.success() {
        bail!("host B's actions failed ({status})");
    }

    // 3. A's side of the transfers: every byte checked in its sink, every
    // byte echoed.
    let sink = children.expect_line(a, "tcp-sink report", Duration::from_secs(10), |l| {
        l.starts_with("tcp-sink 9000:")
    })?;
    let echo = children.expect_line(a, "tcp-echo report", Duration::from_secs(10), |l| {
        l.starts_with("tcp-echo 7:")
    })?;
    println!("  host A: {sink}");
    println!("  host A: {echo}");

    // 4. Check both sides' reports, and sum them up.
    let sent = find(&out, "tcp-send 10.0.0.2 -> 10.0.0.1:9000:")?;
    let sent6 = find(&out, "tcp-send fd00::2 -> [fd00::1]:7:")?;
    let back = find(&out, "echo: ")?;
    let whole = format!(": {total} bytes in ");
    if !sent.contains(&whole) {
        bail!("host B did not send all {total} bytes to A's sink: {sent}");
    }
    if !(sink.contains("from 10.0.0.2:") && sink.contains(&whole) && sink.contains("pattern ok")) {
        bail!("host A's sink did not get exactly the {total} bytes of the pattern from B: {sink}");
    }
    if !(sent6.contains(&whole)
        && back.starts_with(&format!("echo: {total} bytes back, pattern ok")))
    {
        bail!(
            "the echo through host A did not bring back the {total} bytes intact: {sent6} | {back}"
        );
    }
    if !(echo.contains("from fd00::2") && echo.contains(&format!("echoed {total} bytes"))) {
        bail!("host A's echo did not echo the {total} bytes from B: {echo}");
    }
    println!("summary:");
    for dest in ["10.0.0.1", "fd00::1"] {
        println!("  ping B -> A {dest}: {}", ping_summary(&out, dest)?);
    }
    println!(
        "  TCP B -> A sink {}, verified by A: {}",
        mb_label(&mb),
        rate(&sent)
    );
    println!(
        "  TCP B -> A echo -> B over IPv6 {}, verified by B: {}",
        mb_label(&mb),
        rate(&sent6)
    );

    // 5. Stop host A: it detaches cleanly and exits 130, as a command
    // stopped by a signal does.
    let status = children.terminate(a, Duration::from_secs(5))?;
    if status.code() != Some(i32::from(crate::cli::error::EXIT_INTERRUPTED)) {
        bail!("host A exited with {status} on SIGTERM");
    }
    println!(
        "host B exited 0 after its actions; host A stopped (SIGTERM), detached and exited {}",
        crate::cli::error::EXIT_INTERRUPTED
    );

    // 6. The capture of the whole run, and the last frames on the bus.
    if let (Some(r), Some(p)) = (recorder, &place.pcap) {
        let rec = r.finish()?;
        let size = std::fs::metadata(p)
            .with_context(|| format!("pcap {} was not written", p.display()))?
            .len();
        let lost = match rec.lost_bytes {
            0 => String::new(),
            n => format!("; {n} bytes lost to overruns"),
        };
        println!(
            "pcap: {} ({size} bytes, {} from the start: address probes, ARP, ping, TCP{lost}); \
             read it with tcpdump -n -e -r {}",
            p.display(),
            plural(rec.frames, "frame"),
            p.display()
        );
    }
    let (status, out) = run_step(children, "dump", exe, &strings(&["dump", &bus]))?;
    if !status.success() {
        bail!("shmif dump failed ({status}): {}", out.join(" | "));
    }
    let frames: Vec<&String> = out.iter().filter(|l| l.starts_with("packet ")).collect();
    println!("last {} frames on the bus:", args.frames.min(frames.len()));
    for l in &frames[frames.len().saturating_sub(args.frames)..] {
        println!("  {l}");
    }
    Ok(())
}

/// Whether `l` is a host's ready line.
fn is_up(l: &str) -> bool {
    l.starts_with("host ") && l.contains(" up on ")
}

/// The first line of `out` that starts with `prefix`.
fn find(out: &[String], prefix: &str) -> Result<String> {
    out.iter()
        .find(|l| l.starts_with(prefix))
        .cloned()
        .ok_or_else(|| anyhow!("host B printed no `{prefix}` line"))
}

/// The loss and RTT lines of the ping of `dest` in `out`, on one line.
fn ping_summary(out: &[String], dest: &str) -> Result<String> {
    let header = format!("--- {dest} ping statistics ---");
    let at = out
        .iter()
        .position(|l| *l == header)
        .ok_or_else(|| anyhow!("host B printed no statistics for its ping of {dest}"))?;
    let loss = out
        .get(at + 1)
        .and_then(|l| l.split(", time ").next())
        .unwrap_or_default();
    let rtt = out
        .get(at + 2)
        .filter(|l| l.starts_with("rtt "))
        .map(|l| l.as_str())
        .unwrap_or("no RTT");
    Ok(format!("{loss}; {rtt}"))
}

/// `20 MiB`.
fn mb_label(mb: &str) -> String {
    format!("{mb} MiB")
}

/// The `N MiB/s` at the end of a `tcp-send` line.
fn rate(line: &str) -> &str {
    line.rsplit(", ").next().unwrap_or(line)
}
