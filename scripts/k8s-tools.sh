#!/usr/bin/env bash
# Builds the Kubernetes test binaries from Go modules and caches them by version outside the
# checkout, so a fresh clone or a second worktree reuses them: etcd, kube-apiserver,
# kube-controller-manager and helm (the control-plane tests), and kubelet, kube-scheduler,
# kube-proxy, coredns and pause (the one-node cluster that runs real pods).
#
# Usage: scripts/k8s-tools.sh [build [TOOL...]]   build what is missing (default: all of the
#                                                 above; kubectl too where the machine has none)
#        scripts/k8s-tools.sh path TOOL          print where TOOL's binary is (or would be)
#
# Cache: ${LOGCLUSTER_TOOLS_DIR:-/var/tmp/logcluster-tools}/<tool>-<version>/<binary>, next to a
# `.stamp` holding a hash of the tool's go.mod, go.sum, Go sources and build flags. A binary whose
# stamp matches is not rebuilt. The Rust harness (tests/src/k8s/tools.rs) derives the same paths.
#
# The Go modules under tests/tools/ pin every version (go.mod + go.sum are committed); builds use
# -mod=readonly so they never silently change those files, -trimpath and fixed ldflags so the same
# inputs give the same binary, and the normal Go module and build caches so rebuilds are quick.
# A cold kube-apiserver build takes many minutes on two cores: see tests/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS_SRC="$ROOT/tests/tools"
TOOLS_DIR="${LOGCLUSTER_TOOLS_DIR:-/var/tmp/logcluster-tools}"
ALL_TOOLS=(etcd kube-apiserver kube-controller-manager helm kube-scheduler kubelet kube-proxy coredns pause)
# Bumped when the build recipe below changes in a way the hashed files do not show.
RECIPE=1

log() { echo "k8s-tools: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# module_version MODDIR MODULE: the version MODDIR's go.mod requires of MODULE (no `go` call, so
# `path` stays instant and works before the module cache is filled).
module_version() {
  local v
  v="$(awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1/go.mod")"
  [ -n "$v" ] || die "$1/go.mod does not require $2"
  echo "$v"
}

# tool_spec TOOL: sets MODDIR, PKG, BIN, VERSION and LDFLAGS for TOOL.
tool_spec() {
  case "$1" in
    etcd)
      MODDIR="$TOOLS_SRC/etcd"
      PKG="."
      BIN="etcd"
      VERSION="$(module_version "$MODDIR" go.etcd.io/etcd/server/v3)"
      LDFLAGS="-s -w"
      ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy | kubectl)
      MODDIR="$TOOLS_SRC/kubernetes"
      PKG="k8s.io/kubernetes/cmd/$1"
      BIN="$1"
      VERSION="$(module_version "$MODDIR" k8s.io/kubernetes)"
      # What Kubernetes' hack/lib/version.sh stamps in, so `kubectl version` and the API server's
      # compatibility version report the real release; buildDate is fixed for reproducibility.
      local major minor ldf=() pkg key val
      major="${VERSION#v}" && major="${major%%.*}"
      minor="${VERSION#v*.}" && minor="${minor%%.*}"
      for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        for key in gitVersion=$VERSION gitMajor=$major gitMinor=$minor gitTreeState=clean \
          buildDate=1970-01-01T00:00:00Z; do
          val="${key#*=}" && key="${key%%=*}"
          ldf+=("-X $pkg.$key=$val")
        done
      done
      LDFLAGS="-s -w ${ldf[*]}"
      ;;
    helm)
      MODDIR="$TOOLS_SRC/helm"
      PKG="helm.sh/helm/v3/cmd/helm"
      BIN="helm"
      VERSION="$(module_version "$MODDIR" helm.sh/helm/v3)"
      # As helm's own Makefile: the version, and the default Kubernetes version for `helm template`
      # and `helm lint` taken from the client-go it is built with (v0.X.Y means Kubernetes 1.X).
      local cg k8s_minor
      cg="$(module_version "$MODDIR" k8s.io/client-go)"
      k8s_minor="${cg#v0.}" && k8s_minor="${k8s_minor%%.*}"
      LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION"
      LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      local p
      for p in pkg/lint/rules pkg/chartutil; do
        LDFLAGS+=" -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=$k8s_minor"
      done
      ;;
    coredns)
      # Our own main with only the plugins the test cluster uses (tests/tools/coredns/main.go).
      MODDIR="$TOOLS_SRC/coredns"
      PKG="."
      BIN="coredns"
      VERSION="$(module_version "$MODDIR" github.com/coredns/coredns)"
      LDFLAGS="-s -w"
      ;;
    pause)
      # The pod sandbox's pause process (nothing can be pulled from a registry here).
      MODDIR="$TOOLS_SRC/pause"
      PKG="."
      BIN="pause"
      VERSION="$(awk '/^\/\/ version:/ { print $3; exit }' "$MODDIR/main.go")"
      [ -n "$VERSION" ] || die "$MODDIR/main.go has no '// version:' line"
      LDFLAGS="-s -w"
      ;;
    *) die "unknown tool '$1' (known: ${ALL_TOOLS[*]} kubectl)" ;;
  esac
  OUT_DIR="$TOOLS_DIR/$1-$VERSION"
  OUT="$OUT_DIR/$BIN"
}

stamp_of() {
  # Hash of everything that decides the binary: the module files, its Go sources, the recipe.
  (
    cd "$MODDIR"
    cat go.mod go.sum
    find . -name '*.go' -type f | LC_ALL=C sort | xargs cat
    echo "$PKG|$LDFLAGS|$RECIPE|$(go env GOVERSION GOOS GOARCH)"
  ) | sha256sum | cut -d' ' -f1
}

build_tool() {
  local tool="$1" stamp want
  tool_spec "$tool"
  mkdir -p "$OUT_DIR"
  # One build per tool at a time, even when two `make setup` run together.
  exec 9>"$OUT_DIR/.lock"
  flock 9
  want="$(stamp_of)"
  if [ -x "$OUT" ] && [ -f "$OUT_DIR/.stamp" ] && [ "$(cat "$OUT_DIR/.stamp")" = "$want" ]; then
    log "$tool $VERSION is up to date: $OUT"
    exec 9>&-
    return
  fi
  log "building $tool $VERSION from Go modules (first build can take many minutes on 2 cores) ..."
  local start=$SECONDS tmp="$OUT.tmp.$$"
  # NB: CGO off gives a static binary (as Kubernetes' own release builds) and avoids a C toolchain;
  # nice keeps the machine usable for the cargo builds that run alongside.
  if ! (cd "$MODDIR" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
    nice -n 10 go build -trimpath -ldflags "$LDFLAGS" -o "$tmp" "$PKG"); then
    rm -f "$tmp"
    die "building $tool failed (module $MODDIR, package $PKG)"
  fi
  mv -f "$tmp" "$OUT"
  echo "$want" >"$OUT_DIR/.stamp"
  log "built $tool $VERSION in $((SECONDS - start))s: $OUT"
  exec 9>&-
}

cmd="${1:-build}"
[ $# -gt 0 ] && shift
case "$cmd" in
  build)
    command -v go >/dev/null 2>&1 || die "go is not on PATH; install Go ≥ 1.25 (tests/README.md)"
    if [ $# -eq 0 ]; then
      set -- "${ALL_TOOLS[@]}"
      # The harness runs /usr/bin/kubectl (part of our machine image); build a matching one only
      # where it is missing, since Debian's own kubectl (1.20) is far too old.
      if [ ! -x /usr/bin/kubectl ] && [ -z "${LOGCLUSTER_KUBECTL:-}" ]; then
        set -- "$@" kubectl
      fi
    fi
    for t in "$@"; do build_tool "$t"; done
    ;;
  path)
    [ $# -eq 1 ] || die "usage: $0 path TOOL"
    tool_spec "$1"
    echo "$OUT"
    ;;
  *) die "usage: $0 [build [TOOL...]] | path TOOL" ;;
esac
