# shellcheck shell=bash
# The Kubernetes control plane of the local cluster (scripts/local-cluster.sh
# sources this file; do not run it): a control-plane etcd 3.6 on disk with
# fsync on, kube-apiserver with Pods in STE
# (--etcd-servers-overrides=/pods#<router>), kube-controller-manager,
# kube-scheduler and kwok simulating the Nodes node-a, node-b, node-c (the
# agents' node names). All binaries come from <repo>/.build/bin
# (scripts/build-counterparts.sh); certificates and keys are made with
# openssl at every 'up' (cp_make_files), before the STE router and agents
# start: they accept the client certificates of this CA and ask this
# kube-apiserver about tokens and permissions, and read both at start only.
#
#   etcd                     127.0.0.1:2379 (peer :2380), data on disk
#   kube-apiserver           https://127.0.0.1:6443
#   kube-controller-manager  no serving port (--secure-port=0)
#   kube-scheduler           no serving port (--secure-port=0)
#   kwok                     no serving port
#
# Needs from the caller: DIR, NODES, IPS, ROUTER_LISTEN, STE_REPO, the
# helpers of lib.sh, is_process_of and await_exit of local-cluster.sh.
#
# Environment (for experiments; unset, the control plane is as above):
#   STE_PODS_ETCD_SERVERS  the etcd servers of /pods instead of the router:
#                          URLs separated by ';' (kube-apiserver's syntax),
#                          e.g. a 3-member etcd (scripts/pod-startup.sh)
#   STE_SCHEDULER_QPS      kube-scheduler's --kube-api-qps (--kube-api-burst
#                          twice that); unset: its defaults (50, burst 100)

CP_DIR="${DIR}/control-plane"
CP_PKI="${CP_DIR}/pki"
CP_BIN="${STE_REPO}/.build/bin"
CP_KWOK_STAGES="${STE_REPO}/.build/share/kwok/stages"
CP_ETCD_CLIENT=127.0.0.1:2379
CP_ETCD_PEER=127.0.0.1:2380
CP_KUBE_PORT=6443
KUBE_SERVER="https://127.0.0.1:${CP_KUBE_PORT}"
# The kubectl the scripts use: the one built with the control plane (same
# version as kube-apiserver).
CP_KUBECTL="${CP_BIN}/kubectl"
# Started in this order, stopped in the reverse one (etcd last).
CP_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
# Seconds to wait for kube-apiserver's /readyz, the Nodes, the Deployment.
CP_WAIT_READY=120
CP_WAIT_DEPLOYMENT=180
# The Deployment 'up' creates to show Pods living in STE.
CP_DEMO_DEPLOYMENT=web
CP_DEMO_REPLICAS=3
# kwok never pulls it; any image name works. This is the one kubeadm uses.
CP_DEMO_IMAGE=registry.k8s.io/pause:3.10
# Where kube-apiserver keeps Pods: the router, unless an experiment says
# otherwise.
CP_PODS_ETCD_SERVERS="${STE_PODS_ETCD_SERVERS:-http://${ROUTER_LISTEN}}"
# kube-scheduler's client QPS limit, empty for its defaults.
CP_SCHEDULER_QPS="${STE_SCHEDULER_QPS:-}"

# The binaries the control plane needs, by the names build-counterparts.sh
# knows them.
cp_binaries() {
    printf '%s\n' etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl
}

# The PID of a running control-plane component $1, or nothing.
cp_pid() {
    local name="$1" pid
    [[ -f ${CP_DIR}/${name}.pid ]] || return 0
    pid="$(<"${CP_DIR}/${name}.pid")"
    if is_process_of "${pid}" "${name}"; then
        printf '%s\n' "${pid}"
    fi
}

# True if kube-apiserver of the local cluster runs.
cp_running() {
    [[ -n $(cp_pid kube-apiserver) ]]
}

# kubectl as the cluster's admin (the kubeconfig 'up' writes for the
# control plane's own use).
cp_kubectl() {
    "${CP_KUBECTL}" --kubeconfig "${CP_DIR}/admin.kubeconfig" "$@"
}

# Stops every control-plane component that runs, the last started first:
# SIGTERM, SIGKILL after STOP_DEADLINE seconds.
cp_stop() {
    local i name pid
    for ((i = ${#CP_COMPONENTS[@]} - 1; i >= 0; i--)); do
        name="${CP_COMPONENTS[i]}"
        pid="$(cp_pid "${name}")"
        if [[ -n ${pid} ]]; then
            ste_say "stopping ${name} (pid ${pid}): SIGTERM"
            kill -TERM "${pid}" 2>/dev/null || true
            CP_CHECK_NAME="${name}" await_exit "${name}" "${pid}" cp_is_component
        fi
        rm -f "${CP_DIR}/${name}.pid"
    done
}

# await_exit's check for the component named by CP_CHECK_NAME.
cp_is_component() {
    is_process_of "$1" "${CP_CHECK_NAME}"
}

# Signs a certificate for subject $2 with the local CA into $1.crt/$1.key
# (ECDSA P-256), with the X.509 v3 extensions $3 (openssl syntax, one per
# line).
cp_sign() {
    local base="$1" subject="$2" extensions="$3"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "${base}.key" -subj "${subject}" -out "${base}.csr" 2>/dev/null
    openssl x509 -req -in "${base}.csr" -CA "${CP_PKI}/ca.crt" -CAkey "${CP_PKI}/ca.key" \
        -CAcreateserial -days 365 -out "${base}.crt" \
        -extfile <(printf '%s\n' "${extensions}") 2>/dev/null
    rm -f "${base}.csr"
}

# A fresh PKI: the cluster CA, kube-apiserver's serving certificate, the
# service-account signing key pair, and one client certificate per user
# of the API (Kubernetes takes the user from the CN, the groups from O).
cp_make_pki() {
    rm -rf "${CP_PKI}"
    mkdir -p "${CP_PKI}"
    chmod 700 "${CP_PKI}"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "${CP_PKI}/ca.key" -out "${CP_PKI}/ca.crt" -days 365 \
        -subj "/CN=ste-local-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
        ste_die "openssl could not make the local CA in ${CP_PKI}"
    local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
    cp_sign "${CP_PKI}/apiserver" "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cp_sign "${CP_PKI}/admin" "/O=system:masters/CN=ste-local-admin" "${client}"
    cp_sign "${CP_PKI}/controller-manager" "/CN=system:kube-controller-manager" "${client}"
    cp_sign "${CP_PKI}/scheduler" "/CN=system:kube-scheduler" "${client}"
    # kwok writes the status of every Node and Pod, as all kubelets together.
    cp_sign "${CP_PKI}/kwok" "/O=system:masters/CN=kwok" "${client}"
    openssl genrsa -out "${CP_PKI}/sa.key" 2048 2>/dev/null
    openssl rsa -in "${CP_PKI}/sa.key" -pubout -out "${CP_PKI}/sa.pub" 2>/dev/null
    local f
    for f in ca.crt apiserver.crt admin.crt controller-manager.crt scheduler.crt kwok.crt sa.pub; do
        [[ -s ${CP_PKI}/${f} ]] || ste_die "openssl did not make ${CP_PKI}/${f}"
    done
}

# Writes kubeconfig $1 for the client certificate $2 (a base name in
# CP_PKI), with the certificates embedded.
cp_write_kubeconfig() {
    local file="$1" user="$2"
    cat >"${file}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ste-local
  cluster:
    server: ${KUBE_SERVER}
    certificate-authority-data: $(base64 -w0 "${CP_PKI}/ca.crt")
contexts:
- name: ste-local
  context:
    cluster: ste-local
    user: ${user}
users:
- name: ${user}
  user:
    client-certificate-data: $(base64 -w0 "${CP_PKI}/${user}.crt")
    client-key-data: $(base64 -w0 "${CP_PKI}/${user}.key")
current-context: ste-local
EOF
    chmod 600 "${file}"
}

# Starts component $1 (a binary in CP_BIN) with the arguments that follow,
# in its own session, logging to CP_DIR/$1.log (the previous log kept as
# .log.1).
cp_start() {
    local name="$1"
    shift
    local log="${CP_DIR}/${name}.log"
    if [[ -f ${log} ]]; then
        mv -f "${log}" "${log}.1"
    fi
    setsid "${CP_BIN}/${name}" "$@" </dev/null >"${log}" 2>&1 &
    echo "$!" >"${CP_DIR}/${name}.pid"
}

# Fails (with the log's tail) if component $1 has exited.
cp_check_alive() {
    local name="$1"
    if [[ -z $(cp_pid "${name}") ]]; then
        ste_say "error: ${name} exited; the end of ${CP_DIR}/${name}.log follows"
        tail -n 40 "${CP_DIR}/${name}.log" >&2 2>/dev/null || true
        ste_say "stop everything with: ${DOWN_CMD}"
        exit 1
    fi
}

# Polls "$2..." until it succeeds, for at most $1 seconds, while every
# running component stays alive; fails with the message CP_WAIT_WHAT.
cp_wait() {
    local timeout="$1"
    shift
    local deadline=$((SECONDS + timeout)) name
    until "$@" >/dev/null 2>&1; do
        for name in "${CP_COMPONENTS[@]}"; do
            [[ -f ${CP_DIR}/${name}.pid ]] && cp_check_alive "${name}"
        done
        if ((SECONDS >= deadline)); then
            ste_say "error: ${CP_WAIT_WHAT} not within ${timeout}s; see the logs in ${CP_DIR}"
            ste_say "stop everything with: ${DOWN_CMD}"
            exit 1
        fi
        sleep 0.5
    done
}

# True once kube-apiserver answers /readyz with ok.
cp_readyz() {
    [[ $(cp_kubectl get --raw /readyz --request-timeout 2s 2>/dev/null) == ok ]]
}

# True once the Nodes node-a.. exist and are Ready.
cp_nodes_ready() {
    local node ready
    for node in "${NODES[@]}"; do
        ready="$(cp_kubectl get node "${node}" --request-timeout 2s \
            -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)"
        [[ ${ready} == True ]] || return 1
    done
}

# True once the ServiceAccount "default" exists in namespace default (the
# ServiceAccount admission plugin refuses Pods until then).
cp_default_service_account() {
    cp_kubectl get serviceaccount default -n default --request-timeout 2s
}

# The Node objects kwok simulates: one per agent, named like the agent's
# node, its InternalIP the agent's address.
cp_create_nodes() {
    local node manifest=""
    for node in "${NODES[@]}"; do
        manifest+="apiVersion: v1
kind: Node
metadata:
  name: ${node}
  labels:
    kubernetes.io/hostname: ${node}
    kubernetes.io/os: linux
    type: kwok
  annotations:
    kwok.x-k8s.io/node: fake
status:
  addresses:
  - type: InternalIP
    address: ${IPS[${node}]}
---
"
    done
    printf '%s' "${manifest}" | cp_kubectl apply -f - >/dev/null ||
        ste_die "could not create the Nodes ${NODES[*]}"
}

# Makes the control plane's PKI and its users' kubeconfigs afresh
# (CP_PKI, CP_DIR/<user>.kubeconfig). The control plane must not run.
cp_make_files() {
    mkdir -p "${CP_DIR}"
    cp_make_pki
    local user
    for user in admin controller-manager scheduler kwok; do
        cp_write_kubeconfig "${CP_DIR}/${user}.kubeconfig" "${user}"
    done
}

# Starts the control plane with the files of cp_make_files and waits until
# kube-apiserver is ready and kwok reports the Nodes Ready. The router must
# already serve on ROUTER_LISTEN.
cp_up() {
    local name
    for name in $(cp_binaries); do
        [[ -x ${CP_BIN}/${name} ]] || ste_die "${CP_BIN}/${name} is missing: run scripts/build-counterparts.sh"
    done
    [[ -s ${CP_PKI}/ca.crt && -s ${CP_DIR}/admin.kubeconfig ]] ||
        ste_die "no control-plane PKI in ${CP_PKI}: cp_make_files comes first"
    cp_stop
    rm -rf "${CP_DIR}/etcd"

    ste_say "starting the control-plane etcd on ${CP_ETCD_CLIENT} (on disk with fsync: ${CP_DIR}/etcd)"
    cp_start etcd --name control-plane --data-dir "${CP_DIR}/etcd" \
        --listen-client-urls "http://${CP_ETCD_CLIENT}" --advertise-client-urls "http://${CP_ETCD_CLIENT}" \
        --listen-peer-urls "http://${CP_ETCD_PEER}" --initial-advertise-peer-urls "http://${CP_ETCD_PEER}" \
        --initial-cluster "control-plane=http://${CP_ETCD_PEER}" --log-level warn

    local pods_in="STE"
    [[ ${CP_PODS_ETCD_SERVERS} == "http://${ROUTER_LISTEN}" ]] || pods_in="etcd ${CP_PODS_ETCD_SERVERS}, not STE"
    ste_say "starting kube-apiserver on ${KUBE_SERVER} (Pods in ${pods_in}: --etcd-servers-overrides=/pods#${CP_PODS_ETCD_SERVERS})"
    cp_start kube-apiserver \
        --etcd-servers "http://${CP_ETCD_CLIENT}" \
        --etcd-servers-overrides "/pods#${CP_PODS_ETCD_SERVERS}" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "${CP_KUBE_PORT}" \
        --endpoint-reconciler-type none \
        --client-ca-file "${CP_PKI}/ca.crt" \
        --tls-cert-file "${CP_PKI}/apiserver.crt" --tls-private-key-file "${CP_PKI}/apiserver.key" \
        --authorization-mode Node,RBAC \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "${CP_PKI}/sa.pub" \
        --service-account-signing-key-file "${CP_PKI}/sa.key" \
        --service-cluster-ip-range 10.96.0.0/16
    CP_WAIT_WHAT="kube-apiserver's /readyz did not answer ok"
    cp_wait "${CP_WAIT_READY}" cp_readyz
    ste_say "kube-apiserver is ready"

    ste_say "starting kube-controller-manager, kube-scheduler and kwok"
    cp_start kube-controller-manager --kubeconfig "${CP_DIR}/controller-manager.kubeconfig" \
        --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
        --use-service-account-credentials \
        --service-account-private-key-file "${CP_PKI}/sa.key" \
        --root-ca-file "${CP_PKI}/ca.crt"
    local scheduler_qps=()
    if [[ -n ${CP_SCHEDULER_QPS} ]]; then
        scheduler_qps=(--kube-api-qps "${CP_SCHEDULER_QPS}" --kube-api-burst "$((CP_SCHEDULER_QPS * 2))")
    fi
    cp_start kube-scheduler --kubeconfig "${CP_DIR}/scheduler.kubeconfig" \
        --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 "${scheduler_qps[@]}"
    local stages=() f
    for f in "${CP_KWOK_STAGES}"/*.yaml; do
        stages+=(--config "${f}")
    done
    ((${#stages[@]} > 0)) || ste_die "no kwok Stage files in ${CP_KWOK_STAGES}: run scripts/build-counterparts.sh kwok"
    # --node-lease-duration-seconds as kwokctl sets it: Nodes stay alive
    # through their Lease in kube-node-lease.
    cp_start kwok --kubeconfig "${CP_DIR}/kwok.kubeconfig" --manage-all-nodes \
        --node-lease-duration-seconds 40 --server-address 127.0.0.1:0 "${stages[@]}"

    cp_create_nodes
    CP_WAIT_WHAT="the Nodes ${NODES[*]} were not Ready"
    cp_wait "${CP_WAIT_READY}" cp_nodes_ready
    CP_WAIT_WHAT="the ServiceAccount default/default was not created by kube-controller-manager"
    cp_wait "${CP_WAIT_READY}" cp_default_service_account
    ste_say "the control plane is up: Nodes ${NODES[*]} Ready (kwok)"
}

# Creates the demo Deployment and waits until its Pods are Running and it
# is Available. Prints the name of one of its Pods.
cp_demo_deployment() {
    cp_kubectl delete deployment "${CP_DEMO_DEPLOYMENT}" --ignore-not-found >/dev/null
    printf '$ kubectl create deployment %s --image=%s --replicas=%s\n' \
        "${CP_DEMO_DEPLOYMENT}" "${CP_DEMO_IMAGE}" "${CP_DEMO_REPLICAS}" >&2
    cp_kubectl create deployment "${CP_DEMO_DEPLOYMENT}" --image="${CP_DEMO_IMAGE}" \
        --replicas="${CP_DEMO_REPLICAS}" >&2 || ste_die "kubectl create deployment failed"
    printf '$ kubectl rollout status deployment/%s\n' "${CP_DEMO_DEPLOYMENT}" >&2
    if ! cp_kubectl rollout status "deployment/${CP_DEMO_DEPLOYMENT}" \
        --timeout "${CP_WAIT_DEPLOYMENT}s" >&2; then
        cp_kubectl get pods -o wide >&2 || true
        ste_say "error: the Deployment did not become Available within ${CP_WAIT_DEPLOYMENT}s; logs in ${CP_DIR}"
        ste_say "stop everything with: ${DOWN_CMD}"
        exit 1
    fi
    cp_kubectl get pods -l "app=${CP_DEMO_DEPLOYMENT}" --field-selector status.phase=Running \
        -o 'jsonpath={.items[0].metadata.name}'
}
