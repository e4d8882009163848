#!/usr/bin/env bash
# The whole STE test suite, as CI runs it:
#   1. scripts/install-deps.sh          apt packages (etcd 3.4, protoc, ...), checked
#   2. scripts/build-counterparts.sh    the real counterparts from their Go modules into
#                                       .build/bin: etcd/etcdctl 3.6, kube-apiserver,
#                                       kube-controller-manager, kube-scheduler, kwok, krew
#                                       (the first build compiles Kubernetes: tens of
#                                       minutes; later runs reuse Go's caches)
#   3. gofmt + go vet                   the Go test and tooling code under e2e/
#   4. cargo fmt --all -- --check
#   5. cargo clippy --workspace --all-targets -- -D warnings
#   6. cargo build --workspace --bins   (the integration tests spawn these)
#   7. cargo test --workspace [ARGS...] with etcd 3.6 shards and references
#   8. the router's integration tests again, on Debian's etcd 3.4.23 (the
#      agent's --etcd-bin fallback) and with the router's other key index,
#      --key-index betree (STE_KEY_INDEX; step 7 runs the default, btree)
#   9. scripts/conformance.sh           kube-apiserver's own storage test suite against
#                                       a plain etcd 3.6 and against the router
#  10. STE_BENCH_QUICK=1 cargo bench -p ste-core --bench key_index
#                                       the key-index benchmarks, quick mode (a smoke run)
#
# Usage: scripts/test.sh [ARGS for cargo test...]
#   e.g. scripts/test.sh -p ste-core
#        scripts/test.sh -- --nocapture
# Needs root, because the tests mount tmpfs: run it as root, or through sudo
# (it re-runs itself with sudo if started as another user and sudo exists).
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

STEPS=10
STEP=0
step() {
    local name="$1"
    shift
    STEP=$((STEP + 1))
    printf '\n==> [%d/%d] %s\n' "${STEP}" "${STEPS}" "${name}" >&2
    local start=${SECONDS}
    if ! "$@"; then
        ste_die "step ${STEP} (${name}) failed"
    fi
    printf '==> [%d/%d] %s: ok (%ds)\n' "${STEP}" "${STEPS}" "${name}" $((SECONDS - start)) >&2
}

# gofmt must list no file, go vet must pass, in every Go module under e2e/
# that has Go code.
go_checks() {
    local unformatted
    unformatted="$(find e2e -name '*.go' -print0 | xargs -0 gofmt -l)"
    if [[ -n ${unformatted} ]]; then
        ste_say "gofmt would change: ${unformatted}"
        return 1
    fi
    # The modules under e2e/tools only pin upstream tools (no Go of ours).
    local mod
    while read -r mod; do
        if [[ -z $(find "${mod}" -name '*.go' -print -quit) ]]; then
            continue
        fi
        ste_say "go vet ./... in ${mod}"
        (cd "${mod}" && GOFLAGS=-mod=readonly GOWORK=off go vet ./...) || return 1
    done < <(find e2e -name go.mod -printf '%h\n' | sort)
}

# The router's integration tests, with Debian's etcd 3.4.23 as the shards
# and the reference etcd, and the Bε-tree key index in the router.
router_tests_on_etcd34_betree() {
    local tests=() file
    for file in tests/tests/router_*.rs; do
        tests+=(--test "$(basename "${file}" .rs)")
    done
    STE_ETCD_BIN=/usr/bin/etcd STE_ETCDCTL_BIN=/usr/bin/etcdctl STE_KEY_INDEX=betree \
        cargo test -p ste-tests "${tests[@]}"
}

step "install dependencies" scripts/install-deps.sh
step "build the real counterparts (Go)" scripts/build-counterparts.sh
step "gofmt and go vet" go_checks
step "format check" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets -- -D warnings
step "build binaries" cargo build --workspace --bins
step "tests (etcd 3.6)" cargo test --workspace "$@"
step "router tests on Debian's etcd 3.4.23, --key-index betree" router_tests_on_etcd34_betree
step "kube-apiserver's storage suite (etcd 3.6 and the router)" scripts/conformance.sh
step "key index benchmarks (quick)" env STE_BENCH_QUICK=1 cargo bench -p ste-core --bench key_index

printf '\n==> all %d steps passed\n' "${STEP}" >&2
