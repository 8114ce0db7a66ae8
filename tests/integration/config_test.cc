// veild --config: a declarative YAML file creates identities, trusted identities, listeners and
// relays at start-up, idempotently across restarts; a relay from the config waits for a hub
// that is not up yet; bad files stop veild with the file, line and field in the error.
#include <fstream>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "tests/support/api_client.h"
#include "tests/support/veild_process.h"

namespace veil::testing {
namespace {

std::string WriteFile(const TempDir& dir, const std::string& name, const std::string& text) {
  std::string path = dir.path() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(ConfigIntegrationTest, BobFromAConfigFileReachedThroughAHubThatStartsLater) {
  TempDir dirs;
  // Learn a free port for the hub, then stop it: Bob starts first, as pods may.
  auto hub = std::make_unique<VeildProcess>(
      dirs.path() + "/hub", std::vector<std::string>{"--hub", "--tcp-listen", "127.0.0.1:0"});
  ASSERT_TRUE(hub->Start()) << hub->log();
  std::string hub_tcp = TcpListenAddress(Connect(hub->api_target()));
  hub.reset();

  VeildProcess alice;
  ASSERT_TRUE(alice.Start()) << alice.log();
  auto alice_api = Connect(alice.api_target());
  std::string alice_id = DefaultIdentifier(alice_api);

  std::string config = WriteFile(dirs, "bob.yaml", R"(# Bob's sidecar
identities:
  - name: bob
listeners:
  - address: listener
    identity: bob
    trust_policy:
      trust_identifier: )" + alice_id + R"(
relays:
  - hub_route: /tcp/)" + hub_tcp + R"(
    name: bob
    identity: bob
)");
  std::string bob_state = dirs.path() + "/bob";
  auto bob = std::make_unique<VeildProcess>(
      bob_state, std::vector<std::string>{"--config", config, "--relay-heartbeat", "0.2"});
  ASSERT_TRUE(bob->Start()) << bob->log();
  auto bob_api = Connect(bob->api_target());
  std::string bob_id = GetIdentity(bob_api, "bob").public_identity().identifier();
  ASSERT_FALSE(bob_id.empty());
  EXPECT_NE(GetRelay(bob_api, "bob").state(), v1::Relay::UP);  // no hub yet: still trying

  auto make_hub = [&] {
    return std::make_unique<VeildProcess>(
        dirs.path() + "/hub", std::vector<std::string>{"--hub", "--tcp-listen", hub_tcp});
  };
  ASSERT_TRUE(StartWhileAddressInUse(make_hub, hub)) << hub->log();
  ASSERT_TRUE(WaitRelayUp(bob_api, "bob", 1)) << bob->log();
  EchoApp echoer(bob_api, "echoer");
  ASSERT_TRUE(echoer.WaitOpened());

  v1::Relay relay = GetRelay(bob_api, "bob");
  EXPECT_EQ(relay.identity(), "bob");
  v1::SecureChannel channel;
  grpc::Status s = CreateSecureChannel(alice_api, relay.route() + "/service/listener",
                                       TrustIdentifier(bob_id), &channel);
  ASSERT_TRUE(s.ok()) << s.error_message() << bob->log();
  v1::RequestResponse reply;
  ASSERT_TRUE(Request(alice_api, channel.route() + "/service/echoer", "configured", &reply).ok());
  EXPECT_EQ(reply.reply().payload(), "configured");

  // Restarted with the same file: same identity, listener and relay again, nothing duplicated.
  bob.reset();
  bob = std::make_unique<VeildProcess>(
      bob_state, std::vector<std::string>{"--config", config, "--relay-heartbeat", "0.2"});
  ASSERT_TRUE(bob->Start()) << bob->log();
  bob_api = Connect(bob->api_target());
  EXPECT_EQ(GetIdentity(bob_api, "bob").public_identity().identifier(), bob_id);
  ASSERT_TRUE(WaitRelayUp(bob_api, "bob", 1)) << bob->log();
  auto ids = v1::IdentityService::NewStub(bob_api);
  grpc::ClientContext context;
  v1::ListIdentitiesResponse listed;
  ASSERT_TRUE(ids->ListIdentities(&context, {}, &listed).ok());
  EXPECT_EQ(listed.identities_size(), 2);  // default and bob
}

TEST(ConfigIntegrationTest, TrustedIdentitiesFromTheConfig) {
  TempDir dirs;
  VeildProcess alice;
  ASSERT_TRUE(alice.Start()) << alice.log();
  auto alice_api = Connect(alice.api_target());
  v1::Identity alice_identity = GetIdentity(alice_api, "default");
  // The API's JSON form of bytes is base64; the config takes the same.
  std::string key_base64 = absl::Base64Escape(alice_identity.public_identity().public_key());
  std::string config = WriteFile(dirs, "bob.yaml",
                                 R"(
trusted_identities:
  - public_identity:
      identifier: )" + alice_identity.public_identity().identifier() +
                                     R"(
      public_key: ")" + key_base64 + R"("
    label: Alice
listeners:
  - address: listener
    trust_policy: { trust_imported: true }
)");
  VeildProcess bob({"--config", config, "--tcp-listen", "127.0.0.1:0"});
  ASSERT_TRUE(bob.Start()) << bob.log();
  auto bob_api = Connect(bob.api_target());
  EchoApp echoer(bob_api, "echoer");
  ASSERT_TRUE(echoer.WaitOpened());
  v1::SecureChannel channel;
  grpc::Status s =
      CreateSecureChannel(alice_api, "/tcp/" + TcpListenAddress(bob_api) + "/service/listener",
                          TrustEveryone(), &channel);
  ASSERT_TRUE(s.ok()) << s.error_message() << bob.log();

  // Someone not imported is refused by the same listener.
  VeildProcess mallory;
  ASSERT_TRUE(mallory.Start()) << mallory.log();
  s = CreateSecureChannel(Connect(mallory.api_target()),
                          "/tcp/" + TcpListenAddress(bob_api) + "/service/listener",
                          TrustEveryone(), &channel);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
}

struct BadConfig {
  const char* name;
  const char* yaml;
  const char* message;
  bool needs_state = false;  // only found when applied to the node's state
};

class ConfigBadStartTest : public ::testing::TestWithParam<BadConfig> {};

TEST_P(ConfigBadStartTest, VeildRefusesToStartAndSaysWhere) {
  TempDir dir;
  std::string path = WriteFile(dir, "veil.yaml", GetParam().yaml);
  VeildProcess node({"--config", path});
  EXPECT_FALSE(node.Start());
  EXPECT_EQ(node.exit_code(), 1) << node.log();
  EXPECT_NE(node.log().find(GetParam().message), std::string::npos) << node.log();

  // --check-config says the same without starting anything.
  VeildProcess check({"--config", path, "--check-config"});
  EXPECT_FALSE(check.Start(std::chrono::seconds(10)));
  EXPECT_EQ(check.exit_code(), GetParam().needs_state ? 0 : 1) << check.log();
  if (!GetParam().needs_state) {
    EXPECT_NE(check.log().find(GetParam().message), std::string::npos) << check.log();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ConfigBadStartTest,
    ::testing::Values(
        BadConfig{"Syntax", "listeners: [\n", "veil.yaml:2:1: not valid YAML"},
        BadConfig{"UnknownField", "listeners:\n  - adress: x\n",
                  "veil.yaml:2:5: listeners[0]: unknown field \"adress\""},
        BadConfig{"UnknownIdentity",
                  "listeners:\n  - address: x\n    identity: ghost\n    trust_policy: "
                  "{trust_everyone: true}\n",
                  "veil.yaml:3:15: listeners[0].identity: no identity named \"ghost\""},
        BadConfig{"NoTrustPolicy", "listeners:\n  - address: x\n",
                  "veil.yaml:2:5: listeners[0].trust_policy: a trust policy is required"},
        BadConfig{"BadRoute", "relays:\n  - hub_route: tcp//nope\n",
                  "veil.yaml:2:16: relays[0].hub_route: invalid route"},
        BadConfig{"BadRelayName", "relays:\n  - hub_route: /tcp/127.0.0.1:1\n    name: \"a b\"\n",
                  "veil.yaml:3:11: relays[0].name: "},
        BadConfig{"DuplicateRelay",
                  "relays:\n  - {hub_route: /tcp/127.0.0.1:1, name: r}\n  - {hub_route: "
                  "/tcp/127.0.0.1:2, name: r}\n",
                  "relays[1].name: relay \"r\" is listed twice"},
        BadConfig{"BadIdentityName", "identities:\n  - name: \"Not OK\"\n",
                  "veil.yaml:2:11: identities[0].name: "},
        BadConfig{"ReservedAddress",
                  "listeners:\n  - address: _sc_1\n    trust_policy: {trust_everyone: true}\n",
                  "veil.yaml:2:14: listeners[0].address: addresses starting with '_' are reserved"},
        BadConfig{"WrongKey",
                  "trusted_identities:\n  - public_identity: {identifier: "
                  "I00000000000000000000000000000000, public_key: "
                  "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=}\n",
                  "is not the one derived from the public key"},
        BadConfig{
            "OutletBadTarget",
            "outlets:\n  - {name: db, target: nowhere, trust_policy: {trust_everyone: true}}\n",
            "outlets[0].target: target: "},
        BadConfig{"OutletWithoutTrust", "outlets:\n  - {name: db, target: \"127.0.0.1:5432\"}\n",
                  "outlets[0].trust_policy: a trust policy is required"},
        BadConfig{
            "OutletOnAListenersAddress",
            "listeners:\n  - {address: db, trust_policy: {trust_everyone: true}}\noutlets:\n"
            "  - {name: db, target: \"127.0.0.1:5432\", trust_policy: {trust_everyone: true}}\n",
            "outlets[0].name: the address \"db\" is listed twice"},
        BadConfig{"InletPublicWithoutAllow",
                  "inlets:\n  - {listen_address: \"0.0.0.0:5432\", route: /tcp/h:1/service/l, "
                  "outlet: db}\n",
                  "inlets[0].listen_address: 0.0.0.0:5432 is not loopback"},
        BadConfig{"InletBadRoute",
                  "inlets:\n  - {listen_address: \"127.0.0.1:5432\", route: nope, outlet: db}\n",
                  "inlets[0].route: invalid route"},
        BadConfig{"InletWithoutOutlet",
                  "inlets:\n  - {listen_address: \"127.0.0.1:5432\", route: /tcp/h:1/service/l}\n",
                  "inlets[0].outlet: "},
        BadConfig{
            "InletUnknownIdentity",
            "inlets:\n  - {listen_address: \"127.0.0.1:5432\", route: /tcp/h:1/service/l, outlet: "
            "db, identity: ghost}\n",
            "inlets[0].identity: no identity named \"ghost\""}),
    [](const auto& info) { return std::string(info.param.name); });

// --check-config knows the identities of the state directory it would run on (and --identity).
TEST(ConfigIntegrationTest, CheckConfigKnowsTheStateDirectorysIdentities) {
  TempDir dir;
  std::string state = dir.path() + "/state";
  {
    VeildProcess node(state, {"--identity", "elsewhere"});
    ASSERT_TRUE(node.Start()) << node.log();
  }
  std::string path = WriteFile(dir, "veil.yaml",
                               "listeners:\n  - address: x\n    identity: elsewhere\n"
                               "    trust_policy: {trust_everyone: true}\n");
  VeildProcess check(state, {"--config", path, "--check-config"});
  EXPECT_FALSE(check.Start(std::chrono::seconds(10)));
  EXPECT_EQ(check.exit_code(), 0) << check.log();
  VeildProcess flag({"--config", path, "--check-config", "--identity", "elsewhere"});
  EXPECT_FALSE(flag.Start(std::chrono::seconds(10)));
  EXPECT_EQ(flag.exit_code(), 0) << flag.log();
}

TEST(ConfigIntegrationTest, MissingFileAndCheckConfig) {
  VeildProcess missing({"--config", "/nonexistent/veil.yaml"});
  EXPECT_FALSE(missing.Start());
  EXPECT_EQ(missing.exit_code(), 1);
  EXPECT_NE(missing.log().find("cannot read the config file /nonexistent/veil.yaml"),
            std::string::npos)
      << missing.log();

  TempDir dir;
  std::string path = WriteFile(dir, "ok.yaml", "identities: [{name: a}, {name: b}]\n");
  VeildProcess check({"--config", path, "--check-config"});
  EXPECT_FALSE(check.Start(std::chrono::seconds(10)));  // exits at once: never "ready"
  EXPECT_EQ(check.exit_code(), 0) << check.log();
  // Nothing was created: the state directory holds no identity.
  EXPECT_FALSE(std::ifstream(check.state_dir() + "/identities/a.identity").good());
}

}  // namespace
}  // namespace veil::testing
