// The frame header every veil byte stream shares (sdk-stubs/cpp/veil_frame.h), as the serve
// socket and the SDK use it: random bytes split at frame boundaries under a random limit.
// Never reads past the input; a frame is yielded only whole and within the limit; a length
// written back reads the same.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "veil_frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t max_body = data[0] * 97 + data[1];  // 0..24,990
  const bool allow_empty = (data[0] & 1) != 0;
  const char* in = reinterpret_cast<const char*>(data + 2);
  size_t left = size - 2;
  while (left > 0) {
    const veil::frame::Peek peek = veil::frame::PeekFrame(in, left, max_body, allow_empty);
    if (peek.next != veil::frame::Next::kFrame) {
      if (peek.next == veil::frame::Next::kTooLong && peek.length <= max_body) std::abort();
      if (peek.next == veil::frame::Next::kEmpty && (allow_empty || peek.length != 0)) std::abort();
      break;
    }
    if (peek.length > max_body || veil::frame::kHeaderBytes + peek.length > left) std::abort();
    std::string header;
    veil::frame::AppendHeader(header, peek.length);
    if (header != std::string(in, veil::frame::kHeaderBytes)) std::abort();
    in += veil::frame::kHeaderBytes + peek.length;
    left -= veil::frame::kHeaderBytes + peek.length;
  }
  return 0;
}
