// Identifiers and identity names.
//
// An identifier is "I" followed by the lowercase hex of the first 16 bytes of SHA-256 over the
// identity's Ed25519 public key: derived from the key, so it is stable for as long as the key
// persists, and anyone holding the public key can check it.
#ifndef VEIL_SIDECAR_IDENTITY_IDENTIFIER_H_
#define VEIL_SIDECAR_IDENTITY_IDENTIFIER_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace veil::identity {

inline constexpr size_t kIdentifierHashBytes = 16;
inline constexpr size_t kIdentifierLength = 1 + 2 * kIdentifierHashBytes;
inline constexpr size_t kMaxIdentityNameLength = 64;

// The identifier of `ed25519_public_key` (32 bytes).
std::string IdentifierOf(absl::string_view ed25519_public_key);

// INVALID_ARGUMENT (reason INVALID_IDENTIFIER) unless `text` looks like an identifier.
absl::Status ValidateIdentifier(absl::string_view text);

// Identity names: 1 to 64 of [a-z0-9_-], starting with a letter or digit. INVALID_ARGUMENT
// (reason INVALID_IDENTITY_NAME) stating the rule otherwise.
absl::Status ValidateIdentityName(absl::string_view name);

}  // namespace veil::identity

#endif  // VEIL_SIDECAR_IDENTITY_IDENTIFIER_H_
