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

}  // namespace
}  // namespace veil
