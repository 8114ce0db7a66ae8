#include "sidecar/identity/credential.h"

#include <algorithm>
#include <deque>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/mutex.h"
#include "sidecar/common/utf8.h"
#include "sidecar/identity/identifier.h"
#include "sidecar/vault/crypto.h"
#include "veil/wire/v1/credential.pb.h"

namespace veil::identity {
namespace {

absl::Status Invalid(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                         absl::StrCat("invalid credential: ", why), reason::kCredentialInvalid);
}

std::string Deterministic(const google::protobuf::MessageLite& message) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  message.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

// The canonical body: what an issuer signs, and what a verifier requires the signed bytes to be.
std::string EncodeBody(absl::string_view issuer_public_key, const CredentialClaims& claims) {
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
  return Deterministic(body);
}

std::string SignedMessage(absl::string_view body) {
  return absl::StrCat(kCredentialSignatureContext, body);
}

// Signatures already verified, by SHA-256 of (issuer key, body, signature): the same
// credential comes in every channel its holder opens (a thousand channels, one verification).
// Only the signature's outcome is kept; issuer trust, subject and time are checked every time.
// Bounded: the oldest go first.
class VerifiedSignatures {
 public:
  static VerifiedSignatures& Instance() {
    static auto* instance = new VerifiedSignatures();
    return *instance;
  }
  bool Contains(const std::string& key) {
    veil::MutexLock lock(&mu_);
    return set_.contains(key);
  }
  void Add(std::string key) {
    veil::MutexLock lock(&mu_);
    if (!set_.insert(key).second) return;
    order_.push_back(std::move(key));
    if (order_.size() > kMaxEntries) {
      set_.erase(order_.front());
      order_.pop_front();
    }
  }

 private:
  static constexpr size_t kMaxEntries = 4096;
  veil::Mutex mu_;
  absl::flat_hash_set<std::string> set_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);
};

std::string SignatureKey(const DecodedCredential& decoded) {
  auto digest =
      vault::Sha256(absl::StrCat(decoded.issuer_public_key, decoded.signature, decoded.body));
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
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
  wire::v1::Credential credential;
  credential.set_body(EncodeBody(issuer.public_key(), claims));
  credential.set_signature(issuer.Sign(SignedMessage(credential.body())));
  return Deterministic(credential);
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
  out.claims.issuer = IdentifierOf(out.issuer_public_key);
  out.claims.subject = body.subject();
  out.claims.issued_at = body.issued_at();
  out.claims.expires_at = body.expires_at();
  // One meaning, one encoding: the body must be what this side would have written (so it holds
  // nothing this version does not know, no field twice, nothing out of order).
  if (EncodeBody(out.issuer_public_key, out.claims) != credential.body()) {
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
  std::string key = SignatureKey(*decoded);
  if (!VerifiedSignatures::Instance().Contains(key)) {
    if (!vault::Ed25519Verify(decoded->issuer_public_key, SignedMessage(decoded->body),
                              decoded->signature)
             .ok()) {
      return ErrorWithReason(absl::StatusCode::kUnauthenticated,
                             "the credential's signature does not verify",
                             reason::kCredentialBadSignature);
    }
    VerifiedSignatures::Instance().Add(std::move(key));
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
