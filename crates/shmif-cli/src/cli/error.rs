//! Error reporting: library errors as one line that names the file and
//! says what is wrong.

use anyhow::anyhow;

/// Turns a library error into one line: its message, then each cause the
/// message does not already contain.
pub fn lib_error(e: shmif::Error) -> anyhow::Error {
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
