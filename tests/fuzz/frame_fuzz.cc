// The transport's frame decoder and message decoder on arbitrary bytes, fed in arbitrary chunks:
// never crashes, never yields a frame over the limit; a decoded message (routes, payload,
// refusal, path tag — or a connection refusal) re-encodes to a frame that decodes to the same.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "sidecar/common/error_reason.h"
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
      if (!msg.ok()) continue;
      std::string again;
      if (veil::core::IsConnectionRefusal(*msg)) {
        veil::transport::AppendConnectionRefusalFrame(msg->refusal, again);
      } else if (!veil::transport::AppendFrame(msg->onward, msg->return_route, msg->payload,
                                               kMax * 2, again, msg->refusal, msg->path_tag)
                      .ok()) {
        std::abort();
      }
      auto back = veil::core::DecodeMessage(
          absl::string_view(again).substr(veil::transport::kFrameHeaderBytes));
      if (!back.ok() || !(back->onward == msg->onward) ||
          !(back->return_route == msg->return_route) || back->payload != msg->payload ||
          back->path_tag != msg->path_tag || back->refusal.code() != msg->refusal.code() ||
          back->refusal.message() != msg->refusal.message() ||
          veil::ReasonOf(back->refusal) != veil::ReasonOf(msg->refusal)) {
        std::abort();
      }
    }
  }
  return 0;
}
