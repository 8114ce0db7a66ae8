#!/usr/bin/env bash
# curl -> inlet (Alice's sidecar) -> hub -> outlet (Bob's sidecar, no open port) -> an HTTP server.
# Everything runs in a temp dir on loopback and stops at the end.
#   examples/portal/curl.sh [BUILD_DIR]
set -euo pipefail
build="$(cd "${1:-build}" && pwd)" work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
source "$(dirname "$0")/nodes.sh"

web_port=$(port) inlet_port=$(port)
mkdir "$work/www" && echo "Hello from Bob's web server, through a portal" > "$work/www/index.html"
/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$web_port" >/dev/null 2>&1 &
bob outlet create web --to "127.0.0.1:$web_port" --trust "$(identifier_of alice)"
alice inlet create "127.0.0.1:$inlet_port" "$route" --outlet web --trust "$(identifier_of bob)"

curl -sS --retry 10 --retry-connrefused "http://127.0.0.1:$inlet_port/index.html"
alice inlet list
