//! `shmif qemu`: QEMU guests on a bus through QEMU's own socket back-ends,
//! no VDE needed.
//!
//! `--listen` serves guests started with `-netdev stream,server=off` (or
//! the legacy `-netdev socket,connect=`), each connection a port of its
//! own; `--connect` dials a QEMU started with `server=on` and redials when
//! it drops the connection; `--dgram`/`--remote` pairs with a `-netdev
//! dgram`. Every one of them is a port of a [`crate::bridge::Engine`]
//! forwarding as a hub with the bus (see [`crate::bridge::stream_port`]
//! for the wire format); this module parses the addresses, prepares the
//! sockets and cleans up.

use crate::bridge::bus_port::BusPort;
use crate::bridge::stream_port::{
    Dgram, DgramPort, Endpoint, Listener, StreamListener, StreamPort,
};
use crate::bridge::{End, Engine, Forwarding};
use crate::cli::error::lib_error;
use crate::cli::output::say;
use crate::cli::signal::StopSignal;
use anyhow::{anyhow, Result};
use std::fs;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Bridge QEMU guests to a bus through QEMU's socket network back-ends
/// (-netdev stream, socket and dgram): VMs join the bus without root.
///
/// Each guest is a station on BUS: it sees every frame of every other
/// guest and of every other peer on the bus (rump kernels, `shmif host`,
/// `shmif vde` clients...), never its own.
///
/// --listen unix:PATH or tcp:HOST:PORT accepts any number of guests
/// started with `-netdev stream,server=off,addr.type=unix,addr.path=PATH`
/// (or addr.type=inet, or the legacy `-netdev socket,connect=HOST:PORT`);
/// each connection is a port, and a guest that disconnects (killed,
/// rebooted) frees it; a new QEMU may connect at any time. --connect dials
/// a QEMU started with `server=on` and dials again, with back-off, when
/// QEMU drops the connection or is restarted. --dgram LOCAL --remote
/// REMOTE pairs with `-netdev dgram,local.type=unix,local.path=REMOTE,
/// remote.type=unix,remote.path=LOCAL` (note the swap: QEMU's remote is
/// this side's local), or udp:HOST:PORT for local.type=inet; datagrams from
/// other senders are ignored. All may be given together and repeated.
///
/// Stream frames are a 4-byte big-endian length and the frame. A peer
/// sending a length under 14 or over 69,632, or stopping in the middle of
/// a frame for 5 s, is disconnected with one log line; so is one that
/// reads nothing for 10 s while frames for it are dropped (its output is
/// buffered up to 1 MiB). Frames over the bus's frame limit (1514 bytes
/// on a NetBSD v3 bus) do not fit the bus: they are dropped there,
/// counted, with one warning per port. Per-port counters are printed
/// when a port goes and on exit.
///
/// UNIX sockets it creates, like a bus file, are for your own user only
/// unless --mode says otherwise; a leftover socket nobody answers on is
/// replaced; anything else at that path is refused. On SIGINT or SIGTERM
/// they are removed. Prints one line to standard output once it serves.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif qemu /tmp/bus --listen unix:/tmp/q.sock &        # guests connect here\n  \
    qemu-system-x86_64 ... -device virtio-net-pci,netdev=n0 \\\n      \
    -netdev stream,id=n0,server=off,addr.type=unix,addr.path=/tmp/q.sock\n\n  \
    shmif qemu /tmp/bus --listen tcp:127.0.0.1:5555 &      # legacy -netdev socket:\n  \
    qemu-system-x86_64 ... -netdev socket,id=n0,connect=127.0.0.1:5555 ...\n\n  \
    qemu-system-x86_64 ... -netdev stream,id=n0,server=on,addr.type=unix,\\\n      \
    addr.path=/tmp/s.sock ... &\n  \
    shmif qemu /tmp/bus --connect unix:/tmp/s.sock         # redials when QEMU restarts\n\n  \
    shmif qemu /tmp/bus --dgram unix:/tmp/br.sock --remote unix:/tmp/vm.sock &\n  \
    qemu-system-x86_64 ... -netdev dgram,id=n0,local.type=unix,\\\n      \
    local.path=/tmp/vm.sock,remote.type=unix,remote.path=/tmp/br.sock ...\n\n\
    Exit status: 130 when stopped by SIGINT or SIGTERM (it runs until then); 1 if an address cannot be used (the message names it: \
    in use, not a socket, cannot resolve) or the bus fails.")]
pub struct Args {
    /// The bus file (created if missing).
    #[arg(value_name = "BUS")]
    pub bus: PathBuf,

    /// Accept guests (-netdev stream,server=off / socket,connect=) on a
    /// UNIX socket path or a TCP address (repeatable).
    #[arg(long, value_name = "unix:PATH|tcp:HOST:PORT", value_parser = stream_endpoint)]
    pub listen: Vec<Endpoint>,

    /// Connect to a QEMU listening with -netdev stream,server=on, and
    /// reconnect whenever it drops the connection (repeatable).
    #[arg(long, value_name = "unix:PATH|tcp:HOST:PORT", value_parser = stream_endpoint)]
    pub connect: Vec<Endpoint>,

    /// This side's datagram socket for a -netdev dgram (QEMU's
    /// remote.path); pairs with --remote (repeatable, in pairs).
    #[arg(long, value_name = "unix:PATH|udp:HOST:PORT", value_parser = dgram_endpoint)]
    pub dgram: Vec<Endpoint>,

    /// Where frames for that -netdev dgram go (QEMU's local.path).
    #[arg(long, value_name = "unix:PATH|udp:HOST:PORT", value_parser = dgram_endpoint)]
    pub remote: Vec<Endpoint>,

    /// How the bus file is opened or created; --mode also sets the
    /// permissions of the UNIX sockets this command creates.
    #[command(flatten)]
    pub bus_opts: crate::cli::bus_opts::BusOpts,
}

fn endpoint(s: &str, inet: &str) -> Result<Endpoint, String> {
    if let Some(p) = s.strip_prefix("unix:") {
        if p.is_empty() {
            return Err(format!("'{s}': no path after unix:"));
        }
        return Ok(Endpoint::Unix(p.into()));
    }
    if let Some(a) = s.strip_prefix(&format!("{inet}:")) {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                return Ok(Endpoint::Inet(a.into()))
            }
            _ => {
                return Err(format!(
                    "'{s}': expected {inet}:HOST:PORT, e.g. {inet}:127.0.0.1:5555"
                ))
            }
        }
    }
    if s.contains('/') {
        return Ok(Endpoint::Unix(s.into()));
    }
    Err(format!(
        "'{s}': expected unix:PATH or {inet}:HOST:PORT (a bare path needs a '/')"
    ))
}

/// A `--listen`/`--connect` address.
fn stream_endpoint(s: &str) -> Result<Endpoint, String> {
    endpoint(s, "tcp")
}

/// A `--dgram`/`--remote` address.
fn dgram_endpoint(s: &str) -> Result<Endpoint, String> {
    endpoint(s, "udp")
}

/// Makes `path` free for a socket of ours: nothing there, or a socket
/// nobody answers on (removed). `dgram` says how to probe it.
fn claim_socket_path(path: &Path, dgram: bool, what: &str) -> Result<()> {
    let shown = path.display();
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(anyhow!("{what} {shown}: {e}")),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(anyhow!(
                "{what} {shown}: exists and is not a socket (refusing to replace it)"
            ))
        }
        Ok(_) => {}
    }
    let answered = if dgram {
        UnixDatagram::unbound()
            .and_then(|s| s.connect(path))
            .is_ok()
    } else {
        UnixStream::connect(path).is_ok()
    };
    if answered {
        return Err(anyhow!(
            "{what} {shown}: another program is using this socket (stop it or choose another \
             path)"
        ));
    }
    fs::remove_file(path)
        .map_err(|e| anyhow!("{what} {shown}: cannot remove the stale socket: {e}"))
}

/// Sets the mode of a socket file this command made.
fn chmod(path: &Path, mode: u32, what: &str) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| anyhow!("{what} {}: cannot set its mode: {e}", path.display()))
}

/// Runs `shmif qemu`.
pub fn run(args: Args) -> Result<ExitCode> {
    if args.listen.is_empty() && args.connect.is_empty() && args.dgram.is_empty() {
        return Err(anyhow!(
            "nothing to bridge: give --listen, --connect or --dgram with --remote (see shmif \
             qemu --help)"
        ));
    }
    if args.dgram.len() != args.remote.len() {
        return Err(anyhow!(
            "--dgram and --remote come in pairs: {} --dgram, {} --remote",
            args.dgram.len(),
            args.remote.len()
        ));
    }
    let stop = StopSignal::install()?;
    let mode = args.bus_opts.mode;
    let iface = args.bus_opts.attach(&args.bus, None).map_err(lib_error)?;
    let mut engine = Engine::new(Forwarding::Hub);
    engine.add_essential(Box::new(BusPort::new(iface, &args.bus)?));
    let mut made: Vec<PathBuf> = Vec::new();
    let mut shown: Vec<String> = Vec::new();
    let set_up = (|| -> Result<()> {
        for l in &args.listen {
            let what = "--listen";
            let listener = match l {
                Endpoint::Unix(p) => {
                    claim_socket_path(p, false, what)?;
                    let ul = UnixListener::bind(p)
                        .map_err(|e| anyhow!("{what} {}: cannot listen: {e}", p.display()))?;
                    made.push(p.clone());
                    chmod(p, mode, what)?;
                    Listener::Unix(ul, p.clone())
                }
                Endpoint::Inet(a) => Listener::Tcp(
                    TcpListener::bind(a)
                        .map_err(|e| anyhow!("{what} tcp:{a}: cannot listen: {e}"))?,
                ),
            };
            let port = StreamListener::new(listener)?;
            shown.push(format!("listening on {}", port_shown(l)));
            engine.add(Box::new(port));
        }
        for c in &args.connect {
            shown.push(format!("connecting to {}", port_shown(c)));
            engine.add(Box::new(StreamPort::dialler(c.clone())));
        }
        for (local, remote) in args.dgram.iter().zip(&args.remote) {
            let what = "--dgram";
            let sock = match (local, remote) {
                (Endpoint::Unix(l), Endpoint::Unix(r)) => {
                    claim_socket_path(l, true, what)?;
                    let s = UnixDatagram::bind(l)
                        .map_err(|e| anyhow!("{what} {}: cannot bind: {e}", l.display()))?;
                    made.push(l.clone());
                    chmod(l, mode, what)?;
                    Dgram::Unix(s, r.clone())
                }
                (Endpoint::Inet(l), Endpoint::Inet(r)) => {
                    let s = UdpSocket::bind(l)
                        .map_err(|e| anyhow!("{what} udp:{l}: cannot bind: {e}"))?;
                    let ra = Endpoint::resolve(r).map_err(|e| anyhow!("--remote udp:{r}: {e}"))?;
                    Dgram::Udp(s, ra)
                }
                _ => {
                    return Err(anyhow!(
                        "--dgram {} with --remote {}: both must be unix: or both udp:",
                        local,
                        remote
                    ))
                }
            };
            let name = format!(
                "qemu dgram {} <-> {}",
                dgram_shown(local),
                dgram_shown(remote)
            );
            shown.push(name.replace("qemu ", ""));
            engine.add(Box::new(DgramPort::new(sock, name)?));
        }
        Ok(())
    })();
    let result = set_up.and_then(|()| {
        say(&format!(
            "qemu bridge up on {}: {}",
            args.bus.display(),
            shown.join(", ")
        ));
        let end = engine.run(&stop);
        engine.print_reports();
        Ok(match end? {
            End::Signal => crate::cli::error::interrupted(),
            End::EssentialClosed => ExitCode::FAILURE,
        })
    });
    drop(engine);
    for p in made {
        let _ = fs::remove_file(p);
    }
    result
}

fn port_shown(e: &Endpoint) -> String {
    match e {
        Endpoint::Unix(p) => format!("unix:{}", p.display()),
        Endpoint::Inet(a) => format!("tcp:{a}"),
    }
}

fn dgram_shown(e: &Endpoint) -> String {
    match e {
        Endpoint::Unix(p) => format!("unix:{}", p.display()),
        Endpoint::Inet(a) => format!("udp:{a}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_clear_errors() {
        assert_eq!(
            stream_endpoint("unix:/tmp/q.sock"),
            Ok(Endpoint::Unix("/tmp/q.sock".into()))
        );
        assert_eq!(
            stream_endpoint("tcp:127.0.0.1:5555"),
            Ok(Endpoint::Inet("127.0.0.1:5555".into()))
        );
        assert_eq!(
            stream_endpoint("tcp:[::1]:5555"),
            Ok(Endpoint::Inet("[::1]:5555".into()))
        );
        assert_eq!(
            stream_endpoint("./q.sock"),
            Ok(Endpoint::Unix("./q.sock".into()))
        );
        assert!(stream_endpoint("tcp:host")
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!(stream_endpoint("q.sock").unwrap_err().contains("unix:PATH"));
        assert!(stream_endpoint("unix:").unwrap_err().contains("no path"));
        assert!(dgram_endpoint("udp:127.0.0.1:7").is_ok());
        assert!(dgram_endpoint("tcp:127.0.0.1:7").is_err());
    }
}
