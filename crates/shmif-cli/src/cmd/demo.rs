//! `shmif demo`: two TCP/IP hosts on a fresh bus, end to end, in seconds.

use super::net;
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
/// The demo creates a bus in a new temporary directory (or at --bus),
/// starts two `shmif host` processes on it (A: 10.0.0.1 and fd00::1, B:
/// 10.0.0.2 and fd00::2, both with a TCP sink on port 9000 and TCP echo on
/// port 7), and from a third interface (10.0.0.3, fd00::3) pings A over
/// IPv4 and B over IPv6, sends 20 MiB over TCP to A's sink, which checks
/// every byte, and 1 MiB through B's echo over IPv6. It then stops the
/// hosts, saves the bus as a pcap with `shmif dump -p`, and shows the last
/// frames. Every step is a separate `shmif` process, as you would run it.
/// Exits non-zero if any step fails; the hosts are stopped and the
/// temporary directory removed in every case, unless --keep.
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
    /// How much to send over TCP to host A's sink, in MiB.
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
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .context("cannot install SIGINT/SIGTERM handlers")?;
    }

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

    // 1. Two hosts.
    let hosts = [
        ("host A", "10.0.0.1/24", "fd00::1/64"),
        ("host B", "10.0.0.2/24", "fd00::2/64"),
    ];
    let mut ids = Vec::new();
    for (name, ip, ip6) in hosts {
        let a = strings(&[
            "host",
            &bus,
            "--ip",
            ip,
            "--ip6",
            ip6,
            "--tcp-sink",
            "9000",
            "--tcp-echo",
            "7",
        ]);
        let id = children.spawn(name, exe, &a)?;
        let up = children.expect_line(id, "ready line", Duration::from_secs(10), |l| {
            l.starts_with("host ") && l.contains(" up on ")
        })?;
        println!("  {name}: {up}");
        ids.push(id);
    }
    let (a, b) = (ids[0], ids[1]);
    let me = ["--ip", "10.0.0.3/24", "--ip6", "fd00::3/64"];

    // 2. Ping A over IPv4 and B over IPv6.
    for (dest, who) in [("10.0.0.1", "host A"), ("fd00::2", "host B")] {
        let mut a = strings(&["ping", &bus]);
        a.extend(strings(&me));
        a.extend(strings(&[dest, "-c", "5", "-i", "0.01", "-W", "2"]));
        let (status, out) = run_step(children, "ping", exe, &a)?;
        let rtt = out
            .iter()
            .find(|l| l.starts_with("rtt "))
            .cloned()
            .unwrap_or_default();
        let loss = out
            .iter()
            .find(|l| l.contains("packets transmitted"))
            .cloned()
            .unwrap_or_default();
        if !status.success() {
            bail!("ping {dest} ({who}) failed ({status}): {}", out.join(" | "));
        }
        println!("ping {dest} ({who}) from the demo's interface:");
        for l in out.iter().filter(|l| l.contains(" bytes from ")) {
            println!("  {l}");
        }
        println!("  {loss}");
        println!("  {rtt}");
    }

    // 3. TCP: MiB to A's sink, every byte checked there.
    let mb = format!("{}", args.megabytes);
    let mut t = strings(&["tcp-send", &bus]);
    t.extend(strings(&me));
    t.extend(strings(&["10.0.0.1:9000", "--megabytes", &mb]));
    let (status, out) = run_step(children, "tcp-send", exe, &t)?;
    if !status.success() {
        bail!("tcp-send to host A failed ({status}): {}", out.join(" | "));
    }
    let sent = out
        .iter()
        .find(|l| l.starts_with("tcp-send "))
        .ok_or_else(|| anyhow!("tcp-send printed no result"))?;
    let verdict = children.expect_line(a, "tcp-sink report", Duration::from_secs(10), |l| {
        l.starts_with("tcp-sink 9000:")
    })?;
    let total = (args.megabytes * net::MIB).round() as u64;
    println!("TCP, {mb} MiB to host A's sink:");
    println!("  {sent}");
    println!("  host A: {verdict}");
    if !verdict.contains(&format!(": {total} bytes ")) || !verdict.contains("pattern ok") {
        bail!("host A's sink did not get exactly the {total} bytes of the pattern: {verdict}");
    }

    // 4. TCP over IPv6 through B's echo.
    let mut e = strings(&["tcp-send", &bus]);
    e.extend(strings(&me));
    e.extend(strings(&[
        "[fd00::2]:7",
        "--megabytes",
        "1",
        "--expect-echo",
    ]));
    let (status, out) = run_step(children, "tcp-send (echo)", exe, &e)?;
    if !status.success() {
        bail!(
            "tcp-send through host B's echo failed ({status}): {}",
            out.join(" | ")
        );
    }
    println!("TCP over IPv6, 1 MiB through host B's echo:");
    for l in &out {
        println!("  {l}");
    }

    // 5. Stop the hosts: they detach cleanly and exit 0.
    for id in [a, b] {
        let status = children.terminate(id, Duration::from_secs(5))?;
        if !status.success() {
            bail!("{} exited with {status} on SIGTERM", children.name(id));
        }
    }
    println!("stopped both hosts (SIGTERM; both detached and exited 0)");

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
