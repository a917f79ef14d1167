//! Output helpers: lines that other programs read through pipes, rates.

use std::io::Write as _;

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
