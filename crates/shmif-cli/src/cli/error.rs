//! Error reporting: library errors as one line that names the file and
//! says what is wrong, the one wording of "this file is not a bus" that
//! `dump` and the attaching commands share, usage errors found after
//! parsing, and the exit status of an interrupted command.

use anyhow::anyhow;
use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

/// The exit status of every command stopped by SIGINT or SIGTERM before it
/// finished its job, as shells report a death by SIGINT (128 + 2). Every
/// subcommand that catches those signals exits with it, and says so in the
/// "Exit status" line of its `--help`.
pub const EXIT_INTERRUPTED: u8 = 130;

/// [`EXIT_INTERRUPTED`] as an exit code.
pub fn interrupted() -> ExitCode {
    ExitCode::from(EXIT_INTERRUPTED)
}

/// Exits with a usage error (status 2, as clap's own): for a problem with
/// the arguments that only shows once they are all parsed, such as two
/// services on one port.
pub fn usage_error(msg: impl std::fmt::Display) -> ! {
    clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("{msg}\n")).exit()
}

/// Turns a library error into one line: its message, then each cause the
/// message does not already contain. A file that is not a bus is named for
/// what it is, in the words [`not_a_bus`] uses.
pub fn lib_error(e: shmif::Error) -> anyhow::Error {
    if let shmif::Error::NotABus { path, reason } = &e {
        return not_a_bus(path, reason);
    }
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    anyhow!(msg)
}

/// `PATH: not a shmif bus: WHY`, the one message for a file that is not a
/// bus, from `dump` and from every command that attaches. `reason` is what
/// the reader found; when the file is of a kind people often give by
/// mistake (empty, text, gzip, pcap, pcapng) it is named instead.
pub fn not_a_bus(path: &Path, reason: &str) -> anyhow::Error {
    // Reasons about what the file holds (not about what it is: a link, a
    // directory, a bus of the other byte order) give way to its kind.
    let about_content = ["magic", "text file", "long", "only ", "empty"]
        .iter()
        .any(|w| reason.contains(w));
    let why = match describe_file(path) {
        Some(kind) if about_content => kind,
        _ => reason.to_string(),
    };
    anyhow!("{}: not a shmif bus: {why}", path.display())
}

/// What a file is, when it is of a kind that is obviously not a bus:
/// `the file is empty`, `it is a 6-byte text file`, `it is a 1234-byte gzip
/// file`, `... pcap file`, `... pcapng file`. `None` for anything else
/// (and for a file of exactly a bus's size, whose header says more).
pub fn describe_file(path: &Path) -> Option<String> {
    let size = std::fs::metadata(path).ok()?.len();
    if size == 0 {
        return Some("the file is empty".into());
    }
    let mut head = Vec::with_capacity(64);
    std::fs::File::open(path)
        .ok()?
        .take(64)
        .read_to_end(&mut head)
        .ok()?;
    let kind = file_kind(&head)?;
    Some(format!("it is a {size}-byte {kind} file"))
}

/// The kind of file these first bytes start, if it is one that is
/// obviously not a bus: `text`, `gzip`, `pcap`, `pcapng`.
pub fn file_kind(head: &[u8]) -> Option<&'static str> {
    const PCAP: [[u8; 4]; 4] = [
        [0xd4, 0xc3, 0xb2, 0xa1],
        [0xa1, 0xb2, 0xc3, 0xd4],
        [0x4d, 0x3c, 0xb2, 0xa1],
        [0xa1, 0xb2, 0x3c, 0x4d],
    ];
    if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if head.len() >= 4 && PCAP.iter().any(|m| head[..4] == *m) {
        Some("pcap")
    } else if head.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        Some("pcapng")
    } else if !head.is_empty()
        && head
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        Some("text")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_files() {
        assert_eq!(file_kind(&[0x1f, 0x8b, 8, 0]), Some("gzip"));
        assert_eq!(file_kind(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]), Some("pcap"));
        assert_eq!(file_kind(&[0x0a, 0x0d, 0x0d, 0x0a, 0]), Some("pcapng"));
        assert_eq!(file_kind(b"hello\n"), Some("text"));
        assert_eq!(file_kind(&[0, 1, 2, 3]), None);
    }
}
