#include "sidecar/transport/frame_codec.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/core/message_codec.h"

namespace veil::transport {
namespace {

absl::Status Malformed(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument, absl::StrCat("malformed frame: ", why),
                         reason::kMalformedFrame);
}

}  // namespace

absl::Status AppendFrameHead(const core::Route& onward, const core::Route& return_route,
                             size_t payload_size, size_t max_frame_bytes, std::string& out,
                             const absl::Status& refusal, uint64_t path_tag) {
  // The head is encoded once, behind room for the length, which is filled in after (encoding
  // the routes to learn the size first would encode them twice per frame).
  const size_t start = out.size();
  out.append(kFrameHeaderBytes, '\0');
  core::AppendEncodedMessageHead(onward, return_route, payload_size, out, refusal, path_tag);
  const size_t body_size = out.size() - start - kFrameHeaderBytes + payload_size;
  if (body_size > max_frame_bytes) {
    out.resize(start);
    return ErrorWithReason(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("message of ", body_size, " bytes exceeds the maximum frame size of ",
                     max_frame_bytes, " bytes"),
        reason::kMessageTooLarge);
  }
  frame::PutLength(&out[start], static_cast<uint32_t>(body_size));
  return absl::OkStatus();
}

absl::Status AppendFrame(const core::Route& onward, const core::Route& return_route,
                         absl::string_view payload, size_t max_frame_bytes, std::string& out,
                         const absl::Status& refusal, uint64_t path_tag) {
  absl::Status head = AppendFrameHead(onward, return_route, payload.size(), max_frame_bytes, out,
                                      refusal, path_tag);
  if (head.ok()) out.append(payload.data(), payload.size());
  return head;
}

void AppendConnectionRefusalFrame(const absl::Status& why, std::string& out) {
  const size_t start = out.size();
  out.append(kFrameHeaderBytes, '\0');
  core::AppendConnectionRefusal(why, out);
  const size_t body_size = out.size() - start - kFrameHeaderBytes;
  frame::PutLength(&out[start], static_cast<uint32_t>(body_size));
}

void UnzeroedBuffer::Reserve(size_t n, size_t keep) {
  if (keep == 0 && capacity_ > kKeptBytes && n <= kKeptBytes) {
    data_.reset();
    capacity_ = 0;
  }
  if (n <= capacity_) return;
  const size_t capacity = std::max(n, std::min(capacity_ * 2, n + kKeptBytes));
  std::unique_ptr<char[]> bigger(new char[capacity]);  // not zeroed
  if (keep > 0) std::memcpy(bigger.get(), data_.get(), keep);
  data_ = std::move(bigger);
  capacity_ = capacity;
}

std::span<char> FrameDecoder::WritableSpace(size_t min_bytes) {
  if (begin_ == end_) begin_ = end_ = 0;
  if (buffer_.capacity() - end_ < min_bytes && begin_ > 0) {  // compact
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  buffer_.Reserve(end_ + min_bytes, end_);
  return std::span<char>(buffer_.data() + end_, buffer_.capacity() - end_);
}

void FrameDecoder::Append(absl::string_view bytes) {
  std::span<char> space = WritableSpace(bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  Commit(bytes.size());
}

size_t FrameDecoder::missing() const {
  const size_t have = end_ - begin_;
  const size_t head = version_checked_ ? 0 : 1;
  if (have < head + kFrameHeaderBytes) return head + kFrameHeaderBytes - have;
  const size_t length = frame::GetLength(buffer_.data() + begin_ + head);
  const size_t whole = head + kFrameHeaderBytes + length;
  return whole > have ? whole - have : 0;
}

absl::Status FrameDecoder::Fail(Failure failure, uint32_t value, absl::string_view why) {
  failure_ = failure;
  failed_value_ = value;
  error_ = Malformed(why);
  return error_;
}

absl::StatusOr<std::optional<absl::string_view>> FrameDecoder::Next() {
  if (!error_.ok()) return error_;
  if (!version_checked_) {
    if (begin_ == end_) return std::nullopt;
    auto version = static_cast<uint8_t>(buffer_.data()[begin_]);
    if (version != format_.version) {
      return Fail(
          Failure::kVersion, version,
          absl::StrCat("unsupported wire version ", version, " (expected ", format_.version, ")"));
    }
    version_checked_ = true;
    ++begin_;
  }
  const frame::Peek peek = frame::PeekFrame(buffer_.data() + begin_, end_ - begin_,
                                            format_.max_frame_bytes, format_.allow_empty);
  switch (peek.next) {
    case frame::Next::kNeedMore:
      return std::nullopt;
    case frame::Next::kEmpty:
      return Fail(Failure::kEmpty, 0, "zero-length frame");
    case frame::Next::kTooLong:
      return Fail(Failure::kTooLong, peek.length,
                  absl::StrCat("frame of ", peek.length, " bytes exceeds the maximum of ",
                               format_.max_frame_bytes));
    case frame::Next::kFrame:
      break;
  }
  const size_t length = peek.length;
  absl::string_view body(buffer_.data() + begin_ + kFrameHeaderBytes, length);
  begin_ += kFrameHeaderBytes + length;
  return body;
}

}  // namespace veil::transport
