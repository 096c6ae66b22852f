#!/usr/bin/env bash
# Real-run validation of gradmesh-sim (docs/simulator.md, "Validation against real runs"):
# for every RATE × N × F, shape N namespaces with scripts/netns.sh, run `gradmesh bench allreduce
# --netns gm` (node i in namespace gmI, 10.77.0.(I+1)), predict the same all-reduce with
# `gradmesh-sim predict-allreduce --algorithm all-to-all` (the node's reduce-scatter sends each
# slice straight to its span owner), and print one markdown row per configuration.
#
#   sudo scripts/validate_allreduce.sh GRADMESH GRADMESH_SIM "100 400" "2 4 8" "1048576 4194304" [ROUNDS]
#
# Needs root (namespaces). Traffic stays inside the namespaces; they are removed on exit.
set -euo pipefail
bin=$1 sim=$2 rates=$3 peers=$4 floats=$5 rounds=${6:-3}
here=$(cd "$(dirname "$0")" && pwd)
trap '"$here/netns.sh" down >/dev/null' EXIT
echo "| Mbit/s | N | floats | measured p50 (s) | predicted (s) | measured / predicted | sent / 2(n-1)/n*M |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for rate in $rates; do
    for n in $peers; do
        "$here/netns.sh" down >/dev/null
        "$here/netns.sh" up "$n" "$rate" >/dev/null
        for f in $floats; do
            json=$("$bin" bench allreduce --nodes "$n" --floats "$f" --rounds "$rounds" \
                --netns gm --no-gloo --json | grep '^{')
            measured=$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["gradmesh"]["seconds_p50"])')
            ratio_bytes=$(echo "$json" | python3 -c 'import json,sys; g=json.load(sys.stdin)["gradmesh"]; print("%.4f" % (g["bytes_sent_per_peer"]/g["bytes_ideal_per_peer"]))')
            predicted=$("$sim" predict-allreduce --peers "$n" --floats "$f" --mbit-s "$rate" \
                --algorithm all-to-all | sed -n 's/^simulated \([0-9.]*\) s.*/\1/p')
            python3 -c "print('| $rate | $n | $f | %.3f | %.3f | %.2f | $ratio_bytes |' % ($measured, $predicted, $measured / $predicted))"
        done
    done
done
