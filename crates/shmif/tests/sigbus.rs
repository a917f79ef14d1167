//! The SIGBUS handler that protects bus mappings from truncation, and what
//! it must not break: other SIGBUS dispositions, errno, and the limit of
//! mappings it can protect. Each case runs in a child process.
#![cfg(target_os = "linux")]

mod common;
use common::{field, role, say, Kid};
use shmif::{Bus, Error, Interface, OpenOptions};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

#[test]
#[ignore = "entry point for the SIGBUS tests' child processes"]
fn sigbus_child() {
    let Some((role, args)) = role() else {
        return;
    };
    let bus = Path::new(&args[0]);
    match role.as_str() {
        "kill-default" => kill_default(bus),
        "kill-previous" => kill_previous(bus),
        "errno" => errno(bus),
        "table" => table(bus),
        _ => unreachable!(),
    }
}

/// A SIGBUS sent (not a fault), to this thread so that it is handled
/// before the call returns: raise(3) is tgkill(2), si_code SI_TKILL.
fn send_sigbus_to_myself() {
    // SAFETY: raise(3) with a valid signal number.
    unsafe {
        libc::raise(libc::SIGBUS);
    }
}

fn truncate(bus: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(bus)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// SIGBUS at its default disposition (as in a C program; Rust's runtime
/// puts its own stack-overflow handler there, reset here), sent after a
/// bus was mapped: must kill the process as it would without the handler.
fn kill_default(bus: &Path) {
    // SAFETY: sets the default disposition.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
    let _i = Interface::attach(bus).unwrap();
    say("ready");
    send_sigbus_to_myself();
    std::thread::sleep(std::time::Duration::from_millis(500));
    say("survived");
}

static CAUGHT: AtomicU32 = AtomicU32::new(0);

extern "C" fn count(_: libc::c_int) {
    CAUGHT.fetch_add(1, Ordering::SeqCst);
}

/// A handler of the program's own, installed before any bus: it gets every
/// SIGBUS sent with kill(2), while a truncated bus still gives an error.
fn kill_previous(bus: &Path) {
    // SAFETY: installs a handler that only touches an atomic.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = count as *const () as usize;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut());
    }
    let i = Interface::attach(bus).unwrap();
    send_sigbus_to_myself();
    send_sigbus_to_myself();
    truncate(bus);
    let gone = matches!(i.try_recv(), Err(Error::BusGone { .. }));
    send_sigbus_to_myself();
    say(&format!(
        "result caught={} gone={}",
        CAUGHT.load(Ordering::SeqCst),
        u8::from(gone)
    ));
}

/// errno as the interrupted code left it, after a truncation fault.
fn errno(bus: &Path) {
    let i = Interface::attach(bus).unwrap();
    truncate(bus);
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() = 4242 };
    let r = i.try_recv();
    // SAFETY: as above.
    let after = unsafe { *libc::__errno_location() };
    assert!(matches!(r, Err(Error::BusGone { .. })), "{r:?}");
    say(&format!("result errno={after}"));
}

/// Maps the bus until the slot table is full: the next mapping must be
/// refused with a clear error, never silently unprotected.
fn table(bus: &Path) {
    // SAFETY: raises the soft descriptor limit to the hard one.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    let mut maps = Vec::new();
    loop {
        match Bus::open(bus, &OpenOptions::new()) {
            Ok(b) => maps.push(b),
            Err(e) => {
                let msg = format!("{e:#}");
                let chain = std::error::Error::source(&e).map(|s| s.to_string());
                say(&format!(
                    "result mapped={} clear={}",
                    maps.len(),
                    u8::from(chain.is_some_and(|c| c.contains("bus mappings")))
                ));
                eprintln!("the refusal: {msg}: {e}");
                break;
            }
        }
        assert!(maps.len() <= 4096, "never refused");
    }
    // A slot freed is a slot to use again.
    maps.pop();
    maps.push(Bus::open(bus, &OpenOptions::new()).unwrap());
}

fn run(role: &str) -> (std::process::ExitStatus, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    drop(Interface::attach(&bus).unwrap());
    let mut kid = Kid::spawn("sigbus_child", role, &[bus.display().to_string()]);
    let line = kid.next();
    let line = if line.as_deref() == Some("ready") {
        kid.next()
    } else {
        line
    };
    (kid.child.wait().unwrap(), line)
}

#[test]
fn a_sigbus_sent_with_kill_goes_to_the_default_disposition() {
    let (status, line) = run("kill-default");
    assert_eq!(line, None, "the process went on after kill -BUS");
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status}");
}

#[test]
fn a_sigbus_sent_with_kill_goes_to_the_previous_handler() {
    let (status, line) = run("kill-previous");
    let line = line.expect("no result");
    assert!(status.success(), "{status}");
    assert_eq!(field(&line, "caught"), 3, "{line}");
    assert_eq!(
        field(&line, "gone"),
        1,
        "a truncation is still caught: {line}"
    );
}

#[test]
fn the_sigbus_handler_keeps_errno() {
    let (status, line) = run("errno");
    assert!(status.success(), "{status}");
    assert_eq!(field(&line.expect("no result"), "errno"), 4242);
}

#[test]
fn a_full_mapping_table_is_an_error_not_silence() {
    let (status, line) = run("table");
    let line = line.expect("no result");
    assert!(status.success(), "{status}");
    assert_eq!(field(&line, "mapped"), 1024, "{line}");
    assert_eq!(field(&line, "clear"), 1, "{line}");
}
