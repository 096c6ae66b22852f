#!/usr/bin/env bash
# NAT traversal for real (docs/operator.md, "Behind NAT"): a public node in namespace nat-pub0
# (bootstrap and relay, `--relay-server`) and one node behind each of two NAT routers (nat-a0,
# nat-b0; scripts/nat.sh) train the digits MLP together for ROUNDS rounds, once behind NATs that
# keep source ports (`cone`: hole punching can work) and once behind NATs that randomise them
# (`symmetric`: it cannot). For each: did every node commit the same states, did hole punching
# give a direct connection, the training rate, and the bytes each NAT'd node moved through
# relay circuits against all it moved (libp2p's bandwidth counters, by protocol stack). A
# circuit's bytes also cross the node's TCP connection to the relay, so they are counted twice
# in "all"; the line says what share of the TCP bytes they are.
#
#   scripts/nat_mesh.sh [GRADMESH] [ROUNDS]    (needs root; GRADMESH: target/release/gradmesh)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/gradmesh}") rounds=${2:-60}
[ -x "$bin" ] || { echo "nat_mesh.sh: no gradmesh binary at $bin: cargo build --release" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "nat_mesh.sh: needs root (network namespaces)" >&2; exit 2; }
work=$(mktemp -d /tmp/gradmesh-nat.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    scripts/nat.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The node in namespace $1 named $2, with the remaining flags; its reports go to $work/$2.jsonl,
# each line prefixed with the time it arrived.
node() {
    local ns=$1 name=$2
    shift 2
    ip netns exec "$ns" "$bin" node --report --identity "$work/$name.key" \
        --metrics-addr 127.0.0.1:9100 --genesis-quorum 3 --round-timeout 20 "$@" \
        > >(python3 -u -c 'import sys, time
for line in sys.stdin: print(f"{time.time():.3f} {line}", end="")' >"$work/$name.jsonl") \
        2>"$work/$name.log" &
    pids+=($!)
}

# Keeps the last /metrics page of each node in $work/<name>.metrics until it exits.
scrape() {
    local ns=$1 name=$2
    while sleep 1; do
        ip netns exec "$ns" python3 -c 'import urllib.request,sys
sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:9100/metrics", timeout=2).read().decode())' \
            >"$work/$name.metrics.new" 2>/dev/null || break
        mv "$work/$name.metrics.new" "$work/$name.metrics"
    done
}

for mode in cone symmetric; do
    scripts/nat.sh down >/dev/null 2>&1 || true
    scripts/nat.sh up "$mode" >/dev/null
    pids=()
    # The relay runs until the others stop: it is their path to each other where hole
    # punching fails, and one that left at its own --max-rounds would strand the last round.
    node nat-pub0 "$mode-relay" --listen /ip4/10.88.0.10/tcp/4001 --relay-server
    for _ in $(seq 100); do
        peer=$(python3 -c 'import json,sys
for line in open(sys.argv[1]):
    r = json.loads(line.split(" ", 1)[1])
    if r.get("event") == "started": print(r["transport_peer"]); break' "$work/$mode-relay.jsonl" 2>/dev/null || true)
        [ -n "$peer" ] && break
        sleep 0.1
    done
    relay=/ip4/10.88.0.10/tcp/4001/p2p/$peer
    for side in a b; do
        node "nat-${side}0" "$mode-$side" --listen /ip4/0.0.0.0/tcp/4001 \
            --bootstrap "$relay" --relay "$relay" --max-rounds "$rounds"
    done
    scrape nat-pub0 "$mode-relay" & pids+=($!)
    scrape nat-a0 "$mode-a" & pids+=($!)
    scrape nat-b0 "$mode-b" & pids+=($!)
    ok=1
    for pid in "${pids[@]:1:2}"; do
        timeout 600 tail --pid="$pid" -f /dev/null || ok=0
    done
    kill -TERM "${pids[@]:0:3}" 2>/dev/null || true
    wait "${pids[@]:0:3}" 2>/dev/null || true
    python3 - "$work" "$mode" "$ok" <<'PY'
import json, re, sys
work, mode, ok = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
names = {"relay": "public relay", "a": "behind NAT a", "b": "behind NAT b"}
digests, commits = {}, {}
for n in names:
    rows = []
    for line in open(f"{work}/{mode}-{n}.jsonl"):
        at, text = line.split(" ", 1)
        if text.startswith("{"):
            rows.append(dict(json.loads(text), at=float(at)))
    c = [r for r in rows if r["event"] == "committed"]
    commits[n] = c
    digests[n] = {r["round"]: r["digest"] for r in c}
common = set.intersection(*(set(d) for d in digests.values()))
agree = all(len({digests[n][r] for n in names}) == 1 for r in common)
def log(n):
    return open(f"{work}/{mode}-{n}.log").read()
punched = sum(log(n).count("hole punching gave a direct connection") for n in "ab")
failed = sum(log(n).count("hole punching failed") for n in "ab")
behind = sum("behind NAT (AutoNAT)" in log(n) for n in "ab")
def bytes_by_stack(n):
    relayed = total = 0
    try:
        text = open(f"{work}/{mode}-{n}.metrics").read()
    except FileNotFoundError:
        return None
    for m in re.finditer(r'^\S*bandwidth\S*_total\{([^}]*)\} (\S+)$', text, re.M):
        labels, value = m.group(1), float(m.group(2))
        total += value
        # An outbound circuit is labelled with the relay's address and `p2p-circuit`; an
        # inbound one with the dialing peer's id alone (`/p2p`).
        if "p2p-circuit" in labels or 'protocols="/p2p"' in labels:
            relayed += value
    return relayed, total
a = commits["a"]
rate = (len(a) - 1) / (a[-1]["at"] - a[0]["at"]) if len(a) > 1 else 0.0
print(f"{mode}: {'ok' if ok else 'TIMEOUT'}; rounds committed relay/a/b "
      f"{len(commits['relay'])}/{len(commits['a'])}/{len(commits['b'])}, "
      f"{len(common)} in common, digests {'agree' if agree else 'DIFFER'}; "
      f"{rate:.2f} rounds/s after the first; hole punching: {punched} direct, {failed} failed; "
      f"AutoNAT said behind NAT on {behind} of 2")
for n in "ab":
    b = bytes_by_stack(n)
    if b:
        relayed, total = b
        # A circuit's bytes also cross this node's TCP connection to the relay: of the rest,
        # as much again is the relay's share of the same bytes.
        print(f"  node {n}: {total / 1e6:.1f} MB counted, {relayed / 1e6:.1f} MB on relay circuits "
              f"({100 * relayed / max(total - relayed, 1):.0f} % of the bytes on its TCP connections)")
PY
done
