// Credentials: an authority's Ed25519 signature over (subject identifier, attributes, issued,
// expiry), encoded as docs/protocol.md ("Credentials") specifies (wire::v1::Credential). Pure:
// no clock, no I/O — the caller passes the time.
//
//   IssueCredential   what an authority signs for a member
//   DecodeCredential  structure only: canonical body, limits (nothing about trust or time)
//   VerifyCredential  all of it: structure, issuer trusted, signature, subject, validity window
//
// Refusals carry a reason (CREDENTIAL_INVALID, CREDENTIAL_UNTRUSTED_ISSUER,
// CREDENTIAL_BAD_SIGNATURE, CREDENTIAL_WRONG_SUBJECT, CREDENTIAL_EXPIRED,
// CREDENTIAL_NOT_YET_VALID) and never quote attribute values.
//
// Thread-safety: free functions on values.
#ifndef VEIL_SIDECAR_IDENTITY_CREDENTIAL_H_
#define VEIL_SIDECAR_IDENTITY_CREDENTIAL_H_

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sidecar/identity/identity.h"

namespace veil::identity {

inline constexpr uint32_t kCredentialVersion = 1;
// What the issuer's signature covers: this context, then the body.
inline constexpr absl::string_view kCredentialSignatureContext = "veil/v1 credential\n";
inline constexpr size_t kMaxCredentialAttributes = 32;
inline constexpr size_t kMaxAttributeKeyLength = 64;
inline constexpr size_t kMaxAttributeValueLength = 256;
// The largest encoded Credential taken (32 attributes of the largest size fit).
inline constexpr size_t kMaxCredentialBytes = 12 * 1024;
// The most credentials one side presents (one per authority it is a member of). Four of the
// largest fit one Noise handshake message with the rest of the proof.
inline constexpr size_t kMaxPresentedCredentials = 4;
// How far the issuer's clock may be ahead of, or this side's behind, when checking validity.
inline constexpr int64_t kDefaultClockSkewSeconds = 60;

// Attribute keys to values, sorted (the order of the canonical encoding).
using Attributes = std::map<std::string, std::string, std::less<>>;

// 1 to 64 of [a-z0-9_.-] starting with a letter. INVALID_ARGUMENT (CREDENTIAL_INVALID) naming
// the rule otherwise. `identifier` is not a key: it names the subject itself in policies.
absl::Status ValidateAttributeKey(absl::string_view key);
// At most 256 bytes of valid UTF-8 (the error does not quote the value).
absl::Status ValidateAttributeValue(absl::string_view value);
// Every key and value, and the count.
absl::Status ValidateAttributes(const Attributes& attributes);

struct CredentialClaims {
  std::string issuer;  // identifier of the issuing authority
  std::string subject;
  Attributes attributes;
  int64_t issued_at = 0, expires_at = 0;  // Unix seconds
};

// An encoded wire::v1::Credential signed by `issuer`'s key now over `claims` (claims.issuer is
// ignored: the issuer is `issuer`), with its key history when it rotated. INVALID_ARGUMENT for an
// invalid subject, attribute, a validity window that is empty, or more than kMaxCredentialBytes.
absl::StatusOr<std::string> IssueCredential(const Identity& issuer, const CredentialClaims& claims);

// The claims of an encoded credential and what was signed, structure checked (canonical body,
// version, sizes, identifiers, attributes, and the issuer's key history if it rotated: that says
// who the issuer is), the credential's signature not.
struct DecodedCredential {
  CredentialClaims claims;
  std::string issuer_public_key;
  KeyHistory issuer_history;
  std::string body, signature;
};
absl::StatusOr<DecodedCredential> DecodeCredential(absl::string_view encoded);

struct VerifyOptions {
  // Identifiers of the authorities whose credentials count.
  const absl::flat_hash_set<std::string>* trusted_issuers = nullptr;
  // The identifier the credential must be about (the channel's authenticated peer).
  absl::string_view subject;
  int64_t now = 0;  // Unix seconds
  int64_t clock_skew = kDefaultClockSkewSeconds;
  // What this node saw of key rotations: a credential signed by a key its issuer rotated away
  // from is refused (KEY_HISTORY_ROLLBACK). Null: not checked.
  KnownKeyHistories* key_histories = nullptr;
};
absl::StatusOr<CredentialClaims> VerifyCredential(absl::string_view encoded,
                                                  const VerifyOptions& options);

// What a peer's presented credentials say, together: every attribute of every credential (an
// attribute that two credentials give different values is dropped: it means nothing for
// sure), and when the first of them expires.
struct PresentedClaims {
  Attributes attributes;
  int64_t expires_at = 0;            // 0: no credential
  std::vector<std::string> issuers;  // one per credential, in order
};
// Verifies each of `credentials` (at most kMaxPresentedCredentials); the first that fails
// fails all, with its reason.
absl::StatusOr<PresentedClaims> VerifyCredentials(std::span<const std::string> credentials,
                                                  const VerifyOptions& options);

}  // namespace veil::identity

#endif  // VEIL_SIDECAR_IDENTITY_CREDENTIAL_H_
