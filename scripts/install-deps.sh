#!/usr/bin/env bash
# Installs what building, running and testing STE needs on Debian/Ubuntu:
#   etcd-server etcd-client   real etcd (the shards) and etcdctl
#   protobuf-compiler         protoc
#   libprotobuf-dev           google/protobuf/*.proto, which protoc imports
#   gcc libc6-dev binutils    the linker cargo calls; strip (plugin packaging)
#   openssl                   test certificates (TLS tests, deploy/pki.sh)
#   curl ca-certificates      HTTP checks (/metrics, /healthz)
#   iproute2                  ip/ss (network namespaces in tests, port checks)
#   git                       krew's plugin index (an empty local one in tests)
#   pip: grpcio grpcio-reflection  a generic gRPC client for one test
#   rustup: nightly toolchain  cargo fuzz builds with it (scripts/fuzz.sh)
#   cargo: cargo-fuzz (pinned)  the libFuzzer driver (scripts/fuzz.sh)
# Only missing packages are installed; `apt-get update` runs only if one is
# missing. Uses sudo only when not root. Also makes sure the etcd packaged as
# a system service is not running, and that a Rust toolchain is present.
#
# Usage: scripts/install-deps.sh
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(etcd-server etcd-client protobuf-compiler libprotobuf-dev gcc libc6-dev binutils openssl
    curl ca-certificates iproute2 git)

# Each file the build and the tests use, and the package of PACKAGES that
# must provide it. Checked after installing: a file that is missing, or that
# comes from a package this script does not install (say, one installed by
# hand on this machine), fails here instead of on the next fresh machine.
PROVIDED=(
    "etcd:etcd-server"
    "etcdctl:etcd-client"
    "protoc:protobuf-compiler"
    "/usr/include/google/protobuf/descriptor.proto:libprotobuf-dev"
    "/usr/include/google/protobuf/timestamp.proto:libprotobuf-dev"
    "gcc:gcc"
    "crt1.o:libc6-dev"
    "strip:binutils"
    "openssl:openssl"
    "curl:curl"
    "ip:iproute2"
    "ss:iproute2"
    "git:git"
    "update-ca-certificates:ca-certificates"
)

SUDO=()
if [[ ${EUID} -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    fi
fi

as_root() {
    if [[ ${EUID} -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        ste_die "need root to run '$*' and sudo is not installed: run this script as root"
    fi
    "${SUDO[@]}" "$@"
}

# True if Debian package $1 is installed. (No pipe into `grep -q`: with
# pipefail, grep's early exit can fail dpkg-query with SIGPIPE.)
installed() {
    local status
    status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
    [[ ${status} == "install ok installed" ]]
}

# --- apt packages -----------------------------------------------------------
if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    ste_die "this script supports Debian/Ubuntu (dpkg + apt-get) only; install these by hand: ${PACKAGES[*]}, and a Rust toolchain"
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if ! installed "${p}"; then
        missing+=("${p}")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    ste_say "apt packages already installed: ${PACKAGES[*]}"
else
    ste_say "installing missing apt packages: ${missing[*]}"
    ste_say "running: apt-get update"
    as_root apt-get update
    ste_say "running: apt-get install -y --no-install-recommends ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The package that owns file $1, as dpkg knows it (tries the /usr-merged
# twin of the path too: dpkg may have recorded /bin/ip for /usr/bin/ip).
owner_of() {
    local path="$1" candidate
    for candidate in "${path}" "${path#/usr}" "/usr${path}"; do
        if dpkg-query -S "${candidate}" 2>/dev/null | sed -n '1s/:.*//p' | grep .; then
            return 0
        fi
    done
    return 1
}

# Where "$1" (a command, an absolute path, or crt1.o) is on this machine.
locate_needed() {
    case "$1" in
        /*) [[ -e $1 ]] && printf '%s\n' "$1" ;;
        crt1.o) gcc -print-file-name=crt1.o 2>/dev/null | grep '^/' ;;
        *) command -v "$1" 2>/dev/null ;;
    esac
}

verify_provided() {
    local entry need want path owner bad=0
    for entry in "${PROVIDED[@]}"; do
        need="${entry%%:*}"
        want="${entry##*:}"
        if ! path="$(locate_needed "${need}")" || [[ -z ${path} ]]; then
            ste_say "error: ${need} is missing although package ${want} is installed"
            bad=1
            continue
        fi
        # The command itself, or the file its symlinks end at.
        owner="$(owner_of "${path}" || owner_of "$(realpath "${path}")" || true)"
        case " ${PACKAGES[*]} " in
            *" ${owner%%:*} "*) ;;
            *)
                ste_say "error: ${need} (${path}) comes from ${owner:-no Debian package} (expected ${want}), which install-deps.sh does not install: a fresh machine would not have it"
                bad=1
                ;;
        esac
    done
    ((bad == 0)) || ste_die "the packages above are not what this script installs: fix PACKAGES/PROVIDED in $0"
    ste_say "verified: every tool and header the build and tests use comes from a package this script installs"
}
verify_provided
ste_say "etcd: $(etcd --version 2>/dev/null | head -n 1)"

# --- the packaged etcd service ----------------------------------------------
# etcd-server ships etcd.service, which apt may have started (listening on
# 127.0.0.1:2379). STE runs its own etcd processes; the system one is not
# wanted. Without a running systemd (containers) nothing was started.
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    if systemctl cat etcd.service >/dev/null 2>&1; then
        if systemctl is-active --quiet etcd.service || systemctl is-enabled --quiet etcd.service; then
            ste_say "stopping and disabling the packaged etcd service: systemctl disable --now etcd"
            as_root systemctl disable --now etcd.service
        else
            ste_say "the packaged etcd service is already stopped and disabled"
        fi
    fi
else
    ste_say "systemd is not running: no packaged etcd service to stop"
fi

# --- Python test client -------------------------------------------------------
# One integration test calls the agent from Python's grpcio with server
# reflection (no STE code generated), as a generic gRPC client would.
if command -v python3 >/dev/null 2>&1; then
    if python3 -c 'import grpc, grpc_reflection, google.protobuf' >/dev/null 2>&1; then
        ste_say "python3 grpcio + grpcio-reflection already installed"
    else
        if ! python3 -m pip --version >/dev/null 2>&1; then
            ste_say "installing python3-pip"
            as_root env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends python3-pip
        fi
        ste_say "running: python3 -m pip install grpcio grpcio-reflection protobuf"
        python3 -m pip install --quiet grpcio grpcio-reflection protobuf ||
            python3 -m pip install --quiet --break-system-packages grpcio grpcio-reflection protobuf
    fi
else
    ste_die "python3 is not installed: apt-get install python3 python3-pip"
fi

# --- Rust toolchain ---------------------------------------------------------
if ! ste_find_cargo; then
    cat >&2 <<'EOF'
install-deps.sh: error: cargo is not on PATH. STE needs a Rust toolchain
(edition 2024, Rust 1.88 or newer) with rustfmt and clippy. Install rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "$HOME/.cargo/env"
    rustup component add rustfmt clippy
then run this script again.
EOF
    exit 1
fi
ste_say "rust: $(cargo --version)"
for component in fmt clippy; do
    if ! cargo "${component}" --version >/dev/null 2>&1; then
        ste_say "warning: 'cargo ${component}' is not available (scripts/test.sh needs it): rustup component add ${component/fmt/rustfmt}"
    fi
done
# --- fuzzing: the nightly toolchain and cargo-fuzz ----------------------------
# scripts/fuzz.sh builds the targets in fuzz/ with `cargo +nightly fuzz`
# (libFuzzer needs nightly's -Zsanitizer and coverage flags). The stable
# toolchain stays the default; nightly is used only there.
CARGO_FUZZ_VERSION=0.13.2
if cargo +nightly --version >/dev/null 2>&1; then
    ste_say "nightly toolchain: $(cargo +nightly --version)"
elif command -v rustup >/dev/null 2>&1; then
    ste_say "running: rustup toolchain install nightly --profile minimal (for cargo fuzz)"
    if ! rustup toolchain install nightly --profile minimal || ! cargo +nightly --version >/dev/null 2>&1; then
        ste_die "FUZZING WILL NOT WORK: the nightly Rust toolchain is missing and 'rustup toolchain install nightly --profile minimal' failed (see above); scripts/fuzz.sh needs it"
    fi
else
    ste_die "FUZZING WILL NOT WORK: the nightly Rust toolchain is missing and rustup is not installed to fetch it; scripts/fuzz.sh needs 'cargo +nightly' (install rustup, then: rustup toolchain install nightly --profile minimal)"
fi
if [[ "$(cargo fuzz --version 2>/dev/null)" == "cargo-fuzz ${CARGO_FUZZ_VERSION}" ]]; then
    ste_say "cargo-fuzz ${CARGO_FUZZ_VERSION} already installed"
else
    ste_say "running: cargo install cargo-fuzz --locked --version ${CARGO_FUZZ_VERSION} (a few minutes)"
    cargo install cargo-fuzz --locked --version "${CARGO_FUZZ_VERSION}" ||
        ste_die "installing cargo-fuzz ${CARGO_FUZZ_VERSION} failed (see above): scripts/fuzz.sh needs it"
fi
ste_say "dependencies are in place"
