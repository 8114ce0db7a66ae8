// Secure channels end to end: real veild processes (no --insecure-plaintext anywhere), real
// gRPC apps, TCP on 127.0.0.1, and a recording proxy on the wire.
#include <sys/stat.h>

#include <chrono>
#include <random>
#include <thread>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/api_client.h"
#include "tests/support/metrics_scrape.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/veild_process.h"

namespace veil::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;

int ListedChannels(const std::shared_ptr<grpc::Channel>& channel) {
  return static_cast<int>(ListSecureChannels(channel).size());
}

// The channels listed once closing ones are gone: a failed or closed channel is removed on its
// own strand just after the call that reported it returns (or, at the far end, when the CLOSE
// arrives), so wait up to 5 s for `want`.
int ChannelCount(const std::shared_ptr<grpc::Channel>& channel, int want = 0) {
  int n = ListedChannels(channel);
  for (int i = 0; i < 500 && n != want; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
    n = ListedChannels(channel);
  }
  return n;
}

// Bob: a TCP listener, an echoer app and a secure channel listener. Alice: a plain sidecar.
class SecureChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(bob_.Start()) << bob_.log();
    ASSERT_TRUE(alice_.Start()) << alice_.log();
    bob_api_ = Connect(bob_.api_target());
    alice_api_ = Connect(alice_.api_target());
    bob_tcp_ = TcpListenAddress(bob_api_);
    echoer_ = std::make_unique<EchoApp>(bob_api_, "echoer");
    ASSERT_TRUE(echoer_->WaitOpened());
  }
  std::string ListenerRoute(const std::string& tcp) { return "/tcp/" + tcp + "/service/listener"; }

  VeildProcess bob_{{"--tcp-listen", "127.0.0.1:0"}};
  VeildProcess alice_;
  std::shared_ptr<grpc::Channel> bob_api_, alice_api_;
  std::string bob_tcp_;
  std::unique_ptr<EchoApp> echoer_;
};

TEST_F(SecureChannelTest, SeedScenarioWithoutTheHub) {
  ASSERT_TRUE(CreateListener(bob_api_, "listener", TrustEveryone()).ok());
  v1::SecureChannel channel;
  grpc::Status s =
      CreateSecureChannel(alice_api_, ListenerRoute(bob_tcp_), TrustEveryone(), &channel);
  ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << alice_.log() << bob_.log();
  EXPECT_EQ(channel.state(), v1::SecureChannel::ESTABLISHED);
  EXPECT_EQ(channel.remote_identifier(), DefaultIdentifier(bob_api_));
  EXPECT_EQ(channel.local_identifier(), DefaultIdentifier(alice_api_));

  v1::RequestResponse reply;
  s = Request(alice_api_, channel.route() + "/service/echoer", "Hello Ockam!", &reply);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(reply.reply().payload(), "Hello Ockam!");
  // Both deliveries carry the authenticated identity of the other end.
  EXPECT_EQ(reply.reply().sender().origin(), v1::Sender::ORIGIN_SECURE_CHANNEL);
  EXPECT_EQ(reply.reply().sender().identifier(), DefaultIdentifier(bob_api_));
  EXPECT_EQ(reply.reply().sender().channel(), channel.address());
  EXPECT_EQ(echoer_->last_sender().origin(), v1::Sender::ORIGIN_SECURE_CHANNEL);
  EXPECT_EQ(echoer_->last_sender().identifier(), DefaultIdentifier(alice_api_));
}

TEST_F(SecureChannelTest, ThousandMessagesInOrderAndOneMebibyte) {
  ASSERT_TRUE(CreateListener(bob_api_, "listener", TrustEveryone()).ok());
  v1::SecureChannel channel;
  ASSERT_TRUE(
      CreateSecureChannel(alice_api_, ListenerRoute(bob_tcp_), TrustEveryone(), &channel).ok());
  std::string route = channel.route() + "/service/echoer";
  ServeClient app(alice_api_, "app", 512);
  ASSERT_TRUE(app.Read()->has_opened());
  std::thread sender([&] {
    for (int b = 0; b < 10; ++b) {
      std::vector<std::pair<std::string, std::string>> batch;
      for (int i = 0; i < 100; ++i) batch.emplace_back(route, "m" + std::to_string(b * 100 + i));
      ASSERT_TRUE(app.Send(b + 1, batch));
    }
  });
  int received = 0;
  while (received < 1000) {
    auto r = app.Read();
    ASSERT_TRUE(r.has_value());
    if (!r->has_deliveries()) {
      if (r->has_send_result()) {
        EXPECT_EQ(r->send_result().failures_size(), 0);
      }
      continue;
    }
    for (const auto& d : r->deliveries().deliveries()) {
      EXPECT_EQ(d.payload(), "m" + std::to_string(received));
      EXPECT_EQ(d.sender().origin(), v1::Sender::ORIGIN_SECURE_CHANNEL);
      ++received;
    }
    app.Ack(r->deliveries().deliveries().rbegin()->sequence());
  }
  sender.join();
  std::string big(1 << 20, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + 3);
  v1::RequestResponse reply;
  ASSERT_TRUE(Request(alice_api_, route, big, &reply).ok());
  EXPECT_EQ(reply.reply().payload(), big);
}

TEST_F(SecureChannelTest, ResponderNotTrustedByInitiator) {
  ASSERT_TRUE(CreateListener(bob_api_, "listener", TrustEveryone()).ok());
  std::string someone_else = "I0123456789abcdef0123456789abcdef";
  v1::SecureChannel channel;
  grpc::Status s = CreateSecureChannel(alice_api_, ListenerRoute(bob_tcp_),
                                       TrustIdentifier(someone_else), &channel);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ReasonOf(s), "UNTRUSTED_IDENTITY");
  EXPECT_NE(s.error_message().find(DefaultIdentifier(bob_api_)), std::string::npos);
  // Bob hears about it too, and keeps no half-open channel.
  for (int i = 0; i < 200 && bob_.log().find("refused the handshake") == std::string::npos; ++i) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_NE(bob_.log().find("refused the handshake"), std::string::npos) << bob_.log();
  EXPECT_EQ(ChannelCount(bob_api_), 0);
  EXPECT_EQ(ChannelCount(alice_api_), 0);
}

TEST_F(SecureChannelTest, InitiatorNotTrustedByListener) {
  ASSERT_TRUE(
      CreateListener(bob_api_, "listener", TrustIdentifier("I0123456789abcdef0123456789abcdef"))
          .ok());
  v1::SecureChannel channel;
  grpc::Status s =
      CreateSecureChannel(alice_api_, ListenerRoute(bob_tcp_), TrustEveryone(), &channel);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ReasonOf(s), "PEER_REFUSED_HANDSHAKE");
  // Alice hears that she is not trusted, not whom Bob trusts; Bob's log says it all.
  EXPECT_NE(s.error_message().find("identity not trusted"), std::string::npos) << s.error_message();
  EXPECT_EQ(s.error_message().find("I0123456789abcdef0123456789abcdef"), std::string::npos)
      << s.error_message();
  EXPECT_NE(bob_.log().find("is not trusted (trust policy: I0123456789abcdef"), std::string::npos)
      << bob_.log();
  EXPECT_EQ(ChannelCount(alice_api_), 0);
}

// The far node refuses what comes out of a channel and has nowhere to go — through the
// channel, so the sender learns at once and authentically; a message sent without a return
// route has none at the far end either, so it cannot be answered (nor a reply miscounted).
TEST_F(SecureChannelTest, TheFarNodeRefusesThroughTheChannel) {
  ASSERT_TRUE(CreateListener(bob_api_, "listener", TrustEveryone()).ok());
  v1::SecureChannel channel;
  ASSERT_TRUE(
      CreateSecureChannel(alice_api_, ListenerRoute(bob_tcp_), TrustEveryone(), &channel).ok());
  auto start = std::chrono::steady_clock::now();
  v1::RequestResponse reply;
  grpc::Status s = Request(alice_api_, channel.route() + "/service/nobody", "anyone?", &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_EQ(ReasonOf(s), "ROUTE_NOT_FOUND");
  EXPECT_NE(
      s.error_message().find("the far node refused the request: no worker at /service/nobody"),
      std::string::npos)
      << s.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
  // A route that ends at the channel: refused at home.
  s = Request(alice_api_, channel.route(), "to whom?", &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  // Without a return route: the far app sees none.
  ServeClient inbox(bob_api_, "inbox");
  ASSERT_TRUE(inbox.Read()->has_opened());
  auto stub = v1::MessagingService::NewStub(alice_api_);
  v1::SendRequest send;
  auto* m = send.add_messages();
  m->set_route(channel.route() + "/service/inbox");
  m->set_payload("no way back");
  v1::SendResponse sent;
  grpc::ClientContext context;
  ASSERT_TRUE(stub->Send(&context, send, &sent).ok());
  auto delivery = inbox.Read();
  ASSERT_TRUE(delivery.has_value() && delivery->has_deliveries());
  EXPECT_EQ(delivery->deliveries().deliveries(0).payload(), "no way back");
  EXPECT_EQ(delivery->deliveries().deliveries(0).return_route(), "");
  EXPECT_EQ(delivery->deliveries().deliveries(0).sender().origin(),
            v1::Sender::ORIGIN_SECURE_CHANNEL);
}

TEST_F(SecureChannelTest, TrustByIdentifierAndImportedIdentities) {
  v1::TrustPolicy alice_only = TrustIdentifier(DefaultIdentifier(alice_api_));
  ASSERT_TRUE(CreateListener(bob_api_, "listener", alice_only).ok());
  v1::TrustPolicy imported;
  imported.set_trust_imported(true);
  // Alice trusts only imported identities: Bob's, once imported.
  v1::SecureChannel channel;
  EXPECT_EQ(
      CreateSecureChannel(alice_api_, ListenerRoute(bob_tcp_), imported, &channel).error_code(),
      grpc::StatusCode::PERMISSION_DENIED);
  auto ids = v1::IdentityService::NewStub(alice_api_);
  v1::ImportTrustedIdentityRequest import;
  auto bob_ids = v1::IdentityService::NewStub(bob_api_);
  {
    grpc::ClientContext c;
    v1::GetIdentityRequest get;
    get.set_name("default");
    v1::Identity bob;
    ASSERT_TRUE(bob_ids->GetIdentity(&c, get, &bob).ok());
    *import.mutable_public_identity() = bob.public_identity();
  }
  grpc::ClientContext c;
  v1::TrustedIdentity t;
  ASSERT_TRUE(ids->ImportTrustedIdentity(&c, import, &t).ok());
  grpc::Status s = CreateSecureChannel(alice_api_, ListenerRoute(bob_tcp_), imported, &channel);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(SecureChannelTest, HandshakeTimeoutAndUnreachableListener) {
  // A route to an app that takes anything and swallows it: no answer.
  ServeClient sink(bob_api_, "sink", /*window=*/0, /*accept_unencrypted=*/true);
  ASSERT_TRUE(sink.Read()->has_opened());
  v1::SecureChannel channel;
  grpc::Status s = CreateSecureChannel(alice_api_, "/tcp/" + bob_tcp_ + "/service/sink",
                                       TrustEveryone(), &channel, 500);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(ReasonOf(s), "HANDSHAKE_TIMEOUT");
  // No listener at that address on the far node, or one the network may not reach: the far
  // node's refusal fails the handshake at once, with its reason.
  auto start = std::chrono::steady_clock::now();
  s = CreateSecureChannel(alice_api_, "/tcp/" + bob_tcp_ + "/service/nobody", TrustEveryone(),
                          &channel, 5000);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_EQ(ReasonOf(s), "ROUTE_NOT_FOUND");
  EXPECT_NE(s.error_message().find("no worker at /service/nobody"), std::string::npos);
  ServeClient app(bob_api_, "app");
  ASSERT_TRUE(app.Read()->has_opened());
  s = CreateSecureChannel(alice_api_, "/tcp/" + bob_tcp_ + "/service/app", TrustEveryone(),
                          &channel, 5000);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(ReasonOf(s), "ACCESS_DENIED");
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(3));
  // A node that is not there: fails fast with the transport's error.
  s = CreateSecureChannel(alice_api_, "/tcp/127.0.0.1:1/service/listener", TrustEveryone(),
                          &channel);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ReasonOf(s), "CONNECTION_FAILED");
  // A local address that does not exist.
  s = CreateSecureChannel(alice_api_, "/service/nobody", TrustEveryone(), &channel);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  // No trust policy.
  s = CreateSecureChannel(alice_api_, ListenerRoute(bob_tcp_), v1::TrustPolicy(), &channel);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ReasonOf(s), "INVALID_TRUST_POLICY");
  EXPECT_EQ(ChannelCount(alice_api_), 0);
}

TEST_F(SecureChannelTest, ClosingOneEndClosesTheOther) {
  ASSERT_TRUE(CreateListener(bob_api_, "listener", TrustEveryone()).ok());
  auto stub = v1::SecureChannelService::NewStub(alice_api_);
  for (int round = 0; round < 10; ++round) {
    v1::SecureChannel channel;
    ASSERT_TRUE(
        CreateSecureChannel(alice_api_, ListenerRoute(bob_tcp_), TrustEveryone(), &channel).ok());
    ASSERT_EQ(ChannelCount(bob_api_, 1), 1);
    const std::string bobs_end = ListSecureChannels(bob_api_).at(0).address();
    grpc::ClientContext c;
    v1::DeleteSecureChannelRequest del;
    del.set_address(channel.address());
    v1::DeleteSecureChannelResponse r;
    ASSERT_TRUE(stub->DeleteSecureChannel(&c, del, &r).ok());
    // At once and every time (not sometimes ROUTE_NOT_FOUND): what is sent to a deleted
    // channel is refused as CHANNEL_CLOSED, saying why.
    v1::RequestResponse reply;
    grpc::Status s = Request(alice_api_, channel.route() + "/service/echoer", "x", &reply);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
    EXPECT_EQ(ReasonOf(s), "CHANNEL_CLOSED");
    EXPECT_THAT(s.error_message(), HasSubstr("secure channel " + channel.address() +
                                             " is closed: deleted through the API"));
    EXPECT_EQ(ChannelCount(bob_api_), 0);
    EXPECT_EQ(ChannelCount(alice_api_), 0);
    // Bob's end closed too, and says so to Bob's apps.
    s = Request(bob_api_, "/service/" + bobs_end + "/service/echoer", "x", &reply);
    EXPECT_EQ(ReasonOf(s), "CHANNEL_CLOSED") << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("closed by the other end"));
  }
  // An address that never was a channel is still just not found.
  v1::RequestResponse reply;
  EXPECT_EQ(ReasonOf(Request(alice_api_, "/service/_sc_neverWasOne/service/echoer", "x", &reply)),
            "ROUTE_NOT_FOUND");
}

TEST_F(SecureChannelTest, IdentityInUseCannotBeDeleted) {
  ASSERT_TRUE(CreateListener(bob_api_, "listener", TrustEveryone()).ok());
  auto ids = v1::IdentityService::NewStub(bob_api_);
  grpc::ClientContext c;
  v1::DeleteIdentityRequest del;
  del.set_name("default");
  v1::DeleteIdentityResponse r;
  grpc::Status s = ids->DeleteIdentity(&c, del, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ReasonOf(s), "IDENTITY_IN_USE");
}

// The "ensure" form: an app that runs again finds its listener in place; a listener that differs
// (identity, trust policy) or an address that is not a listener is still refused.
TEST_F(SecureChannelTest, EnsureListenerReturnsTheSameOneAndRefusesADifferentOne) {
  v1::SecureChannelListener first, again;
  ASSERT_TRUE(CreateListener(bob_api_, "listener", TrustEveryone(), &first).ok());
  grpc::Status s = CreateListener(bob_api_, "listener", TrustEveryone(), &again);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(ReasonOf(s), "ADDRESS_IN_USE");
  ASSERT_TRUE(
      CreateListener(bob_api_, "listener", TrustEveryone(), &again, /*exist_ok=*/true).ok());
  EXPECT_EQ(again.address(), first.address());
  EXPECT_EQ(again.identifier(), first.identifier());
  EXPECT_EQ(again.identity(), "default");
  // Named "default" explicitly: the same listener.
  EXPECT_TRUE(CreateListener(bob_api_, "listener", TrustEveryone(), &again, true, "default").ok());

  // A different trust policy is not the same listener.
  s = CreateListener(bob_api_, "listener", TrustIdentifier("I0123456789abcdef0123456789abcdef"),
                     &again, true);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(ReasonOf(s), "ADDRESS_IN_USE");
  // Nor a different identity.
  {
    auto ids = v1::IdentityService::NewStub(bob_api_);
    grpc::ClientContext c;
    v1::CreateIdentityRequest create;
    create.set_name("other");
    v1::Identity identity;
    ASSERT_TRUE(ids->CreateIdentity(&c, create, &identity).ok());
  }
  s = CreateListener(bob_api_, "listener", TrustEveryone(), &again, true, "other");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);

  // The same identifiers in another order are the same policy.
  v1::TrustPolicy ab, ba;
  ab.mutable_trust_identifiers()->add_identifiers("I0123456789abcdef0123456789abcdef");
  ab.mutable_trust_identifiers()->add_identifiers("Ifedcba9876543210fedcba9876543210");
  ba.mutable_trust_identifiers()->add_identifiers("Ifedcba9876543210fedcba9876543210");
  ba.mutable_trust_identifiers()->add_identifiers("I0123456789abcdef0123456789abcdef");
  ASSERT_TRUE(CreateListener(bob_api_, "pinned", ab).ok());
  EXPECT_TRUE(CreateListener(bob_api_, "pinned", ba, &again, true).ok());

  // An address an app serves is not a listener to return.
  EchoApp app(bob_api_, "served");
  ASSERT_TRUE(app.WaitOpened());
  s = CreateListener(bob_api_, "served", TrustEveryone(), &again, true);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(ReasonOf(s), "ADDRESS_IN_USE");

  // The ensured listener works, and there is still one.
  v1::SecureChannel channel;
  ASSERT_TRUE(
      CreateSecureChannel(alice_api_, ListenerRoute(bob_tcp_), TrustEveryone(), &channel).ok());
  auto stub = v1::SecureChannelService::NewStub(bob_api_);
  grpc::ClientContext c;
  v1::ListSecureChannelListenersResponse listeners;
  ASSERT_TRUE(stub->ListSecureChannelListeners(&c, {}, &listeners).ok());
  EXPECT_EQ(listeners.listeners_size(), 2);
}

TEST_F(SecureChannelTest, OnlyCiphertextOnTheWireAndTamperingAndReplayAreRejected) {
  ASSERT_TRUE(CreateListener(bob_api_, "listener", TrustEveryone()).ok());
  TcpProxy proxy(bob_tcp_);
  v1::SecureChannel channel;
  ASSERT_TRUE(CreateSecureChannel(alice_api_,
                                  ListenerRoute("127.0.0.1:" + std::to_string(proxy.port())),
                                  TrustEveryone(), &channel)
                  .ok());
  std::string route = channel.route() + "/service/echoer";
  std::mt19937_64 rng(std::random_device{}());
  std::vector<std::string> canaries;
  for (int i = 0; i < 20; ++i) {
    std::string canary = "canary-" + std::to_string(rng()) + std::to_string(rng());
    canaries.push_back(canary);
    v1::RequestResponse reply;
    ASSERT_TRUE(Request(alice_api_, route, canary, &reply).ok());
    EXPECT_EQ(reply.reply().payload(), canary);
  }
  std::string wire = proxy.recorded();
  EXPECT_GT(wire.size(), 20u * 40u);
  for (const auto& canary : canaries) {
    EXPECT_EQ(wire.find(canary), std::string::npos) << "plaintext on the wire";
    EXPECT_EQ(wire.find(absl::BytesToHexString(canary)), std::string::npos);
    EXPECT_EQ(wire.find(absl::Base64Escape(canary).substr(0, 16)), std::string::npos);
  }
  EXPECT_EQ(wire.find("echoer"), std::string::npos) << "the inner route is encrypted too";

  // Tamper with the next data frame (flip a byte in its last 8 bytes: ciphertext or tag), and
  // replay the one after: both dropped and counted, the channel stays up.
  std::atomic<int> seen{0};
  std::string last;
  proxy.set_hook([&](const std::string& frame) -> std::vector<std::string> {
    int n = seen++;
    if (n == 0) {
      std::string bad = frame;
      bad[bad.size() - 3] ^= 0x10;
      return {bad};
    }
    if (n == 1) return {frame, frame};
    return {frame};
  });
  v1::RequestResponse reply;
  EXPECT_EQ(Request(alice_api_, route, "tampered", &reply, milliseconds(700)).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(Request(alice_api_, route, "replayed", &reply).ok());
  EXPECT_EQ(reply.reply().payload(), "replayed");
  ASSERT_TRUE(Request(alice_api_, route, "after", &reply).ok());
  auto stub = v1::SecureChannelService::NewStub(bob_api_);
  grpc::ClientContext c;
  v1::ListSecureChannelsResponse list;
  ASSERT_TRUE(stub->ListSecureChannels(&c, {}, &list).ok());
  ASSERT_EQ(list.channels_size(), 1);
  EXPECT_EQ(list.channels(0).decrypt_failures(), 1u);
  EXPECT_EQ(list.channels(0).replays_rejected(), 1u);
  EXPECT_EQ(list.channels(0).state(), v1::SecureChannel::ESTABLISHED);
  EXPECT_EQ(echoer_->echoed(), 20u + 2u);  // the tampered message never reached the app
}

TEST(SecureChannelMetricsTest, PrometheusMetricsCountChannelsBytesAndHandshakes) {
  VeildProcess bob({"--tcp-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
  VeildProcess alice;
  ASSERT_TRUE(bob.Start()) << bob.log();
  ASSERT_TRUE(alice.Start()) << alice.log();
  std::string metrics_address = MetricsAddress(bob);
  ASSERT_FALSE(metrics_address.empty()) << bob.log();
  auto bob_api = Connect(bob.api_target());
  auto alice_api = Connect(alice.api_target());
  EchoApp echoer(bob_api, "echoer");
  ASSERT_TRUE(echoer.WaitOpened());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  v1::SecureChannel channel;
  ASSERT_TRUE(CreateSecureChannel(alice_api,
                                  "/tcp/" + TcpListenAddress(bob_api) + "/service/listener",
                                  TrustEveryone(), &channel)
                  .ok());
  for (int i = 0; i < 5; ++i) {
    v1::RequestResponse reply;
    ASSERT_TRUE(Request(alice_api, channel.route() + "/service/echoer", "m", &reply).ok());
  }
  // Bob's channel publishes its counters just after it hands the last echo to the connection,
  // so Alice may hold the reply a moment before the count says it went: wait for it.
  std::string metrics;
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);;) {
    metrics = HttpGet(metrics_address, "/metrics");
    if (Sample(metrics, "veil_secure_channel_messages_sent_total") == 5 + 1 ||
        std::chrono::steady_clock::now() > deadline) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_NE(metrics.find("200 OK"), std::string::npos) << metrics;
  EXPECT_EQ(Sample(metrics, "veil_secure_channels{state=\"established\"}"), 1) << metrics;
  EXPECT_EQ(Sample(metrics, "veil_secure_channel_handshakes_total{result=\"ok\"}"), 1);
  EXPECT_EQ(Sample(metrics, "veil_secure_channel_messages_received_total"), 5);
  EXPECT_EQ(Sample(metrics, "veil_secure_channel_messages_sent_total"), 5 + 1);  // + CONFIRM
  EXPECT_EQ(Sample(metrics, "veil_secure_channel_decrypt_failures_total"), 0);
  EXPECT_EQ(Sample(metrics, "veil_secure_channel_handshake_seconds_count"), 1);
  EXPECT_GT(Sample(metrics, "veil_transport_bytes_received_total"), 5 * 40);
  EXPECT_EQ(Sample(metrics, "veil_transport_connections{transport=\"tcp\"}"), 1);
  EXPECT_EQ(Sample(metrics, "veil_transport_connections{transport=\"uds\"}"), 0);
  EXPECT_EQ(Sample(metrics, "veil_secure_channel_listeners"), 1);
  EXPECT_NE(metrics.find("veil_info{version=\""), std::string::npos);
}

TEST(SecureChannelLimitsTest, HalfOpenHandshakesPerConnectionAreCapped) {
  VeildProcess bob({"--tcp-listen", "127.0.0.1:0", "--max-pending-handshakes-per-connection", "1"});
  VeildProcess alice;
  ASSERT_TRUE(bob.Start()) << bob.log();
  ASSERT_TRUE(alice.Start()) << alice.log();
  auto bob_api = Connect(bob.api_target());
  auto alice_api = Connect(alice.api_target());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  TcpProxy proxy(TcpListenAddress(bob_api));
  // Alice -> Bob frames: HS1 of the first attempt passes, its HS3 is dropped, so Bob's responder
  // stays half-open; everything after passes.
  std::atomic<int> frames{0};
  proxy.set_hook([&](const std::string& frame) -> std::vector<std::string> {
    if (frames++ == 1) return {};
    return {frame};
  });
  std::string route = "/tcp/127.0.0.1:" + std::to_string(proxy.port()) + "/service/listener";
  v1::SecureChannel channel;
  EXPECT_EQ(CreateSecureChannel(alice_api, route, TrustEveryone(), &channel, 700).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  grpc::Status busy = CreateSecureChannel(alice_api, route, TrustEveryone(), &channel, 5000);
  EXPECT_EQ(busy.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ReasonOf(busy), "PEER_REFUSED_HANDSHAKE");
  EXPECT_NE(busy.error_message().find("busy"), std::string::npos) << busy.error_message();
  EXPECT_NE(bob.log().find("refused a handshake"), std::string::npos) << bob.log();
}

TEST(SecureChannelMultiHopTest, ThroughTwoIntermediateNodes) {
  // Intermediate nodes dial onward hops for others only where their allow-list says.
  VeildProcess bob({"--tcp-listen", "127.0.0.1:0"});
  VeildProcess hop2({"--tcp-listen", "127.0.0.1:0", "--allow-dial", "127.0.0.1:*"});
  VeildProcess hop1({"--tcp-listen", "127.0.0.1:0", "--allow-dial", "127.0.0.1:*"});
  VeildProcess alice;
  for (auto* node : {&bob, &hop2, &hop1, &alice}) ASSERT_TRUE(node->Start()) << node->log();
  auto bob_api = Connect(bob.api_target());
  auto alice_api = Connect(alice.api_target());
  EchoApp echoer(bob_api, "echoer");
  ASSERT_TRUE(echoer.WaitOpened());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  std::string route = "/tcp/" + TcpListenAddress(Connect(hop1.api_target())) + "/tcp/" +
                      TcpListenAddress(Connect(hop2.api_target())) + "/tcp/" +
                      TcpListenAddress(bob_api) + "/service/listener";
  v1::SecureChannel channel;
  grpc::Status s = CreateSecureChannel(alice_api, route, TrustEveryone(), &channel);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(channel.remote_identifier(), DefaultIdentifier(bob_api));
  for (int i = 0; i < 10; ++i) {
    v1::RequestResponse reply;
    ASSERT_TRUE(
        Request(alice_api, channel.route() + "/service/echoer", "hop " + std::to_string(i), &reply)
            .ok());
    EXPECT_EQ(reply.reply().payload(), "hop " + std::to_string(i));
  }
  // The intermediate nodes carried the traffic but have no channel.
  EXPECT_EQ(ChannelCount(Connect(hop1.api_target())), 0);
  EXPECT_EQ(ChannelCount(Connect(hop2.api_target())), 0);
}

}  // namespace
}  // namespace veil::testing
