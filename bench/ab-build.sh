# Sourced by bench/ext-ab.sh and bench/per-frame-ab.sh: builds examples of
# the shmif crate at an earlier revision and in the working tree. The
# revision is checked out in a temporary worktree and given the working
# tree's copies of the examples, so that both sides run the same program
# over their own library. Sets $old (that worktree; its binaries are in
# $old/target/release/examples) and $out (a scratch file for the runs'
# results); both are removed on exit.
ab_build() { # REV EXAMPLE...
    local rev="$1" ex
    shift
    old="$(mktemp -d)"
    out="$(mktemp)"
    trap 'git worktree remove --force "$old" >/dev/null 2>&1 || rm -rf "$old"; rm -f "$out"' EXIT
    git worktree add -q --detach "$old" "$rev"
    local args=()
    for ex in "$@"; do
        cp "crates/shmif/examples/$ex.rs" "$old/crates/shmif/examples/"
        args+=(--example "$ex")
    done
    cargo build --release -q -p shmif "${args[@]}"
    (cd "$old" && CARGO_TARGET_DIR="$old/target" cargo build --release -q -p shmif "${args[@]}")
}
