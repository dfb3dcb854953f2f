#!/usr/bin/env bash
# Fails when OpenSSL or aws-lc is anywhere in the dependency tree: LogCluster is rustls + ring only.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for crate in openssl-sys openssl aws-lc-sys aws-lc-rs native-tls; do
  # `cargo tree -i` exits non-zero when the crate is not in the graph at all, which is what we want.
  if out=$(cargo tree --workspace --all-features --target all -e normal,build,dev -i "$crate" 2>/dev/null) && [ -n "$out" ]; then
    echo "forbidden dependency '$crate' is in the tree:" >&2
    echo "$out" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "TLS dependencies OK: no OpenSSL, no aws-lc"
exit $status
