#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 30) on its seed corpus.
# Usage: bash fuzz/run.sh [SECONDS]
set -euo pipefail
secs="${1:-30}"
cd "$(dirname "$0")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ring" "$work/bus_image" "$work/ext_image"
cp seeds/ring/* "$work/ring/"
for f in seeds/ext_image/*.gz; do
    gzip -dc "$f" > "$work/ext_image/$(basename "$f" .gz)"
done
for f in ../tests/fixtures/*.bus.gz; do
    gzip -dc "$f" > "$work/bus_image/$(basename "$f" .gz)"
done
# Building first, with cargo's progress shown: the first build of the
# targets (sanitizer instrumentation, nightly) takes minutes.
echo "== building the fuzz targets (cargo +nightly fuzz build; minutes the first time)"
cargo +nightly fuzz build
for t in ring bus_image ext_image; do
    echo "== fuzz target $t for ${secs}s (libFuzzer's progress lines follow)"
    # -rss_limit_mb: a bus image is 1 MiB and the harness copies it.
    # -max_len: a ring of 8 KiB and its words; a v3 image and a reader
    # position; an extended bus of 1 MiB (header, reader table and ring).
    case "$t" in
        ring) max_len=16384 ;;
        bus_image) max_len=1048584 ;;
        ext_image) max_len=1048576 ;;
    esac
    cargo +nightly fuzz run "$t" "$work/$t" -- -max_total_time="$secs" -rss_limit_mb=4096 \
        -max_len="$max_len" 2>&1 \
        | grep -E "^#[0-9]+.*(DONE|pulse)|Done [0-9]+ runs|ERROR|panicked|SUMMARY|==[0-9]+==" || true
    # libFuzzer exits non-zero on a finding; cargo fuzz leaves it in artifacts/.
    if [ -n "$(find artifacts/"$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) 2>/dev/null)" ]; then
        echo "FUZZ FINDING in target $t: see fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
