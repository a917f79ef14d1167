//! The benchmark's report: what was measured, as tables, as one JSON
//! object (serde) and as plot series.

use super::latency::{self, Placement};
use super::throughput::Row;
use super::worker::{Mode, Wait};
use super::{floors, plot};
use serde::Serialize;

/// One throughput row of the JSON report.
#[derive(Debug, Serialize)]
pub(super) struct ThroughputJson {
    mode: &'static str,
    readers: usize,
    frame_bytes: usize,
    frames_per_sec_per_reader: f64,
    gbit_per_sec_per_reader: f64,
    loss_ratio: f64,
    rfc2544_found: bool,
    /// The result's writer fell short of the rate it was offered: the
    /// rate is what it reached, lossless.
    writer_limited: bool,
    offered_frames_per_sec: u64,
    unpaced_frames_per_sec_per_reader: f64,
    unpaced_send_frames_per_sec: f64,
    unpaced_loss_ratio: f64,
    unpaced_overruns: u64,
    unpaced_overrun_bytes: u64,
    unpaced_max_stall_us: u64,
    max_stall_us: u64,
    trials: usize,
    vs_baseline: f64,
    vs_copy_floor: f64,
}

/// One latency row of the JSON report.
#[derive(Debug, Serialize)]
pub(super) struct LatencyJson {
    mode: &'static str,
    placement: &'static str,
    p50_us: f64,
    p99_us: f64,
    samples: usize,
    vs_baseline: f64,
    vs_wake_floor: f64,
    /// Against the bare futex round trip on the same placement.
    vs_futex_floor: f64,
}

/// The wake-up floor on one placement.
#[derive(Debug, Serialize)]
pub(super) struct WakeJson {
    placement: &'static str,
    p50_us: f64,
    p99_us: f64,
}

/// The copy floor for one frame size.
#[derive(Debug, Serialize)]
pub(super) struct CopyJson {
    frame_bytes: usize,
    ring_frames_per_sec: f64,
    memcpy_frames_per_sec: f64,
}

/// The floors the rows are measured against.
#[derive(Debug, Serialize)]
pub(super) struct FloorsJson {
    copy_frames_per_sec: f64,
    copy_frame_bytes: usize,
    copy: Vec<CopyJson>,
    wake_rtt_p50_us: f64,
    wake_rtt_p99_us: f64,
    wake_rtt: Vec<WakeJson>,
    /// The bare futex round trip (two processes, a shared futex word in a
    /// file mapping).
    futex_rtt: Vec<WakeJson>,
    pwrite_ns: f64,
}

/// The machine the figures come from.
#[derive(Debug, Serialize)]
pub(super) struct MachineJson<'a> {
    cpus: usize,
    loadavg_at_start: &'a str,
}

/// The whole JSON report.
#[derive(Debug, Serialize)]
pub(super) struct JsonReport<'a> {
    throughput: Vec<ThroughputJson>,
    latency: Vec<LatencyJson>,
    floors: FloorsJson,
    machine: MachineJson<'a>,
    quick: bool,
    seconds: f64,
}

/// Prints a progress line to standard error.
pub(super) fn progress(line: &str) {
    eprintln!("{line}");
}

/// How many processors this process may use.
pub(super) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The name of a throughput mode in reports.
pub(super) fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Fast => "fast",
        Mode::Baseline => "baseline",
        Mode::Lossless => "lossless",
    }
}

/// The name of a latency mode in reports.
pub(super) fn wait_name(w: Wait) -> &'static str {
    match w {
        Wait::Blocking => "blocking",
        Wait::Spin => "spin_50us",
        Wait::BusyPoll => "busy_poll",
        Wait::Baseline => "baseline",
        Wait::Futex => "blocking_extended_futex",
    }
}

/// The RFC 2544 rate per reader (0 if no trial passed).
pub(super) fn rfc_rate(r: &Row) -> f64 {
    r.rfc.as_ref().map_or(0.0, |t| t.delivered_per_reader())
}

/// The loss at the RFC 2544 rate (the unpaced loss if no trial passed).
pub(super) fn rfc_loss(r: &Row) -> f64 {
    r.rfc.as_ref().map_or(r.unpaced.loss(), |t| t.loss())
}

fn gbit(fps: f64, bytes: usize) -> f64 {
    fps * bytes as f64 * 8.0 / 1e9
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// A floor's round trips on one placement, if it was measured there.
fn floor_at(floors: &[(Placement, latency::Rtts)], p: Placement) -> Option<&latency::Rtts> {
    floors.iter().find(|(q, _)| *q == p).map(|(_, r)| r)
}

/// Everything measured, for the tables, the JSON and the plot.
pub(super) struct Report {
    pub(super) rows: Vec<Row>,
    pub(super) lat: Vec<(Placement, Wait, latency::Rtts)>,
    pub(super) wake: Vec<(Placement, latency::Rtts)>,
    pub(super) futex: Vec<(Placement, latency::Rtts)>,
    pub(super) copy: Vec<floors::CopyFloor>,
    pub(super) pwrite_ns: f64,
    pub(super) quick: bool,
    pub(super) seconds: f64,
    pub(super) load: String,
}

impl Report {
    fn baseline_of(&self, r: &Row) -> Option<&Row> {
        self.rows.iter().find(|b| {
            b.mode == Mode::Baseline && b.readers == r.readers && b.frame_bytes == r.frame_bytes
        })
    }
    fn copy_of(&self, bytes: usize) -> f64 {
        self.copy
            .iter()
            .find(|c| c.frame_bytes == bytes)
            .map_or(f64::NAN, |c| c.ring_fps)
    }
    fn lat_p50(&self, p: Placement, w: Wait) -> f64 {
        self.lat
            .iter()
            .find(|(q, x, _)| *q == p && *x == w)
            .map_or(f64::NAN, |(_, _, r)| r.p50())
    }
    fn wake_of(&self, p: Placement) -> Option<&latency::Rtts> {
        floor_at(&self.wake, p)
    }
    fn wake_p50(&self, p: Placement) -> f64 {
        self.wake_of(p).map_or(f64::NAN, |w| w.p50())
    }
    fn futex_p50(&self, p: Placement) -> f64 {
        floor_at(&self.futex, p).map_or(f64::NAN, |f| f.p50())
    }

    /// The report as one JSON object (`--json`, `--save-json`).
    pub(super) fn json(&self) -> JsonReport<'_> {
        let throughput = self
            .rows
            .iter()
            .map(|r| {
                let rate = rfc_rate(r);
                let base = self.baseline_of(r).map_or(f64::NAN, rfc_rate);
                ThroughputJson {
                    mode: mode_name(r.mode),
                    readers: r.readers,
                    frame_bytes: r.frame_bytes,
                    frames_per_sec_per_reader: rate,
                    gbit_per_sec_per_reader: gbit(rate, r.frame_bytes),
                    loss_ratio: rfc_loss(r),
                    rfc2544_found: r.rfc.is_some(),
                    writer_limited: r.rfc.as_ref().is_some_and(|t| t.writer_limited()),
                    offered_frames_per_sec: r.rfc.as_ref().map_or(0, |t| t.offered),
                    unpaced_frames_per_sec_per_reader: r.unpaced.delivered_per_reader(),
                    unpaced_send_frames_per_sec: r.unpaced.send_rate(),
                    unpaced_loss_ratio: r.unpaced.loss(),
                    unpaced_overruns: r.unpaced.overruns,
                    unpaced_overrun_bytes: r.unpaced.overrun_bytes,
                    unpaced_max_stall_us: r.unpaced.max_stall_us,
                    max_stall_us: r.rfc.as_ref().map_or(0, |t| t.max_stall_us),
                    trials: r.trials,
                    vs_baseline: ratio(rate, base),
                    vs_copy_floor: ratio(rate, self.copy_of(r.frame_bytes)),
                }
            })
            .collect();
        let latency = self
            .lat
            .iter()
            .map(|(p, w, r)| LatencyJson {
                mode: wait_name(*w),
                placement: p.name(),
                p50_us: r.p50(),
                p99_us: r.p99(),
                samples: r.len(),
                vs_baseline: ratio(r.p50(), self.lat_p50(*p, Wait::Baseline)),
                vs_wake_floor: ratio(r.p50(), self.wake_p50(*p)),
                vs_futex_floor: ratio(r.p50(), self.futex_p50(*p)),
            })
            .collect();
        let floor_json = |v: &[(Placement, latency::Rtts)]| -> Vec<WakeJson> {
            v.iter()
                .map(|(p, r)| WakeJson {
                    placement: p.name(),
                    p50_us: r.p50(),
                    p99_us: r.p99(),
                })
                .collect()
        };
        let wake_rtt = floor_json(&self.wake);
        let futex_rtt = floor_json(&self.futex);
        let copy = self
            .copy
            .iter()
            .map(|c| CopyJson {
                frame_bytes: c.frame_bytes,
                ring_frames_per_sec: c.ring_fps,
                memcpy_frames_per_sec: c.memcpy_fps,
            })
            .collect();
        let largest = self.copy.iter().max_by_key(|c| c.frame_bytes);
        JsonReport {
            throughput,
            latency,
            floors: FloorsJson {
                copy_frames_per_sec: largest.map_or(f64::NAN, |c| c.ring_fps),
                copy_frame_bytes: largest.map_or(0, |c| c.frame_bytes),
                copy,
                wake_rtt_p50_us: self.wake_p50(Placement::SameCpu),
                wake_rtt_p99_us: self
                    .wake_of(Placement::SameCpu)
                    .map_or(f64::NAN, |w| w.p99()),
                wake_rtt,
                futex_rtt,
                pwrite_ns: self.pwrite_ns,
            },
            machine: MachineJson {
                cpus: cpus(),
                loadavg_at_start: self.load.trim(),
            },
            quick: self.quick,
            seconds: self.seconds,
        }
    }

    /// The report as tables, for a person.
    pub(super) fn tables(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nThroughput per reader: the RFC 2544 rate (highest offered rate with loss < 0.1 %), and unpaced"
        );
        let _ = writeln!(
            s,
            "{:<9} {:>7} {:>6} {:>10} {:>7} {:>8} {:>10} {:>8} {:>10} {:>9}",
            "mode",
            "readers",
            "bytes",
            "Mframes/s",
            "Gbit/s",
            "loss %",
            "unpaced",
            "loss %",
            "x baseline",
            "x floor"
        );
        for r in &self.rows {
            let rate = rfc_rate(r);
            let base = self.baseline_of(r).map_or(f64::NAN, rfc_rate);
            let _ = writeln!(
                s,
                "{:<9} {:>7} {:>6} {:>10.3} {:>7.2} {:>8.4} {:>10.3} {:>8.2} {:>10.2} {:>9.2}",
                mode_name(r.mode),
                r.readers,
                r.frame_bytes,
                rate / 1e6,
                gbit(rate, r.frame_bytes),
                rfc_loss(r) * 100.0,
                r.unpaced.delivered_per_reader() / 1e6,
                r.unpaced.loss() * 100.0,
                ratio(rate, base),
                ratio(rate, self.copy_of(r.frame_bytes)),
            );
        }
        let limited: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.rfc.as_ref().is_some_and(|t| t.writer_limited()))
            .map(|r| format!("{} {}x{}", mode_name(r.mode), r.readers, r.frame_bytes))
            .collect();
        if !limited.is_empty() {
            let _ = writeln!(
                s,
                "(writer-limited, lossless at the rate the writer reached: {})",
                limited.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "(x floor: against the one-process ring copy floor below)"
        );
        if !self.lat.is_empty() {
            let _ = writeln!(
                s,
                "\nLatency: ping-pong of one 60-byte frame between two processes, on one processor or two"
            );
            let _ = writeln!(
                s,
                "{:<26} {:<9} {:>8} {:>8} {:>10} {:>8}",
                "mode", "cpus", "p50 µs", "p99 µs", "x baseline", "x floor"
            );
            for (p, r) in &self.wake {
                for (q, w, l) in self.lat.iter().filter(|(q, _, _)| q == p) {
                    let _ = writeln!(
                        s,
                        "{:<26} {:<9} {:>8.2} {:>8.2} {:>10.3} {:>8.3}",
                        wait_name(*w),
                        q.name(),
                        l.p50(),
                        l.p99(),
                        ratio(l.p50(), self.lat_p50(*q, Wait::Baseline)),
                        ratio(l.p50(), r.p50())
                    );
                }
                let _ = writeln!(
                    s,
                    "{:<26} {:<9} {:>8.2} {:>8.2}",
                    "floor: pwrite+inotify RTT",
                    p.name(),
                    r.p50(),
                    r.p99()
                );
                if let Some(f) = floor_at(&self.futex, *p) {
                    let _ = writeln!(
                        s,
                        "{:<26} {:<9} {:>8.2} {:>8.2}   (blocking_extended_futex: {:.2}x this)",
                        "floor: bare futex RTT",
                        p.name(),
                        f.p50(),
                        f.p99(),
                        ratio(self.lat_p50(*p, Wait::Futex), f.p50())
                    );
                }
            }
        }
        let _ = writeln!(s, "\nFloors (one process, no bus)");
        for c in &self.copy {
            let _ = writeln!(
                s,
                "  {:>5} B frames through a 1 MiB ring: ring code {:.2} Mframes/s, memcpy {:.2} Mframes/s",
                c.frame_bytes,
                c.ring_fps / 1e6,
                c.memcpy_fps / 1e6
            );
        }
        let _ = writeln!(
            s,
            "  wake-up pwrite on a watched file: {:.0} ns",
            self.pwrite_ns
        );
        let _ = writeln!(
            s,
            "\n{} cpus, load at start {}; {:.1} s",
            cpus(),
            self.load
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            self.seconds
        );
        s
    }

    /// The throughput curves for the plot.
    pub(super) fn plot_series(&self) -> Vec<plot::Series> {
        let mut out = Vec::new();
        let mut keys: Vec<(Mode, usize)> = self.rows.iter().map(|r| (r.mode, r.readers)).collect();
        keys.dedup();
        keys.sort_by_key(|&(m, n)| (m == Mode::Baseline, m == Mode::Lossless, n));
        keys.dedup();
        for (mode, n) in keys {
            let mut points: Vec<(f64, f64)> = self
                .rows
                .iter()
                .filter(|r| r.mode == mode && r.readers == n)
                .map(|r| (r.frame_bytes as f64, rfc_rate(r) / 1e6))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            out.push(plot::Series {
                label: format!("{} 1 -> {n}", mode_name(mode)),
                points,
                style: if mode != Mode::Baseline {
                    plot::Style::Solid(n)
                } else {
                    plot::Style::Dashed(n)
                },
            });
        }
        let mut floor: Vec<(f64, f64)> = self
            .copy
            .iter()
            .map(|c| (c.frame_bytes as f64, c.ring_fps / 1e6))
            .collect();
        floor.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.push(plot::Series {
            label: "copy floor (1 process)".into(),
            points: floor,
            style: plot::Style::Floor,
        });
        out
    }
}
