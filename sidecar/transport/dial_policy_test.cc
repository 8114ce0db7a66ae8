#include "sidecar/transport/dial_policy.h"

#include "gtest/gtest.h"

namespace veil::transport {
namespace {

TEST(DialAllowListTest, EmptyAllowsNothing) {
  DialAllowList list;
  EXPECT_TRUE(list.empty());
  EXPECT_FALSE(list.Allows("127.0.0.1", 4000));
  EXPECT_FALSE(list.Allows("example.com", 80));
}

TEST(DialAllowListTest, StarAllowsEverything) {
  DialAllowList list;
  ASSERT_TRUE(list.Add("*").ok());
  EXPECT_TRUE(list.Allows("10.1.2.3", 22));
  EXPECT_TRUE(list.Allows("db.internal", 5432));
}

TEST(DialAllowListTest, HostAndPort) {
  DialAllowList list;
  ASSERT_TRUE(list.Add("hub2.example.com:4000").ok());
  ASSERT_TRUE(list.Add("127.0.0.1:*").ok());
  ASSERT_TRUE(list.Add("[::1]:5000").ok());
  EXPECT_TRUE(list.Allows("HUB2.example.com", 4000));
  EXPECT_FALSE(list.Allows("hub2.example.com", 4001));
  EXPECT_FALSE(list.Allows("hub3.example.com", 4000));
  EXPECT_TRUE(list.Allows("127.0.0.1", 1));
  EXPECT_FALSE(list.Allows("127.0.0.2", 1));
  EXPECT_TRUE(list.Allows("::1", 5000));
  EXPECT_TRUE(list.Allows("0:0::1", 5000));  // the same address written another way
  EXPECT_FALSE(list.Allows("::1", 5001));
}

TEST(DialAllowListTest, NetworksMatchOnlyIpHops) {
  DialAllowList list;
  ASSERT_TRUE(list.Add("10.0.0.0/8:5432").ok());
  ASSERT_TRUE(list.Add("[fd00::/8]:*").ok());
  EXPECT_TRUE(list.Allows("10.200.3.4", 5432));
  EXPECT_FALSE(list.Allows("10.200.3.4", 5433));
  EXPECT_FALSE(list.Allows("11.0.0.1", 5432));
  EXPECT_TRUE(list.Allows("fd12::7", 1));
  EXPECT_FALSE(list.Allows("fe80::1", 1));
  EXPECT_FALSE(list.Allows("ten.example", 5432));  // a name never matches a network
}

TEST(DialAllowListTest, BadEntriesAreRefusedWithWhy) {
  for (const char* bad : {"", "nohost", ":80", "host:0", "host:70000", "host:x", "bad host:1",
                          "10.0.0.0/33:1", "[fd00::/200]:1"}) {
    DialAllowList list;
    absl::Status s = list.Add(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("--allow-dial"), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace veil::transport
