#!/usr/bin/env bash
# The STE paper's experiment on the local Kubernetes control plane: create
# Pods at fixed rates and as fast as possible, and measure create
# throughput and pod startup latency (create -> scheduled -> Running), once
# with Pods in STE and once with Pods in a 3-member etcd on disk (fsync on).
# Both use the control plane of scripts/local-cluster.sh (kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok playing the Nodes);
# only kube-apiserver's --etcd-servers-overrides=/pods#... differs:
#
#   ste    /pods#http://127.0.0.1:2479 (the router; its three tmpfs shards)
#   etcd3  /pods#http://127.0.0.5:2579;http://127.0.0.6:2579;http://127.0.0.7:2579
#          (members pods-etcd-0..2, peers on :2580, data on disk under
#          STE_POD_STARTUP_DIR, fsync on). The agents and the router run
#          too, idle, so that both runs have the same processes.
#
# Everything else (Namespaces, ServiceAccounts, Nodes, Leases, ...) is in
# the control-plane etcd on disk (127.0.0.1:2379) in both runs. The load
# and the measurement are podstart (e2e/podstart, Go, client-go), built
# into .build/bin/podstart. The cluster is brought up fresh for each
# backend and taken down at the end, also on error or Ctrl-C.
#
# Usage: scripts/pod-startup.sh [options]
#   --pods N            Pods per run (200)
#   --runs LIST         rates in Pods/s and/or 'max', comma-separated
#                       (10,50,100,max)
#   --concurrency N     creators of a 'max' run (16)
#   --backends LIST     comma-separated, run in this order (ste,etcd3):
#                         ste          Pods in STE
#                         etcd3        Pods in the 3-member etcd, plain disk
#                         etcd3+D      the same with D (e.g. 2ms) added to
#                                      every fsync: the data dirs go on
#                                      ste-fsync-delay (a FUSE passthrough
#                                      from the bench crate; found in
#                                      STE_FSYNC_DELAY_BIN,
#                                      <CARGO_TARGET_DIR>/release or PATH)
#   --fsync-delay D     shorthand: etcd3 in --backends means etcd3+D
#   --repeat N          run the backends N times (1), every other time in
#                       the reverse order; the table shows the median of
#                       each figure over the repetitions
#   --scheduler-qps N   kube-scheduler's --kube-api-qps (burst 2N); 5000 by
#                       default (as kwokctl's --disable-qps-limits), so that
#                       its client limit (default 50) does not cap the
#                       rate; 'default' keeps the scheduler's defaults
#   --router-profile P  release (default) or debug: which ste-router build
#   --results DIR       where the results go (STE_POD_STARTUP_DIR/results/<time>)
#   --build-only        build podstart (and the router) and exit
# Needs root (the agents mount tmpfs) and the counterparts built
# (scripts/build-counterparts.sh, which local-cluster.sh runs).
#
# Results: <results>/rep<k>/<backend>.json (per run: throughput, latency
# percentiles, CPU seconds per process), <backend>-<run>.csv (one row per
# Pod), the logs of each 'up'; <results>/summary.md (the tables printed at
# the end) and summary.csv. The table alone again:
#   scripts/pod-startup-summary.py <results>
#
# Environment:
#   STE_POD_STARTUP_DIR  data of the 3-member etcd and the results
#                        (/var/tmp/ste-pod-startup; must be on a disk, not
#                        a tmpfs)
#   STE_LOCAL_DIR, CARGO_TARGET_DIR, KUBECONFIG: as for local-cluster.sh
#   STE_FSYNC_DELAY_BIN  the ste-fsync-delay binary, if not found otherwise
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE="$(realpath -m -- "${STE_POD_STARTUP_DIR:-/var/tmp/ste-pod-startup}")"
LOCAL_DIR="$(realpath -m -- "${STE_LOCAL_DIR:-/tmp/ste-local}")"
TARGET_DIR="$(ste_target_dir)"
BIN="${STE_REPO}/.build/bin"
PODSTART_SRC="${STE_REPO}/e2e/podstart"
PODSTART_BIN="${BIN}/podstart"
PODSTART_STAMP="${STE_REPO}/.build/stamps/podstart"
LOCAL_CLUSTER="${STE_REPO}/scripts/local-cluster.sh"

# The 3-member etcd of the etcd3 backend: one loopback address per member
# (like three machines), the same ports on each.
PODS_ETCD_NAMES=(pods-etcd-0 pods-etcd-1 pods-etcd-2)
declare -A PODS_ETCD_IPS=([pods-etcd-0]=127.0.0.5 [pods-etcd-1]=127.0.0.6 [pods-etcd-2]=127.0.0.7)
PODS_ETCD_CLIENT_PORT=2579
PODS_ETCD_PEER_PORT=2580
PODS_ETCD_DIR="${BASE}/etcd"
PODS_ETCD_WAIT=60

PODS=200
RUNS=10,50,100,max
CONCURRENCY=16
BACKENDS=ste,etcd3
FSYNC_DELAY=""
REPEAT=1
SCHEDULER_QPS=5000
ROUTER_PROFILE=release
RESULTS=""
BUILD_ONLY=""

# What the EXIT trap must undo.
CLUSTER_UP=""
PODSTART_PID=""

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

# Builds podstart into .build/bin unless its stamp (Go version, go.mod,
# go.sum and the sources) still matches, the way build-counterparts.sh
# skips a counterpart that is up to date.
build_podstart() {
    command -v go >/dev/null || ste_die "go is not on PATH (Go 1.26 or newer, see docs/counterparts.md)"
    local stamp
    stamp="$(
        cd "${PODSTART_SRC}"
        GOTOOLCHAIN=local go version
        sha256sum go.mod go.sum ./*.go
    )"
    if [[ -x ${PODSTART_BIN} && -f ${PODSTART_STAMP} && $(<"${PODSTART_STAMP}") == "${stamp}" ]]; then
        return 0
    fi
    ste_say "building podstart (e2e/podstart) into ${PODSTART_BIN}"
    mkdir -p "${BIN}" "$(dirname "${PODSTART_STAMP}")"
    (cd "${PODSTART_SRC}" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 \
        go build -trimpath -o "${PODSTART_BIN}.tmp" .) || ste_die "building podstart failed"
    mv -f "${PODSTART_BIN}.tmp" "${PODSTART_BIN}"
    printf '%s\n' "${stamp}" >"${PODSTART_STAMP}"
}

# The router binary local-cluster.sh is to run.
router_bin() {
    printf '%s/%s/ste-router\n' "${TARGET_DIR}" "${ROUTER_PROFILE}"
}

build_router() {
    [[ ${ROUTER_PROFILE} == release ]] || return 0
    ste_find_cargo || ste_die "cargo not found (scripts/install-deps.sh installs it)"
    ste_say "building the release router: cargo build --release -p ste-router"
    (cd "${STE_REPO}" && cargo build --release -p ste-router) || ste_die "cargo build --release -p ste-router failed"
}

# The ste-fsync-delay binary, or nothing.
fsync_delay_bin() {
    local b
    for b in "${STE_FSYNC_DELAY_BIN:-}" "${TARGET_DIR}/release/ste-fsync-delay" "$(command -v ste-fsync-delay || true)"; do
        if [[ -n ${b} && -x ${b} ]]; then
            printf '%s\n' "${b}"
            return 0
        fi
    done
}

# True if $1 is mounted (a line of /proc/self/mountinfo names it).
is_mounted() {
    awk '{ print $5 }' /proc/self/mountinfo | grep -qxF -- "$1"
}

# True if $1 is the PID of a running process whose binary is named $2.
is_running() {
    local pid="$1" exe
    [[ ${pid} =~ ^[0-9]+$ && -d /proc/${pid} ]] || return 1
    grep -q '^State:[[:space:]]*Z' "/proc/${pid}/status" 2>/dev/null && return 1
    exe="$(readlink "/proc/${pid}/exe" 2>/dev/null || true)"
    [[ ${exe} == */"$2" || ${exe} == */"$2 (deleted)" ]]
}

# Stops the process in pid file $1 (binary $2): SIGTERM, SIGKILL after 30 s.
stop_pidfile() {
    local file="$1" name="$2" pid i
    [[ -f ${file} ]] || return 0
    pid="$(<"${file}")"
    if is_running "${pid}" "${name}"; then
        kill -TERM "${pid}" 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do
            is_running "${pid}" "${name}" || break
            sleep 0.1
        done
        if is_running "${pid}" "${name}"; then
            ste_say "${name} (pid ${pid}) did not stop within 30 s: SIGKILL"
            kill -KILL "${pid}" 2>/dev/null || true
        fi
    fi
    rm -f "${file}"
}

pods_etcd_url() {
    printf 'http://%s:%s' "${PODS_ETCD_IPS[$1]}" "$2"
}

# kube-apiserver's list of the 3-member etcd's client URLs (';'-separated).
pods_etcd_servers() {
    local name urls=()
    for name in "${PODS_ETCD_NAMES[@]}"; do
        urls+=("$(pods_etcd_url "${name}" "${PODS_ETCD_CLIENT_PORT}")")
    done
    (
        IFS=';'
        printf '%s\n' "${urls[*]}"
    )
}

# Starts the 3-member etcd with empty data dirs on disk (on ste-fsync-delay
# mounts adding $1 to each fsync, if $1 is not empty) and waits until it is
# healthy.
start_pods_etcd() {
    local delay="$1" name cluster="" delay_bin=""
    if [[ -n ${delay} ]]; then
        delay_bin="$(fsync_delay_bin)"
        [[ -n ${delay_bin} ]] || ste_die "ste-fsync-delay is not available (not in STE_FSYNC_DELAY_BIN, ${TARGET_DIR}/release or PATH; the bench crate builds it: cargo build --release -p ste-bench)"
    fi
    for name in "${PODS_ETCD_NAMES[@]}"; do
        cluster+="${cluster:+,}${name}=$(pods_etcd_url "${name}" "${PODS_ETCD_PEER_PORT}")"
    done
    stop_pods_etcd
    rm -rf "${PODS_ETCD_DIR}"
    mkdir -p "${PODS_ETCD_DIR}"
    local fs
    fs="$(stat -f -c %T "${PODS_ETCD_DIR}")"
    [[ ${fs} != tmpfs ]] || ste_die "${PODS_ETCD_DIR} is on a tmpfs: set STE_POD_STARTUP_DIR to a directory on disk"
    for name in "${PODS_ETCD_NAMES[@]}"; do
        local dir="${PODS_ETCD_DIR}/${name}" data
        mkdir -p "${dir}/backing"
        data="${dir}/backing"
        if [[ -n ${delay_bin} ]]; then
            mkdir -p "${dir}/fuse"
            setsid "${delay_bin}" --backing "${dir}/backing" --mount "${dir}/fuse" --delay "${delay}" \
                </dev/null >"${dir}/fsync-delay.log" 2>&1 &
            echo "$!" >"${dir}/fsync-delay.pid"
            local i
            for ((i = 0; i < 100; i++)); do
                is_mounted "${dir}/fuse" && break
                sleep 0.1
            done
            is_mounted "${dir}/fuse" || ste_die "ste-fsync-delay did not mount ${dir}/fuse (log: ${dir}/fsync-delay.log)"
            data="${dir}/fuse"
        fi
        local ip="${PODS_ETCD_IPS[${name}]}"
        setsid "${BIN}/etcd" --name "${name}" --data-dir "${data}/data" \
            --listen-client-urls "http://${ip}:${PODS_ETCD_CLIENT_PORT}" \
            --advertise-client-urls "http://${ip}:${PODS_ETCD_CLIENT_PORT}" \
            --listen-peer-urls "http://${ip}:${PODS_ETCD_PEER_PORT}" \
            --initial-advertise-peer-urls "http://${ip}:${PODS_ETCD_PEER_PORT}" \
            --initial-cluster "${cluster}" --initial-cluster-state new \
            --initial-cluster-token ste-pod-startup --log-level warn \
            </dev/null >"${dir}/etcd.log" 2>&1 &
        echo "$!" >"${dir}/etcd.pid"
    done
    local endpoints deadline=$((SECONDS + PODS_ETCD_WAIT))
    endpoints="$(pods_etcd_servers | tr ';' ',')"
    until "${BIN}/etcdctl" --endpoints "${endpoints}" --dial-timeout 1s --command-timeout 2s endpoint health >/dev/null 2>&1; do
        for name in "${PODS_ETCD_NAMES[@]}"; do
            is_running "$(<"${PODS_ETCD_DIR}/${name}/etcd.pid")" etcd ||
                ste_die "etcd ${name} exited; see ${PODS_ETCD_DIR}/${name}/etcd.log"
        done
        ((SECONDS < deadline)) || ste_die "the 3-member etcd was not healthy within ${PODS_ETCD_WAIT}s; logs in ${PODS_ETCD_DIR}/*/etcd.log"
        sleep 0.5
    done
    ste_say "3-member etcd healthy: ${endpoints} (data ${PODS_ETCD_DIR}, ${fs}${delay_bin:+, +${delay} per fsync through ste-fsync-delay})"
}

# Stops the 3-member etcd and its ste-fsync-delay mounts, if any.
stop_pods_etcd() {
    local name dir
    [[ -d ${PODS_ETCD_DIR} ]] || return 0
    for name in "${PODS_ETCD_NAMES[@]}"; do
        stop_pidfile "${PODS_ETCD_DIR}/${name}/etcd.pid" etcd
    done
    for name in "${PODS_ETCD_NAMES[@]}"; do
        dir="${PODS_ETCD_DIR}/${name}"
        # SIGTERM makes ste-fsync-delay unmount.
        stop_pidfile "${dir}/fsync-delay.pid" ste-fsync-delay
        if is_mounted "${dir}/fuse"; then
            umount "${dir}/fuse" 2>/dev/null || umount -l "${dir}/fuse" || true
        fi
    done
}

# name=pid of every process a run's CPU time is accounted to.
cpu_processes() {
    local cp="${LOCAL_DIR}/control-plane" list=() name pid p node
    for name in kube-apiserver kube-controller-manager kube-scheduler kwok; do
        [[ -f ${cp}/${name}.pid ]] && list+=("${name}=$(<"${cp}/${name}.pid")")
    done
    [[ -f ${cp}/etcd.pid ]] && list+=("control-plane-etcd=$(<"${cp}/etcd.pid")")
    [[ -f ${LOCAL_DIR}/router/router.pid ]] && list+=("ste-router=$(<"${LOCAL_DIR}/router/router.pid")")
    for node in "${LOCAL_DIR}"/node-*/agent.pid; do
        [[ -f ${node} ]] || continue
        pid="$(<"${node}")"
        list+=("ste-agent=${pid}")
        # The agent's shard etcd is its child.
        for p in /proc/[0-9]*; do
            [[ $(awk '{ print $4 }' "${p}/stat" 2>/dev/null) == "${pid}" ]] || continue
            [[ $(cat "${p}/comm" 2>/dev/null) == etcd ]] && list+=("ste-shard-etcd=${p#/proc/}")
        done
    done
    if [[ -d ${PODS_ETCD_DIR} ]]; then
        for name in "${PODS_ETCD_NAMES[@]}"; do
            p="${PODS_ETCD_DIR}/${name}"
            [[ -f ${p}/etcd.pid ]] && list+=("pods-etcd=$(<"${p}/etcd.pid")")
            [[ -f ${p}/fsync-delay.pid ]] && list+=("ste-fsync-delay=$(<"${p}/fsync-delay.pid")")
        done
    fi
    (
        IFS=,
        printf '%s\n' "${list[*]}"
    )
}

# Runs podstart against the running cluster, as backend $1, results into
# directory $2.
run_podstart() {
    local backend="$1" out="$2"
    # In the background and waited for, so that a signal to this script
    # runs its trap at once; $! is podstart's PID (not tee's).
    "${PODSTART_BIN}" --kubeconfig "${LOCAL_DIR}/control-plane/admin.kubeconfig" \
        --backend "${backend}" --pods "${PODS}" --runs "${RUNS}" --concurrency "${CONCURRENCY}" \
        --out-dir "${out}" --cpu "$(cpu_processes)" > >(tee -a "${out}/podstart.out") &
    PODSTART_PID=$!
    wait "${PODSTART_PID}"
    PODSTART_PID=""
}

cluster_up() {
    local backend="$1" log="$2/${1}-up.log"
    local -a vars=(STE_ROUTER_BIN="$(router_bin)")
    [[ ${SCHEDULER_QPS} == default ]] || vars+=(STE_SCHEDULER_QPS="${SCHEDULER_QPS}")
    if [[ ${backend} == etcd3* ]]; then
        vars+=(STE_PODS_ETCD_SERVERS="$(pods_etcd_servers)")
    fi
    ste_say "${backend}: scripts/local-cluster.sh up (log ${log}; the first run builds, later ones take about a minute)"
    CLUSTER_UP=1
    if ! env "${vars[@]}" "${LOCAL_CLUSTER}" up >"${log}" 2>&1; then
        tail -n 30 "${log}" >&2
        ste_die "${backend}: local-cluster.sh up failed (log ${log})"
    fi
}

cluster_down() {
    [[ -n ${CLUSTER_UP} ]] || return 0
    ste_say "scripts/local-cluster.sh down"
    "${LOCAL_CLUSTER}" down >>"${RESULTS}/down.log" 2>&1 || ste_say "warning: local-cluster.sh down failed (log ${RESULTS}/down.log)"
    CLUSTER_UP=""
}

# The EXIT trap: stop what this script started, whatever happened.
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n ${PODSTART_PID} ]]; then
        kill -TERM "${PODSTART_PID}" 2>/dev/null || true
        wait "${PODSTART_PID}" 2>/dev/null || true
    fi
    cluster_down
    stop_pods_etcd
    exit "${rc}"
}

# Runs backend $1, results into directory $2.
run_backend() {
    local backend="$1" out="$2"
    case "${backend}" in
        ste) ;;
        etcd3) start_pods_etcd "" ;;
        etcd3+*) start_pods_etcd "${backend#etcd3+}" ;;
    esac
    cluster_up "${backend}" "${out}"
    ste_say "${backend}: ${PODS} Pods per run, runs ${RUNS}"
    run_podstart "${backend}" "${out}"
    cluster_down
    stop_pods_etcd
}

# Prints the side-by-side tables and writes them to summary.md, the
# figures to summary.csv.
summarize() {
    python3 "${STE_REPO}/scripts/pod-startup-summary.py" "${RESULTS}" | tee "${RESULTS}/summary.md"
}

main() {
    while (($# > 0)); do
        case "$1" in
            --pods) PODS="$2"; shift ;;
            --runs) RUNS="$2"; shift ;;
            --concurrency) CONCURRENCY="$2"; shift ;;
            --backends) BACKENDS="$2"; shift ;;
            --fsync-delay) FSYNC_DELAY="$2"; shift ;;
            --repeat) REPEAT="$2"; shift ;;
            --scheduler-qps) SCHEDULER_QPS="$2"; shift ;;
            --router-profile) ROUTER_PROFILE="$2"; shift ;;
            --results) RESULTS="$2"; shift ;;
            --build-only) BUILD_ONLY=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; ste_die "unknown option '$1'" ;;
        esac
        shift
    done
    [[ ${ROUTER_PROFILE} == release || ${ROUTER_PROFILE} == debug ]] || ste_die "--router-profile is release or debug"
    [[ ${SCHEDULER_QPS} == default || ${SCHEDULER_QPS} =~ ^[1-9][0-9]*$ ]] || ste_die "--scheduler-qps is a number or 'default'"
    [[ ${REPEAT} =~ ^[1-9][0-9]*$ ]] || ste_die "--repeat is a number > 0"
    local backend backend_list=()
    IFS=, read -r -a backend_list <<<"${BACKENDS}"
    for backend in "${!backend_list[@]}"; do
        if [[ -n ${FSYNC_DELAY} && ${backend_list[backend]} == etcd3 ]]; then
            backend_list[backend]="etcd3+${FSYNC_DELAY}"
        fi
        case "${backend_list[backend]}" in
            ste | etcd3) ;;
            etcd3+*)
                [[ -n $(fsync_delay_bin) ]] ||
                    ste_die "${backend_list[backend]}: ste-fsync-delay is not available (not in STE_FSYNC_DELAY_BIN, ${TARGET_DIR}/release or PATH; the bench crate builds it: cargo build --release -p ste-bench)"
                ;;
            *) ste_die "unknown backend '${backend_list[backend]}' (ste, etcd3 or etcd3+<fsync delay>)" ;;
        esac
    done
    build_podstart
    build_router
    [[ -z ${BUILD_ONLY} ]] || return 0
    [[ ${EUID} -eq 0 ]] || ste_die "run as root: local-cluster.sh mounts a tmpfs per agent (sudo $0)"
    [[ -n ${RESULTS} ]] || RESULTS="${BASE}/results/$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "${RESULTS}"
    RESULTS="$(realpath -- "${RESULTS}")"
    {
        printf 'date: %s\nhost: %s, %s CPUs, load average %s\n' "$(date -u +%FT%TZ)" "$(uname -n)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
        printf 'pods per run: %s, runs: %s, concurrency of max: %s, backends: %s, repetitions: %s\n' \
            "${PODS}" "${RUNS}" "${CONCURRENCY}" "${backend_list[*]}" "${REPEAT}"
        printf 'router: %s, scheduler qps: %s\n' "$(router_bin)" "${SCHEDULER_QPS}"
        printf 'git: %s\n' "$(git -C "${STE_REPO}" describe --always --dirty 2>/dev/null || echo unknown)"
    } >"${RESULTS}/setup.txt"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    local k order=()
    for ((k = 1; k <= REPEAT; k++)); do
        mkdir -p "${RESULTS}/rep${k}"
        order=("${backend_list[@]}")
        if ((k % 2 == 0)); then
            local i
            order=()
            for ((i = ${#backend_list[@]} - 1; i >= 0; i--)); do
                order+=("${backend_list[i]}")
            done
        fi
        for backend in "${order[@]}"; do
            ste_say "repetition ${k} of ${REPEAT}: ${backend}"
            run_backend "${backend}" "${RESULTS}/rep${k}"
        done
    done
    printf '\nPod startup, %s Pods per run (%s); results in %s\n\n' "${PODS}" "$(head -n 2 "${RESULTS}/setup.txt" | tail -n 1)" "${RESULTS}"
    summarize
}

main "$@"
