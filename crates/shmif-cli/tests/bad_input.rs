//! The bad-input matrix: every subcommand that takes a bus, given a missing
//! file, a file that is not a bus, a directory, an unreadable file, a
//! read-only file system or a full one, and bad arguments, must print one
//! clear line naming the file or argument, exit non-zero, and modify no
//! file.
//!
//! The read-only and full file system cases mount a small tmpfs in a
//! private mount namespace and need root; without it they say SKIPPED.

mod common;

use common::{collect, fixtures_dir, gunzip, run, shmif, spawn_piped, text, BUS_SIZE, SHMIF};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `shmif send` of one broadcast frame to the bus `{}`.
const SEND: [&str; 8] = [
    "send",
    "{}",
    "--dst",
    "ff:ff:ff:ff:ff:ff",
    "--ethertype",
    "0x88b5",
    "--payload",
    "00",
];

/// Each subcommand that takes a bus path, with the other arguments it needs
/// to get as far as opening the bus. `{}` stands for the bus path.
fn commands() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("dump", vec!["dump", "{}"]),
        ("dump -p", vec!["dump", "-p", "{}.pcap", "{}"]),
        ("send", SEND.to_vec()),
        ("listen", vec!["listen", "{}", "-c", "1", "--timeout", "1"]),
        ("host", vec!["host", "{}", "--ip", "10.99.0.1/24"]),
        (
            "ping",
            vec![
                "ping",
                "{}",
                "--ip",
                "10.99.0.2/24",
                "10.99.0.1",
                "-c",
                "1",
                "-W",
                "1",
            ],
        ),
        (
            "tcp-send",
            vec![
                "tcp-send",
                "{}",
                "--ip",
                "10.99.0.2/24",
                "10.99.0.1:9",
                "--megabytes",
                "1",
                "-W",
                "1",
            ],
        ),
        ("capture", vec!["capture", "{}", "-c", "1"]),
        ("demo", vec!["demo", "--bus", "{}"]),
    ]
}

fn args_for(template: &[&str], bus: &Path) -> Vec<String> {
    template
        .iter()
        .map(|a| a.replace("{}", &bus.display().to_string()))
        .collect()
}

/// Runs `shmif` (optionally through a wrapper such as setpriv), killing it
/// if it runs for more than 20 s (a command that wrongly accepted the input
/// and went on serving).
fn run_shmif(wrapper: &[&str], args: &[String]) -> Output {
    let (prog, pre): (&str, Vec<&str>) = match wrapper.split_first() {
        Some((p, rest)) => (p, rest.iter().copied().chain([SHMIF]).collect()),
        None => (SHMIF, vec![]),
    };
    let child = spawn_piped(Command::new(prog).args(&pre).args(args));
    collect(child, Duration::from_secs(20)).0
}

/// Asserts a clean refusal: non-zero exit, one line on stderr that names
/// `name` and says `why`, nothing on stdout that looks like success.
fn assert_refused(what: &str, case: &str, out: &Output, name: &str, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what} / {case}: exit 0; stderr: {err}"
    );
    assert!(
        err.contains(name),
        "{what} / {case}: error does not name {name}: {err}"
    );
    assert!(
        err.to_lowercase().contains(&why.to_lowercase()),
        "{what} / {case}: error does not say {why:?}: {err}"
    );
    let lines = err.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines <= 2, "{what} / {case}: not one clear line: {err}");
}

/// Every file under `dir` with its bytes, to check nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let bytes = if p.is_file() {
            std::fs::read(&p).ok()
        } else {
            None
        };
        out.push((p, bytes));
    }
    out.sort();
    out
}

#[test]
fn every_command_refuses_bad_bus_files_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = d.join("notes.txt");
    std::fs::write(&text, "this is not a bus\n").unwrap();
    let foreign = d.join("foreign.bin");
    let mut junk = vec![0x5au8; BUS_SIZE];
    junk[0..4].copy_from_slice(&0x1234_5678u32.to_ne_bytes());
    std::fs::write(&foreign, &junk).unwrap();
    let short = d.join("short.bus");
    let mut s = vec![0u8; 4096];
    s[0..4].copy_from_slice(&0xca11_d054u32.to_ne_bytes());
    std::fs::write(&short, &s).unwrap();
    let a_dir = d.join("a-directory");
    std::fs::create_dir(&a_dir).unwrap();
    let missing = d.join("no-such-dir").join("bus");

    let before = snapshot(d);
    for (what, template) in commands() {
        let cases: [(&str, &Path, &str); 5] = [
            ("text file", &text, "not a shmif bus"),
            ("foreign magic", &foreign, "not a shmif bus"),
            ("wrong size", &short, "4096"),
            ("directory", &a_dir, "directory"),
            ("missing directory", &missing, "no such"),
        ];
        for (case, path, why) in cases {
            // `dump -p FILE` with a directory: the pcap would go inside.
            let out = run_shmif(&[], &args_for(&template, path));
            let why = if case == "missing directory" && what != "dump" && what != "dump -p" {
                "does not exist"
            } else {
                why
            };
            assert_refused(what, case, &out, &path.display().to_string(), why);
        }
    }
    assert_eq!(
        snapshot(d),
        before,
        "a refused command modified or created a file"
    );
}

#[test]
fn dump_refuses_a_missing_or_empty_file_but_attaching_commands_create_a_bus() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("bus");
    let out = run_shmif(&[], &args_for(&["dump", "{}"], &missing));
    assert_refused(
        "dump",
        "missing",
        &out,
        &missing.display().to_string(),
        "no such",
    );
    assert!(!missing.exists());
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let out = run_shmif(&[], &args_for(&["dump", "{}"], &empty));
    assert_refused("dump", "empty", &out, &empty.display().to_string(), "empty");
    assert_eq!(std::fs::read(&empty).unwrap().len(), 0);
    // For attaching commands both are a new bus.
    let out = run_shmif(&[], &args_for(&SEND, &missing));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::metadata(&missing).unwrap().len(), BUS_SIZE as u64);
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn an_unreadable_bus_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let out = run_shmif(&[], &args_for(&SEND, &bus));
    assert!(out.status.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bus, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root ignores permission bits: run the commands as nobody instead.
    let wrapper: Vec<&str> = if is_root() {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        vec![]
    };
    let before = std::fs::read(&bus).unwrap();
    for (what, template) in commands() {
        if what == "dump -p" {
            continue; // nobody cannot write the pcap beside it either way
        }
        let out = run_shmif(&wrapper, &args_for(&template, &bus));
        assert_refused(
            what,
            "unreadable",
            &out,
            &bus.display().to_string(),
            "permission denied",
        );
    }
    assert_eq!(std::fs::read(&bus).unwrap(), before);
}

/// Runs `script` in a private mount namespace with a small tmpfs at `mnt`.
fn in_private_tmpfs(mnt: &Path, opts: &str, script: &str) -> Output {
    run(Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount --make-rprivate / && mount -t tmpfs -o {opts} shmif-test {} && {script}",
            mnt.display()
        )))
}

#[test]
fn read_only_and_full_file_systems() {
    if !is_root() || Command::new("unshare").arg("--help").output().is_err() {
        eprintln!("SKIPPED read_only_and_full_file_systems: needs root (mount namespaces)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let bus = mnt.join("bus");
    let q = |a: Vec<String>| {
        a.iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (what, template) in commands() {
        if what == "dump" || what == "dump -p" {
            continue; // dump only reads; a missing file is its own case
        }
        // Read-only: nothing can be created.
        let out = in_private_tmpfs(
            &mnt,
            "ro,size=4m",
            &format!("exec {SHMIF} {}", q(args_for(&template, &bus))),
        );
        assert_refused(
            what,
            "read-only fs",
            &out,
            &bus.display().to_string(),
            "read-only",
        );
        // Full: 512 KiB cannot hold a 1 MiB bus; nothing is left behind.
        let out = in_private_tmpfs(
            &mnt,
            "size=512k",
            &format!(
                "{SHMIF} {}; rc=$?; echo \"LEFT:$(ls -A {})\"; exit $rc",
                q(args_for(&template, &bus)),
                mnt.display()
            ),
        );
        assert_refused(what, "full fs", &out, &bus.display().to_string(), "1 MiB");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.lines().any(|l| l.trim() == "LEFT:"),
            "{what}: left a file behind on the full file system: {stdout}"
        );
    }
    // dump reads a bus on a read-only file system without complaint.
    let fixture = dir.path().join("ping-fresh.bus");
    std::fs::write(&fixture, gunzip(&fixtures_dir().join("ping-fresh.bus.gz"))).unwrap();
    let out = in_private_tmpfs(
        &mnt,
        "size=4m",
        &format!(
            "cp {f} {b} && mount -o remount,ro {m} && exec {SHMIF} dump -h {b}",
            f = fixture.display(),
            b = bus.display(),
            m = mnt.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("bus version 3"));
}

#[test]
fn bad_arguments_name_the_argument() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "send",
                &bus,
                "--dst",
                "nope",
                "--ethertype",
                "0x88b5",
                "--payload",
                "00",
            ],
            "--dst",
        ),
        (
            vec![
                "send",
                &bus,
                "--dst",
                "ff:ff:ff:ff:ff:ff",
                "--ethertype",
                "0x88b5",
                "--payload",
                "0",
            ],
            "--payload",
        ),
        (vec!["listen", &bus, "-c", "zero"], "--count"),
        (vec!["listen", &bus, "--mode", "999"], "--mode"),
        (
            vec!["listen", &bus, "--stuck-lock-timeout=-3"],
            "--stuck-lock-timeout",
        ),
        (vec!["host", &bus, "--ip", "10.0.0.300/24"], "--ip"),
        (
            vec!["ping", &bus, "--ip", "10.0.0.2/24", "not-an-address"],
            "DEST",
        ),
        (
            vec![
                "tcp-send",
                &bus,
                "--ip",
                "10.0.0.2/24",
                "10.0.0.1",
                "--megabytes",
                "1",
            ],
            "DEST:PORT",
        ),
        (vec!["capture", &bus, "-c", "many"], "--count"),
        (vec!["dump", "-p"], "--pcap"),
        (vec!["frobnicate"], "frobnicate"),
    ];
    for (args, name) in cases {
        let out = shmif(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(name),
            "{args:?}: error does not name {name}: {err}"
        );
    }
    assert!(
        !dir.path().join("bus").exists(),
        "bad arguments created the bus"
    );
}
