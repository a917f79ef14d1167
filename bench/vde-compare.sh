#!/usr/bin/env bash
# Frames per second between two VDE clients through `shmif vde` (+ its bus)
# and through vde_switch, at 64 and 1514 bytes; loss counted.
#
#   bash bench/vde-compare.sh [COUNT] [REPS]      (defaults: 300000 frames, 3 runs)
#   MODES="direct batched" bash bench/vde-compare.sh ...   (some rows only)
#
# Three ways of attaching the clients:
#  - direct: vde_flood (crates/shmif-cli/examples/vde_flood.rs) speaks the
#    libvdeplug protocol itself: one blocking send(2) per frame, one recv(2)
#    per frame on the other side (as QEMU's -netdev vde does);
#  - batched: the same client with 64 frames per sendmmsg(2)/recvmmsg(2),
#    so that the clients are faster than the switch and the switch is what
#    is measured;
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
. bench/vde-switch.sh
cleanup() { [ -n "$SW_PID" ] && kill "$SW_PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

run_direct() { # size [batch] -> "fps received"
    local batch="${2:-1}"
    timeout 60 "$F" recv "$T/sw" "$COUNT" "$batch" >"$T/recv.out" &
    local r=$!
    for _ in $(seq 100); do grep -q attached "$T/recv.out" 2>/dev/null && break; sleep 0.02; done
    timeout 60 "$F" send "$T/sw" "$1" "$COUNT" "$batch" || true
    wait "$r"
    awk '/^frames/ {print $6, $2}' "$T/recv.out"
}

run_batched() { run_direct "$1" 64; }

run_plug() { # size -> "fps received"
    # The receiving vde_plug's stdin: a FIFO held open until the end (at
    # EOF on stdin vde_plug leaves).
    rm -f "$T/in"; mkfifo "$T/in"
    timeout 90 vde_plug "$T/sw" <"$T/in" | timeout 60 "$F" stream-recv "$COUNT" >"$T/recv.out" &
    local r=$!
    exec 3>"$T/in"
    sleep 0.5
    timeout 60 "$F" stream-send "$1" "$COUNT" | timeout 60 vde_plug "$T/sw" >/dev/null || true
    # Wait for the counter's result (waiting for the pipeline would wait
    # for the receiving vde_plug too, which notices its closed stdin only
    # when it has something to write), then end that vde_plug.
    for _ in $(seq 1200); do grep -q '^frames' "$T/recv.out" 2>/dev/null && break; sleep 0.05; done
    exec 3>&-
    pkill -f "vde_plug $T/sw" 2>/dev/null || true
    wait "$r" 2>/dev/null || true
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
for mode in ${MODES:-direct batched plug}; do
    for size in 64 1514; do
        declare -A fps=() lost=()
        # The two switches alternate, run by run, so that a noisy spell
        # of the machine falls on both.
        lost=([vde_switch]=0 [shmif]=0)
        : >"$T/fps.vde_switch"; : >"$T/fps.shmif"
        for _ in $(seq "$REPS"); do
            for sw in vde_switch shmif; do
                start_switch "$sw"
                read -r f got < <(run_"$mode" "$size")
                stop_switch
                echo "$f" >>"$T/fps.$sw"
                l=$((COUNT - got)); [ "$l" -gt "${lost[$sw]}" ] && lost[$sw]=$l
            done
        done
        for sw in vde_switch shmif; do fps[$sw]="$(median <"$T/fps.$sw")"; done
        ratio="$(awk -v a="${fps[shmif]}" -v b="${fps[vde_switch]}" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')"
        case "$mode" in
            direct) name="vde_flood, 1 frame per syscall" ;;
            batched) name="vde_flood, 64 frames per syscall" ;;
            *) name="vde_plug processes" ;;
        esac
        echo "| $name | $size | ${fps[vde_switch]} | ${fps[shmif]} | ${ratio}x | ${lost[vde_switch]} / ${lost[shmif]} |"
    done
done
