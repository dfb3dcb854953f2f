#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian 12 machine. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# The one-node Kubernetes that runs real pods (tests/README.md): container runtime, OCI runtime,
# CNI plugins (/usr/lib/cni), and what kubelet and kube-proxy call.
command -v containerd >/dev/null 2>&1 || need_apt+=(containerd)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v conntrack >/dev/null 2>&1 || need_apt+=(conntrack)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing apt packages: ${need_apt[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing ${need_apt[*]} and not root; tests that need them will fail" >&2
  fi
fi

# Kubernetes test binaries (etcd, kube-apiserver, helm, kubelet and the other node components,
# CoreDNS, pause, and kubectl when the machine has none),
# built from the Go modules under tests/tools/ and cached outside the checkout. Quick when cached;
# the first build takes many minutes (tests/README.md).
./scripts/k8s-tools.sh build
