// Stable, machine-readable reasons attached to an absl::Status as a payload, so that any layer
// can say *why* something failed and the API layer can turn it into a google.rpc.ErrorInfo
// without knowing the layer. Reasons are UPPER_SNAKE_CASE and documented in docs/api.md.
//
// Thread-safety: free functions on values; safe from any thread.
#ifndef VEIL_SIDECAR_COMMON_ERROR_REASON_H_
#define VEIL_SIDECAR_COMMON_ERROR_REASON_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace veil {

// Reasons used by more than one component. A component may define its own beside its code.
namespace reason {
inline constexpr absl::string_view kInvalidRoute = "INVALID_ROUTE";
inline constexpr absl::string_view kInvalidAddress = "INVALID_ADDRESS";
inline constexpr absl::string_view kRouteNotFound = "ROUTE_NOT_FOUND";
inline constexpr absl::string_view kAddressInUse = "ADDRESS_IN_USE";
inline constexpr absl::string_view kConnectionFailed = "CONNECTION_FAILED";
inline constexpr absl::string_view kConnectionLost = "CONNECTION_LOST";
inline constexpr absl::string_view kMessageTooLarge = "MESSAGE_TOO_LARGE";
inline constexpr absl::string_view kPlaintextEgressRefused = "PLAINTEXT_EGRESS_REFUSED";
inline constexpr absl::string_view kNodeShuttingDown = "NODE_SHUTTING_DOWN";
inline constexpr absl::string_view kQueueFull = "QUEUE_FULL";
inline constexpr absl::string_view kTooManyStreams = "TOO_MANY_STREAMS";
inline constexpr absl::string_view kInvalidRequest = "INVALID_REQUEST";
inline constexpr absl::string_view kNoReply = "NO_REPLY";
inline constexpr absl::string_view kListenFailed = "LISTEN_FAILED";
// Access control (docs/security.md): a worker does not take messages of this provenance; a
// node does not dial a /tcp hop that came from outside it and is not in --allow-dial.
inline constexpr absl::string_view kAccessDenied = "ACCESS_DENIED";
inline constexpr absl::string_view kDialRefused = "DIAL_REFUSED";
inline constexpr absl::string_view kTooManyConnections = "TOO_MANY_CONNECTIONS";
inline constexpr absl::string_view kIdleTimeout = "IDLE_TIMEOUT";
}  // namespace reason

// Returns `status` with `reason` attached (replacing any earlier reason). OK stays OK.
absl::Status WithReason(absl::Status status, absl::string_view reason);

// Builds a status of `code` with `message` and `reason`.
absl::Status ErrorWithReason(absl::StatusCode code, absl::string_view message,
                             absl::string_view reason);

// The reason attached to `status`, or "" when none is.
std::string ReasonOf(const absl::Status& status);

// `text` in double quotes for an error message, cut to its first `max` bytes (with a note of
// its size) when longer: input from outside is quoted, never echoed whole (a 2 MB route would
// otherwise fill the error — and gRPC's trailer — twice over).
std::string QuoteInput(absl::string_view text, size_t max = 128);

}  // namespace veil

#endif  // VEIL_SIDECAR_COMMON_ERROR_REASON_H_
