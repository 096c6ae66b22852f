#!/usr/bin/env bash
# Shaped network namespaces for real-run validation of gradmesh-sim (see docs/simulator.md).
#
#   scripts/netns.sh up N RATE_MBIT   # namespaces gm0..gm{N-1} on a bridge in namespace gmhub
#   scripts/netns.sh down             # removes every namespace this script created
#   scripts/netns.sh status           # addresses and qdiscs
#
# Namespace gmI holds veth `gmI-e` with address 10.77.0.(I+1)/24; its peer `gmhI` sits on bridge
# `gmbr` in namespace gmhub. Every peer is shaped to RATE_MBIT in both directions with `tc tbf`:
# egress on gmI-e (what gmI sends) and egress on the hub-side gmhI (what gmI receives). netem is
# not available on this kernel, so there is no added delay or loss: latency is what veth and
# the bridge give (tens of µs). Needs root. Nothing is routed outside these namespaces: the hub
# has no uplink and the namespaces have no default route.
set -euo pipefail

HUB=gmhub
BRIDGE=gmbr
SUBNET=10.77.0

die() { echo "netns.sh: $*" >&2; exit 2; }

# tbf needs a bucket of at least one maximum-size (GSO) packet, and at least rate/HZ; 10 ms of
# traffic at the rate is comfortably above both at the rates used here.
burst_bytes() {
    local rate_mbit=$1
    local b=$(( rate_mbit * 1000000 / 8 / 100 ))
    (( b < 131072 )) && b=131072
    echo "$b"
}

shape() {  # namespace device rate_mbit
    local ns=$1 dev=$2 rate=$3
    ip -n "$ns" link set "$dev" gso_max_size 65536 2>/dev/null || true
    tc -n "$ns" qdisc replace dev "$dev" root tbf rate "${rate}mbit" \
        burst "$(burst_bytes "$rate")" latency 100ms
}

up() {
    local n=$1 rate=$2
    [[ $n =~ ^[0-9]+$ ]] && (( n >= 1 && n <= 250 )) || die "N must be 1..250"
    [[ $rate =~ ^[0-9]+$ ]] && (( rate >= 1 )) || die "RATE_MBIT must be a positive integer"
    ip netns add "$HUB"
    ip -n "$HUB" link set lo up
    ip -n "$HUB" link add "$BRIDGE" type bridge
    ip -n "$HUB" link set "$BRIDGE" up
    for (( i = 0; i < n; i++ )); do
        local ns="gm$i"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip link add "gm$i-e" netns "$ns" type veth peer name "gmh$i" netns "$HUB"
        ip -n "$ns" addr add "$SUBNET.$(( i + 1 ))/24" dev "gm$i-e"
        ip -n "$ns" link set "gm$i-e" up
        ip -n "$HUB" link set "gmh$i" master "$BRIDGE"
        ip -n "$HUB" link set "gmh$i" up
        shape "$ns" "gm$i-e" "$rate"
        shape "$HUB" "gmh$i" "$rate"
    done
    echo "up: $n namespaces gm0..gm$(( n - 1 )) ($SUBNET.1..$SUBNET.$n), $rate Mbit/s each way"
}

ours() {  # the namespaces this script creates, by exact name pattern
    ip netns list | awk '{print $1}' | grep -E '^(gm[0-9]+|gmhub)$' || true
}

down() {
    local ns
    for ns in $(ours); do
        ip netns del "$ns"
    done
    echo "down"
}

status() {
    local ns
    for ns in $(ours); do
        echo "== $ns"
        ip -n "$ns" -brief addr
        tc -n "$ns" qdisc show | grep tbf || true
    done
}

case "${1:-}" in
    up) (( $# == 3 )) || die "usage: $0 up N RATE_MBIT"; up "$2" "$3" ;;
    down) down ;;
    status) status ;;
    *) die "usage: $0 up N RATE_MBIT | down | status" ;;
esac
