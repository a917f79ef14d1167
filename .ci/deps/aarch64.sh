# shellcheck shell=bash
# What the 64-bit Arm run of the library's tests (tests/aarch64.sh) needs: a
# cross linker, QEMU's user-mode emulator to run the test binaries, and
# Rust's standard library for the target (from rustup's servers; where they
# cannot be reached, tests/aarch64.sh says SKIPPED).
apt_install aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu qemu-aarch64-static:qemu-user-static
if command -v rustup >/dev/null 2>&1; then
    rustup target add aarch64-unknown-linux-gnu || echo "WARNING: cannot add the aarch64 target; tests/aarch64.sh will say SKIPPED" >&2
fi
