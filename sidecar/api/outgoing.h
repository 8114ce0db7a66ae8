// Turning an app's OutgoingMessage into a routed core::Message, with the checks every app
// send goes through: a valid route, and the plaintext egress guard (an app payload leaves the
// host only inside a secure channel unless the node runs with --insecure-plaintext).
//
// Thread-safety: pure, apart from reading the router's worker table.
#ifndef VEIL_SIDECAR_API_OUTGOING_H_
#define VEIL_SIDECAR_API_OUTGOING_H_

#include "absl/status/statusor.h"
#include "sidecar/api/api_settings.h"
#include "sidecar/core/message.h"
#include "sidecar/core/router.h"
#include "veil/v1/messaging.pb.h"

namespace veil::api {

// Builds the message to send for `out` with `return_route`. INVALID_ARGUMENT (INVALID_ROUTE)
// for a bad route; FAILED_PRECONDITION (PLAINTEXT_EGRESS_REFUSED) when the first hop leaves the
// host and insecure plaintext is off. Moves the payload out of `out`.
absl::StatusOr<core::Message> PrepareOutgoing(v1::OutgoingMessage& out, core::Route return_route,
                                              const core::Router& router,
                                              const ApiSettings& settings);

// Fills `delivery` (all but the sequence) from `msg`, moving the payload.
void ToDelivery(core::Message& msg, v1::Delivery& delivery);

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_OUTGOING_H_
