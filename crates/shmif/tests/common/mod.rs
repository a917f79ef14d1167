//! Plumbing shared by the tests that run several processes: the children
//! are the test binary itself, run again with `SHMIF_ROLE` set and entering
//! an ignored test; they report over stdout with lines containing `@@ `.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// FNV-1a, 64 bits: the payload checksum.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A child process with its pipes; killed and reaped when dropped.
pub struct Kid {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub lines: Lines<BufReader<ChildStdout>>,
}

impl Kid {
    /// Runs this test binary's ignored test `entry` with `SHMIF_ROLE=role`
    /// and `SHMIF_ARGS` (fields separated by U+001F).
    pub fn spawn(entry: &str, role: &str, args: &[String]) -> Kid {
        let mut child = this_test_binary()
            .args([
                "--exact",
                entry,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SHMIF_ROLE", role)
            .env("SHMIF_ARGS", args.join("\u{1f}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Kid {
            child,
            stdin,
            lines,
        }
    }

    /// The child's next protocol line (libtest prints its own text too,
    /// sometimes on the same line), or `None` if it exited.
    pub fn next(&mut self) -> Option<String> {
        self.lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.find("@@ ").map(|i| l[i + 3..].to_string()))
    }

    /// Reads protocol lines until one starts with `want`.
    pub fn expect(&mut self, want: &str) -> String {
        loop {
            match self.next() {
                Some(l) if l.starts_with(want) => return l,
                Some(_) => continue,
                None => panic!("child exited before saying {want:?}"),
            }
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command that runs this test binary again. Where the tests run under
/// an emulator (another architecture's build run by `qemu-aarch64`, say,
/// as cargo's target runner), `SHMIF_TEST_RUNNER` names it, with its
/// arguments separated by spaces, and the children run under it too: the
/// kernel here could not execute the binary itself.
pub fn this_test_binary() -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let runner = std::env::var("SHMIF_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(exe);
            c
        }
        None => Command::new(exe),
    }
}

/// In a child: its role and arguments, or `None` in a normal test run.
pub fn role() -> Option<(String, Vec<String>)> {
    let role = std::env::var("SHMIF_ROLE").ok()?;
    let args = std::env::var("SHMIF_ARGS")
        .unwrap_or_default()
        .split('\u{1f}')
        .map(String::from)
        .collect();
    Some((role, args))
}

/// In a child: prints a protocol line and flushes.
pub fn say(line: &str) {
    use std::io::Write;
    println!("@@ {line}");
    std::io::stdout().flush().unwrap();
}

/// A value `key=N` from a protocol line.
pub fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}
