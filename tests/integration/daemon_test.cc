// veild start-up: flags, endpoints and refusals, with real processes.
#include <signal.h>
#include <sys/stat.h>

#include <future>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
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

grpc::health::v1::HealthCheckResponse::ServingStatus Probe(const std::string& target,
                                                           grpc::Status* status = nullptr) {
  auto stub = grpc::health::v1::Health::NewStub(Connect(target));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status s = stub->Check(&context, {}, &response);
  if (status) *status = s;
  return response.status();
}

TEST(DaemonTest, HealthOnlyListenerForProbes) {
  VeildProcess node({"--health-listen", "127.0.0.1:0", "--shutdown-grace", "20"});
  ASSERT_TRUE(node.Start()) << node.log();
  v1::Node info = GetNode(Connect(node.api_target()));
  std::string health = info.health_endpoint();
  ASSERT_EQ(health.rfind("127.0.0.1:", 0), 0u) << health;
  EXPECT_EQ(Probe(health), grpc::health::v1::HealthCheckResponse::SERVING);
  // Only health there: the API is not reachable through the probe port.
  auto stub = v1::NodeService::NewStub(Connect(health));
  grpc::ClientContext context;
  v1::Node ignored;
  EXPECT_EQ(stub->GetNode(&context, {}, &ignored).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  // During a drain (a call still in flight holds it open: a handshake nobody answers) probes
  // see NOT_SERVING.
  ServeClient silent(Connect(node.api_target()), "silent");
  ASSERT_TRUE(silent.Read()->has_opened());
  auto pending = std::async(std::launch::async, [&] {
    v1::SecureChannel channel;
    return CreateSecureChannel(Connect(node.api_target()), "/service/silent", TrustEveryone(),
                               &channel, 3000);
  });
  auto arrived = silent.Read();  // the call is in flight once its handshake is delivered
  ASSERT_TRUE(arrived.has_value() && arrived->has_deliveries());
  node.Signal(SIGTERM);
  bool not_serving = false;
  for (int i = 0; i < 200 && !not_serving; ++i) {
    not_serving = Probe(health) == grpc::health::v1::HealthCheckResponse::NOT_SERVING;
    if (!not_serving) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(not_serving);
  pending.get();
  EXPECT_EQ(node.Wait(), 0) << node.log();
}

// A drain ends pending Requests at once (they would hold it for their whole wait), and a
// second signal ends veild without waiting for the rest.
TEST(DaemonTest, DrainEndsPendingRequestsAndASecondSignalExitsAtOnce) {
  VeildProcess node({"--shutdown-grace", "30"});
  ASSERT_TRUE(node.Start()) << node.log();
  ServeClient silent(Connect(node.api_target()), "silent");
  ASSERT_TRUE(silent.Read()->has_opened());
  auto pending = std::async(std::launch::async, [&] {
    v1::RequestResponse reply;
    return Request(Connect(node.api_target()), "/service/silent", "x", &reply,
                   std::chrono::seconds(25));
  });
  ASSERT_TRUE(silent.Read().has_value());  // the request is in flight
  auto start = std::chrono::steady_clock::now();
  node.Signal(SIGTERM);
  grpc::Status ended = pending.get();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::UNAVAILABLE) << ended.error_message();
  EXPECT_EQ(ReasonOf(ended), "NODE_SHUTTING_DOWN");
  EXPECT_EQ(node.Wait(), 0) << node.log();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));

  // A drain held open by a handshake nobody answers: the second SIGINT ends it now.
  VeildProcess held({"--shutdown-grace", "30"});
  ASSERT_TRUE(held.Start()) << held.log();
  ServeClient sink(Connect(held.api_target()), "sink");
  ASSERT_TRUE(sink.Read()->has_opened());
  auto handshake = std::async(std::launch::async, [&] {
    v1::SecureChannel channel;
    return CreateSecureChannel(Connect(held.api_target()), "/service/sink", TrustEveryone(),
                               &channel, 25000);
  });
  ASSERT_TRUE(sink.Read().has_value());
  held.Signal(SIGINT);
  for (int i = 0; i < 200 && held.log().find("draining") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  start = std::chrono::steady_clock::now();
  held.Signal(SIGINT);
  EXPECT_EQ(held.Wait(std::chrono::seconds(5)), 1) << held.log();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_NE(held.log().find("received SIGINT again: exiting without finishing the drain"),
            std::string::npos)
      << held.log();
  handshake.wait();
}

TEST(DaemonTest, RefusesPublicApiAddressUnlessAllowed) {
  VeildProcess node({"--api", "0.0.0.0:0"});
  EXPECT_FALSE(node.Start());
  EXPECT_EQ(node.exit_code(), 1);
  EXPECT_NE(node.log().find("refusing to serve the API on non-loopback address"), std::string::npos)
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
        BadStart{{"--api-socket-mode", "0666"}, 2, "--api-socket-mode"},
        BadStart{{"--serve-socket-direct-write", "maybe"}, 2, "--serve-socket-direct-write"},
        BadStart{{"--max-frame-bytes", "10"}, 2, "--max-frame-bytes"},
        BadStart{{"--tcp-listen", "nonsense"}, 1, "\"nonsense\" is not host:port"},
        BadStart{{"--tcp-listen", "127.0.0.1:99999"}, 1, "is not a port"},
        BadStart{{"--api", "unix:"}, 1, "needs a socket path"},
        BadStart{{"--api", "ftp://x"}, 1, "neither unix:PATH nor HOST:PORT"},
        BadStart{{"--health-listen", "nonsense"}, 1, "is not host:port"},
        BadStart{{"--relay-allow", "I0123456789abcdef0123456789abcdef"}, 1, "needs --hub"},
        BadStart{{"--relay-allow-policy", "true"}, 1, "--relay-allow-policy needs --hub"},
        BadStart{
            {"--hub", "--relay-allow-policy", "subject.role = 1"}, 1, "invalid policy expression"},
        BadStart{{"--authority-route", "/tcp/127.0.0.1:1/service/authority"},
                 1,
                 "--authority-route needs --authority"},
        BadStart{{"--authority-identity", "alice"}, 1, "is not an identifier"},
        BadStart{
            {"--enroll-token-file", "/nonexistent/token"}, 1, "cannot read enrollment token file"},
        BadStart{{"--allow-dial", "10.0.0.0/33:*"}, 2, "bad --allow-dial entry \"10.0.0.0/33:*\""},
        BadStart{{"--allow-dial", "db.internal"}, 2, "no port"},
        BadStart{{"--max-connections", "0"}, 2, "--max-connections"},
        BadStart{{"--hub-directory-load-page", "0"}, 2, "--hub-directory-load-page"},
        BadStart{{"--hub-directory-load-page", "100001"}, 2, "--hub-directory-load-page"},
        BadStart{{"--hub-directory-lease-ttl", "1"}, 2, "--hub-directory-lease-ttl"},
        BadStart{{"--handshake-timeout", "0"}, 2, "--handshake-timeout"},
        BadStart{{"--uds-listen", "relative.sock"}, 2, "is not absolute"},
        BadStart{{"--uds-listen", "/tmp/../etc/x.sock"}, 2, "not in its plain form"},
        BadStart{{"--uds-mode", "0666"}, 2, "--uds-mode"},
        BadStart{{"--uds-listen", "/proc/veil-cannot-be-here/x.sock"}, 1, "cannot"},
        BadStart{{"--ws-listen", "127.0.0.1:80/a b"}, 2, "not allowed in a URL"},
        BadStart{{"--ws-listen", "nowhere"}, 2, "is not host:port"},
        BadStart{{"--wss-listen", "127.0.0.1:0"}, 2, "--wss-listen needs --tls-cert and --tls-key"},
        BadStart{{"--tls-cert", "/nonexistent.pem"}, 2, "--tls-cert and --tls-key go together"},
        BadStart{{"--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"},
                 1,
                 "cannot use the certificate chain in /nonexistent.pem"},
        BadStart{{"--tls-ca", "/nonexistent-ca.pem"}, 1, "/nonexistent-ca.pem"},
        BadStart{{"--connect-proxy", "proxy"}, 2, "--connect-proxy"},
        BadStart{{"--allow-dial", "unix:relative"}, 2, "is not absolute"}));

// Each line names its level as --log-level does ("warn", not "warning"), in both formats.
TEST(DaemonTest, LogLevelsAreNamedAsTheFlagNamesThem) {
  VeildProcess text({"--insecure-plaintext"});
  ASSERT_TRUE(text.Start()) << text.log();
  EXPECT_NE(text.log().find("Z warn  --insecure-plaintext"), std::string::npos) << text.log();
  EXPECT_EQ(text.log().find("warning"), std::string::npos) << text.log();
  VeildProcess json({"--insecure-plaintext", "--log-format", "json"});
  ASSERT_TRUE(json.Start()) << json.log();
  EXPECT_NE(json.log().find("\"level\":\"warn\""), std::string::npos) << json.log();
  EXPECT_NE(json.log().find("\"level\":\"info\""), std::string::npos) << json.log();
  EXPECT_EQ(json.log().find("warning"), std::string::npos) << json.log();
}

// JSON log lines are JSON, and the lines about channels, connections and refusals carry their
// subject as fields (channel, identifier, route, reason, ...), not only in the text.
TEST(DaemonTest, JsonLogLinesCarryStructuredFields) {
  VeildProcess bob({"--tcp-listen", "127.0.0.1:0", "--log-format", "json"});
  VeildProcess alice({"--log-format", "json"});
  ASSERT_TRUE(bob.Start()) << bob.log();
  ASSERT_TRUE(alice.Start()) << alice.log();
  auto bob_api = Connect(bob.api_target()), alice_api = Connect(alice.api_target());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  const std::string route = "/tcp/" + TcpListenAddress(bob_api) + "/service/listener";
  v1::SecureChannel channel;
  ASSERT_TRUE(CreateSecureChannel(alice_api, route, TrustEveryone(), &channel).ok());
  {
    auto stub = v1::SecureChannelService::NewStub(alice_api);
    grpc::ClientContext c;
    v1::DeleteSecureChannelRequest del;
    del.set_address(channel.address());
    v1::DeleteSecureChannelResponse r;
    ASSERT_TRUE(stub->DeleteSecureChannel(&c, del, &r).ok());
  }
  // A refused message: the network may not reach an app that did not say so.
  v1::SecureChannel nowhere;
  EXPECT_FALSE(CreateSecureChannel(alice_api,
                                   "/tcp/" + TcpListenAddress(bob_api) + "/service/nobody",
                                   TrustEveryone(), &nowhere, 2000)
                   .ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the close's log lines
  // Alice goes: her connection to Bob closes, and Bob's log says so.
  alice.Kill();
  for (int i = 0; i < 100 && bob.log().find("tcp connection") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  auto lines = [](const std::string& log) {
    std::vector<google::protobuf::Struct> out;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] != '{') continue;  // the test helper's own notes
      google::protobuf::Struct parsed;
      EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(line, &parsed).ok()) << line;
      out.push_back(std::move(parsed));
    }
    return out;
  };
  auto field = [](const google::protobuf::Struct& line, const std::string& key) {
    auto it = line.fields().find(key);
    return it == line.fields().end() ? std::string() : it->second.string_value();
  };
  bool established = false, closed = false, failed = false, listener = false, connection = false;
  for (const auto& line : lines(alice.log())) {
    const std::string msg = field(line, "msg");
    if (msg.find("established") != std::string::npos) {
      established = true;
      EXPECT_EQ(field(line, "channel"), channel.address()) << msg;
      EXPECT_EQ(field(line, "identifier"), channel.remote_identifier()) << msg;
      EXPECT_EQ(field(line, "route"), channel.remote_route()) << msg;  // over its connection
    }
    if (msg.find(channel.address() + " with") != std::string::npos &&
        msg.find("closed") != std::string::npos) {
      closed = true;
      EXPECT_EQ(field(line, "reason"), "CHANNEL_DELETED") << msg;
      EXPECT_EQ(field(line, "channel"), channel.address()) << msg;
    }
    if (msg.find("handshake failed") != std::string::npos) {
      failed = true;
      EXPECT_EQ(field(line, "reason"), "ROUTE_NOT_FOUND") << msg;
      EXPECT_NE(field(line, "route").find("/service/nobody"), std::string::npos) << msg;
    }
  }
  for (const auto& line : lines(bob.log())) {
    const std::string msg = field(line, "msg");
    if (msg.find("secure channel listener at") != std::string::npos) {
      listener = true;
      EXPECT_EQ(field(line, "listener"), "listener") << msg;
      EXPECT_EQ(field(line, "identifier"), DefaultIdentifier(bob_api)) << msg;
    }
    if (msg.find("tcp connection") != std::string::npos &&
        msg.find("closed") != std::string::npos) {
      connection = true;
      EXPECT_TRUE(absl::StartsWith(field(line, "connection"), "_tcp_")) << msg;
      EXPECT_TRUE(absl::StartsWith(field(line, "peer"), "127.0.0.1:")) << msg;
      EXPECT_FALSE(field(line, "reason").empty()) << msg;
    }
  }
  EXPECT_TRUE(established) << alice.log();
  EXPECT_TRUE(closed) << alice.log();
  EXPECT_TRUE(failed) << alice.log();
  EXPECT_TRUE(listener) << bob.log();
  EXPECT_TRUE(connection) << bob.log();
}

TEST(DaemonTest, ApiSocketModeForPodsSharingAGroup) {
  VeildProcess node({"--api-socket-mode", "0660"});
  ASSERT_TRUE(node.Start()) << node.log();
  struct stat st;
  ASSERT_EQ(::stat(node.socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_TRUE(GetNode(Connect(node.api_target())).version().size() > 0);
}

TEST(DaemonTest, TcpListenAddressInUseIsAClearError) {
  VeildProcess first({"--tcp-listen", "127.0.0.1:0"});
  ASSERT_TRUE(first.Start()) << first.log();
  std::string taken = GetNode(Connect(first.api_target())).tcp_listeners(0).address();
  VeildProcess second({"--tcp-listen", taken});
  EXPECT_FALSE(second.Start());
  EXPECT_EQ(second.exit_code(), 1);
  EXPECT_NE(second.log().find("cannot listen on " + taken), std::string::npos) << second.log();
}

// The tests' helper for restarts on a fixed port: it waits out a port held for a moment, and
// gives up on one held for good.
TEST(DaemonTest, StartWhileAddressInUseWaitsForThePort) {
  auto first =
      std::make_unique<VeildProcess>(std::vector<std::string>{"--tcp-listen", "127.0.0.1:0"});
  ASSERT_TRUE(first->Start()) << first->log();
  std::string taken = GetNode(Connect(first->api_target())).tcp_listeners(0).address();
  auto make = [&] {
    return std::make_unique<VeildProcess>(std::vector<std::string>{"--tcp-listen", taken});
  };
  std::unique_ptr<VeildProcess> second;
  EXPECT_FALSE(StartWhileAddressInUse(make, second, std::chrono::milliseconds(600)));
  EXPECT_NE(second->log().find("already in use"), std::string::npos) << second->log();
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    first.reset();
  });
  EXPECT_TRUE(StartWhileAddressInUse(make, second)) << second->log();
  release.join();
  EXPECT_EQ(GetNode(Connect(second->api_target())).tcp_listeners(0).address(), taken);
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
