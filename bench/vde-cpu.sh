#!/usr/bin/env bash
# Where the time goes between two VDE clients: CPU per frame of the
# sending client, of the switch (`shmif vde` + its bus, or vde_switch) and
# of the receiving client, the switch's split into user and kernel time,
# and frames/s, for clients that batch 64 frames per sendmmsg/recvmmsg
# (`crates/shmif-cli/examples/vde_flood.rs`), at 64 and 1514 bytes.
#
#   bash bench/vde-cpu.sh [COUNT] [REPS]      (defaults: 400000 frames, 2 runs)
#
# Two processors run three busy processes here, so frames/s follows the
# total CPU per frame; the switch's kernel share is its two datagram system
# calls per frame (one receive, one send), which any VDE switch makes.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-400000}"
REPS="${2:-2}"
command -v vde_switch >/dev/null || { echo "vde_switch is not installed (apt-get install vde2)"; exit 1; }
cargo build -q --release -p shmif-cli --bin shmif --example vde_flood
S="$PWD/target/release/shmif"
F="$PWD/target/release/examples/vde_flood"
TCK="$(getconf CLK_TCK)"
T="$(mktemp -d)"
. bench/vde-switch.sh
cleanup() { [ -n "$SW_PID" ] && kill "$SW_PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
# user and system ticks of a process so far
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# user + system seconds of a command and its children, from bash's `times`
timed() { # out-file cmd... : runs cmd, writes "user+sys seconds" of it to out-file
    local out="$1"; shift
    ( "$@"; times >"$out.times" )
    awk 'NR == 2 { gsub(/[ms]/, " "); print ($1 * 60 + $2) + ($3 * 60 + $4) }' "$out.times" >"$out"
}
echo "| switch | size (B) | frames/s | received | sender µs/frame | switch µs/frame (user + kernel) | receiver µs/frame | total µs/frame |"
echo "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
for _ in $(seq "$REPS"); do for size in 64 1514; do for sw in shmif vde_switch; do
    start_switch "$sw"
    timed "$T/rt" timeout 120 "$F" recv "$T/sw" "$COUNT" 64 >"$T/recv.out" &
    R=$!
    for _ in $(seq 100); do grep -q attached "$T/recv.out" 2>/dev/null && break; sleep 0.02; done
    read -r u0 s0 < <(ticks "$SW_PID")
    timed "$T/st" timeout 120 "$F" send "$T/sw" "$size" "$COUNT" 64 >/dev/null || true
    wait "$R" || true
    read -r u1 s1 < <(ticks "$SW_PID")
    python3 - "$sw" "$size" "$T/recv.out" "$T/st" "$T/rt" "$u0" "$s0" "$u1" "$s1" "$TCK" <<'PY'
import sys
sw, size, recv, st, rt, u0, s0, u1, s1, tck = sys.argv[1:]
line = next((l for l in open(recv) if l.startswith("frames")), None)
if line is None:
    print(f"| {sw} | {size} | (no result) | | | | | |")
    sys.exit()
f = line.split()
got, fps = int(f[1]), float(f[5])
us = lambda s: s / max(got, 1) * 1e6
tck = int(tck)
user, kern = (int(u1) - int(u0)) / tck, (int(s1) - int(s0)) / tck
snd, rcv = float(open(st).read()), float(open(rt).read())
print(f"| {sw} | {size} | {fps:,.0f} | {got:,} | {us(snd):.2f} | {us(user + kern):.2f} ({us(user):.2f} + {us(kern):.2f}) "
      f"| {us(rcv):.2f} | {us(snd + rcv + user + kern):.2f} |")
PY
    stop_switch
done; done; done
echo
echo "$(date -u +%FT%TZ), $(nproc) cores ($(uname -r)), $COUNT frames per run, clients batching 64 frames per call"
