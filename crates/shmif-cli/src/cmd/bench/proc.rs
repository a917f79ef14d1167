//! Child processes of a benchmark: this executable run again as a hidden
//! `bench-worker`, talked to over pipes, and always killed and reaped when
//! their handle goes (on every path, errors and panics included).

use anyhow::{anyhow, bail, Context as _, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A running worker process.
pub struct Worker {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Worker {
    /// Starts `shmif bench-worker ARGS…` and waits for its `ready` line.
    pub fn spawn(name: &str, args: &[OsString]) -> Result<Worker> {
        let exe = std::env::current_exe().context("cannot find the shmif executable")?;
        let mut child = Command::new(exe)
            .arg("bench-worker")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start the {name} process"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Worker {
            name: name.to_string(),
            child,
            stdin,
            lines,
        };
        w.expect("ready", Duration::from_secs(10))?;
        Ok(w)
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}: stdin closed", self.name))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{} process is gone", self.name))
    }

    /// The fields of the next line starting with `word` (other lines are
    /// skipped), waiting at most `timeout`.
    pub fn expect(&mut self, word: &str, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let fields: Vec<String> = line.split_whitespace().map(String::from).collect();
                    if fields.first().map(String::as_str) == Some(word) {
                        return Ok(fields[1..].to_vec());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{}: no '{word}' within {timeout:?}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    bail!("{} process ended ({status:?}) before '{word}'", self.name)
                }
            }
        }
    }

    /// Closes stdin and waits up to `timeout` for the process to exit on its
    /// own (it is killed when dropped otherwise).
    pub fn finish(mut self, timeout: Duration) {
        self.stdin.take();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
