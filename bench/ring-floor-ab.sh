#!/usr/bin/env bash
# The ring code alone (`examples/ring_floor.rs`: append and read back
# through a 1 MiB ring in one process, the "ring code" floor of `shmif
# bench`) at an earlier revision against the working tree, interleaved run
# by run, for 60, 512 and 1514-byte frames. The example is copied into the
# earlier revision's tree, so it measures that revision's ring code.
# Usage: bash bench/ring-floor-ab.sh [REV] [ROUNDS]   (defaults 31aca62, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-31aca62}"
rounds="${2:-5}"
old="$(mktemp -d)"
out="$(mktemp)"
trap 'git worktree remove --force "$old" >/dev/null 2>&1 || rm -rf "$old"; rm -f "$out"' EXIT
git worktree add -q --detach "$old" "$rev"
cp crates/shmif/examples/ring_floor.rs "$old/crates/shmif/examples/"
cargo build --release -q -p shmif --example ring_floor
(cd "$old" && CARGO_TARGET_DIR="$old/target" cargo build --release -q -p shmif --example ring_floor)
for _ in $(seq "$rounds"); do
    for side in old new; do
        if [ "$side" = old ]; then e="$old/target/release/examples/ring_floor"; else e=target/release/examples/ring_floor; fi
        for bytes in 60 512 1514; do
            # The best of three short passes: the least disturbed.
            best=$("$e" "$bytes" 0.5 3 | grep -o '[0-9.]* Mframes/s' | grep -o '[0-9.]*' | sort -g | tail -1)
            echo "$side $bytes $best" | tee -a "$out"
        done
    done
done
echo "medians, Mframes/s ($rev = old, working tree = new):"
python3 - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, size, fps = line.split()
    runs[(int(size), side)].append(float(fps))
for size in sorted({s for s, _ in runs}):
    o, n = runs[(size, "old")], runs[(size, "new")]
    print(f"  {size:5} B  old {statistics.median(o):.2f} ({min(o):.2f}-{max(o):.2f})"
          f"  new {statistics.median(n):.2f} ({min(n):.2f}-{max(n):.2f})"
          f"  new/old {statistics.median(n) / statistics.median(o):.2f}x")
PY
