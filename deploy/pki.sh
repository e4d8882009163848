#!/usr/bin/env bash
# Makes the certificates the ste-router static pod (router-static-pod.yaml)
# reads from /etc/kubernetes/pki/ste/ and those each node's ste-agent reads
# from /etc/ste/pki/ (agent-daemonset*.yaml), with the openssl CLI (1.1.1 or
# newer). See docs/install.md, "1. Certificates".
#
# Usage: deploy/pki.sh OUT_DIR [--etcd-ca FILE] [--kube-ca FILE]
#          [--router-san SAN]... [--shard NODE=IP]... [--user NAME]... [--days N]
#
#   OUT_DIR            where the files go (created, mode 0700); on the router's
#                      node that is /etc/kubernetes/pki/ste
#   --etcd-ca FILE     the CA that signed kube-apiserver's etcd client
#                      certificate (--etcd-certfile) and that its --etcd-cafile
#                      holds: on kubeadm clusters /etc/kubernetes/pki/etcd/ca.crt.
#                      Without it, the router's etcd API files (router-server.*,
#                      apiserver-etcd-*) are not made: only the STE CA and the
#                      shard door's files (a router whose --listen is plain,
#                      as in scripts/local-cluster.sh)
#   --kube-ca FILE     Kubernetes' client CA, kube-apiserver's
#                      --client-ca-file (kubeadm: /etc/kubernetes/pki/ca.crt):
#                      appended to client-ca-bundle.crt, so that the router
#                      and the agents accept the client certificates kubectl
#                      users already have. Without it the bundle is the STE
#                      CA alone
#   --router-san SAN   another name of the router besides IP:127.0.0.1 and
#                      DNS:localhost, e.g. IP:10.0.0.10, the address agents
#                      and kube-apiservers on other nodes reach it at
#                      (repeatable): in router-server.crt (etcd API) and
#                      router-admin.crt (admin and user ports)
#   --shard NODE=IP    also make the certificate of NODE at IP (repeatable):
#                      the node's one identity, Subject CN=system:node:NODE,
#                      O=system:nodes, SANs IP:IP and DNS:NODE, serverAuth
#                      and clientAuth. The shard's etcd serves with it (IP)
#                      and the agent probes its own shard with it (etcd's
#                      --client-cert-allowed-hostname checks DNS:NODE); the
#                      agent serves its gRPC ports with it and presents it
#                      to the router. NODE is the Kubernetes node name. Copy
#                      it to the node as /etc/ste/pki/shard.crt and
#                      shard.key, with ca.crt and client-ca-bundle.crt.
#   --user NAME        also make a client certificate for the person or
#                      tool NAME (Subject CN=NAME; repeatable), for the
#                      "certificates only" mode without Kubernetes, in
#                      which any such certificate may do everything
#   --days N           validity of the certificates it signs (default 365);
#                      the STE CA is valid for 10 years
#
# Files in OUT_DIR:
#   ca.crt, ca.key             the STE CA; an existing pair is reused. Keep
#                              ca.key somewhere safe, not on the node.
#   client-ca-bundle.crt       ca.crt followed by --kube-ca (if given): the
#                              router's and the agents' --client-ca-file
#   router-admin.crt/.key      the serving certificate of the router's admin
#                              and user ports (--tls-cert-file,
#                              --tls-private-key-file), SANs DNS:ste-router,
#                              DNS:localhost, IP:127.0.0.1 and --router-san;
#                              agents (--router-ca-file) and kubectl ste
#                              verify it with ca.crt
#   router-server.crt/.key     the router's etcd API certificate (--cert, --key)
#   apiserver-etcd-client-ca.crt  a copy of --etcd-ca (the router's --client-ca):
#                              the router accepts kube-apiserver's existing
#                              etcd client certificate
#   apiserver-etcd-ca-bundle.crt  --etcd-ca followed by ca.crt: what
#                              kube-apiserver's --etcd-cafile must point at, so
#                              it trusts both its etcd and the router
#   router-shard-client.crt/.key  the router's client certificate towards the
#                              shards (--shard-cert, --shard-key; --shard-ca is
#                              ca.crt), SAN DNS:ste-router: the one client
#                              identity the shards let in (ste-agent's
#                              --etcd-client-cert-allowed-hostname)
#   shard-NODE.crt/.key        with --shard: on NODE, ste-agent's
#                              --etcd-cert-file/--etcd-key-file and
#                              --tls-cert-file/--tls-private-key-file
#                              (--etcd-trusted-ca-file and --router-ca-file
#                              are ca.crt)
#   user-NAME.crt/.key         with --user: NAME's client certificate
#
# It ends by printing the command that publishes ca.crt as the ConfigMap
# kube-system/ste-ca, where kubectl ste finds the CA it trusts the router by.
set -euo pipefail

die() {
    printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

OUT=""
ETCD_CA=""
KUBE_CA=""
DAYS=365
ROUTER_SANS=("IP:127.0.0.1" "DNS:localhost")
SHARDS=()
USERS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --etcd-ca)
            [[ $# -ge 2 ]] || die "--etcd-ca needs a file"
            ETCD_CA="$2"
            shift 2
            ;;
        --kube-ca)
            [[ $# -ge 2 ]] || die "--kube-ca needs a file"
            KUBE_CA="$2"
            shift 2
            ;;
        --router-san)
            [[ $# -ge 2 && $2 =~ ^(IP|DNS):[^,[:space:]]+$ ]] || die "--router-san needs IP:ADDRESS or DNS:NAME"
            ROUTER_SANS+=("$2")
            shift 2
            ;;
        --shard)
            [[ $# -ge 2 && $2 =~ ^[A-Za-z0-9._-]+=[0-9A-Fa-f.:]+$ ]] || die "--shard needs NODE=IP"
            SHARDS+=("$2")
            shift 2
            ;;
        --user)
            [[ $# -ge 2 && $2 =~ ^[A-Za-z0-9@._:-]+$ ]] || die "--user needs a NAME (letters, digits, @ . _ : -)"
            USERS+=("$2")
            shift 2
            ;;
        --days)
            [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--days needs a number of days"
            DAYS="$2"
            shift 2
            ;;
        -*)
            die "unknown option '$1' (see --help)"
            ;;
        *)
            [[ -z ${OUT} ]] || die "one OUT_DIR only (see --help)"
            OUT="$1"
            shift
            ;;
    esac
done
[[ -n ${OUT} ]] || die "missing OUT_DIR (see --help)"
[[ -z ${ETCD_CA} || -f ${ETCD_CA} ]] || die "--etcd-ca ${ETCD_CA}: no such file"
[[ -z ${KUBE_CA} || -f ${KUBE_CA} ]] || die "--kube-ca ${KUBE_CA}: no such file"
command -v openssl >/dev/null 2>&1 || die "openssl is not installed"

umask 077
mkdir -p "${OUT}"
chmod 0700 "${OUT}"
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

if [[ -f ${OUT}/ca.crt && -f ${OUT}/ca.key ]]; then
    echo "reusing the STE CA in ${OUT}/ca.crt" >&2
else
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ste-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "${OUT}/ca.key" -out "${OUT}/ca.crt" 2>/dev/null
fi

# sign NAME SUBJECT EXTENSIONS: a new key NAME.key and NAME.crt signed by
# the STE CA; SUBJECT as openssl's -subj, e.g. /CN=ste-router.
sign() {
    local name="$1" subject="$2" extensions="$3"
    openssl req -newkey rsa:2048 -nodes -subj "${subject}" \
        -keyout "${OUT}/${name}.key" -out "${WORK}/${name}.csr" 2>/dev/null
    printf '%s\n' "${extensions}" >"${WORK}/${name}.ext"
    openssl x509 -req -in "${WORK}/${name}.csr" -CA "${OUT}/ca.crt" -CAkey "${OUT}/ca.key" \
        -CAcreateserial -CAserial "${WORK}/ca.srl" -days "${DAYS}" \
        -extfile "${WORK}/${name}.ext" -out "${OUT}/${name}.crt" 2>/dev/null
    openssl verify -CAfile "${OUT}/ca.crt" "${OUT}/${name}.crt" >/dev/null
    echo "made ${OUT}/${name}.crt" >&2
}

if [[ -n ${ETCD_CA} ]]; then
    sans="$(IFS=,; echo "${ROUTER_SANS[*]}")"
    sign router-server /CN=ste-router "subjectAltName=${sans}
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth"
fi
# The shards check the SAN (etcd's --client-cert-allowed-hostname), not the CN.
sign router-shard-client /CN=ste-router "subjectAltName=DNS:ste-router
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
# Agents dial the router by --router's host; kubectl ste by its context's
# address or, through a port-forward, as ste-router.
sans="$(IFS=,; echo "DNS:ste-router,${ROUTER_SANS[*]}")"
sign router-admin /CN=ste-router "subjectAltName=${sans}
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth"
# Kubernetes' node identity, as a kubelet's client certificate carries it:
# the router lets system:node:NODE register, heartbeat and leave as NODE
# only. DNS:NODE stays for the shard's own --client-cert-allowed-hostname.
for shard in "${SHARDS[@]+"${SHARDS[@]}"}"; do
    node="${shard%%=*}" ip="${shard#*=}"
    sign "shard-${node}" "/O=system:nodes/CN=system:node:${node}" "subjectAltName=DNS:${node},IP:${ip}
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
done
for user in "${USERS[@]+"${USERS[@]}"}"; do
    sign "user-${user}" "/CN=${user}" "keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
done

if [[ -n ${KUBE_CA} ]]; then
    cat "${OUT}/ca.crt" "${KUBE_CA}" >"${OUT}/client-ca-bundle.crt"
    echo "made ${OUT}/client-ca-bundle.crt (the STE CA, then ${KUBE_CA})" >&2
else
    cp "${OUT}/ca.crt" "${OUT}/client-ca-bundle.crt"
    echo "no --kube-ca: ${OUT}/client-ca-bundle.crt is the STE CA alone (no Kubernetes client certificates accepted; bearer tokens are)" >&2
fi

if [[ -n ${ETCD_CA} ]]; then
    cp "${ETCD_CA}" "${OUT}/apiserver-etcd-client-ca.crt"
    cat "${ETCD_CA}" "${OUT}/ca.crt" >"${OUT}/apiserver-etcd-ca-bundle.crt"
    echo "made ${OUT}/apiserver-etcd-client-ca.crt and ${OUT}/apiserver-etcd-ca-bundle.crt" >&2
else
    echo "no --etcd-ca: made no router-server.* or apiserver-etcd-* files (the router's etcd API stays plain)" >&2
fi
chmod 0644 "${OUT}"/*.crt
cat >&2 <<EOF
kubectl ste finds the CA that signed the router's certificate in the ConfigMap
kube-system/ste-ca; publish ca.crt (the certificate only, never ca.key) with:
  kubectl -n kube-system create configmap ste-ca --from-file=ca.crt=${OUT}/ca.crt
EOF
