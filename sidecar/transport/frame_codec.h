// Node connections' framing (docs/protocol.md, the same over every transport), as a pure codec
// (no sockets):
//
//   connection = version-byte frame*
//   frame      = length:u32 big-endian, body:length bytes (a serialized
//                veil.wire.v1.TransportMessage)
//
// A frame's header is veil_frame.h's (shared with the serve socket and the SDK); the body's
// encoding is core/message_codec.h's.
//
// A frame body is never empty (a message always has an onward hop) and never longer than the
// connection's maximum frame size. Every decoding error is terminal for the connection: the
// stream cannot be resynchronised.
//
// Thread-safety: FrameDecoder is not synchronised; the functions are pure.
#ifndef VEIL_SIDECAR_TRANSPORT_FRAME_CODEC_H_
#define VEIL_SIDECAR_TRANSPORT_FRAME_CODEC_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "sidecar/core/message.h"
#include "sidecar/core/message_codec.h"
#include "veil_frame.h"

namespace veil::transport {

inline constexpr uint8_t kWireVersion = 1;
inline constexpr size_t kFrameHeaderBytes = frame::kHeaderBytes;
inline constexpr size_t kDefaultMaxFrameBytes = 16 * 1024 * 1024;

// Reason for a frame that cannot be decoded.

// Appends one frame carrying `onward`, `return_route` and `payload` to `out`. When the body
// would exceed `max_frame_bytes`, appends nothing and returns INVALID_ARGUMENT (reason
// MESSAGE_TOO_LARGE); the message is never truncated.
absl::Status AppendFrame(const core::Route& onward, const core::Route& return_route,
                         absl::string_view payload, size_t max_frame_bytes, std::string& out,
                         const absl::Status& refusal = absl::OkStatus(), uint64_t path_tag = 0);

// The same but for the payload's bytes, which the caller writes right after (e.g. from where
// they are, with a gathering write).
absl::Status AppendFrameHead(const core::Route& onward, const core::Route& return_route,
                             size_t payload_size, size_t max_frame_bytes, std::string& out,
                             const absl::Status& refusal = absl::OkStatus(), uint64_t path_tag = 0);

// Appends the frame that refuses a whole connection with `why` (not OK): the last a node
// writes on a connection it will not serve (docs/protocol.md, "Connection refusals").
void AppendConnectionRefusalFrame(const absl::Status& why, std::string& out);

// A frame body decodes with core::DecodeMessage (sidecar/core/message_codec.h).

// What a stream's frames are: its version byte, the longest body, whether a body may be empty.
// Node connections: kWireVersion, the connection's maximum, never empty (a message always has an
// onward hop). The serve socket: its own version byte, --api-max-request-bytes, and empty bodies
// allowed (an empty ServeRequest is a request, refused for what it lacks).
struct FrameFormat {
  uint8_t version = kWireVersion;
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  bool allow_empty = false;
};

// A growable byte buffer that never zeroes what it allocates (a 16 MiB frame is read, a 4 MiB
// delivery batch serialized, straight into it), and that gives back a buffer grown past
// kKeptBytes once it is asked for no more than that with nothing to keep: a stream that carried
// one large frame does not hold its memory while it carries small ones.
class UnzeroedBuffer {
 public:
  static constexpr size_t kKeptBytes = 1024 * 1024;

  char* data() const { return data_.get(); }
  size_t capacity() const { return capacity_; }
  // Room for at least `n` bytes, keeping the first `keep` (<= n) of what is there.
  void Reserve(size_t n, size_t keep);

 private:
  std::unique_ptr<char[]> data_;
  size_t capacity_ = 0;
};

// Splits a byte stream into frame bodies, in an UnzeroedBuffer.
class FrameDecoder {
 public:
  // Why decoding stopped (terminal: the stream cannot be resynchronised).
  enum class Failure { kNone, kVersion, kEmpty, kTooLong };

  explicit FrameDecoder(size_t max_frame_bytes)
      : FrameDecoder(FrameFormat{kWireVersion, max_frame_bytes}) {}
  explicit FrameDecoder(FrameFormat format) : format_(format) {}
  FrameDecoder(const FrameDecoder&) = delete;
  FrameDecoder& operator=(const FrameDecoder&) = delete;

  // Space for at least `min_bytes` more input; fill a prefix of it and Commit() that many.
  std::span<char> WritableSpace(size_t min_bytes);
  void Commit(size_t n) { end_ += n; }
  // Copies `bytes` in (for tests and callers without their own buffer).
  void Append(absl::string_view bytes);

  // The next complete frame body, or nullopt when more input is needed. The view stays valid
  // until the next call to WritableSpace/Append. Errors (terminal, INVALID_ARGUMENT with
  // reason MALFORMED_FRAME; failure() says which): wrong version byte, zero-length frame where
  // the format forbids one, frame longer than the maximum (known from its header alone).
  absl::StatusOr<std::optional<absl::string_view>> Next();

  // After an error: which, with the version byte or the length that caused it.
  Failure failure() const { return failure_; }
  uint32_t failed_value() const { return failed_value_; }

  // Bytes received but not yet returned as frames.
  size_t buffered() const { return end_ - begin_; }
  // Bytes still to come for the frame being received (its header, or the rest of its body):
  // a reader sizes its next read by it, so a large frame takes few reads.
  size_t missing() const;

 private:
  absl::Status Fail(Failure failure, uint32_t value, absl::string_view why);

  const FrameFormat format_;
  UnzeroedBuffer buffer_;
  size_t begin_ = 0;  // first unconsumed byte
  size_t end_ = 0;    // one past the last received byte
  bool version_checked_ = false;
  Failure failure_ = Failure::kNone;
  uint32_t failed_value_ = 0;
  absl::Status error_;
};

}  // namespace veil::transport

#endif  // VEIL_SIDECAR_TRANSPORT_FRAME_CODEC_H_
