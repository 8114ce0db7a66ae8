#!/usr/bin/env bash
# make demo's script: runs twice in a row, and while 127.0.0.1:4000 (the seed's port) is taken;
# each run prints an echo per message, exits 0 and leaves no process or temp dir behind.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$1"
export TMPDIR="$(mktemp -d)"
trap 'kill "${blocker:-}" 2>/dev/null || true; rm -rf "$TMPDIR"' EXIT

run_demo() {
  local out="$TMPDIR/demo.out"
  "$root/examples/demo.sh" "$build" >"$out" 2>&1 || { cat "$out"; echo "demo failed"; exit 1; }
  local echoes
  echoes="$(grep -c '^Alice received an echo: ' "$out")"
  [ "$echoes" -eq 3 ] || { cat "$out"; echo "expected 3 echoes, got $echoes"; exit 1; }
  grep -q 'End-to-end encrypted secure channel was established' "$out" || { cat "$out"; exit 1; }
  if pgrep -f "$TMPDIR/veil-demo-" >/dev/null; then echo "demo left processes behind"; exit 1; fi
  if ls "$TMPDIR" | grep -q '^veil-demo-'; then echo "demo left its temp dir behind"; exit 1; fi
}

run_demo
run_demo
# The seed's port taken by someone else: the demo still runs (it picks free ports).
python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 4000)); s.listen(); time.sleep(600)' &
blocker=$!
sleep 0.3
run_demo
echo "demo ran three times, once with 127.0.0.1:4000 taken"
