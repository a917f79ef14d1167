# shellcheck shell=bash
# What the 64-bit Arm run of the library's tests (tests/aarch64.sh) needs: a
# cross linker with Arm's C library, QEMU's user-mode emulator to run the
# test binaries, and Rust's standard library for the target (from rustup's
# servers; where they cannot be reached, tests/aarch64.sh says SKIPPED).
apt_install aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu qemu-aarch64-static:qemu-user-static
# The C library comes with the compiler only as a recommended package.
if [ ! -e /usr/aarch64-linux-gnu/lib/crt1.o ] && [ "$(id -u)" = 0 ]; then
    echo "== installing libc6-dev-arm64-cross"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libc6-dev-arm64-cross >/dev/null
fi
if command -v rustup >/dev/null 2>&1; then
    rustup target add aarch64-unknown-linux-gnu || echo "WARNING: cannot add the aarch64 target; tests/aarch64.sh will say SKIPPED" >&2
fi
