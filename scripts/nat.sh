#!/usr/bin/env bash
# A small internet with two NAT'd private networks, for testing gradmesh hole punching and relay.
#
#   scripts/nat.sh up [cone|symmetric] [K]   # build it (K nodes per private network, default 1)
#   scripts/nat.sh down                        # remove every namespace this script created
#   scripts/nat.sh status                      # addresses, routes and NAT rules of each namespace
#   scripts/nat.sh check                       # self-test: NAT works outbound, nothing gets in
#
# Layout (every namespace has lo up; `ip netns exec NS CMD` runs a node):
#
#   natpub     bridge `natbr`, the public internet 10.88.0.0/24 (no addresses of its own)
#   nat-pub0   eth0 10.88.0.10/24, port `pub0` on natbr; only the 10.88.0.0/24 route
#   nat-r1     pub 10.88.0.1/24 (port `r1` on natbr); bridge `lan` 192.168.1.1/24
#   nat-r2     pub 10.88.0.2/24 (port `r2` on natbr); bridge `lan` 192.168.2.1/24
#   nat-aI     eth0 192.168.1.(10+I)/24, port `aI` on nat-r1's lan; default via 192.168.1.1
#   nat-bI     eth0 192.168.2.(10+I)/24, port `bI` on nat-r2's lan; default via 192.168.2.1
#
# Each router forwards, masquerades what leaves `pub` (mode cone: plain MASQUERADE, which keeps
# the source port where it can, so hole punching works; mode symmetric: MASQUERADE
# --random-fully, a random source port per connection, which defeats it), and drops anything
# arriving on `pub` that conntrack does not know (FORWARD and INPUT; ICMP to the router itself
# is allowed). Routers have no route to the other private net. Needs root.
set -euo pipefail

PUB=natpub
BRIDGE=natbr
PUBNET=10.88.0
CHECK_PORT=7788

die() { echo "nat.sh: $*" >&2; exit 2; }

ours() {  # the namespaces this script creates, by exact name pattern
    ip netns list | awk '{print $1}' | grep -E '^(natpub|nat-pub0|nat-r[12]|nat-[ab][0-9]+)$' | sort -V || true
}

# iptables inside a namespace: the default `iptables` (nf_tables here) if it works, else legacy.
IPT=
ipt() {  # namespace args...
    local ns=$1; shift
    if [[ -z $IPT ]]; then
        for IPT in iptables iptables-legacy ""; do
            [[ -n $IPT ]] && ip netns exec "$ns" "$IPT" -t nat -S >/dev/null 2>&1 && break
        done
        [[ -n $IPT ]] || die "neither iptables nor iptables-legacy works inside a namespace"
    fi
    ip netns exec "$ns" "$IPT" "$@"
}

mkns() { ip netns add "$1"; ip -n "$1" link set lo up; }

# veth NS/eth0 <-> BRNS/PORT, with PORT enslaved to bridge BR in BRNS; then the address on eth0.
attach() {  # ns addr/len brns port br
    local ns=$1 addr=$2 brns=$3 port=$4 br=$5
    ip link add eth0 netns "$ns" type veth peer name "$port" netns "$brns"
    ip -n "$brns" link set "$port" master "$br"
    ip -n "$brns" link set "$port" up
    ip -n "$ns" addr add "$addr" dev eth0
    ip -n "$ns" link set eth0 up
}

router() {  # index(1|2) letter(a|b) mode k
    local r=$1 l=$2 mode=$3 k=$4 ns="nat-r$1" lan="192.168.$1" i
    mkns "$ns"
    ip link add pub netns "$ns" type veth peer name "r$r" netns "$PUB"
    ip -n "$PUB" link set "r$r" master "$BRIDGE"
    ip -n "$PUB" link set "r$r" up
    ip -n "$ns" addr add "$PUBNET.$r/24" dev pub
    ip -n "$ns" link set pub up
    ip -n "$ns" link add lan type bridge
    ip -n "$ns" addr add "$lan.1/24" dev lan
    ip -n "$ns" link set lan up
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    local masq=(-j MASQUERADE)
    [[ $mode == symmetric ]] && masq+=(--random-fully)
    ipt "$ns" -t nat -A POSTROUTING -o pub "${masq[@]}"
    ipt "$ns" -A FORWARD -i pub -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    ipt "$ns" -A FORWARD -i pub -j DROP
    ipt "$ns" -A INPUT -i pub -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    ipt "$ns" -A INPUT -i pub -p icmp -j ACCEPT
    ipt "$ns" -A INPUT -i pub -j DROP
    for (( i = 0; i < k; i++ )); do
        mkns "nat-$l$i"
        attach "nat-$l$i" "$lan.$(( 10 + i ))/24" "$ns" "$l$i" lan
        ip -n "nat-$l$i" route add default via "$lan.1"
    done
}

up() {
    local mode=$1 k=$2
    [[ $mode == cone || $mode == symmetric ]] || die "mode must be cone or symmetric"
    [[ $k =~ ^[0-9]+$ ]] && (( k >= 1 && k <= 200 )) || die "K must be 1..200"
    [[ -z $(ours) ]] || die "already up (or partly): run scripts/nat.sh down first"
    set -E  # so the ERR trap also fires inside router/attach
    trap 'echo "nat.sh: up failed; clean up with scripts/nat.sh down" >&2' ERR
    mkns "$PUB"
    ip -n "$PUB" link add "$BRIDGE" type bridge
    ip -n "$PUB" link set "$BRIDGE" up
    mkns nat-pub0
    attach nat-pub0 "$PUBNET.10/24" "$PUB" pub0 "$BRIDGE"
    router 1 a "$mode" "$k"
    router 2 b "$mode" "$k"
    trap - ERR
    echo "up ($mode NAT, iptables: $IPT): nat-pub0 $PUBNET.10;" \
        "nat-a0..a$(( k - 1 )) 192.168.1.10+ behind nat-r1 ($PUBNET.1);" \
        "nat-b0..b$(( k - 1 )) 192.168.2.10+ behind nat-r2 ($PUBNET.2)"
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
        ip -n "$ns" route | sed 's/^/  route: /'
        if [[ $ns == nat-r* ]]; then
            ipt "$ns" -t nat -S POSTROUTING | grep -- '^-A' | sed 's/^/  nat: /'
            ipt "$ns" -S FORWARD | grep -- '^-A' | sed 's/^/  filter: /'
            ipt "$ns" -S INPUT | grep -- '^-A' | sed 's/^/  filter: /'
        fi
    done
}

# --- check: TCP with python3 one-liners (no nc/socat on this machine) ---
PIDS=()
TMP=
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }

listen() {  # ns outfile: accept one connection on CHECK_PORT, write the peer address to outfile
    ip netns exec "$1" timeout 10 python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1)
c, a = s.accept(); open(sys.argv[2], "w").write(a[0] + "\n")' "$CHECK_PORT" "$2" &
    PIDS+=($!)
    local t
    for t in $(seq 50); do  # wait until it listens (up to 5 s)
        ip netns exec "$1" ss -Hltn "sport = :$CHECK_PORT" | grep -q . && return 0
        sleep 0.1
    done
    die "listener in $1 did not start"
}

connects() {  # ns host: succeeds iff a TCP connection opens within 2 s
    ip netns exec "$1" python3 -c '
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()' \
        "$2" "$CHECK_PORT" 2>/dev/null
}

FAILS=0
report() {  # ok(0|1) text
    if (( $1 )); then echo "PASS  $2"; else echo "FAIL  $2"; FAILS=$(( FAILS + 1 )); fi
}

check() {
    local ns
    for ns in natpub nat-pub0 nat-r1 nat-r2 nat-a0 nat-b0; do
        ip netns list | awk '{print $1}' | grep -qx "$ns" || die "$ns missing: run scripts/nat.sh up"
    done
    local ok seen
    TMP=$(mktemp -d)
    trap 'cleanup; rm -rf "$TMP"' EXIT
    local tmp=$TMP
    listen nat-pub0 "$tmp/seen"
    ok=0; connects nat-a0 "$PUBNET.10" && ok=1
    wait "${PIDS[-1]}" 2>/dev/null || true
    seen=$(cat "$tmp/seen" 2>/dev/null || echo none)
    [[ $seen == "$PUBNET.1" ]] || ok=0
    report "$ok" "nat-a0 -> $PUBNET.10:$CHECK_PORT connects, seen from $seen (want $PUBNET.1)"
    listen nat-a0 "$tmp/unused"
    ok=1; connects nat-pub0 192.168.1.10 && ok=0
    report "$ok" "nat-pub0 -> 192.168.1.10:$CHECK_PORT does not connect"
    ok=1; connects nat-pub0 "$PUBNET.1" && ok=0
    report "$ok" "nat-pub0 -> $PUBNET.1:$CHECK_PORT (nat-r1) does not connect"
    listen nat-b0 "$tmp/unused-b"
    ok=1; connects nat-a0 192.168.2.10 && ok=0
    report "$ok" "nat-a0 -> 192.168.2.10:$CHECK_PORT does not connect"
    (( FAILS == 0 )) || { echo "check: $FAILS failed"; exit 1; }
    echo "check: all passed"
}

case "${1:-}" in
    up) (( $# <= 3 )) || die "usage: $0 up [cone|symmetric] [K]"; up "${2:-cone}" "${3:-1}" ;;
    down) down ;;
    status) status ;;
    check) check ;;
    *) die "usage: $0 up [cone|symmetric] [K] | down | status | check" ;;
esac
