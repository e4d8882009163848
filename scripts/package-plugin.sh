#!/usr/bin/env bash
# Packages the kubectl plugin (kubectl-ste) for krew.
#
# For each platform it packages, writes
#   dist/kubectl-ste_v<VERSION>_<os>_<arch>.tar.gz
# holding kubectl-ste, kubectl_complete-ste and LICENSE at the archive root,
# then renders krew/ste.yaml.tmpl into dist/ste.yaml, the krew plugin
# manifest, listing exactly the archives it built (uri + sha256). VERSION is
# the workspace version ([workspace.package] in Cargo.toml). Nothing is
# downloaded or uploaded: the uri is where the archives are to be published.
#
# Usage: scripts/package-plugin.sh [--install-krew-root DIR]
#
#   --install-krew-root DIR  then install the host platform's archive into
#                            the krew root DIR with the real krew:
#                            KREW_ROOT=DIR kubectl krew install
#                            --manifest=dist/ste.yaml --archive=<archive>
#                            (an installed ste is uninstalled first, so this
#                            also upgrades). krew is .build/bin/kubectl-krew
#                            (scripts/build-counterparts.sh builds it), else
#                            $STE_KREW_BIN, else kubectl-krew on PATH. krew
#                            links only kubectl-ste into DIR/bin; the shell
#                            completion helper stays in the store,
#                            DIR/store/ste/v<VERSION>/kubectl_complete-ste
#
# Which platforms are packaged:
#   - the host platform (linux or darwin, amd64 or arm64), from
#     `cargo build --release -p kubectl-ste`, or from the directory
#     STE_PLUGIN_BIN_DIR if set (no build; e.g. target/debug, where
#     `cargo build --workspace --bins` puts them);
#   - every Rust target triple listed in STE_PLUGIN_TARGETS (comma or space
#     separated), from <target dir>/<triple>/release, which must already
#     hold both binaries: this script does not cross-compile (build them
#     first, e.g. `cargo build --release -p kubectl-ste --target
#     aarch64-unknown-linux-musl` with a cross linker). A triple for the
#     host's platform replaces the host build (e.g. x86_64-unknown-linux-musl
#     for a static linux/amd64 binary).
#   Triples map to krew platforms: x86_64-*-linux-* linux/amd64,
#   aarch64-*-linux-* linux/arm64, x86_64-apple-darwin darwin/amd64,
#   aarch64-apple-darwin darwin/arm64. The template's four platforms are
#   the intended release set; the generated manifest lists only the
#   platforms packaged in this run.
#
# Settings (environment):
#   STE_RELEASE_URL_BASE  where the archives will be downloadable from
#                         (default https://github.com/OWNER/ste/releases/download/v<VERSION>)
#   STE_HOMEPAGE          the manifest's homepage (default https://github.com/OWNER/ste)
#   STE_DIST_DIR          output directory (default dist/ in the repository)
#   STE_PLUGIN_BIN_DIR    see above
#   STE_PLUGIN_TARGETS    see above
#   CARGO_TARGET_DIR      cargo's target directory (default target/)
#   SOURCE_DATE_EPOCH     timestamp of the files in the archives (default:
#                         the last commit's time), so archives are reproducible
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

INSTALL_KREW_ROOT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --install-krew-root)
            [[ $# -ge 2 && -n $2 ]] || ste_die "--install-krew-root needs a directory"
            INSTALL_KREW_ROOT="$2"
            shift 2
            ;;
        --install-krew-root=*)
            INSTALL_KREW_ROOT="${1#*=}"
            [[ -n ${INSTALL_KREW_ROOT} ]] || ste_die "--install-krew-root needs a directory"
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            ste_die "unknown argument '$1' (see --help)"
            ;;
    esac
done

BINS=(kubectl-ste kubectl_complete-ste)
TEMPLATE="${STE_REPO}/krew/ste.yaml.tmpl"
LICENSE_FILE="${STE_REPO}/LICENSE"

# The version in [workspace.package] of the workspace's Cargo.toml.
workspace_version() {
    awk '
        /^\[/ { section = $0; next }
        section == "[workspace.package]" && $1 == "version" {
            if (match($0, /"[^"]+"/)) { print substr($0, RSTART + 1, RLENGTH - 2); exit }
        }
    ' "${STE_REPO}/Cargo.toml"
}

host_platform() {
    local os arch
    case "$(uname -s)" in
        Linux) os=linux ;;
        Darwin) os=darwin ;;
        *) ste_die "cannot package for this host's OS ($(uname -s)): krew platforms here are linux and darwin" ;;
    esac
    case "$(uname -m)" in
        x86_64 | amd64) arch=amd64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) ste_die "cannot package for this host's CPU ($(uname -m)): krew platforms here are amd64 and arm64" ;;
    esac
    printf '%s/%s\n' "${os}" "${arch}"
}

# The krew platform (os/arch) a Rust target triple builds for.
triple_platform() {
    case "$1" in
        x86_64-*-linux-*) echo linux/amd64 ;;
        aarch64-*-linux-*) echo linux/arm64 ;;
        x86_64-apple-darwin) echo darwin/amd64 ;;
        aarch64-apple-darwin) echo darwin/arm64 ;;
        *) ste_die "STE_PLUGIN_TARGETS: '$1' is not a target of the release platforms (linux or darwin, amd64 or arm64)" ;;
    esac
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | awk '{ print $1 }'
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | awk '{ print $1 }'
    else
        ste_die "neither sha256sum nor shasum is installed"
    fi
}

# Checks that DIR holds both binaries, executable; says where they come from.
check_bins() {
    local dir="$1" origin="$2" bin
    for bin in "${BINS[@]}"; do
        [[ -f ${dir}/${bin} && -x ${dir}/${bin} ]] ||
            ste_die "${dir}/${bin} is missing or not executable (${origin})"
    done
}

# Writes dist/kubectl-ste_v<VERSION>_<os>_<arch>.tar.gz from the binaries
# in DIR and prints its path.
package_platform() {
    local platform="$1" dir="$2"
    local os="${platform%/*}" arch="${platform#*/}"
    local archive="${DIST_DIR}/kubectl-ste_v${VERSION}_${os}_${arch}.tar.gz"
    local stage="${WORK_DIR}/${os}_${arch}"
    mkdir -p "${stage}"
    local bin
    for bin in "${BINS[@]}"; do
        install -m 0755 "${dir}/${bin}" "${stage}/${bin}"
    done
    install -m 0644 "${LICENSE_FILE}" "${stage}/LICENSE"
    # GNU tar can make the archive reproducible; others get a plain one.
    local tar_flags=()
    if tar --version 2>/dev/null | grep 'GNU tar' >/dev/null; then
        tar_flags=(--sort=name --owner=0 --group=0 --numeric-owner "--mtime=@${SOURCE_DATE_EPOCH}")
    fi
    tar "${tar_flags[@]}" -C "${stage}" -cf - "${BINS[@]}" LICENSE | gzip -n -9 >"${archive}.tmp"
    mv -f "${archive}.tmp" "${archive}"
    printf '%s\n' "${archive}"
}

# Renders the template with the platforms in SHAS ("os/arch=sha;...").
render_manifest() {
    local shas="$1" out="$2"
    awk -v version="${VERSION}" -v homepage="${HOMEPAGE}" -v url_base="${URL_BASE}" -v shas="${shas}" '
        # Literal replacement: gsub would read "&" and "\\" in the value.
        function replace(s, placeholder, value,    out, i) {
            out = ""
            while ((i = index(s, placeholder)) > 0) {
                out = out substr(s, 1, i - 1) value
                s = substr(s, i + length(placeholder))
            }
            return out s
        }
        BEGIN {
            n = split(shas, pairs, ";")
            for (i = 1; i <= n; i++) {
                split(pairs[i], kv, "=")
                sha[kv[1]] = kv[2]
            }
            print "# krew plugin manifest for kubectl-ste v" version ", generated by"
            print "# scripts/package-plugin.sh from krew/ste.yaml.tmpl: edit the template."
        }
        !started { if ($0 !~ /^apiVersion:/) next; started = 1 }
        $1 == "#" && $2 == "@platform" { platform = $3; in_block = 1; seen[platform] = 1; next }
        $1 == "#" && $2 == "@end" { in_block = 0; next }
        in_block && !(platform in sha) { next }
        {
            line = replace($0, "{{VERSION}}", version)
            line = replace(line, "{{HOMEPAGE}}", homepage)
            line = replace(line, "{{URL_BASE}}", url_base)
            if (in_block) line = replace(line, "{{SHA256}}", sha[platform])
            print line
        }
        END {
            for (p in sha) if (!(p in seen)) { print "platform " p " is not in the template" > "/dev/stderr"; exit 2 }
        }
    ' "${TEMPLATE}" >"${out}.tmp" || ste_die "could not render ${TEMPLATE}"
    if grep -n '{{' "${out}.tmp" >&2; then
        ste_die "unreplaced placeholders left in the rendered manifest (above)"
    fi
    mv -f "${out}.tmp" "${out}"
}

# Paths given by the caller are relative to where it was started.
absolute() {
    if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s/%s\n' "${PWD}" "$1"; fi
}
if [[ -n ${STE_PLUGIN_BIN_DIR:-} ]]; then STE_PLUGIN_BIN_DIR="$(absolute "${STE_PLUGIN_BIN_DIR}")"; fi
if [[ -n ${STE_DIST_DIR:-} ]]; then STE_DIST_DIR="$(absolute "${STE_DIST_DIR}")"; fi
if [[ -n ${INSTALL_KREW_ROOT} ]]; then INSTALL_KREW_ROOT="$(absolute "${INSTALL_KREW_ROOT}")"; fi

cd "${STE_REPO}"
[[ -f ${TEMPLATE} ]] || ste_die "${TEMPLATE} is missing"
[[ -f ${LICENSE_FILE} ]] || ste_die "${LICENSE_FILE} is missing: krew wants a license in the archive"

VERSION="$(workspace_version)"
[[ ${VERSION} =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$ ]] ||
    ste_die "the workspace version '${VERSION}' in Cargo.toml is not semver: krew needs v<semver>"
URL_BASE="${STE_RELEASE_URL_BASE:-https://github.com/OWNER/ste/releases/download/v${VERSION}}"
URL_BASE="${URL_BASE%/}"
HOMEPAGE="${STE_HOMEPAGE:-https://github.com/OWNER/ste}"
url_re='^https?://[^[:space:]\"]+$'
for value in "${URL_BASE}" "${HOMEPAGE}"; do
    [[ ${value} =~ ${url_re} ]] ||
        ste_die "'${value}' is not a usable URL (http:// or https://, no spaces, quotes or backslashes)"
done
DIST_DIR="${STE_DIST_DIR:-${STE_REPO}/dist}"
TARGET_DIR="$(ste_target_dir)"
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH="$(git -C "${STE_REPO}" log -1 --format=%ct 2>/dev/null || date +%s)"
fi
mkdir -p "${DIST_DIR}"
DIST_DIR="$(cd "${DIST_DIR}" && pwd)"
WORK_DIR="$(mktemp -d)"
trap 'rm -rf "${WORK_DIR}"' EXIT

# platform → directory holding its binaries, in the order they are packaged.
PLATFORMS=()
declare -A BIN_DIR_OF=()

TARGETS="${STE_PLUGIN_TARGETS:-}"
read -r -a TRIPLES <<<"${TARGETS//,/ }"
for triple in "${TRIPLES[@]}"; do
    platform="$(triple_platform "${triple}")"
    [[ -z ${BIN_DIR_OF[${platform}]:-} ]] ||
        ste_die "STE_PLUGIN_TARGETS: two targets for ${platform} (${triple} and another)"
    dir="${TARGET_DIR}/${triple}/release"
    check_bins "${dir}" "STE_PLUGIN_TARGETS has ${triple}: build it first with cargo build --release -p kubectl-ste --target ${triple}"
    BIN_DIR_OF[${platform}]="${dir}"
    PLATFORMS+=("${platform}")
done

HOST="$(host_platform)"
if [[ -n ${BIN_DIR_OF[${HOST}]:-} ]]; then
    ste_say "host platform ${HOST}: taken from STE_PLUGIN_TARGETS (${BIN_DIR_OF[${HOST}]})"
elif [[ -n ${STE_PLUGIN_BIN_DIR:-} ]]; then
    check_bins "${STE_PLUGIN_BIN_DIR}" "STE_PLUGIN_BIN_DIR"
    ste_say "host platform ${HOST}: binaries from ${STE_PLUGIN_BIN_DIR} (not built)"
    BIN_DIR_OF[${HOST}]="${STE_PLUGIN_BIN_DIR}"
    PLATFORMS=("${HOST}" "${PLATFORMS[@]}")
else
    ste_find_cargo || ste_die "cargo is not installed (see README.md, Quick start)"
    ste_say "host platform ${HOST}: cargo build --release -p kubectl-ste"
    cargo build --release -p kubectl-ste
    check_bins "${TARGET_DIR}/release" "cargo build --release -p kubectl-ste"
    BIN_DIR_OF[${HOST}]="${TARGET_DIR}/release"
    PLATFORMS=("${HOST}" "${PLATFORMS[@]}")
fi

SHAS=""
declare -A ARCHIVE_OF=()
for platform in "${PLATFORMS[@]}"; do
    archive="$(package_platform "${platform}" "${BIN_DIR_OF[${platform}]}")"
    sha="$(sha256_of "${archive}")"
    ARCHIVE_OF[${platform}]="${archive}"
    SHAS+="${platform}=${sha};"
    ste_say "${platform}: ${archive} sha256 ${sha}"
done

MANIFEST="${DIST_DIR}/ste.yaml"
render_manifest "${SHAS%;}" "${MANIFEST}"
ste_say "manifest: ${MANIFEST} (v${VERSION}; platforms: ${PLATFORMS[*]})"

# The krew binary: $STE_KREW_BIN, the one build-counterparts.sh built, or
# kubectl-krew on PATH.
krew_bin() {
    if [[ -n ${STE_KREW_BIN:-} ]]; then
        printf '%s\n' "${STE_KREW_BIN}"
    elif [[ -x ${STE_REPO}/.build/bin/kubectl-krew ]]; then
        printf '%s\n' "${STE_REPO}/.build/bin/kubectl-krew"
    elif command -v kubectl-krew >/dev/null 2>&1; then
        command -v kubectl-krew
    else
        ste_die "krew is not installed: build it with scripts/build-counterparts.sh kubectl-krew (or set STE_KREW_BIN)"
    fi
}

# `kubectl krew ARGS...` into the krew root $1, with our krew first on PATH
# (kubectl runs the first kubectl-krew it finds).
krew() {
    local root="$1" bin
    shift
    bin="$(krew_bin)"
    KREW_ROOT="${root}" PATH="$(dirname "${bin}"):${PATH}" kubectl krew "$@"
}

# True if the krew root $1 has a plugin index. krew refuses every command
# but `install --manifest` without one; `kubectl krew update` clones it
# from the network.
has_index() {
    compgen -G "$1/index/*/.git" >/dev/null
}

# Removes the installed ste from the krew root $1: `kubectl krew uninstall`
# where krew can run it; in a root without an index (one this script made,
# on a machine that never fetched krew's index) the three entries krew's
# uninstall removes: the store, the bin link and the receipt.
remove_installed_ste() {
    local root="$1"
    # Earlier versions of this script linked the completion helper into
    # bin/; a link there that krew does not know makes krew declare the
    # whole krew root outdated once the store it points into is gone.
    if [[ -L ${root}/bin/kubectl_complete-ste ]]; then
        rm -f "${root}/bin/kubectl_complete-ste"
    fi
    if has_index "${root}"; then
        ste_say "ste is installed in ${root}: kubectl krew uninstall ste"
        krew "${root}" uninstall ste
    else
        ste_say "ste is installed in ${root}, which has no krew index (krew uninstall needs one): removing its store, bin link and receipt"
        rm -rf "${root}/store/ste" "${root}/bin/kubectl-ste" "${root}/receipts/ste.yaml"
    fi
}

if [[ -n ${INSTALL_KREW_ROOT} ]]; then
    mkdir -p "${INSTALL_KREW_ROOT}"
    INSTALL_KREW_ROOT="$(realpath "${INSTALL_KREW_ROOT}")"
    if [[ -e ${INSTALL_KREW_ROOT}/receipts/ste.yaml ]]; then
        remove_installed_ste "${INSTALL_KREW_ROOT}"
    fi
    ste_say "KREW_ROOT=${INSTALL_KREW_ROOT} kubectl krew install --manifest=${MANIFEST} --archive=${ARCHIVE_OF[${HOST}]}"
    krew "${INSTALL_KREW_ROOT}" install --manifest="${MANIFEST}" --archive="${ARCHIVE_OF[${HOST}]}" </dev/null
    # krew reports a failed install on stderr but exits 0: check its receipt.
    [[ -e ${INSTALL_KREW_ROOT}/receipts/ste.yaml && -x ${INSTALL_KREW_ROOT}/bin/kubectl-ste ]] ||
        ste_die "krew did not install ste into ${INSTALL_KREW_ROOT} (its output is above)"
fi
