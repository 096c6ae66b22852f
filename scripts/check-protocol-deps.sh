#!/usr/bin/env bash
# Fails if the sans-IO protocol crate depends (normally, not only in tests) on a runtime, the
# network stack or LibTorch. The node and the simulator share it, so it must stay pure.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree -p gradmesh-protocol -e normal --prefix none)
if grep -E '^(tokio|libp2p|actix|tch|torch-sys|async-std|mio) ' <<<"$tree"; then
  echo "protocol-deps: gradmesh-protocol must not depend on the crates above" >&2
  exit 1
fi
echo "protocol-deps: gradmesh-protocol is free of tokio, libp2p, actix, tch, torch-sys"
