# shellcheck shell=bash
# Helpers shared by the scripts in this directory. Source it; do not run it.

# The repository root (the directory above scripts/).
STE_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Prints a progress line on stderr, prefixed with the calling script's name.
ste_say() {
    printf '%s: %s\n' "$(basename "$0")" "$*" >&2
}

# Prints an error line on stderr and exits 1.
ste_die() {
    printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2
    exit 1
}

# Home directory of the user who ran sudo, empty if not run through sudo by
# a regular user.
ste_sudo_home() {
    if [[ ${EUID} -eq 0 && -n ${SUDO_USER:-} && ${SUDO_USER} != root ]]; then
        getent passwd "${SUDO_USER}" | cut -d: -f6
    fi
}

# Makes `cargo` callable. `sudo` resets PATH, so a toolchain installed with
# rustup by the user who ran sudo (~/.cargo/bin) is not on root's PATH; in
# that case use it, with that user's RUSTUP_HOME and CARGO_HOME. Returns 1
# if no cargo can be found.
ste_find_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        return 0
    fi
    local home
    home="$(ste_sudo_home)"
    if [[ -n ${home} && -x ${home}/.cargo/bin/cargo ]]; then
        export PATH="${home}/.cargo/bin:${PATH}"
        export CARGO_HOME="${CARGO_HOME:-${home}/.cargo}"
        if [[ -d ${home}/.rustup ]]; then
            export RUSTUP_HOME="${RUSTUP_HOME:-${home}/.rustup}"
        fi
        STE_ADOPTED_CARGO_HOME="${CARGO_HOME}"
        ste_say "using ${SUDO_USER}'s Rust toolchain from ${home}/.cargo/bin"
        return 0
    fi
    return 1
}

# The directory cargo builds into: $CARGO_TARGET_DIR (relative to the
# repository root if relative), else <repo>/target.
ste_target_dir() {
    local dir="${CARGO_TARGET_DIR:-target}"
    if [[ ${dir} != /* ]]; then
        dir="${STE_REPO}/${dir}"
    fi
    printf '%s\n' "${dir}"
}

# After building as root on behalf of a sudo user, gives the files root
# created in the target dir (and in an adopted CARGO_HOME) back to that
# user, so a later `cargo build` without sudo does not hit "Permission
# denied". Only files owned by root are touched.
ste_restore_ownership() {
    local home owner
    home="$(ste_sudo_home)"
    [[ -n ${home} ]] || return 0
    owner="$(stat -c %u "${STE_REPO}")"
    [[ ${owner} == "$(id -u "${SUDO_USER}")" ]] || return 0
    local group
    group="$(id -g "${SUDO_USER}")"
    local dirs=("$(ste_target_dir)")
    if [[ -n ${STE_ADOPTED_CARGO_HOME:-} ]]; then
        dirs+=("${STE_ADOPTED_CARGO_HOME}/registry" "${STE_ADOPTED_CARGO_HOME}/git")
    fi
    local d
    for d in "${dirs[@]}"; do
        if [[ -d ${d} ]]; then
            chown -R --from=0 "${owner}:${group}" "${d}" || true
        fi
    done
}

# "sudo " when the person at the terminal is not root (a regular user, or
# one who ran the script through sudo), else nothing: a hint built as
# "$(ste_root_prefix)CMD" runs as written for root and for a sudo user.
ste_root_prefix() {
    if [[ ${EUID} -ne 0 || (-n ${SUDO_USER:-} && ${SUDO_USER} != root) ]]; then
        printf 'sudo '
    fi
}

# The user who invoked the script: the sudo user when run through sudo by
# a regular user, else the current user.
ste_invoking_user() {
    if [[ -n $(ste_sudo_home) ]]; then
        printf '%s\n' "${SUDO_USER}"
    else
        id -un
    fi
}

# The home directory of the user who invoked the script.
ste_invoking_home() {
    local home
    home="$(ste_sudo_home)"
    printf '%s\n' "${home:-${HOME}}"
}

# Gives PATH (a file or directory, recursively) and what root created under
# it back to the sudo user, when run through sudo by a regular user. Only
# files owned by root are touched.
ste_give_to_invoking_user() {
    [[ -n $(ste_sudo_home) ]] || return 0
    chown -R --from=0 "$(id -u "${SUDO_USER}"):$(id -g "${SUDO_USER}")" "$1" || true
}
