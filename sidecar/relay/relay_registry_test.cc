#include "sidecar/relay/relay_registry.h"

#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/relay/backoff.h"

namespace veil::relay {
namespace {

using namespace std::chrono_literals;
using Clock = RelayRegistry::Clock;

const std::string kBob = "I00000000000000000000000000000b0b";
const std::string kEve = "I000000000000000000000000000000e5";

RelayRegistry Make(RelayLimits limits = {}, AllowList allow = {}) {
  int n = 0;
  return RelayRegistry(limits, std::move(allow),
                       [n]() mutable { return "r" + std::to_string(n++); });
}

TEST(RelayRegistryTest, RegisterFindAndRandomNames) {
  auto reg = Make();
  Clock::time_point t0{};
  auto bob = reg.Register(kBob, "bob", "_tcp_1", t0);
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ(reg.Find("bob")->connection, "_tcp_1");
  auto random = reg.Register(kBob, "", "_tcp_1", t0);
  ASSERT_TRUE(random.ok());
  EXPECT_EQ(random->name, "r0");
  EXPECT_EQ(reg.List().size(), 2u);
  EXPECT_EQ(reg.Register(kBob, "bad name", "_tcp_1", t0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RelayRegistryTest, OnlyTheOwnerMayReRegisterEvenWhileReserved) {
  auto reg = Make();
  Clock::time_point t0{};
  ASSERT_TRUE(reg.Register(kBob, "bob", "_tcp_1", t0).ok());
  auto squat = reg.Register(kEve, "bob", "_tcp_2", t0);
  EXPECT_EQ(squat.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(squat.status()), "RELAY_NAME_TAKEN");
  // Bob's connection drops: the relay goes, the name stays his for the reservation.
  EXPECT_EQ(reg.DropConnection("_tcp_1", t0), std::vector<std::string>{"bob"});
  EXPECT_FALSE(reg.Find("bob").has_value());
  EXPECT_EQ(reg.Register(kEve, "bob", "_tcp_2", t0 + 10s).status().code(),
            absl::StatusCode::kPermissionDenied);
  auto back = reg.Register(kBob, "bob", "_tcp_3", t0 + 20s);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(reg.Find("bob")->connection, "_tcp_3");
  // After the reservation expires, the name is free.
  reg.DropConnection("_tcp_3", t0 + 30s);
  EXPECT_TRUE(reg.Register(kEve, "bob", "_tcp_2", t0 + 30s + 301s).ok());
}

TEST(RelayRegistryTest, UnregisterAndCheck) {
  auto reg = Make();
  Clock::time_point t0{};
  ASSERT_TRUE(reg.Register(kBob, "bob", "_tcp_1", t0).ok());
  EXPECT_TRUE(reg.Check(kBob, "bob").ok());
  EXPECT_EQ(reg.Check(kEve, "bob").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(reg.Unregister(kEve, "bob").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(reg.Unregister(kBob, "bob").ok());
  EXPECT_EQ(reg.Check(kBob, "bob").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(reg.Register(kEve, "bob", "_tcp_2", t0).ok());  // released at once
}

TEST(RelayRegistryTest, Limits) {
  RelayLimits limits;
  limits.per_connection = 2;
  limits.per_identity = 3;
  auto reg = Make(limits);
  Clock::time_point t0{};
  ASSERT_TRUE(reg.Register(kBob, "a", "_tcp_1", t0).ok());
  ASSERT_TRUE(reg.Register(kBob, "b", "_tcp_1", t0).ok());
  auto third = reg.Register(kBob, "c", "_tcp_1", t0);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("this connection"), std::string::npos);
  ASSERT_TRUE(reg.Register(kBob, "c", "_tcp_2", t0).ok());
  auto fourth = reg.Register(kBob, "d", "_tcp_3", t0);
  EXPECT_EQ(fourth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(fourth.status().message().find("identity"), std::string::npos);
  EXPECT_TRUE(reg.Register(kBob, "a", "_tcp_1", t0).ok());  // re-registering is not a new relay
}

TEST(RelayRegistryTest, AllowList) {
  AllowList allow;
  ASSERT_TRUE(allow.Add(kBob + ":bob").ok());
  ASSERT_TRUE(allow.Add(kEve).ok());
  EXPECT_FALSE(allow.Add("nonsense").ok());
  EXPECT_FALSE(allow.Add(kBob + ":bad name").ok());
  auto reg = Make({}, std::move(allow));
  Clock::time_point t0{};
  EXPECT_TRUE(reg.Register(kBob, "bob", "_tcp_1", t0).ok());
  EXPECT_EQ(ReasonOf(reg.Register(kBob, "other", "_tcp_1", t0).status()), "RELAY_NOT_ALLOWED");
  EXPECT_EQ(ReasonOf(reg.Register(kBob, "", "_tcp_1", t0).status()), "RELAY_NOT_ALLOWED");
  EXPECT_TRUE(reg.Register(kEve, "anything", "_tcp_2", t0).ok());
  EXPECT_TRUE(reg.Register(kEve, "", "_tcp_2", t0).ok());
  EXPECT_EQ(ReasonOf(reg.Register("I0000000000000000000000000000ca70", "x", "_tcp_3", t0).status()),
            "RELAY_NOT_ALLOWED");
}

// Who may register which names, by attribute: the name asked for is relay.name.
TEST(RelayRegistryTest, AllowPolicyByAttribute) {
  AllowList allow;
  ASSERT_TRUE(allow.AddPolicy(R"(subject.role == "db" and relay.name == subject.service)").ok());
  ASSERT_TRUE(allow.AddPolicy(R"(subject.role == "admin")").ok());
  EXPECT_EQ(ReasonOf(allow.AddPolicy("subject.role ==")), reason::kInvalidTrustPolicy);
  auto reg = Make({}, std::move(allow));
  Clock::time_point t0{};
  const identity::Attributes db = {{"role", "db"}, {"service", "orders-db"}};
  EXPECT_TRUE(reg.Register(kBob, "orders-db", "_tcp_1", t0, &db).ok());
  EXPECT_EQ(ReasonOf(reg.Register(kBob, "payments-db", "_tcp_1", t0, &db).status()),
            "RELAY_NOT_ALLOWED");
  // A random name: relay.name is unknown, so the name-bound policy does not admit it.
  EXPECT_EQ(ReasonOf(reg.Register(kBob, "", "_tcp_1", t0, &db).status()), "RELAY_NOT_ALLOWED");
  EXPECT_EQ(ReasonOf(reg.Register(kEve, "orders-db2", "_tcp_2", t0).status()), "RELAY_NOT_ALLOWED");
  const identity::Attributes admin = {{"role", "admin"}};
  EXPECT_TRUE(reg.Register(kEve, "", "_tcp_2", t0, &admin).ok());
  EXPECT_TRUE(reg.Register(kEve, "anything", "_tcp_2", t0, &admin).ok());
  // Ownership still rules: the policy does not let anyone take a name that is someone's.
  EXPECT_EQ(ReasonOf(reg.Register(kEve, "orders-db", "_tcp_2", t0, &admin).status()),
            "RELAY_NAME_TAKEN");
}

TEST(BackoffTest, CappedExponentialWithJitter) {
  double u = 0;
  Backoff b(std::chrono::milliseconds(100), std::chrono::milliseconds(1000), [&u] { return u; });
  u = 0.999;
  EXPECT_NEAR(b.Next().count(), 100, 1);
  EXPECT_NEAR(b.Next().count(), 200, 1);
  EXPECT_NEAR(b.Next().count(), 400, 1);
  EXPECT_NEAR(b.Next().count(), 800, 1);
  EXPECT_NEAR(b.Next().count(), 1000, 1);  // capped
  EXPECT_NEAR(b.Next().count(), 1000, 1);
  u = 0;
  EXPECT_EQ(b.Next().count(), 500);  // jitter: down to half
  b.Reset();
  EXPECT_EQ(b.Next().count(), 50);
  for (int i = 0; i < 100; ++i) b.Next();  // no overflow after many attempts
  EXPECT_EQ(b.Next().count(), 500);
}

}  // namespace
}  // namespace veil::relay
