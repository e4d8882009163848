#!/usr/bin/env bash
# Builds the real Kubernetes counterparts STE is tested against, from their
# published Go modules, into <repo>/.build/bin/:
#   kube-apiserver, kube-controller-manager, kube-scheduler,
#   kubectl                                                  (k8s.io/kubernetes)
#   etcd, etcdctl                                            (go.etcd.io/etcd 3.6)
#   kwok                                                     (sigs.k8s.io/kwok)
#   kubectl-krew                                             (sigs.k8s.io/krew)
#   kine                                                     (github.com/k3s-io/kine)
# Versions are pinned by the go.mod/go.sum files under e2e/tools/ (see
# docs/counterparts.md); this script reads them from there.
#
# The first build compiles Kubernetes from source (tens of minutes on two
# cores); later runs reuse Go's build and module caches (GOCACHE,
# GOMODCACHE, left at their defaults). A binary whose stamp (version, the
# module's go.mod/go.sum, the Go version and the build flags) is unchanged
# is not rebuilt; delete .build/stamps/ (or the binary) to force it.
#
# kwok also gets the published Stage files it needs (Nodes Ready, Pods
# Pending -> Running) in .build/share/kwok/stages/: pass each with --config.
#
# Usage: scripts/build-counterparts.sh [NAME...]
#   NAME: any of the binaries above; all of them when none is given.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# The oldest Go that builds every module under e2e/tools/ (their `go` lines).
readonly GO_MIN=1.26.5

TOOLS="${STE_REPO}/e2e/tools"
BIN="${STE_REPO}/.build/bin"
STAMPS="${STE_REPO}/.build/stamps"
KWOK_STAGES="${STE_REPO}/.build/share/kwok/stages"

# name | module directory (under e2e/tools/) | main package | module that versions it
readonly TARGETS=(
    "kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|k8s.io/kubernetes"
    "kube-controller-manager|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|k8s.io/kubernetes"
    "kube-scheduler|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|k8s.io/kubernetes"
    "kubectl|kubernetes|k8s.io/kubernetes/cmd/kubectl|k8s.io/kubernetes"
    "etcd|etcd|go.etcd.io/etcd/server/v3|go.etcd.io/etcd/server/v3"
    "etcdctl|etcd|go.etcd.io/etcd/etcdctl/v3|go.etcd.io/etcd/etcdctl/v3"
    "kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|sigs.k8s.io/kwok"
    "kubectl-krew|krew|sigs.k8s.io/krew/cmd/krew|sigs.k8s.io/krew"
    "kine|kine|github.com/k3s-io/kine|github.com/k3s-io/kine"
)

check_go() {
    command -v go >/dev/null 2>&1 || ste_die "no 'go' on PATH.
    Install Go ${GO_MIN} or newer from https://go.dev/dl/ (e.g. into /usr/local/go and
    add /usr/local/go/bin to PATH). Debian's golang package is too old for Kubernetes."
    local have
    have="$(GOTOOLCHAIN=local go env GOVERSION)"
    have="${have#go}"
    have="${have%%[!0-9.]*}"
    if [[ "$(printf '%s\n%s\n' "${GO_MIN}" "${have}" | sort -V | head -n1)" != "${GO_MIN}" ]]; then
        ste_die "Go ${have} at $(command -v go) is too old: these builds need Go ${GO_MIN} or newer.
    Install a newer Go from https://go.dev/dl/ (Debian's golang package is too old)."
    fi
}

# The version a go.mod requires of a module (in a require block or not).
required_version() {
    local gomod="$1" module="$2" version
    version="$(awk -v m="${module}" '
        { for (i = 1; i < NF; i++) if ($i == m) { print $(i + 1); exit } }' "${gomod}")"
    [[ -n ${version} ]] || ste_die "${gomod} does not require ${module}"
    printf '%s\n' "${version}"
}

# Linker flags that stamp the version into binaries whose upstream release
# builds do so with -X (a plain `go build` leaves a placeholder there).
ldflags_for() {
    local name="$1" version="$2" flags="-s -w"
    case "${name}" in
        kube-* | kubectl)
            local minor="${version#v*.}"
            minor="${minor%%.*}"
            local major="${version#v}"
            major="${major%%.*}"
            local pkg
            for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
                flags+=" -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=${major}"
                flags+=" -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
            done
            ;;
        kubectl-krew)
            flags+=" -X sigs.k8s.io/krew/internal/version.gitTag=${version}"
            ;;
        kine)
            flags+=" -X github.com/k3s-io/kine/pkg/version.Version=${version}"
            ;;
    esac
    printf '%s\n' "${flags}"
}

# One digest over the contents of the given files.
files_digest() {
    sha256sum "$@" | awk '{ print $1 }' | sha256sum | awk '{ print $1 }'
}

# Seconds as "1m05s" / "4s".
human_duration() {
    local s="$1"
    if ((s >= 60)); then
        printf '%dm%02ds\n' $((s / 60)) $((s % 60))
    else
        printf '%ds\n' "${s}"
    fi
}

# kwok's binary simulates nothing without Stage objects (it exits with "no
# stages found"); kwokctl embeds its "fast" set. Put the same published
# files (Nodes Ready with lease heartbeats, Pods Pending -> Running,
# completion and deletion) next to the binary, for `kwok --config`.
install_kwok_stages() {
    local dir="$1" src dest="${KWOK_STAGES}"
    src="$(cd "${dir}" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
    mkdir -p "${dest}"
    cp -f "${src}/node/fast/node-initialize.yaml" \
        "${src}/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
        "${src}/pod/fast/pod-ready.yaml" "${src}/pod/fast/pod-complete.yaml" \
        "${src}/pod/fast/pod-delete.yaml" "${dest}/"
    chmod u+w "${dest}"/*.yaml
}

# Prints the version line(s) each binary reports. krew's `version` creates
# its directories under KREW_ROOT, so it gets a throwaway one.
print_version() {
    local name="$1" exe="${BIN}/$1"
    case "${name}" in
        etcd | kube-* | kwok | kine) "${exe}" --version ;;
        kubectl) "${exe}" version --client ;;
        etcdctl) "${exe}" version ;;
        kubectl-krew)
            local root
            root="$(mktemp -d)"
            KREW_ROOT="${root}" KREW_NO_UPGRADE_CHECK=1 "${exe}" version 2>/dev/null |
                grep -E '^(OPTION|GitTag|GitCommit)'
            rm -rf "${root}"
            ;;
    esac
}

main() {
    local arg
    for arg in "$@"; do
        case "${arg}" in
            -h | --help)
                usage
                exit 0
                ;;
        esac
    done

    local -A known=()
    local names=() t
    for t in "${TARGETS[@]}"; do
        known[${t%%|*}]=1
        names+=("${t%%|*}")
    done
    local wanted=("$@")
    if ((${#wanted[@]} == 0)); then
        for t in "${TARGETS[@]}"; do
            wanted+=("${t%%|*}")
        done
    fi
    for arg in "${wanted[@]}"; do
        [[ -n ${known[${arg}]:-} ]] ||
            ste_die "unknown binary '${arg}' (known: ${names[*]})"
    done

    check_go

    # Take nothing from the environment that changes what gets built: the
    # committed go.sum files are the truth (-mod=readonly), no toolchain
    # download, no workspace, static binaries, no VCS stamp (the main modules
    # are ours, and stamping them would relink on every commit).
    export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
    export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
    local goversion
    goversion="$(go env GOVERSION)"

    mkdir -p "${BIN}" "${STAMPS}"
    local total_start=${SECONDS} chosen=()
    for t in "${TARGETS[@]}"; do
        local name dir pkg module
        IFS='|' read -r name dir pkg module <<<"${t}"
        local w selected=""
        for w in "${wanted[@]}"; do
            [[ ${w} == "${name}" ]] && selected=1
        done
        [[ -n ${selected} ]] || continue

        local moddir="${TOOLS}/${dir}"
        local version ldflags stamp
        version="$(required_version "${moddir}/go.mod" "${module}")"
        ldflags="$(ldflags_for "${name}" "${version}")"
        stamp="$(printf '%s\n' "${name}" "${version}" "${pkg}" "${goversion}" "${GOFLAGS}" \
            "${CGO_ENABLED}" "${ldflags}" "$(files_digest "${moddir}/go.mod" "${moddir}/go.sum")")"
        chosen+=("${name}")
        if [[ -x ${BIN}/${name} && -f ${STAMPS}/${name} && "$(cat "${STAMPS}/${name}")" == "${stamp}" &&
            (${name} != kwok || -d ${KWOK_STAGES}) ]]; then
            ste_say "${name} ${version}: up to date"
            continue
        fi

        ste_say "building ${name} ${version} ..."
        local start=${SECONDS}
        rm -f "${STAMPS}/${name}"
        (cd "${moddir}" && go build -ldflags "${ldflags}" -o "${BIN}/${name}" "${pkg}") ||
            ste_die "building ${name} ${version} (${pkg}) failed"
        if [[ ${name} == kwok ]]; then
            install_kwok_stages "${moddir}"
        fi
        printf '%s\n' "${stamp}" >"${STAMPS}/${name}"
        ste_say "built ${name} ${version} in $(human_duration $((SECONDS - start)))"
    done
    ste_say "done in $(human_duration $((SECONDS - total_start))); binaries in ${BIN}"

    local name
    for name in "${chosen[@]}"; do
        printf '== %s\n' "${name}"
        print_version "${name}" || ste_die "${BIN}/${name} does not run"
    done
}

main "$@"
