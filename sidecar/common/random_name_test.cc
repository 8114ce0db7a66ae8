#include "sidecar/common/random_name.h"

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace veil {
namespace {

TEST(RandomNameTest, PrefixedHexAndDistinct) {
  absl::flat_hash_set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string name = RandomName("_req_");
    ASSERT_EQ(name.size(), 5u + 32u);
    EXPECT_EQ(name.rfind("_req_", 0), 0u);
    EXPECT_EQ(name.find_first_not_of("0123456789abcdef", 5), std::string::npos);
    EXPECT_TRUE(seen.insert(name).second);
  }
}

TEST(RandomNameTest, WorkerNamesAndTags) {
  absl::flat_hash_set<std::string> names;
  for (int i = 0; i < 1000; ++i) {
    std::string name = RandomWorkerName("_sc_");
    ASSERT_EQ(name.size(), 4u + kWorkerSuffixChars);
    EXPECT_EQ(name.rfind("_sc_", 0), 0u);
    EXPECT_EQ(
        name.find_first_not_of("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 4),
        std::string::npos);
    EXPECT_TRUE(names.insert(name).second);
  }
  // No heap allocation for the names copied into every message.
  EXPECT_LE(RandomWorkerName("_sc_").size(), 15u);
  absl::flat_hash_set<uint64_t> tags;
  for (int i = 0; i < 1000; ++i) {
    uint64_t tag = RandomNonZeroU64();
    EXPECT_NE(tag, 0u);
    EXPECT_TRUE(tags.insert(tag).second);
  }
}

}  // namespace
}  // namespace veil
