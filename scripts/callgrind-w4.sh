#!/bin/bash
# Instructions per W4 RPC at a perf server or client, counted by callgrind: the same at
# any load, so builds compare exactly where the testbed's times move by 10%.
#
#   scripts/callgrind-w4.sh server [BINARY]        # the Homa server's instructions
#   scripts/callgrind-w4.sh client homa [BINARY]   # a client's, over Homa
#   scripts/callgrind-w4.sh client tcp [BINARY]    # ... or over TCP
#
# Runs in a network namespace of its own (root) whose loopback has the testbed's
# 9,000-byte MTU, with the testbed bench's Homa settings for 1 Gbps and GSO/GRO off, so
# that each DATA packet arrives alone, as across the testbed's switch; W4 at 0.1 Gbps.
# The server is counted over 10 s of load after 3 s of warm-up (the counters zeroed in
# between); a client over its whole run, start-up included. Needs valgrind (Debian:
# valgrind) and a release build (`cargo build --release -p homa-cli`).
set -euo pipefail
role=${1:?usage: $0 server [BINARY] | client homa|tcp [BINARY]}
if [ "$role" = client ]; then
    proto=${2:?client needs homa or tcp}
    bin=${3:-target/release/homa}
else
    proto=homa
    bin=${2:-target/release/homa}
fi
bin=$(realpath "$bin")
work=$(mktemp -d)
ns=homa-cg-$$
cleanup() {
    pkill -INT -f "$work/" 2>/dev/null || true
    sleep 1
    pkill -KILL -f "$work/" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo mtu 9000 up
cat > "$work/homa.toml" <<EOF
[homa]
unsched_bytes = 10000
max_incoming = 250000
max_outgoing_held = 4194304
[runtime]
gso = false
gro = false
EOF
in_ns() { ip netns exec "$ns" "$@"; }
server=(perf server --addr 127.0.0.1:4000 --no-metrics --homa-config "$work/homa.toml")
load() { # seconds
    in_ns "$bin" perf client --server 127.0.0.1:4000 --workload w4 --gbps 0.1 \
        --seconds "$1" --proto "$proto" --homa-config "$work/homa.toml" --json 2>/dev/null | tail -1
}
if [ "$role" = server ]; then
    in_ns valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
        "$bin" "${server[@]}" --proto homa > "$work/server.log" 2>&1 &
    sleep 8 # valgrind starts slowly
    load 3 > /dev/null
    pid=$(pgrep -f "callgrind-out-file=$work/cg.out" | head -1)
    callgrind_control -z "$pid" > /dev/null
    load 10 > "$work/result.json"
    callgrind_control -d "$pid" > /dev/null
    out=$(ls "$work"/cg.out.* | head -1)
else
    in_ns "$bin" "${server[@]}" --proto both > "$work/server.log" 2>&1 &
    sleep 1
    in_ns valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
        "$bin" perf client --server 127.0.0.1:4000 --workload w4 --gbps 0.1 --seconds 10 \
        --proto "$proto" --homa-config "$work/homa.toml" --json 2>/dev/null | tail -1 > "$work/result.json"
    out=$work/cg.out
fi
instr=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
rpcs=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rpcs'])" "$work/result.json")
echo "$role $proto: $instr instructions, $rpcs RPCs, $((instr / rpcs)) per RPC"
