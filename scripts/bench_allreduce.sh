#!/usr/bin/env bash
# The all-reduce grid of docs/benchmarks.md ("All-reduce (real nodes)"): for each N × F, the
# node's all-reduce raw (gloo measured in the same invocation), raw over libp2p streams only
# (`--no-lanes`), with a mesh key, and with each stateless codec; every row's ratio is against
# the gloo run of its N × F, for the round period (wall time between commits, every overhead in:
# what a training loop feels) and for the p50 of one all-reduce. One markdown row per run, with
# the load average at its start.
#
#   scripts/bench_allreduce.sh [GRADMESH] [ROUNDS]   (ROUNDS: 20)
set -euo pipefail
bin=${1:-target/release/gradmesh} rounds=${2:-20}
echo "| N × M | spans | load | gradmesh period s | busbw GB/s | gloo period s | gloo busbw GB/s | period ratio | gradmesh p50 s | gloo p50 s | p50 ratio | sent / 2(n−1)/n·M_encoded |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for nf in "4 1048576" "4 16777216" "2 16777216"; do
    set -- $nf
    n=$1 f=$2 gloo_json=null
    for variant in "none" "none --no-lanes" "none --mesh-key" "fp16" "int8:64"; do
        set -- $variant
        codec=$1
        shift
        flags=("$@")
        [ "$variant" = none ] || flags+=(--no-gloo)
        load=$(cut -d' ' -f1 /proc/loadavg)
        json=$("$bin" bench allreduce --nodes "$n" --floats "$f" --rounds "$rounds" \
            --codec "$codec" "${flags[@]}" --json | grep '^{')
        [ "$variant" = none ] && gloo_json=$json
        python3 - "$json" "$gloo_json" "$n" "$f" "$variant" "$load" <<'PY'
import json, sys
d, base = json.loads(sys.argv[1]), json.loads(sys.argv[2])
n, f, variant, load = sys.argv[3:]
g, b = d["gradmesh"], base["gloo"]
label = variant.replace(" --mesh-key", " + pnet mesh key").replace(
    " --no-lanes", ", libp2p streams (no lanes)")
print("| %s × %d MiB | %s | %s | %.3f | %.3f | %.3f | %.3f | %.2f× | %.3f | %.3f | %.2f× | %.3f |" % (
    n, int(f) * 4 >> 20, label, load,
    g["seconds_period"], g["busbw_period_gbps"], b["seconds_period"], b["busbw_period_gbps"],
    g["busbw_period_gbps"] / b["busbw_period_gbps"],
    g["seconds_p50"], b["seconds_p50"], g["busbw_gbps"] / b["busbw_gbps"],
    g["bytes_sent_per_peer"] / g["bytes_ideal_per_peer"]))
PY
    done
done
