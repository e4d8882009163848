#!/usr/bin/env bash
# Storage conformance: kube-apiserver's own storage test suite
# (k8s.io/apiserver/pkg/storage/testing, over its etcd3 store) against a
# plain etcd, the oracle, and against ste-router in front of three etcd
# shards, all in one `go test` run (e2e/storage). Prints, at the end, each
# case's outcome per backend and the counts.
#
# Usage: scripts/conformance.sh [ARGS for the test binary...]
#   e.g. scripts/conformance.sh -test.run 'TestStorageConformance/router/List'
#
# Environment:
#   STE_ROUTER_BIN   the ste-router to test; when unset, this script runs
#                    `cargo build -p ste-router` and uses <target>/debug/ste-router
#   CARGO_TARGET_DIR where cargo builds (default: <repo>/target)
#   STE_CONFORMANCE_LOG  where the full `go test -v` output goes, kept
#                    (default: a file under ${TMPDIR:-/tmp}, path printed,
#                    removed after a run that passed)
#   STE_ETCD_BIN     the etcd binary of the oracle and of the shards; default
#                    etcd 3.6.16 from .build/bin (scripts/build-counterparts.sh)
#   STE_ETCD         "embedded": instead, etcd's server code in the test process,
#                    at the version k8s.io/apiserver v0.37.2 requires (3.7.0)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v go >/dev/null 2>&1 || ste_die "go is not on PATH: install Go 1.26 (see e2e/go.mod)"

if [[ -z ${STE_ROUTER_BIN:-} ]]; then
    ste_find_cargo || ste_die "cargo not found: install Rust (scripts/install-deps.sh) or set STE_ROUTER_BIN"
    ste_say "building ste-router (cargo build -p ste-router)"
    (cd "${STE_REPO}" && cargo build -p ste-router)
    STE_ROUTER_BIN="$(ste_target_dir)/debug/ste-router"
fi
[[ -x ${STE_ROUTER_BIN} ]] || ste_die "${STE_ROUTER_BIN} is not an executable: run \`cargo build -p ste-router\`"
export STE_ROUTER_BIN

# The module's dependencies are pinned by the committed go.sum; never let a
# global GOFLAGS (-mod=mod) rewrite go.mod during a test run.
export GOFLAGS="-mod=readonly -buildvcs=false"

log="${STE_CONFORMANCE_LOG:-$(mktemp "${TMPDIR:-/tmp}/ste-conformance.XXXXXX.log")}"
bin="$(mktemp -d "${TMPDIR:-/tmp}/ste-conformance.XXXXXX")"
trap 'rm -rf "${bin}"' EXIT

case "${STE_ETCD:-}" in
    embedded)
        unset STE_ETCD_BIN
        ste_say "oracle and shards: etcd's server code in the test process (the version e2e/go.mod pins)"
        ;;
    "")
        if [[ -z ${STE_ETCD_BIN:-} ]]; then
            STE_ETCD_BIN="${STE_REPO}/.build/bin/etcd"
            [[ -x ${STE_ETCD_BIN} ]] ||
                ste_die "${STE_ETCD_BIN} not found: build it with scripts/build-counterparts.sh etcd (or set STE_ETCD_BIN, or STE_ETCD=embedded)"
        fi
        export STE_ETCD_BIN
        ste_say "oracle and shards: $("${STE_ETCD_BIN}" --version | head -n 1) (${STE_ETCD_BIN})"
        ;;
    *) ste_die "STE_ETCD=${STE_ETCD}: only 'embedded' is known (unset it for etcd 3.6 from .build/bin)" ;;
esac

cd "${STE_REPO}/e2e"
ste_say "compiling the suite (go test -c ./storage/)"
start=${SECONDS}
go test -c -o "${bin}/storage.test" ./storage/
ste_say "compiled in $((SECONDS - start))s"

# The test binary runs in the package directory, as `go test` would. On a
# loaded 2-core machine a full run (every case on both backends, a fresh
# etcd or router with three shards per case) takes on the order of 10-15
# minutes; the timeout leaves room for cases that time out on a backend.
ste_say "running the suite; full output in ${log}"
start=${SECONDS}
status=0
(cd storage && "${bin}/storage.test" -test.count=1 -test.timeout=60m -test.v "$@") >"${log}" 2>&1 || status=$?
ste_say "ran in $((SECONDS - start))s, exit status ${status}"

# Top-level case results that failed, then the summary the suite prints.
grep -E -- '^        --- FAIL: TestStorageConformance/' "${log}" || true
sed -n '/^=== storage conformance/,$p' "${log}"
if [[ ${status} -ne 0 ]] && ! grep -q '^=== storage conformance' "${log}"; then
    tail -n 50 "${log}"
fi
# A failed run keeps its full output for reading; a passed one keeps it only
# where STE_CONFORMANCE_LOG asked for it.
if [[ ${status} -eq 0 && -z ${STE_CONFORMANCE_LOG:-} ]]; then
    rm -f "${log}"
else
    ste_say "full output kept in ${log}"
fi
exit "${status}"
