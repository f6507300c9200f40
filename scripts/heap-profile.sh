#!/usr/bin/env bash
# Heap by allocation site per idle connection: builds the hub with dhat as
# its allocator (`--features dhat-heap`, into target/dhat), holds N idle
# WebSocket connections against it with the load generator, stops it (dhat
# writes dhat-heap.json at exit) and prints the bytes per connection of each
# allocation site at the heap's peak, and the part pulsehub's own code asks for.
#
#   scripts/heap-profile.sh            # 10,000 connections
#   scripts/heap-profile.sh 5000
#
# dhat records every allocation (slow) and replaces mimalloc, so the resident
# figures of `bench.sh idle-*` are not comparable with it; bytes asked for per
# site are. Needs python3 for the summary. Output in target/dhat/run.
set -euo pipefail
cd "$(dirname "$0")/.."

conns=${1:-10000}
port=${HEAP_PORT:-18090}
out=target/dhat/run
scripts/services.sh build postgres
cargo build --release -p pulsehub-loadtest
CARGO_TARGET_DIR=target/dhat cargo build --release --features dhat-heap --bin pulsehub
mkdir -p "$out"
rm -f "$out/dhat-heap.json"

(cd "$out" && exec env DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/pulsehub_bench}" \
    RUST_LOG=warn ../release/pulsehub serve --demo --bind "127.0.0.1:$port" >hub.log 2>&1) &
hub=$!
trap 'kill -TERM $hub 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/ready" && break
    kill -0 $hub 2>/dev/null || { tail -n 20 "$out/hub.log" >&2; exit 1; }
    sleep 0.5
done
target/release/pulsehub-loadtest --url "http://127.0.0.1:$port" --no-progress \
    idle -c "$conns" --hold 10 --hub-pid "$hub"
kill -TERM $hub
wait $hub || true
trap - EXIT

python3 - "$out/dhat-heap.json" "$conns" <<'EOF'
import json, re, sys
data = json.load(open(sys.argv[1]))
frames, n = data["ftbl"], int(sys.argv[2])
plumbing = re.compile(r"(dhat::|alloc::|core::|__rust|hashbrown::raw|\[root\])")
def name(f):
    return re.sub(r"^0x[0-9a-f]+: ", "", re.sub(r" \(.*\)$", "", f))
rows, ours = [], 0
for pp in data["pps"]:
    if not pp.get("gb"):
        continue
    top = [name(frames[i]) for i in pp["fs"] if not plumbing.search(frames[i])][:3]
    rows.append((pp["gb"], pp.get("gbk", 0), top))
    if any("pulsehub::" in f for f in top):
        ours += pp["gb"]
total = sum(r[0] for r in rows)
print(f"\nheap at its peak: {total / n:.0f} bytes per connection "
      f"({sum(r[1] for r in rows) / n:.1f} blocks); "
      f"sites with pulsehub code in their first three frames: {ours / n:.0f} bytes")
for gb, blocks, top in sorted(rows, key=lambda r: -r[0])[:20]:
    print(f"{gb / n:8.0f} B {blocks / n:5.2f} blk  " + " <- ".join(f[:80] for f in top))
EOF
