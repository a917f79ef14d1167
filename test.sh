#!/usr/bin/env bash
# The tests: the Rust workspace (library and command), then the Python
# bindings (a virtual environment under target/, made and filled here).
# Tests that need root, network namespaces, QEMU or VDE say SKIPPED loudly
# when those are missing; `.ci/run` installs them and runs this as root.
# Usage: bash test.sh
set -euo pipefail
cd "$(dirname "$0")"
echo "== cargo test --workspace --all-features --release"
cargo test --workspace --all-features --release
echo "== the library on 64-bit Arm, under QEMU's user-mode emulator (tests/aarch64.sh)"
bash tests/aarch64.sh
echo "== Python bindings (python/ci.sh)"
SHMIF_BIN="$PWD/target/release/shmif" bash python/ci.sh "$PWD/target/pyvenv"
