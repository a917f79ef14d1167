#!/usr/bin/env bash
# Ping-pong latency with this (virtual) machine's idle processors halting at
# once, as booted, and polling for a while before they halt: the two-CPU
# round trips of `shmif bench` are mostly the wake-up of a halted vCPU
# unless the guest polls (`haltpoll.guest_halt_poll_ns`). Alternates the two
# settings run by run and restores the original one on exit. Root, and a
# guest kernel with the haltpoll cpuidle driver.
#
#   sudo bash bench/haltpoll-latency.sh [RUNS] [POLL_NS]   (defaults: 3, 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
POLL="${2:-200000}"
P=/sys/module/haltpoll/parameters/guest_halt_poll_ns
if [ ! -w "$P" ]; then
    echo "haltpoll-latency: $P is missing or not writable (needs root and the haltpoll cpuidle driver)" >&2
    exit 1
fi
ORIG="$(cat "$P")"
trap 'echo "$ORIG" >"$P"' EXIT
cargo build -q --release -p shmif-cli --bin shmif
S="$PWD/target/release/shmif"
D="$(mktemp -d)"
trap 'echo "$ORIG" >"$P"; rm -rf "$D"' EXIT
echo "# ping-pong p50 (µs) with idle vCPUs halting at once ($ORIG ns of polling) and after $POLL ns of polling"
echo
echo "$(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| run | halt poll ns | placement | pwrite+inotify floor | futex floor | blocking, v3 bus | blocking, extended bus (futex) | extended / futex floor | extended / pwrite floor |"
echo "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for i in $(seq "$RUNS"); do
    for ns in "$ORIG" "$POLL"; do
        echo "$ns" >"$P"
        "$S" bench --only-latency --json >"$D/lat.json" 2>/dev/null
        python3 - "$D/lat.json" "$i" "$ns" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
wake = {x["placement"]: x["p50_us"] for x in d["floors"]["wake_rtt"]}
futex = {x["placement"]: x["p50_us"] for x in d["floors"]["futex_rtt"]}
lat = {(x["mode"], x["placement"]): x for x in d["latency"]}
for p in ("same_cpu", "two_cpus"):
    e = lat[("blocking_extended_futex", p)]
    v3 = lat[("blocking", p)]["p50_us"]
    print(f"| {sys.argv[2]} | {sys.argv[3]} | {p} | {wake[p]:.2f} | {futex[p]:.2f} | {v3:.2f} | "
          f"{e['p50_us']:.2f} | {e['p50_us'] / futex[p]:.2f}x | {e['p50_us'] / wake[p]:.2f}x |")
PY
    done
done
