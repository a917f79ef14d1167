//! A benchmark, not a test (ignored unless asked for): two real QEMU
//! guests on `-netdev vde`, first through `shmif vde` and its bus, then
//! through VDE's own `vde_switch`, alternating, in one run: ping round
//! trips and TCP (busybox `httpd` to `wget`) between the guests.
//!
//! ```text
//! cargo test --release -p shmif-cli --test guest_bench -- --ignored --nocapture
//! SHMIF_GUEST_BENCH_REPS=3 SHMIF_GUEST_BENCH_MIB=64 cargo test ...   # more, longer
//! ```
//!
//! Prints a Markdown table (the figures in BENCHMARKS.md come from it)
//! and the CPU time each switch used, which shows what bounds the
//! figures: TCG guests emulate every instruction of their network stack
//! and driver, the switch moves frames in microseconds.

mod common;
mod guest;

use common::{Proc, Stream};
use guest::{Guest, Spec};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The commands of the guest that serves a file of `mib` MiB over HTTP.
fn server_script(mib: u32) -> String {
    format!(
        "mkdir -p /www && dd if=/dev/zero of=/www/f bs=1048576 count={mib} 2>/dev/null\n\
         httpd -p 8080 -h /www && echo SERVING\n\
         sleep 900\n"
    )
}

/// The commands of the guest that measures: `PING-RTT min/avg/max` and
/// `XFER <seconds>` lines, then `BENCH-DONE`.
fn client_script(server: &str, transfers: u32) -> String {
    format!(
        "for i in $(seq 120); do ping -c 1 -W 1 {server} >/dev/null 2>&1 && break; done\n\
         for i in $(seq 60); do wget -q -O /dev/null http://{server}:8080/ 2>/dev/null; \
         [ $? -ne 4 ] && break; sleep 0.5; done\n\
         echo \"PING-RTT $(ping -c 50 -i 0.1 {server} | tail -n 1 | cut -d= -f2)\"\n\
         for i in $(seq {transfers}); do\n\
           t0=$(cut -d' ' -f1 /proc/uptime)\n\
           wget -q -O /dev/null http://{server}:8080/f; rc=$?\n\
           t1=$(cut -d' ' -f1 /proc/uptime)\n\
           echo \"XFER $t0 $t1 $rc\"\n\
         done\n\
         echo BENCH-DONE\n"
    )
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parens.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// One run's figures.
struct Figures {
    rtt: String,
    mbit: Vec<f64>,
    switch_cpu: f64,
    guests_cpu: f64,
    wall: f64,
}

/// The switch under test, running.
enum Switch {
    Shmif(Proc),
    Vde(u32),
}

impl Switch {
    fn pid(&self) -> u32 {
        match self {
            Switch::Shmif(p) => p.pid(),
            Switch::Vde(pid) => *pid,
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Switch::Vde(pid) = self {
            if let Some(pid) = rustix::process::Pid::from_raw(*pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }
}

fn start_switch(kind: &str, dir: &Path, bus: &Path) -> Switch {
    if kind == "shmif" {
        let mut p = Proc::shmif(
            "vde",
            bus,
            &[dir.to_str().unwrap()],
            Stream::Lines,
            Stream::Lines,
        );
        p.out()
            .expect_containing("serving", Duration::from_secs(10));
        return Switch::Shmif(p);
    }
    let pidfile = dir.with_extension("pid");
    let st = Command::new("vde_switch")
        .arg("-s")
        .arg(dir)
        .arg("-d")
        .arg("-p")
        .arg(&pidfile)
        .status()
        .expect("vde_switch");
    assert!(st.success(), "vde_switch: {st:?}");
    let pid = common::wait_for(Duration::from_secs(5), "vde_switch's pid file", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    });
    common::wait_for(Duration::from_secs(5), "vde_switch's ctl", || {
        dir.join("ctl").exists().then_some(())
    });
    Switch::Vde(pid)
}

fn run_once(kernel: &guest::Kernel, kind: &str, mib: u32, transfers: u32, n: usize) -> Figures {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sw");
    let bus = tmp.path().join("bus");
    let sw = start_switch(kind, &dir, &bus);
    let server = server_script(mib);
    let client = client_script("10.213.7.1", transfers);
    let netdev = format!("vde,sock={}", dir.display());
    let specs = [
        Spec {
            name: &format!("server-{kind}-{n}"),
            mac: 0x71,
            ip: "10.213.7.1/24",
            netdev: netdev.clone(),
            script: &server,
        },
        Spec {
            name: &format!("client-{kind}-{n}"),
            mac: 0x72,
            ip: "10.213.7.2/24",
            netdev,
            script: &client,
        },
    ];
    let mut guests: Vec<Guest> = specs
        .iter()
        .map(|s| Guest::start(kernel, s, tmp.path()))
        .collect();
    for g in &mut guests {
        g.wait_up();
    }
    guests[0].expect("SERVING", Duration::from_secs(60));
    let rtt = guests[1].expect("PING-RTT", Duration::from_secs(180));
    let cpu0 = cpu_seconds(sw.pid());
    let g0: f64 = guests.iter().map(|g| cpu_seconds(g.proc.pid())).sum();
    let t0 = std::time::Instant::now();
    let mut mbit = Vec::new();
    for _ in 0..transfers {
        let l = guests[1].expect("XFER", Duration::from_secs(300));
        let f: Vec<&str> = l.split_whitespace().collect();
        let (a, b): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        assert_eq!(f[3], "0", "wget failed: {l}");
        mbit.push(f64::from(mib) * 8.0 * 1.048_576 / (b - a).max(0.01));
    }
    let wall = t0.elapsed().as_secs_f64();
    let switch_cpu = cpu_seconds(sw.pid()) - cpu0;
    let guests_cpu = guests
        .iter()
        .map(|g| cpu_seconds(g.proc.pid()))
        .sum::<f64>()
        - g0;
    guests[1].expect("BENCH-DONE", Duration::from_secs(60));
    drop(guests);
    drop(sw);
    Figures {
        rtt: rtt.trim_start_matches("PING-RTT").trim().to_string(),
        mbit,
        switch_cpu,
        guests_cpu,
        wall,
    }
}

#[test]
#[ignore = "a benchmark: cargo test --release -p shmif-cli --test guest_bench -- --ignored --nocapture"]
fn guest_to_guest_ping_and_tcp_through_shmif_vde_and_vde_switch() {
    let test = "guest_to_guest_ping_and_tcp_through_shmif_vde_and_vde_switch";
    let Some(kernel) = guest::kernel(test) else {
        return;
    };
    if Command::new("vde_switch").arg("-v").output().is_err() {
        guest::skip::<()>(test, "vde_switch is not installed (apt-get install vde2)");
        return;
    }
    let env = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let reps = env("SHMIF_GUEST_BENCH_REPS", 2);
    let mib = env("SHMIF_GUEST_BENCH_MIB", 48);
    let transfers = 3;
    println!(
        "\n| run | switch | ping rtt min/avg/max (ms) | TCP Mbit/s ({transfers} × {mib} MiB) | \
         switch CPU s | guests' CPU s | wall s |"
    );
    println!("| ---: | --- | --- | --- | ---: | ---: | ---: |");
    let mut best: Vec<(&str, f64)> = Vec::new();
    for n in 0..reps {
        for kind in ["shmif", "vde_switch"] {
            let f = run_once(&kernel, kind, mib, transfers, n as usize);
            let rates: Vec<String> = f.mbit.iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.1} |",
                n + 1,
                if kind == "shmif" {
                    "shmif vde + bus"
                } else {
                    "vde_switch"
                },
                f.rtt,
                rates.join(", "),
                f.switch_cpu,
                f.guests_cpu,
                f.wall
            );
            let mut sorted = f.mbit.clone();
            sorted.sort_by(f64::total_cmp);
            best.push((kind, sorted[sorted.len() / 2]));
        }
    }
    let median = |k: &str| {
        let mut v: Vec<f64> = best.iter().filter(|b| b.0 == k).map(|b| b.1).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median("shmif"), median("vde_switch"));
    println!(
        "\nTCP, median of the runs' medians: shmif vde {a:.0} Mbit/s, vde_switch {b:.0} Mbit/s: \
         {:.2}x",
        a / b
    );
}
