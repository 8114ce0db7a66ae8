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

// Every reason, in one place: docs/api.md's table lists each (a test checks both ways), and code
// names them by these constants, never by a bare string.
namespace reason {
// Routing and transports.
inline constexpr absl::string_view kInvalidRoute = "INVALID_ROUTE";
inline constexpr absl::string_view kInvalidAddress = "INVALID_ADDRESS";
inline constexpr absl::string_view kRouteNotFound = "ROUTE_NOT_FOUND";
inline constexpr absl::string_view kAddressInUse = "ADDRESS_IN_USE";
inline constexpr absl::string_view kConnectionFailed = "CONNECTION_FAILED";
inline constexpr absl::string_view kConnectionLost = "CONNECTION_LOST";
inline constexpr absl::string_view kMessageTooLarge = "MESSAGE_TOO_LARGE";
inline constexpr absl::string_view kMessageDropped = "MESSAGE_DROPPED";
inline constexpr absl::string_view kMalformedFrame = "MALFORMED_FRAME";
inline constexpr absl::string_view kPlaintextEgressRefused = "PLAINTEXT_EGRESS_REFUSED";
inline constexpr absl::string_view kNodeShuttingDown = "NODE_SHUTTING_DOWN";
inline constexpr absl::string_view kQueueFull = "QUEUE_FULL";
inline constexpr absl::string_view kListenFailed = "LISTEN_FAILED";
// Access control (docs/security.md): a worker does not take messages of this provenance; a node
// does not dial a /tcp hop that came from outside it and is not in --allow-dial; connection
// refusals.
inline constexpr absl::string_view kAccessDenied = "ACCESS_DENIED";
inline constexpr absl::string_view kDialRefused = "DIAL_REFUSED";
inline constexpr absl::string_view kTooManyConnections = "TOO_MANY_CONNECTIONS";
inline constexpr absl::string_view kIdleTimeout = "IDLE_TIMEOUT";
inline constexpr absl::string_view kSecureChannelRequired = "SECURE_CHANNEL_REQUIRED";
// The API.
inline constexpr absl::string_view kTooManyStreams = "TOO_MANY_STREAMS";
inline constexpr absl::string_view kInvalidRequest = "INVALID_REQUEST";
inline constexpr absl::string_view kNoReply = "NO_REPLY";
inline constexpr absl::string_view kOpenTimeout = "OPEN_TIMEOUT";
inline constexpr absl::string_view kRequestCancelled = "REQUEST_CANCELLED";
inline constexpr absl::string_view kInvalidApiEndpoint = "INVALID_API_ENDPOINT";
inline constexpr absl::string_view kServiceUnknown = "SERVICE_UNKNOWN";
// Vault and state.
inline constexpr absl::string_view kAuthenticationFailed = "AUTHENTICATION_FAILED";
inline constexpr absl::string_view kCorruptStateFile = "CORRUPT_STATE_FILE";
inline constexpr absl::string_view kUnsafePermissions = "UNSAFE_PERMISSIONS";
inline constexpr absl::string_view kVaultKeyRejected = "VAULT_KEY_REJECTED";
// Identities.
inline constexpr absl::string_view kInvalidIdentityName = "INVALID_IDENTITY_NAME";
inline constexpr absl::string_view kInvalidIdentifier = "INVALID_IDENTIFIER";
inline constexpr absl::string_view kInvalidPublicKey = "INVALID_PUBLIC_KEY";
inline constexpr absl::string_view kIdentifierMismatch = "IDENTIFIER_MISMATCH";
inline constexpr absl::string_view kIdentityNotFound = "IDENTITY_NOT_FOUND";
inline constexpr absl::string_view kTrustedIdentityNotFound = "TRUSTED_IDENTITY_NOT_FOUND";
inline constexpr absl::string_view kIdentityExists = "IDENTITY_EXISTS";
inline constexpr absl::string_view kIdentityInUse = "IDENTITY_IN_USE";
// Secure channels.
inline constexpr absl::string_view kHandshakeFailed = "HANDSHAKE_FAILED";
inline constexpr absl::string_view kHandshakeTimeout = "HANDSHAKE_TIMEOUT";
inline constexpr absl::string_view kUntrustedIdentity = "UNTRUSTED_IDENTITY";
inline constexpr absl::string_view kPeerRefusedHandshake = "PEER_REFUSED_HANDSHAKE";
inline constexpr absl::string_view kBadIdentityProof = "BAD_IDENTITY_PROOF";
inline constexpr absl::string_view kDecryptFailed = "DECRYPT_FAILED";
inline constexpr absl::string_view kReplayed = "REPLAYED";
inline constexpr absl::string_view kInvalidTrustPolicy = "INVALID_TRUST_POLICY";
inline constexpr absl::string_view kChannelClosed = "CHANNEL_CLOSED";
inline constexpr absl::string_view kChannelDeleted = "CHANNEL_DELETED";
inline constexpr absl::string_view kChannelNotEstablished = "CHANNEL_NOT_ESTABLISHED";
inline constexpr absl::string_view kChannelNotFound = "CHANNEL_NOT_FOUND";
inline constexpr absl::string_view kBatchNotSupported = "BATCH_NOT_SUPPORTED";
inline constexpr absl::string_view kFlowControlViolated = "FLOW_CONTROL_VIOLATED";
inline constexpr absl::string_view kDeliveryUnknown = "DELIVERY_UNKNOWN";
inline constexpr absl::string_view kDeliveryReceiptsUnsupported = "DELIVERY_RECEIPTS_UNSUPPORTED";
// Credentials (docs/credentials.md).
inline constexpr absl::string_view kCredentialInvalid = "CREDENTIAL_INVALID";
inline constexpr absl::string_view kCredentialUntrustedIssuer = "CREDENTIAL_UNTRUSTED_ISSUER";
inline constexpr absl::string_view kCredentialBadSignature = "CREDENTIAL_BAD_SIGNATURE";
inline constexpr absl::string_view kCredentialWrongSubject = "CREDENTIAL_WRONG_SUBJECT";
inline constexpr absl::string_view kCredentialExpired = "CREDENTIAL_EXPIRED";
inline constexpr absl::string_view kCredentialNotYetValid = "CREDENTIAL_NOT_YET_VALID";
inline constexpr absl::string_view kCredentialRequired = "CREDENTIAL_REQUIRED";
inline constexpr absl::string_view kKeyHistoryInvalid = "KEY_HISTORY_INVALID";
inline constexpr absl::string_view kKeyHistoryRollback = "KEY_HISTORY_ROLLBACK";
inline constexpr absl::string_view kKeyHistoryConflict = "KEY_HISTORY_CONFLICT";
// Authorities: members, enrollment tickets, credential requests.
inline constexpr absl::string_view kNotAnAuthority = "NOT_AN_AUTHORITY";
inline constexpr absl::string_view kNotAMember = "NOT_A_MEMBER";
inline constexpr absl::string_view kMemberNotFound = "MEMBER_NOT_FOUND";
inline constexpr absl::string_view kTicketNotFound = "TICKET_NOT_FOUND";
inline constexpr absl::string_view kTicketInvalid = "TICKET_INVALID";
inline constexpr absl::string_view kTicketUsed = "TICKET_USED";
inline constexpr absl::string_view kTicketExpired = "TICKET_EXPIRED";
inline constexpr absl::string_view kTicketRevoked = "TICKET_REVOKED";
inline constexpr absl::string_view kAuthorityUnreachable = "AUTHORITY_UNREACHABLE";
inline constexpr absl::string_view kListenerNotFound = "LISTENER_NOT_FOUND";
inline constexpr absl::string_view kListenerBusy = "LISTENER_BUSY";
inline constexpr absl::string_view kTooManyChannels = "TOO_MANY_CHANNELS";
// Relays.
inline constexpr absl::string_view kInvalidRelayName = "INVALID_RELAY_NAME";
inline constexpr absl::string_view kRelayNameTaken = "RELAY_NAME_TAKEN";
inline constexpr absl::string_view kRelayNotAllowed = "RELAY_NOT_ALLOWED";
inline constexpr absl::string_view kRelayLimit = "RELAY_LIMIT";
inline constexpr absl::string_view kRelayNotFound = "RELAY_NOT_FOUND";
inline constexpr absl::string_view kRelayExists = "RELAY_EXISTS";
inline constexpr absl::string_view kNotAHub = "NOT_A_HUB";
inline constexpr absl::string_view kHubNotAnswering = "HUB_NOT_ANSWERING";
inline constexpr absl::string_view kNoOwnerConnection = "NO_OWNER_CONNECTION";
inline constexpr absl::string_view kDirectoryUnavailable = "DIRECTORY_UNAVAILABLE";
inline constexpr absl::string_view kRelayMoved = "RELAY_MOVED";
inline constexpr absl::string_view kMeshUnavailable = "MESH_UNAVAILABLE";
// Portals.
inline constexpr absl::string_view kPortalNotFound = "PORTAL_NOT_FOUND";
inline constexpr absl::string_view kInvalidTarget = "INVALID_TARGET";
inline constexpr absl::string_view kPublicBindRefused = "PUBLIC_BIND_REFUSED";
inline constexpr absl::string_view kPortalReset = "PORTAL_RESET";
inline constexpr absl::string_view kPortalTimeout = "PORTAL_TIMEOUT";
inline constexpr absl::string_view kPortalProtocolError = "PORTAL_PROTOCOL_ERROR";
inline constexpr absl::string_view kTooManySessions = "TOO_MANY_SESSIONS";
// Configuration.
inline constexpr absl::string_view kInvalidConfig = "INVALID_CONFIG";
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
