// The seed scenario through a hub, with real processes: a hub, Bob's sidecar (no TCP
// listener: unreachable except through the hub) with his echoer app, and Alice's sidecar.
// Then the hub and Bob's sidecar die and come back; squatters are refused; two hubs in a row.
#include <signal.h>

#include <thread>

#include "gtest/gtest.h"
#include "tests/support/api_client.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/veild_process.h"

namespace veil::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Opens a channel via the hub and checks an echo; returns the status of the first failure.
grpc::Status EchoThrough(const std::shared_ptr<grpc::Channel>& alice,
                         const std::string& listener_route, const std::string& text,
                         std::string* bob_identifier = nullptr) {
  v1::SecureChannel channel;
  grpc::Status s = CreateSecureChannel(alice, listener_route, TrustEveryone(), &channel);
  if (!s.ok()) return s;
  if (bob_identifier) *bob_identifier = channel.remote_identifier();
  v1::RequestResponse reply;
  s = Request(alice, channel.route() + "/service/echoer", text, &reply);
  if (!s.ok()) return s;
  EXPECT_EQ(reply.reply().payload(), text);
  return grpc::Status::OK;
}

class HubTest : public ::testing::Test {
 protected:
  void StartHub() {
    auto make_hub = [&] {
      return std::make_unique<VeildProcess>(
          hub_state_, std::vector<std::string>{"--hub", "--tcp-listen", hub_listen_});
    };
    ASSERT_TRUE(StartWhileAddressInUse(make_hub, hub_)) << hub_->log();
    hub_api_ = Connect(hub_->api_target());
    hub_tcp_ = TcpListenAddress(hub_api_);
    hub_listen_ = hub_tcp_;  // restart on the same port
  }
  void StartBob() {
    bob_ = std::make_unique<VeildProcess>(bob_state_,
                                          std::vector<std::string>{"--relay-heartbeat", "0.2"});
    ASSERT_TRUE(bob_->Start()) << bob_->log();
    bob_api_ = Connect(bob_->api_target());
    echoer_ = std::make_unique<EchoApp>(bob_api_, "echoer");
    ASSERT_TRUE(echoer_->WaitOpened());
    ASSERT_TRUE(CreateListener(bob_api_, "listener", TrustEveryone()).ok());
  }
  void SetUp() override {
    StartHub();
    StartBob();
    ASSERT_TRUE(alice_.Start()) << alice_.log();
    alice_api_ = Connect(alice_.api_target());
  }
  std::string HubRoute() const { return "/tcp/" + hub_tcp_; }
  std::string ListenerViaHub(const v1::Relay& relay) const {
    return relay.route() + "/service/listener";
  }

  TempDir dirs_;
  std::string hub_state_ = dirs_.path() + "/hub";
  std::string bob_state_ = dirs_.path() + "/bob";
  std::string hub_listen_ = "127.0.0.1:0";
  std::unique_ptr<VeildProcess> hub_, bob_;
  VeildProcess alice_;
  std::shared_ptr<grpc::Channel> hub_api_, bob_api_, alice_api_;
  std::string hub_tcp_;
  std::unique_ptr<EchoApp> echoer_;
};

TEST_F(HubTest, SeedScenarioThroughTheHub) {
  v1::Relay relay;
  grpc::Status s = CreateRelay(bob_api_, HubRoute(), "bob", &relay);
  ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << bob_->log() << hub_->log();
  EXPECT_EQ(relay.address(), "forward_to_bob");
  EXPECT_EQ(relay.route(), HubRoute() + "/service/forward_to_bob");
  EXPECT_EQ(relay.state(), v1::Relay::UP);
  std::string bob_id;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(
        EchoThrough(alice_api_, ListenerViaHub(relay), "Hello Ockam! " + std::to_string(i), &bob_id)
            .ok());
  }
  EXPECT_EQ(bob_id, DefaultIdentifier(bob_api_));
  EXPECT_EQ(echoer_->last_sender().identifier(), DefaultIdentifier(alice_api_));
  // The hub hosts the relay for Bob's identity and holds no channel to Alice or Bob's echoer.
  auto stub = v1::RelayService::NewStub(hub_api_);
  grpc::ClientContext context;
  v1::ListHostedRelaysResponse hosted;
  ASSERT_TRUE(stub->ListHostedRelays(&context, {}, &hosted).ok());
  ASSERT_EQ(hosted.relays_size(), 1);
  EXPECT_EQ(hosted.relays(0).owner(), DefaultIdentifier(bob_api_));
}

// An app on the hub itself reaches Bob through the relay, the relay carrying both directions.
TEST_F(HubTest, AnAppOnTheHubReachesBobThroughTheRelay) {
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "bob", &relay).ok());
  ASSERT_TRUE(
      EchoThrough(hub_api_, "/service/forward_to_bob/service/listener", "from the hub").ok());
  EXPECT_EQ(echoer_->last_sender().identifier(), DefaultIdentifier(hub_api_));
}

TEST_F(HubTest, RandomRelayNameLikeTheSeed) {
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "", &relay).ok());
  EXPECT_EQ(relay.address().rfind("forward_to_", 0), 0u);
  EXPECT_GT(relay.name().size(), 8u);
  ASSERT_TRUE(EchoThrough(alice_api_, ListenerViaHub(relay), "hi").ok());
}

TEST_F(HubTest, HubRestartRelayComesBackAndNewChannelsWork) {
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "bob", &relay).ok());
  ASSERT_TRUE(EchoThrough(alice_api_, ListenerViaHub(relay), "before").ok());
  hub_->Kill();
  // Bob's session notices the dead hub.
  bool reconnecting = false;
  for (int i = 0; i < 200 && !reconnecting; ++i) {
    reconnecting = GetRelay(bob_api_, "bob").state() == v1::Relay::RECONNECTING;
    if (!reconnecting) std::this_thread::sleep_for(milliseconds(25));
  }
  EXPECT_TRUE(reconnecting);
  EXPECT_FALSE(GetRelay(bob_api_, "bob").last_error().empty());
  StartHub();  // same state dir, same port
  ASSERT_TRUE(WaitRelayUp(bob_api_, "bob", 2)) << bob_->log();
  grpc::Status s = EchoThrough(alice_api_, ListenerViaHub(relay), "after");
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(HubTest, BobRestartKeepsHisIdentifierAndRelay) {
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "bob", &relay).ok());
  std::string before;
  ASSERT_TRUE(EchoThrough(alice_api_, ListenerViaHub(relay), "one", &before).ok());
  echoer_.reset();
  bob_->Kill();
  // While Bob is away, the hub says his relay is down, not that it never was.
  v1::SecureChannel channel;
  grpc::Status down;
  for (int i = 0; i < 100; ++i) {
    down = CreateSecureChannel(alice_api_, ListenerViaHub(relay), TrustEveryone(), &channel, 2000);
    if (ReasonOf(down) == "RELAY_NOT_FOUND") break;
    std::this_thread::sleep_for(milliseconds(20));  // until the hub sees the connection close
  }
  EXPECT_EQ(down.error_code(), grpc::StatusCode::UNAVAILABLE) << down.error_message();
  EXPECT_NE(
      down.error_message().find("relay \"bob\" is down: its owner's connection to the hub closed"),
      std::string::npos)
      << down.error_message();
  StartBob();  // same state dir: same identity, so the reserved name is his again
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "bob", &relay).ok());
  std::string after;
  ASSERT_TRUE(EchoThrough(alice_api_, ListenerViaHub(relay), "two", &after).ok());
  EXPECT_EQ(before, after);
}

TEST_F(HubTest, SquattingIsRefused) {
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "bob", &relay).ok());
  // Mallory (another identity) wants "bob": refused, now and after Bob's connection drops.
  VeildProcess mallory;
  ASSERT_TRUE(mallory.Start()) << mallory.log();
  auto mallory_api = Connect(mallory.api_target());
  v1::Relay stolen;
  grpc::Status s = CreateRelay(mallory_api, HubRoute(), "bob", &stolen);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ReasonOf(s), "RELAY_NAME_TAKEN");
  echoer_.reset();
  bob_->Kill();
  s = CreateRelay(mallory_api, HubRoute(), "bob", &stolen);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << "name is reserved for Bob";
  // Errors for bad requests.
  EXPECT_EQ(CreateRelay(mallory_api, HubRoute(), "bad name", &stolen).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(CreateRelay(mallory_api, "/tcp/127.0.0.1:1", "m", &stolen).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  auto stub = v1::RelayService::NewStub(mallory_api);
  grpc::ClientContext context;
  v1::ListHostedRelaysResponse hosted;
  EXPECT_EQ(stub->ListHostedRelays(&context, {}, &hosted).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

// The "ensure" form: Bob's app runs again and keeps its relay and forwarding address, whether
// it named the relay or let the hub pick.
TEST_F(HubTest, EnsureRelayKeepsTheRelayAndItsAddress) {
  v1::Relay picked, again;
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "", &picked, /*exist_ok=*/true).ok());
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "", &again, true).ok());
  EXPECT_EQ(again.name(), picked.name());
  EXPECT_EQ(again.address(), picked.address());
  EXPECT_EQ(again.state(), v1::Relay::UP);
  // Without exist_ok and no name, another relay (a new name).
  v1::Relay other;
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "", &other).ok());
  EXPECT_NE(other.name(), picked.name());
  // Named: the same one with exist_ok, RELAY_EXISTS without.
  v1::Relay named;
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "bob", &named, true).ok());
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "bob", &again, true).ok());
  EXPECT_EQ(again.address(), named.address());
  grpc::Status s = CreateRelay(bob_api_, HubRoute(), "bob", &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(ReasonOf(s), "RELAY_EXISTS");
  // The name on another hub is a different relay: still refused (names are this sidecar's).
  s = CreateRelay(bob_api_, "/tcp/127.0.0.1:1", "bob", &again, true);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  auto stub = v1::RelayService::NewStub(bob_api_);
  grpc::ClientContext context;
  v1::ListRelaysResponse relays;
  ASSERT_TRUE(stub->ListRelays(&context, {}, &relays).ok());
  EXPECT_EQ(relays.relays_size(), 3);
  ASSERT_TRUE(EchoThrough(alice_api_, ListenerViaHub(named), "hi").ok());
}

TEST_F(HubTest, DeleteRelayFreesTheName) {
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "bob", &relay).ok());
  EXPECT_EQ(CreateRelay(bob_api_, HubRoute(), "bob", &relay).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  auto stub = v1::RelayService::NewStub(bob_api_);
  grpc::ClientContext context;
  v1::DeleteRelayRequest del;
  del.set_name("bob");
  v1::DeleteRelayResponse r;
  ASSERT_TRUE(stub->DeleteRelay(&context, del, &r).ok());
  // Alice can no longer reach Bob through the hub.
  v1::SecureChannel channel;
  for (int i = 0; i < 100; ++i) {
    grpc::Status s =
        CreateSecureChannel(alice_api_, ListenerViaHub(relay), TrustEveryone(), &channel, 300);
    if (!s.ok()) break;
    std::this_thread::sleep_for(milliseconds(20));  // the unregister is asynchronous
  }
  grpc::Status gone =
      CreateSecureChannel(alice_api_, ListenerViaHub(relay), TrustEveryone(), &channel, 300);
  // The hub says what happened to the relay.
  EXPECT_EQ(gone.error_code(), grpc::StatusCode::NOT_FOUND) << gone.error_message();
  EXPECT_EQ(ReasonOf(gone), "RELAY_NOT_FOUND");
  EXPECT_NE(gone.error_message().find("relay \"bob\" was unregistered by its owner"),
            std::string::npos)
      << gone.error_message();
  // Anyone may take the name now.
  VeildProcess carol;
  ASSERT_TRUE(carol.Start());
  v1::Relay taken;
  EXPECT_TRUE(CreateRelay(Connect(carol.api_target()), HubRoute(), "bob", &taken).ok());
}

TEST_F(HubTest, HubSeesOnlyCiphertext) {
  // Alice reaches the hub through a recording proxy.
  TcpProxy proxy(hub_tcp_);
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob_api_, HubRoute(), "bob", &relay).ok());
  std::string via_proxy =
      "/tcp/127.0.0.1:" + std::to_string(proxy.port()) + "/service/forward_to_bob/service/listener";
  ASSERT_TRUE(EchoThrough(alice_api_, via_proxy, "secret-canary-7f3a9").ok());
  EXPECT_EQ(proxy.recorded().find("secret-canary-7f3a9"), std::string::npos);
}

// A relay on a node that is not a hub fails at once, and says so.
TEST(RelayErrorsTest, CreateRelayOnANodeThatIsNotAHubSaysSo) {
  VeildProcess plain({"--tcp-listen", "127.0.0.1:0"});
  VeildProcess bob;
  ASSERT_TRUE(plain.Start()) << plain.log();
  ASSERT_TRUE(bob.Start()) << bob.log();
  auto start = std::chrono::steady_clock::now();
  v1::Relay relay;
  grpc::Status s =
      CreateRelay(Connect(bob.api_target()),
                  "/tcp/" + TcpListenAddress(Connect(plain.api_target())), "bob", &relay);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_EQ(ReasonOf(s), "NOT_A_HUB");
  EXPECT_NE(s.error_message().find("is not a hub"), std::string::npos) << s.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
}

TEST(TwoHubsTest, RouteAcrossTwoHubs) {
  // The first hub dials the second for Alice: it must be told it may.
  VeildProcess hub1({"--hub", "--tcp-listen", "127.0.0.1:0", "--allow-dial", "127.0.0.1:*"});
  VeildProcess hub2({"--hub", "--tcp-listen", "127.0.0.1:0"});
  VeildProcess bob({"--relay-heartbeat", "0.5"});
  VeildProcess alice;
  for (auto* node : {&hub1, &hub2, &bob, &alice}) ASSERT_TRUE(node->Start()) << node->log();
  auto bob_api = Connect(bob.api_target());
  auto alice_api = Connect(alice.api_target());
  EchoApp echoer(bob_api, "echoer");
  ASSERT_TRUE(echoer.WaitOpened());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  std::string hub2_tcp = TcpListenAddress(Connect(hub2.api_target()));
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob_api, "/tcp/" + hub2_tcp, "bob", &relay).ok());
  std::string route = "/tcp/" + TcpListenAddress(Connect(hub1.api_target())) + "/tcp/" + hub2_tcp +
                      "/service/forward_to_bob/service/listener";
  grpc::Status s = EchoThrough(alice_api, route, "across two hubs");
  EXPECT_TRUE(s.ok()) << s.error_message();
}

}  // namespace
}  // namespace veil::testing
