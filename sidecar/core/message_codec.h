// The byte form of a routed message: a serialized veil.wire.v1.TransportMessage (onward route,
// return route, payload). Used for frames on transport connections and for the plaintext
// inside secure channel messages. Pure; no I/O.
#ifndef VEIL_SIDECAR_CORE_MESSAGE_CODEC_H_
#define VEIL_SIDECAR_CORE_MESSAGE_CODEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sidecar/core/message.h"
#include "veil/wire/v1/transport.pb.h"

namespace veil::core {

// Appends the encoding to `out`. The payload is copied once, straight into `out`. `refusal`
// (not OK) makes it a refusal notice; `path_tag` (not 0) is the sending channel's tag.
void AppendEncodedMessage(const Route& onward, const Route& return_route, absl::string_view payload,
                          std::string& out, const absl::Status& refusal = absl::OkStatus(),
                          uint64_t path_tag = 0);

// Appends all of the encoding but the payload's bytes: `out` then ends where they go, so that
// the head followed by the payload is AppendEncodedMessage's output (for writing a large
// payload from where it is instead of copying it).
void AppendEncodedMessageHead(const Route& onward, const Route& return_route, size_t payload_size,
                              std::string& out, const absl::Status& refusal = absl::OkStatus(),
                              uint64_t path_tag = 0);

// A route as wire addresses, appended to `out`.
void RouteToWire(const Route& route, google::protobuf::RepeatedPtrField<wire::v1::Address>* out);
// A route from wire addresses. INVALID_ARGUMENT (MALFORMED_FRAME) for more than kMaxRouteHops
// hops or an invalid address; `which` ("onward", "return") names the route in the error.
absl::StatusOr<Route> RouteFromWire(
    const google::protobuf::RepeatedPtrField<wire::v1::Address>& hops, absl::string_view which);

// Decodes a message (routes, payload, refusal, path tag; no sender info, no receipt).
// INVALID_ARGUMENT (reason MALFORMED_FRAME) when `bytes` is not a TransportMessage, the onward
// route is empty (but for a connection refusal: a refusal and nothing else, which decodes to a
// message with empty routes — IsConnectionRefusal), a route has more than kMaxRouteHops hops,
// an address is invalid or of unknown type, or a refusal has code 0 or a payload beside it.
absl::StatusOr<Message> DecodeMessage(absl::string_view bytes);

// A decoded message that refuses the connection it came on (docs/protocol.md).
inline bool IsConnectionRefusal(const Message& msg) {
  return msg.onward.empty() && !msg.refusal.ok();
}

// The encoding of a connection refusal carrying `why` (not OK), appended to `out` (no frame
// header).
void AppendConnectionRefusal(const absl::Status& why, std::string& out);

}  // namespace veil::core

#endif  // VEIL_SIDECAR_CORE_MESSAGE_CODEC_H_
