#include "sidecar/core/message_codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "sidecar/common/error_reason.h"
#include "veil/wire/v1/transport.pb.h"

namespace veil::core {
namespace {

using google::protobuf::io::CodedOutputStream;

constexpr uint32_t kPayloadTag = (3 << 3) | 2;  // field 3, length-delimited

absl::Status Malformed(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                         absl::StrCat("malformed message: ", why), reason::kMalformedFrame);
}

constexpr size_t kMaxRefusalMessage = 1024;

// Everything but the payload.
wire::v1::TransportMessage RoutesOnly(const Route& onward, const Route& return_route,
                                      const absl::Status& refusal, uint64_t path_tag) {
  wire::v1::TransportMessage routes;
  if (path_tag != 0) routes.set_path_tag(path_tag);
  RouteToWire(onward, routes.mutable_onward_route());
  RouteToWire(return_route, routes.mutable_return_route());
  if (!refusal.ok()) {
    wire::v1::Refusal* r = routes.mutable_refusal();
    r->set_code(static_cast<uint32_t>(refusal.code()));
    r->set_reason(ReasonOf(refusal));
    r->set_message(std::string(refusal.message().substr(0, kMaxRefusalMessage)));
  }
  return routes;
}

size_t PayloadFieldSize(size_t payload_size) {
  if (payload_size == 0) return 0;  // proto3 omits an empty bytes field
  return CodedOutputStream::VarintSize32(kPayloadTag) +
         CodedOutputStream::VarintSize64(payload_size) + payload_size;
}

}  // namespace

void RouteToWire(const Route& route, google::protobuf::RepeatedPtrField<wire::v1::Address>* out) {
  out->Reserve(static_cast<int>(route.size()));
  for (const Address& hop : route.hops()) {
    wire::v1::Address* a = out->Add();
    a->set_type(static_cast<uint32_t>(hop.type()));
    a->set_value(hop.value());
  }
}

absl::StatusOr<Route> RouteFromWire(
    const google::protobuf::RepeatedPtrField<wire::v1::Address>& hops, absl::string_view which) {
  if (static_cast<size_t>(hops.size()) > kMaxRouteHops) {
    return Malformed(absl::StrCat(which, " route has more than ", kMaxRouteHops, " hops"));
  }
  Route::Hops out;
  out.reserve(hops.size());
  for (const wire::v1::Address& hop : hops) {
    auto address = Address::Make(hop.type(), hop.value());
    if (!address.ok())
      return Malformed(absl::StrCat(which, " route: ", address.status().message()));
    out.push_back(*std::move(address));
  }
  return Route(std::move(out));
}

void AppendEncodedMessageHead(const Route& onward, const Route& return_route, size_t payload_size,
                              std::string& out, const absl::Status& refusal, uint64_t path_tag) {
  // Routes go through the generated message; the payload is field 3, written directly. (The
  // generated code writes fields in number order; a parser takes them in any order.)
  wire::v1::TransportMessage routes = RoutesOnly(onward, return_route, refusal, path_tag);
  size_t routes_size = routes.ByteSizeLong();
  size_t start = out.size();
  size_t field_head = PayloadFieldSize(payload_size) - payload_size;
  out.resize(start + routes_size + field_head);
  auto* p = reinterpret_cast<uint8_t*>(out.data() + start);
  p = routes.SerializeWithCachedSizesToArray(p);
  if (payload_size > 0) {
    p = CodedOutputStream::WriteVarint32ToArray(kPayloadTag, p);
    CodedOutputStream::WriteVarint64ToArray(payload_size, p);
  }
}

void AppendEncodedMessage(const Route& onward, const Route& return_route, absl::string_view payload,
                          std::string& out, const absl::Status& refusal, uint64_t path_tag) {
  AppendEncodedMessageHead(onward, return_route, payload.size(), out, refusal, path_tag);
  out.append(payload.data(), payload.size());
}

void AppendConnectionRefusal(const absl::Status& why, std::string& out) {
  AppendEncodedMessageHead(Route(), Route(), 0, out, why);
}

absl::StatusOr<Message> DecodeMessage(absl::string_view bytes) {
  wire::v1::TransportMessage wire;
  if (!wire.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Malformed("not a TransportMessage");
  }
  const bool connection_refusal = wire.onward_route_size() == 0 && wire.has_refusal() &&
                                  wire.return_route_size() == 0 && wire.payload().empty() &&
                                  wire.path_tag() == 0;
  if (wire.onward_route_size() == 0 && !connection_refusal) {
    return Malformed("onward route is empty");
  }
  Message msg;
  msg.path_tag = wire.path_tag();
  auto onward = RouteFromWire(wire.onward_route(), "onward");
  if (!onward.ok()) return onward.status();
  auto back = RouteFromWire(wire.return_route(), "return");
  if (!back.ok()) return back.status();
  msg.onward = *std::move(onward);
  msg.return_route = *std::move(back);
  msg.payload = std::move(*wire.mutable_payload());
  if (wire.has_refusal()) {
    const wire::v1::Refusal& r = wire.refusal();
    if (r.code() == 0 || r.code() > 16) return Malformed("refusal with an invalid code");
    if (!msg.payload.empty()) return Malformed("refusal with a payload");
    if (r.message().size() > kMaxRefusalMessage) return Malformed("refusal message too long");
    msg.refusal = ErrorWithReason(static_cast<absl::StatusCode>(r.code()), r.message(), r.reason());
  }
  return msg;
}

}  // namespace veil::core
