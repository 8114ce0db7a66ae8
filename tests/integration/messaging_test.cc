// Messaging end to end: real veild processes, real gRPC clients, TCP on 127.0.0.1 port 0.
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <thread>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/support/api_client.h"
#include "tests/support/veild_process.h"

namespace veil::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::unique_ptr<grpc::ClientContext> WithDeadline(milliseconds d) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + d);
  return context;
}

grpc::Status Send(const std::shared_ptr<grpc::Channel>& channel, const std::string& route,
                  const std::string& payload, v1::SendResponse* response = nullptr) {
  auto stub = v1::MessagingService::NewStub(channel);
  v1::SendRequest request;
  auto* m = request.add_messages();
  m->set_route(route);
  m->set_payload(payload);
  v1::SendResponse ignored;
  return stub->Send(WithDeadline(seconds(20)).get(), request, response ? response : &ignored);
}

// Two daemons: B listens on TCP and serves an echoer; A sends to it. The transport alone: both
// run with --insecure-plaintext, and the apps opt in to unencrypted messages from the network
// (accept_unencrypted); without that the echoer would never see them (AccessControlTest).
class TwoNodesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(b_.Start()) << b_.log();
    ASSERT_TRUE(a_.Start()) << a_.log();
    a_channel_ = Connect(a_.api_target());
    b_channel_ = Connect(b_.api_target());
    echoer_route_ = "/tcp/" + TcpListenAddress(b_channel_) + "/service/echoer";
  }

  VeildProcess b_{{"--tcp-listen", "127.0.0.1:0", "--insecure-plaintext"}};
  VeildProcess a_{{"--insecure-plaintext"}};
  std::shared_ptr<grpc::Channel> a_channel_, b_channel_;
  std::string echoer_route_;
};

TEST_F(TwoNodesTest, EchoAcrossDaemonsOverTcp) {
  EchoApp echoer(b_channel_, "echoer", /*accept_unencrypted=*/true);
  ASSERT_TRUE(echoer.WaitOpened());
  v1::RequestResponse response;
  grpc::Status status = Request(a_channel_, echoer_route_, "Hello veil!", &response);
  ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << a_.log();
  EXPECT_EQ(response.reply().payload(), "Hello veil!");
  // The reply came back over TCP, unauthenticated: apps can tell.
  EXPECT_EQ(response.reply().sender().origin(), v1::Sender::ORIGIN_TRANSPORT);
  EXPECT_EQ(echoer.last_sender().origin(), v1::Sender::ORIGIN_TRANSPORT);
  // The reply's return route leads back to the echoer through A's connection.
  EXPECT_NE(response.reply().return_route().find("/service/echoer"), std::string::npos);
}

TEST_F(TwoNodesTest, ThousandMessagesPipelinedInOrderWithContent) {
  EchoApp echoer(b_channel_, "echoer", /*accept_unencrypted=*/true);
  ASSERT_TRUE(echoer.WaitOpened());
  ServeClient alice(a_channel_, "alice", /*window=*/256, /*accept_unencrypted=*/true);
  ASSERT_TRUE(alice.Read()->has_opened());
  constexpr int kMessages = 1000;
  std::thread sender([&] {
    for (int batch = 0; batch < 10; ++batch) {
      std::vector<std::pair<std::string, std::string>> messages;
      for (int i = 0; i < 100; ++i) {
        int n = batch * 100 + i;
        messages.emplace_back(echoer_route_,
                              "message-" + std::to_string(n) + "-" + std::string(n % 97, 'x'));
      }
      ASSERT_TRUE(alice.Send(batch + 1, messages));
    }
  });
  int received = 0, results = 0, accepted = 0;
  while (received < kMessages) {
    auto response = alice.Read();
    ASSERT_TRUE(response.has_value());
    if (response->has_send_result()) {
      ++results;
      accepted += response->send_result().accepted();
      EXPECT_EQ(response->send_result().failures_size(), 0);
      continue;
    }
    ASSERT_TRUE(response->has_deliveries());
    uint64_t last = 0;
    for (const auto& d : response->deliveries().deliveries()) {
      EXPECT_EQ(d.payload(),
                "message-" + std::to_string(received) + "-" + std::string(received % 97, 'x'));
      EXPECT_EQ(d.sequence(), static_cast<uint64_t>(received + 1));
      ++received;
      last = d.sequence();
    }
    alice.Ack(last);
  }
  sender.join();
  while (results < 10) {
    auto response = alice.Read();
    ASSERT_TRUE(response.has_value());
    if (response->has_send_result()) {
      ++results;
      accepted += response->send_result().accepted();
    }
  }
  EXPECT_EQ(accepted, kMessages);
}

TEST_F(TwoNodesTest, PeerKilledMidStreamIsReportedToTheSender) {
  EchoApp echoer(b_channel_, "echoer", /*accept_unencrypted=*/true);
  ASSERT_TRUE(echoer.WaitOpened());
  v1::RequestResponse response;
  ASSERT_TRUE(Request(a_channel_, echoer_route_, "before", &response).ok());
  ServeClient alice(a_channel_, "alice");
  ASSERT_TRUE(alice.Read()->has_opened());
  b_.Kill();
  // Keep sending: once A notices the dead connection, sends fail with UNAVAILABLE, and the
  // sender hears it in the batch's SendResult.
  bool heard = false;
  for (uint64_t batch = 1; batch <= 200 && !heard; ++batch) {
    ASSERT_TRUE(alice.Send(batch, {{echoer_route_, "after"}}));
    for (;;) {
      auto r = alice.Read();
      ASSERT_TRUE(r.has_value());
      if (!r->has_send_result()) continue;
      if (r->send_result().failures_size() > 0) {
        const auto& failure = r->send_result().failures(0);
        EXPECT_EQ(failure.status().code(), grpc::StatusCode::UNAVAILABLE);
        heard = true;
      }
      break;
    }
    if (!heard) std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_TRUE(heard);
  // A unary Send says so too.
  grpc::Status status = Send(a_channel_, echoer_route_, "x");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ReasonOf(status), "CONNECTION_FAILED");
}

TEST(MessagingTest, AddressAlreadyServedIsAlreadyExists) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  auto channel = Connect(node.api_target());
  ServeClient first(channel, "echoer");
  ASSERT_TRUE(first.Read()->has_opened());
  ServeClient second(channel, "echoer");
  EXPECT_FALSE(second.Read().has_value());
  grpc::Status status = second.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(ReasonOf(status), "ADDRESS_IN_USE");
  EXPECT_EQ(MetadataOf(status, "address"), "echoer");
}

TEST(MessagingTest, BadServeRequestsAreInvalidArgument) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  auto channel = Connect(node.api_target());
  for (const std::string& bad :
       std::vector<std::string>{"", "bad name", "_reserved", std::string(129, 'a')}) {
    ServeClient client(channel, bad);
    EXPECT_FALSE(client.Read().has_value());
    grpc::Status status = client.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
  }
  // Anything but `open` first.
  auto stub = v1::MessagingService::NewStub(channel);
  grpc::ClientContext context;
  auto stream = stub->Serve(&context);
  v1::ServeRequest ack;
  ack.mutable_ack()->set_sequence(1);
  stream->Write(ack);
  stream->WritesDone();
  v1::ServeResponse ignored;
  EXPECT_FALSE(stream->Read(&ignored));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("must be `open`"), std::string::npos);
}

TEST(MessagingTest, UnknownAndInvalidRoutes) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  auto channel = Connect(node.api_target());
  grpc::Status status = Send(channel, "/service/nobody", "x");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ReasonOf(status), "ROUTE_NOT_FOUND");
  EXPECT_NE(status.error_message().find("/service/nobody"), std::string::npos);

  status = Send(channel, "/service/bad name", "x");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ReasonOf(status), "INVALID_ROUTE");
  EXPECT_EQ(MetadataOf(status, "index"), "0");

  status = Send(channel, "/udp/1.2.3.4:5", "x");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("unknown type \"udp\""), std::string::npos);

  auto stub = v1::MessagingService::NewStub(channel);
  v1::SendResponse response;
  status = stub->Send(WithDeadline(seconds(5)).get(), v1::SendRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(MessagingTest, PlaintextToARemoteRouteIsRefusedWithoutInsecureFlag) {
  VeildProcess node;  // no --insecure-plaintext
  ASSERT_TRUE(node.Start()) << node.log();
  auto channel = Connect(node.api_target());
  grpc::Status status = Send(channel, "/tcp/127.0.0.1:9/service/echoer", "secret");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ReasonOf(status), "PLAINTEXT_EGRESS_REFUSED");
  v1::RequestResponse response;
  status = Request(channel, "/tcp/127.0.0.1:9/service/echoer", "secret", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_FALSE(GetNode(channel).insecure_plaintext());
}

TEST(MessagingTest, RepliesToAConnectionAreRefusedWithoutInsecureFlag) {
  // B is insecure, A is not: A's echoer, even one that takes unencrypted messages, must not
  // answer B over plaintext TCP.
  VeildProcess a({"--tcp-listen", "127.0.0.1:0"});
  VeildProcess b({"--insecure-plaintext"});
  ASSERT_TRUE(a.Start()) << a.log();
  ASSERT_TRUE(b.Start()) << b.log();
  auto a_channel = Connect(a.api_target());
  auto b_channel = Connect(b.api_target());
  ServeClient echoer(a_channel, "echoer", /*window=*/0, /*accept_unencrypted=*/true);
  ASSERT_TRUE(echoer.Read()->has_opened());
  ASSERT_TRUE(
      Send(b_channel, "/tcp/" + TcpListenAddress(a_channel) + "/service/echoer", "hi").ok());
  auto delivery = echoer.Read();
  ASSERT_TRUE(delivery.has_value() && delivery->has_deliveries());
  const auto& d = delivery->deliveries().deliveries(0);
  ASSERT_TRUE(echoer.Send(1, {{d.return_route(), "reply"}}));
  auto result = echoer.Read();
  ASSERT_TRUE(result.has_value() && result->has_send_result());
  ASSERT_EQ(result->send_result().failures_size(), 1);
  EXPECT_EQ(result->send_result().failures(0).status().code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

// Input from outside is quoted in errors, never echoed whole: a 2 MB route gets a short error.
TEST(MessagingTest, ErrorsQuoteAtMostAShortPieceOfTheInput) {
  VeildProcess node({"--api-max-request-bytes", "8388608"});
  ASSERT_TRUE(node.Start()) << node.log();
  auto channel = Connect(node.api_target());
  const std::string huge = "/service/" + std::string(2 << 20, 'x');
  grpc::Status s = Send(channel, huge, "payload");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message().substr(0, 300);
  EXPECT_EQ(ReasonOf(s), "INVALID_ROUTE");
  EXPECT_LT(s.error_message().size(), 1024u);
  EXPECT_NE(s.error_message().find("(2097161 bytes)"), std::string::npos) << s.error_message();
}

TEST(MessagingTest, RequestWithoutReplyHitsItsDeadline) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  auto channel = Connect(node.api_target());
  ServeClient silent(channel, "silent");
  ASSERT_TRUE(silent.Read()->has_opened());
  v1::RequestResponse response;
  auto start = std::chrono::steady_clock::now();
  grpc::Status status = Request(channel, "/service/silent", "ping", &response, milliseconds(500));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The sidecar answers just before the client's deadline: the reason is there, every time.
  EXPECT_EQ(ReasonOf(status), "NO_REPLY") << status.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(10));
  // The request's own timeout, with no (or a later) call deadline.
  auto stub = v1::MessagingService::NewStub(channel);
  v1::RequestRequest request;
  request.mutable_message()->set_route("/service/silent");
  request.mutable_message()->set_payload("ping again");
  request.set_timeout_ms(300);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(20));
  start = std::chrono::steady_clock::now();
  status = stub->Request(&context, request, &response);
  EXPECT_EQ(ReasonOf(status), "NO_REPLY") << status.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
  ASSERT_TRUE(silent.Read().has_value());  // the first
  // The request reached the app, with a private return route.
  auto delivery = silent.Read();
  ASSERT_TRUE(delivery.has_value() && delivery->has_deliveries());
  EXPECT_EQ(delivery->deliveries().deliveries(0).return_route().rfind("/service/_req_", 0), 0u);
  EXPECT_EQ(delivery->deliveries().deliveries(0).sender().origin(), v1::Sender::ORIGIN_LOCAL);
}

TEST(MessagingTest, LocalRequestReply) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  auto channel = Connect(node.api_target());
  EchoApp echoer(channel, "echoer");
  ASSERT_TRUE(echoer.WaitOpened());
  for (int i = 0; i < 20; ++i) {
    v1::RequestResponse response;
    std::string payload(i * 1000, static_cast<char>('a' + i));
    grpc::Status status = Request(channel, "/service/echoer", payload, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.reply().payload(), payload);
  }
}

TEST(MessagingTest, StreamCancelledMidDeliveryFreesTheAddress) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  auto channel = Connect(node.api_target());
  {
    ServeClient sink(channel, "sink", /*window=*/4);
    ASSERT_TRUE(sink.Read()->has_opened());
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(Send(channel, "/service/sink", "m").ok());
    auto first = sink.Read();  // some deliveries arrive, never acked
    ASSERT_TRUE(first.has_value() && first->has_deliveries());
    sink.Cancel();
  }
  // The address is free again, messages reach the new stream, and the node is healthy.
  bool served = false;
  for (int attempt = 0; attempt < 100 && !served; ++attempt) {
    ServeClient again(channel, "sink");
    auto r = again.Read();
    if (r.has_value() && r->has_opened()) {
      served = true;
      ASSERT_TRUE(Send(channel, "/service/sink", "fresh").ok());
      auto d = again.Read();
      ASSERT_TRUE(d.has_value() && d->has_deliveries());
      EXPECT_EQ(d->deliveries().deliveries(0).payload(), "fresh");
      EXPECT_EQ(d->deliveries().deliveries(0).sequence(), 1u);
    } else {
      std::this_thread::sleep_for(milliseconds(20));
    }
  }
  EXPECT_TRUE(served);
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckResponse hr;
  ASSERT_TRUE(health->Check(WithDeadline(seconds(5)).get(), {}, &hr).ok());
  EXPECT_EQ(hr.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST(MessagingTest, SlowConsumerGetsBackpressureNotUnboundedQueue) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  auto channel = Connect(node.api_target());
  ServeClient sink(channel, "sink", /*window=*/1);
  ASSERT_TRUE(sink.Read()->has_opened());
  // Never ack: the mailbox fills (window + queue limit), then senders are refused.
  auto stub = v1::MessagingService::NewStub(channel);
  v1::SendRequest request;
  for (int i = 0; i < 65536; ++i) {
    auto* m = request.add_messages();
    m->set_route("/service/sink");
    m->set_payload("x");
  }
  v1::SendResponse response;
  grpc::Status status = stub->Send(WithDeadline(seconds(30)).get(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();  // within the queue limit
  // A few more fill the queue (window + 65536), then senders are refused.
  request.mutable_messages()->DeleteSubrange(1, 65535);
  for (int i = 0; i < 10 && status.ok(); ++i) {
    status = stub->Send(WithDeadline(seconds(30)).get(), request, &response);
  }
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ReasonOf(status), "QUEUE_FULL");
  // Once the app acks, room frees up again.
  uint64_t last = 0;
  auto batch = sink.Read();
  ASSERT_TRUE(batch.has_value() && batch->has_deliveries());
  last = batch->deliveries().deliveries(0).sequence();
  ASSERT_TRUE(sink.Ack(last));
  ASSERT_TRUE(sink.Read().has_value());  // the next delivery was written
  EXPECT_TRUE(stub->Send(WithDeadline(seconds(30)).get(), request, &response).ok());
}

TEST(MessagingTest, SigtermWithStreamOpenDrainsAndExitsZero) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  auto channel = Connect(node.api_target());
  ServeClient stream(channel, "echoer");
  ASSERT_TRUE(stream.Read()->has_opened());
  node.Signal(SIGTERM);
  EXPECT_FALSE(stream.Read().has_value());
  grpc::Status status = stream.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ReasonOf(status), "NODE_SHUTTING_DOWN");
  EXPECT_EQ(node.Wait(seconds(20)), 0) << node.log();
  EXPECT_NE(node.log().find("veild stopped"), std::string::npos);
  struct stat st;
  EXPECT_NE(::stat(node.socket_path().c_str(), &st), 0);  // socket removed
}

TEST(MessagingTest, ApiSocketIsOwnerOnlyAndStateDirLocked) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  struct stat st;
  ASSERT_EQ(::stat(node.socket_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(node.state_dir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  VeildProcess twin(node.state_dir(), {});
  EXPECT_FALSE(twin.Start(seconds(10)));
  EXPECT_NE(twin.log().find("another veild is using state dir"), std::string::npos) << twin.log();
}

TEST(MessagingTest, JsonLogsAreOneObjectPerLine) {
  VeildProcess node({"--log-format", "json"});
  ASSERT_TRUE(node.Start()) << node.log();
  node.Signal(SIGTERM);
  ASSERT_EQ(node.Wait(), 0);
  std::string log = node.log();
  ASSERT_FALSE(log.empty());
  size_t lines = 0, start = 0;
  while (start < log.size()) {
    size_t end = log.find('\n', start);
    std::string line = log.substr(start, end - start);
    google::protobuf::Struct object;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(line, &object).ok()) << line;
    for (const char* key : {"ts", "level", "logger", "msg"}) {
      EXPECT_TRUE(object.fields().contains(key)) << key << " missing in " << line;
    }
    ++lines;
    start = end + 1;
  }
  EXPECT_GE(lines, 3u);
}

}  // namespace
}  // namespace veil::testing
