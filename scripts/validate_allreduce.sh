#!/usr/bin/env bash
# Real-run validation of gradmesh-sim (docs/simulator.md, "Validation against real runs"):
# for every RATE × N × F, shape N namespaces with scripts/netns.sh, run `gradmesh bench allreduce
# --netns gm --transport TRANSPORT` (node i in namespace gmI, 10.77.0.(I+1)), predict the same
# all-reduce with `gradmesh-sim predict-allreduce --algorithm all-to-all` (the node's
# reduce-scatter sends each slice straight to its span owner), and print one markdown row per
# configuration.
#
#   sudo scripts/validate_allreduce.sh GRADMESH GRADMESH_SIM "100 400" "2 4 8" "1048576 4194304" [ROUNDS] [tcp|quic]
#
# CPU columns, over the whole bench run (start-up, 2 warm-up and ROUNDS measured rounds):
# "node CPU" is the node processes' user+system CPU seconds (they are the bench's children, so
# /usr/bin/time sees them) divided by the run's wall time, in cores; "host busy" is the share of
# all of the host's cores that were not idle (/proc/stat), other users' work included. A row whose
# host busy is near 100 % measures the CPU, not the links.
#
# Needs root (namespaces). Traffic stays inside the namespaces; they are removed on exit.
set -euo pipefail
bin=$1 sim=$2 rates=$3 peers=$4 floats=$5 rounds=${6:-3} transport=${7:-tcp}
here=$(cd "$(dirname "$0")" && pwd)
busy_idle() { awk '/^cpu /{idle=$5+$6; t=0; for(i=2;i<=NF;i++) t+=$i; print t-idle, idle}' /proc/stat; }
out=$(mktemp) cpu=$(mktemp)
trap 'rm -f "$out" "$cpu"; "$here/netns.sh" down >/dev/null' EXIT
echo "| Mbit/s | N | floats | measured p50 (s) | predicted (s) | measured / predicted | sent / 2(n-1)/n*M | node CPU (cores) | host busy (%) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for rate in $rates; do
    for n in $peers; do
        "$here/netns.sh" down >/dev/null
        "$here/netns.sh" up "$n" "$rate" >/dev/null
        for f in $floats; do
            read -r b0 i0 < <(busy_idle)
            /usr/bin/time -o "$cpu" -f '%U %S %e' "$bin" bench allreduce --nodes "$n" --floats "$f" \
                --rounds "$rounds" --netns gm --no-gloo --transport "$transport" --json >"$out"
            read -r b1 i1 < <(busy_idle)
            json=$(grep '^{' "$out")
            measured=$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["gradmesh"]["seconds_p50"])')
            ratio_bytes=$(echo "$json" | python3 -c 'import json,sys; g=json.load(sys.stdin)["gradmesh"]; print("%.4f" % (g["bytes_sent_per_peer"]/g["bytes_ideal_per_peer"]))')
            cores=$(awk '{printf "%.2f", ($1 + $2) / $3}' "$cpu")
            busy=$(python3 -c "print('%.0f' % (100 * ($b1 - $b0) / max(1, ($b1 - $b0) + ($i1 - $i0))))")
            predicted=$("$sim" predict-allreduce --peers "$n" --floats "$f" --mbit-s "$rate" \
                --algorithm all-to-all | sed -n 's/^simulated \([0-9.]*\) s.*/\1/p')
            python3 -c "print('| $rate | $n | $f | %.3f | %.3f | %.2f | $ratio_bytes | $cores | $busy |' % ($measured, $predicted, $measured / $predicted))"
        done
    done
done
