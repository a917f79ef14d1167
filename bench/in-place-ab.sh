#!/usr/bin/env bash
# Receiving in place (one frame per call, and up to 32 per call) against
# copying every frame out, interleaved run by run on one extended bus shape
# (64 MiB, 1514 B frames): the tables of BENCHMARKS.md, "Receiving in
# place". Prints each run, then medians.
# Usage: bash bench/in-place-ab.sh [ROUNDS] [SECS]   (defaults 5 and 2)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
secs="${2:-2}"
cargo build --release -q -p shmif --example ext_throughput
e=target/release/examples/ext_throughput
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for _ in $(seq "$rounds"); do
    for mode in 0 1 batch; do
        for n in 1 3 16; do
            total=$(IN_PLACE=$mode "$e" 1514 "$n" "$secs" |
                grep -o '([0-9.]* Mframes/s delivered)' | grep -o '[0-9.]*' |
                awk '{s += $1} END {printf "%.3f", s}')
            case "$mode" in
            1) name=in-place ;;
            batch) name=batch ;;
            *) name=copy ;;
            esac
            echo "$name 1->$n $total" | tee -a "$out"
        done
    done
done
echo "medians of total delivered Mframes/s:"
python3 - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    mode, readers, total = line.split()
    runs[(readers, mode)].append(float(total))
for (readers, mode), v in sorted(runs.items(), key=lambda kv: (int(kv[0][0][3:]), kv[0][1])):
    print(f"  {readers:6} {mode:9} {statistics.median(v):.3f}  ({min(v):.3f}-{max(v):.3f}, {len(v)} runs)")
PY
