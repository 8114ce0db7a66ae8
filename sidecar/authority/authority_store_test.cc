#include "sidecar/authority/authority_store.h"

#include <fstream>

#include "gtest/gtest.h"
#include "sidecar/authority/authority.h"
#include "sidecar/common/error_reason.h"
#include "tests/support/veild_process.h"

namespace veil::authority {
namespace {

constexpr char kAlice[] = "I0123456789abcdef0123456789abcdef";
constexpr char kMallory[] = "Ifedcba9876543210fedcba9876543210";

TEST(AuthorityStoreTest, MembersPersistAcrossRestarts) {
  veil::testing::TempDir dir;
  {
    auto store = AuthorityStore::Open(dir.path());
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->PutMember(kAlice, {{"role", "alice-app"}}, 100).ok());
    ASSERT_TRUE((*store)->PutMember(kMallory, {{"role", "x"}}, 100).ok());
    ASSERT_TRUE((*store)->RemoveMember(kMallory).ok());
    EXPECT_EQ(ReasonOf((*store)->RemoveMember(kMallory)), reason::kMemberNotFound);
    EXPECT_FALSE((*store)->PutMember("alice", {}, 1).ok());
    EXPECT_EQ(ReasonOf((*store)->PutMember(kAlice, {{"Bad", "x"}}, 1).status()),
              reason::kCredentialInvalid);
  }
  auto again = AuthorityStore::Open(dir.path());
  ASSERT_TRUE(again.ok()) << again.status();
  auto members = (*again)->ListMembers();
  ASSERT_EQ(members.size(), 1u);
  EXPECT_EQ(members[0].identifier, kAlice);
  EXPECT_EQ(members[0].attributes.at("role"), "alice-app");
  EXPECT_EQ(members[0].added_unix_seconds, 100);
}

TEST(AuthorityStoreTest, TicketsAreSingleUseExpireAndCanBeRevoked) {
  veil::testing::TempDir dir;
  auto store = *AuthorityStore::Open(dir.path());
  auto [ticket, secret] = *store->CreateTicket({{"role", "db"}}, 600, 1000);
  EXPECT_EQ(secret.size(), kTicketSecretBytes);
  auto member = store->Enroll(secret, kAlice, 1001);
  ASSERT_TRUE(member.ok()) << member.status();
  EXPECT_EQ(member->attributes.at("role"), "db");
  EXPECT_EQ(member->ticket, ticket.id);
  // The same identity again (its answer was lost): the same membership.
  EXPECT_TRUE(store->Enroll(secret, kAlice, 1002).ok());
  // Anyone else: a replay.
  EXPECT_EQ(ReasonOf(store->Enroll(secret, kMallory, 1002).status()), reason::kTicketUsed);
  EXPECT_EQ(ReasonOf(store->Enroll(std::string(32, 'x'), kMallory, 1002).status()),
            reason::kTicketInvalid);
  EXPECT_EQ(ReasonOf(store->Enroll("short", kMallory, 1002).status()), reason::kTicketInvalid);
  auto [late, late_secret] = *store->CreateTicket({}, 10, 1000);
  EXPECT_EQ(ReasonOf(store->Enroll(late_secret, kMallory, 1010).status()), reason::kTicketExpired);
  auto [revoked, revoked_secret] = *store->CreateTicket({}, 600, 1000);
  ASSERT_TRUE(store->RevokeTicket(revoked.id).ok());
  EXPECT_EQ(ReasonOf(store->Enroll(revoked_secret, kMallory, 1001).status()),
            reason::kTicketRevoked);
  EXPECT_EQ(ReasonOf(store->RevokeTicket("t_0000000000000000")), reason::kTicketNotFound);
  EXPECT_EQ(ReasonOf(store->RevokeTicket("../../etc/passwd")), reason::kTicketNotFound);
  EXPECT_FALSE(store->CreateTicket({}, 0, 1).ok());
  EXPECT_FALSE(store->CreateTicket({}, 31 * 86400, 1).ok());
  // Used and revoked survive a restart; the secret is not in any file.
  auto reopened = *AuthorityStore::Open(dir.path());
  EXPECT_EQ(ReasonOf(reopened->Enroll(secret, kMallory, 1002).status()), reason::kTicketUsed);
  EXPECT_EQ(ReasonOf(reopened->Enroll(revoked_secret, kMallory, 1002).status()),
            reason::kTicketRevoked);
  EXPECT_EQ(reopened->ListTickets().size(), 3u);
  std::ifstream file(dir.path() + "/authority/tickets/" + ticket.id + ".ticket", std::ios::binary);
  std::string contents((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  EXPECT_FALSE(contents.empty());
  EXPECT_EQ(contents.find(secret), std::string::npos);
}

TEST(AuthorityStoreTest, TokensRoundTripAndBadOnesAreRefused) {
  wire::v1::EnrollmentTicket ticket;
  ticket.set_authority(kAlice);
  ticket.set_route("/tcp/127.0.0.1:4000/service/authority");
  ticket.set_secret(std::string(32, 's'));
  std::string token = EncodeTicketToken(ticket);
  EXPECT_EQ(token.rfind("veil-ticket-v1.", 0), 0u);
  auto back = DecodeTicketToken(" " + token + "\n");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->route(), ticket.route());
  EXPECT_EQ(back->secret(), ticket.secret());
  for (std::string bad :
       {std::string(""), std::string("veil-ticket-v1."), std::string("veil-ticket-v1.!!!"),
        token.substr(1), token.substr(0, token.size() - 8), std::string(5000, 'a')}) {
    auto decoded = DecodeTicketToken(bad);
    EXPECT_FALSE(decoded.ok()) << bad;
    EXPECT_EQ(ReasonOf(decoded.status()), reason::kTicketInvalid);
  }
  ticket.set_secret("short");
  EXPECT_FALSE(DecodeTicketToken(EncodeTicketToken(ticket)).ok());
}

}  // namespace
}  // namespace veil::authority
