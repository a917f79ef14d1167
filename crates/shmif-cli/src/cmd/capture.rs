//! `shmif capture`: every frame on a bus from now on, live, as pcap, pcapng
//! or one line each.
//!
//! Attaches to the bus as a promiscuous interface, so it receives every
//! frame that every other peer writes, and waits for them with poll(2) on
//! the bus's wake-up descriptor (no busy polling). Output is flushed
//! whenever the bus has nothing more waiting, so a reader of the pipe
//! (`tcpdump -r -`, `wireshark -k -i -`) sees each frame as soon as it is
//! captured. On the way out it reports to standard error how many frames it
//! captured and what overruns cost.

use crate::cli::error::{interrupted, lib_error};
use crate::cli::output::{plural, refuse_binary_to_terminal};
use crate::cli::pcap;
use crate::cli::repair::RepairNotice;
use crate::cli::signal::{poll_fds, StopSignal};
use anyhow::{anyhow, Context as _};
use pcap_file::pcap::PcapWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};
use rustix::event::{PollFd, PollFlags};
use shmif::Received;
use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// pcapng `if_tsresol`: timestamps in nanoseconds (pcap-file writes
/// enhanced packet blocks in nanoseconds).
const TSRESOL_NANOSECONDS: u8 = 9;

/// Capture every frame on a shmif bus, live, to pcap, pcapng or text.
///
/// Attaches to BUS (creating it if missing) as a new promiscuous interface
/// and captures every frame any other peer writes from then on, whoever it
/// is addressed to. With -w it writes them to FILE as a classic pcap
/// (link type Ethernet, microsecond timestamps), or as pcapng with
/// --pcapng; `-w -` writes to standard output, for `tcpdump -r -` or
/// `wireshark -k -i -`. Without -w it prints one line per frame: the time
/// (HH:MM:SS.uuuuuu, UTC) and a decoded summary. Output is flushed whenever
/// no more frames are waiting, so readers see traffic as it happens.
///
/// Timestamps are, by default, the sender's, from the bus frame header:
/// peers using this crate write the wall-clock time, so the capture gets
/// real dates, and the time is when the frame was sent even if the capture
/// reads a burst at once. Rump kernels write their uptime instead (dates in
/// 1970); `--timestamps capture` stamps each frame with the time it was
/// read instead.
///
/// Stops after COUNT frames, on SIGINT or SIGTERM, or when the reader of
/// standard output goes away; then prints to standard error the frames
/// captured and what was lost to overruns (frames overwritten on the ring
/// before the capture read them, when it falls a whole ring behind).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif capture /tmp/bus                                 # one line per frame until Ctrl-C\n  \
    shmif capture /tmp/bus -w bus.pcap -c 100              # the next 100 frames to a pcap\n  \
    shmif capture /tmp/bus -w - | tcpdump -n -e -r -       # decoded live by tcpdump\n  \
    shmif capture /tmp/bus -w - --pcapng | wireshark -k -i -   # live in Wireshark\n  \
    shmif capture /tmp/bus --json -c 10                    # one JSON object per frame\n\n\
    A binary capture is not written to a terminal: `-w -` needs standard output redirected.\n\n\
    Exit status: 0 when COUNT frames were captured, or when the reader of standard output went \
    away; 1 on an error (bad bus, unwritable FILE); 2 on a usage error; 130 when stopped by \
    SIGINT or SIGTERM.")]
pub struct Args {
    /// The bus file (created if missing).
    #[arg(value_name = "BUS")]
    pub bus: PathBuf,

    /// Write the frames to FILE as pcap (or pcapng with --pcapng) instead of
    /// printing summaries; `-` writes to standard output.
    #[arg(short = 'w', long = "write", value_name = "FILE|-")]
    pub write: Option<PathBuf>,

    /// Stop after capturing COUNT frames.
    #[arg(short = 'c', long, value_name = "COUNT",
          value_parser = crate::cli::parse::count)]
    pub count: Option<u64>,

    /// Write pcapng (a section header, an interface description block for
    /// the bus, link type Ethernet, then enhanced packet blocks) instead of
    /// classic pcap. Needs -w.
    #[arg(long, requires = "write")]
    pub pcapng: bool,

    /// Which time to record for each frame: `sender` (the frame header's
    /// timestamp, written by the sending peer) or `capture` (when this
    /// command read it).
    #[arg(long, value_name = "SOURCE", value_enum, default_value_t = Timestamps::Sender)]
    pub timestamps: Timestamps,

    /// On an extended bus, capture lossy: writers never wait for this
    /// capture, which loses frames when it falls a ring behind (as on a
    /// NetBSD bus, where every reader is lossy). By default a capture of an
    /// extended bus is a registered reader that writers wait for (up to
    /// their --reader-stall).
    #[arg(long)]
    pub lossy: bool,

    /// Print each frame as one JSON object per line (sec, usec, len, src,
    /// dst, ethertype, kind, ip_src, ip_dst, protocol, src_port, dst_port,
    /// tcp_flags, summary) instead of a text line. Not with -w.
    #[arg(long, conflicts_with = "write")]
    pub json: bool,

    /// How the bus file is opened or created.
    #[command(flatten)]
    pub bus_opts: crate::cli::bus_opts::BusOpts,
}

/// Where a frame's recorded time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Timestamps {
    /// The sender's timestamp from the bus frame header (wall clock for
    /// this crate's peers, uptime for rump kernels).
    Sender,
    /// The time this command read the frame off the bus (wall clock).
    Capture,
}

/// A buffered output shared between a pcap writer (which owns one handle)
/// and the loop that flushes it (which keeps the other).
#[derive(Clone)]
struct Shared(Rc<RefCell<BufWriter<Box<dyn Write>>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// The output format and its writer.
enum Format {
    /// One summary line per frame.
    Text(Shared),
    /// One JSON object per frame.
    Json(Shared),
    /// Classic pcap.
    Pcap(PcapWriter<Shared>, Shared),
    /// pcapng.
    PcapNg(PcapNgWriter<Shared>, Shared),
}

impl Format {
    /// Starts the output: the file header for pcap, the section header and
    /// the bus's interface description for pcapng.
    fn start(args: &Args, out: Box<dyn Write>, snaplen: u32) -> io::Result<Self> {
        let shared = Shared(Rc::new(RefCell::new(BufWriter::with_capacity(
            64 * 1024,
            out,
        ))));
        if args.write.is_none() {
            return Ok(match args.json {
                true => Format::Json(shared),
                false => Format::Text(shared),
            });
        }
        if !args.pcapng {
            let w = pcap::writer(shared.clone(), snaplen)?;
            return Ok(Format::Pcap(w, shared));
        }
        let section = SectionHeaderBlock {
            endianness: Endianness::native(),
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "shmif capture {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        let mut w =
            PcapNgWriter::with_section_header(shared.clone(), section).map_err(pcap::to_io)?;
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(args.bus.display().to_string())),
                InterfaceDescriptionOption::IfDescription(Cow::Borrowed(
                    "shmif shared-memory Ethernet bus",
                )),
                InterfaceDescriptionOption::IfTsResol(TSRESOL_NANOSECONDS),
            ],
        };
        w.write_pcapng_block(idb).map_err(pcap::to_io)?;
        Ok(Format::PcapNg(w, shared))
    }

    /// Writes one frame.
    fn frame(&mut self, (sec, usec): (u32, u32), data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        match self {
            Format::Text(out) => writeln!(out, "{}", crate::summary::frame_line(sec, usec, data)),
            Format::Json(out) => writeln!(out, "{}", crate::summary::json_line(sec, usec, data)),
            Format::Pcap(w, _) => pcap::record(w, sec, usec, data),
            Format::PcapNg(w, _) => w
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: Duration::new(u64::from(sec), 0)
                        + Duration::from_micros(u64::from(usec)),
                    original_len: len,
                    data: Cow::Borrowed(data),
                    options: vec![],
                })
                .map(drop)
                .map_err(pcap::to_io),
        }
    }

    /// Pushes everything written so far to the file or pipe.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Format::Text(out)
            | Format::Json(out)
            | Format::Pcap(_, out)
            | Format::PcapNg(_, out) => out.flush(),
        }
    }
}

/// The time now, as bus timestamps are: seconds and microseconds.
fn now() -> (u32, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as u32, d.subsec_micros())
}

/// Why the capture ended.
enum End {
    /// COUNT frames were captured.
    Count,
    /// SIGINT or SIGTERM.
    Signal,
    /// The reader of standard output went away.
    OutputClosed,
}

/// Runs `shmif capture`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.write.as_deref().is_some_and(|p| p.as_os_str() == "-") {
        let what = if args.pcapng { "a pcapng" } else { "a pcap" };
        refuse_binary_to_terminal(what, "-w")?;
    }
    let signals = StopSignal::install()?;
    let iface = args
        .bus_opts
        .attach_lossy(&args.bus, None, args.lossy)
        .map_err(lib_error)?;
    iface.set_promiscuous(true);

    let to_stdout = match args.write.as_deref() {
        None => true,
        Some(p) if p.as_os_str() == "-" => true,
        Some(_) => false,
    };
    let (what, out): (String, Box<dyn Write>) = match args.write.as_deref() {
        Some(p) if !to_stdout => {
            pcap::check_not_the_bus(p, &args.bus, "capture")?;
            let f = File::create(p).with_context(|| format!("{}: cannot create", p.display()))?;
            (p.display().to_string(), Box::new(f))
        }
        _ => ("standard output".to_string(), Box::new(io::stdout())),
    };
    let write_error = |e: io::Error| anyhow!("{what}: cannot write the capture: {e}");
    // The header goes out with the first flush, before the first wait.
    let snaplen = pcap::snaplen(iface.is_extended(), iface.max_frame_len());
    let mut format = Format::start(&args, out, snaplen).map_err(write_error)?;

    let wake = iface.wakeup_fd().map_err(lib_error)?;
    let stdout = io::stdout();
    let kind = match (&args.write, args.pcapng) {
        (None, _) if args.json => "one JSON object per frame",
        (None, _) => "one line per frame",
        (Some(_), false) => "pcap",
        (Some(_), true) => "pcapng",
    };
    eprintln!(
        "shmif: capturing on {} (promiscuous), link-type EN10MB (Ethernet), {kind} to {what}",
        args.bus.display()
    );

    let mut buf = vec![0u8; iface.max_frame_len()];
    let mut captured = 0u64;
    let mut bytes = 0u64;
    let mut repairs = RepairNotice::new(&args.bus);
    let end = 'capture: loop {
        // Consume the wake-ups (and check the bus file is still the one
        // mapped), then empty the ring: a frame written after the drain
        // raises a new event, so the poll below cannot sleep through it.
        iface
            .wait_for_wakeup(Some(Duration::ZERO))
            .map_err(lib_error)?;
        loop {
            let Some(Received { len, sec, usec, .. }) =
                iface.try_recv_into(&mut buf).map_err(lib_error)?
            else {
                break;
            };
            let stamp = match args.timestamps {
                Timestamps::Sender => (sec, usec),
                Timestamps::Capture => now(),
            };
            match format.frame(stamp, &buf[..len]) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    break 'capture End::OutputClosed
                }
                Err(e) => return Err(write_error(e)),
            }
            captured += 1;
            bytes += len as u64;
            if args.count.is_some_and(|n| captured >= n) {
                break 'capture End::Count;
            }
        }
        match format.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break End::OutputClosed,
            Err(e) => return Err(write_error(e)),
        }

        repairs.check(&iface.counters());
        let mut fds = vec![PollFd::from_borrowed_fd(signals.fd(), PollFlags::IN)];
        if let Some(w) = &wake {
            fds.push(PollFd::new(w, PollFlags::IN));
        }
        if to_stdout {
            // No events asked: poll still reports POLLERR/POLLHUP, which a
            // pipe's write end gets when its reader has gone.
            fds.push(PollFd::from_borrowed_fd(stdout.as_fd(), PollFlags::empty()));
        }
        // Without a wake-up descriptor (not Linux), look at the ring as
        // often as the library's own fallback does.
        let timeout = wake.is_none().then_some(shmif::POLL_INTERVAL);
        poll_fds(&mut fds, timeout).context("poll")?;
        let out_gone = to_stdout
            && fds
                .last()
                .is_some_and(|f| f.revents().intersects(PollFlags::ERR | PollFlags::HUP));
        drop(fds);
        if signals.stopped() {
            break End::Signal;
        }
        if out_gone {
            break End::OutputClosed;
        }
    };
    if !matches!(end, End::OutputClosed) {
        match format.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(write_error(e)),
        }
    }
    drop(format);

    let c = iface.counters();
    let why = match end {
        End::Count => "count reached",
        End::Signal => "interrupted",
        End::OutputClosed => "reader of standard output went away",
    };
    let unmeasured = if c.overruns_unmeasured > 0 {
        format!(", {} more overruns of unknown size", c.overruns_unmeasured)
    } else {
        String::new()
    };
    eprintln!(
        "shmif: {}: {} captured ({bytes} bytes); lost to overruns: {} bytes of \
         frames in {} overruns{unmeasured}; malformed {}; repairs {} ({why})",
        args.bus.display(),
        plural(captured, "frame"),
        c.overrun_bytes,
        c.overruns - c.overruns_unmeasured.min(c.overruns),
        c.malformed,
        c.ring_repairs,
    );
    Ok(match end {
        End::Signal => interrupted(),
        _ => ExitCode::SUCCESS,
    })
}
