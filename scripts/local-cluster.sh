#!/usr/bin/env bash
# A three-node STE cluster on one machine: three ste-agents in managed mode,
# each with its own tmpfs and its own real etcd shard, on the loopback
# addresses 127.0.0.2-4 (Linux routes all of 127.0.0.0/8 to lo).
#
#   node-a  127.0.0.2   etcd client :2279, peer :2280, gRPC :2290, metrics :2291
#   node-b  127.0.0.3   (same ports)
#   node-c  127.0.0.4   (same ports)
#
# Usage: scripts/local-cluster.sh [up|down|status]
#   up      (default) install deps, build, (re)start the three agents, wait
#           until all are SERVING and print their status table. Needs root.
#   down    stop the agents (SIGTERM, SIGKILL after 30 s), check that no
#           tmpfs is left mounted. Needs root.
#   status  print the agents' status table.
#
# Environment:
#   STE_LOCAL_DIR     base dir for data, logs and pid files (/tmp/ste-local);
#                     <dir>/<node>/agent.log (previous run: agent.log.1), agent.pid
#   STE_TMPFS_SIZE    tmpfs size of each agent (256Mi)
#   CARGO_TARGET_DIR  where cargo builds (<repo>/target)
# Under sudo, pass them after sudo: sudo STE_TMPFS_SIZE=512Mi scripts/local-cluster.sh up
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DIR="$(realpath -m -- "${STE_LOCAL_DIR:-/tmp/ste-local}")"
TMPFS_SIZE="${STE_TMPFS_SIZE:-256Mi}"
NODES=(node-a node-b node-c)
declare -A IPS=([node-a]=127.0.0.2 [node-b]=127.0.0.3 [node-c]=127.0.0.4)
GRPC_PORT=2290
METRICS_PORT=2291
ETCD_CLIENT_PORT=2279
WAIT_SERVING=60s
STOP_DEADLINE=30

TARGET_DIR="$(ste_target_dir)"
AGENT_BIN="${TARGET_DIR}/debug/ste-agent"
STATUS_BIN="${TARGET_DIR}/debug/ste-agent-status"

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

require_root() {
    if [[ ${EUID} -ne 0 ]]; then
        ste_die "'$1' must run as root: the agents run in managed mode and mount a tmpfs each. Run: sudo $0 $1"
    fi
}

addresses() {
    local node
    for node in "${NODES[@]}"; do
        printf '%s:%s\n' "${IPS[${node}]}" "${GRPC_PORT}"
    done
}

# True if $1 is the PID of a running ste-agent (not a recycled PID).
is_agent() {
    local pid="$1" exe
    [[ ${pid} =~ ^[0-9]+$ ]] || return 1
    kill -0 "${pid}" 2>/dev/null || return 1
    exe="$(readlink "/proc/${pid}/exe" 2>/dev/null || true)"
    [[ ${exe} == */ste-agent || ${exe} == */ste-agent\ \(deleted\) ]]
}

# The PID of the running agent of node $1, or nothing. Reads the pid file;
# falls back to looking for an ste-agent whose --data-dir is this node's, in
# case the pid file was lost.
agent_pid() {
    local node="$1" pid="" data_dir="${DIR}/$1/shard" p
    if [[ -f ${DIR}/${node}/agent.pid ]]; then
        pid="$(<"${DIR}/${node}/agent.pid")"
        if is_agent "${pid}"; then
            printf '%s\n' "${pid}"
            return 0
        fi
    fi
    for p in /proc/[0-9]*; do
        p="${p#/proc/}"
        is_agent "${p}" || continue
        if tr '\0' '\n' 2>/dev/null <"/proc/${p}/cmdline" | grep -qxF -- "${data_dir}"; then
            printf '%s\n' "${p}"
            return 0
        fi
    done
}

# Stops the agent of node $1 if it runs: SIGTERM, then SIGKILL after
# STOP_DEADLINE seconds. The agent stops its etcd and unmounts its tmpfs.
stop_node() {
    local node="$1" pid
    pid="$(agent_pid "${node}")"
    if [[ -z ${pid} ]]; then
        rm -f "${DIR}/${node}/agent.pid"
        return 0
    fi
    ste_say "stopping ${node} (pid ${pid}): SIGTERM"
    kill -TERM "${pid}" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_DEADLINE))
    while is_agent "${pid}" && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if is_agent "${pid}"; then
        ste_say "${node} (pid ${pid}) did not exit within ${STOP_DEADLINE}s: SIGKILL"
        kill -KILL "${pid}" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while is_agent "${pid}" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        is_agent "${pid}" && ste_die "${node} (pid ${pid}) survived SIGKILL"
    fi
    rm -f "${DIR}/${node}/agent.pid"
}

# etcd processes whose data dir is under $DIR. The agent's parent-death
# signal should make this empty once the agents are gone.
stray_etcds() {
    local p exe arg
    for p in /proc/[0-9]*; do
        p="${p#/proc/}"
        exe="$(readlink "/proc/${p}/exe" 2>/dev/null || true)"
        [[ ${exe} == */etcd ]] || continue
        while IFS= read -r -d '' arg; do
            if [[ ${arg} == "--data-dir=${DIR}/"* ]]; then
                printf '%s\n' "${p}"
                break
            fi
        done 2>/dev/null <"/proc/${p}/cmdline" || true
    done
}

# Mount points at or under $DIR, deepest first, from /proc/self/mountinfo
# (field 5, with the kernel's octal escapes undone).
mounts_under_dir() {
    local mp
    while read -r mp; do
        mp="$(printf '%b' "${mp}")"
        if [[ ${mp} == "${DIR}" || ${mp} == "${DIR}"/* ]]; then
            printf '%s\n' "${mp}"
        fi
    done < <(awk '{ print $5 }' /proc/self/mountinfo) | sort -r
}

cluster_down() {
    require_root down
    local node
    for node in "${NODES[@]}"; do
        stop_node "${node}"
    done
    local pid
    for pid in $(stray_etcds); do
        ste_say "etcd pid ${pid} outlived its agent: SIGKILL"
        kill -KILL "${pid}" 2>/dev/null || true
    done
    local mp leftover=0
    while read -r mp; do
        [[ -n ${mp} ]] || continue
        leftover=1
        ste_say "tmpfs still mounted at ${mp}: unmounting it"
        umount "${mp}" 2>/dev/null || umount -l "${mp}"
    done < <(mounts_under_dir)
    if [[ -n $(mounts_under_dir) ]]; then
        ste_die "could not unmount: $(mounts_under_dir | tr '\n' ' ')"
    fi
    if ((leftover == 0)); then
        ste_say "all agents stopped; nothing is mounted under ${DIR}"
    else
        ste_say "all agents stopped; leftover mounts under ${DIR} removed"
    fi
}

cluster_status() {
    [[ -x ${STATUS_BIN} ]] || ste_die "${STATUS_BIN} not found: run '$0 up' first (or set CARGO_TARGET_DIR)"
    local addrs
    mapfile -t addrs < <(addresses)
    "${STATUS_BIN}" "${addrs[@]}"
}

print_log_tails() {
    local node
    for node in "${NODES[@]}"; do
        printf '\n==> %s (last 30 lines) <==\n' "${DIR}/${node}/agent.log" >&2
        tail -n 30 "${DIR}/${node}/agent.log" >&2 2>/dev/null || printf '(no log)\n' >&2
    done
}

cluster_up() {
    require_root up
    ste_find_cargo || true # install-deps.sh explains what to do if it is missing
    "${STE_REPO}/scripts/install-deps.sh"

    ste_say "building: cargo build --workspace --bins"
    trap ste_restore_ownership EXIT
    (cd "${STE_REPO}" && cargo build --workspace --bins)
    ste_restore_ownership
    trap - EXIT
    [[ -x ${AGENT_BIN} && -x ${STATUS_BIN} ]] ||
        ste_die "the build did not produce ${AGENT_BIN} and ${STATUS_BIN}"

    local node
    for node in "${NODES[@]}"; do
        stop_node "${node}"
    done

    for node in "${NODES[@]}"; do
        local ip="${IPS[${node}]}"
        local node_dir="${DIR}/${node}"
        mkdir -p "${node_dir}"
        if [[ -f ${node_dir}/agent.log ]]; then
            mv -f "${node_dir}/agent.log" "${node_dir}/agent.log.1"
        fi
        ste_say "starting ${node} on ${ip} (tmpfs ${TMPFS_SIZE} at ${node_dir}/shard, log ${node_dir}/agent.log)"
        # Not a process-group leader (no job control in scripts), so setsid
        # execs in place and $! is the agent's PID.
        setsid "${AGENT_BIN}" \
            --node-name "${node}" \
            --node-ip "${ip}" \
            --data-dir "${node_dir}/shard" \
            --tmpfs-size "${TMPFS_SIZE}" \
            --grpc-listen "${ip}:${GRPC_PORT}" \
            --metrics-listen "${ip}:${METRICS_PORT}" \
            </dev/null >"${node_dir}/agent.log" 2>&1 &
        echo "$!" >"${node_dir}/agent.pid"
    done

    ste_say "waiting up to ${WAIT_SERVING} for all agents to be SERVING"
    local addrs
    mapfile -t addrs < <(addresses)
    "${STATUS_BIN}" --wait-serving "${WAIT_SERVING}" "${addrs[@]}" &
    local waiter=$! dead=""
    # Fail fast if an agent exits (bad flag, port in use, ...) instead of
    # waiting for the whole timeout.
    while kill -0 "${waiter}" 2>/dev/null; do
        for node in "${NODES[@]}"; do
            if ! is_agent "$(<"${DIR}/${node}/agent.pid")"; then
                dead="${node}"
            fi
        done
        if [[ -n ${dead} ]]; then
            kill "${waiter}" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    local rc=0
    wait "${waiter}" || rc=$?
    if [[ -n ${dead} ]]; then
        ste_say "error: the agent of ${dead} exited; its log and the others follow"
        print_log_tails
        ste_say "stop the others with: $0 down"
        exit 1
    fi
    if ((rc != 0)); then
        ste_say "error: the agents did not all reach SERVING within ${WAIT_SERVING}; logs follow"
        print_log_tails
        ste_say "stop them with: $0 down"
        exit 1
    fi

    local a="${IPS[node-a]}"
    cat <<EOF

Three agents are SERVING. Data, logs and pid files are in ${DIR}/<node>/.

Try it:
  ETCDCTL_API=3 etcdctl --endpoints http://${a}:${ETCD_CLIENT_PORT} put /registry/pods/default/demo hello
  ETCDCTL_API=3 etcdctl --endpoints http://${a}:${ETCD_CLIENT_PORT} get --prefix /registry/pods/
  curl -s http://${a}:${METRICS_PORT}/metrics
  curl -s http://${a}:${METRICS_PORT}/healthz
  $0 status
  sudo $0 down
EOF
}

main() {
    local command="${1:-up}"
    case "${command}" in
        up) cluster_up ;;
        down) cluster_down ;;
        status) cluster_status ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            ste_say "error: unknown command '${command}'"
            exit 2
            ;;
    esac
}

main "$@"
