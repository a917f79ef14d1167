//! `shmif demo`: two TCP/IP hosts on a fresh bus, end to end, in seconds.

use crate::cli::output;
use crate::cli::signal::StopSignal;
use anyhow::{anyhow, bail, Context, Result};
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
/// saves the bus as a pcap with `shmif dump -p`, and shows the last frames.
/// Every step is a separate `shmif` process, as you would run it. Exits
/// non-zero if any step fails; the hosts are stopped and the temporary
/// directory removed in every case, unless --keep.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif demo                               # everything in a temporary directory, removed after\n  \
    shmif demo --keep                        # keep the directory: bus and pcap\n  \
    shmif demo --bus /tmp/bus --pcap demo.pcap\n  \
    tcpdump -n -e -r demo.pcap | less        # then read the capture")]
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
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// How much host B sends over TCP to host A's sink, and through host
    /// A's echo, in MiB.
    #[arg(long, default_value_t = 20.0, value_name = "N")]
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
            stop,
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
                Ok((c, l)) if c == id => return Ok(Some(l)),
                Ok(other) => self.pending.push(other),
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
    pcap: PathBuf,
    /// The temporary directory (removed on drop unless kept).
    temp: Option<tempfile::TempDir>,
    /// Whether the demo created the bus file (then it removes it).
    created_bus: bool,
}

/// Runs `shmif demo`.
pub fn run(args: Args) -> Result<ExitCode> {
    let t0 = Instant::now();
    if !(args.megabytes.is_finite() && args.megabytes > 0.0) {
        bail!("--megabytes {}: must be a positive number", args.megabytes);
    }
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
                pcap,
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
                pcap: args
                    .pcap
                    .clone()
                    .unwrap_or_else(|| temp.path().join("demo.pcap")),
                temp: Some(temp),
                created_bus: true,
            }
        }
    };

    let result = {
        let mut children = Children::new(stop.clone());
        steps(&args, &exe, &place, &mut children)
        // `children` is dropped here: every host is stopped, whatever happened.
    };

    // Clean up, or say what was kept.
    let elapsed = t0.elapsed().as_secs_f64();
    let Place {
        bus,
        pcap,
        temp,
        created_bus,
    } = place;
    let pcap_in_temp = temp.as_ref().is_some_and(|t| pcap.starts_with(t.path()));
    if args.keep {
        if let Some(t) = temp {
            let dir = t.keep();
            println!("kept {}", dir.display());
        } else {
            println!("kept {}", bus.display());
        }
    } else {
        if created_bus && args.bus.is_some() {
            let _ = std::fs::remove_file(&bus);
        }
        drop(temp);
        if result.is_ok() {
            if pcap_in_temp {
                println!(
                    "removed the temporary directory, pcap included (--keep or --pcap FILE keeps it)"
                );
            } else if created_bus {
                println!("removed the bus");
            }
        }
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
    let (status, out) = children.finish(b, timeout)?;
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

    // 5. Stop host A: it detaches cleanly and exits 0.
    let status = children.terminate(a, Duration::from_secs(5))?;
    if !status.success() {
        bail!("host A exited with {status} on SIGTERM");
    }
    println!("host B exited 0 after its actions; host A stopped (SIGTERM), detached and exited 0");

    // 6. The bus as a pcap, and its last frames.
    let pcap = place.pcap.to_string_lossy().into_owned();
    let (status, out) = run_step(
        children,
        "dump -p",
        exe,
        &strings(&["dump", "-p", &pcap, &bus]),
    )?;
    if !status.success() {
        bail!(
            "shmif dump -p {pcap} failed ({status}): {}",
            out.join(" | ")
        );
    }
    let size = std::fs::metadata(&place.pcap)
        .with_context(|| format!("pcap {pcap} was not written"))?
        .len();
    let (status, out) = run_step(children, "dump", exe, &strings(&["dump", &bus]))?;
    if !status.success() {
        bail!("shmif dump failed ({status}): {}", out.join(" | "));
    }
    let frames: Vec<&String> = out.iter().filter(|l| l.starts_with("packet ")).collect();
    println!(
        "pcap: {pcap} ({size} bytes, {} frames still on the bus); read it with tcpdump -n -e -r {pcap}",
        frames.len()
    );
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
