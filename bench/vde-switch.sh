# Sourced by bench/vde-compare.sh and bench/vde-cpu.sh: starts and stops
# the switch under test, `shmif vde` (with its bus) or vde_switch, serving
# the directory $T/sw. Needs $T (a scratch directory) and $S (the shmif
# binary); sets $SW_PID while a switch runs.
SW_PID=""

start_switch() { # shmif|vde_switch
    rm -rf "$T/sw" "$T/bus" "$T/sw.pid"
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
