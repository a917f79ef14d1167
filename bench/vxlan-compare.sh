#!/usr/bin/env bash
# Kernel-to-kernel TCP (iperf3) and ping between two "sites" (network
# namespaces joined by a veth pair, MTU 1600, as the underlay), joined by:
#   (a) a bus per site + `shmif tap` + `shmif vxlan` (VNI 42, port 4789);
#   (b) VDE's distributed switch: `vde_plug vxvde://... tap://...` per site;
#   (c) the kernels' own vxlan devices (the upper bound).
# Each site's kernel has 10.217.0.1 / 10.217.0.2 on the overlay (MTU 1500).
#
# Usage (root; iperf3, ping, vde_plug): bash bench/vxlan-compare.sh [OUT.md]
#   SECS=5 (iperf3 seconds per run)  SHMIF=target/release/shmif
# Writes a Markdown table to OUT.md (default bench/vxlan-results.md).
set -euo pipefail
cd "$(dirname "$0")/.."
SHMIF=${SHMIF:-target/release/shmif}
SECS=${SECS:-5}
OUT=${1:-bench/vxlan-results.md}
T=$$
A=shvb-a$T
B=shvb-b$T
DIR=$(mktemp -d)
PIDS=()

for tool in ip iperf3 ping vde_plug; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
[ -x "$SHMIF" ] || { echo "build first: cargo build --release -p shmif-cli" >&2; exit 1; }

stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_all
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

ip netns add "$A"
ip netns add "$B"
ip -n "$A" link set lo up
ip -n "$B" link set lo up
ip link add ua netns "$A" mtu 1600 type veth peer name ub netns "$B" mtu 1600
ip -n "$A" addr add 10.214.0.1/24 dev ua
ip -n "$B" addr add 10.214.0.2/24 dev ub
ip -n "$A" link set ua up
ip -n "$B" link set ub up

wait_link() { # NS DEV
    for _ in $(seq 100); do
        ip -n "$1" link show "$2" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "no $2 in $1" >&2
    return 1
}

# CPU seconds (user + system) a process has used so far.
cpu_secs() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}
# cpu_report LABEL PID...: CPU each process used since cpu_mark.
declare -A CPU0
cpu_mark() { for p in "$@"; do CPU0[$p]=$(cpu_secs "$p"); done; }
cpu_report() { # LABEL "NAME NAME..." PID...
    local label=$1 line="" p i=0
    local -a names
    read -r -a names <<<"$2"
    shift 2
    for p in "$@"; do
        line+="${names[$i]//_/ } $(awk -v a="$(cpu_secs "$p")" -v b="${CPU0[$p]}" 'BEGIN { printf "%.1f", a - b }') s, "
        i=$((i + 1))
    done
    CPU_LINES+=("- $label: ${line%, } of CPU during its runs (ping, then 2 x ${SECS} s of iperf3)")
}
CPU_LINES=()

# measure NAME DEV_A DEV_B: address the overlay devices, ping, iperf3.
RESULTS=()
measure() {
    local name=$1 da=$2 db=$3
    ip -n "$A" addr add 10.217.0.1/24 dev "$da"
    ip -n "$B" addr add 10.217.0.2/24 dev "$db"
    ip -n "$A" link set "$da" mtu 1500 up
    ip -n "$B" link set "$db" mtu 1500 up
    ip netns exec "$A" ping -c 3 -i 0.2 -W 2 -q 10.217.0.2 >/dev/null || {
        echo "$name: no connectivity" >&2
        RESULTS+=("| $name | - | - | - |")
        return 0
    }
    local rtt
    rtt=$(ip netns exec "$A" ping -c 50 -i 0.02 -q 10.217.0.2 | sed -n 's/.*= \([0-9.]*\)\/\([0-9.]*\)\/.*/\2/p')
    ip netns exec "$B" iperf3 -s -1 -B 10.217.0.2 >/dev/null 2>&1 &
    local srv=$!
    sleep 0.5
    local mbit
    mbit=$(ip netns exec "$A" iperf3 -c 10.217.0.2 -t "$SECS" -f m | awk '/receiver/ {print $(NF-2)}')
    wait "$srv" 2>/dev/null || true
    # Parallel streams: more flows, same path.
    ip netns exec "$B" iperf3 -s -1 -B 10.217.0.2 >/dev/null 2>&1 &
    srv=$!
    sleep 0.5
    local mbit4
    mbit4=$(ip netns exec "$A" iperf3 -c 10.217.0.2 -t "$SECS" -P 4 -f m | awk '/SUM.*receiver/ {print $(NF-2)}')
    wait "$srv" 2>/dev/null || true
    echo "$name: ping avg $rtt ms, TCP $mbit Mbit/s, 4 streams $mbit4 Mbit/s" >&2
    RESULTS+=("| $name | $mbit | $mbit4 | $rtt |")
    eval "MBIT_${name%% *}=$mbit"
}

# (a) shmif: bus + tap + vxlan per site.
"$SHMIF" tap "$DIR/a.bus" --tap sha --netns "$A" >/dev/null 2>"$DIR/tap-a.err" &
PIDS+=($!)
"$SHMIF" tap "$DIR/b.bus" --tap shb --netns "$B" >/dev/null 2>"$DIR/tap-b.err" &
PIDS+=($!)
ip netns exec "$A" "$SHMIF" vxlan "$DIR/a.bus" --vni 42 --local 10.214.0.1 --remote 10.214.0.2 >/dev/null 2>"$DIR/vx-a.err" &
PIDS+=($!)
ip netns exec "$B" "$SHMIF" vxlan "$DIR/b.bus" --vni 42 --local 10.214.0.2 --remote 10.214.0.1 >/dev/null 2>"$DIR/vx-b.err" &
PIDS+=($!)
wait_link "$A" sha
wait_link "$B" shb
sleep 0.5
cpu_mark "${PIDS[@]}"
measure "a shmif tap + bus + shmif vxlan" sha shb
cpu_report "(a)" "tap_A tap_B vxlan_A vxlan_B" "${PIDS[@]}"
stop_all
echo "--- shmif counters (site A):" >&2
cat "$DIR/tap-a.err" "$DIR/vx-a.err" >&2
OVERRUNS=$(sed -n 's/.*bus overruns \([0-9]*\) (\([0-9]*\) bytes lost).*/\1 overruns, \2 bytes/p' "$DIR/vx-a.err" | head -1)

# (b) VDE: vde_plug between the TAP and the vxvde network, per site.
ip netns exec "$A" vde_plug "vxvde://239.0.0.1/if=ua" "tap://vda" >/dev/null 2>"$DIR/vde-a.err" &
PIDS+=($!)
ip netns exec "$B" vde_plug "vxvde://239.0.0.1/if=ub" "tap://vdb" >/dev/null 2>"$DIR/vde-b.err" &
PIDS+=($!)
wait_link "$A" vda
wait_link "$B" vdb
sleep 0.5
cpu_mark "${PIDS[@]}"
measure "b vde_plug vxvde:// + tap://" vda vdb
cpu_report "(b)" "vde_plug_A vde_plug_B" "${PIDS[@]}"
stop_all

# (c) the kernels' vxlan devices.
ip -n "$A" link add vxa type vxlan id 42 local 10.214.0.1 remote 10.214.0.2 dstport 4789 dev ua
ip -n "$B" link add vxb type vxlan id 42 local 10.214.0.2 remote 10.214.0.1 dstport 4789 dev ub
measure "c kernel vxlan devices" vxa vxb

ratio() { awk -v x="$1" -v y="$2" 'BEGIN { if (y > 0) printf "%.2f", x / y; else print "-" }'; }
{
    echo "# VXLAN between two sites: shmif vs VDE vs the kernel"
    echo
    echo "\`bash bench/vxlan-compare.sh\` on $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d);"
    echo "iperf3 TCP for ${SECS} s per run, ping 50 x 20 ms; underlay a veth pair (MTU 1600),"
    echo "overlay MTU 1500. One run; the machine was shared with other work."
    echo
    echo "| path | TCP Mbit/s | TCP, 4 streams, Mbit/s | ping avg ms |"
    echo "| --- | ---: | ---: | ---: |"
    for r in "${RESULTS[@]}"; do echo "$r"; done
    echo
    echo "(a) / (b) = $(ratio "${MBIT_a:-0}" "${MBIT_b:-0}"); (a) / (c) = $(ratio "${MBIT_a:-0}" "${MBIT_c:-0}") (single-stream TCP)."
    echo
    for l in "${CPU_LINES[@]}"; do echo "$l"; done
    echo "- (a) the sending site's shmif vxlan fell behind the bus: ${OVERRUNS:-?} lost to ring overruns (TCP retransmits them)."
} > "$OUT"
cat "$OUT"
