//! `shmif bench`: a smoke run prints one JSON object with the figures the
//! report promises (no timing is asserted: benchmarks only print).

use serde_json::Value;
use std::process::Command;

fn num(v: &Value, key: &str) -> f64 {
    v.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

#[test]
fn smoke_run_prints_json_with_the_required_keys() {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let svg = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shmif"))
        .args(["bench", "--smoke", "--json", "--dir"])
        .arg(&dir)
        .arg("--svg")
        .arg(svg.path())
        .output()
        .expect("run shmif bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shmif bench failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));

    let rows = v["throughput"].as_array().expect("throughput array");
    assert!(!rows.is_empty());
    for mode in ["fast", "baseline", "lossless"] {
        assert!(
            rows.iter().any(|r| r["mode"] == mode),
            "no {mode} throughput row"
        );
    }
    // The lossless rows run on an extended bus whose writer waits for its
    // readers: even unpaced, nothing is lost.
    for r in rows.iter().filter(|r| r["mode"] == "lossless") {
        assert_eq!(num(r, "unpaced_loss_ratio"), 0.0, "{r}");
        assert_eq!(num(r, "unpaced_overruns"), 0.0, "{r}");
        assert!(r["rfc2544_found"].as_bool().unwrap(), "{r}");
        // The median of three unpaced trials (one is a lottery here).
        assert_eq!(num(r, "trials"), 3.0, "{r}");
    }
    for r in rows {
        assert!(num(r, "readers") >= 1.0);
        assert!(num(r, "frame_bytes") >= 28.0);
        assert!(num(r, "frames_per_sec_per_reader") >= 0.0);
        let loss = num(r, "loss_ratio");
        assert!((0.0..=1.0).contains(&loss), "loss {loss}");
        num(r, "unpaced_frames_per_sec_per_reader");
        num(r, "unpaced_loss_ratio");
    }

    let lat = v["latency"].as_array().expect("latency array");
    for mode in [
        "blocking",
        "blocking_extended_futex",
        "busy_poll",
        "baseline",
    ] {
        let row = lat
            .iter()
            .find(|r| r["mode"] == mode)
            .unwrap_or_else(|| panic!("no {mode} latency row"));
        let (p50, p99) = (num(row, "p50_us"), num(row, "p99_us"));
        assert!(p50 > 0.0 && p99 >= p50, "{mode}: p50 {p50} p99 {p99}");
    }

    let floors = &v["floors"];
    assert!(num(floors, "copy_frames_per_sec") > 0.0);
    assert!(num(floors, "wake_rtt_p50_us") > 0.0);
    let futex = floors["futex_rtt"].as_array().expect("futex_rtt array");
    assert!(!futex.is_empty(), "no bare futex floor");
    for f in futex {
        assert!(num(f, "p50_us") > 0.0, "{f}");
    }

    let plot = std::fs::read_to_string(svg.path()).unwrap();
    assert!(plot.contains("<svg"), "no SVG written");
}

#[test]
fn sizes_over_1514_are_measured_on_the_extended_bus_only() {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let out = Command::new(env!("CARGO_BIN_EXE_shmif"))
        .args([
            "bench",
            "--quick",
            "--only-throughput",
            "--trial-ms",
            "30",
            "--readers",
            "1",
            "--sizes",
            "65535",
            "--json",
            "--dir",
        ])
        .arg(&dir)
        .output()
        .expect("run shmif bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shmif bench failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["throughput"].as_array().expect("throughput array");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["mode"], "lossless");
    assert_eq!(num(&rows[0], "frame_bytes"), 65535.0);
    assert!(num(&rows[0], "frames_per_sec_per_reader") > 0.0);
    assert_eq!(num(&rows[0], "unpaced_loss_ratio"), 0.0);
    let o = Command::new(env!("CARGO_BIN_EXE_shmif"))
        .args(["bench", "--sizes", "65536"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("28 to 65535"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
