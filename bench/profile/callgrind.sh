#!/bin/bash
# Instruction and cache-miss counts per request of an HTTP server, under
# valgrind's callgrind with its cache simulation. Deterministic enough to
# compare two builds where wall-clock figures on a shared VM swing by 30%.
#
#   bench/profile/callgrind.sh call|modern|handshake N SERVER [ARGS...]
#
# SERVER must print `listening on http://ADDR/mcp` and take `--listen
# 127.0.0.1:0` among ARGS. Prints Ir (instructions), Dr, Dw, I1mr, D1mr,
# D1mw, ILmr, DLmr, DLmw per operation, and leaves the profile in
# callgrind.out.<mode> (read it with callgrind_annotate).
set -euo pipefail
mode=$1; n=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp)
out=callgrind.out.$mode
valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file="$out" "$@" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
addr=""
for _ in $(seq 100); do
  addr=$(grep -o "http://127.0.0.1:[0-9]*" "$log" | head -1 | sed 's|http://||' || true)
  [ -n "$addr" ] && break
  sleep 0.2
done
[ -n "$addr" ] || { cat "$log"; exit 1; }
python3 "$here/drive.py" "$addr" "$mode" 64 64        # warm up
callgrind_control -z "$pid" >/dev/null 2>&1                # count from here
python3 "$here/drive.py" "$addr" "$mode" "$n" 64
callgrind_control -d "$pid" >/dev/null 2>&1
sleep 0.5
kill "$pid"; wait "$pid" 2>/dev/null || true
python3 - "$out.1" "$n" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
lines = open(path).read().splitlines()
events = next(l for l in lines if l.startswith("events:")).split()[1:]
summary = next(l for l in lines if l.startswith("summary:")).split()[1:]
print("per operation: " + ", ".join(f"{e} {int(v) // n}" for e, v in zip(events, summary)))
PY
