#!/usr/bin/env bash
# make demo: two veil sidecars on this machine. Bob's app creates a secure channel listener and
# serves "echoer"; Alice's app opens a mutually authenticated, end-to-end encrypted secure
# channel to Bob's listener over TCP and sends lines through it; each comes back echoed.
#
# Neither sidecar runs with --insecure-plaintext: only ciphertext crosses the TCP connection.
# (The hub, for a Bob with no open port, is the next milestone.)
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

echo "== veil demo: Alice and Bob, end-to-end encrypted"
"$veild" --state-dir "$work/bob" --tcp-listen 127.0.0.1:0 2>"$work/bob.log" &
pids+=($!)
"$veild" --state-dir "$work/alice" 2>"$work/alice.log" &
pids+=($!)
wait_for_log "$work/bob.log" " ready: "
wait_for_log "$work/alice.log" " ready: "
bob_tcp="$(sed -n 's/.* ready: .* tcp=\[\([^],]*\).*/\1/p' "$work/bob.log")"
echo "[✓] Bob's sidecar is up; other nodes reach it at /tcp/$bob_tcp"
echo "[✓] Alice's sidecar is up"

"$build/examples/bob" "unix:$work/bob/api.sock" >"$work/bob-app.log" 2>&1 &
pids+=($!)
wait_for_log "$work/bob-app.log" "Echoer serving"
cat "$work/bob-app.log"

printf 'Hello Ockam!\nHow are you, Bob?\nBye.\n' |
  "$build/examples/alice" "unix:$work/alice/api.sock" "/tcp/$bob_tcp/service/listener"
echo "-- what Bob's echoer saw:"
grep 'Received' "$work/bob-app.log"
echo "== demo done"
