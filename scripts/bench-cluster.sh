#!/usr/bin/env bash
# Benchmarks a local cluster: starts `logctl dev` with N nodes (default 3) on loopback (mutual TLS,
# fsync=always), runs `logctl bench` for 100 B and 1 KiB records in unary, stream and batch mode,
# prints each summary, and stops the cluster.
#
#   scripts/bench-cluster.sh [nodes]            # needs release binaries: make release
#
# Environment: BENCH_DURATION (default 10s), BENCH_SUBNET (127.0.<subnet>.i, default 50),
# BENCH_MODES (default "unary stream batch"), BENCH_SIZES (default "100 1024"),
# BENCH_ARGS (extra logctl bench flags), CARGO_TARGET_DIR (default /var/tmp/logcluster-target).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${1:-3}
BIN=${CARGO_TARGET_DIR:-/var/tmp/logcluster-target}/release
DURATION=${BENCH_DURATION:-10s}
SUBNET=${BENCH_SUBNET:-50}
MODES=${BENCH_MODES:-unary stream batch}
SIZES=${BENCH_SIZES:-100 1024}
for bin in logctl lognode; do
  [ -x "$BIN/$bin" ] || { echo "missing $BIN/$bin: run make release" >&2; exit 1; }
done

DIR=$(mktemp -d /var/tmp/logcluster-bench.XXXXXX)
"$BIN/logctl" dev --nodes "$NODES" --subnet "$SUBNET" --dir "$DIR" --log-level warn \
  >"$DIR/dev.out" 2>&1 &
DEV=$!
cleanup() {
  kill -INT "$DEV" 2>/dev/null || true
  wait "$DEV" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

for _ in $(seq 1 240); do
  grep -q "logctl admin status" "$DIR/dev.out" && break
  kill -0 "$DEV" 2>/dev/null || { cat "$DIR/dev.out" >&2; exit 1; }
  sleep 0.5
done
grep -q "logctl admin status" "$DIR/dev.out" || { cat "$DIR/dev.out" >&2; exit 1; }
grep "cluster ready" "$DIR/dev.out"

ADDRS=$(seq -s, -f "127.0.$SUBNET.%g:8400" 1 "$NODES")
export LOGCLUSTER_ADDR=$ADDRS
export LOGCLUSTER_CA=$DIR/certs/ca.pem
export LOGCLUSTER_CERT=$DIR/certs/dev.pem
export LOGCLUSTER_KEY=$DIR/certs/dev-key.pem

echo "nodes=$NODES fsync=always mTLS duration=$DURATION ($(nproc) cores, $(uptime | sed 's/.*load/load/'))"
for size in $SIZES; do
  for mode in $MODES; do
    # shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
    "$BIN/logctl" bench --mode "$mode" --record-size "$size" --duration "$DURATION" \
      ${BENCH_ARGS:-} 2>/dev/null
    echo
  done
done
