//! Output helpers: lines that other programs read through pipes, rates,
//! plurals, refusing binary output to a terminal, and progress bars (on a
//! terminal only).

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

/// Bytes per mebibyte.
pub const MIB: f64 = 1024.0 * 1024.0;

/// `bytes` over `secs` in MiB/s (0 for no time).
pub fn mib_per_sec(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / MIB / secs
    } else {
        0.0
    }
}

/// Prints a line on stdout and flushes it at once (other programs, such as
/// `shmif demo`, read it through a pipe).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `n` and the noun, in the singular for one: `1 frame`, `2 frames`,
/// `0 frames`. `noun` is the singular; the plural adds an `s`.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Refuses to write binary `what` (a pcap) to standard output when it is a
/// terminal, as tcpdump does: it would only garble the screen.
pub fn refuse_binary_to_terminal(what: &str, flag: &str) -> anyhow::Result<()> {
    if std::io::stdout().is_terminal() {
        anyhow::bail!(
            "refusing to write {what} to a terminal: redirect standard output \
             (`{flag} - | tcpdump -n -r -`, `{flag} - > FILE`) or give {flag} a file"
        );
    }
    Ok(())
}

/// A progress bar on standard error, for long operations; nothing at all
/// when standard error is not a terminal.
pub struct Progress(indicatif::ProgressBar);

impl Progress {
    /// A bar counting `total` bytes, labelled `what`; `None` when standard
    /// error is not a terminal.
    pub fn bytes(total: u64, what: &str) -> Option<Progress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::new(total);
        let style = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(Progress(bar))
    }

    /// A spinner with a message, for steps of unknown length; `None` when
    /// standard error is not a terminal.
    pub fn spinner(what: &str) -> Option<Progress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(Progress(bar))
    }

    /// Sets how far it is.
    pub fn set(&self, done: u64) {
        self.0.set_position(done);
    }

    /// Removes the bar from the terminal.
    pub fn finish(self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "frame"), "1 frame");
        assert_eq!(plural(0, "frame"), "0 frames");
        assert_eq!(plural(2, "trial"), "2 trials");
    }
}
