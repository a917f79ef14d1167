//! `shmif top`: who is talking on a bus, live.
//!
//! Attaches as a promiscuous interface, counts every frame by the sender
//! id in its bus header (and the source MAC it carries), and once per
//! interval shows each sender's frames/s and bytes/s, what it sends (ARP,
//! IPv4, IPv6, other), the bus's generation and how fast it wraps, and the
//! bytes `top` itself lost to overruns. On a terminal the view is redrawn
//! in place, with keys to sort and quit; otherwise (or with --once, or
//! --json) it prints.

use crate::cli::error::{interrupted, lib_error};
use crate::cli::signal::StopSignal;
use anyhow::{anyhow, Context as _, Result};
use shmif::wire::{BusHeader, BUS_HEADER_LEN};
use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Show who sends what on a shmif bus, refreshed every second.
///
/// Attaches to BUS (creating it if missing) as a promiscuous interface and
/// counts every frame from then on by its sender (the sender id in the bus
/// frame header, and the frame's source MAC). Every interval it shows, per
/// sender: frames/s, bytes/s, and what it sends (ARP, IPv4, IPv6, other,
/// by frames); and for the bus: its generation (how many times the ring
/// wrapped), wraps per second, and the bytes `top` itself lost to
/// overruns (when it fell a whole ring behind).
///
/// On a terminal the view is redrawn in place; keys: f sorts by frames/s,
/// b by bytes/s, m by MAC, i by sender id, q (or Ctrl-C) quits. Otherwise,
/// a view is printed every interval. --once prints one view after one
/// interval and exits; --json prints each view as one JSON object (with
/// --once, exactly one).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif top /tmp/bus                                   # live, until q\n  \
    shmif top /tmp/bus --once                            # one second's figures\n  \
    shmif top /tmp/bus --once --json | jq '.senders[] | {mac, frames_per_sec}'\n\n\
    JSON: {bus, interval_s, generation, wraps_per_sec, overrun_bytes, frames_per_sec, \
    bytes_per_sec, senders: [{mac, sender_id, frames, bytes, frames_per_sec, bytes_per_sec, \
    kinds: {arp, ipv4, ipv6, other}}]}; sender_id is hex, frames and bytes count since start, \
    the rates and kinds are over the last interval.\n\n\
    Exit status: 0 on q, or after --once; 1 on an error; 2 on a usage error; 130 when stopped \
    by SIGINT or SIGTERM (or Ctrl-C on the terminal).")]
pub struct Args {
    /// The bus file (created if missing).
    #[arg(value_name = "BUS")]
    pub bus: PathBuf,

    #[command(flatten)]
    pub bus_opts: crate::cli::bus_opts::BusOpts,

    /// Print one view after one interval, then exit.
    #[arg(long)]
    pub once: bool,

    /// Print each view as one JSON object on a line.
    #[arg(long)]
    pub json: bool,

    /// Seconds between views (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = interval)]
    pub interval: Duration,

    /// What to sort the senders by.
    #[arg(long, value_enum, default_value_t = SortKey::Bytes)]
    pub sort: SortKey,
}

/// An interval of at least 10 ms and at most an hour.
fn interval(s: &str) -> Result<Duration, String> {
    match crate::cli::parse::seconds_to_an_hour(s) {
        Ok(d) if d >= Duration::from_millis(10) => Ok(d),
        _ => Err(format!(
            "`{s}` is not a number of seconds from 0.01 to 3600"
        )),
    }
}

/// How senders are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Frames per second, most first.
    Frames,
    /// Bytes per second, most first.
    Bytes,
    /// Source MAC address.
    Mac,
    /// Sender id.
    Id,
}

/// Frames of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Kinds {
    /// ARP frames.
    pub arp: u64,
    /// IPv4 frames.
    pub ipv4: u64,
    /// IPv6 frames.
    pub ipv6: u64,
    /// Anything else.
    pub other: u64,
}

impl Kinds {
    /// Counts one frame of EtherType `ty`.
    fn count(&mut self, ty: u16) {
        match ty {
            0x0806 => self.arp += 1,
            0x0800 => self.ipv4 += 1,
            0x86dd => self.ipv6 += 1,
            _ => self.other += 1,
        }
    }

    /// What it sends, shortest first: `IPv4 90%, ARP 10%`.
    fn describe(&self) -> String {
        let total = self.arp + self.ipv4 + self.ipv6 + self.other;
        if total == 0 {
            return "-".into();
        }
        let mut parts: Vec<(u64, &str)> = vec![
            (self.ipv4, "IPv4"),
            (self.ipv6, "IPv6"),
            (self.arp, "ARP"),
            (self.other, "other"),
        ];
        parts.retain(|(n, _)| *n > 0);
        parts.sort_by_key(|p| std::cmp::Reverse(p.0));
        parts
            .iter()
            .map(|(n, what)| format!("{what} {:.0}%", 100.0 * *n as f64 / total as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One sender's counts.
#[derive(Debug, Clone, Default)]
struct Sender {
    mac: String,
    frames: u64,
    bytes: u64,
    /// Counts in the current interval.
    window_frames: u64,
    window_bytes: u64,
    window_kinds: Kinds,
}

/// A sender in a view, as `--json` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SenderView {
    /// Source MAC address of its last frame.
    pub mac: String,
    /// The sender id of its frames, in hex.
    pub sender_id: String,
    /// Frames since `top` started.
    pub frames: u64,
    /// Bytes since `top` started.
    pub bytes: u64,
    /// Frames per second over the last interval.
    pub frames_per_sec: f64,
    /// Bytes per second over the last interval.
    pub bytes_per_sec: f64,
    /// Frames of each kind over the last interval.
    pub kinds: Kinds,
}

/// One view of the bus, as `--json` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct View {
    /// The bus file.
    pub bus: String,
    /// Seconds the rates are over.
    pub interval_s: f64,
    /// The bus's generation now.
    pub generation: u64,
    /// Generations per second over the interval.
    pub wraps_per_sec: f64,
    /// Bytes `top` lost to overruns since it started.
    pub overrun_bytes: u64,
    /// Frames per second, all senders.
    pub frames_per_sec: f64,
    /// Bytes per second, all senders.
    pub bytes_per_sec: f64,
    /// The senders heard from, sorted as asked.
    pub senders: Vec<SenderView>,
}

/// The bus's generation, read from the file's header (no lock: a torn read
/// of a counter is harmless in a view).
fn generation(file: &std::fs::File) -> u64 {
    let mut head = [0u8; BUS_HEADER_LEN];
    match file.read_exact_at(&mut head, 0) {
        Ok(()) => BusHeader::new_checked(&head[..])
            .map(|h| h.generation())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Sorts `senders` by `key`.
fn sort(senders: &mut [SenderView], key: SortKey) {
    match key {
        SortKey::Frames => senders.sort_by(|a, b| b.frames_per_sec.total_cmp(&a.frames_per_sec)),
        SortKey::Bytes => senders.sort_by(|a, b| b.bytes_per_sec.total_cmp(&a.bytes_per_sec)),
        SortKey::Mac => senders.sort_by(|a, b| a.mac.cmp(&b.mac)),
        SortKey::Id => senders.sort_by(|a, b| a.sender_id.cmp(&b.sender_id)),
    }
}

/// The view as text lines.
fn text(view: &View, key: SortKey, keys_help: bool) -> Vec<String> {
    let mut out = vec![
        format!(
            "shmif top {}: generation {}, {:.2} wraps/s, {:.0} frames/s, {}/s; top lost {} bytes to overruns",
            view.bus,
            view.generation,
            view.wraps_per_sec,
            view.frames_per_sec,
            human_bytes(view.bytes_per_sec),
            view.overrun_bytes
        ),
        format!(
            "{:<17}  {:<18}  {:>9}  {:>11}  {}",
            "MAC", "SENDER ID", "FRAMES/S", "BYTES/S", "SENDS"
        ),
    ];
    for s in &view.senders {
        out.push(format!(
            "{:<17}  {:<18}  {:>9.0}  {:>11}  {}",
            s.mac,
            s.sender_id,
            s.frames_per_sec,
            human_bytes(s.bytes_per_sec),
            s.kinds.describe()
        ));
    }
    if view.senders.is_empty() {
        out.push("(no frames yet)".into());
    }
    if keys_help {
        out.push(String::new());
        out.push(format!(
            "sorted by {}; keys: f frames/s, b bytes/s, m MAC, i sender id, q quit",
            match key {
                SortKey::Frames => "frames/s",
                SortKey::Bytes => "bytes/s",
                SortKey::Mac => "MAC",
                SortKey::Id => "sender id",
            }
        ));
    }
    out
}

/// `1.5 MiB`, `300 B`.
fn human_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// The counting, apart from the output.
struct Counter {
    senders: HashMap<u64, Sender>,
    gen_at_start: u64,
    window_start: Instant,
}

impl Counter {
    fn frame(&mut self, sender: u64, frame: &[u8]) {
        let s = self.senders.entry(sender).or_default();
        if frame.len() >= 14 {
            s.mac = crate::summary::fields(0, 0, frame).src.unwrap_or_default();
            s.window_kinds
                .count(u16::from_be_bytes([frame[12], frame[13]]));
        }
        s.frames += 1;
        s.bytes += frame.len() as u64;
        s.window_frames += 1;
        s.window_bytes += frame.len() as u64;
    }

    /// The view of the interval that ends now; starts the next one.
    fn view(&mut self, bus: &Path, gen: u64, overrun_bytes: u64, key: SortKey) -> View {
        let secs = self.window_start.elapsed().as_secs_f64().max(1e-6);
        let mut senders: Vec<SenderView> = self
            .senders
            .iter()
            .map(|(id, s)| SenderView {
                mac: s.mac.clone(),
                sender_id: format!("{id:#018x}"),
                frames: s.frames,
                bytes: s.bytes,
                frames_per_sec: s.window_frames as f64 / secs,
                bytes_per_sec: s.window_bytes as f64 / secs,
                kinds: s.window_kinds,
            })
            .collect();
        sort(&mut senders, key);
        let view = View {
            bus: bus.display().to_string(),
            interval_s: secs,
            generation: gen,
            wraps_per_sec: gen.saturating_sub(self.gen_at_start) as f64 / secs,
            overrun_bytes,
            frames_per_sec: senders.iter().map(|s| s.frames_per_sec).sum(),
            bytes_per_sec: senders.iter().map(|s| s.bytes_per_sec).sum(),
            senders,
        };
        for s in self.senders.values_mut() {
            s.window_frames = 0;
            s.window_bytes = 0;
            s.window_kinds = Kinds::default();
        }
        self.gen_at_start = gen;
        self.window_start = Instant::now();
        view
    }
}

/// The terminal in raw mode on the alternate screen, restored on drop.
struct Screen;

impl Screen {
    fn enter() -> Result<Screen> {
        crossterm::terminal::enable_raw_mode().context("cannot set up the terminal")?;
        let _ = crossterm::execute!(
            std::io::stdout(),
            crossterm::terminal::EnterAlternateScreen,
            crossterm::cursor::Hide
        );
        Ok(Screen)
    }

    fn draw(&self, lines: &[String]) {
        use crossterm::{cursor, queue, terminal};
        let mut out = std::io::stdout().lock();
        let _ = queue!(
            out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        );
        for (i, l) in lines.iter().enumerate() {
            let _ = queue!(out, cursor::MoveTo(0, i as u16));
            let _ = write!(out, "{l}");
        }
        let _ = out.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = crossterm::execute!(
            std::io::stdout(),
            crossterm::cursor::Show,
            crossterm::terminal::LeaveAlternateScreen
        );
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// What a key asks for.
enum Key {
    Sort(SortKey),
    Quit,
    Interrupt,
}

/// Keys pressed since the last look (none waiting: `None`).
fn key() -> Option<Key> {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    while event::poll(Duration::ZERO).ok()? {
        let Ok(Event::Key(k)) = event::read() else {
            continue;
        };
        if k.kind != KeyEventKind::Press {
            continue;
        }
        return Some(match k.code {
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
            KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
            KeyCode::Char('f') => Key::Sort(SortKey::Frames),
            KeyCode::Char('b') => Key::Sort(SortKey::Bytes),
            KeyCode::Char('m') => Key::Sort(SortKey::Mac),
            KeyCode::Char('i') => Key::Sort(SortKey::Id),
            _ => continue,
        });
    }
    None
}

/// Runs `shmif top`.
pub fn run(args: Args) -> Result<ExitCode> {
    let stop = StopSignal::install()?;
    let iface = args.bus_opts.attach(&args.bus, None).map_err(lib_error)?;
    iface.set_promiscuous(true);
    let file = std::fs::File::open(&args.bus)
        .with_context(|| format!("{}: cannot open", args.bus.display()))?;
    let live = !args.once && !args.json && std::io::stdout().is_terminal();
    let screen = if live { Some(Screen::enter()?) } else { None };
    let mut key_order = args.sort;
    let mut counter = Counter {
        senders: HashMap::new(),
        gen_at_start: generation(&file),
        window_start: Instant::now(),
    };
    // The bus's frame limit: 1514 on a NetBSD bus, more on an extended one.
    let mut buf = vec![0u8; iface.max_frame_len()];
    let mut next = Instant::now() + args.interval;
    let code = loop {
        // Everything waiting, then a wait until the next frame, a key, the
        // next view, or a signal.
        while let Some(r) = iface.try_recv_into(&mut buf).map_err(lib_error)? {
            counter.frame(r.sender, &buf[..r.len]);
        }
        if stop.stopped() {
            break interrupted();
        }
        if screen.is_some() {
            match key() {
                Some(Key::Quit) => break ExitCode::SUCCESS,
                Some(Key::Interrupt) => break interrupted(),
                Some(Key::Sort(k)) => {
                    key_order = k;
                    // Redraw at once, with the figures so far.
                    next = Instant::now();
                }
                None => {}
            }
        }
        let now = Instant::now();
        if now >= next {
            let view = counter.view(
                &args.bus,
                generation(&file),
                iface.counters().overrun_bytes,
                key_order,
            );
            if let Some(s) = &screen {
                s.draw(&text(&view, key_order, true));
            } else if args.json {
                let line = serde_json::to_string(&view).map_err(|e| anyhow!("{e}"))?;
                crate::cli::output::say(&line);
            } else {
                for l in text(&view, key_order, false) {
                    crate::cli::output::say(&l);
                }
                if !args.once {
                    crate::cli::output::say("");
                }
            }
            if args.once {
                break ExitCode::SUCCESS;
            }
            next = now + args.interval;
        }
        // Short waits on a terminal, so that keys are seen at once.
        let mut wait = next.saturating_duration_since(Instant::now());
        if screen.is_some() {
            wait = wait.min(Duration::from_millis(50));
        }
        iface
            .wait_for_wakeup(Some(wait.min(Duration::from_millis(200))))
            .map_err(lib_error)?;
    };
    drop(screen);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_counted_and_described() {
        let mut k = Kinds::default();
        for t in [0x0800, 0x0800, 0x0800, 0x0806] {
            k.count(t);
        }
        assert_eq!(k.describe(), "IPv4 75%, ARP 25%");
        assert_eq!(Kinds::default().describe(), "-");
    }
}
