#!/usr/bin/env bash
# Fails if the sans-IO protocol crate depends (normally, not only in tests) on a runtime, the
# network stack, LibTorch, or on any gradmesh crate but the ground crate (gradmesh-math). The node
# and the simulator share it, so it must stay pure. Also checks that the ground crate and the
# federated toolkit never reach LibTorch or the kernels, nor does the simulator without `fl`.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(tokio|libp2p|actix|tch|torch-sys|async-std|mio|gradmesh-kernels|gradmesh-federated|gradmesh-node|gradmesh-sim) '
status=0
for crate in gradmesh-protocol gradmesh-math gradmesh-federated; do
  tree=$(cargo tree -p "$crate" -e normal --prefix none | tail -n +2)
  if found=$(grep -E "$forbidden" <<<"$tree"); then
    echo "protocol-deps: $crate must not depend on:" >&2
    sort -u <<<"$found" >&2
    status=1
  fi
done
ours=$(cargo tree -p gradmesh-protocol -e normal --prefix none | grep -E '^gradmesh-' | cut -d' ' -f1 | sort -u)
if [ "$ours" != $'gradmesh-math\ngradmesh-protocol' ]; then
  echo "protocol-deps: gradmesh-protocol may depend on gradmesh-math alone among our crates; found:" >&2
  echo "$ours" >&2
  status=1
fi
if grep -E '^(tch|torch-sys|gradmesh-kernels) ' <(cargo tree -p gradmesh-sim --no-default-features -e normal --prefix none); then
  echo "protocol-deps: gradmesh-sim without its fl feature must not reach LibTorch" >&2
  status=1
fi
[ "$status" -eq 0 ] || exit 1
echo "protocol-deps: gradmesh-protocol depends on gradmesh-math alone among our crates; it, the ground crate and gradmesh-federated are free of tokio, libp2p, actix, tch, torch-sys and the kernels; so is gradmesh-sim without its fl feature"
