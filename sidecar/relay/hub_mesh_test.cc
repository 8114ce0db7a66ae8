#include "sidecar/relay/hub_mesh.h"

#include "gtest/gtest.h"

namespace veil::relay {
namespace {

TEST(DefaultHubRouteTest, IsTheFirstTcpListenerAsBoundUnlessItNamesNoHost) {
  EXPECT_EQ(DefaultHubRoute("10.1.2.3:4000"), "/tcp/10.1.2.3:4000");
  EXPECT_EQ(DefaultHubRoute("[fd00::7]:4000"), "/tcp/[fd00::7]:4000");  // brackets kept
  EXPECT_EQ(DefaultHubRoute("hub-0.hubs.svc:4000"), "/tcp/hub-0.hubs.svc:4000");
  // Bound to every address: no host another replica could dial.
  EXPECT_EQ(DefaultHubRoute("0.0.0.0:4000"), "");
  EXPECT_EQ(DefaultHubRoute("[::]:4000"), "");
  EXPECT_EQ(DefaultHubRoute(""), "");
  EXPECT_EQ(DefaultHubRoute("no port"), "");
}

}  // namespace
}  // namespace veil::relay
