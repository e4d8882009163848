#!/usr/bin/env bash
# A three-node STE cluster on one machine with a Kubernetes control plane
# whose Pods live in it: three ste-agents in managed mode, each with its own
# tmpfs and its own real etcd shard, on the loopback addresses 127.0.0.2-4
# (Linux routes all of 127.0.0.0/8 to lo); one ste-router in front of the
# three shards; and kube-apiserver, kube-controller-manager, kube-scheduler
# and kwok (simulating the Nodes node-a, node-b, node-c) with
# --etcd-servers-overrides=/pods#http://127.0.0.1:2479 and everything else in
# a control-plane etcd on disk (see scripts/control-plane.sh).
#
#   node-a  127.0.0.2   etcd client :2279 (https, client certificates),
#                       peer :2280 (loopback), gRPC ste.v1.Agent :2290
#                       (https, client certificates), user gRPC :2292 (https,
#                       client certificate or bearer token), metrics and
#                       /healthz :2291 (http)
#   node-b  127.0.0.3   (same ports)
#   node-c  127.0.0.4   (same ports)
#   router  127.0.0.1   etcd API :2479 (http, loopback), admin gRPC
#                       ste.v1.Ring :2490 (https, client certificates),
#                       user gRPC :2492 (https, client certificate or bearer
#                       token), metrics :2491 (http)
#   control-plane etcd 127.0.0.1:2379 (peer :2380), kube-apiserver https://127.0.0.1:6443
#
# Every STE door but the router's etcd API (loopback, kube-apiserver's) is
# locked as docs/install.md describes for a real cluster: the agents
# present their node certificates (CN=system:node:<node>) to the router;
# users present the control plane's client certificates (the ste-local
# context's admin, in system:masters) or tokens, and the router and agents
# ask kube-apiserver (TokenReview, SubjectAccessReview) with the control
# plane's admin kubeconfig. They only need create on tokenreviews and
# subjectaccessreviews (system:auth-delegator, as deploy/rbac.yaml binds
# it); an admin kubeconfig will do for a demo on one machine. With
# --no-kubernetes there is no API to ask: "certificates only", the
# ste-local context's user has a client certificate of the STE CA
# (CN=ste-local-admin), which may do everything.
#
# Usage: scripts/local-cluster.sh [up [--no-kubernetes]|down|status]
#   up      (default) install deps, build (the Go counterparts too: the
#           first build of Kubernetes takes about 35 minutes on 2 cores),
#           stop what an earlier 'up' left, make the control plane's
#           certificates and kubeconfigs (fresh), then STE's (deploy/pki.sh
#           into <dir>/pki: the STE CA, each node's certificate, the
#           router's shard client certificate — the only client the shards
#           let in —, the router's admin/user serving certificate and the
#           client CA bundle: the STE CA and the control plane's CA), start
#           the router with a fresh state file and the three agents, wait
#           until all are SERVING and joined the router's ring; start the
#           control plane (empty etcd) and wait until kube-apiserver is
#           ready and the Nodes are Ready. Then it
#           makes `kubectl` and `kubectl ste` work as typed: installs the
#           plugin krew's way into KREW_ROOT (linked from /usr/local/bin
#           when KREW_ROOT/bin is not on PATH), writes the kubeconfig
#           context `ste-local` (made current: the cluster's CA and an admin
#           client certificate, and the extension `ste.io/router` naming the
#           router's user address and the STE CA) and, if no kubectl is on
#           PATH, links the one it built into /usr/local/bin. It ends by creating the
#           Deployment `web` (3 replicas), waiting until it is Available,
#           and showing `kubectl get pods -o wide`, `kubectl ste status` and
#           `kubectl ste where pod/<one of its Pods>`. Needs root.
#           --no-kubernetes: agents and router only (the quick demo): no
#           control plane; a short etcdctl demo through the router (watch,
#           put, get, del; where each key landed) and `kubectl ste status`,
#           as the STE CA's ste-local-admin (certificates only).
#   down    stop the control plane, the router, then the agents (SIGQUIT:
#           stop without draining, the cluster goes away as a whole; SIGKILL
#           after 30 s), check that no tmpfs is left mounted, and remove the
#           `ste-local` context, cluster and user from the kubeconfig (the
#           context that was current before 'up' is current again). The
#           plugin stays installed. Needs root.
#   status  print the agents' status table and, if the router runs,
#           'etcdctl endpoint status' through it, the Nodes and Pods if the
#           control plane runs, and `kubectl ste status`.
#
# Environment:
#   STE_LOCAL_DIR     base dir for data, logs and pid files (/tmp/ste-local);
#                     <dir>/<node>/agent.log (previous run: agent.log.1), agent.pid;
#                     <dir>/router/router.log (router.log.1), router.pid, router.state;
#                     <dir>/pki/ (deploy/pki.sh's files, made afresh by 'up');
#                     <dir>/control-plane/<component>.log, .pid, pki/, etcd/
#   STE_TMPFS_SIZE    tmpfs size of each agent (256Mi)
#   CARGO_TARGET_DIR  where cargo builds (<repo>/target)
#   KUBECONFIG        the kubeconfig 'up' adds the ste-local context to (its
#                     first file; default ~/.kube/config of the invoking user,
#                     the sudo user when run through sudo)
#   KREW_ROOT         where 'up' installs the plugin (default ~/.krew of the
#                     invoking user)
#   STE_ROUTER_BIN    the router binary to run (default: the debug build,
#                     <CARGO_TARGET_DIR>/debug/ste-router)
#   STE_PODS_ETCD_SERVERS, STE_SCHEDULER_QPS: experiments only, see
#                     scripts/control-plane.sh (scripts/pod-startup.sh sets
#                     them)
# Example: STE_TMPFS_SIZE=512Mi scripts/local-cluster.sh up
# (through sudo, which resets the environment, put them after sudo:
# sudo STE_TMPFS_SIZE=512Mi scripts/local-cluster.sh up)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DIR="$(realpath -m -- "${STE_LOCAL_DIR:-/tmp/ste-local}")"
TMPFS_SIZE="${STE_TMPFS_SIZE:-256Mi}"
NODES=(node-a node-b node-c)
declare -A IPS=([node-a]=127.0.0.2 [node-b]=127.0.0.3 [node-c]=127.0.0.4)
GRPC_PORT=2290
METRICS_PORT=2291
USER_PORT=2292
ETCD_CLIENT_PORT=2279
WAIT_SERVING=60s
STOP_DEADLINE=30

ROUTER_DIR="${DIR}/router"
PKI_DIR="${DIR}/pki"
ROUTER_LISTEN=127.0.0.1:2479
ROUTER_ADMIN_LISTEN=127.0.0.1:2490
ROUTER_METRICS_LISTEN=127.0.0.1:2491
ROUTER_USER_LISTEN=127.0.0.1:2492
ROUTER_WAIT=30 # seconds until 'etcdctl endpoint health' must pass
KUBE_CONTEXT=ste-local
DEMO_WAIT=10   # seconds until the demo watch must have seen its events

# 'up' records the target dir it built in, so that 'status' and 'down' in
# another shell (without its CARGO_TARGET_DIR) use the same binaries; 'up'
# itself always builds where CARGO_TARGET_DIR (or the default) says.
TARGET_DIR_RECORD="${DIR}/target-dir"
if [[ ${1:-up} != up && -z ${CARGO_TARGET_DIR:-} && -s ${TARGET_DIR_RECORD} ]]; then
    TARGET_DIR="$(<"${TARGET_DIR_RECORD}")"
else
    TARGET_DIR="$(ste_target_dir)"
fi
AGENT_BIN="${TARGET_DIR}/debug/ste-agent"
STATUS_BIN="${TARGET_DIR}/debug/ste-agent-status"
ROUTER_BIN="${STE_ROUTER_BIN:-${TARGET_DIR}/debug/ste-router}"
PLUGIN_BIN="${TARGET_DIR}/debug/kubectl-ste"
# etcd 3.6 for the shards and etcdctl 3.6 for the demo, built from their Go
# modules by scripts/build-counterparts.sh.
ETCD_BIN="${STE_REPO}/.build/bin/etcd"
ETCDCTL_BIN="${STE_REPO}/.build/bin/etcdctl"
# How the person at the terminal stops the cluster (sudo only if not root).
DOWN_CMD="$(ste_root_prefix)$0 down"
# Set by 'up --no-kubernetes': agents and router only, no control plane.
NO_KUBERNETES=""

# shellcheck source=scripts/control-plane.sh
source "${STE_REPO}/scripts/control-plane.sh"

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

# ste-agent-status's TLS flags for the agents' gRPC port, as node-a: a
# client certificate is required there, and a node may read without asking
# Kubernetes (which is not up yet while 'up' waits for the agents).
AGENT_STATUS_TLS=(--cacert "${PKI_DIR}/ca.crt"
    --cert "${PKI_DIR}/shard-node-a.crt" --key "${PKI_DIR}/shard-node-a.key")

# True if $1 is the PID of a running process of the binary named $2 (not
# a recycled PID, nor a zombie). As another user than the process's,
# /proc/PID/exe cannot be read; its name in /proc/PID/comm is used then.
is_process_of() {
    local pid="$1" name="$2" exe
    [[ ${pid} =~ ^[0-9]+$ && -d /proc/${pid} ]] || return 1
    if grep -q '^State:[[:space:]]*Z' "/proc/${pid}/status" 2>/dev/null; then
        return 1
    fi
    exe="$(readlink "/proc/${pid}/exe" 2>/dev/null || true)"
    if [[ -z ${exe} ]]; then
        [[ $(cat "/proc/${pid}/comm" 2>/dev/null) == "${name}" ]]
        return
    fi
    [[ ${exe} == */"${name}" || ${exe} == */"${name} (deleted)" ]]
}

# True if $1 is the PID of a running ste-agent.
is_agent() {
    is_process_of "$1" ste-agent
}

# True if $1 is the PID of a running ste-router.
is_router() {
    is_process_of "$1" ste-router
}

# etcdctl (v3 API) through the router.
router_etcdctl() {
    "${ETCDCTL_BIN}" --endpoints "${ROUTER_LISTEN}" "$@"
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
        if tr '\0' '\n' 2>/dev/null <"/proc/${p}/cmdline" | grep -xF -- "${data_dir}" >/dev/null; then
            printf '%s\n' "${p}"
            return 0
        fi
    done
}

# Waits until "$3 $2" says process $2 ($1 names it) is gone; SIGKILL after
# STOP_DEADLINE seconds.
await_exit() {
    local label="$1" pid="$2" check="$3"
    local deadline=$((SECONDS + STOP_DEADLINE))
    while "${check}" "${pid}" && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if "${check}" "${pid}"; then
        ste_say "${label} (pid ${pid}) did not exit within ${STOP_DEADLINE}s: SIGKILL"
        kill -KILL "${pid}" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while "${check}" "${pid}" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if "${check}" "${pid}"; then
            ste_die "${label} (pid ${pid}) survived SIGKILL"
        fi
    fi
}

# Stops process $2 ($1 names it in messages) while "$3 $2" says it still
# is the process meant: SIGTERM, then SIGKILL after STOP_DEADLINE seconds.
stop_process() {
    local label="$1" pid="$2" check="$3"
    ste_say "stopping ${label} (pid ${pid}): SIGTERM"
    kill -TERM "${pid}" 2>/dev/null || true
    await_exit "${label}" "${pid}" "${check}"
}

# Stops every agent that runs, all at once: SIGQUIT, the agent's teardown
# signal (stop etcd and unmount without asking the router to drain: the
# router is already gone and the whole cluster goes away; SIGTERM would
# try to drain and log the keys as lost). SIGKILL after STOP_DEADLINE.
stop_agents() {
    local node pid
    local -A pids=()
    for node in "${NODES[@]}"; do
        pid="$(agent_pid "${node}")"
        if [[ -n ${pid} ]]; then
            pids[${node}]="${pid}"
            ste_say "stopping ${node} (pid ${pid}): SIGQUIT (teardown: no drain)"
            kill -QUIT "${pid}" 2>/dev/null || true
        fi
    done
    for node in "${NODES[@]}"; do
        if [[ -n ${pids[${node}]:-} ]]; then
            await_exit "${node}" "${pids[${node}]}" is_agent
        fi
        rm -f "${DIR}/${node}/agent.pid"
    done
}

# The PID of the running router, or nothing. Reads the pid file; falls back
# to looking for an ste-router whose --state-file is this cluster's.
router_pid() {
    local pid="" p
    if [[ -f ${ROUTER_DIR}/router.pid ]]; then
        pid="$(<"${ROUTER_DIR}/router.pid")"
        if is_router "${pid}"; then
            printf '%s\n' "${pid}"
            return 0
        fi
    fi
    for p in /proc/[0-9]*; do
        p="${p#/proc/}"
        is_router "${p}" || continue
        if tr '\0' '\n' 2>/dev/null <"/proc/${p}/cmdline" | grep -xF -- "${ROUTER_DIR}/router.state" >/dev/null; then
            printf '%s\n' "${p}"
            return 0
        fi
    done
}

# Stops the router if it runs.
stop_router() {
    local pid
    pid="$(router_pid)"
    if [[ -n ${pid} ]]; then
        stop_process router "${pid}" is_router
    fi
    rm -f "${ROUTER_DIR}/router.pid"
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
    cp_stop
    stop_router
    stop_agents
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
        ste_say "control plane, router and agents stopped; nothing is mounted under ${DIR}"
    else
        ste_say "control plane, router and agents stopped; leftover mounts under ${DIR} removed"
    fi
    remove_kube_context
}

# Prints the agents' status table.
cluster_status_agents() {
    local addrs
    mapfile -t addrs < <(addresses)
    "${STATUS_BIN}" "${AGENT_STATUS_TLS[@]}" "${addrs[@]}"
}

cluster_status() {
    [[ -x ${STATUS_BIN} ]] || ste_die "${STATUS_BIN} not found: run '$0 up' first (or set CARGO_TARGET_DIR to the target dir 'up' built in)"
    local rc=0
    cluster_status_agents || rc=$?
    echo
    if [[ -n $(router_pid) ]]; then
        printf 'Router (etcdctl --endpoints %s endpoint status -w table):\n' "${ROUTER_LISTEN}"
        router_etcdctl --dial-timeout 2s --command-timeout 5s endpoint status -w table || rc=1
    else
        printf 'Router: not running (start everything with: %s%s up)\n' "$(ste_root_prefix)" "$0"
        return "${rc}"
    fi
    if cp_running; then
        printf '\nControl plane (kube-apiserver %s):\n$ kubectl get nodes\n' "${KUBE_SERVER}"
        cp_kubectl get nodes --request-timeout 5s || rc=1
        printf '\n$ kubectl get pods -A -o wide\n'
        cp_kubectl get pods -A -o wide --request-timeout 5s || rc=1
    fi
    if command -v kubectl-ste >/dev/null 2>&1; then
        printf '\n$ kubectl ste status\n'
        kubectl ste status --request-timeout 5s || rc=1
    fi
    return "${rc}"
}

print_log_tails() {
    local node
    for node in "${NODES[@]}"; do
        printf '\n==> %s (last 30 lines) <==\n' "${DIR}/${node}/agent.log" >&2
        tail -n 30 "${DIR}/${node}/agent.log" >&2 2>/dev/null || printf '(no log)\n' >&2
    done
}

print_router_log() {
    printf '\n==> %s (last 30 lines) <==\n' "${ROUTER_DIR}/router.log" >&2
    tail -n 30 "${ROUTER_DIR}/router.log" >&2 2>/dev/null || printf '(no log)\n' >&2
}

# Makes STE's TLS files afresh with deploy/pki.sh, as an operator does
# (docs/install.md, "1. Certificates"): the STE CA, each node's certificate
# (its shard's and its identity towards the router), the router's shard
# client certificate and its admin/user serving certificate, and the
# client CA bundle, which holds the control plane's CA too (--kube-ca: its
# users' certificates are accepted), so the control plane's PKI comes
# first. The router's own etcd API stays plain on loopback here, so no
# --etcd-ca. Without Kubernetes, a user certificate of the STE CA,
# user-ste-local-admin.crt, for the ste-local context.
make_pki() {
    rm -rf "${PKI_DIR}"
    local args=() node
    for node in "${NODES[@]}"; do
        args+=(--shard "${node}=${IPS[${node}]}")
    done
    if [[ -n ${NO_KUBERNETES} ]]; then
        args+=(--user ste-local-admin)
    else
        args+=(--kube-ca "${CP_PKI}/ca.crt")
    fi
    ste_say "making STE's certificates in ${PKI_DIR} (deploy/pki.sh)"
    "${STE_REPO}/deploy/pki.sh" "${PKI_DIR}" --days 30 "${args[@]}" 2>/dev/null ||
        ste_die "deploy/pki.sh ${PKI_DIR} failed; run it by hand to see why"
}

# The flags that tell the router and the agents which Kubernetes API
# answers TokenReviews and SubjectAccessReviews: the control plane's, as
# its admin (none without Kubernetes: certificates only). kube-apiserver
# is not up yet when they start; they ask it at the first request that
# needs it.
kube_auth_flags() {
    if [[ -z ${NO_KUBERNETES} ]]; then
        printf '%s\n' --authentication-kubeconfig "${CP_DIR}/admin.kubeconfig" \
            --authorization-kubeconfig "${CP_DIR}/admin.kubeconfig"
    fi
}

# Starts the router with no members and a fresh state file: the agents
# register with it and it joins them (auto-join), as in a real deployment.
start_router() {
    mkdir -p "${ROUTER_DIR}"
    if [[ -f ${ROUTER_DIR}/router.log ]]; then
        mv -f "${ROUTER_DIR}/router.log" "${ROUTER_DIR}/router.log.1"
    fi
    # The shards were just started empty (new epochs); start the revision
    # space afresh too instead of continuing above an old high-water mark.
    rm -f "${ROUTER_DIR}/router.state" "${ROUTER_DIR}/router.tmp"
    ste_say "starting the router on ${ROUTER_LISTEN} (admin ${ROUTER_ADMIN_LISTEN}, user ${ROUTER_USER_LISTEN}, metrics ${ROUTER_METRICS_LISTEN}, log ${ROUTER_DIR}/router.log)"
    local kube_auth
    mapfile -t kube_auth < <(kube_auth_flags)
    setsid "${ROUTER_BIN}" \
        --listen "${ROUTER_LISTEN}" \
        --admin-listen "${ROUTER_ADMIN_LISTEN}" \
        --user-listen "${ROUTER_USER_LISTEN}" \
        --metrics-listen "${ROUTER_METRICS_LISTEN}" \
        --tls-cert-file "${PKI_DIR}/router-admin.crt" \
        --tls-private-key-file "${PKI_DIR}/router-admin.key" \
        --client-ca-file "${PKI_DIR}/client-ca-bundle.crt" \
        "${kube_auth[@]}" \
        --state-file "${ROUTER_DIR}/router.state" \
        --shard-ca "${PKI_DIR}/ca.crt" \
        --shard-cert "${PKI_DIR}/router-shard-client.crt" \
        --shard-key "${PKI_DIR}/router-shard-client.key" \
        </dev/null >"${ROUTER_DIR}/router.log" 2>&1 &
    local pid=$!
    echo "${pid}" >"${ROUTER_DIR}/router.pid"
}

# Waits until the agents have registered and all three are ring members,
# then until etcdctl finds the router healthy.
wait_router_members() {
    local pid
    pid="$(<"${ROUTER_DIR}/router.pid")"
    ste_say "waiting up to ${ROUTER_WAIT}s for the agents to register and join the ring"
    # Read as node-a: kube-apiserver, which decides for users, is not up
    # yet; nodes may read the ring without asking it.
    local kubeconfig="${ROUTER_DIR}/node-a.kubeconfig"
    write_plugin_kubeconfig "${kubeconfig}" "${PKI_DIR}/shard-node-a"
    local deadline=$((SECONDS + ROUTER_WAIT)) members=0
    while :; do
        members="$("${PLUGIN_BIN}" --kubeconfig "${kubeconfig}" --request-timeout 2s ring show -o json 2>/dev/null |
            python3 -c 'import json,sys; r=json.load(sys.stdin); print(0 if r.get("migration") else len(r.get("members", [])))' 2>/dev/null || echo 0)"
        ((members == ${#NODES[@]})) && break
        if ! is_router "${pid}"; then
            ste_say "error: the router exited; its log follows"
            print_router_log
            ste_say "stop the agents with: ${DOWN_CMD}"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            ste_say "error: only ${members} of ${#NODES[@]} agents joined within ${ROUTER_WAIT}s; logs follow"
            print_router_log
            print_log_tails
            ste_say "stop everything with: ${DOWN_CMD}"
            exit 1
        fi
        sleep 0.2
    done
    ste_say "waiting for 'etcdctl endpoint health' through the router"
    deadline=$((SECONDS + ROUTER_WAIT))
    until router_etcdctl --dial-timeout 1s --command-timeout 2s endpoint health >/dev/null 2>&1; do
        if ! is_router "${pid}"; then
            ste_say "error: the router exited; its log follows"
            print_router_log
            ste_say "stop the agents with: ${DOWN_CMD}"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            ste_say "error: 'etcdctl endpoint health' did not pass through the router within ${ROUTER_WAIT}s; its log follows"
            router_etcdctl --dial-timeout 1s --command-timeout 2s endpoint health >&2 || true
            print_router_log
            ste_say "stop everything with: ${DOWN_CMD}"
            exit 1
        fi
        sleep 0.2
    done
}

# Prints the ste-local kubeconfig: the cluster at KUBE_SERVER (then $1: a
# certificate-authority-data line, or nothing), the router's user port and
# the STE CA in the ste.io/router extension, and the user's credentials $2
# (its client-certificate and client-key lines).
ste_local_kubeconfig() {
    local ca="$1" credentials="$2"
    cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ${KUBE_CONTEXT}
  cluster:
    server: ${KUBE_SERVER}${ca}
contexts:
- name: ${KUBE_CONTEXT}
  context:
    cluster: ${KUBE_CONTEXT}
    user: ${KUBE_CONTEXT}
    extensions:
    - name: ste.io/router
      extension:
        address: ${ROUTER_USER_LISTEN}
        certificate-authority: ${PKI_DIR}/ca.crt
users:
- name: ${KUBE_CONTEXT}
  user: ${credentials}
current-context: ${KUBE_CONTEXT}
EOF
}

# Writes a kubeconfig $1 for kubectl ste alone: the client certificate
# $2.crt and key $2.key; its cluster is the control plane's address, which
# kubectl ste does not need for the ring.
write_plugin_kubeconfig() {
    local file="$1" identity="$2"
    ste_local_kubeconfig "" "
    client-certificate: ${identity}.crt
    client-key: ${identity}.key" >"${file}"
    chmod 600 "${file}"
}

# The demo's background watcher and its output file, global so that the
# EXIT trap can clean up after a failure.
DEMO_WATCHER=""
DEMO_WATCH_FILE=""

demo_cleanup() {
    if [[ -n ${DEMO_WATCHER} ]]; then
        kill "${DEMO_WATCHER}" 2>/dev/null || true
        wait "${DEMO_WATCHER}" 2>/dev/null || true
        DEMO_WATCHER=""
    fi
    if [[ -n ${DEMO_WATCH_FILE} ]]; then
        rm -f "${DEMO_WATCH_FILE}"
        DEMO_WATCH_FILE=""
    fi
}

demo_fail() {
    ste_say "error: $*; the router's log follows"
    print_router_log
    ste_say "stop everything with: ${DOWN_CMD}"
    exit 1
}

# Shows an etcdctl command run through the router, then runs it.
demo() {
    printf '$ etcdctl %s\n' "$*"
    router_etcdctl "$@" || demo_fail "'etcdctl $*' through the router failed"
}

# Number of events in etcdctl watch's output.
watch_events() {
    local n
    n="$(grep -cxE 'PUT|DELETE' "${DEMO_WATCH_FILE}" 2>/dev/null || true)"
    printf '%s\n' "${n:-0}"
}

# Writes, reads, deletes and watches through the router with the real
# etcdctl, and shows on which shard each key landed.
router_demo() {
    trap demo_cleanup EXIT
    local revision
    local answer
    answer="$(router_etcdctl get --prefix /registry/pods/ -w json)" ||
        demo_fail "cannot read the router's current revision"
    revision="$(grep -o '"revision":[0-9]*' <<<"${answer}" | sed -n '1s/.*://p')"
    [[ ${revision} =~ ^[0-9]+$ ]] || demo_fail "no revision in the router's answer to a get"
    DEMO_WATCH_FILE="$(mktemp "${ROUTER_DIR}/demo-watch.XXXXXX")"

    printf '\nThrough the router (etcdctl below is etcdctl 3.6 --endpoints %s):\n\n' "${ROUTER_LISTEN}"
    printf '$ etcdctl watch --prefix /registry/pods/ --prev-kv --rev %s > watch.out &\n' "$((revision + 1))"
    # etcdctl itself, not through the router_etcdctl function: $! must be
    # etcdctl's PID, not that of a subshell running it.
    "${ETCDCTL_BIN}" --endpoints "${ROUTER_LISTEN}" \
        watch --prefix /registry/pods/ --prev-kv --rev "$((revision + 1))" \
        </dev/null >"${DEMO_WATCH_FILE}" 2>&1 &
    DEMO_WATCHER=$!
    demo put /registry/pods/default/demo-1 hello
    demo put /registry/pods/kube-system/demo-2 world
    demo get --prefix /registry/pods/

    printf '\nOn the shards, with the router'"'"'s client certificate, the only one they accept\n(etcdctl --endpoints https://<node-ip>:%s --cacert %s/ca.crt --cert %s/router-shard-client.crt --key ... get --prefix /registry/pods/ --keys-only):\n' "${ETCD_CLIENT_PORT}" "${PKI_DIR}" "${PKI_DIR}"
    local node keys
    for node in "${NODES[@]}"; do
        keys="$("${ETCDCTL_BIN}" --endpoints "https://${IPS[${node}]}:${ETCD_CLIENT_PORT}" \
            --cacert "${PKI_DIR}/ca.crt" --cert "${PKI_DIR}/router-shard-client.crt" \
            --key "${PKI_DIR}/router-shard-client.key" \
            get --prefix /registry/pods/ --keys-only)" ||
            demo_fail "cannot read the shard of ${node} directly"
        keys="$(sed '/^$/d' <<<"${keys}" | paste -sd ' ' -)"
        printf '  %-7s %-23s %s\n' "${node}" "https://${IPS[${node}]}:${ETCD_CLIENT_PORT}" "${keys:-(none)}"
    done
    echo

    demo del /registry/pods/default/demo-1
    local deadline=$((SECONDS + DEMO_WAIT))
    while (($(watch_events) < 3)); do
        if ! kill -0 "${DEMO_WATCHER}" 2>/dev/null; then
            cat "${DEMO_WATCH_FILE}" >&2
            demo_fail "the watch ended early"
        fi
        if ((SECONDS >= deadline)); then
            cat "${DEMO_WATCH_FILE}" >&2
            demo_fail "the watch did not report the 3 events within ${DEMO_WAIT}s"
        fi
        sleep 0.1
    done
    printf '$ cat watch.out   # 3 events: PUT, PUT, DELETE (with the previous value)\n'
    cat "${DEMO_WATCH_FILE}"
    demo_cleanup
    trap - EXIT
    echo
    demo endpoint status -w table
}

# The kubeconfig file the ste-local context goes to: the first file of
# KUBECONFIG (as kubectl writes new entries), else ~/.kube/config of the
# invoking user (the sudo user's when run through sudo).
kubeconfig_file() {
    local first="${KUBECONFIG:-}"
    first="${first%%:*}"
    if [[ -n ${first} ]]; then
        realpath -m -- "${first}"
    else
        printf '%s/.kube/config\n' "$(ste_invoking_home)"
    fi
}

# Where the context that was current before 'up' is remembered for 'down'.
PREVIOUS_CONTEXT_FILE="${DIR}/kubeconfig.previous-context"

# kubectl config on the kubeconfig file $1 only.
kubeconfig_of() {
    local file="$1"
    shift
    KUBECONFIG="${file}" "${CP_KUBECTL}" config "$@"
}

# Adds (or replaces) the context, cluster and user ste-local in the
# invoking user's kubeconfig, leaving every other entry as it was, and
# makes ste-local current. The context carries the extension ste.io/router
# (address: the router's admin API), where `kubectl ste` finds the router.
# kubectl config set-context cannot write extensions, so a fragment is
# merged in by kubectl itself (entries of the first file win).
write_kube_context() {
    local file current fragment merged
    file="$(kubeconfig_file)"
    mkdir -p "$(dirname "${file}")"
    if [[ -s ${file} ]]; then
        current="$(kubeconfig_of "${file}" view -o 'jsonpath={.current-context}' 2>/dev/null || true)"
        if [[ -n ${current} && ${current} != "${KUBE_CONTEXT}" ]]; then
            printf '%s\n' "${current}" >"${PREVIOUS_CONTEXT_FILE}"
        elif [[ -z ${current} ]]; then
            rm -f "${PREVIOUS_CONTEXT_FILE}"
        fi
    else
        rm -f "${PREVIOUS_CONTEXT_FILE}"
    fi
    fragment="$(mktemp "${DIR}/kubeconfig.fragment.XXXXXX")"
    merged="$(mktemp "${DIR}/kubeconfig.merged.XXXXXX")"
    # With the control plane: its CA and the admin's client certificate,
    # embedded (as kind does); the router and the agents accept it (their
    # client CA bundle holds the control plane's CA) and let its group,
    # system:masters, do everything without a SubjectAccessReview, as
    # kube-apiserver does. Without it: a
    # client certificate of the STE CA, which the router and agents accept
    # (certificates only), and no Kubernetes API.
    local ca="" identity="${PKI_DIR}/user-ste-local-admin" credentials
    if [[ -z ${NO_KUBERNETES} ]]; then
        ca="
    certificate-authority-data: $(base64 -w0 "${CP_PKI}/ca.crt")"
        identity="${CP_PKI}/admin"
    fi
    credentials="
    client-certificate-data: $(base64 -w0 "${identity}.crt")
    client-key-data: $(base64 -w0 "${identity}.key")"
    ste_local_kubeconfig "${ca}" "${credentials}" >"${fragment}"
    local sources="${fragment}"
    if [[ -s ${file} ]]; then
        sources="${fragment}:${file}"
    fi
    if ! KUBECONFIG="${sources}" "${CP_KUBECTL}" config view --raw >"${merged}"; then
        rm -f "${fragment}" "${merged}"
        ste_die "could not merge the ${KUBE_CONTEXT} context into ${file} (kubectl config view failed)"
    fi
    rm -f "${fragment}"
    # Keep the file's own mode and owner: write into it rather than over it.
    if [[ -e ${file} ]]; then
        cat "${merged}" >"${file}"
        rm -f "${merged}"
    else
        chmod 600 "${merged}"
        mv -f "${merged}" "${file}"
    fi
    ste_give_to_invoking_user "$(dirname "${file}")"
    ste_say "kubeconfig ${file}: context ${KUBE_CONTEXT} (router ${ROUTER_USER_LISTEN}, extension ste.io/router) is current now"
}

# Removes what write_kube_context added; the context that was current
# before is current again (if it still exists). Kind does the same on
# 'kind delete cluster'.
remove_kube_context() {
    local file current previous=""
    file="$(kubeconfig_file)"
    [[ -s ${file} ]] || return 0
    [[ -x ${CP_KUBECTL} ]] || return 0
    kubeconfig_of "${file}" get-contexts -o name 2>/dev/null | grep -xF "${KUBE_CONTEXT}" >/dev/null || return 0
    current="$(kubeconfig_of "${file}" view -o 'jsonpath={.current-context}' 2>/dev/null || true)"
    if [[ -f ${PREVIOUS_CONTEXT_FILE} ]]; then
        previous="$(<"${PREVIOUS_CONTEXT_FILE}")"
        rm -f "${PREVIOUS_CONTEXT_FILE}"
    fi
    local restored=""
    # Switch away first: kubectl warns when the current context is deleted.
    if [[ ${current} == "${KUBE_CONTEXT}" ]]; then
        if [[ -n ${previous} ]] && kubeconfig_of "${file}" get-contexts -o name | grep -xF "${previous}" >/dev/null; then
            kubeconfig_of "${file}" use-context "${previous}" >/dev/null
            restored="; current context is ${previous} again"
        else
            kubeconfig_of "${file}" unset current-context >/dev/null
        fi
    fi
    kubeconfig_of "${file}" delete-context "${KUBE_CONTEXT}" >/dev/null
    kubeconfig_of "${file}" delete-cluster "${KUBE_CONTEXT}" >/dev/null 2>&1 || true
    kubeconfig_of "${file}" delete-user "${KUBE_CONTEXT}" >/dev/null 2>&1 || true
    ste_say "kubeconfig ${file}: removed context ${KUBE_CONTEXT}${restored}"
}

# Installs the plugin with the real krew (`kubectl krew install --manifest
# --archive`, krew from .build/bin) into KREW_ROOT (default ~/.krew of the
# invoking user), from the binaries just built; an installed ste is
# replaced.
install_plugin() {
    local root="${KREW_ROOT:-$(ste_invoking_home)/.krew}"
    root="$(realpath -m -- "${root}")"
    if ! STE_PLUGIN_BIN_DIR="${TARGET_DIR}/debug" STE_DIST_DIR="${DIR}/dist" \
        "${STE_REPO}/scripts/package-plugin.sh" --install-krew-root "${root}" \
        >"${DIR}/plugin-install.log" 2>&1; then
        cat "${DIR}/plugin-install.log" >&2
        ste_die "installing the plugin into ${root} failed (output above)"
    fi
    ste_give_to_invoking_user "${root}"
    PLUGIN_ROOT="${root}"
    ste_say "plugin: installed kubectl-ste with krew into ${root} (kubectl krew install --manifest --archive; log ${DIR}/plugin-install.log)"
    link_plugin_on_path "${root}"
}

# True if directory $1 is on PATH.
on_path() {
    local dir dirs
    IFS=: read -r -a dirs <<<"${PATH}"
    for dir in "${dirs[@]}"; do
        [[ -n ${dir} && $(realpath -m -- "${dir}") == "$1" ]] && return 0
    done
    return 1
}

# Makes kubectl find the plugin in the invoking shell: if the krew bin dir
# $1 is not on PATH, links kubectl-ste and kubectl_complete-ste into
# /usr/local/bin (on every default PATH, root's and sudo's included).
link_plugin_on_path() {
    local root="$1" bin="$1/bin" link target
    local complete
    complete="$(compgen -G "${root}/store/ste/*/kubectl_complete-ste" | tail -n 1)"
    # The completion helper: krew links only the plugin, so it is linked
    # from the store, whether or not the krew bin dir is on PATH.
    local -A targets=([kubectl_complete-ste]="${complete}")
    if on_path "${bin}"; then
        ste_say "plugin: ${bin} is on PATH"
    else
        targets[kubectl-ste]="${bin}/kubectl-ste"
    fi
    for link in "${!targets[@]}"; do
        target="${targets[${link}]}"
        [[ -n ${target} ]] || continue
        link="/usr/local/bin/${link}"
        if [[ -e ${link} && ! -L ${link} ]]; then
            ste_say "warning: ${link} exists and is not a symlink: left alone; add ${bin} to PATH to use the installed plugin"
            continue
        fi
        mkdir -p /usr/local/bin
        ln -sfn "${target}" "${link}"
        ste_say "plugin: linked ${link} -> ${target}"
    done
    if ! on_path "${bin}"; then
        ste_say "plugin: ${bin} is not on PATH, so kubectl finds the plugin through /usr/local/bin (if you add ${bin} to PATH, remove /usr/local/bin/kubectl-ste: kubectl plugin list warns about a plugin found twice)"
    fi
    hash -r
}

cluster_up() {
    require_root up
    ste_find_cargo || true # install-deps.sh explains what to do if it is missing
    "${STE_REPO}/scripts/install-deps.sh"

    if [[ -n ${NO_KUBERNETES} ]]; then
        ste_say "building the real counterparts it uses: etcd and etcdctl 3.6, kubectl, krew (Go; the first build takes a few minutes)"
        "${STE_REPO}/scripts/build-counterparts.sh" etcd etcdctl kubectl kubectl-krew
    else
        ste_say "building the real counterparts it uses: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd 3.6, kwok, krew (Go; the first build compiles Kubernetes: about 35 minutes on 2 cores, then seconds)"
        # shellcheck disable=SC2046 # one binary name per word
        "${STE_REPO}/scripts/build-counterparts.sh" etcdctl kubectl-krew $(cp_binaries)
    fi

    ste_say "building: cargo build --workspace --bins"
    trap ste_restore_ownership EXIT
    (cd "${STE_REPO}" && cargo build --workspace --bins)
    ste_restore_ownership
    trap - EXIT
    [[ -x ${AGENT_BIN} && -x ${STATUS_BIN} && -x ${ROUTER_BIN} && -x ${PLUGIN_BIN} ]] ||
        ste_die "the build did not produce ${AGENT_BIN}, ${STATUS_BIN}, ${ROUTER_BIN} and ${PLUGIN_BIN}"
    mkdir -p "${DIR}"
    printf '%s\n' "${TARGET_DIR}" >"${TARGET_DIR_RECORD}"

    if [[ -n $(router_pid) ]] || cp_running; then
        ste_say "a local cluster is already running: 'up' starts a fresh one, so it is stopped first (its Pods and data go)"
    fi
    cp_stop
    stop_router
    stop_agents

    # The router and the agents read their client CAs and kubeconfig at
    # start only: the control plane's PKI first, then STE's, which
    # includes its CA.
    if [[ -z ${NO_KUBERNETES} ]]; then
        ste_say "making the control plane's certificates and kubeconfigs in ${CP_DIR}"
        cp_make_files
    fi
    make_pki
    start_router
    local kube_auth
    mapfile -t kube_auth < <(kube_auth_flags)
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
            --etcd-bin "${ETCD_BIN}" \
            --node-ip "${ip}" \
            --data-dir "${node_dir}/shard" \
            --tmpfs-size "${TMPFS_SIZE}" \
            --grpc-listen "${ip}:${GRPC_PORT}" \
            --metrics-listen "${ip}:${METRICS_PORT}" \
            --user-listen "${ip}:${USER_PORT}" \
            --router "${ROUTER_ADMIN_LISTEN}" \
            --router-ca-file "${PKI_DIR}/ca.crt" \
            --etcd-cert-file "${PKI_DIR}/shard-${node}.crt" \
            --etcd-key-file "${PKI_DIR}/shard-${node}.key" \
            --etcd-trusted-ca-file "${PKI_DIR}/ca.crt" \
            --tls-cert-file "${PKI_DIR}/shard-${node}.crt" \
            --tls-private-key-file "${PKI_DIR}/shard-${node}.key" \
            --client-ca-file "${PKI_DIR}/client-ca-bundle.crt" \
            "${kube_auth[@]}" \
            </dev/null >"${node_dir}/agent.log" 2>&1 &
        echo "$!" >"${node_dir}/agent.pid"
    done

    ste_say "waiting up to ${WAIT_SERVING} for all agents to be SERVING"
    local addrs
    mapfile -t addrs < <(addresses)
    # Its table is shown only on failure; on success the table is printed
    # once the router runs too.
    "${STATUS_BIN}" "${AGENT_STATUS_TLS[@]}" --wait-serving "${WAIT_SERVING}" "${addrs[@]}" \
        >"${DIR}/wait-serving.out" &
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
    if [[ -n ${dead} || ${rc} -ne 0 ]]; then
        cat "${DIR}/wait-serving.out"
    fi
    rm -f "${DIR}/wait-serving.out"
    if [[ -n ${dead} ]]; then
        ste_say "error: the agent of ${dead} exited; its log and the others follow"
        print_log_tails
        ste_say "stop the others with: ${DOWN_CMD}"
        exit 1
    fi
    if ((rc != 0)); then
        ste_say "error: the agents did not all reach SERVING within ${WAIT_SERVING}; logs follow"
        print_log_tails
        ste_say "stop them with: ${DOWN_CMD}"
        exit 1
    fi

    wait_router_members
    ste_say "the router is healthy"

    if [[ -n ${NO_KUBERNETES} ]]; then
        router_demo
        echo
    else
        cp_up
    fi
    install_plugin
    write_kube_context
    link_kubectl_on_path
    local found
    found="$(command -v kubectl-ste || true)"
    [[ -n ${found} ]] || ste_die "kubectl-ste is not on PATH after installing it into ${PLUGIN_ROOT}"
    ste_say "kubectl finds the plugin as ${found}"
    # From here on, kubectl exactly as the user types it, on the user's
    # kubeconfig (where ste-local is now current).
    export KUBECONFIG
    KUBECONFIG="$(kubeconfig_file)"
    if [[ -n ${NO_KUBERNETES} ]]; then
        ste_say "no Kubernetes API server runs in this mode (--no-kubernetes): the ${KUBE_CONTEXT} context's server ${KUBE_SERVER} does not answer (kubectl get ... fails); kubectl ste talks to the router"
        printf '\n$ kubectl ste status\n'
        kubectl ste status
        print_next_steps_without_kubernetes
        return
    fi
    local pod
    pod="$(cp_demo_deployment)"
    [[ -n ${pod} ]] || ste_die "the Deployment ${CP_DEMO_DEPLOYMENT} is Available but no Pod of it is Running"
    printf '\n$ kubectl get pods -o wide\n'
    kubectl get pods -o wide
    printf '\n$ kubectl ste status\n'
    kubectl ste status
    if [[ ${CP_PODS_ETCD_SERVERS} != "http://${ROUTER_LISTEN}" ]]; then
        ste_say "Pods are in ${CP_PODS_ETCD_SERVERS} (STE_PODS_ETCD_SERVERS), not in STE: no 'kubectl ste where'"
        return
    fi
    printf '\n$ kubectl ste where pod/%s\n' "${pod}"
    kubectl ste where "pod/${pod}"
    print_next_steps "${pod}"
}

# Makes plain `kubectl` work for the person at the terminal: if no kubectl
# is on PATH, links the one built with the control plane into
# /usr/local/bin.
link_kubectl_on_path() {
    local found
    found="$(command -v kubectl || true)"
    if [[ -n ${found} ]]; then
        local version minor server_minor
        # Not `| head -n 1`: under pipefail, kubectl killed by SIGPIPE fails it.
        version="$("${found}" version --client 2>/dev/null || true)"
        version="${version%%$'\n'*}"
        ste_say "kubectl: ${found} (${version})"
        # kubectl supports one minor version of skew with the server.
        minor="$(sed -n 's/.*v1\.\([0-9]*\)\..*/\1/p' <<<"${version}")"
        server_minor="$("${CP_KUBECTL}" version --client 2>/dev/null || true)"
        server_minor="$(sed -n '1s/.*v1\.\([0-9]*\)\..*/\1/p' <<<"${server_minor}")"
        if [[ -n ${minor} && -n ${server_minor} && -z ${NO_KUBERNETES} ]] &&
            ((minor < server_minor - 1 || minor > server_minor + 1)); then
            ste_say "warning: ${found} is kubectl 1.${minor}, kube-apiserver is 1.${server_minor}: more than the one minor version of skew kubectl supports; ${CP_KUBECTL} matches the server"
        fi
        return
    fi
    mkdir -p /usr/local/bin
    ln -sfn "${CP_KUBECTL}" /usr/local/bin/kubectl
    hash -r
    ste_say "kubectl: none was on PATH; linked /usr/local/bin/kubectl -> ${CP_KUBECTL}"
}

print_next_steps() {
    local pod="$1" a="${IPS[node-a]}"
    cat <<EOF

A Kubernetes control plane runs with its Pods in STE: kube-apiserver
(${KUBE_SERVER}) keeps /registry/pods in three tmpfs etcd shards behind the
router (${ROUTER_LISTEN}), everything else in the control-plane etcd on disk
(${CP_ETCD_CLIENT}). kwok plays the kubelet of ${NODES[*]}.
Logs: ${CP_DIR}/*.log, ${DIR}/<node>/agent.log, ${ROUTER_DIR}/router.log.
The kubeconfig context ${KUBE_CONTEXT} is current; the plugin is in ${PLUGIN_ROOT}.

Try it:
  kubectl get pods -o wide
  kubectl scale deployment ${CP_DEMO_DEPLOYMENT} --replicas=30
  kubectl ste status
  kubectl ste where pod/${pod}
  kubectl ste ring leave node-c    # asks to confirm (--yes skips it); its Pods' keys move to node-a and node-b, the Pods stay
  kubectl ste ring join node-c
  curl -s http://${ROUTER_METRICS_LISTEN}/metrics     # router metrics
  curl -s http://${a}:${METRICS_PORT}/metrics     # agent metrics (node-a)
  $0 status
  ${DOWN_CMD}
EOF
}

print_next_steps_without_kubernetes() {
    local a="${IPS[node-a]}"
    cat <<EOF

Three agents are SERVING and the router serves the etcd API on ${ROUTER_LISTEN}.
Data, logs and pid files are in ${DIR}/<node>/ and ${ROUTER_DIR}/.
The plugin is installed in ${PLUGIN_ROOT}; the kubeconfig context
${KUBE_CONTEXT} (now current) tells it where the router is.

Try it:
  kubectl ste status
  kubectl ste ring show
  etcdctl --endpoints ${ROUTER_LISTEN} put /registry/pods/default/web-0 hello
  kubectl ste where pod/web-0      # the member that stores it
  etcdctl --endpoints ${ROUTER_LISTEN} get --prefix /registry/pods/ -w json
  etcdctl --endpoints ${ROUTER_LISTEN} watch --prefix /registry/pods/ --prev-kv
  curl -s http://${ROUTER_METRICS_LISTEN}/metrics     # router metrics
  curl -s http://${a}:${METRICS_PORT}/metrics     # agent metrics (node-a)
  $0 status
  ${DOWN_CMD}
EOF
}

main() {
    local command="${1:-up}"
    case "${command}" in
        up)
            shift || true
            while (($# > 0)); do
                case "$1" in
                    --no-kubernetes) NO_KUBERNETES=1 ;;
                    *)
                        usage >&2
                        ste_die "unknown option for up: '$1'"
                        ;;
                esac
                shift
            done
            cluster_up
            ;;
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
