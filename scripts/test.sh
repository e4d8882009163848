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
#   7. scripts/fuzz.sh --seconds 20     the cargo-fuzz targets (envelope, txn, key_range,
#                                       admin), 20 s each, from the committed seeds
#   8. cargo test --workspace [ARGS...] with etcd 3.6 shards and references,
#      except the end-to-end tests (step 11) and the fault loop (step 10);
#      the differential fuzzer runs seed 1000 (STE_DIFF_SEED)
#   9. the router's integration tests again, on Debian's etcd 3.4.23 (the
#      agent's --etcd-bin fallback, its shards plain HTTP: TLS shards need
#      etcd 3.6) and with the router's other key index, --key-index betree
#      (STE_KEY_INDEX; step 8 runs the default, btree)
#  10. tests/tests/fault_loop.rs: 60 s of faults (kill -9 of the router, an
#      agent, a shard's etcd; SIGSTOP; drain and rejoin; a full tmpfs) under
#      kube-shaped writers and watchers, checked, its report printed
#  11. tests/tests/kube_e2e.rs three times in a row: the product's job end
#      to end against a real control plane (kube-apiserver with Pods in STE,
#      kube-controller-manager, kube-scheduler, kwok): scaling, watches,
#      paging, ring changes, kill -9 of an agent and of the router
#  12. scripts/local-cluster.sh up, status, down: the README's first command,
#      isolated (its own STE_LOCAL_DIR, KUBECONFIG and KREW_ROOT)
#  13. scripts/conformance.sh           kube-apiserver's own storage test suite against
#                                       a plain etcd 3.6 and against the router
#  14. STE_BENCH_QUICK=1 cargo bench -p ste-core --bench key_index
#                                       the key-index benchmarks, quick mode (a smoke run)
#  15. ste-bench, smoke run (debug build: it works end to end, every answer
#      checked; its numbers mean nothing): 3-member etcd through the FUSE
#      fsync model, a bare shard and STE, 1 and 8 clients
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

STEPS=15

# ste-bench end to end on a small workload, from the debug build of step 6
# (it runs the ste-agent, ste-router and ste-fsync-delay next to it).
bench_smoke() {
    PATH="${STE_REPO}/.build/bin:${PATH}" "$(ste_target_dir)/debug/ste-bench" \
        --targets etcd3,shard,ste --concurrency 1,8 --fsync-delay 1ms \
        --ops 200 --warmup 20 --list-repeats 2 --cross-check none
}
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
        STE_DIFF_SEED="${STE_DIFF_SEED:-41}" cargo test -p ste-tests "${tests[@]}"
}

# cargo test over the workspace with ARGS, the end-to-end tests left out
# (test names starting with e2e_; step 11 runs them) and the fault loop
# (step 10).
workspace_tests() {
    local args=("$@") has_separator="" arg
    for arg in "${args[@]}"; do
        [[ ${arg} == -- ]] && has_separator=1
    done
    if [[ -z ${has_separator} ]]; then
        args+=(--)
    fi
    # The differential fuzzer (router_fuzz) runs a fixed sequence here, so
    # a run is repeatable; long runs pick random seeds (README).
    STE_DIFF_SEED="${STE_DIFF_SEED:-1000}" \
        cargo test --workspace "${args[@]}" --skip e2e_ --skip acknowledged_writes_survive_a_nemesis
}

# The fault loop (docs/fault-loop.md): 60 s of faults against a router and
# three agents, its report printed.
fault_loop() {
    STE_FAULT_SECONDS=60 cargo test -p ste-tests --test fault_loop -- --nocapture
}

# The end-to-end tests against a real control plane, three passes in a row
# (a flaky test is a bug: one pass proves little on a loaded machine).
end_to_end_tests() {
    local pass
    for pass in 1 2 3; do
        ste_say "end-to-end tests, pass ${pass} of 3"
        cargo test -p ste-tests --test kube_e2e -- --test-threads=1 --nocapture || {
            ste_say "end-to-end tests failed in pass ${pass} of 3"
            return 1
        }
    done
}

# True if something listens on TCP port $1 of 127.0.0.1.
port_in_use() {
    [[ -n $(ss -Hltn "sport = :$1") ]]
}

# The README's first command as a newcomer runs it, isolated from the
# invoking user's kubeconfig and krew root: `up` (with the control plane)
# must end with `kubectl ste where pod/<a real Pod>`; then plain kubectl and
# the plugin as typed, `status`, and `down`, after which nothing may be left
# running or mounted.
local_cluster_check() {
    local port
    for port in 2379 2479 2490 6443; do
        if port_in_use "${port}"; then
            ste_say "port ${port} is in use (a local cluster from scripts/local-cluster.sh up?): stop it with scripts/local-cluster.sh down and run the tests again"
            return 1
        fi
    done
    local dir rc=0
    dir="$(mktemp -d /tmp/ste-test-local-cluster.XXXXXX)"
    (
        export STE_LOCAL_DIR="${dir}/cluster" KUBECONFIG="${dir}/kubeconfig" KREW_ROOT="${dir}/krew"
        export PATH="${KREW_ROOT}/bin:${PATH}"
        if ! scripts/local-cluster.sh up >"${dir}/up.log" 2>&1; then
            tail -n 80 "${dir}/up.log" >&2
            ste_say "scripts/local-cluster.sh up failed (output above)"
            exit 1
        fi
        grep -E '^\$ kubectl ste where pod/web-' "${dir}/up.log" >&2 || {
            tail -n 40 "${dir}/up.log" >&2
            ste_say "up did not end with kubectl ste where pod/<a web Pod>"
            exit 1
        }
        local running
        running="$(kubectl get pods -l app=web --no-headers | grep -c ' Running ')"
        ((running == 3)) || {
            kubectl get pods -o wide >&2
            ste_say "expected 3 Running Pods of the Deployment web, found ${running}"
            exit 1
        }
        kubectl ste status >&2
        scripts/local-cluster.sh status >"${dir}/status.log" 2>&1 || {
            cat "${dir}/status.log" >&2
            exit 1
        }
    ) || rc=1
    STE_LOCAL_DIR="${dir}/cluster" KUBECONFIG="${dir}/kubeconfig" scripts/local-cluster.sh down || rc=1
    # 'up' links the plugin's completion helper into /usr/local/bin from
    # this run's krew root, which is removed below: no dangling link stays.
    local link
    for link in /usr/local/bin/kubectl-ste /usr/local/bin/kubectl_complete-ste; do
        if [[ -L ${link} && $(readlink "${link}") == "${dir}"/* ]]; then
            rm -f "${link}"
        fi
    done
    for port in 2379 2479 2490 6443; do
        if port_in_use "${port}"; then
            ste_say "port ${port} is still in use after down"
            rc=1
        fi
    done
    if grep -qF " ${dir}/" /proc/self/mountinfo; then
        ste_say "something is still mounted under ${dir} after down"
        rc=1
    fi
    ((rc != 0)) || rm -rf "${dir}"
    return "${rc}"
}

step "install dependencies" scripts/install-deps.sh
step "build the real counterparts (Go)" scripts/build-counterparts.sh
step "gofmt and go vet" go_checks
step "format check" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets -- -D warnings
step "build binaries" cargo build --workspace --bins
step "fuzz: every cargo-fuzz target, 20 s each" scripts/fuzz.sh --seconds 20
step "tests (etcd 3.6)" workspace_tests "$@"
step "router tests on Debian's etcd 3.4.23, --key-index betree" router_tests_on_etcd34_betree
step "fault loop (60 s of faults)" fault_loop
step "end-to-end tests against a real control plane (3 passes)" end_to_end_tests
step "local cluster: up, status, down" local_cluster_check
step "kube-apiserver's storage suite (etcd 3.6 and the router)" scripts/conformance.sh
step "key index benchmarks (quick)" env STE_BENCH_QUICK=1 cargo bench -p ste-core --bench key_index
step "ste-bench smoke run" bench_smoke

printf '\n==> all %d steps passed\n' "${STEP}" >&2
