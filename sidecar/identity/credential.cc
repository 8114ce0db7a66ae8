#include "sidecar/identity/credential.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/mutex.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/common/utf8.h"
#include "sidecar/identity/canonical.h"
#include "sidecar/identity/identifier.h"
#include "sidecar/identity/verified_signatures.h"
#include "sidecar/vault/crypto.h"
#include "veil/wire/v1/credential.pb.h"

namespace veil::identity {
namespace {

absl::Status Invalid(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                         absl::StrCat("invalid credential: ", why), reason::kCredentialInvalid);
}

// The canonical body: what an issuer signs, and what a verifier requires the signed bytes to be.
std::string EncodeBody(absl::string_view issuer_public_key, absl::string_view issuer_key_history,
                       const CredentialClaims& claims) {
  wire::v1::CredentialBody body;
  body.set_version(kCredentialVersion);
  body.set_issuer_public_key(std::string(issuer_public_key));
  body.set_subject(claims.subject);
  for (const auto& [key, value] : claims.attributes) {  // sorted: a std::map
    auto* attribute = body.add_attributes();
    attribute->set_key(key);
    attribute->set_value(value);
  }
  body.set_issued_at(claims.issued_at);
  body.set_expires_at(claims.expires_at);
  body.set_issuer_key_history(std::string(issuer_key_history));
  return CanonicalEncoding(body);
}

std::string SignedMessage(absl::string_view body) {
  return absl::StrCat(kCredentialSignatureContext, body);
}

}  // namespace

absl::Status ValidateAttributeKey(absl::string_view key) {
  bool ok = !key.empty() && key.size() <= kMaxAttributeKeyLength && absl::ascii_islower(key[0]);
  for (char c : key) {
    ok = ok &&
         (absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' || c == '.' || c == '-');
  }
  if (ok && key == "identifier") {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           "\"identifier\" is not an attribute key: policies use it for the "
                           "subject's identifier",
                           reason::kCredentialInvalid);
  }
  if (ok) return absl::OkStatus();
  return ErrorWithReason(
      absl::StatusCode::kInvalidArgument,
      absl::StrCat("invalid attribute key ", QuoteInput(key, kMaxAttributeKeyLength), ": use 1 to ",
                   kMaxAttributeKeyLength,
                   " characters of a-z, 0-9, '_', '.' and '-', starting with a letter"),
      reason::kCredentialInvalid);
}

absl::Status ValidateAttributeValue(absl::string_view value) {
  if (value.size() > kMaxAttributeValueLength) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           absl::StrCat("an attribute value is ", value.size(),
                                        " bytes; the most is ", kMaxAttributeValueLength),
                           reason::kCredentialInvalid);
  }
  if (!IsValidUtf8(value)) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           "an attribute value is not valid UTF-8", reason::kCredentialInvalid);
  }
  return absl::OkStatus();
}

absl::Status ValidateAttributes(const Attributes& attributes) {
  if (attributes.size() > kMaxCredentialAttributes) {
    return ErrorWithReason(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat(attributes.size(), " attributes; the most is ", kMaxCredentialAttributes),
        reason::kCredentialInvalid);
  }
  for (const auto& [key, value] : attributes) {
    if (absl::Status s = ValidateAttributeKey(key); !s.ok()) return s;
    if (absl::Status s = ValidateAttributeValue(value); !s.ok()) {
      return WithReason(
          absl::Status(s.code(), absl::StrCat("attribute \"", key, "\": ", s.message())),
          reason::kCredentialInvalid);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> IssueCredential(const Identity& issuer,
                                            const CredentialClaims& claims) {
  if (absl::Status s = ValidateIdentifier(claims.subject); !s.ok()) return s;
  if (absl::Status s = ValidateAttributes(claims.attributes); !s.ok()) return s;
  if (claims.expires_at <= claims.issued_at) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           "a credential must expire after it is issued",
                           reason::kCredentialInvalid);
  }
  std::shared_ptr<const IdentityKeys> keys = issuer.keys();
  wire::v1::Credential credential;
  credential.set_body(EncodeBody(keys->public_key(), keys->history().encoded, claims));
  credential.set_signature(keys->Sign(SignedMessage(credential.body())));
  std::string encoded = CanonicalEncoding(credential);
  if (encoded.size() > kMaxCredentialBytes) {
    return ErrorWithReason(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("the credential would be ", encoded.size(), " bytes; the most is ",
                     kMaxCredentialBytes, " (fewer or shorter attributes)"),
        reason::kCredentialInvalid);
  }
  return encoded;
}

absl::StatusOr<DecodedCredential> DecodeCredential(absl::string_view encoded) {
  if (encoded.size() > kMaxCredentialBytes) {
    return Invalid(absl::StrCat(encoded.size(), " bytes; the most is ", kMaxCredentialBytes));
  }
  wire::v1::Credential credential;
  if (!credential.ParseFromArray(encoded.data(), static_cast<int>(encoded.size()))) {
    return Invalid("not a Credential");
  }
  if (credential.signature().size() != vault::kEd25519SignatureBytes) {
    return Invalid("the signature is not 64 bytes");
  }
  wire::v1::CredentialBody body;
  if (!body.ParseFromString(credential.body())) return Invalid("the body is not a CredentialBody");
  if (body.version() != kCredentialVersion) {
    return Invalid(
        absl::StrCat("version ", body.version(), "; this node knows version ", kCredentialVersion));
  }
  if (body.issuer_public_key().size() != vault::kEd25519PublicBytes) {
    return Invalid("the issuer key is not 32 bytes");
  }
  if (!ValidateIdentifier(body.subject()).ok()) return Invalid("the subject is not an identifier");
  if (body.expires_at() <= body.issued_at()) return Invalid("it expires before it is issued");
  if (body.attributes_size() > static_cast<int>(kMaxCredentialAttributes)) {
    return Invalid(absl::StrCat(body.attributes_size(), " attributes; the most is ",
                                kMaxCredentialAttributes));
  }
  DecodedCredential out;
  const std::string* previous = nullptr;
  for (const auto& attribute : body.attributes()) {
    if (previous != nullptr && !(*previous < attribute.key())) {
      return Invalid("the attributes are not sorted by key, or a key repeats");
    }
    if (absl::Status s = ValidateAttributeKey(attribute.key()); !s.ok()) return s;
    if (absl::Status s = ValidateAttributeValue(attribute.value()); !s.ok()) return s;
    out.claims.attributes.emplace_hint(out.claims.attributes.end(), attribute.key(),
                                       attribute.value());
    previous = &attribute.key();
  }
  out.issuer_public_key = body.issuer_public_key();
  // Who the issuer is: the identity its key history (if it rotated) ties the key to.
  auto issuer_history = KeyHistoryOf(out.issuer_public_key, body.issuer_key_history());
  if (!issuer_history.ok()) {
    return Invalid(absl::StrCat("the issuer's ", issuer_history.status().message()));
  }
  out.issuer_history = *std::move(issuer_history);
  out.claims.issuer = out.issuer_history.identifier;
  out.claims.subject = body.subject();
  out.claims.issued_at = body.issued_at();
  out.claims.expires_at = body.expires_at();
  // One meaning, one encoding: the body must be what this side would have written (so it holds
  // nothing this version does not know, no field twice, nothing out of order).
  if (EncodeBody(out.issuer_public_key, body.issuer_key_history(), out.claims) !=
      credential.body()) {
    return Invalid("the body is not canonical");
  }
  out.body = std::move(*credential.mutable_body());
  out.signature = std::move(*credential.mutable_signature());
  return out;
}

absl::StatusOr<CredentialClaims> VerifyCredential(absl::string_view encoded,
                                                  const VerifyOptions& options) {
  auto decoded = DecodeCredential(encoded);
  if (!decoded.ok()) return decoded.status();
  CredentialClaims& claims = decoded->claims;
  if (options.trusted_issuers == nullptr || !options.trusted_issuers->contains(claims.issuer)) {
    return ErrorWithReason(
        absl::StatusCode::kPermissionDenied,
        absl::StrCat("the credential's issuer ", claims.issuer, " is not a trusted authority"),
        reason::kCredentialUntrustedIssuer);
  }
  if (!VerifySignatureCached(decoded->issuer_public_key, SignedMessage(decoded->body),
                             decoded->signature)) {
    return ErrorWithReason(absl::StatusCode::kUnauthenticated,
                           "the credential's signature does not verify",
                           reason::kCredentialBadSignature);
  }
  if (options.key_histories != nullptr) {
    // An authority that rotated its key away is not spoken for by the old key any more.
    RETURN_IF_ERROR(options.key_histories->Remember(decoded->issuer_history, options.now));
  }
  if (claims.subject != options.subject) {
    return ErrorWithReason(
        absl::StatusCode::kPermissionDenied,
        absl::StrCat("the credential is about ", claims.subject, ", not ", options.subject),
        reason::kCredentialWrongSubject);
  }
  if (options.now >= claims.expires_at + options.clock_skew) {
    return ErrorWithReason(
        absl::StatusCode::kPermissionDenied,
        absl::StrCat("the credential expired ", options.now - claims.expires_at, " s ago"),
        reason::kCredentialExpired);
  }
  if (options.now + options.clock_skew < claims.issued_at) {
    return ErrorWithReason(
        absl::StatusCode::kPermissionDenied,
        absl::StrCat("the credential is valid only from ", claims.issued_at - options.now,
                     " s from now (are the clocks apart?)"),
        reason::kCredentialNotYetValid);
  }
  return std::move(claims);
}

absl::StatusOr<PresentedClaims> VerifyCredentials(std::span<const std::string> credentials,
                                                  const VerifyOptions& options) {
  if (credentials.size() > kMaxPresentedCredentials) {
    return Invalid(absl::StrCat(credentials.size(), " credentials presented; the most is ",
                                kMaxPresentedCredentials));
  }
  PresentedClaims out;
  absl::flat_hash_set<std::string> conflicting;
  for (const std::string& encoded : credentials) {
    auto claims = VerifyCredential(encoded, options);
    if (!claims.ok()) return claims.status();
    for (auto& [key, value] : claims->attributes) {
      auto [it, added] = out.attributes.try_emplace(key, value);
      if (!added && it->second != value) conflicting.insert(key);
    }
    out.expires_at =
        out.expires_at == 0 ? claims->expires_at : std::min(out.expires_at, claims->expires_at);
    out.issuers.push_back(std::move(claims->issuer));
  }
  for (const std::string& key : conflicting) out.attributes.erase(key);
  return out;
}

}  // namespace veil::identity
