#!/usr/bin/env bash
# Regenerates the reproduction table of docs/federated.md: runs every scenario below with seed 1
# and prints one markdown row per run (final and best test accuracy, simulated time, wall time).
# Usage: scripts/fl_table.sh [SIM_BINARY] (default target/debug/gradmesh-sim, built by `make fl-table`).
set -euo pipefail
SIM=${1:-target/debug/gradmesh-sim}
SEED=${FL_SEED:-1}
OUT=${FL_OUT:-out/fl}
SCENARIOS=(centralized fedavg-iid fedavg-dirichlet-0.1 fedprox-dirichlet scaffold-dirichlet
  fedadam-dirichlet fedyogi-dirichlet fedavgm-dirichlet diloco-dirichlet fedavg-shards-2
  signflip-mean signflip-median signflip-trimmed signflip-krum
  dp-sigma-0.5 dp-sigma-1.0 dp-sigma-2.0 clients-1000)
echo "| scenario | strategy | final acc % | best acc % | rounds | samples | dropped | simulated s | ε (δ=1e-5) | wall s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for s in "${SCENARIOS[@]}"; do
  start=$(date +%s.%N)
  line=$("$SIM" fl "simulations/scenarios/fl/$s.toml" --seed "$SEED" --out "$OUT/$s" --histogram-rows 0 | tail -n 1)
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  strategy=$(sed -n 's/.*strategy \([a-z]*\),.*/\1/p' <<<"$line")
  awk -F, -v s="$s" -v st="$strategy" -v wall="$wall" 'NR > 1 {
      if ($9 > best) best = $9; last = $9; rounds = $1; t = $2; samples += $8; dropped += $6; eps = $11 }
    END { printf "| %s | %s | %.2f | %.2f | %d | %d | %d | %.1f | %s | %.1f |\n",
      s, st, 100 * last, 100 * best, rounds, samples, dropped, t, (eps == "" ? "–" : eps), wall }' \
    "$OUT/$s/fl_rounds.csv"
done
