#!/usr/bin/env bash
# CI for the Python bindings: lints the native crate, installs the package
# into a virtual environment and runs its pytest tests.
#
# Usage: bash python/ci.sh VENV
#   VENV: a virtual environment's directory (created with `python3 -m venv`
#   if it does not exist). Needs the Rust toolchain and Python >= 3.9.
# Environment: SHMIF_BIN, the `shmif` command the tests run (default: the
# repository's target/release/shmif, built here if SHMIF_BIN is unset).
# Exits non-zero if anything fails, and if pytest collected no test.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 VENV" >&2
    exit 2
fi
venv=$1
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"

echo "== python: cargo fmt --check, clippy (python/, its own workspace)"
cargo fmt --manifest-path python/Cargo.toml --check
cargo clippy --manifest-path python/Cargo.toml --all-targets -- -D warnings

if [ -z "${SHMIF_BIN:-}" ]; then
    echo "== python: building the shmif command for the tests"
    cargo build --release -p shmif-cli
    export SHMIF_BIN="$repo/target/release/shmif"
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "== python: creating the virtual environment $venv"
    if ! python3 -m venv "$venv"; then
        # Debian's python3 has no venv module without python3-venv.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "== python: installing python3-venv"
            rm -rf "$venv"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$venv"
        else
            echo "python/ci.sh: python3 -m venv failed (install python3-venv)" >&2
            exit 1
        fi
    fi
fi
echo "== python: installing maturin, pytest, scapy, mypy and the shmif package into $venv"
"$venv/bin/python" -m pip install --quiet --upgrade maturin pytest scapy mypy
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps ./python

echo "== python: mypy --strict on the installed package (stubs and annotations)"
(cd / && "$venv/bin/python" -m mypy --strict --no-incremental -p shmif)

echo "== python: pytest"
# From outside the source tree: python/shmif/ there has no native module.
cd "$here/tests"
status=0
"$venv/bin/python" -m pytest -p no:cacheprovider -v . || status=$?
if [ "$status" -eq 5 ]; then
    echo "python/ci.sh: pytest collected no test" >&2
    exit 1
fi
exit "$status"
