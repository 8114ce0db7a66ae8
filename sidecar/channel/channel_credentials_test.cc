// Credentials in secure channels, between two sessions in memory: presented in the proofs,
// checked against trusted authorities and the trust policy, refreshed with CREDENTIALS, and
// expiring mid-channel.
#include <memory>

#include "gtest/gtest.h"
#include "sidecar/channel/channel_session.h"
#include "sidecar/common/error_reason.h"

namespace veil::channel {
namespace {

using State = ChannelSession::State;
using Role = ChannelSession::Role;

class ChannelCredentialsTest : public ::testing::Test {
 protected:
  std::shared_ptr<const identity::Identity> authority_ = identity::Identity::Generate("ca", 0);
  std::shared_ptr<const identity::Identity> alice_ = identity::Identity::Generate("alice", 0);
  std::shared_ptr<const identity::Identity> bob_ = identity::Identity::Generate("bob", 0);
  std::unique_ptr<TrustPolicy> alice_app_ = *TrustExpression(R"(subject.role == "alice-app")");
  std::unique_ptr<TrustPolicy> everyone_ = TrustEveryone();
  int64_t now_ = 10'000;

  std::string Credential(const identity::Identity& subject, identity::Attributes attributes,
                         int64_t ttl = 3600, const identity::Identity* issuer = nullptr) {
    auto c = identity::IssueCredential(issuer ? *issuer : *authority_,
                                       {.issuer = "",
                                        .subject = subject.identifier(),
                                        .attributes = std::move(attributes),
                                        .issued_at = now_,
                                        .expires_at = now_ + ttl});
    EXPECT_TRUE(c.ok()) << c.status();
    return *c;
  }
  SessionOptions Options(std::vector<std::string> credentials = {}) {
    SessionOptions o;
    o.credentials = std::make_shared<const std::vector<std::string>>(std::move(credentials));
    o.trusted_authorities = std::make_shared<const absl::flat_hash_set<std::string>>(
        absl::flat_hash_set<std::string>{authority_->identifier()});
    o.unix_now = [this] { return now_; };
    return o;
  }
  // Runs the handshake; returns the responder's error at HS3 (OK when established).
  absl::Status Handshake(ChannelSession& i, ChannelSession& r) {
    auto s2 = r.OnMessage(*i.Start());
    if (!s2.error.ok()) return s2.error;
    auto s3 = i.OnMessage(s2.reply);
    if (!s3.error.ok()) return s3.error;
    auto s4 = r.OnMessage(s3.reply);
    if (!s4.error.ok()) {
      last_refusal_ = i.OnMessage(s4.reply).error;  // the ERR back to the initiator
      return s4.error;
    }
    auto s5 = i.OnMessage(s4.reply);
    EXPECT_TRUE(s5.established);
    return s5.error;
  }
  absl::Status last_refusal_;
};

TEST_F(ChannelCredentialsTest, TheListenerAdmitsByAttribute) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_,
                   Options({Credential(*alice_, {{"role", "alice-app"}})}));
  ChannelSession r(Role::kResponder, bob_, *alice_app_, Options());
  ASSERT_TRUE(Handshake(i, r).ok());
  ASSERT_NE(r.remote_attributes(), nullptr);
  EXPECT_EQ(r.remote_attributes()->at("role"), "alice-app");
  EXPECT_EQ(r.remote_credentials_expire_at(), now_ + 3600);
  EXPECT_EQ(i.remote_attributes(), nullptr);  // Bob presented none
}

TEST_F(ChannelCredentialsTest, EachBadCredentialIsRefusedWithItsReason) {
  auto other = identity::Identity::Generate("other-ca", 0);
  struct Case {
    const char* what;
    std::vector<std::string> credentials;
    absl::string_view reason;
  };
  std::string forged = Credential(*alice_, {{"role", "alice-app"}});
  now_ -= 7200;
  std::string expired = Credential(*alice_, {{"role", "alice-app"}});  // an hour ago
  now_ += 7200;
  forged[forged.size() - 1] ^= 1;  // the signature's last byte
  std::vector<Case> cases = {
      {"none", {}, reason::kCredentialRequired},
      {"wrong attribute", {Credential(*alice_, {{"role", "web"}})}, reason::kUntrustedIdentity},
      {"expired", {expired}, reason::kCredentialExpired},
      {"untrusted authority",
       {Credential(*alice_, {{"role", "alice-app"}}, 3600, other.get())},
       reason::kCredentialUntrustedIssuer},
      {"forged", {forged}, reason::kCredentialBadSignature},
      {"someone else's",
       {Credential(*bob_, {{"role", "alice-app"}})},
       reason::kCredentialWrongSubject},
      {"garbage", {"not a credential"}, reason::kCredentialInvalid},
      {"too many", std::vector<std::string>(5, Credential(*alice_, {{"role", "alice-app"}})),
       reason::kCredentialInvalid},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ChannelSession i(Role::kInitiator, alice_, *everyone_, Options(c.credentials));
    ChannelSession r(Role::kResponder, bob_, *alice_app_, Options());
    absl::Status refused = Handshake(i, r);
    EXPECT_EQ(ReasonOf(refused), c.reason) << refused;
    EXPECT_EQ(r.state(), State::kFailed);
    EXPECT_EQ(i.state(), State::kFailed);
    EXPECT_EQ(ReasonOf(last_refusal_), reason::kPeerRefusedHandshake);
    if (c.reason != reason::kUntrustedIdentity) {
      EXPECT_NE(last_refusal_.message().find(c.reason), std::string::npos) << last_refusal_;
    }
    // The initiator never learns the policy.
    EXPECT_EQ(last_refusal_.message().find("alice-app\""), std::string::npos) << last_refusal_;
  }
}

TEST_F(ChannelCredentialsTest, ExpiredCredentialWithinTheSkewStillCounts) {
  std::string c = Credential(*alice_, {{"role", "alice-app"}}, 10);
  now_ += 10 + 59;
  ChannelSession i(Role::kInitiator, alice_, *everyone_, Options({c}));
  ChannelSession r(Role::kResponder, bob_, *alice_app_, Options());
  EXPECT_TRUE(Handshake(i, r).ok());
  now_ += 1;
  ChannelSession i2(Role::kInitiator, alice_, *everyone_, Options({c}));
  ChannelSession r2(Role::kResponder, bob_, *alice_app_, Options());
  EXPECT_EQ(ReasonOf(Handshake(i2, r2)), reason::kCredentialExpired);
}

TEST_F(ChannelCredentialsTest, ANodeTrustingNoAuthorityIgnoresCredentials) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_,
                   Options({Credential(*alice_, {{"role", "x"}}, 3600,
                                       identity::Identity::Generate("any", 0).get())}));
  SessionOptions plain;
  ChannelSession r(Role::kResponder, bob_, *everyone_, plain);
  EXPECT_TRUE(Handshake(i, r).ok());
  EXPECT_EQ(r.remote_attributes(), nullptr);
  // And an attribute policy then admits no one: there are no attributes to read.
  ChannelSession i2(Role::kInitiator, alice_, *everyone_,
                    Options({Credential(*alice_, {{"role", "alice-app"}})}));
  ChannelSession r2(Role::kResponder, bob_, *alice_app_, plain);
  EXPECT_EQ(ReasonOf(Handshake(i2, r2)), reason::kCredentialRequired);
}

TEST_F(ChannelCredentialsTest, RefreshReplacesAttributesAndExpiryClosesTheChannel) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_,
                   Options({Credential(*alice_, {{"role", "alice-app"}}, 100)}));
  ChannelSession r(Role::kResponder, bob_, *alice_app_, Options());
  ASSERT_TRUE(Handshake(i, r).ok());
  EXPECT_EQ(r.credentials_deadline(), now_ + 100 + identity::kDefaultClockSkewSeconds);
  // Refreshed before expiry, several times over: the channel stays.
  for (int round = 0; round < 3; ++round) {
    now_ += 80;
    EXPECT_TRUE(r.CheckExpiry().ok());
    std::vector<std::string> fresh = {Credential(*alice_, {{"role", "alice-app"}}, 100)};
    auto step = r.OnMessage(i.PresentCredentials(fresh));
    ASSERT_TRUE(step.error.ok()) << step.error;
    EXPECT_TRUE(step.credentials_refreshed);
    EXPECT_EQ(r.remote_credentials_expire_at(), now_ + 100);
  }
  now_ += 100 + identity::kDefaultClockSkewSeconds - 1;
  EXPECT_TRUE(r.CheckExpiry().ok());
  EXPECT_EQ(r.state(), State::kEstablished);
  now_ += 1;
  absl::Status expired = r.CheckExpiry();
  EXPECT_EQ(ReasonOf(expired), reason::kCredentialExpired);
  EXPECT_EQ(r.remote_attributes(), nullptr);
  // Closing tells the far end.
  EXPECT_EQ(i.OnMessage(r.Close()).closed, true);
}

TEST_F(ChannelCredentialsTest, ExpiryKeepsAChannelThePolicyAdmitsWithoutAttributes) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_,
                   Options({Credential(*alice_, {{"role", "alice-app"}}, 100)}));
  ChannelSession r(Role::kResponder, bob_, *everyone_, Options());
  ASSERT_TRUE(Handshake(i, r).ok());
  ASSERT_NE(r.remote_attributes(), nullptr);
  now_ += 1000;
  EXPECT_TRUE(r.CheckExpiry().ok());
  EXPECT_EQ(r.state(), State::kEstablished);
  EXPECT_EQ(r.remote_attributes(), nullptr);  // no stale attributes
}

TEST_F(ChannelCredentialsTest, ARefreshThePolicyRefusesEndsTheChannel) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_,
                   Options({Credential(*alice_, {{"role", "alice-app"}})}));
  ChannelSession r(Role::kResponder, bob_, *alice_app_, Options());
  ASSERT_TRUE(Handshake(i, r).ok());
  std::vector<std::string> demoted = {Credential(*alice_, {{"role", "web"}})};
  auto step = r.OnMessage(i.PresentCredentials(demoted));
  EXPECT_EQ(ReasonOf(step.error), reason::kUntrustedIdentity);
  EXPECT_EQ(r.state(), State::kFailed);
  EXPECT_TRUE(i.OnMessage(step.reply).closed);  // Alice hears the channel closed
  // And one that fails verification (another subject's).
  ChannelSession i2(Role::kInitiator, alice_, *everyone_,
                    Options({Credential(*alice_, {{"role", "alice-app"}})}));
  ChannelSession r2(Role::kResponder, bob_, *alice_app_, Options());
  ASSERT_TRUE(Handshake(i2, r2).ok());
  std::vector<std::string> stolen = {Credential(*bob_, {{"role", "alice-app"}})};
  auto step2 = r2.OnMessage(i2.PresentCredentials(stolen));
  EXPECT_EQ(ReasonOf(step2.error), reason::kCredentialWrongSubject);
  EXPECT_EQ(r2.state(), State::kFailed);
}

TEST_F(ChannelCredentialsTest, BothSidesCheckEachOther) {
  auto bob_db = *TrustExpression(R"(subject.role == "db")");
  ChannelSession i(Role::kInitiator, alice_, *bob_db,
                   Options({Credential(*alice_, {{"role", "alice-app"}})}));
  ChannelSession r(Role::kResponder, bob_, *alice_app_,
                   Options({Credential(*bob_, {{"role", "db"}})}));
  ASSERT_TRUE(Handshake(i, r).ok());
  EXPECT_EQ(i.remote_attributes()->at("role"), "db");
  ChannelSession i2(Role::kInitiator, alice_, *bob_db,
                    Options({Credential(*alice_, {{"role", "alice-app"}})}));
  ChannelSession r2(Role::kResponder, bob_, *alice_app_,
                    Options({Credential(*bob_, {{"role", "web"}})}));
  auto s2 = r2.OnMessage(*i2.Start());
  auto s3 = i2.OnMessage(s2.reply);  // Alice refuses Bob at HS2
  EXPECT_EQ(ReasonOf(s3.error), reason::kUntrustedIdentity);
  EXPECT_EQ(i2.state(), State::kFailed);
}

}  // namespace
}  // namespace veil::channel
