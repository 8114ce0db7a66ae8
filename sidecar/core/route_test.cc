#include "sidecar/core/route.h"

#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"

namespace veil::core {
namespace {

TEST(RouteTest, ParsesAndPrintsRoundTrip) {
  for (const char* text : {
           "/service/echoer",
           "/tcp/127.0.0.1:4000/service/echoer",
           "/tcp/hub.example.com:4000/service/forward_to_bob/service/listener",
           "/tcp/[::1]:65535/service/a.b-c_d",
           "/service/_tcp_3/service/app",
           "/uds/%2Frun%2Fveil%2Fbob.sock/service/echoer",
           "/tcp/hub:4000/uds/%2Fvar%2Flib%2Fa%25b c.sock/service/x",
       }) {
    auto route = Route::Parse(text);
    ASSERT_TRUE(route.ok()) << text << ": " << route.status();
    EXPECT_EQ(route->ToString(), text);
  }
}

TEST(RouteTest, ParsesHopsInOrder) {
  auto route = Route::Parse("/tcp/10.1.2.3:80/service/echoer");
  ASSERT_TRUE(route.ok());
  ASSERT_EQ(route->size(), 2u);
  EXPECT_EQ(route->hops()[0], Address::Tcp("10.1.2.3:80"));
  EXPECT_EQ(route->hops()[1], Address::Local("echoer"));
}

// A Unix socket hop: the path with each '/' and '%' escaped, so a path never reads as more
// segments; the value is the path itself (on the wire too).
TEST(RouteTest, UnixSocketHopsEscapeThePath) {
  auto route = Route::Parse("/uds/%2Frun%2fveil%2Fbob.sock/service/echoer");
  ASSERT_TRUE(route.ok()) << route.status();
  ASSERT_EQ(route->size(), 2u);
  EXPECT_EQ(route->hops()[0], Address::Uds("/run/veil/bob.sock"));
  EXPECT_EQ(route->hops()[0].ToString(), "/uds/%2Frun%2Fveil%2Fbob.sock");  // canonical case
  EXPECT_EQ(Address::Uds("/a/50%/b c").ToString(), "/uds/%2Fa%2F50%25%2Fb c");
  EXPECT_EQ(Route::Parse(Address::Uds("/a/50%/b c").ToString())->front().value(), "/a/50%/b c");
  EXPECT_TRUE(Address::Make(2, "/run/veil/bob.sock").ok());
  EXPECT_FALSE(Address::Make(2, "run/veil/bob.sock").ok());
}

TEST(RouteTest, PopAndPush) {
  Route route = *Route::Parse("/tcp/h:1/service/a");
  EXPECT_EQ(route.PopFront(), Address::Tcp("h:1"));
  route.PushFront(Address::Local("conn"));
  EXPECT_EQ(route.ToString(), "/service/conn/service/a");
}

TEST(RouteTest, EmptyRoutePrintsEmpty) { EXPECT_EQ(Route().ToString(), ""); }

struct BadRoute {
  const char* text;
  const char* expected_fragment;
  friend std::ostream& operator<<(std::ostream& os, const BadRoute& b) {
    return os << '"' << b.text << '"';
  }
};

class RouteParseErrorTest : public testing::TestWithParam<BadRoute> {};

TEST_P(RouteParseErrorTest, NamesTheBadSegment) {
  auto route = Route::Parse(GetParam().text);
  ASSERT_FALSE(route.ok()) << GetParam().text;
  EXPECT_EQ(route.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(route.status()), "INVALID_ROUTE");
  EXPECT_NE(route.status().message().find(GetParam().expected_fragment), std::string::npos)
      << route.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    AllShapes, RouteParseErrorTest,
    testing::Values(
        BadRoute{"", "it is empty"}, BadRoute{"service/echoer", "must start with '/'"},
        BadRoute{"/service", "segment 1 (\"/service\") has no value"},
        BadRoute{"/service/", "segment 1 (\"/service\") has no value"},
        BadRoute{"/service/a/", "segment 2"}, BadRoute{"/service//a", "segment 1"},
        BadRoute{"/udp/1.2.3.4:5", "segment 1 (\"/udp/1.2.3.4:5\") has unknown type \"udp\""},
        BadRoute{"/service/a/tcp/1.2.3.4", "segment 2 (\"/tcp/1.2.3.4\")"},
        BadRoute{"/tcp/1.2.3.4:0", "is not a port"},
        BadRoute{"/tcp/1.2.3.4:65536", "is not a port"},
        BadRoute{"/tcp/1.2.3.4:x1", "is not a port"},
        BadRoute{"/tcp/999.1.1.1:80", "is not a host"}, BadRoute{"/tcp/[::1:80", "bracketed IPv6"},
        BadRoute{"/tcp/bad_host!:80", "is not a host"},
        BadRoute{"/service/ech oer", "outside [A-Za-z0-9._-]"},
        BadRoute{"//service/x", "unknown type \"\""},
        // An unescaped path: "/uds/" then "run", not a path, then more segments.
        BadRoute{"/uds//run/veil.sock", "segment 1 (\"/uds\") has no value"},
        BadRoute{"/uds/run%2Fveil.sock", "is not absolute"},
        BadRoute{"/uds/%2Frun%2", "not followed by two hex digits"},
        BadRoute{"/uds/%2Frun%zz", "not followed by two hex digits"},
        BadRoute{"/uds/%2Frun%2F..%2Fetc", "not in its plain form"},
        BadRoute{"/uds/%2Frun%2F%2Fa", "not in its plain form"},
        BadRoute{"/uds/%2Frun%2F", "ends in '/'"},
        BadRoute{"/uds/%2Fa%00b", "outside printable ASCII"},
        BadRoute{"/uds/%2F"
                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                 "longer than 107 bytes"}));

TEST(RouteTest, RefusesTooManyHops) {
  std::string text;
  for (size_t i = 0; i <= kMaxRouteHops; ++i) text += "/service/a";
  auto route = Route::Parse(text);
  ASSERT_FALSE(route.ok());
  EXPECT_NE(route.status().message().find("more than 32 hops"), std::string::npos);
}

TEST(RouteTest, RefusesTooLongName) {
  auto route = Route::Parse("/service/" + std::string(kMaxLocalNameLength + 1, 'a'));
  ASSERT_FALSE(route.ok());
  EXPECT_NE(route.status().message().find("longer than"), std::string::npos);
}

TEST(HostPortTest, ParsesForms) {
  auto v4 = ParseHostPort("127.0.0.1:4000");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 4000);
  auto v6 = ParseHostPort("[::1]:1");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(FormatHostPort(v6->host, v6->port), "[::1]:1");
  EXPECT_FALSE(ParseHostPort("localhost:0").ok());
  EXPECT_TRUE(ParseHostPort("localhost:0", /*allow_port_zero=*/true).ok());
  EXPECT_FALSE(ParseHostPort("localhost").ok());
  EXPECT_FALSE(ParseHostPort(":80").ok());
}

TEST(AddressTest, MakeRefusesUnknownType) {
  auto a = Address::Make(7, "x");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("unknown address type 7"), std::string::npos);
}

}  // namespace
}  // namespace veil::core
