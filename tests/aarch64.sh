#!/usr/bin/env bash
# The library on 64-bit Arm: builds the `shmif` crate's tests for
# aarch64-unknown-linux-gnu, runs every one of them under QEMU's user-mode
# emulator (the multi-process tests' children too, through
# SHMIF_TEST_RUNNER), then three of the command's test files the same way,
# and checks that the sending code issues the Arm prefetch for writing
# (`prfm pstl1keep`) that x86-64 gets as `prefetchw`.
#
# Needs: rustup's aarch64-unknown-linux-gnu target, aarch64-linux-gnu-gcc
# (Debian's gcc-aarch64-linux-gnu) and qemu-aarch64-static (qemu-user-static);
# .ci/deps/aarch64.sh installs them. Without them it says SKIPPED and exits 0.
# The emulator runs Arm code with x86's stronger memory ordering, so this shows
# that the code builds, runs and passes there, not that its fences suffice on
# real Arm hardware.
# Usage: bash tests/aarch64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
skip() {
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "!!! aarch64 run of the library's tests SKIPPED: $1" >&2
    echo "!!! (bash .ci/deps/aarch64.sh as root installs what it needs)" >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    exit 0
}
command -v aarch64-linux-gnu-gcc >/dev/null || skip "no aarch64-linux-gnu-gcc (gcc-aarch64-linux-gnu)"
command -v qemu-aarch64-static >/dev/null || skip "no qemu-aarch64-static (qemu-user-static)"
command -v aarch64-linux-gnu-objdump >/dev/null || skip "no aarch64-linux-gnu-objdump (binutils-aarch64-linux-gnu)"
[ -e /usr/aarch64-linux-gnu/lib/crt1.o ] || skip "no C library for aarch64 (libc6-dev-arm64-cross)"
rustc --print sysroot >/dev/null
[ -d "$(rustc --print sysroot)/lib/rustlib/$target" ] || skip "no Rust standard library for $target (rustup target add $target)"

runner="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$runner"
export SHMIF_TEST_RUNNER="$runner"
# The chaos tests' rounds under emulation (200 natively): each round is a
# process started and killed, ten times slower here.
export SHMIF_CHAOS_ROUNDS="${SHMIF_CHAOS_ROUNDS:-80}"

echo "== aarch64: cargo clippy -p shmif --target $target (the Arm-only code linted too)"
cargo clippy -p shmif --target "$target" --all-targets --all-features -- -D warnings

echo "== aarch64: cargo test -p shmif --all-features --release --target $target (under qemu-aarch64)"
cargo test -p shmif --all-features --release --target "$target"

# The command on Arm, through the tests that run only `shmif` itself (not
# those that start other programs, or `shmif` starting itself): dumps
# byte-identical to NetBSD's shmif_dumpbus, send and listen, hosts, ping
# and TCP between processes.
echo "== aarch64: cargo test -p shmif-cli --test dump --test send_listen --test tcpip (under qemu-aarch64)"
cargo test -p shmif-cli --all-features --release --target "$target" --test dump --test send_listen --test tcpip

echo "== aarch64: the prefetch for writing in the sending code"
# The test binary of tests/extended.rs sends through Interface::send and
# send_batch; each must hold a `prfm pstl1keep` (the prefetch is inlined).
bin=$(cargo test -p shmif --all-features --release --target "$target" --test extended --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "extended":
        print(m["executable"])')
[ -n "$bin" ] || { echo "FAILED: cannot find the aarch64 test binary of tests/extended.rs" >&2; exit 1; }
found=$(aarch64-linux-gnu-objdump -d --no-show-raw-insn -C "$bin" |
    awk '/^[0-9a-f]+ <.*>:$/ { f = $0 } /prfm[ \t]+pstl1keep/ { print f }' | sort -u)
for fn in 'shmif::interface::Interface::send>' 'shmif::interface::Interface::send_batch>'; do
    if ! grep -qF "$fn" <<<"$found"; then
        echo "FAILED: no prfm pstl1keep in ${fn%>} of $bin; the functions that hold one:" >&2
        echo "${found:-  (none)}" >&2
        exit 1
    fi
done
echo "ok: prfm pstl1keep in Interface::send and Interface::send_batch"
echo "== aarch64: done in ${SECONDS} s"
