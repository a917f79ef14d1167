//! A flood tool for benchmarking VDE switches (`shmif vde`, `vde_switch`):
//! a VDE client of its own (the libvdeplug protocol) that sends or counts
//! frames, and the same over VDE's stream form on stdin/stdout, to feed
//! and drain `vde_plug` processes.
//!
//! ```text
//! vde_flood send DIR SIZE COUNT        # attach to the switch in DIR, send COUNT frames
//! vde_flood recv DIR COUNT             # attach, count frames until COUNT or 2 s of quiet
//! vde_flood stream-send SIZE COUNT     # COUNT frames in stream form on stdout
//! vde_flood stream-recv COUNT          # count stream-form frames on stdin
//! ```
//!
//! `recv` and `stream-recv` print `frames N first-to-last SECS fps RATE`.
//! Frames are broadcasts of EtherType 0x88b5 carrying a sequence number.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn frame(size: usize, seq: u64) -> Vec<u8> {
    let mut f = vec![0u8; size.max(60)];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0xf1, 0x00, 0x01]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..22].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Attaches to the switch in `dir` as libvdeplug does.
fn attach(dir: &Path) -> io::Result<(UnixStream, UnixDatagram)> {
    let dir = std::fs::canonicalize(dir)?;
    let me = dir.join(format!(".{:05}-flood", std::process::id()));
    let _ = std::fs::remove_file(&me);
    let data = UnixDatagram::bind(&me)?;
    let mut ctl = UnixStream::connect(dir.join("ctl"))?;
    let mut req = Vec::new();
    req.extend_from_slice(&0xfeed_faceu32.to_ne_bytes());
    req.extend_from_slice(&3u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    let mut addr = [0u8; 110];
    addr[..2].copy_from_slice(&1u16.to_ne_bytes());
    let p = me.as_os_str().as_encoded_bytes();
    addr[2..2 + p.len()].copy_from_slice(p);
    req.extend_from_slice(&addr);
    req.extend_from_slice(b"vde_flood");
    ctl.write_all(&req)?;
    let mut reply = [0u8; 110];
    ctl.read_exact(&mut reply)?;
    let end = reply[2..].iter().position(|&c| c == 0).unwrap_or(108) + 2;
    let port = PathBuf::from(String::from_utf8_lossy(&reply[2..end]).into_owned());
    data.connect(&port)?;
    let _ = std::fs::remove_file(&me);
    Ok((ctl, data))
}

#[derive(Clone, Copy)]
struct Count {
    n: u64,
    first: Option<Instant>,
    last: Instant,
}

impl Count {
    fn new() -> Count {
        Count {
            n: 0,
            first: None,
            last: Instant::now(),
        }
    }
    fn one(&mut self) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = now;
        self.n += 1;
    }
    fn print(&self) {
        let secs = self
            .first
            .map(|f| self.last.duration_since(f).as_secs_f64())
            .unwrap_or(0.0);
        let fps = if secs > 0.0 {
            self.n as f64 / secs
        } else {
            0.0
        };
        println!("frames {} first-to-last {secs:.3} fps {fps:.0}", self.n);
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("argument {i}: a number expected; see the source's usage"))
    };
    match args.first().map(String::as_str) {
        Some("send") => {
            let (_ctl, data) = attach(Path::new(&args[1]))?;
            let (size, count) = (num(2) as usize, num(3));
            let mut f = frame(size, 0);
            // Blocking sends: the switch's pace is the sender's.
            for seq in 0..count {
                f[14..22].copy_from_slice(&seq.to_be_bytes());
                data.send(&f)?;
            }
            // Stay attached a moment so the last frames are not cut off.
            std::thread::sleep(Duration::from_millis(500));
        }
        Some("recv") => {
            let (_ctl, data) = attach(Path::new(&args[1]))?;
            let want = num(2);
            println!("attached");
            io::stdout().flush()?;
            let mut c = Count::new();
            let mut b = vec![0u8; 65536];
            data.set_read_timeout(Some(Duration::from_secs(30)))?;
            while c.n < want {
                match data.recv(&mut b) {
                    Ok(n) if n >= 14 && b[12..14] == [0x88, 0xb5] => {
                        c.one();
                        if c.n == 1 {
                            data.set_read_timeout(Some(Duration::from_secs(2)))?;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            c.print();
        }
        Some("stream-send") => {
            let (size, count) = (num(1) as usize, num(2));
            let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
            let mut f = frame(size, 0);
            for seq in 0..count {
                f[14..22].copy_from_slice(&seq.to_be_bytes());
                out.write_all(&(f.len() as u16).to_be_bytes())?;
                out.write_all(&f)?;
            }
            out.flush()?;
            // Keep the pipe open a moment: vde_plug exits at EOF.
            std::thread::sleep(Duration::from_secs(2));
        }
        Some("stream-recv") => {
            let want = num(1);
            let (tx, rx) = std::sync::mpsc::channel::<Count>();
            std::thread::spawn(move || {
                let mut inp = BufReader::with_capacity(1 << 16, io::stdin().lock());
                let mut c = Count::new();
                let mut len = [0u8; 2];
                let mut b = vec![0u8; 65536];
                while c.n < want && inp.read_exact(&mut len).is_ok() {
                    let n = u16::from_be_bytes(len) as usize;
                    if inp.read_exact(&mut b[..n]).is_err() {
                        break;
                    }
                    if n >= 14 && b[12..14] == [0x88, 0xb5] {
                        c.one();
                    }
                    if c.n % 1024 == 0 {
                        let _ = tx.send(c);
                    }
                }
                let _ = tx.send(c);
            });
            // Stop at COUNT, or after 2 s without progress.
            let mut last = Count::new();
            loop {
                match rx.recv_timeout(Duration::from_secs(if last.n == 0 { 30 } else { 2 })) {
                    Ok(c) => {
                        let done = c.n >= want;
                        last = c;
                        if done {
                            break;
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                    Err(_) => break,
                }
            }
            last.print();
        }
        _ => {
            eprintln!(
                "usage: vde_flood send DIR SIZE COUNT | recv DIR COUNT | stream-send SIZE COUNT \
                 | stream-recv COUNT"
            );
            std::process::exit(2);
        }
    }
    Ok(())
}
