#!/usr/bin/env bash
# make demo: two veil sidecars on this machine, Bob's echoer app on one, Alice's app on the
# other, messages sent from Alice through her sidecar over TCP to Bob's echoer and back.
#
# Until secure channels exist (a later milestone), the two sidecars run with
# --insecure-plaintext: the messages cross the TCP connection unencrypted. Everything else —
# real daemons, real gRPC apps, routes, return routes — is the real thing.
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

wait_for_socket() {  # a daemon is up once its API socket exists
  for _ in $(seq 1 200); do [ -S "$1" ] && return 0; sleep 0.05; done
  echo "demo: $1 did not appear" >&2; return 1
}

echo "== veil demo (INSECURE mode: secure channels are not built yet, payloads cross TCP in plaintext)"
"$veild" --state-dir "$work/bob" --tcp-listen 127.0.0.1:0 --insecure-plaintext 2>"$work/bob.log" &
pids+=($!)
"$veild" --state-dir "$work/alice" --insecure-plaintext 2>"$work/alice.log" &
pids+=($!)
wait_for_socket "$work/bob/api.sock"
wait_for_socket "$work/alice/api.sock"
bob_tcp="$(sed -n 's/.*ready: .* tcp=\[\([^],]*\).*/\1/p' "$work/bob.log")"
echo "[✓] Bob's sidecar is up; other nodes reach it at /tcp/$bob_tcp"
echo "[✓] Alice's sidecar is up"

"$build/examples/echoer" "unix:$work/bob/api.sock" echoer &
pids+=($!)
for _ in $(seq 1 100); do grep -q 'app serves address echoer' "$work/bob.log" && break; sleep 0.05; done

route="/tcp/$bob_tcp/service/echoer"
echo "[✓] Alice sends to $route"
printf 'Hello veil!\nHow are you, Bob?\nBye.\n' | "$build/examples/request_lines" "unix:$work/alice/api.sock" "$route"
echo "== demo done"
