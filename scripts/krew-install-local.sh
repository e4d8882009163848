#!/usr/bin/env bash
# Installs a krew plugin archive into a krew root the way
#   KREW_ROOT=DIR kubectl krew install --manifest=MANIFEST --archive=ARCHIVE
# does, for machines without krew (and for the tests):
#   - picks the manifest's platform for this OS and CPU (KREW_OS and
#     KREW_ARCH override them, as they do for krew);
#   - checks the archive's sha256 against that platform's `sha256`;
#   - unpacks it and applies the platform's `files` (from: glob in the
#     archive, to: directory in the install dir) into
#     DIR/store/<name>/<version>/;
#   - links DIR/bin/kubectl-<name> (dashes in the name become underscores)
#     to ../store/<name>/<version>/<bin>, a relative link as current krew
#     releases make (older ones linked the absolute path);
#   - writes the receipt DIR/receipts/<name>.yaml: the manifest with
#     metadata.creationTimestamp and status.source.name "detached" (krew's
#     index name for a plugin installed from a manifest file).
# Like krew, it refuses to install over an installed plugin: uninstall first.
# krew links only the plugin's `bin`; --link-completion also links
# kubectl_complete-<name> from the store into DIR/bin, where kubectl (1.26
# or newer) finds it for shell completion of `kubectl <name> ...`: krew does
# not do that, it is what you would otherwise do by hand.
#
# It reads manifests laid out as krew/ste.yaml.tmpl renders them (one
# `key: value` per line, platforms as `- selector:` blocks), not any YAML.
#
# Usage: scripts/krew-install-local.sh [--link-completion] ARCHIVE MANIFEST KREW_ROOT
#        scripts/krew-install-local.sh --uninstall NAME KREW_ROOT
# Then: export PATH="KREW_ROOT/bin:$PATH"; kubectl plugin list
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | awk '{ print $1 }'
    else
        shasum -a 256 "$1" | awk '{ print $1 }'
    fi
}

# krew's name for the symlink of plugin NAME.
bin_link_name() {
    printf 'kubectl-%s\n' "${1//-/_}"
}

uninstall() {
    local name="$1" root="$2"
    [[ -f ${root}/receipts/${name}.yaml ]] || ste_die "plugin \"${name}\" is not installed in ${root}"
    local link
    for link in "${root}/bin/$(bin_link_name "${name}")" "${root}/bin/kubectl_complete-${name}"; do
        if [[ -L ${link} ]]; then
            rm -f "${link}"
        elif [[ -e ${link} ]]; then
            ste_die "${link} is not a symlink: not removing it"
        fi
    done
    rm -rf "${root:?}/store/${name}"
    rm -f "${root}/receipts/${name}.yaml"
    ste_say "uninstalled plugin: ${name}"
}

LINK_COMPLETION=0
case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
    --uninstall)
        [[ $# -eq 3 ]] || ste_die "usage: $0 --uninstall NAME KREW_ROOT"
        uninstall "$2" "$3"
        exit 0
        ;;
    --link-completion)
        LINK_COMPLETION=1
        shift
        ;;
esac
[[ $# -eq 3 ]] || ste_die "usage: $0 [--link-completion] ARCHIVE MANIFEST KREW_ROOT (see --help)"
ARCHIVE="$1"
MANIFEST="$2"
KREW_ROOT_DIR="$3"
[[ -f ${ARCHIVE} ]] || ste_die "archive ${ARCHIVE} not found"
[[ -f ${MANIFEST} ]] || ste_die "manifest ${MANIFEST} not found"

case "${KREW_OS:-$(uname -s)}" in
    Linux | linux) OS=linux ;;
    Darwin | darwin) OS=darwin ;;
    *) OS="${KREW_OS:-$(uname -s)}" ;;
esac
case "${KREW_ARCH:-$(uname -m)}" in
    x86_64 | amd64) ARCH=amd64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    *) ARCH="${KREW_ARCH:-$(uname -m)}" ;;
esac

# Prints "name N", "version V", and for the platform matching OS/ARCH
# "sha256 S", "bin B" and one "file FROM TO" per files entry.
read_manifest() {
    awk -v want_os="${OS}" -v want_arch="${ARCH}" '
        function value(line) {
            sub(/^[^:]*:[ \t]*/, "", line)
            sub(/[ \t]+#.*$/, "", line)
            gsub(/^["\047]|["\047]$/, "", line)
            return line
        }
        function flush() {
            if (block && os == want_os && arch == want_arch) {
                matched++
                print "sha256 " sha
                print "bin " bin
                for (i = 1; i <= nfiles; i++) print "file " from[i] " " to[i]
            }
            block = 0; os = ""; arch = ""; sha = ""; bin = ""; nfiles = 0
        }
        /^[ \t]*#/ { next }
        /^apiVersion:/ { print "apiVersion " value($0) }
        /^kind:/ { print "kind " value($0) }
        /^metadata:/ { section = "metadata" }
        /^spec:/ { section = "spec" }
        section == "metadata" && /^  name:/ { print "name " value($0) }
        section == "spec" && /^  version:/ { print "version " value($0) }
        /^    - selector:/ { flush(); block = 1; next }
        block && /^          os:/ { os = value($0) }
        block && /^          arch:/ { arch = value($0) }
        block && /^      sha256:/ { sha = value($0) }
        block && /^      bin:/ { bin = value($0) }
        block && /^        - from:/ { nfiles++; from[nfiles] = value($0) }
        block && /^          to:/ { to[nfiles] = value($0) }
        END { flush(); if (matched > 1) print "duplicate " matched }
    ' "${MANIFEST}"
}

NAME="" VERSION="" SHA="" BIN="" API_VERSION="" KIND=""
FILES_FROM=() FILES_TO=()
while read -r key first second; do
    case "${key}" in
        apiVersion) API_VERSION="${first}" ;;
        kind) KIND="${first}" ;;
        name) NAME="${first}" ;;
        version) VERSION="${first}" ;;
        sha256) SHA="${first}" ;;
        bin) BIN="${first}" ;;
        file)
            FILES_FROM+=("${first}")
            FILES_TO+=("${second}")
            ;;
        duplicate) ste_die "${MANIFEST} has ${first} platforms for ${OS}/${ARCH}" ;;
    esac
done < <(read_manifest)

[[ ${API_VERSION} == krew.googlecontainertools.github.com/v1alpha2 ]] ||
    ste_die "${MANIFEST}: apiVersion '${API_VERSION}' is not krew.googlecontainertools.github.com/v1alpha2"
[[ ${KIND} == Plugin ]] || ste_die "${MANIFEST}: kind '${KIND}' is not Plugin"
[[ ${NAME} =~ ^[A-Za-z0-9_-]+$ ]] || ste_die "${MANIFEST}: plugin name '${NAME}' is not allowed"
[[ ${VERSION} =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] || ste_die "${MANIFEST}: version '${VERSION}' is not v<semver>"
[[ -n ${SHA} ]] || ste_die "plugin \"${NAME}\" does not offer installation for this platform (${OS}/${ARCH})"
[[ ${SHA} =~ ^[a-f0-9]{64}$ ]] || ste_die "${MANIFEST}: sha256 '${SHA}' of ${OS}/${ARCH} is not 64 lowercase hex digits"
[[ -n ${BIN} ]] || ste_die "${MANIFEST}: no bin for ${OS}/${ARCH}"
if [[ ${#FILES_FROM[@]} -eq 0 ]]; then
    FILES_FROM=("*") # krew's default
    FILES_TO=(".")
fi

RECEIPT="${KREW_ROOT_DIR}/receipts/${NAME}.yaml"
[[ ! -e ${RECEIPT} ]] ||
    ste_die "plugin \"${NAME}\" is already installed in ${KREW_ROOT_DIR} (uninstall it first: $0 --uninstall ${NAME} ${KREW_ROOT_DIR})"

ACTUAL="$(sha256_of "${ARCHIVE}")"
[[ ${ACTUAL} == "${SHA}" ]] ||
    ste_die "checksum does not match: ${ARCHIVE} has sha256 ${ACTUAL}, the manifest says ${SHA}"

STAGE="$(mktemp -d)"
trap 'rm -rf "${STAGE}"' EXIT
tar -xzf "${ARCHIVE}" -C "${STAGE}/" || ste_die "cannot unpack ${ARCHIVE}"

INSTALL_DIR="${KREW_ROOT_DIR}/store/${NAME}/${VERSION}"
rm -rf "${INSTALL_DIR}"
mkdir -p "${INSTALL_DIR}" "${KREW_ROOT_DIR}/bin" "${KREW_ROOT_DIR}/receipts"
for i in "${!FILES_FROM[@]}"; do
    from="${FILES_FROM[i]}" to="${FILES_TO[i]}"
    [[ ${from} != *..* && ${to} != *..* && ${from} != /* && ${to} != /* ]] ||
        ste_die "${MANIFEST}: file operation ${from} -> ${to} leaves the archive or the install dir"
    shopt -s nullglob dotglob
    # shellcheck disable=SC2206 # the glob is meant to expand here
    matches=("${STAGE}"/${from})
    shopt -u nullglob dotglob
    [[ ${#matches[@]} -gt 0 ]] || ste_die "${ARCHIVE}: nothing matches files.from '${from}'"
    mkdir -p "${INSTALL_DIR}/${to}"
    for match in "${matches[@]}"; do
        mv -f "${match}" "${INSTALL_DIR}/${to}/"
    done
done

TARGET="${INSTALL_DIR}/${BIN#./}"
[[ -f ${TARGET} ]] || ste_die "can't create symbolic link, source binary (${TARGET}) cannot be found in extracted archive"
[[ -x ${TARGET} ]] || ste_die "${TARGET} is not executable"

link() {
    local file="$1" link_name="$2"
    local dst="${KREW_ROOT_DIR}/bin/${link_name}"
    if [[ -e ${dst} || -L ${dst} ]]; then
        [[ -L ${dst} ]] || ste_die "${dst} exists and is not a symlink"
        rm -f "${dst}"
    fi
    ln -s "../store/${NAME}/${VERSION}/${file}" "${dst}"
}
link "${BIN#./}" "$(bin_link_name "${NAME}")"
if [[ ${LINK_COMPLETION} -eq 1 ]]; then
    [[ -x ${INSTALL_DIR}/kubectl_complete-${NAME} ]] ||
        ste_die "--link-completion: ${INSTALL_DIR}/kubectl_complete-${NAME} is not in the archive"
    link "kubectl_complete-${NAME}" "kubectl_complete-${NAME}"
fi

# The receipt: the manifest, plus what krew adds to it.
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
awk -v now="${NOW}" '
    { print }
    /^metadata:/ { print "  creationTimestamp: \"" now "\"" }
    END { print "status:"; print "  source:"; print "    name: detached" }
' "${MANIFEST}" >"${RECEIPT}"

ste_say "installed plugin: ${NAME} ${VERSION} (${OS}/${ARCH}) in ${KREW_ROOT_DIR}"
ste_say "use it with: export PATH=\"${KREW_ROOT_DIR}/bin:\$PATH\"; kubectl ${NAME} --help"
