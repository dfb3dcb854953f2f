#!/usr/bin/env bash
# Builds LogCluster's container images (images/Dockerfile) without a container daemon.
#
#   images/build.sh binaries   static lognode, logctl, logcluster-operator → $CONTEXT/bin
#   images/build.sh images     binaries, then both images with buildah (local storage)
#   images/build.sh setup      install buildah from Debian's packages if it is missing (root)
#
# Environment:
#   CARGO_TARGET_DIR           cargo's target directory (default: ./target)
#   LOGCLUSTER_IMAGE_PROFILE   cargo profile of the binaries (default: release)
#   LOGCLUSTER_IMAGE_CONTEXT   build context directory (default: $CARGO_TARGET_DIR/images/context)
#   LOGCLUSTER_IMAGE_REGISTRY  image name prefix (default: ghcr.io/logcluster)
#   LOGCLUSTER_IMAGE_TAG       image tag (default: the workspace version)
#   BUILDAH_ROOT               private buildah storage (default: buildah's own)
#
# The binaries are linked statically against glibc (`-C target-feature=+crt-static`); the machine
# has no musl target. They need no file from the image at run time: the images are `scratch`.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
BINARIES=(lognode logctl logcluster-operator)
PROFILE=${LOGCLUSTER_IMAGE_PROFILE:-release}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
CONTEXT=${LOGCLUSTER_IMAGE_CONTEXT:-$TARGET_DIR/images/context}
REGISTRY=${LOGCLUSTER_IMAGE_REGISTRY:-ghcr.io/logcluster}
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
TAG=${LOGCLUSTER_IMAGE_TAG:-$VERSION}
# cargo's output folder of a profile.
case "$PROFILE" in
  dev | test) PROFILE_DIR=debug ;;
  release | bench) PROFILE_DIR=release ;;
  *) PROFILE_DIR=$PROFILE ;;
esac

die() {
  echo "images/build.sh: $*" >&2
  exit 1
}

binaries() {
  echo "building static ${BINARIES[*]} ($PROFILE, $TARGET) in $TARGET_DIR"
  # The flag goes to target artifacts only: build scripts and proc macros stay dynamic (they must).
  # RUSTFLAGS would override it, so it is cleared.
  env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
    CARGO_TARGET_DIR="$TARGET_DIR" \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
    nice -n 19 cargo build --locked --profile "$PROFILE" --target "$TARGET" \
    -p logcluster-node -p logctl -p logcluster-operator \
    --bin lognode --bin logctl --bin logcluster-operator
  rm -rf "$CONTEXT"
  mkdir -p "$CONTEXT/bin"
  for bin in "${BINARIES[@]}"; do
    local path="$TARGET_DIR/$TARGET/$PROFILE_DIR/$bin"
    [ -x "$path" ] || die "$path was not built"
    # A dynamically linked executable names its loader in a PT_INTERP program header.
    if readelf --program-headers --wide "$path" | grep -q 'INTERP'; then
      die "$path is dynamically linked (it has a PT_INTERP header)"
    fi
    if readelf --dynamic --wide "$path" | grep -q '(NEEDED)'; then
      die "$path needs shared libraries: $(readelf --dynamic --wide "$path" | grep '(NEEDED)')"
    fi
    cp "$path" "$CONTEXT/bin/$bin"
  done
  cp images/Dockerfile "$CONTEXT/Dockerfile"
  echo "static binaries in $CONTEXT/bin"
}

buildah_cmd() {
  local args=(--storage-driver vfs)
  if [ -n "${BUILDAH_ROOT:-}" ]; then
    args+=(--root "$BUILDAH_ROOT/storage" --runroot "$BUILDAH_ROOT/run")
  fi
  buildah "${args[@]}" "$@"
}

images() {
  command -v buildah >/dev/null 2>&1 || die "buildah is not installed (run: images/build.sh setup)"
  binaries
  for target in lognode operator; do
    local name=lognode
    [ "$target" = operator ] && name=logcluster-operator
    echo "building image $REGISTRY/$name:$TAG"
    # --isolation chroot: no user namespace or runc is needed (no RUN step executes anyway).
    buildah_cmd bud --isolation chroot --target "$target" --build-arg "VERSION=$VERSION" \
      --tag "$REGISTRY/$name:$TAG" --file "$CONTEXT/Dockerfile" "$CONTEXT"
  done
  echo "built $REGISTRY/lognode:$TAG and $REGISTRY/logcluster-operator:$TAG"
  echo "push with: buildah push $REGISTRY/lognode:$TAG docker://$REGISTRY/lognode:$TAG"
}

setup() {
  command -v buildah >/dev/null 2>&1 && return 0
  [ "$(id -u)" -eq 0 ] || die "buildah is missing and we are not root; install it: apt-get install buildah"
  echo "setup: installing buildah"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
}

case "${1:-images}" in
  binaries) binaries ;;
  images) images ;;
  setup) setup ;;
  *) die "usage: $0 [binaries|images|setup]" ;;
esac
