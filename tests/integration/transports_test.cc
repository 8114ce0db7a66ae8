// The seed scenario once per transport — direct, and through a hub whose relay rides the
// transport — and once over a route that mixes them, with real veild processes and real gRPC
// apps. (The access-control attacks run per transport in access_control_test.cc.)
#include <signal.h>

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sidecar/core/address.h"
#include "tests/support/api_client.h"
#include "tests/support/test_certificate.h"
#include "tests/support/veild_process.h"

namespace veil::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Opens a channel to `listener_route` and checks the seed's echo, a 1 MiB message and 100 more
// in order.
void ExpectSeedScenario(const std::shared_ptr<grpc::Channel>& alice,
                        const std::shared_ptr<grpc::Channel>& bob,
                        const std::string& listener_route) {
  v1::SecureChannel channel;
  grpc::Status s = CreateSecureChannel(alice, listener_route, TrustEveryone(), &channel);
  ASSERT_TRUE(s.ok()) << listener_route << ": " << s.error_message();
  EXPECT_EQ(channel.remote_identifier(), DefaultIdentifier(bob));
  v1::RequestResponse reply;
  s = Request(alice, channel.route() + "/service/echoer", "Hello Ockam!", &reply);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(reply.reply().payload(), "Hello Ockam!");
  EXPECT_EQ(reply.reply().sender().origin(), v1::Sender::ORIGIN_SECURE_CHANNEL);
  EXPECT_EQ(reply.reply().sender().identifier(), DefaultIdentifier(bob));
  std::string big(1 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + 3);
  s = Request(alice, channel.route() + "/service/echoer", big, &reply);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(reply.reply().payload() == big) << "the 1 MiB message came back altered";
  for (int i = 0; i < 100; ++i) {
    s = Request(alice, channel.route() + "/service/echoer", std::to_string(i), &reply);
    ASSERT_TRUE(s.ok()) << i << ": " << s.error_message();
    ASSERT_EQ(reply.reply().payload(), std::to_string(i));
  }
}

class TransportsTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Flags that make a node listen on the transport under test (`name` picks a socket path;
  // WebSocket listeners get a fixed port, so that a restart comes back on it).
  std::vector<std::string> ListenFlags(const std::string& name) const {
    if (GetParam() == "uds") return {"--uds-listen", dir_.path() + "/" + name + ".sock"};
    const std::string ws = absl::StrCat("127.0.0.1:", FreeLoopbackPort(), "/veil");
    if (GetParam() == "ws") return {"--ws-listen", ws};
    if (GetParam() == "wss") {
      return {"--wss-listen", ws, "--tls-cert", cert_.cert, "--tls-key", cert_.key};
    }
    return {"--tcp-listen", "127.0.0.1:0"};
  }
  // Flags for a node that dials the transport under test: trust the test's CA for /wss.
  std::vector<std::string> DialFlags(std::vector<std::string> flags = {}) const {
    if (GetParam() == "wss") flags.insert(flags.end(), {"--tls-ca", cert_.cert});
    return flags;
  }
  TempDir dir_;
  TestCertificate cert_ = MakeTestCertificate(dir_.path());
};

INSTANTIATE_TEST_SUITE_P(Transports, TransportsTest, ::testing::Values("tcp", "uds", "ws", "wss"),
                         [](const auto& info) { return info.param; });

// Alice's sidecar reaches Bob's listener over the transport: the seed without the hub.
TEST_P(TransportsTest, SeedScenarioDirect) {
  VeildProcess bob(ListenFlags("bob")), alice(DialFlags());
  ASSERT_TRUE(bob.Start()) << bob.log();
  ASSERT_TRUE(alice.Start()) << alice.log();
  auto bob_api = Connect(bob.api_target()), alice_api = Connect(alice.api_target());
  EchoApp echoer(bob_api, "echoer");
  ASSERT_TRUE(echoer.WaitOpened());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  const std::string bob_hop = ListenerHop(bob_api, GetParam());
  ASSERT_FALSE(bob_hop.empty());
  ExpectSeedScenario(alice_api, bob_api, bob_hop + "/service/listener");
  EXPECT_EQ(echoer.last_sender().identifier(), DefaultIdentifier(alice_api));
  // Alice's one connection is of this transport.
  const v1::Node node = GetNode(alice_api);
  ASSERT_EQ(node.connections_size(), 1);
  EXPECT_EQ(node.connections(0).transport(), GetParam());
  EXPECT_TRUE(node.connections(0).outgoing());
}

// The seed through a hub: Bob (no listener) keeps a relay on the hub over the transport, Alice
// reaches it over the transport; the hub restarts on the same address and the relay returns.
TEST_P(TransportsTest, SeedScenarioThroughTheHub) {
  std::vector<std::string> hub_flags = ListenFlags("hub");
  hub_flags.insert(hub_flags.begin(), "--hub");
  const std::string hub_state = dir_.path() + "/hub-state";
  auto hub = std::make_unique<VeildProcess>(hub_state, hub_flags);
  ASSERT_TRUE(hub->Start()) << hub->log();
  VeildProcess bob(DialFlags({"--relay-heartbeat", "0.2"})), alice(DialFlags());
  ASSERT_TRUE(bob.Start()) << bob.log();
  ASSERT_TRUE(alice.Start()) << alice.log();
  auto bob_api = Connect(bob.api_target()), alice_api = Connect(alice.api_target());
  EchoApp echoer(bob_api, "echoer");
  ASSERT_TRUE(echoer.WaitOpened());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  const std::string hub_hop = ListenerHop(Connect(hub->api_target()), GetParam());
  ASSERT_FALSE(hub_hop.empty());
  v1::Relay relay;
  grpc::Status s = CreateRelay(bob_api, hub_hop, "bob", &relay);
  ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << hub->log();
  EXPECT_EQ(relay.route(), hub_hop + "/service/forward_to_bob");
  ExpectSeedScenario(alice_api, bob_api, relay.route() + "/service/listener");

  if (GetParam() == "tcp") return;  // a TCP hub restart on a fixed port: hub_test.cc
  hub->Signal(SIGTERM);
  ASSERT_TRUE(hub->Wait().has_value());
  auto make_hub = [&] { return std::make_unique<VeildProcess>(hub_state, hub_flags); };
  ASSERT_TRUE(StartWhileAddressInUse(make_hub, hub)) << hub->log();
  ASSERT_TRUE(WaitRelayUp(bob_api, "bob", 2)) << bob.log();
  ExpectSeedScenario(alice_api, bob_api, relay.route() + "/service/listener");
}

// One secure channel over a route that changes transport twice: Alice over WebSocket to the
// hub, the hub to Bob over his relay's TCP connection, Bob over a Unix socket to a service node
// on his host (which he dials for others only because --allow-dial lists its path).
TEST(MixedRouteTest, WebSocketToTheHubThenTcpToBobThenAUnixSocket) {
  TempDir dir;
  const std::string service_socket = dir.path() + "/service.sock";
  VeildProcess hub({"--hub", "--tcp-listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0"});
  VeildProcess service({"--uds-listen", service_socket});
  VeildProcess bob({"--allow-dial", "unix:" + service_socket});
  VeildProcess alice;
  for (auto* node : {&hub, &service, &bob, &alice}) ASSERT_TRUE(node->Start()) << node->log();
  auto service_api = Connect(service.api_target()), bob_api = Connect(bob.api_target()),
       alice_api = Connect(alice.api_target());
  EchoApp echoer(service_api, "echoer");
  ASSERT_TRUE(echoer.WaitOpened());
  ASSERT_TRUE(CreateListener(service_api, "listener", TrustEveryone()).ok());
  v1::Relay relay;
  ASSERT_TRUE(
      CreateRelay(bob_api, "/tcp/" + TcpListenAddress(Connect(hub.api_target())), "bob", &relay)
          .ok());
  const std::string route =
      relay.route() + core::Address::Uds(service_socket).ToString() + "/service/listener";
  ExpectSeedScenario(alice_api, service_api, route);
  // Bob carried it: one connection out to the service node's socket, and no secure channel of
  // his own to anyone but the hub.
  bool dialled = false;
  const v1::Node bob_node = GetNode(bob_api);
  for (const auto& c : bob_node.connections()) {
    dialled |= c.transport() == "uds" && c.outgoing() && c.peer() == service_socket;
  }
  EXPECT_TRUE(dialled);
  EXPECT_EQ(ListSecureChannels(bob_api).size(), 1u);  // to the hub, for the relay

  // Without the allow-list entry Bob refuses to dial the socket for Alice.
  VeildProcess strict_bob;
  ASSERT_TRUE(strict_bob.Start()) << strict_bob.log();
  auto strict_api = Connect(strict_bob.api_target());
  v1::Relay strict_relay;
  ASSERT_TRUE(CreateRelay(strict_api, "/tcp/" + TcpListenAddress(Connect(hub.api_target())),
                          "strict", &strict_relay)
                  .ok());
  v1::SecureChannel refused;
  grpc::Status s = CreateSecureChannel(
      alice_api,
      strict_relay.route() + core::Address::Uds(service_socket).ToString() + "/service/listener",
      TrustEveryone(), &refused);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(ReasonOf(s), "DIAL_REFUSED") << s.error_message();
}

}  // namespace
}  // namespace veil::testing
