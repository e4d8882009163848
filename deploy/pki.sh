#!/usr/bin/env bash
# Makes the certificates the ste-router static pod (router-static-pod.yaml)
# reads from /etc/kubernetes/pki/ste/ and those each node's ste-agent reads
# from /etc/ste/pki/ (agent-daemonset*.yaml), with the openssl CLI (1.1.1 or
# newer). See docs/install.md, "1. Certificates".
#
# Usage: deploy/pki.sh OUT_DIR [--etcd-ca FILE] [--router-san SAN]... [--shard NODE=IP]... [--days N]
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
#   --router-san SAN   another name of the router's etcd listener besides
#                      IP:127.0.0.1 and DNS:localhost, e.g. IP:10.0.0.10 when
#                      kube-apiservers on other nodes reach it (repeatable)
#   --shard NODE=IP    also make the certificate of NODE's shard at IP
#                      (repeatable): the serving certificate of the shard's
#                      etcd (SAN IP:IP) and the agent's client certificate
#                      towards its own shard (SAN DNS:NODE); NODE is the
#                      Kubernetes node name. Copy it to the node as
#                      /etc/ste/pki/shard.crt and shard.key, with ca.crt.
#   --days N           validity of the certificates it signs (default 365);
#                      the STE CA is valid for 10 years
#
# Files in OUT_DIR:
#   ca.crt, ca.key             the STE CA; an existing pair is reused. Keep
#                              ca.key somewhere safe, not on the node.
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
#   shard-NODE.crt/.key        with --shard: ste-agent's --etcd-cert-file and
#                              --etcd-key-file on NODE (--etcd-trusted-ca-file
#                              is ca.crt)
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
DAYS=365
ROUTER_SANS=("IP:127.0.0.1" "DNS:localhost")
SHARDS=()
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

# sign NAME CN EXTENSIONS: a new key NAME.key and NAME.crt signed by the STE CA.
sign() {
    local name="$1" cn="$2" extensions="$3"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=${cn}" \
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
    sign router-server ste-router "subjectAltName=${sans}
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth"
fi
# The shards check the SAN (etcd's --client-cert-allowed-hostname), not the CN.
sign router-shard-client ste-router "subjectAltName=DNS:ste-router
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
for shard in "${SHARDS[@]+"${SHARDS[@]}"}"; do
    node="${shard%%=*}" ip="${shard#*=}"
    sign "shard-${node}" "${node}" "subjectAltName=DNS:${node},IP:${ip}
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
done

if [[ -n ${ETCD_CA} ]]; then
    cp "${ETCD_CA}" "${OUT}/apiserver-etcd-client-ca.crt"
    cat "${ETCD_CA}" "${OUT}/ca.crt" >"${OUT}/apiserver-etcd-ca-bundle.crt"
    echo "made ${OUT}/apiserver-etcd-client-ca.crt and ${OUT}/apiserver-etcd-ca-bundle.crt" >&2
else
    echo "no --etcd-ca: made no router-server.* or apiserver-etcd-* files (the router's etcd API stays plain)" >&2
fi
chmod 0644 "${OUT}"/*.crt
