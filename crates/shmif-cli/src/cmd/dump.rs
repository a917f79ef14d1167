//! `shmif dump`: a drop-in replacement for NetBSD's `shmif_dumpbus`.
//!
//! Reads a bus file into memory (no mapping, no lock: the bus is never
//! modified, and a bus whose lock word is stuck can still be dumped), prints
//! its header line and one line per frame, and optionally writes the frames
//! as a classic pcap file byte-identical to the one `shmif_dumpbus` writes
//! through libpcap.

use crate::cli::error::{lib_error, not_a_bus};
use crate::cli::output::refuse_binary_to_terminal;
use crate::cli::pcap;
use anyhow::{anyhow, Context as _};
use pcap_file::pcap::PcapWriter;
use shmif::dump::{Dump, DumpError};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Print what is on a shmif bus, and optionally save it as pcap.
///
/// A drop-in replacement for NetBSD's `shmif_dumpbus`, with the same
/// options and output. Prints the bus header line
/// (`bus version 3, lock: 0, generation: G, firstoff: 0x..., lastoff: 0x...`),
/// then one line per frame still on the bus, oldest first
/// (`packet N, offset 0x..., length 0x..., ts SEC/USEC`), each followed by a
/// decoded summary of the frame unless a pcap is being written. Reads
/// version-2 buses and buses written by a host of the other byte order.
/// The bus file is only read: no lock is taken and nothing is changed.
#[derive(Debug, clap::Args)]
#[command(
    disable_help_flag = true,
    after_help = "Examples:\n  \
    shmif dump /tmp/bus                             # header, then one line per frame with a summary\n  \
    shmif dump -h /tmp/bus                          # the header line only\n  \
    shmif dump -p bus.pcap /tmp/bus                 # save the frames as pcap\n  \
    shmif dump -p - /tmp/bus | tcpdump -n -e -r -   # pcap on stdout, text on stderr\n  \
    shmif dump --json /tmp/bus | jq -c '{packet, src, kind}'   # one JSON object per frame\n\n\
    An empty file is not a bus yet (`dump` says so; a command that attaches makes it one). A \
    binary pcap is not written to a terminal: `-p -` needs standard output redirected.\n\n\
    Exit status: 0 on success; 1 if the file is not a readable bus or its frame chain is corrupt \
    (frames found before the corruption are still printed)."
)]
pub struct Args {
    /// Print only the bus header line, then stop (as `shmif_dumpbus -h`).
    #[arg(short = 'h', long = "header-only")]
    pub header_only: bool,

    /// Write the frames as a classic pcap file to FILE; `-` writes the pcap
    /// to standard output, and the text lines then go to standard error.
    #[arg(short = 'p', long = "pcap", value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Print one JSON object per frame on standard output (packet,
    /// offset, then the decoded fields: sec, usec, len, src, dst,
    /// ethertype, kind, ip_src, ip_dst, protocol, src_port, dst_port,
    /// tcp_flags, summary) instead of the header and frame lines.
    #[arg(long, conflicts_with_all = ["header_only", "pcap"])]
    pub json: bool,

    /// The bus file to read.
    #[arg(value_name = "BUS")]
    pub bus: PathBuf,

    /// Print help (`-h` means --header-only here, as in `shmif_dumpbus`).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// A failed write to one of the outputs.
#[derive(Debug)]
struct WriteError {
    /// What was being written ("standard output", "pcap file x.pcap").
    what: String,
    source: io::Error,
}

/// A named output stream; every write error carries the name.
struct Output {
    what: String,
    inner: Box<dyn Write>,
}

impl Output {
    fn new(what: impl Into<String>, inner: Box<dyn Write>) -> Self {
        Output {
            what: what.into(),
            inner,
        }
    }

    fn wrap(&self, source: io::Error) -> WriteError {
        WriteError {
            what: self.what.clone(),
            source,
        }
    }

    fn line(&mut self, s: &str) -> Result<(), WriteError> {
        writeln!(self.inner, "{s}").map_err(|e| self.wrap(e))
    }

    fn flush(&mut self) -> Result<(), WriteError> {
        self.inner.flush().map_err(|e| self.wrap(e))
    }
}

/// The pcap being written, with its destination's name.
struct Pcap {
    what: String,
    writer: PcapWriter<Box<dyn Write>>,
}

impl Pcap {
    /// Writes the global header (see [`pcap::writer`]).
    fn new(what: String, out: Box<dyn Write>, snaplen: u32) -> Result<Self, WriteError> {
        match pcap::writer(out, snaplen) {
            Ok(writer) => Ok(Pcap { what, writer }),
            Err(source) => Err(WriteError { what, source }),
        }
    }

    /// One record (see [`pcap::record`]).
    fn record(&mut self, sec: u32, usec: u32, data: &[u8]) -> Result<(), WriteError> {
        pcap::record(&mut self.writer, sec, usec, data).map_err(|source| WriteError {
            what: self.what.clone(),
            source,
        })
    }

    fn flush(self) -> Result<(), WriteError> {
        let what = self.what;
        self.writer
            .into_writer()
            .flush()
            .map_err(|source| WriteError { what, source })
    }
}

/// Turns [`Dump::parse`]'s refusal into a message naming the file, in the
/// words the attaching commands use ([`not_a_bus`]).
fn parse_error(path: &Path, image: &[u8], e: DumpError) -> anyhow::Error {
    use shmif::wire::{BUS_SIZE, MAGIC};
    match e {
        DumpError::NotABus(_) => {
            let size = file_size(path, image);
            let magic = image
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes);
            let reason = match magic {
                Some(m) if m == MAGIC || m == MAGIC.swap_bytes() => {
                    format!("it has the shmif magic but is {size} bytes long instead of {BUS_SIZE}")
                }
                Some(m) => format!("{size} bytes with magic {m:#010x} (expected {MAGIC:#010x})"),
                None => format!("only {size} bytes"),
            };
            not_a_bus(path, &reason)
        }
        other => anyhow!("{}: {other}", path.display()),
    }
}

/// The file's size on disk (the image may hold only its first 1 MiB + 1).
fn file_size(path: &Path, image: &[u8]) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.len())
        .unwrap_or(image.len() as u64)
}

/// A frame as `dump --json` prints it.
#[derive(serde::Serialize)]
struct JsonFrame {
    /// Its number in the walk.
    packet: usize,
    /// Offset of its payload in the data region.
    offset: u32,
    #[serde(flatten)]
    fields: crate::summary::Fields,
}

/// Where the pcap goes, if anywhere.
enum PcapTarget<'a> {
    None,
    Stdout,
    File(&'a Path),
}

/// Runs `shmif dump`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.bus.as_path();
    let target = match args.pcap.as_deref() {
        None => PcapTarget::None,
        Some(p) if p.as_os_str() == "-" => PcapTarget::Stdout,
        Some(p) => PcapTarget::File(p),
    };

    if matches!(target, PcapTarget::Stdout) {
        refuse_binary_to_terminal("a pcap", "-p")?;
    }
    // Everything is checked before any output file is created, and the
    // output file is created before anything is printed.
    let image = shmif::read_image(path).map_err(lib_error)?;
    let dump = Dump::parse(&image).map_err(|e| parse_error(path, &image, e))?;
    let pcap_file = match target {
        PcapTarget::File(p) if !args.header_only => {
            pcap::check_not_the_bus(p, path, "pcap")?;
            let file =
                File::create(p).with_context(|| format!("{}: cannot create", p.display()))?;
            Some(file)
        }
        _ => None,
    };

    let mut text = match target {
        PcapTarget::Stdout => Output::new("standard error", Box::new(io::stderr().lock())),
        _ => Output::new(
            "standard output",
            Box::new(BufWriter::new(io::stdout().lock())),
        ),
    };
    match walk(&args, path, &dump, &target, pcap_file, &mut text) {
        Ok(result) => result,
        Err(e) => {
            let _ = text.flush();
            if e.source.kind() == io::ErrorKind::BrokenPipe {
                // The reader went away (`shmif dump bus | head`): stop quietly.
                return Ok(ExitCode::SUCCESS);
            }
            Err(anyhow!("writing to {}: {}", e.what, e.source))
        }
    }
}

/// Prints the header line and (unless `-h`) walks the frames. The outer
/// error is a failed write; the inner result is the dump's own outcome.
fn walk(
    args: &Args,
    path: &Path,
    dump: &Dump<'_>,
    target: &PcapTarget<'_>,
    pcap_file: Option<File>,
    text: &mut Output,
) -> Result<anyhow::Result<ExitCode>, WriteError> {
    if !args.json {
        text.line(&dump.header_line())?;
    }
    if args.header_only {
        text.flush()?;
        return Ok(Ok(ExitCode::SUCCESS));
    }
    let snaplen = pcap::snaplen(dump.extended().is_some(), dump.geometry().max_frame());
    let mut pcap = match target {
        PcapTarget::None => None,
        PcapTarget::Stdout => Some(Pcap::new(
            "standard output".into(),
            Box::new(BufWriter::new(io::stdout().lock())),
            snaplen,
        )?),
        PcapTarget::File(p) => match pcap_file {
            Some(file) => Some(Pcap::new(
                format!("pcap file {}", p.display()),
                Box::new(BufWriter::new(file)),
                snaplen,
            )?),
            None => None,
        },
    };
    let mut corrupt = None;
    for frame in dump.frames() {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                corrupt = Some(e);
                break;
            }
        };
        match pcap.as_mut() {
            Some(pcap) => {
                text.line(&frame.line())?;
                pcap.record(frame.sec, frame.usec, &frame.data)?;
            }
            None if args.json => {
                let fields = crate::summary::fields(frame.sec, frame.usec, &frame.data);
                let line = serde_json::to_string(&JsonFrame {
                    packet: frame.index,
                    offset: frame.offset,
                    fields,
                })
                .unwrap_or_default();
                text.line(&line)?
            }
            None => text.line(&format!(
                "{}  {}",
                frame.line(),
                crate::summary::summarize(&frame.data)
            ))?,
        }
    }
    if let Some(pcap) = pcap {
        pcap.flush()?;
    }
    text.flush()?;
    Ok(match corrupt {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(anyhow!("{}: bus is corrupt: {e}", path.display())),
    })
}
