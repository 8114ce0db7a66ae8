// Ed25519 signatures already verified, process-wide: the same credential comes in every channel
// its holder opens, the same key history in every handshake of a rotated identity (a thousand
// channels, one verification). Only the outcome of a good signature is kept, by SHA-256 of
// (public key, signature, message); everything else about what was signed is checked every time.
// Bounded: the oldest go first.
//
// Thread-safety: may be called from any thread.
#ifndef VEIL_SIDECAR_IDENTITY_VERIFIED_SIGNATURES_H_
#define VEIL_SIDECAR_IDENTITY_VERIFIED_SIGNATURES_H_

#include "absl/strings/string_view.h"

namespace veil::identity {

inline constexpr size_t kMaxCachedSignatures = 4096;

// vault::Ed25519Verify, remembered when good.
bool VerifySignatureCached(absl::string_view public_key, absl::string_view message,
                           absl::string_view signature);

}  // namespace veil::identity

#endif  // VEIL_SIDECAR_IDENTITY_VERIFIED_SIGNATURES_H_
