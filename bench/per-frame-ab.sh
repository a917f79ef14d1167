#!/usr/bin/env bash
# The library's cost per frame at an earlier revision against the working
# tree, interleaved run by run:
#  - the ring code alone (`examples/ring_floor.rs`: append and read back
#    through a 1 MiB ring in one process, the "ring code" floor of `shmif
#    bench`), for 60, 512 and 1514-byte frames: frames per second;
#  - a registered reader receiving in place and a writer sending on an
#    extended bus, in one process (`examples/rx_in_place.rs`): ns per frame.
# The examples are copied into the earlier revision's tree, so that both
# sides measure the same program over their own library.
# Usage: bash bench/per-frame-ab.sh [REV] [ROUNDS]   (defaults 31aca62, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-31aca62}"
rounds="${2:-5}"
. bench/ab-build.sh
ab_build "$rev" ring_floor rx_in_place
for _ in $(seq "$rounds"); do
    for side in old new; do
        if [ "$side" = old ]; then d="$old/target/release/examples"; else d=target/release/examples; fi
        for bytes in 60 512 1514; do
            # The best of three short passes: the least disturbed.
            best=$("$d/ring_floor" "$bytes" 0.5 3 | grep -o '[0-9.]* Mframes/s' | grep -o '[0-9.]*' | sort -g | tail -1)
            echo "$side ring-$bytes $best" | tee -a "$out"
        done
        "$d/rx_in_place" 2400 200 | awk -v side="$side" '{ print side, "reader-ns", $4; print side, "writer-ns", $9 }' | tee -a "$out"
    done
done
echo "medians ($rev = old, working tree = new): ring code in Mframes/s, in place in ns per frame"
python3 - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, what, value = line.split()
    runs[(what, side)].append(float(value))
for what in sorted({w for w, _ in runs}):
    o, n = runs[(what, "old")], runs[(what, "new")]
    mo, mn = statistics.median(o), statistics.median(n)
    print(f"  {what:10} old {mo:7.2f} ({min(o):.2f}-{max(o):.2f})"
          f"  new {mn:7.2f} ({min(n):.2f}-{max(n):.2f})  new/old {mn / mo:.2f}x")
PY
