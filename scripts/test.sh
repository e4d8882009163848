#!/usr/bin/env bash
# The whole STE test suite, as CI runs it:
#   1. scripts/install-deps.sh                        (etcd, etcdctl, protoc, ...)
#   2. cargo fmt --all -- --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. cargo build --workspace --bins                 (the integration tests spawn
#                                                      these binaries from the target dir)
#   5. cargo test --workspace [ARGS...]
#   6. STE_BENCH_QUICK=1 cargo bench -p ste-core --bench key_index   (smoke, < 2 min)
#
# Usage: sudo scripts/test.sh [ARGS for cargo test...]
#   e.g. sudo scripts/test.sh -p ste-core
#        sudo scripts/test.sh -- --nocapture
# Needs root, because the tests mount tmpfs; re-runs itself with sudo if
# started as another user.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${EUID} -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        ste_say "the tests mount tmpfs and need root: re-running with sudo"
        exec sudo -- "$(realpath "$0")" "$@"
    fi
    ste_die "the tests mount tmpfs and need root, and sudo is not installed: run this script as root"
fi

cd "${STE_REPO}"
ste_find_cargo || true # install-deps.sh explains what to do if it is missing
trap ste_restore_ownership EXIT

STEP=0
step() {
    local name="$1"
    shift
    STEP=$((STEP + 1))
    printf '\n==> [%d/6] %s\n' "${STEP}" "${name}" >&2
    local start=${SECONDS}
    if ! "$@"; then
        ste_die "step ${STEP} (${name}) failed"
    fi
    printf '==> [%d/5] %s: ok (%ds)\n' "${STEP}" "${name}" $((SECONDS - start)) >&2
}

step "install dependencies" scripts/install-deps.sh
step "format check" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets -- -D warnings
step "build binaries" cargo build --workspace --bins
step "tests" cargo test --workspace "$@"
step "key index bench (quick)" env STE_BENCH_QUICK=1 cargo bench -p ste-core --bench key_index

printf '\n==> all %d steps passed\n' "${STEP}" >&2
