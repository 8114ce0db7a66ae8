// veild start-up: flags, endpoints and refusals, with real processes.
#include <signal.h>

#include "gtest/gtest.h"
#include "tests/support/api_client.h"
#include "tests/support/veild_process.h"

namespace veil::testing {
namespace {

TEST(DaemonTest, ApiOnLoopbackTcpPortZero) {
  VeildProcess node({"--api", "127.0.0.1:0"});
  ASSERT_TRUE(node.Start()) << node.log();
  ASSERT_EQ(node.api_target().rfind("127.0.0.1:", 0), 0u) << node.api_target();
  EXPECT_NE(node.api_target(), "127.0.0.1:0");  // the bound port is reported
  v1::Node info = GetNode(Connect(node.api_target()));
  EXPECT_EQ(info.api_endpoint(), node.api_target());
}

TEST(DaemonTest, RefusesPublicApiAddressUnlessAllowed) {
  VeildProcess node({"--api", "0.0.0.0:0"});
  EXPECT_FALSE(node.Start());
  EXPECT_EQ(node.exit_code(), 1);
  EXPECT_NE(node.log().find("refusing to serve the API on non-loopback address"),
            std::string::npos)
      << node.log();
}

struct BadStart {
  std::vector<std::string> args;
  int exit_code;
  const char* message;
  friend std::ostream& operator<<(std::ostream& os, const BadStart& b) {
    for (const auto& a : b.args) os << a << ' ';
    return os;
  }
};

class DaemonBadStartTest : public ::testing::TestWithParam<BadStart> {};

TEST_P(DaemonBadStartTest, ExitsWithClearError) {
  VeildProcess node(GetParam().args);
  EXPECT_FALSE(node.Start());
  EXPECT_EQ(node.exit_code(), GetParam().exit_code) << node.log();
  EXPECT_NE(node.log().find(GetParam().message), std::string::npos) << node.log();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DaemonBadStartTest,
    ::testing::Values(
        BadStart{{"--no-such-flag"}, 2, "--no-such-flag"},
        BadStart{{"--log-format", "xml"}, 2, "--log-format"},
        BadStart{{"--max-frame-bytes", "10"}, 2, "--max-frame-bytes"},
        BadStart{{"--tcp-listen", "nonsense"}, 1, "\"nonsense\" is not host:port"},
        BadStart{{"--tcp-listen", "127.0.0.1:99999"}, 1, "is not a port"},
        BadStart{{"--api", "unix:"}, 1, "needs a socket path"},
        BadStart{{"--api", "ftp://x"}, 1, "neither unix:PATH nor HOST:PORT"}));

TEST(DaemonTest, TcpListenAddressInUseIsAClearError) {
  VeildProcess first({"--tcp-listen", "127.0.0.1:0"});
  ASSERT_TRUE(first.Start()) << first.log();
  std::string taken = GetNode(Connect(first.api_target())).tcp_listeners(0).address();
  VeildProcess second({"--tcp-listen", taken});
  EXPECT_FALSE(second.Start());
  EXPECT_EQ(second.exit_code(), 1);
  EXPECT_NE(second.log().find("cannot listen on " + taken), std::string::npos) << second.log();
}

TEST(DaemonTest, ApiSocketServedByAnotherProcessIsNotTakenOver) {
  VeildProcess first;
  ASSERT_TRUE(first.Start()) << first.log();
  VeildProcess second({"--api", first.api_target()});
  EXPECT_FALSE(second.Start());
  EXPECT_NE(second.log().find("another process already serves the API"), std::string::npos)
      << second.log();
  EXPECT_TRUE(GetNode(Connect(first.api_target())).version().size() > 0);  // first unharmed
}

TEST(DaemonTest, StaleSocketFromAKilledDaemonIsReplaced) {
  TempDir dir;
  std::string state = dir.path() + "/state";
  {
    VeildProcess first(state, {"--api", "unix:" + dir.path() + "/api.sock"});
    ASSERT_TRUE(first.Start()) << first.log();
    first.Kill();  // leaves api.sock behind
  }
  VeildProcess second(state, {"--api", "unix:" + dir.path() + "/api.sock"});
  ASSERT_TRUE(second.Start()) << second.log();
  EXPECT_NE(second.log().find("removing stale API socket"), std::string::npos);
}

}  // namespace
}  // namespace veil::testing
