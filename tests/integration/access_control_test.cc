// Access control against a stranger with nothing but a TCP connection (issue 17): real hub,
// Bob and Alice daemons in the seed topology (Bob reachable through the hub's relay and also
// directly), and an attacker (RawPeer) that speaks raw frames, holds no identity, and knows
// every worker name (the worst case: names are unguessable, but that is not the defence). Each
// attack must fail visibly — a refusal notice back to the attacker — or as a counted drop, and
// the honest traffic must go on.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/core/message_codec.h"
#include "tests/support/api_client.h"
#include "tests/support/metrics_scrape.h"
#include "tests/support/raw_peer.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/test_certificate.h"
#include "tests/support/veild_process.h"
#include "veil/v1/portal.grpc.pb.h"
#include "veil/wire/v1/portal.pb.h"
#include "veil/wire/v1/relay.pb.h"

namespace veil::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// The last hop of a route's text form ("/service/_scd_..." -> "_scd_...").
std::string LastHop(const std::string& route) { return route.substr(route.rfind('/') + 1); }

// The workers of a node's open connections.
std::vector<std::string> ConnectionWorkers(const std::shared_ptr<grpc::Channel>& api) {
  std::vector<std::string> out;
  const v1::Node node = GetNode(api);
  for (const auto& c : node.connections()) out.push_back(c.worker());
  return out;
}

// Keeps every delivery an address gets, on a thread of its own.
class Inbox {
 public:
  Inbox(const std::shared_ptr<grpc::Channel>& api, const std::string& address,
        bool accept_unencrypted = false)
      : client_(api, address, 0, accept_unencrypted), thread_([this] { Run(); }) {}
  ~Inbox() {
    client_.Cancel();
    thread_.join();
  }
  bool WaitOpened() {
    for (int i = 0; i < 2000 && opened_ == 0; ++i) std::this_thread::sleep_for(milliseconds(5));
    return opened_ == 1;
  }
  std::vector<v1::Delivery> Received() {
    std::lock_guard<std::mutex> lock(mu_);
    return got_;
  }
  bool WaitFor(size_t n, milliseconds limit = milliseconds(5000)) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end;) {
      if (Received().size() >= n) return true;
      std::this_thread::sleep_for(milliseconds(10));
    }
    return false;
  }

 private:
  void Run() {
    for (;;) {
      auto r = client_.Read();
      if (!r.has_value()) {
        if (opened_ == 0) opened_ = -1;
        return;
      }
      if (r->has_opened()) opened_ = 1;
      if (!r->has_deliveries()) continue;
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& d : r->deliveries().deliveries()) got_.push_back(d);
      client_.Ack(got_.back().sequence());
    }
  }
  ServeClient client_;
  std::atomic<int> opened_{0};
  std::mutex mu_;
  std::vector<v1::Delivery> got_;
  std::thread thread_;
};

// A TCP port with a listener that records whether anyone connected.
class Bystander {
 public:
  Bystander() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd_, 16);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~Bystander() { ::close(fd_); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // True when a connection arrives within `limit`.
  bool Contacted(milliseconds limit) {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(limit.count())) > 0;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A Unix socket with a listener that records whether anyone connected.
class UnixBystander {
 public:
  explicit UnixBystander(std::string path) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.data(), path_.size());
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd_, 16);
  }
  ~UnixBystander() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  bool Contacted(milliseconds limit) {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(limit.count())) > 0;
  }

 private:
  std::string path_;
  int fd_ = -1;
};

std::string UdsHop(const std::string& path) { return core::Address::Uds(path).ToString(); }

void ExpectRefused(RawPeer& eve, absl::string_view reason, absl::string_view what) {
  auto notice = eve.ReadRefusal();
  ASSERT_TRUE(notice.has_value()) << what << ": no refusal came back";
  EXPECT_EQ(veil::ReasonOf(notice->refusal), reason) << what << ": " << notice->refusal;
}

// The attacks run over each transport: the nodes listen on TCP and on Unix sockets, Bob's relay
// and Alice's channels ride the transport under test, and so does the attacker.
class AccessControlTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    for (auto* node : {&hub_, &bob_, &alice_}) ASSERT_TRUE(node->Start()) << node->log();
    hub_api_ = Connect(hub_.api_target());
    bob_api_ = Connect(bob_.api_target());
    alice_api_ = Connect(alice_.api_target());
    hub_hop_ = ListenerHop(hub_api_, GetParam());
    bob_hop_ = ListenerHop(bob_api_, GetParam());
    ASSERT_FALSE(hub_hop_.empty());
    ASSERT_FALSE(bob_hop_.empty());
    echoer_ = std::make_unique<EchoApp>(bob_api_, "echoer");
    ASSERT_TRUE(echoer_->WaitOpened());
    ASSERT_TRUE(CreateListener(bob_api_, "listener", TrustEveryone()).ok());
    ASSERT_TRUE(CreateRelay(bob_api_, hub_hop_, "bob", &relay_).ok());
    inbox_ = std::make_unique<Inbox>(alice_api_, "inbox");
    ASSERT_TRUE(inbox_->WaitOpened());
    ASSERT_TRUE(CreateSecureChannel(alice_api_, relay_.route() + "/service/listener",
                                    TrustEveryone(), &via_hub_)
                    .ok());
    ASSERT_TRUE(
        CreateSecureChannel(alice_api_, bob_hop_ + "/service/listener", TrustEveryone(), &direct_)
            .ok());
    for (const auto& ch : ListSecureChannels(bob_api_)) {
      if (ch.role() == v1::SecureChannel::INITIATOR) {
        bob_to_hub_ = ch;
      } else if (absl::StrContains(ch.remote_route(), "forward_to_bob")) {
        bob_via_hub_ = ch;
      } else {
        bob_direct_ = ch;
      }
    }
    ASSERT_FALSE(bob_to_hub_.address().empty());
    ASSERT_FALSE(bob_via_hub_.address().empty());
    ASSERT_FALSE(bob_direct_.address().empty());
  }

  // Alice's channels still carry an echo both ways.
  void ExpectChannelsWork() {
    for (const auto* ch : {&via_hub_, &direct_}) {
      v1::RequestResponse reply;
      grpc::Status s = Request(alice_api_, ch->route() + "/service/echoer", "still up", &reply);
      EXPECT_TRUE(s.ok()) << s.error_message();
      EXPECT_EQ(reply.reply().payload(), "still up");
    }
  }

  double Denied(const VeildProcess& node) {
    return Scrape(node, "veil_access_denied_total{origin=\"transport\"}");
  }

  // Every transport's listener on the hub and on Bob, and the CA of their TLS certificate.
  static std::vector<std::string> Listeners(const std::string& dir, const std::string& name,
                                            const TestCertificate& cert) {
    return {"--tcp-listen", "127.0.0.1:0",      "--uds-listen",     dir + "/" + name + ".sock",
            "--ws-listen",  "127.0.0.1:0/veil", "--wss-listen",     "127.0.0.1:0/veil",
            "--tls-cert",   cert.cert,          "--tls-key",        cert.key,
            "--tls-ca",     cert.cert,          "--metrics-listen", "127.0.0.1:0"};
  }
  std::string ca() const { return cert_.cert; }

  TempDir dir_;  // the nodes' Unix sockets, the TLS certificate
  TestCertificate cert_ = MakeTestCertificate(dir_.path());
  VeildProcess hub_{[&] {
    auto flags = Listeners(dir_.path(), "hub", cert_);
    flags.push_back("--hub");
    return flags;
  }()};
  VeildProcess bob_{Listeners(dir_.path(), "bob", cert_)};
  VeildProcess alice_{{"--metrics-listen", "127.0.0.1:0", "--tls-ca", cert_.cert}};
  std::shared_ptr<grpc::Channel> hub_api_, bob_api_, alice_api_;
  // The route hops to the hub's and Bob's listeners of the transport under test.
  std::string hub_hop_, bob_hop_;
  std::unique_ptr<EchoApp> echoer_;
  std::unique_ptr<Inbox> inbox_;
  v1::Relay relay_;
  v1::SecureChannel via_hub_, direct_;                       // Alice's
  v1::SecureChannel bob_to_hub_, bob_via_hub_, bob_direct_;  // Bob's
};

// 1. A stranger cannot send *as* Bob by routing into his channels' encryptors.
TEST_P(AccessControlTest, StrangerCannotSendThroughSomeoneElsesChannel) {
  RawPeer eve;
  ASSERT_TRUE(eve.ConnectHop(hub_hop_, ca()));
  // Through the relay, into Bob's channel to Alice.
  ASSERT_TRUE(
      eve.Send("/service/forward_to_bob/service/" + bob_via_hub_.address() + "/service/inbox",
               "/service/eve", "forged as Bob"));
  ExpectRefused(eve, "ACCESS_DENIED", "into Bob's encryptor through the relay");
  // Naming the hub's connection to Bob instead of the relay.
  for (const std::string& worker : ConnectionWorkers(hub_api_)) {
    ASSERT_TRUE(
        eve.Send("/service/" + worker + "/service/" + bob_via_hub_.address() + "/service/inbox",
                 "/service/eve", "forged as Bob"));
    ExpectRefused(eve, "ACCESS_DENIED", "through one of the hub's connections");
  }
  // Into the hub's own channel to Bob: messages to Bob's app "from the hub".
  for (const auto& ch : ListSecureChannels(hub_api_)) {
    ASSERT_TRUE(eve.Send("/service/" + ch.address() + "/service/echoer", "/service/eve", "forged"));
    ExpectRefused(eve, "ACCESS_DENIED", "into the hub's encryptor");
  }
  // Directly at Bob's listener port, into his direct channel to Alice.
  RawPeer direct;
  ASSERT_TRUE(direct.ConnectHop(bob_hop_, ca()));
  ASSERT_TRUE(direct.Send("/service/" + bob_direct_.address() + "/service/inbox", "/service/eve",
                          "forged as Bob"));
  ExpectRefused(direct, "ACCESS_DENIED", "into Bob's encryptor directly");

  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_TRUE(inbox_->Received().empty()) << "a forged message reached Alice's app";
  EXPECT_EQ(echoer_->echoed(), 0u) << "a forged message reached Bob's app";
  EXPECT_GE(Denied(bob_), 2);
  EXPECT_GE(Denied(hub_), 2);
  EXPECT_NE(bob_.log().find("refused a message from the network to " + bob_via_hub_.address()),
            std::string::npos)
      << bob_.log();
  ExpectChannelsWork();
}

// 2. A stranger cannot unregister Bob's relay through Bob's own relay channel, nor take the name.
TEST_P(AccessControlTest, StrangerCannotHijackARelayName) {
  wire::v1::RelayRequest unregister;
  unregister.set_request_id(1);
  unregister.mutable_unregister()->set_name("bob");
  RawPeer eve;
  ASSERT_TRUE(eve.ConnectHop(hub_hop_, ca()));
  ASSERT_TRUE(
      eve.Send("/service/forward_to_bob/service/" + bob_to_hub_.address() + "/service/relay",
               "/service/eve", unregister.SerializeAsString()));
  ExpectRefused(eve, "ACCESS_DENIED", "a relay request through Bob's channel to the hub");
  // And straight to the hub's relay service: only out of a secure channel.
  ASSERT_TRUE(eve.Send("/service/relay", "/service/eve", unregister.SerializeAsString()));
  ExpectRefused(eve, "SECURE_CHANNEL_REQUIRED", "a relay request without a channel");

  VeildProcess mallory({"--tls-ca", ca()});
  ASSERT_TRUE(mallory.Start()) << mallory.log();
  v1::Relay stolen;
  grpc::Status s = CreateRelay(Connect(mallory.api_target()), hub_hop_, "bob", &stolen);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(GetRelay(bob_api_, "bob").state(), v1::Relay::UP);
  EXPECT_TRUE(CreateSecureChannel(alice_api_, relay_.route() + "/service/listener", TrustEveryone(),
                                  &via_hub_)
                  .ok());
  EXPECT_EQ(via_hub_.remote_identifier(), DefaultIdentifier(bob_api_));
  ExpectChannelsWork();
}

// 3. No node dials anywhere for a stranger: not the hub, not Bob directly, not Bob behind the
// relay.
TEST_P(AccessControlTest, StrangerCannotMakeAnyNodeDial) {
  Bystander target;
  const std::string onward = "/tcp/" + target.address() + "/service/anything";
  RawPeer at_hub, at_bob;
  ASSERT_TRUE(at_hub.ConnectHop(hub_hop_, ca()));
  ASSERT_TRUE(at_bob.ConnectHop(bob_hop_, ca()));
  ASSERT_TRUE(at_hub.Send(onward, "/service/eve", "GET / HTTP/1.0\r\n\r\n"));
  ExpectRefused(at_hub, "DIAL_REFUSED", "the hub");
  ASSERT_TRUE(at_bob.Send(onward, "/service/eve", "GET / HTTP/1.0\r\n\r\n"));
  ExpectRefused(at_bob, "DIAL_REFUSED", "Bob, directly");
  ASSERT_TRUE(at_hub.Send("/service/forward_to_bob" + onward, "/service/eve", "GET /"));
  ExpectRefused(at_hub, "DIAL_REFUSED", "Bob, behind the relay");
  // Nor to a Unix socket on the node's host.
  UnixBystander local(dir_.path() + "/private.sock");
  const std::string local_onward = UdsHop(local.path()) + "/service/anything";
  ASSERT_TRUE(at_hub.Send(local_onward, "/service/eve", "GET /"));
  ExpectRefused(at_hub, "DIAL_REFUSED", "the hub, to a Unix socket");
  ASSERT_TRUE(at_bob.Send(local_onward, "/service/eve", "GET /"));
  ExpectRefused(at_bob, "DIAL_REFUSED", "Bob, to a Unix socket");
  EXPECT_FALSE(local.Contacted(milliseconds(100))) << "a node dialled a Unix socket for a stranger";
  EXPECT_FALSE(target.Contacted(milliseconds(500))) << "a node dialled for a stranger";
  EXPECT_GE(Scrape(hub_, "veil_transport_dials_refused_total"), 2);
  EXPECT_GE(Scrape(bob_, "veil_transport_dials_refused_total"), 3);
  ExpectChannelsWork();
}

// 4. No plaintext reaches an app from the network unless it opted in; nobody writes onto
// another node's connection to the hub.
TEST_P(AccessControlTest, StrangerCannotDeliverPlaintextToApps) {
  RawPeer eve, direct;
  ASSERT_TRUE(eve.ConnectHop(hub_hop_, ca()));
  ASSERT_TRUE(direct.ConnectHop(bob_hop_, ca()));
  ASSERT_TRUE(eve.Send("/service/forward_to_bob/service/echoer", "/service/eve", "plaintext"));
  ExpectRefused(eve, "ACCESS_DENIED", "plaintext to Bob's echoer through the relay");
  ASSERT_TRUE(direct.Send("/service/echoer", "/service/eve", "plaintext"));
  ExpectRefused(direct, "ACCESS_DENIED", "plaintext to Bob's echoer directly");
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(echoer_->echoed(), 0u);
  // Writing onto Alice's (or Bob's) connection to the hub by naming its worker.
  for (const std::string& worker : ConnectionWorkers(hub_api_)) {
    ASSERT_TRUE(eve.Send("/service/" + worker + "/service/inbox", "/service/eve", "plaintext"));
    ExpectRefused(eve, "ACCESS_DENIED", "onto a hub connection");
  }
  EXPECT_TRUE(inbox_->Received().empty());
  // An address that opts in takes them, marked as unauthenticated.
  Inbox open_door(bob_api_, "public", /*accept_unencrypted=*/true);
  ASSERT_TRUE(open_door.WaitOpened());
  ASSERT_TRUE(direct.Send("/service/public", "/service/eve", "hello, anyone"));
  ASSERT_TRUE(open_door.WaitFor(1));
  EXPECT_EQ(open_door.Received()[0].payload(), "hello, anyone");
  EXPECT_EQ(open_door.Received()[0].sender().origin(), v1::Sender::ORIGIN_TRANSPORT);
  ExpectChannelsWork();
}

// 4b. A stranger reaches neither a portal outlet (only out of a secure channel) nor a portal
// session (only out of its own channel): not through the relay, not at Bob's port.
TEST_P(AccessControlTest, StrangerCannotReachPortals) {
  Bystander target;
  {
    grpc::ClientContext c;
    v1::CreateOutletRequest outlet;
    outlet.set_name("db");
    outlet.set_target(target.address());
    outlet.mutable_trust_policy()->set_trust_everyone(true);
    v1::Outlet created;
    ASSERT_TRUE(v1::PortalService::NewStub(bob_api_)->CreateOutlet(&c, outlet, &created).ok());
  }
  // Alice's app opens a session itself, through her direct channel: the outlet's session
  // answers Opened from its address.
  wire::v1::PortalFrame open;
  open.mutable_open()->set_window(65536);
  open.mutable_open()->set_version(1);
  v1::RequestResponse reply;
  grpc::Status s =
      Request(alice_api_, direct_.route() + "/service/db", open.SerializeAsString(), &reply);
  ASSERT_TRUE(s.ok()) << s.error_message();
  wire::v1::PortalFrame opened;
  ASSERT_TRUE(opened.ParseFromString(reply.reply().payload()));
  ASSERT_TRUE(opened.has_opened()) << opened.DebugString();
  const std::string session = LastHop(reply.reply().return_route());
  ASSERT_TRUE(absl::StartsWith(session, "_po_")) << session;

  wire::v1::PortalFrame data;
  data.mutable_data()->set_offset(0);
  data.mutable_data()->set_bytes("injected");
  RawPeer eve, direct;
  ASSERT_TRUE(eve.ConnectHop(hub_hop_, ca()));
  ASSERT_TRUE(direct.ConnectHop(bob_hop_, ca()));
  for (auto [peer, prefix] : {std::pair{&eve, std::string("/service/forward_to_bob")},
                              std::pair{&direct, std::string()}}) {
    ASSERT_TRUE(peer->Send(prefix + "/service/db", "/service/eve", open.SerializeAsString()));
    ExpectRefused(*peer, "SECURE_CHANNEL_REQUIRED", "an Open from the network: " + prefix);
    ASSERT_TRUE(
        peer->Send(prefix + "/service/" + session, "/service/eve", data.SerializeAsString()));
    ExpectRefused(*peer, "ACCESS_DENIED", "Data into Alice's session from the network: " + prefix);
  }
  // Only Alice's one session ever started, and it is still open.
  grpc::ClientContext c;
  v1::ListOutletsResponse outlets;
  ASSERT_TRUE(v1::PortalService::NewStub(bob_api_)->ListOutlets(&c, {}, &outlets).ok());
  ASSERT_EQ(outlets.outlets_size(), 1);
  EXPECT_EQ(outlets.outlets(0).counters().sessions_total(), 1u);
  EXPECT_EQ(outlets.outlets(0).counters().sessions_active(), 1u);
  EXPECT_EQ(outlets.outlets(0).counters().sessions_reset(), 0u);
  ExpectChannelsWork();
}

// 5. Forged refusal notices end nothing: not from off the path, not without the channel's tag.
TEST_P(AccessControlTest, StrangerCannotEndChannels) {
  RawPeer eve, direct;
  ASSERT_TRUE(eve.ConnectHop(hub_hop_, ca()));
  ASSERT_TRUE(direct.ConnectHop(bob_hop_, ca()));
  const std::string bob_decryptor_via_hub = LastHop(via_hub_.remote_route());
  const std::string bob_decryptor_direct = LastHop(direct_.remote_route());
  absl::Status notice =
      ErrorWithReason(absl::StatusCode::kNotFound, "the relay is gone", "ROUTE_NOT_FOUND");
  // Through the relay the notice reaches the connection Bob's channel runs over, but without
  // the channel's path tag: dropped and counted. Guessed tags fare no better.
  for (uint64_t tag : {uint64_t{0}, uint64_t{1}, uint64_t{0x0123456789abcdef}}) {
    ASSERT_TRUE(
        eve.Send("/service/forward_to_bob/service/" + bob_decryptor_via_hub, "", "", notice, tag));
  }
  // Directly at Bob: not the connection his channel runs over: refused.
  ASSERT_TRUE(direct.Send("/service/" + bob_decryptor_via_hub, "/service/eve", "", notice));
  ASSERT_TRUE(direct.Send("/service/" + bob_decryptor_direct, "/service/eve", "", notice));
  // At the hub, Alice's decryptor behind Alice's hub connection: refused there.
  for (const std::string& worker : ConnectionWorkers(hub_api_)) {
    ASSERT_TRUE(eve.Send("/service/" + worker + "/service/" + LastHop(bob_via_hub_.remote_route()),
                         "", "", notice));
  }
  // At the hub's own channel with Bob (its decryptor runs over Bob's connection): a notice is
  // refused silently (no notice about a notice), anything else visibly.
  const double hub_denied = Denied(hub_);
  const std::string hub_decryptor = "/service/" + LastHop(bob_to_hub_.remote_route());
  ASSERT_TRUE(eve.Send(hub_decryptor, "/service/eve", "", notice));
  ASSERT_TRUE(eve.Send(hub_decryptor, "/service/eve", std::string("\x12", 1)));
  ExpectRefused(eve, "ACCESS_DENIED", "the hub's decryptor from another connection");
  EXPECT_GE(Denied(hub_), hub_denied + 2);
  // A forged handshake error at an established channel: dropped too.
  ASSERT_TRUE(eve.Send("/service/forward_to_bob/service/" + bob_decryptor_via_hub, "/service/eve",
                       std::string("\x04"
                                   "go away",
                                   8)));
  // (The notices sent directly to Bob come on another connection: they are counted in their
  // own time, so wait for both.)
  for (int i = 0; i < 100 && (Scrape(bob_, "veil_secure_channel_forged_notices_total") < 4 ||
                              Denied(bob_) < 2);
       ++i) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(Scrape(bob_, "veil_secure_channel_forged_notices_total"), 4);
  EXPECT_GE(Denied(bob_), 2);
  EXPECT_NE(bob_.log().find("does not echo the channel's path tag"), std::string::npos);
  ExpectChannelsWork();
  for (const auto& ch : ListSecureChannels(bob_api_)) {
    EXPECT_EQ(ch.state(), v1::SecureChannel::ESTABLISHED) << ch.address();
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, AccessControlTest,
                         ::testing::Values("tcp", "uds", "ws", "wss"),
                         [](const auto& info) { return info.param; });

// A handshake opening of XX message 1: a fresh-looking ephemeral key, no payload.
std::string Hs1() {
  std::string hs1(1, '\x01');
  for (int i = 0; i < 32; ++i) hs1.push_back(static_cast<char>(std::rand()));
  return hs1;
}

// How many of `n` handshake openings sent on `eve` came back refused ("busy"), and how many
// were answered with HS2, within `limit` after the last.
std::pair<int, int> OpenHandshakes(RawPeer& eve, int n) {
  for (int i = 0; i < n; ++i) EXPECT_TRUE(eve.Send("/service/listener", "/service/eve", Hs1()));
  int refused = 0, answered = 0;
  while (refused + answered < n) {
    auto msg = eve.Read(seconds(5));
    if (!msg.has_value()) break;
    if (msg->payload.empty()) continue;
    if (msg->payload[0] == '\x04') ++refused;
    if (msg->payload[0] == '\x02') ++answered;
  }
  return {refused, answered};
}

// 6a. Half-open handshakes: a stranger is capped per connection and per address; others still
// get in.
TEST(AccessControlLimitsTest, HalfOpenHandshakesAreCappedPerConnectionAndPerAddress) {
  VeildProcess bob({"--tcp-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                    "--max-pending-handshakes-per-connection", "16",
                    "--max-pending-handshakes-per-address", "40"});
  VeildProcess alice;
  ASSERT_TRUE(bob.Start()) << bob.log();
  ASSERT_TRUE(alice.Start()) << alice.log();
  auto bob_api = Connect(bob.api_target());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  const std::string bob_tcp = TcpListenAddress(bob_api);
  RawPeer first;
  ASSERT_TRUE(first.Connect(bob_tcp, "127.0.0.2"));
  auto [refused, answered] = OpenHandshakes(first, 50);
  EXPECT_EQ(answered, 16);
  EXPECT_EQ(refused, 34);
  RawPeer second, third;
  ASSERT_TRUE(second.Connect(bob_tcp, "127.0.0.2"));
  ASSERT_TRUE(third.Connect(bob_tcp, "127.0.0.2"));
  EXPECT_EQ(OpenHandshakes(second, 16).second, 16);
  auto from_third = OpenHandshakes(third, 16);  // 40 per address: 8 more
  EXPECT_EQ(from_third.second, 8);
  EXPECT_EQ(from_third.first, 8);
  // Alice, from another address, is not locked out.
  v1::SecureChannel channel;
  grpc::Status s =
      CreateSecureChannel(Connect(alice.api_target()), "/tcp/" + bob_tcp + "/service/listener",
                          TrustEveryone(), &channel, 5000);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(Scrape(bob, "veil_secure_channel_handshakes_refused_total"), 42);
}

// 6b. The total is kept partly free for handshakes over relays' connections: strangers filling
// what they may do not lock out peers reaching Bob through his relay.
TEST(AccessControlLimitsTest, TheHalfOpenTotalKeepsRoomForRelayedPeers) {
  VeildProcess hub({"--hub", "--tcp-listen", "127.0.0.1:0"});
  VeildProcess bob({"--tcp-listen", "127.0.0.1:0", "--max-pending-handshakes", "40",
                    "--max-pending-handshakes-per-connection", "100",
                    "--max-pending-handshakes-per-address", "100"});
  VeildProcess alice;
  for (auto* node : {&hub, &bob, &alice}) ASSERT_TRUE(node->Start()) << node->log();
  auto bob_api = Connect(bob.api_target());
  auto alice_api = Connect(alice.api_target());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  v1::Relay relay;
  ASSERT_TRUE(
      CreateRelay(bob_api, "/tcp/" + TcpListenAddress(Connect(hub.api_target())), "bob", &relay)
          .ok());
  RawPeer eve;
  ASSERT_TRUE(eve.Connect(TcpListenAddress(bob_api), "127.0.0.2"));
  auto [refused, answered] = OpenHandshakes(eve, 40);
  EXPECT_EQ(answered, 30);  // three quarters of 40
  EXPECT_EQ(refused, 10);
  v1::SecureChannel channel;
  grpc::Status direct =
      CreateSecureChannel(alice_api, "/tcp/" + TcpListenAddress(bob_api) + "/service/listener",
                          TrustEveryone(), &channel, 5000);
  EXPECT_EQ(direct.error_code(), grpc::StatusCode::PERMISSION_DENIED) << direct.error_message();
  EXPECT_NE(direct.error_message().find("busy"), std::string::npos) << direct.error_message();
  grpc::Status relayed = CreateSecureChannel(alice_api, relay.route() + "/service/listener",
                                             TrustEveryone(), &channel, 5000);
  EXPECT_TRUE(relayed.ok()) << relayed.error_message();
}

// 6c. The handshake rate.
TEST(AccessControlLimitsTest, HandshakeRateIsBounded) {
  VeildProcess bob({"--tcp-listen", "127.0.0.1:0", "--max-handshake-rate", "5"});
  ASSERT_TRUE(bob.Start()) << bob.log();
  auto bob_api = Connect(bob.api_target());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  RawPeer eve;
  ASSERT_TRUE(eve.Connect(TcpListenAddress(bob_api)));
  auto [refused, answered] = OpenHandshakes(eve, 30);
  EXPECT_LE(answered, 8);  // a second's worth, and what a second of sending refills
  EXPECT_GE(refused, 22);
  EXPECT_NE(bob.log().find("too many handshakes per second"), std::string::npos);
}

// 6d. Connections: capped in all and per address, refused with a reason the peer reads; idle
// ones that carry nothing of the node's are closed.
TEST(AccessControlLimitsTest, ConnectionsAreCappedAndIdleOnesClosed) {
  VeildProcess bob({"--tcp-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                    "--max-connections-per-address", "4", "--max-connections", "8",
                    "--connection-idle-timeout", "1"});
  VeildProcess alice;
  ASSERT_TRUE(bob.Start()) << bob.log();
  ASSERT_TRUE(alice.Start()) << alice.log();
  auto bob_api = Connect(bob.api_target());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  EchoApp echoer(bob_api, "echoer");
  ASSERT_TRUE(echoer.WaitOpened());
  const std::string bob_tcp = TcpListenAddress(bob_api);
  // Alice's channel: its connection idles, but carries a channel, so it stays.
  v1::SecureChannel channel;
  ASSERT_TRUE(CreateSecureChannel(Connect(alice.api_target()),
                                  "/tcp/" + bob_tcp + "/service/listener", TrustEveryone(),
                                  &channel)
                  .ok());
  std::vector<std::unique_ptr<RawPeer>> eves;
  for (int i = 0; i < 5; ++i) {
    eves.push_back(std::make_unique<RawPeer>());
    ASSERT_TRUE(eves.back()->Connect(bob_tcp, "127.0.0.3"));
  }
  ASSERT_TRUE(eves[4]->WaitClosed(seconds(3)));
  EXPECT_EQ(veil::ReasonOf(eves[4]->last_connection_refusal()), "TOO_MANY_CONNECTIONS");
  EXPECT_NE(eves[4]->last_connection_refusal().message().find("127.0.0.3"), std::string::npos);
  for (int i = 0; i < 4; ++i) {
    eves.push_back(std::make_unique<RawPeer>());
    ASSERT_TRUE(eves.back()->Connect(bob_tcp, "127.0.0." + std::to_string(10 + i)));
  }
  ASSERT_TRUE(eves.back()->WaitClosed(seconds(3)));  // 8 in all: Alice's, 4, and 3 of these
  EXPECT_EQ(veil::ReasonOf(eves.back()->last_connection_refusal()), "TOO_MANY_CONNECTIONS");
  // The idle ones are closed with a refusal saying why; Alice's channel still works after.
  ASSERT_TRUE(eves[0]->WaitClosed(seconds(5)));
  EXPECT_EQ(veil::ReasonOf(eves[0]->last_connection_refusal()), "IDLE_TIMEOUT");
  std::this_thread::sleep_for(milliseconds(1500));
  v1::RequestResponse reply;
  grpc::Status s = Request(Connect(alice.api_target()), channel.route() + "/service/echoer",
                           "after idling", &reply);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(Scrape(bob, "veil_transport_connections_refused_total"), 2);
  EXPECT_GE(Scrape(bob, "veil_transport_idle_closed_total"), 4);
}

// 6e. Memory: a thousand idle unauthenticated connections cost the hub little.
TEST(AccessControlLimitsTest, IdleConnectionsCostLittleMemory) {
  rlimit files{};  // this test holds 1,032 sockets
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &files), 0);
  files.rlim_cur = files.rlim_max;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_cur < 2200)
    GTEST_SKIP() << "needs 2,200 open files; the hard limit is " << files.rlim_max;
  VeildProcess hub({"--hub", "--tcp-listen", "127.0.0.1:0", "--max-connections", "2000"});
  ASSERT_TRUE(hub.Start()) << hub.log();
  const std::string hub_tcp = TcpListenAddress(Connect(hub.api_target()));
  // Warm up (the first connections allocate the node's pools).
  std::vector<std::unique_ptr<RawPeer>> peers;
  for (int i = 0; i < 32; ++i) {
    peers.push_back(std::make_unique<RawPeer>());
    ASSERT_TRUE(peers.back()->Connect(hub_tcp, "127.0.1.1"));
  }
  std::this_thread::sleep_for(milliseconds(300));
  const size_t before = hub.rss_kib();
  for (int i = 0; i < 1000; ++i) {  // 32 per address, the default limit
    peers.push_back(std::make_unique<RawPeer>());
    ASSERT_TRUE(peers.back()->Connect(hub_tcp, "127.0.2." + std::to_string(1 + i / 32)));
  }
  for (int i = 0; i < 200 && GetNode(Connect(hub.api_target())).tcp_connections_size() < 1032;
       ++i) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(GetNode(Connect(hub.api_target())).tcp_connections_size(), 1032);
  const size_t grown = hub.rss_kib() - before;
  std::printf("1,000 idle connections: hub RSS +%zu KiB (%.1f KiB each)\n", grown, grown / 1000.0);
  EXPECT_LT(grown, (kAddressSanitizer || kThreadSanitizer ? 100 : 30) * 1000u);
}

// 6f. Frames forwarded to a connection that does not drain meet its write-queue limit too: a
// flood from many connections into one stalled target holds little.
TEST(AccessControlLimitsTest, ForwardedFramesMeetTheWriteQueueLimit) {
  // An allow-list that lets the hub dial the stalled target (a port that never reads).
  int stalled = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(stalled, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(stalled, 4), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(stalled, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string target = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  VeildProcess hub({"--tcp-listen", "127.0.0.1:0", "--allow-dial", target,
                    "--max-connection-queue-bytes", "1048576"});
  ASSERT_TRUE(hub.Start()) << hub.log();
  const std::string hub_tcp = TcpListenAddress(Connect(hub.api_target()));
  const size_t before = hub.rss_kib();
  std::vector<std::unique_ptr<RawPeer>> eves;
  std::vector<std::thread> senders;
  std::atomic<int> queue_full{0};
  for (int i = 0; i < 8; ++i) {
    eves.push_back(std::make_unique<RawPeer>());
    ASSERT_TRUE(eves.back()->Connect(hub_tcp));
  }
  for (auto& eve : eves) {
    senders.emplace_back([&eve, &target, &queue_full] {
      const std::string chunk(256 * 1024, 'x');
      for (int n = 0; n < 32; ++n) {  // 8 MiB each
        if (!eve->Send("/tcp/" + target + "/service/x", "/service/eve", chunk)) return;
      }
      while (auto notice = eve->ReadRefusal(milliseconds(1500))) {
        if (veil::ReasonOf(notice->refusal) == "QUEUE_FULL") ++queue_full;
      }
    });
  }
  for (auto& t : senders) t.join();
  const size_t grown = hub.rss_kib() - before;
  std::printf("64 MiB at a stalled target: hub RSS +%zu KiB, %d QUEUE_FULL notices\n", grown,
              queue_full.load());
  // 256 frames of 256 KiB were sent: all but what the write queue (1 MiB) and the kernel's
  // socket buffers hold came back refused.
  EXPECT_GE(queue_full.load(), 256 - 40);
  // (Under ASan freed memory sits in quarantine: RSS says nothing there.)
  if (!kAddressSanitizer) {
    EXPECT_LT(grown, 32 * 1024u);
  }
  ::close(stalled);
}

// 6g. One identity cannot fill the channel table; a full table answers at once.
TEST(AccessControlLimitsTest, ChannelsPerIdentityAndAFullTableAreRefusedAtOnce) {
  VeildProcess bob({"--tcp-listen", "127.0.0.1:0", "--max-channels-per-identity", "2"});
  VeildProcess carol({"--tcp-listen", "127.0.0.1:0", "--max-channels", "2"});
  VeildProcess alice({"--identity", "second"});
  for (auto* node : {&bob, &carol, &alice}) ASSERT_TRUE(node->Start()) << node->log();
  auto alice_api = Connect(alice.api_target());
  for (auto* node : {&bob, &carol}) {
    ASSERT_TRUE(CreateListener(Connect(node->api_target()), "listener", TrustEveryone()).ok());
  }
  const std::string to_bob =
      "/tcp/" + TcpListenAddress(Connect(bob.api_target())) + "/service/listener";
  const std::string to_carol =
      "/tcp/" + TcpListenAddress(Connect(carol.api_target())) + "/service/listener";
  v1::SecureChannel channel;
  for (int i = 0; i < 2; ++i)
    ASSERT_TRUE(CreateSecureChannel(alice_api, to_bob, TrustEveryone(), &channel).ok());
  grpc::Status third = CreateSecureChannel(alice_api, to_bob, TrustEveryone(), &channel);
  EXPECT_EQ(third.error_code(), grpc::StatusCode::PERMISSION_DENIED) << third.error_message();
  EXPECT_EQ(ReasonOf(third), "PEER_REFUSED_HANDSHAKE");
  EXPECT_NE(third.error_message().find("too many channels from this identity"), std::string::npos);
  // Another identity still gets one.
  auto stub = v1::SecureChannelService::NewStub(alice_api);
  v1::CreateSecureChannelRequest request;
  request.set_route(to_bob);
  request.set_identity("second");
  *request.mutable_trust_policy() = TrustEveryone();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(10));
  grpc::Status other = stub->CreateSecureChannel(&context, request, &channel);
  EXPECT_TRUE(other.ok()) << other.error_message();
  // Carol's table holds 2 channels: the third handshake is refused at once, not timed out.
  for (int i = 0; i < 2; ++i)
    ASSERT_TRUE(CreateSecureChannel(alice_api, to_carol, TrustEveryone(), &channel).ok());
  auto start = std::chrono::steady_clock::now();
  grpc::Status full = CreateSecureChannel(alice_api, to_carol, TrustEveryone(), &channel);
  EXPECT_EQ(ReasonOf(full), "PEER_REFUSED_HANDSHAKE") << full.error_message();
  EXPECT_NE(full.error_message().find("too many channels"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(3));
}

// 6h. Idle channels expire on both ends (configurable).
TEST(AccessControlLimitsTest, IdleChannelsExpire) {
  VeildProcess bob({"--tcp-listen", "127.0.0.1:0", "--channel-idle-timeout", "0.5"});
  VeildProcess alice;
  ASSERT_TRUE(bob.Start()) << bob.log();
  ASSERT_TRUE(alice.Start()) << alice.log();
  auto bob_api = Connect(bob.api_target());
  auto alice_api = Connect(alice.api_target());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  v1::SecureChannel channel;
  ASSERT_TRUE(CreateSecureChannel(alice_api,
                                  "/tcp/" + TcpListenAddress(bob_api) + "/service/listener",
                                  TrustEveryone(), &channel)
                  .ok());
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    std::this_thread::sleep_for(milliseconds(50));
    gone = ListSecureChannels(bob_api).empty() && ListSecureChannels(alice_api).empty();
  }
  EXPECT_TRUE(gone) << "the idle channel outlived its timeout";
  EXPECT_NE(bob.log().find("no message either way for 500 ms"), std::string::npos) << bob.log();
}

// 6i. A responder whose initiator never confirms (its CONFIRM was lost on the way) does not keep
// an established channel for ever.
TEST(AccessControlLimitsTest, AChannelWhoseConfirmIsLostExpiresOnTheResponder) {
  VeildProcess hub({"--hub", "--tcp-listen", "127.0.0.1:0"});
  VeildProcess bob({"--handshake-timeout", "1", "--metrics-listen", "127.0.0.1:0"});
  VeildProcess alice;
  for (auto* node : {&hub, &bob, &alice}) ASSERT_TRUE(node->Start()) << node->log();
  auto bob_api = Connect(bob.api_target());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  // Bob reaches the hub through a proxy that drops every CONFIRM (type 0x11) Bob sends: only
  // responders send them, so it is the one of Alice's channel.
  TcpProxy proxy(TcpListenAddress(Connect(hub.api_target())));
  proxy.set_hook([](const std::string& frame) -> std::vector<std::string> {
    auto msg = core::DecodeMessage(absl::string_view(frame).substr(transport::kFrameHeaderBytes));
    if (msg.ok() && !msg->payload.empty() && msg->payload[0] == '\x11') return {};
    return {frame};
  });
  v1::Relay relay;
  ASSERT_TRUE(
      CreateRelay(bob_api, "/tcp/127.0.0.1:" + std::to_string(proxy.port()), "bob", &relay).ok());
  v1::SecureChannel channel;
  grpc::Status s =
      CreateSecureChannel(Connect(alice.api_target()), relay.route() + "/service/listener",
                          TrustEveryone(), &channel, 1500);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  bool expired = false;
  for (int i = 0; i < 100 && !expired; ++i) {
    std::this_thread::sleep_for(milliseconds(50));
    expired = Scrape(bob, "veil_secure_channels_expired_total{reason=\"unconfirmed\"}") == 1;
  }
  EXPECT_TRUE(expired) << bob.log();
  int responders = 0;
  for (const auto& ch : ListSecureChannels(bob_api))
    responders += ch.role() == v1::SecureChannel::RESPONDER;
  EXPECT_EQ(responders, 0);
  EXPECT_NE(bob.log().find("the initiator never confirmed the channel"), std::string::npos);
}

// 7. The local API: a trust file's error never quotes it; only regular files.
TEST(AccessControlLocalTest, TrustFileErrorsQuoteNothingAndOnlyRegularFilesAreRead) {
  VeildProcess bob;
  ASSERT_TRUE(bob.Start()) << bob.log();
  auto bob_api = Connect(bob.api_target());
  const std::string secret = bob.state_dir() + "/not-a-trust-file";
  {
    std::ofstream out(secret);
    out << "VEIL_VAULT_KEY=hunter2-the-secret\n";
  }
  for (const std::string& path :
       {secret, std::string("/dev/zero"), std::string("/proc/self/environ")}) {
    v1::TrustPolicy policy;
    policy.set_trust_identifiers_file(path);
    grpc::Status s = CreateListener(bob_api, "listener", policy);
    EXPECT_FALSE(s.ok()) << path;
    EXPECT_EQ(s.error_message().find("hunter2"), std::string::npos) << s.error_message();
    EXPECT_EQ(s.error_message().find("VEIL_"), std::string::npos) << s.error_message();
  }
  EXPECT_EQ(bob.log().find("hunter2"), std::string::npos);
}

}  // namespace
}  // namespace veil::testing
