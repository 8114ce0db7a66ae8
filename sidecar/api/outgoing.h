// Turning an app's OutgoingMessage into a routed core::Message (provenance kApp), with the
// checks every app send goes through: a valid route, and the router's access control for its
// first hop, asked before anything is sent (e.g. the plaintext egress rule: an app payload
// leaves the host only inside a secure channel unless the node runs with --insecure-plaintext).
//
// Thread-safety: pure, apart from reading the router's worker table.
#ifndef VEIL_SIDECAR_API_OUTGOING_H_
#define VEIL_SIDECAR_API_OUTGOING_H_

#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "sidecar/api/api_settings.h"
#include "sidecar/core/message.h"
#include "sidecar/core/router.h"
#include "veil/v1/messaging.pb.h"

namespace veil::api {

// Builds the message to send for `out` with `return_route`. INVALID_ARGUMENT (INVALID_ROUTE)
// for a bad route; what the router would refuse it with (e.g. FAILED_PRECONDITION,
// PLAINTEXT_EGRESS_REFUSED, when the first hop leaves the host and insecure plaintext is off).
// Moves the payload out of `out`.
absl::StatusOr<core::Message> PrepareOutgoing(v1::OutgoingMessage& out, core::Route return_route,
                                              const core::Router& router,
                                              const ApiSettings& settings);

// Prepares the messages of one request, as PrepareOutgoing, but parses and checks a route once
// for consecutive messages to the same route text.
class OutgoingBatch {
 public:
  OutgoingBatch(const core::Router& router, const ApiSettings& settings, core::Route return_route)
      : router_(router), settings_(settings), return_route_(std::move(return_route)) {}
  absl::StatusOr<core::Message> Prepare(v1::OutgoingMessage& out);

 private:
  const core::Router& router_;
  const ApiSettings& settings_;
  const core::Route return_route_;
  std::optional<std::string> last_text_;
  absl::StatusOr<core::Route> last_route_;
};

// Fills `delivery` (all but the sequence) from `msg`, moving the payload. `previous`, when
// given, is the delivery before it: text it shares with it is copied instead of formatted.
void ToDelivery(core::Message& msg, v1::Delivery& delivery,
                const std::pair<const core::Message*, const v1::Delivery*>& previous = {});

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_OUTGOING_H_
