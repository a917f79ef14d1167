#!/usr/bin/env bash
# Kernel-to-kernel TCP throughput and ping RTT between two network
# namespaces, connected three ways in one run:
#   shmif  - `shmif tap` in each namespace, bridged over one shmif bus
#   vde    - VDE: `vde_switch` with a `vde_plug2tap` in each namespace
#   veth   - a bare veth pair (the upper bound: no user space at all)
#   jumbo  - `shmif tap --mtu 65000` in each namespace over one extended
#            bus (`shmif create`, 64 MiB, 65,549-byte frames)
# and the ratios between them.
#
# Run as root:   bash bench/compare.sh      (builds `shmif` if needed)
# Needs: ip (iproute2), iperf3, ping, python3, vde2 (vde_switch,
# vde_plug2tap), /dev/net/tun. On Debian: apt-get install -y vde2 iperf3
# iputils-ping.
# Settings (environment): SHMIF (the shmif binary), SECS (iperf3 seconds,
# default 10), PINGS (default 500), JSON=1 (print one JSON object too).
#
# Traffic stays inside the namespaces this script makes, on private test
# subnets 10.231.{1,2,3}.0/24; everything it creates (namespaces, devices,
# processes, files) is removed on exit, also on errors and Ctrl-C.

set -euo pipefail

SECS=${SECS:-10}
PINGS=${PINGS:-500}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHMIF=${SHMIF:-$ROOT/target/release/shmif}
TAG=shc$$
NS_A=${TAG}a
NS_B=${TAG}b
WORK=$(mktemp -d /dev/shm/shmif-compare.XXXXXX)
PIDS=()

die() { echo "compare.sh: $*" >&2; exit 1; }

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    for f in "$WORK"/*.pid; do if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null; fi; done
    ip netns del "$NS_A" 2>/dev/null
    ip netns del "$NS_B" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "run as root (namespaces and TAP devices)"
for t in ip iperf3 ping python3 vde_switch vde_plug2tap; do
    command -v "$t" >/dev/null || die "$t is missing (Debian: apt-get install -y iproute2 iperf3 iputils-ping python3 vde2)"
done
[ -c /dev/net/tun ] || die "/dev/net/tun is missing"
if [ ! -x "$SHMIF" ]; then
    (cd "$ROOT" && cargo build --release -q -p shmif-cli) || die "cannot build shmif"
fi

in_a() { ip netns exec "$NS_A" "$@"; }
in_b() { ip netns exec "$NS_B" "$@"; }

fresh_namespaces() {
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip -n "$NS_A" link set lo up
    ip -n "$NS_B" link set lo up
}

stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    for f in "$WORK"/*.pid; do
        if [ -f "$f" ]; then
            kill "$(cat "$f")" 2>/dev/null || true
            rm -f "$f"
        fi
    done
    return 0
}

# wait_dev NS DEV: until the device exists in the namespace (10 s).
wait_dev() {
    for _ in $(seq 100); do
        ip -n "$1" link show "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "device $2 did not appear in namespace $1"
}

# address DEV_A DEV_B NET [MTU]: addresses NET.1 and NET.2, links up,
# MTU 1500 unless given.
address() {
    ip -n "$NS_A" link set "$1" mtu "${4:-1500}" up
    ip -n "$NS_B" link set "$2" mtu "${4:-1500}" up
    ip -n "$NS_A" addr add "$3.1/24" dev "$1"
    ip -n "$NS_B" addr add "$3.2/24" dev "$2"
    # Until the first ping gets through (ARP, links up).
    for _ in $(seq 50); do
        in_a ping -c 1 -W 1 "$3.2" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "no ping across $1 <-> $2"
}

# measure NAME NET: ping RTTs (median, p99) and iperf3 TCP throughput
# from A to B; appends "NAME rtt_p50_us rtt_p99_us gbit" to $WORK/results.
measure() {
    local name=$1 net=$2
    in_a ping -c "$PINGS" -i 0.002 -q "$net.2" >/dev/null 2>&1 || true # warm up
    in_a ping -c "$PINGS" -i 0.002 "$net.2" >"$WORK/ping-$name.txt" 2>&1 || die "$name: ping failed"
    in_b iperf3 -s -1 -B "$net.2" >/dev/null 2>&1 &
    PIDS+=($!)
    sleep 0.5
    in_a iperf3 -c "$net.2" -t "$SECS" -J >"$WORK/iperf-$name.json" || die "$name: iperf3 failed"
    python3 - "$name" "$WORK/ping-$name.txt" "$WORK/iperf-$name.json" >>"$WORK/results" <<'PY'
import json, re, sys
name, ping, iperf = sys.argv[1:4]
rtts = sorted(float(m) for m in re.findall(r"time=([0-9.]+) ms", open(ping).read()))
if not rtts:
    sys.exit(f"{name}: no ping replies")
q = lambda p: rtts[min(len(rtts) - 1, round((len(rtts) - 1) * p))] * 1000
bps = json.load(open(iperf))["end"]["sum_received"]["bits_per_second"]
print(name, f"{q(0.5):.1f}", f"{q(0.99):.1f}", f"{bps / 1e9:.3f}")
PY
    tail -1 "$WORK/results" | awk '{printf "  %-6s ping p50 %s µs, p99 %s µs; TCP %s Gbit/s\n", $1, $2, $3, $4}'
}

: >"$WORK/results"
echo "compare.sh: TCP ${SECS} s (iperf3) and $PINGS pings between two namespaces; $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg)"

# (a) shmif: a TAP in each namespace, both bridged to one bus.
fresh_namespaces
"$SHMIF" tap "$WORK/bus" --tap shm-a --netns "$NS_A" >"$WORK/tap-a.log" 2>&1 &
PIDS+=($!)
"$SHMIF" tap "$WORK/bus" --tap shm-b --netns "$NS_B" >"$WORK/tap-b.log" 2>&1 &
PIDS+=($!)
wait_dev "$NS_A" shm-a
wait_dev "$NS_B" shm-b
address shm-a shm-b 10.231.1
measure shmif 10.231.1
stop_all

# (b) VDE: one switch, a vde_plug2tap in each namespace.
fresh_namespaces
vde_switch -d -s "$WORK/vde.ctl" -p "$WORK/vde_switch.pid" -M "$WORK/vde.mgmt" >/dev/null
for _ in $(seq 50); do [ -e "$WORK/vde.ctl/ctl" ] && break; sleep 0.1; done
in_a vde_plug2tap -d -P "$WORK/plug-a.pid" -s "$WORK/vde.ctl" vde-a
in_b vde_plug2tap -d -P "$WORK/plug-b.pid" -s "$WORK/vde.ctl" vde-b
wait_dev "$NS_A" vde-a
wait_dev "$NS_B" vde-b
address vde-a vde-b 10.231.2
measure vde 10.231.2
stop_all

# (c) a veth pair: the kernel alone.
fresh_namespaces
ip link add veth-a netns "$NS_A" type veth peer name veth-b netns "$NS_B"
address veth-a veth-b 10.231.3
measure veth 10.231.3
stop_all

# (d) shmif on an extended bus with jumbo frames: a TAP of MTU 65000 in
# each namespace.
fresh_namespaces
"$SHMIF" create "$WORK/xbus" --size 64M --max-frame 65549 >/dev/null 2>&1
"$SHMIF" tap "$WORK/xbus" --tap shx-a --mtu 65000 --netns "$NS_A" >"$WORK/tapx-a.log" 2>&1 &
PIDS+=($!)
"$SHMIF" tap "$WORK/xbus" --tap shx-b --mtu 65000 --netns "$NS_B" >"$WORK/tapx-b.log" 2>&1 &
PIDS+=($!)
wait_dev "$NS_A" shx-a
wait_dev "$NS_B" shx-b
address shx-a shx-b 10.231.4 65000
measure jumbo 10.231.4
stop_all

python3 - "$WORK/results" <<'PY'
import json, os, sys
r = {l.split()[0]: [float(x) for x in l.split()[1:]] for l in open(sys.argv[1])}
s, v, e, j = r["shmif"], r["vde"], r["veth"], r["jumbo"]
print()
print(f"{'':8}{'ping p50 µs':>12}{'ping p99 µs':>12}{'TCP Gbit/s':>12}")
for k in ("shmif", "vde", "veth", "jumbo"):
    print(f"{k:8}{r[k][0]:>12.1f}{r[k][1]:>12.1f}{r[k][2]:>12.3f}")
print()
print(f"shmif / vde : TCP {s[2] / v[2]:.2f}x, ping p50 {s[0] / v[0]:.2f}x")
print(f"shmif / veth: TCP {s[2] / e[2]:.2f}x, ping p50 {s[0] / e[0]:.2f}x")
print(f"jumbo / veth: TCP {j[2] / e[2]:.2f}x, ping p50 {j[0] / e[0]:.2f}x (extended bus, MTU 65000)")
print(f"jumbo / shmif: TCP {j[2] / s[2]:.2f}x")
if os.environ.get("JSON") == "1":
    print(json.dumps({k: {"ping_p50_us": x[0], "ping_p99_us": x[1], "tcp_gbit_per_sec": x[2]} for k, x in r.items()}))
PY
