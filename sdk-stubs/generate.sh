#!/usr/bin/env bash
# Regenerates every SDK stub from proto/ (`make stubs`). With an argument, writes into that
# directory instead of sdk-stubs/ (the drift test compares the two).
#   python/  messages (*_pb2.py) and gRPC stubs (*_pb2_grpc.py): Debian's protoc and grpc_python_plugin
#   cpp/     messages (*.pb.*) and gRPC stubs (*.grpc.pb.*): Debian's protoc and grpc_cpp_plugin
#   node/    veil.desc, a FileDescriptorSet that @grpc/proto-loader turns into grpc-js clients
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/sdk-stubs}"
protos=(veil/v1/messaging.proto veil/v1/node.proto veil/v1/identity.proto
        veil/v1/secure_channel.proto veil/v1/relay.proto
        google/rpc/status.proto google/rpc/error_details.proto)
cd "$root/proto"
mkdir -p "$out/python" "$out/cpp" "$out/node"
rm -rf "$out/python/veil/v1" "$out/python/google" "$out/cpp/veil" "$out/cpp/google"
protoc -I . --python_out="$out/python" \
  --grpc_out="$out/python" --plugin=protoc-gen-grpc="$(command -v grpc_python_plugin)" "${protos[@]}"
protoc -I . --cpp_out="$out/cpp" \
  --grpc_out="$out/cpp" --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "${protos[@]}"
protoc -I . --include_imports --descriptor_set_out="$out/node/veil.desc" "${protos[@]}"
