#!/usr/bin/env bash
# Fails when the committed SDK stubs (sdk-stubs/) differ from what sdk-stubs/generate.sh makes
# of proto/ now: regenerate with `make stubs` and commit.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
"$root/sdk-stubs/generate.sh" "$fresh"
status=0
for dir in python/veil/v1 python/google cpp/veil cpp/google node/veil.desc go/veil/v1; do
  if ! diff -r "$root/sdk-stubs/$dir" "$fresh/$dir" >"$fresh/diff" 2>&1; then
    echo "sdk-stubs/$dir is stale (proto/ changed?): run \`make stubs\` and commit" >&2
    head -40 "$fresh/diff" >&2
    status=1
  fi
done
exit $status
