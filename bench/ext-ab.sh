#!/usr/bin/env bash
# The extended bus's lossless throughput at an earlier revision against the
# working tree, interleaved run by run: `examples/ext_throughput` (64 MiB
# bus, 1514 B frames, readers receiving up to 32 frames in place per call
# by default) with 1, 3 and 16 readers. Prints each run, then the medians of frames
# delivered per second in all and of the writer's CPU time per frame, and
# their ratios. The example is copied into the earlier revision's tree, so
# the two differ only in the library. `IN_PLACE=0` compares the copying
# receive (`try_recv_into`) instead, `IN_PLACE=1` one frame in place per call.
# Usage: [IN_PLACE=batch|1|0] bash bench/ext-ab.sh [REV] [ROUNDS] [SECS]
#        (defaults batch, 31aca62, 6, 1)
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-31aca62}"
rounds="${2:-6}"
secs="${3:-1}"
in_place="${IN_PLACE:-batch}"
. bench/ab-build.sh
ab_build "$rev" ext_throughput
for _ in $(seq "$rounds"); do
    for side in old new; do
        if [ "$side" = old ]; then e="$old/target/release/examples/ext_throughput"; else e=target/release/examples/ext_throughput; fi
        for n in 1 3 16; do
            IN_PLACE="$in_place" "$e" 1514 "$n" "$secs" | awk -v side="$side" -v n="$n" '
                /writer/ { for (i = 1; i <= NF; i++) if ($i == "ns") cpu = $(i - 1) }
                /delivered/ { gsub(/\(/, "", $6); total += $6 }
                END { printf "%s 1->%s %.3f %s\n", side, n, total, cpu }' | tee -a "$out"
        done
    done
done
echo "medians ($rev = old, working tree = new): Mframes/s delivered in all; writer CPU ns per frame"
python3 - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(lambda: ([], []))
for line in open(sys.argv[1]):
    side, readers, total, cpu = line.split()
    runs[(readers, side)][0].append(float(total))
    runs[(readers, side)][1].append(float(cpu))
for readers in sorted({r for r, _ in runs}, key=lambda r: int(r[3:])):
    (ot, oc), (nt, nc) = runs[(readers, "old")], runs[(readers, "new")]
    mt, mc = statistics.median(ot), statistics.median(oc)
    nt_, nc_ = statistics.median(nt), statistics.median(nc)
    print(f"  {readers:6} old {mt:6.3f} ({min(ot):.2f}-{max(ot):.2f}) {mc:5.0f} ns"
          f"   new {nt_:6.3f} ({min(nt):.2f}-{max(nt):.2f}) {nc_:5.0f} ns"
          f"   new/old {nt_ / mt:.2f}x, CPU {nc_ / mc:.2f}x")
PY
