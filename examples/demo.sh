#!/usr/bin/env bash
# make demo: the seed scenario on this machine. A hub; Bob's sidecar, which has no open port,
# registers a relay on the hub, creates a secure channel listener and serves "echoer"; Alice's
# sidecar opens a mutually authenticated, end-to-end encrypted secure channel to Bob's listener
# through the hub and sends lines through it; each comes back echoed. The hub forwards only
# ciphertext. No sidecar runs with --insecure-plaintext.
set -euo pipefail
build="${1:-build}"
veild="$build/sidecar/daemon/veild"
work="$(mktemp -d "${TMPDIR:-/tmp}/veil-demo-XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

wait_for_log() {  # wait_for_log FILE TEXT: until a daemon or app logs TEXT
  for _ in $(seq 1 400); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "demo: timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

echo "== veil demo: Alice and Bob through a hub, end-to-end encrypted"
"$veild" --state-dir "$work/hub" --hub --tcp-listen 127.0.0.1:0 2>"$work/hub.log" &
pids+=($!)
"$veild" --state-dir "$work/bob" 2>"$work/bob.log" &
pids+=($!)
"$veild" --state-dir "$work/alice" 2>"$work/alice.log" &
pids+=($!)
for node in hub bob alice; do wait_for_log "$work/$node.log" " ready: "; done
hub_tcp="$(sed -n 's/.* ready: .* tcp=\[\([^],]*\).*/\1/p' "$work/hub.log")"
echo "[✓] The hub is up at /tcp/$hub_tcp; Bob's and Alice's sidecars are up (Bob has no open port)"

"$build/examples/bob" "unix:$work/bob/api.sock" "/tcp/$hub_tcp" >"$work/bob-app.log" 2>&1 &
pids+=($!)
wait_for_log "$work/bob-app.log" "Echoer serving"
cat "$work/bob-app.log"
forwarding="$(sed -n '/Forwarding address for Bob is:/{n;p}' "$work/bob-app.log")"

route="/tcp/$hub_tcp/service/$forwarding/service/listener"
echo "[✓] Alice connects to Bob's listener at $route"
printf 'Hello Ockam!\nHow are you, Bob?\nBye.\n' | "$build/examples/alice" "unix:$work/alice/api.sock" "$route"
echo "-- what Bob's echoer saw:"
grep 'Received' "$work/bob-app.log"
echo "== demo done"
