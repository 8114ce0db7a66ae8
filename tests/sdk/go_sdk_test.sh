#!/usr/bin/env bash
# The Go SDK's tests (sdk-stubs/go/veil/veil_test.go) against a real veild, offline: GOPATH mode
# over Debian's golang-*-dev sources, as tests/examples/examples_test.py builds the Go examples.
# Usage: go_sdk_test.sh BUILD_DIR VEILD
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$1"
gopath="$build/go"
mkdir -p "$gopath/src/veil.dev/sdk"
[ -L "$gopath/src/veil.dev/sdk/go" ] || ln -s "$root/sdk-stubs/go" "$gopath/src/veil.dev/sdk/go"
cd "$gopath/src/veil.dev/sdk/go/veil"
VEILD="$2" GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS= GOCACHE="$build/go-cache" \
  go test -count=1 -v .
