#include "sidecar/transport/frame_codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "sidecar/common/error_reason.h"
#include "veil/wire/v1/transport.pb.h"

namespace veil::transport {
namespace {

using google::protobuf::io::CodedOutputStream;

absl::Status Malformed(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument, absl::StrCat("malformed frame: ", why),
                         kMalformedFrame);
}

void ToWire(const core::Route& route,
            google::protobuf::RepeatedPtrField<wire::v1::Address>* out) {
  out->Reserve(static_cast<int>(route.size()));
  for (const core::Address& hop : route.hops()) {
    wire::v1::Address* a = out->Add();
    a->set_type(static_cast<uint32_t>(hop.type()));
    a->set_value(hop.value());
  }
}

absl::StatusOr<core::Route> FromWire(
    const google::protobuf::RepeatedPtrField<wire::v1::Address>& hops, absl::string_view which) {
  if (static_cast<size_t>(hops.size()) > core::kMaxRouteHops) {
    return Malformed(absl::StrCat(which, " route has more than ", core::kMaxRouteHops, " hops"));
  }
  std::vector<core::Address> out;
  out.reserve(hops.size());
  for (const wire::v1::Address& hop : hops) {
    auto address = core::Address::Make(hop.type(), hop.value());
    if (!address.ok()) {
      return Malformed(absl::StrCat(which, " route: ", address.status().message()));
    }
    out.push_back(*std::move(address));
  }
  return core::Route(std::move(out));
}

constexpr uint32_t kPayloadTag = (3 << 3) | 2;  // field 3, length-delimited

}  // namespace

absl::Status AppendFrame(const core::Route& onward, const core::Route& return_route,
                         absl::string_view payload, size_t max_frame_bytes, std::string& out) {
  // Routes go through the generated message; the payload is appended as field 3 directly, so
  // it is copied once, into `out`.
  wire::v1::TransportMessage routes;
  ToWire(onward, routes.mutable_onward_route());
  ToWire(return_route, routes.mutable_return_route());
  size_t routes_size = routes.ByteSizeLong();
  size_t body_size = routes_size + CodedOutputStream::VarintSize32(kPayloadTag) +
                     CodedOutputStream::VarintSize64(payload.size()) + payload.size();
  if (payload.empty()) body_size = routes_size;  // proto3 omits an empty bytes field
  if (body_size > max_frame_bytes) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           absl::StrCat("message of ", body_size,
                                        " bytes exceeds the maximum frame size of ",
                                        max_frame_bytes, " bytes"),
                           reason::kMessageTooLarge);
  }
  size_t start = out.size();
  out.resize(start + kFrameHeaderBytes + body_size);
  auto* p = reinterpret_cast<uint8_t*>(out.data() + start);
  p[0] = static_cast<uint8_t>(body_size >> 24);
  p[1] = static_cast<uint8_t>(body_size >> 16);
  p[2] = static_cast<uint8_t>(body_size >> 8);
  p[3] = static_cast<uint8_t>(body_size);
  p += kFrameHeaderBytes;
  p = routes.SerializeWithCachedSizesToArray(p);
  if (!payload.empty()) {
    p = CodedOutputStream::WriteVarint32ToArray(kPayloadTag, p);
    p = CodedOutputStream::WriteVarint64ToArray(payload.size(), p);
    std::memcpy(p, payload.data(), payload.size());
  }
  return absl::OkStatus();
}

absl::StatusOr<core::Message> DecodeFrameBody(absl::string_view body) {
  wire::v1::TransportMessage wire;
  if (!wire.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return Malformed("body is not a TransportMessage");
  }
  if (wire.onward_route_size() == 0) return Malformed("onward route is empty");
  core::Message msg;
  auto onward = FromWire(wire.onward_route(), "onward");
  if (!onward.ok()) return onward.status();
  auto back = FromWire(wire.return_route(), "return");
  if (!back.ok()) return back.status();
  msg.onward = *std::move(onward);
  msg.return_route = *std::move(back);
  msg.payload = std::move(*wire.mutable_payload());
  return msg;
}

std::span<char> FrameDecoder::WritableSpace(size_t min_bytes) {
  if (begin_ == end_) begin_ = end_ = 0;
  if (buffer_.size() - end_ < min_bytes) {
    if (begin_ > 0) {  // compact
      std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (buffer_.size() - end_ < min_bytes) buffer_.resize(end_ + min_bytes);
  }
  return std::span<char>(buffer_.data() + end_, buffer_.size() - end_);
}

void FrameDecoder::Append(absl::string_view bytes) {
  std::span<char> space = WritableSpace(bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  Commit(bytes.size());
}

absl::StatusOr<std::optional<absl::string_view>> FrameDecoder::Next() {
  if (!error_.ok()) return error_;
  if (!version_checked_) {
    if (begin_ == end_) return std::nullopt;
    auto version = static_cast<uint8_t>(buffer_[begin_]);
    if (version != kWireVersion) {
      error_ = Malformed(absl::StrCat("unsupported wire version ", version, " (expected ",
                                      kWireVersion, ")"));
      return error_;
    }
    version_checked_ = true;
    ++begin_;
  }
  if (end_ - begin_ < kFrameHeaderBytes) return std::nullopt;
  auto* p = reinterpret_cast<const uint8_t*>(buffer_.data() + begin_);
  size_t length = (size_t{p[0]} << 24) | (size_t{p[1]} << 16) | (size_t{p[2]} << 8) | p[3];
  if (length == 0) {
    error_ = Malformed("zero-length frame");
    return error_;
  }
  if (length > max_frame_bytes_) {
    error_ = Malformed(absl::StrCat("frame of ", length, " bytes exceeds the maximum of ",
                                    max_frame_bytes_));
    return error_;
  }
  if (end_ - begin_ < kFrameHeaderBytes + length) return std::nullopt;
  absl::string_view body(buffer_.data() + begin_ + kFrameHeaderBytes, length);
  begin_ += kFrameHeaderBytes + length;
  return body;
}

}  // namespace veil::transport
