#!/usr/bin/env bash
# Frames per second between two VDE clients through `shmif vde` (+ its bus)
# and through vde_switch, at 64 and 1514 bytes; loss counted.
#
#   bash bench/vde-compare.sh [COUNT] [REPS]      (defaults: 300000 frames, 3 runs)
#
# Two ways of attaching the clients:
#  - direct: vde_flood (crates/shmif-cli/examples/vde_flood.rs) speaks the
#    libvdeplug protocol itself: one blocking send(2) per frame, one recv(2)
#    per frame on the other side;
#  - vde_plug: two real `vde_plug DIR` processes, fed and drained in VDE
#    stream form through pipes by vde_flood stream-send / stream-recv.
# The sender is paced by the switch (blocking sends), so a switch that
# cannot keep up shows as lower frames/s; loss is frames sent but never
# received. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-300000}"
REPS="${2:-3}"
cargo build -q --release -p shmif-cli --bin shmif --example vde_flood
S="$PWD/target/release/shmif"
F="$PWD/target/release/examples/vde_flood"
command -v vde_switch >/dev/null || { echo "vde_switch is not installed (apt-get install vde2)"; exit 1; }
T="$(mktemp -d)"
SW_PID=""
cleanup() { [ -n "$SW_PID" ] && kill "$SW_PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

start_switch() { # shmif|vde_switch
    rm -rf "$T/sw" "$T/bus"
    if [ "$1" = shmif ]; then
        "$S" vde "$T/bus" "$T/sw" >"$T/sw.out" 2>"$T/sw.err" &
        SW_PID=$!
        for _ in $(seq 100); do grep -q serving "$T/sw.out" 2>/dev/null && break; sleep 0.05; done
    else
        vde_switch -s "$T/sw" -d -p "$T/sw.pid" >/dev/null 2>&1
        for _ in $(seq 100); do [ -S "$T/sw/ctl" ] && [ -s "$T/sw.pid" ] && break; sleep 0.05; done
        SW_PID="$(cat "$T/sw.pid")"
    fi
}
stop_switch() { kill "$SW_PID" 2>/dev/null || true; wait "$SW_PID" 2>/dev/null || true; SW_PID=""; sleep 0.2; }

run_direct() { # size -> "fps received"
    timeout 60 "$F" recv "$T/sw" "$COUNT" >"$T/recv.out" &
    local r=$!
    for _ in $(seq 100); do grep -q attached "$T/recv.out" 2>/dev/null && break; sleep 0.02; done
    timeout 60 "$F" send "$T/sw" "$1" "$COUNT" || true
    wait "$r"
    awk '/^frames/ {print $6, $2}' "$T/recv.out"
}

run_plug() { # size -> "fps received"
    # The receiving vde_plug's stdin: a FIFO held open until the end (at
    # EOF on stdin vde_plug leaves).
    rm -f "$T/in"; mkfifo "$T/in"
    timeout 90 vde_plug "$T/sw" <"$T/in" | timeout 60 "$F" stream-recv "$COUNT" >"$T/recv.out" &
    local r=$!
    exec 3>"$T/in"
    sleep 0.5
    timeout 60 "$F" stream-send "$1" "$COUNT" | timeout 60 vde_plug "$T/sw" >/dev/null || true
    wait "$r" 2>/dev/null || true
    exec 3>&-
    wait 2>/dev/null || true
    awk '/^frames/ {print $6, $2}' "$T/recv.out"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "# shmif vde vs vde_switch: frames/s between two VDE clients"
echo
echo "$(date -u +%FT%TZ), $(nproc) cores ($(uname -r)), $COUNT frames per run, median of $REPS runs;"
echo "vde_switch: $(vde_switch -v 2>&1 | head -n1 || true)"
echo
echo "| clients | size (B) | vde_switch frames/s | shmif vde frames/s | ratio | lost (vde_switch / shmif), worst run |"
echo "| --- | ---: | ---: | ---: | ---: | --- |"
for mode in direct plug; do
    for size in 64 1514; do
        declare -A fps=() lost=()
        for sw in vde_switch shmif; do
            : >"$T/fps"; worst=0
            for _ in $(seq "$REPS"); do
                start_switch "$sw"
                read -r f got < <(run_"$mode" "$size")
                stop_switch
                echo "$f" >>"$T/fps"
                l=$((COUNT - got)); [ "$l" -gt "$worst" ] && worst=$l
            done
            fps[$sw]="$(median <"$T/fps")"
            lost[$sw]="$worst"
        done
        ratio="$(awk -v a="${fps[shmif]}" -v b="${fps[vde_switch]}" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')"
        name=$([ "$mode" = direct ] && echo "vde_flood (own client)" || echo "vde_plug processes")
        echo "| $name | $size | ${fps[vde_switch]} | ${fps[shmif]} | ${ratio}x | ${lost[vde_switch]} / ${lost[shmif]} |"
    done
done
