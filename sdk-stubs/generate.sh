#!/usr/bin/env bash
# Regenerates every SDK stub from proto/ (`make stubs`). With an argument, writes into that
# directory instead of sdk-stubs/ (the drift test compares the two).
#   python/  messages (*_pb2.py) and gRPC stubs (*_pb2_grpc.py): Debian's protoc and grpc_python_plugin
#   cpp/     messages (*.pb.*) and gRPC stubs (*.grpc.pb.*): Debian's protoc and grpc_cpp_plugin
#   node/    veil.desc, a FileDescriptorSet that @grpc/proto-loader turns into grpc-js clients
#   go/      package veilv1 (veil.dev/sdk/go/veil/v1): Debian's protoc-gen-go and protoc-gen-go-grpc;
#            google.rpc comes from google.golang.org/genproto
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/sdk-stubs}"
protos=(veil/v1/messaging.proto veil/v1/node.proto veil/v1/identity.proto
        veil/v1/secure_channel.proto veil/v1/relay.proto veil/v1/portal.proto veil/v1/authority.proto
        google/rpc/status.proto google/rpc/error_details.proto)
cd "$root/proto"
mkdir -p "$out/python" "$out/cpp" "$out/node"
rm -rf "$out/python/veil/v1" "$out/python/google" "$out/cpp/veil" "$out/cpp/google"
protoc -I . --python_out="$out/python" \
  --grpc_out="$out/python" --plugin=protoc-gen-grpc="$(command -v grpc_python_plugin)" "${protos[@]}"
protoc -I . --cpp_out="$out/cpp" \
  --grpc_out="$out/cpp" --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "${protos[@]}"
protoc -I . --include_imports --descriptor_set_out="$out/node/veil.desc" "${protos[@]}"
go_map=(--go_opt=paths=source_relative --go-grpc_opt=paths=source_relative
        --go_opt=Mgoogle/rpc/status.proto=google.golang.org/genproto/googleapis/rpc/status
        --go-grpc_opt=Mgoogle/rpc/status.proto=google.golang.org/genproto/googleapis/rpc/status)
for p in "${protos[@]}"; do
  case "$p" in veil/v1/*)
    go_map+=(--go_opt=M"$p"=veil.dev/sdk/go/veil/v1\;veilv1 --go-grpc_opt=M"$p"=veil.dev/sdk/go/veil/v1\;veilv1) ;;
  esac
done
mkdir -p "$out/go"
rm -rf "$out/go/veil/v1"
protoc -I . --go_out="$out/go" --go-grpc_out="$out/go" "${go_map[@]}" $(printf '%s\n' "${protos[@]}" | grep '^veil/')
