#!/usr/bin/env bash
# CPU seconds all nodes of a `gradmesh bench allreduce` spend per round, in steady state: starts
# the bench with many rounds, waits WARM seconds (default 14), then reads utime + stime of every
# node process and the number of committed rounds in their logs over a WINDOW-second window
# (default 6). On a saturated box (both cores busy) the CPU per round, not the wall time, is
# what a change to the hot path moves first (docs/benchmarks.md).
#
#   scripts/bench_cpu.sh [GRADMESH] -- BENCH-ARGS...   e.g.
#   scripts/bench_cpu.sh target/release/gradmesh -- --nodes 4 --floats 1048576
set -euo pipefail
bin=${1:-target/release/gradmesh}
shift
[ "${1:-}" = -- ] && shift
warm=${WARM:-14} window=${WINDOW:-6}
"$bin" bench allreduce --no-gloo --rounds 100000 "$@" >/dev/null 2>&1 &
bench=$!
dir=/tmp/gradmesh-bench-$bench
trap 'pkill -P $bench 2>/dev/null; kill $bench 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
sleep "$warm"
nodes=$(pgrep -P "$bench" | tr '\n' ' ')
[ -n "$nodes" ] || { echo "no node processes under bench $bench" >&2; exit 1; }
sample() {
    local cpu=0
    for p in $nodes; do cpu=$((cpu + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$cpu $(cat "$dir"/node*.log | grep -c 'round committed') $(date +%s.%N)"
}
read -r c1 r1 t1 < <(sample)
sleep "$window"
read -r c2 r2 t2 < <(sample)
python3 - "$c1" "$r1" "$t1" "$c2" "$r2" "$t2" "$(getconf CLK_TCK)" "$(nproc)" "$(pgrep -P "$bench" | wc -l)" <<'PY'
import sys
c1, r1, t1, c2, r2, t2, tick, cores, n = map(float, sys.argv[1:])
wall, cpu, rounds = t2 - t1, (c2 - c1) / tick, (r2 - r1) / n
print(f"{wall:.2f} s window: CPU {cpu:.2f} s = {cpu / wall / cores * 100:.0f} % of {cores:.0f} cores; "
      f"{rounds:.1f} rounds: {wall / rounds * 1e3:.1f} ms wall and {cpu / rounds * 1e3:.1f} ms CPU per round")
PY
