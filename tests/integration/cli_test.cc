// The `veil` CLI end to end: every subcommand against real daemons (a hub, Bob's sidecar with
// an echoer, Alice's sidecar), in tables and in JSON, with its errors and exit codes.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/support/api_client.h"
#include "tests/support/veild_process.h"

extern char** environ;

namespace veil::testing {
namespace {

using ::testing::HasSubstr;

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

std::string VeilPath() {
  const char* env = std::getenv("VEIL_CLI");
  return env != nullptr ? env : VEIL_DEFAULT_VEIL_CLI;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs veil with `args` (no shell), `input` on stdin.
Result RunVeil(const std::vector<std::string>& args, const std::string& input = "") {
  TempDir dir;
  std::string in_path = dir.path() + "/in", out_path = dir.path() + "/out",
              err_path = dir.path() + "/err";
  std::ofstream(in_path) << input;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, in_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  std::string binary = VeilPath();
  std::vector<char*> argv{binary.data()};
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  Result r;
  if (posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), environ) != 0) {
    ADD_FAILURE() << "cannot run " << binary;
    return r;
  }
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  waitpid(pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadAll(out_path);
  r.err = ReadAll(err_path);
  return r;
}

template <typename T>
T FromJson(const std::string& json) {
  T message;
  auto status = google::protobuf::util::JsonStringToMessage(json, &message);
  EXPECT_TRUE(status.ok()) << status << "\n" << json;
  return message;
}

std::ostream& operator<<(std::ostream& os, const Result& r) {
  return os << "exit " << r.code << "\nstdout: " << r.out << "\nstderr: " << r.err;
}

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    hub_ = new VeildProcess(
        {"--hub", "--tcp-listen", "127.0.0.1:0", "--uds-listen", dir_->path() + "/hub.sock"});
    ASSERT_TRUE(hub_->Start()) << hub_->log();
    bob_ = new VeildProcess({"--health-listen", "127.0.0.1:0"});
    ASSERT_TRUE(bob_->Start()) << bob_->log();
    alice_ = new VeildProcess();
    ASSERT_TRUE(alice_->Start()) << alice_->log();
    echoer_ = new EchoApp(Connect(bob_->api_target()), "echoer");
    ASSERT_TRUE(echoer_->WaitOpened());
    hub_route_ = "/tcp/" + TcpListenAddress(Connect(hub_->api_target()));
  }
  static void TearDownTestSuite() {
    delete echoer_;
    delete alice_;
    delete bob_;
    delete hub_;
    delete dir_;
  }
  static Result Hub(std::vector<std::string> args) { return On(*hub_, std::move(args)); }
  static Result Bob(std::vector<std::string> args, const std::string& in = "") {
    return On(*bob_, std::move(args), in);
  }
  static Result Alice(std::vector<std::string> args, const std::string& in = "") {
    return On(*alice_, std::move(args), in);
  }
  static Result On(const VeildProcess& node, std::vector<std::string> args,
                   const std::string& in = "") {
    args.insert(args.begin(), {"--api", node.api_target()});
    return RunVeil(args, in);
  }
  // Bob's listener and relay, and a channel from Alice through the hub: returns its address.
  static std::string OpenChannel() {
    Result l = Bob({"listener", "create", "listener", "--trust-everyone"});
    EXPECT_TRUE(l.code == 0 || l.code == 4) << l;
    Result r = Bob({"relay", "create", hub_route_, "--name", "bob"});
    EXPECT_TRUE(r.code == 0 || r.code == 4) << r;
    Result c = Alice(
        {"--json", "channel", "create", hub_route_ + "/service/forward_to_bob/service/listener"});
    EXPECT_EQ(c.code, 0) << c;
    return FromJson<v1::SecureChannel>(c.out).address();
  }

  static TempDir* dir_;
  static VeildProcess* hub_;
  static VeildProcess* bob_;
  static VeildProcess* alice_;
  static EchoApp* echoer_;
  static std::string hub_route_;
};

TempDir* CliTest::dir_ = nullptr;
VeildProcess* CliTest::hub_ = nullptr;
VeildProcess* CliTest::bob_ = nullptr;
VeildProcess* CliTest::alice_ = nullptr;
EchoApp* CliTest::echoer_ = nullptr;
std::string CliTest::hub_route_;

TEST_F(CliTest, HelpAndUsage) {
  Result help = RunVeil({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_THAT(help.out, HasSubstr("Exit codes"));
  for (const char* cmd : {"status", "health", "identity", "listener", "channel", "relay", "send"}) {
    EXPECT_THAT(help.out, HasSubstr(cmd));
    Result sub = RunVeil({cmd, "--help"});
    EXPECT_EQ(sub.code, 0) << cmd << ": " << sub;
  }
  EXPECT_EQ(RunVeil({"channel", "create", "--help"}).code, 0);
  EXPECT_EQ(RunVeil({}).code, 2);
  EXPECT_EQ(RunVeil({"nonsense"}).code, 2);
  EXPECT_EQ(RunVeil({"identity"}).code, 2);            // needs a subcommand
  EXPECT_EQ(RunVeil({"identity", "create"}).code, 2);  // needs a name
  EXPECT_EQ(RunVeil({"--timeout", "0", "status"}).code, 2);
  Result version = RunVeil({"--version"});
  EXPECT_EQ(version.code, 0);
  EXPECT_THAT(version.out, HasSubstr("veil "));
}

TEST_F(CliTest, Status) {
  Result text = Bob({"status"});
  ASSERT_EQ(text.code, 0) << text;
  EXPECT_THAT(text.out, HasSubstr("role:"));
  EXPECT_THAT(text.out, HasSubstr("sidecar"));
  EXPECT_THAT(text.out, HasSubstr("plaintext egress: refused"));
  Result json = Hub({"--json", "status"});
  ASSERT_EQ(json.code, 0) << json;
  v1::Node node = FromJson<v1::Node>(json.out);
  EXPECT_TRUE(node.hub());
  EXPECT_FALSE(node.version().empty());
  // The global flags after the subcommand too.
  Result after = Hub({"status", "--json"});
  ASSERT_EQ(after.code, 0) << after;
  EXPECT_TRUE(FromJson<v1::Node>(after.out).hub());
  Result hub_text = Hub({"status"});
  EXPECT_THAT(hub_text.out, HasSubstr("hosted relays:"));
  // Every node listener, whatever its transport, as the route hop that reaches it.
  EXPECT_THAT(hub_text.out, HasSubstr("node listeners:"));
  EXPECT_THAT(hub_text.out, HasSubstr(" " + hub_route_ + ", /uds/%2F")) << hub_text.out;
  EXPECT_THAT(hub_text.out, HasSubstr("hub.sock")) << hub_text.out;
  ASSERT_EQ(node.listeners_size(), 2);
  EXPECT_EQ(node.listeners(1).transport(), "uds");
  EXPECT_EQ(node.listeners(1).address(), dir_->path() + "/hub.sock");
  EXPECT_THAT(text.out, HasSubstr(" - (reachable only through a hub)")) << text.out;

  Result down = RunVeil({"--api", "unix:/nonexistent/api.sock", "status"});
  EXPECT_EQ(down.code, 7) << down;
  EXPECT_THAT(down.err, HasSubstr("is veild running?"));
  Result down_json = RunVeil({"--api", "unix:/nonexistent/api.sock", "--json", "status"});
  EXPECT_EQ(down_json.code, 7);
  EXPECT_THAT(down_json.err, HasSubstr("\"code\": \"UNAVAILABLE\""));
  EXPECT_TRUE(down_json.out.empty());
}

TEST_F(CliTest, Health) {
  EXPECT_EQ(Bob({"health"}).code, 0);
  std::string health_port = GetNode(Connect(bob_->api_target())).health_endpoint();
  Result probe = RunVeil({"health", health_port});
  EXPECT_EQ(probe.code, 0) << probe;
  EXPECT_THAT(probe.out, HasSubstr("SERVING"));
  Result both = RunVeil({"--timeout", "2", "health", health_port, "127.0.0.1:1"});
  EXPECT_EQ(both.code, 7) << both;
  EXPECT_THAT(both.out, HasSubstr("127.0.0.1:1: unreachable"));
}

TEST_F(CliTest, Identities) {
  Result list = Bob({"identity", "list"});
  ASSERT_EQ(list.code, 0) << list;
  EXPECT_THAT(list.out, HasSubstr("NAME"));
  EXPECT_THAT(list.out, HasSubstr("default"));
  Result created = Bob({"--json", "identity", "create", "carol"});
  ASSERT_EQ(created.code, 0) << created;
  v1::Identity carol = FromJson<v1::Identity>(created.out);
  EXPECT_EQ(carol.name(), "carol");
  EXPECT_EQ(carol.public_identity().public_key().size(), 32u);
  EXPECT_EQ(Bob({"identity", "create", "carol"}).code, 4);
  Result bad = Bob({"identity", "create", "Not OK"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_THAT(bad.err, HasSubstr("INVALID_IDENTITY_NAME"));
  Result shown = Bob({"identity", "show", "carol"});
  EXPECT_EQ(shown.code, 0);
  EXPECT_THAT(shown.out, HasSubstr(carol.public_identity().identifier()));
  EXPECT_EQ(Bob({"identity", "show", "nobody"}).code, 3);
  EXPECT_EQ(Bob({"identity", "delete", "carol"}).code, 0);
  EXPECT_EQ(Bob({"identity", "delete", "carol"}).code, 3);

  // Alice trusts Bob's default identity, from what `identity show --json` printed.
  Result json_bob = Bob({"--json", "identity", "show"});
  v1::Identity bob = FromJson<v1::Identity>(json_bob.out);
  std::string key_b64 = json_bob.out.substr(json_bob.out.find("\"public_key\": \"") + 15);
  key_b64 = key_b64.substr(0, key_b64.find('"'));
  Result trust =
      Alice({"identity", "trust", bob.public_identity().identifier(), key_b64, "--label", "Bob"});
  EXPECT_EQ(trust.code, 0) << trust;
  Result trusted = Alice({"identity", "trusted"});
  EXPECT_THAT(trusted.out, HasSubstr(bob.public_identity().identifier()));
  EXPECT_THAT(trusted.out, HasSubstr("Bob"));
  EXPECT_EQ(Alice({"identity", "trust", "I00000000000000000000000000000000", key_b64}).code, 2);
  EXPECT_EQ(Alice({"identity", "trust", bob.public_identity().identifier(), "***"}).code, 2);
  EXPECT_EQ(Alice({"identity", "untrust", bob.public_identity().identifier()}).code, 0);
  EXPECT_EQ(Alice({"identity", "untrust", bob.public_identity().identifier()}).code, 3);
}

TEST_F(CliTest, Listeners) {
  Result created = Bob({"listener", "create", "cli-listener", "--trust",
                        "I00000000000000000000000000000000", "--trust-imported"});
  ASSERT_EQ(created.code, 0) << created;
  EXPECT_THAT(created.out, HasSubstr("listening at /service/cli-listener"));
  EXPECT_EQ(Bob({"listener", "create", "cli-listener", "--trust-everyone"}).code, 4);
  // --exist-ok: the same listener (trust in any order) is fine; a different one is still 4.
  Result again = Bob({"listener", "create", "cli-listener", "--trust-imported", "--trust",
                      "I00000000000000000000000000000000", "--exist-ok"});
  EXPECT_EQ(again.code, 0) << again;
  Result different = Bob({"listener", "create", "cli-listener", "--trust-everyone", "--exist-ok"});
  EXPECT_EQ(different.code, 4) << different;
  EXPECT_THAT(different.err, HasSubstr("ADDRESS_IN_USE"));
  Result no_trust = Bob({"listener", "create", "other"});
  EXPECT_EQ(no_trust.code, 2);
  EXPECT_THAT(no_trust.err, HasSubstr("say who may open channels"));
  EXPECT_EQ(Bob({"listener", "create", "x", "--trust", "not-an-identifier"}).code, 2);
  EXPECT_EQ(Bob({"listener", "create", "x", "--identity", "nobody", "--trust-everyone"}).code, 3);
  Result list = Bob({"--json", "listener", "list"});
  auto listeners = FromJson<v1::ListSecureChannelListenersResponse>(list.out);
  bool found = false;
  for (const auto& l : listeners.listeners()) found |= l.address() == "cli-listener";
  EXPECT_TRUE(found) << list;
  EXPECT_EQ(Bob({"listener", "delete", "cli-listener"}).code, 0);
  EXPECT_EQ(Bob({"listener", "delete", "cli-listener"}).code, 3);
  // `--trust ID` takes one identifier: the address may follow it.
  Result after_trust =
      Bob({"listener", "create", "--trust", "I00000000000000000000000000000000", "after-trust"});
  EXPECT_EQ(after_trust.code, 0) << after_trust;
  EXPECT_THAT(after_trust.out, HasSubstr("listening at /service/after-trust"));
}

TEST_F(CliTest, RelaysChannelsAndSend) {
  std::string channel = OpenChannel();
  ASSERT_FALSE(channel.empty());

  Result relays = Bob({"relay", "list"});
  EXPECT_THAT(relays.out, HasSubstr("bob"));
  EXPECT_THAT(relays.out, HasSubstr("up"));
  Result relay = Bob({"--json", "relay", "show", "bob"});
  EXPECT_EQ(FromJson<v1::Relay>(relay.out).state(), v1::Relay::UP);
  EXPECT_EQ(Bob({"relay", "show", "nobody"}).code, 3);
  EXPECT_EQ(Bob({"relay", "create", hub_route_, "--name", "bob"}).code, 4);
  Result kept = Bob({"--json", "relay", "create", hub_route_, "--name", "bob", "--exist-ok"});
  ASSERT_EQ(kept.code, 0) << kept;
  EXPECT_EQ(FromJson<v1::Relay>(kept.out).name(), "bob");
  EXPECT_EQ(Bob({"relay", "create", hub_route_, "--name", "bad name"}).code, 2);
  EXPECT_EQ(Bob({"relay", "create", "/tcp/127.0.0.1:1", "--name", "nowhere"}).code, 7);
  Result hosted = Hub({"relay", "hosted"});
  EXPECT_EQ(hosted.code, 0) << hosted;
  EXPECT_THAT(hosted.out, HasSubstr("forward_to_bob"));
  EXPECT_EQ(Bob({"relay", "hosted"}).code, 6);  // not a hub

  Result list = Alice({"channel", "list"});
  EXPECT_THAT(list.out, HasSubstr(channel));
  EXPECT_THAT(list.out, HasSubstr("established"));
  Result shown = Alice({"channel", "show", channel});
  EXPECT_EQ(shown.code, 0);
  EXPECT_THAT(shown.out, HasSubstr("initiator"));
  EXPECT_EQ(Alice({"channel", "show", "_sc_999"}).code, 3);

  // Request: the echo comes back through the channel.
  Result echo =
      Alice({"send", "--request", "/service/" + channel + "/service/echoer", "Hello Ockam!"});
  ASSERT_EQ(echo.code, 0) << echo;
  EXPECT_EQ(echo.out, "Hello Ockam!\n");
  EXPECT_THAT(echo.err, HasSubstr("(from I"));
  Result piped =
      Alice({"--json", "send", "-r", "/service/" + channel + "/service/echoer", "-"}, "from stdin");
  ASSERT_EQ(piped.code, 0) << piped;
  EXPECT_EQ(FromJson<v1::RequestResponse>(piped.out).reply().payload(), "from stdin");
  Result sent = Alice({"send", "/service/" + channel + "/service/echoer", "fire and forget"});
  EXPECT_EQ(sent.code, 0) << sent;
  EXPECT_EQ(Alice({"send", "not a route", "x"}).code, 2);
  Result nowhere = Alice({"send", "/service/nothing-here", "x"});
  EXPECT_EQ(nowhere.code, 3);
  EXPECT_THAT(nowhere.err, HasSubstr("ROUTE_NOT_FOUND"));
  Result plaintext = Alice({"send", hub_route_ + "/service/echoer", "x"});
  EXPECT_EQ(plaintext.code, 6) << plaintext;
  EXPECT_THAT(plaintext.err, HasSubstr("PLAINTEXT_EGRESS_REFUSED"));

  // A listener that does not trust Alice: refused (5); a channel to nowhere: unreachable (7).
  ASSERT_EQ(
      Bob({"listener", "create", "picky", "--trust", "I00000000000000000000000000000000"}).code, 0);
  Result refused =
      Alice({"channel", "create", hub_route_ + "/service/forward_to_bob/service/picky"});
  EXPECT_EQ(refused.code, 5) << refused;
  Result pinned =
      Alice({"channel", "create", hub_route_ + "/service/forward_to_bob/service/listener",
             "--trust", "I00000000000000000000000000000000"});
  EXPECT_EQ(pinned.code, 5) << pinned;
  EXPECT_EQ(
      Alice({"channel", "create", "/tcp/127.0.0.1:1/service/listener", "--handshake-timeout", "2"})
          .code,
      7);

  EXPECT_EQ(Alice({"channel", "delete", channel}).code, 0);
  EXPECT_EQ(Alice({"channel", "delete", channel}).code, 3);
  EXPECT_EQ(Bob({"relay", "delete", "bob"}).code, 0);
  EXPECT_EQ(Bob({"relay", "delete", "bob"}).code, 3);
}

}  // namespace
}  // namespace veil::testing
