# What the VM tests (crates/shmif-cli/tests/vde.rs, tests/qemu.rs) need:
# QEMU, a static busybox for the guests' initramfs, VDE's own programs, and
# a guest kernel with its virtio-net modules, unpacked (not installed) from
# Debian's linux-image-cloud-amd64 into target/guest-kernel.
#
# Sourced by .ci/run (which defines apt_install); also runs on its own:
#   bash .ci/deps/qemu.sh [DEST]      # only fetch the kernel into DEST
# The tests run it themselves when the kernel is missing.

if declare -F apt_install >/dev/null 2>&1; then
    apt_install qemu-system-x86_64:qemu-system-x86 busybox:busybox-static \
        vde_plug:vdeplug vde_switch:vde2 dpkg-deb:dpkg
fi

# fetch_guest_kernel DEST: DEST/vmlinuz, DEST/modules/*.ko, DEST/modules.load
# (the modules in load order) and DEST/ready. Idempotent.
fetch_guest_kernel() {
    local dest="$1"
    [ -e "$dest/ready" ] && return 0
    local work
    mkdir -p "$(dirname "$dest")" || return 1
    work="$(mktemp -d "${dest%/}.tmp.XXXXXX")" || return 1
    (
        set -euo pipefail
        cd "$work"
        # The meta package names the current image package in its Depends.
        apt-get download -q linux-image-cloud-amd64 >/dev/null 2>&1 || {
            apt-get update -qq >/dev/null 2>&1 || true
            apt-get download -q linux-image-cloud-amd64 >/dev/null
        }
        local image
        image="$(dpkg-deb -f linux-image-cloud-amd64_*.deb Depends | tr ',' '\n' |
            grep -o 'linux-image-[0-9][^ ]*-cloud-amd64' | head -n1)"
        [ -n "$image" ] || { echo "qemu.sh: no image package in linux-image-cloud-amd64's Depends" >&2; exit 1; }
        apt-get download -q "$image" >/dev/null
        dpkg-deb -x "$image"_*.deb x
        mkdir -p out/modules
        cp x/boot/vmlinuz-* out/vmlinuz
        local kdir
        kdir="$(echo x/lib/modules/*/kernel)"
        # Resolve virtio_pci's and virtio_net's dependencies (modinfo's
        # depends= field) into a load order, dependencies first.
        local order=()
        add() {
            local name="$1" ko deps d seen
            for seen in "${order[@]:-}"; do [ "$seen" = "$name" ] && return 0; done
            ko="$(find "$kdir" -name "$name.ko" | head -n1)"
            [ -n "$ko" ] || { echo "qemu.sh: module $name not found" >&2; exit 1; }
            deps="$(tr '\0' '\n' <"$ko" | grep -a '^depends=' | head -n1 | cut -d= -f2)"
            for d in ${deps//,/ }; do add "$d"; done
            cp "$ko" out/modules/
            order+=("$name")
        }
        add virtio_pci
        add virtio_net
        printf '%s\n' "${order[@]}" >out/modules.load
        echo "$image" >out/ready
    ) || { rm -rf "$work"; return 1; }
    rm -rf "$dest"
    mv "$work/out" "$dest"
    rm -rf "$work"
    echo "guest kernel: $(cat "$dest/ready") in $dest ($(tr '\n' ' ' <"$dest/modules.load"))"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    # Run on its own.
    set -euo pipefail
    fetch_guest_kernel "${1:-$(cd "$(dirname "$0")/../.." && pwd)/target/guest-kernel}"
else
    fetch_guest_kernel "$(pwd)/target/guest-kernel" ||
        echo "WARNING: could not fetch the guest kernel; the VM tests will try again or say SKIPPED" >&2
fi
