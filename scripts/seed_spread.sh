#!/usr/bin/env bash
# Runs every test that asserts a learning outcome under several seeds and prints what each one
# measured, so the thresholds written beside those assertions can be checked on this CPU.
# Usage: scripts/seed_spread.sh [FIRST_SEED [COUNT]]   (default: seeds 1..=10)
# The kernels' tests read GRADMESH_TEST_SEED (the codec-accuracy tests average 8 seeds from it),
# the federated simulator's GRADMESH_SIM_SEED, and the e2e mesh's nodes GRADMESH_SEED.
set -euo pipefail
cd "$(dirname "$0")/.."
first=${1:-1}
count=${2:-10}
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; $(date -u +%F)"
# --workspace everywhere: the same features, hence the same build, as `make test`.
cargo test -q --workspace --no-run
for seed in $(seq "$first" $((first + count - 1))); do
  echo "== seed $seed"
  GRADMESH_TEST_SEED=$seed cargo test -q --workspace --test training --test codec_accuracy \
    -- --nocapture --test-threads 1 2>&1 | grep -E 'accuracy|validation loss|panicked' || true
  GRADMESH_SIM_SEED=$seed cargo test -q --workspace --test fl tiny_scenario -- --nocapture \
    2>&1 | grep -E '^initial accuracy|^6,|panicked' || true
  GRADMESH_SEED=$seed cargo test -q --workspace --test mesh reach_90 -- --nocapture \
    --test-threads 1 2>&1 | grep -E 'test accuracy|panicked' || true
done
