// The framing every veil byte stream shares: node connections (docs/protocol.md, "Connection
// framing": over TCP, Unix sockets and WebSocket) and the serve socket (docs/api.md, "The serve
// socket"). Each side first writes one version byte, then frames:
//
//   frame = length:u32 big-endian, body:length bytes
//
// This header is the one reader and writer of a frame's header — in veild's connections and
// serve socket, in the C++ SDK, and in the tests' proxies and raw clients. What a body holds
// (a TransportMessage, a ServeRequest/ServeResponse) and the limits are each user's. Pure,
// header-only C++17 with no dependency, so that the SDK ships it as it is.
//
// Thread-safety: pure functions.
#ifndef VEIL_FRAME_H_
#define VEIL_FRAME_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace veil::frame {

// Bytes of a frame's header (its length).
inline constexpr size_t kHeaderBytes = 4;

// Writes `length` big-endian at `out` (4 bytes).
inline void PutLength(char* out, uint32_t length) {
  out[0] = static_cast<char>(length >> 24);
  out[1] = static_cast<char>(length >> 16);
  out[2] = static_cast<char>(length >> 8);
  out[3] = static_cast<char>(length);
}

// Reads the big-endian length at `in` (4 bytes).
inline uint32_t GetLength(const char* in) {
  const auto* u = reinterpret_cast<const unsigned char*>(in);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

// Appends the header of a body of `length` bytes to `out`.
inline void AppendHeader(std::string& out, uint32_t length) {
  const size_t at = out.size();
  out.resize(at + kHeaderBytes);
  PutLength(&out[at], length);
}

// What the bytes at a frame boundary hold.
enum class Next {
  kFrame,     // a whole frame: its body is `length` bytes after the header
  kNeedMore,  // not yet: read more (a body over the limit is refused from the header alone)
  kEmpty,     // a zero length, where the user forbids empty bodies
  kTooLong,   // a length over the user's limit: terminal, the stream cannot be resynchronised
};
struct Peek {
  Next next;
  uint32_t length;  // the header's length, once the header is in
};

// Looks at the `available` bytes at `data`, which start at a frame boundary.
inline Peek PeekFrame(const char* data, size_t available, size_t max_body,
                      bool allow_empty = true) {
  if (available < kHeaderBytes) return {Next::kNeedMore, 0};
  const uint32_t length = GetLength(data);
  if (length == 0 && !allow_empty) return {Next::kEmpty, 0};
  if (length > max_body) return {Next::kTooLong, length};
  if (available - kHeaderBytes < length) return {Next::kNeedMore, length};
  return {Next::kFrame, length};
}

}  // namespace veil::frame

#endif  // VEIL_FRAME_H_
