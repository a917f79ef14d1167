#!/usr/bin/env bash
# `shmif host` <-> `shmif host` (tcp-send into a --tcp-sink) on a NetBSD v3
# bus and on a jumbo extended bus (64 MiB, frames up to 65,549 bytes), the
# two alternating run by run; prints each run and the medians.
#
#   bash bench/host-jumbo.sh [MEGABYTES] [REPS]     (defaults: 200 MiB, 5 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
MB="${1:-200}"
REPS="${2:-5}"
cargo build -q --release -p shmif-cli --bin shmif
S="$PWD/target/release/shmif"
D="$(mktemp -d /dev/shm/shmif-jumbo.XXXXXX)"
H=""
cleanup() { [ -n "$H" ] && kill "$H" 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
run() { # bus -> MiB/s
    rm -f "$D/$1"
    [ "$1" = ext ] && "$S" create "$D/ext" --size 64M --max-frame 65549 >/dev/null 2>&1
    "$S" host "$D/$1" --ip 10.0.0.1/24 --tcp-sink 9000 >"$D/host.out" 2>&1 &
    H=$!
    for _ in $(seq 100); do grep -q " up on " "$D/host.out" 2>/dev/null && break; sleep 0.05; done
    "$S" tcp-send "$D/$1" --ip 10.0.0.2/24 10.0.0.1:9000 --megabytes "$MB" | awk '{print $(NF-1)}'
    kill -INT "$H"; wait "$H" 2>/dev/null || true; H=""
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "# shmif host <-> shmif host TCP, v3 bus vs jumbo extended bus"
echo
echo "$(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $MB MiB per run"
echo
echo "| run | v3 bus MiB/s | extended bus (65,549-byte frames) MiB/s |"
echo "| ---: | ---: | ---: |"
: >"$D/v3.txt"; : >"$D/ext.txt"
for i in $(seq "$REPS"); do
    a="$(run v3)"; b="$(run ext)"
    echo "$a" >>"$D/v3.txt"; echo "$b" >>"$D/ext.txt"
    echo "| $i | $a | $b |"
done
a="$(median <"$D/v3.txt")"; b="$(median <"$D/ext.txt")"
echo
echo "Medians: v3 $a MiB/s, extended $b MiB/s: $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b / a}')x"
