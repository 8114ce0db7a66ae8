#include "sidecar/identity/credential.h"

#include <cstdlib>
#include <fstream>
#include <iterator>

#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "veil/wire/v1/credential.pb.h"

namespace veil::identity {
namespace {

class CredentialTest : public ::testing::Test {
 protected:
  std::shared_ptr<const Identity> authority_ = Identity::Generate("authority", 0);
  std::shared_ptr<const Identity> alice_ = Identity::Generate("alice", 0);
  absl::flat_hash_set<std::string> trusted_{authority_->identifier()};

  CredentialClaims Claims() const {
    return {.issuer = "",
            .subject = alice_->identifier(),
            .attributes = {{"env", "prod"}, {"role", "db-client"}},
            .issued_at = 1000,
            .expires_at = 4600};
  }
  VerifyOptions Options(int64_t now = 2000) const {
    return {.trusted_issuers = &trusted_, .subject = alice_->identifier(), .now = now};
  }
  // A credential over `body` as given, signed properly by the authority.
  std::string SignedRaw(const std::string& body) const {
    wire::v1::Credential c;
    c.set_body(body);
    c.set_signature(authority_->Sign(absl::StrCat(kCredentialSignatureContext, body)));
    return c.SerializeAsString();
  }
  wire::v1::CredentialBody BodyOf(const std::string& encoded) const {
    wire::v1::Credential c;
    EXPECT_TRUE(c.ParseFromString(encoded));
    wire::v1::CredentialBody body;
    EXPECT_TRUE(body.ParseFromString(c.body()));
    return body;
  }
};

TEST_F(CredentialTest, IssuedCredentialVerifies) {
  auto encoded = IssueCredential(*authority_, Claims());
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  auto claims = VerifyCredential(*encoded, Options());
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(claims->issuer, authority_->identifier());
  EXPECT_EQ(claims->subject, alice_->identifier());
  EXPECT_EQ(claims->attributes, Claims().attributes);
  EXPECT_EQ(claims->issued_at, 1000);
  EXPECT_EQ(claims->expires_at, 4600);
  // Issuing is deterministic: the same claims, the same bytes (Ed25519 is too).
  EXPECT_EQ(*encoded, *IssueCredential(*authority_, Claims()));
}

TEST_F(CredentialTest, ValidityWindowWithClockSkew) {
  auto encoded = *IssueCredential(*authority_, Claims());
  EXPECT_TRUE(VerifyCredential(encoded, Options(4600 + 59)).ok());  // within the skew
  absl::Status expired = VerifyCredential(encoded, Options(4600 + 60)).status();
  EXPECT_EQ(expired.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(expired), reason::kCredentialExpired);
  EXPECT_TRUE(VerifyCredential(encoded, Options(1000 - 60)).ok());
  absl::Status early = VerifyCredential(encoded, Options(1000 - 61)).status();
  EXPECT_EQ(ReasonOf(early), reason::kCredentialNotYetValid);
  VerifyOptions strict = Options(4600);
  strict.clock_skew = 0;
  EXPECT_EQ(ReasonOf(VerifyCredential(encoded, strict).status()), reason::kCredentialExpired);
}

TEST_F(CredentialTest, UntrustedIssuerIsRefused) {
  auto other = Identity::Generate("other", 0);
  auto encoded = *IssueCredential(*other, Claims());
  absl::Status s = VerifyCredential(encoded, Options()).status();
  EXPECT_EQ(ReasonOf(s), reason::kCredentialUntrustedIssuer);
  VerifyOptions none = Options();
  none.trusted_issuers = nullptr;
  EXPECT_EQ(ReasonOf(VerifyCredential(*IssueCredential(*authority_, Claims()), none).status()),
            reason::kCredentialUntrustedIssuer);
}

TEST_F(CredentialTest, SomeoneElsesCredentialIsRefused) {
  auto encoded = *IssueCredential(*authority_, Claims());
  VerifyOptions as_bob = Options();
  auto bob = Identity::Generate("bob", 0);
  as_bob.subject = bob->identifier();
  absl::Status s = VerifyCredential(encoded, as_bob).status();
  EXPECT_EQ(ReasonOf(s), reason::kCredentialWrongSubject);
}

TEST_F(CredentialTest, ForgedOrAlteredCredentialIsRefused) {
  auto encoded = *IssueCredential(*authority_, Claims());
  // An attribute changed after signing.
  wire::v1::Credential c;
  ASSERT_TRUE(c.ParseFromString(encoded));
  wire::v1::CredentialBody body = BodyOf(encoded);
  body.mutable_attributes(1)->set_value("admin");
  c.set_body(body.SerializeAsString());
  absl::Status altered = VerifyCredential(c.SerializeAsString(), Options()).status();
  EXPECT_EQ(altered.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ReasonOf(altered), reason::kCredentialBadSignature);
  // Signed by someone else, claiming the authority's key.
  auto mallory = Identity::Generate("mallory", 0);
  c.set_signature(mallory->Sign(absl::StrCat(kCredentialSignatureContext, c.body())));
  EXPECT_EQ(ReasonOf(VerifyCredential(c.SerializeAsString(), Options()).status()),
            reason::kCredentialBadSignature);
  // A signature without the context (what a signing oracle for other messages would give).
  c.set_signature(authority_->Sign(c.body()));
  EXPECT_EQ(ReasonOf(VerifyCredential(c.SerializeAsString(), Options()).status()),
            reason::kCredentialBadSignature);
}

// Verified signatures are remembered (a holder presents the same credential in every channel);
// what was remembered never vouches for other bytes, and time and subject are checked anew.
TEST_F(CredentialTest, ARememberedSignatureVouchesOnlyForItsOwnBytes) {
  auto encoded = *IssueCredential(*authority_, Claims());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(VerifyCredential(encoded, Options()).ok());
  EXPECT_EQ(ReasonOf(VerifyCredential(encoded, Options(9999)).status()),
            reason::kCredentialExpired);
  VerifyOptions as_bob = Options();
  auto bob = Identity::Generate("bob", 0);
  as_bob.subject = bob->identifier();
  EXPECT_EQ(ReasonOf(VerifyCredential(encoded, as_bob).status()), reason::kCredentialWrongSubject);
  wire::v1::Credential c;
  ASSERT_TRUE(c.ParseFromString(encoded));
  std::string signature = c.signature();
  signature[0] ^= 1;
  c.set_signature(signature);
  EXPECT_EQ(ReasonOf(VerifyCredential(c.SerializeAsString(), Options()).status()),
            reason::kCredentialBadSignature);
}

TEST_F(CredentialTest, NonCanonicalBodiesAreRefusedEvenWhenSigned) {
  auto encoded = *IssueCredential(*authority_, Claims());
  wire::v1::CredentialBody body = BodyOf(encoded);
  auto refused = [&](const std::string& raw) {
    absl::Status s = VerifyCredential(SignedRaw(raw), Options()).status();
    EXPECT_EQ(ReasonOf(s), reason::kCredentialInvalid) << s;
    return std::string(s.message());
  };
  // Attributes out of order.
  wire::v1::CredentialBody swapped = body;
  swapped.mutable_attributes()->SwapElements(0, 1);
  refused(swapped.SerializeAsString());
  // A key twice.
  wire::v1::CredentialBody twice = body;
  *twice.add_attributes() = body.attributes(1);
  refused(twice.SerializeAsString());
  // An unknown field.
  std::string extra = body.SerializeAsString();
  extra.append("\xF8\x01\x01", 3);  // field 31, varint 1
  refused(extra);
  // A field repeated (the parser keeps the last; the encoding is not canonical).
  std::string repeated = body.SerializeAsString();
  repeated.append("\x08\x01", 2);  // version = 1 again
  refused(repeated);
  // Another version.
  wire::v1::CredentialBody v2 = body;
  v2.set_version(2);
  EXPECT_NE(refused(v2.SerializeAsString()).find("version 2"), std::string::npos);
  // No issuer key, a subject that is not an identifier, an empty window, a bad key or value.
  wire::v1::CredentialBody no_key = body;
  no_key.clear_issuer_public_key();
  refused(no_key.SerializeAsString());
  wire::v1::CredentialBody subject = body;
  subject.set_subject("alice");
  refused(subject.SerializeAsString());
  wire::v1::CredentialBody window = body;
  window.set_expires_at(body.issued_at());
  refused(window.SerializeAsString());
  wire::v1::CredentialBody key = body;
  key.mutable_attributes(0)->set_key("Env");
  refused(key.SerializeAsString());
  wire::v1::CredentialBody utf8 = body;
  utf8.mutable_attributes(0)->set_value("\xC0\xAF");
  refused(utf8.SerializeAsString());
  wire::v1::CredentialBody identifier = body;
  identifier.mutable_attributes(0)->set_key("identifier");
  refused(identifier.SerializeAsString());
  // Not a credential at all; too big; a short signature.
  EXPECT_EQ(ReasonOf(VerifyCredential("garbage\xFF", Options()).status()),
            reason::kCredentialInvalid);
  EXPECT_EQ(
      ReasonOf(VerifyCredential(std::string(kMaxCredentialBytes + 1, 'x'), Options()).status()),
      reason::kCredentialInvalid);
  wire::v1::Credential shortsig;
  ASSERT_TRUE(shortsig.ParseFromString(encoded));
  shortsig.mutable_signature()->resize(10);
  EXPECT_EQ(ReasonOf(VerifyCredential(shortsig.SerializeAsString(), Options()).status()),
            reason::kCredentialInvalid);
}

TEST_F(CredentialTest, IssuingChecksTheClaims) {
  CredentialClaims claims = Claims();
  claims.subject = "nobody";
  EXPECT_FALSE(IssueCredential(*authority_, claims).ok());
  claims = Claims();
  claims.attributes["Bad Key"] = "x";
  EXPECT_EQ(ReasonOf(IssueCredential(*authority_, claims).status()), reason::kCredentialInvalid);
  claims = Claims();
  claims.attributes["big"] = std::string(kMaxAttributeValueLength + 1, 'v');
  absl::Status big = IssueCredential(*authority_, claims).status();
  EXPECT_EQ(ReasonOf(big), reason::kCredentialInvalid);
  EXPECT_EQ(big.message().find("vvvv"), std::string::npos);  // values are never quoted
  claims = Claims();
  claims.expires_at = claims.issued_at;
  EXPECT_FALSE(IssueCredential(*authority_, claims).ok());
  claims = Claims();
  for (size_t i = 0; i <= kMaxCredentialAttributes; ++i)
    claims.attributes[absl::StrCat("k", i)] = "";
  EXPECT_FALSE(IssueCredential(*authority_, claims).ok());
  // The largest allowed credential fits the decoder's limit.
  claims = Claims();
  claims.attributes.clear();
  for (size_t i = 0; claims.attributes.size() < kMaxCredentialAttributes; ++i) {
    claims.attributes[absl::StrCat("k", std::string(kMaxAttributeKeyLength - 5, 'x'), i + 1000)] =
        std::string(kMaxAttributeValueLength, 'v');
  }
  auto largest = IssueCredential(*authority_, claims);
  ASSERT_TRUE(largest.ok()) << largest.status();
  EXPECT_TRUE(VerifyCredential(*largest, Options()).ok());
}

// The fuzz seed was encoded and signed by an independent encoder (Python's `cryptography`, by
// hand from the field numbers in docs/protocol.md): this decoder agrees with it, canonical form
// included.
TEST(CredentialVectorTest, AnIndependentlyEncodedCredentialVerifies) {
  const char* root = std::getenv("VEIL_SOURCE_DIR");
  std::ifstream file(std::string(root && *root ? root : VEIL_DEFAULT_SOURCE_DIR) +
                         "/tests/fuzz/corpus/credential_fuzz/valid",
                     std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(bytes.empty());
  auto decoded = DecodeCredential(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->claims.attributes.at("role"), "db-client");
  absl::flat_hash_set<std::string> trusted = {decoded->claims.issuer};
  auto verified = VerifyCredential(
      bytes, {.trusted_issuers = &trusted, .subject = decoded->claims.subject, .now = 2000});
  EXPECT_TRUE(verified.ok()) << verified.status();
}

}  // namespace
}  // namespace veil::identity
