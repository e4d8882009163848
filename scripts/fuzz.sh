#!/usr/bin/env bash
# Runs STE's cargo-fuzz (libFuzzer) targets in fuzz/ for a bounded time
# each, starting from the committed seeds (fuzz/seeds/TARGET) plus the
# corpus earlier runs grew (fuzz/corpus/TARGET, not committed). Prints each
# target's executions (libFuzzer's stat::number_of_executed_units) and fails
# if any target crashed: a panic, a failed assertion, a timeout of one
# input, or memory over --rss-limit-mb. The crashing input is kept in
# fuzz/artifacts/TARGET/, the run's log in fuzz/logs/TARGET.log; docs/fuzzing.md
# says how to turn it into a regression test.
#
# Needs the nightly toolchain and cargo-fuzz (scripts/install-deps.sh
# installs both).
#
# Usage: scripts/fuzz.sh [--seconds N] [--rss-limit-mb M] [TARGET...]
#   --seconds N        run each target N seconds (default 20; the long run
#                      is --seconds 600)
#   --rss-limit-mb M   libFuzzer's -rss_limit_mb (default 2048)
#   TARGET...          some of: envelope txn key_range admin (default: all)
# STE_FUZZ_TARGET_DIR: where the targets are built (default
# ~/.cache/ste/fuzz-target, kept between runs and checkouts).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_TARGETS=(envelope txn key_range admin)
seconds=20
rss_limit_mb=2048
targets=()

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds)
            [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || ste_die "--seconds needs a positive whole number of seconds"
            seconds="$2"
            shift 2
            ;;
        --rss-limit-mb)
            [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || ste_die "--rss-limit-mb needs a positive whole number"
            rss_limit_mb="$2"
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*) ste_die "unknown option $1 (see --help)" ;;
        *)
            case " ${ALL_TARGETS[*]} " in
                *" $1 "*) targets+=("$1") ;;
                *) ste_die "unknown target $1: the targets are ${ALL_TARGETS[*]}" ;;
            esac
            shift
            ;;
    esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")

ste_find_cargo || ste_die "cargo is not on PATH: run scripts/install-deps.sh"
if ! cargo +nightly --version >/dev/null 2>&1; then
    ste_die "the nightly Rust toolchain is missing (cargo fuzz needs it): run scripts/install-deps.sh, or: rustup toolchain install nightly --profile minimal"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    ste_die "cargo-fuzz is not installed: run scripts/install-deps.sh, or: cargo install cargo-fuzz --locked"
fi

cd "${STE_REPO}"
# The sanitizer build of the dependencies takes ten minutes and more: it is
# kept outside the checkout, as Go keeps its build cache, so a fresh clone
# (CI) rebuilds only STE's own crates.
target_dir="${STE_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/ste/fuzz-target}"
mkdir -p "${target_dir}"
# cargo fuzz build takes one target or none (all of them).
build_args=(--target-dir "${target_dir}")
[[ ${#targets[@]} -eq 1 ]] && build_args+=("${targets[0]}")
ste_say "building the fuzz targets in ${target_dir} (cargo +nightly fuzz build: release with debug assertions, AddressSanitizer)"
cargo +nightly fuzz build "${build_args[@]}" || ste_die "cargo fuzz build failed"

failed=()
summary=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/${target}"
    mkdir -p "${corpus}" "fuzz/artifacts/${target}" fuzz/logs
    log="fuzz/logs/${target}.log"
    ste_say "fuzzing ${target} for ${seconds}s (corpus ${corpus}, seeds fuzz/seeds/${target})"
    status=0
    cargo +nightly fuzz run --target-dir "${target_dir}" "${target}" "${corpus}" "fuzz/seeds/${target}" -- \
        -max_total_time="${seconds}" -rss_limit_mb="${rss_limit_mb}" -malloc_limit_mb="${rss_limit_mb}" \
        -timeout=10 -print_final_stats=1 >"${log}" 2>&1 || status=$?
    # (named number_of_executed_runs by older libFuzzers)
    runs="$(sed -n 's/^stat::number_of_executed_\(units\|runs\):[[:space:]]*//p' "${log}" | tail -n 1)"
    units="$(find "${corpus}" -type f | wc -l)"
    if [[ ${status} -ne 0 ]]; then
        tail -n 60 "${log}" >&2
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "${log}" | tail -n 1)"
        ste_say "FAILED: ${target} crashed (exit ${status}) after ${runs:-?} executions; input: ${artifact:-see the log above}"
        failed+=("${target}")
        summary+=("$(printf '%-10s %12s executions  CRASHED (%s)' "${target}" "${runs:-?}" "${artifact:-no artifact}")")
    else
        [[ -n ${runs} ]] || ste_die "${target}: libFuzzer printed no stat::number_of_executed_units (see ${log})"
        summary+=("$(printf '%-10s %12s executions in %ss, corpus %s inputs' "${target}" "${runs}" "${seconds}" "${units}")")
    fi
done

printf '%s\n' "fuzz results (${seconds}s per target, -rss_limit_mb=${rss_limit_mb}):" "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    ste_die "crashed: ${failed[*]} (reproduce: cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/FILE; see docs/fuzzing.md)"
fi
