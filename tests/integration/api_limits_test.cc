// API abuse: oversized requests, too many streams, a stream flooding requests without reading
// its results, many connections at once. Each gets a clear status or is held back, the limits
// are flags, and the daemon stays healthy and its memory bounded. (Invalid routes and unknown
// identities: MessagingTest.UnknownAndInvalidRoutes, IdentityIntegrationTest.ApiErrors.)
#include <grpcpp/generic/generic_stub.h>

#include <future>
#include <thread>

#include "gtest/gtest.h"
#include "tests/support/api_client.h"
#include "tests/support/veild_process.h"

namespace veil::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

grpc::Status SendOne(const std::shared_ptr<grpc::Channel>& api, const std::string& route,
                     std::string payload) {
  auto stub = v1::MessagingService::NewStub(api);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + seconds(10));
  v1::SendRequest request;
  auto* m = request.add_messages();
  m->set_route(route);
  m->set_payload(std::move(payload));
  v1::SendResponse response;
  return stub->Send(&context, request, &response);
}

TEST(ApiLimitsTest, OversizedRequestIsResourceExhaustedAndTheNodeCarriesOn) {
  VeildProcess node({"--api-max-request-bytes", "1048576"});
  ASSERT_TRUE(node.Start()) << node.log();
  auto api = Connect(node.api_target());
  ServeClient sink(api, "sink");
  ASSERT_TRUE(sink.Read()->has_opened());
  grpc::Status big = SendOne(api, "/service/sink", std::string(2 << 20, 'x'));
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << big.error_message();
  // Just under the limit passes; the node is healthy.
  EXPECT_TRUE(SendOne(api, "/service/sink", std::string(1000000, 'x')).ok());
  auto d = sink.Read();
  ASSERT_TRUE(d.has_value() && d->has_deliveries());
  EXPECT_EQ(d->deliveries().deliveries(0).payload().size(), 1000000u);
  EXPECT_TRUE(HealthServing(api));
}

// Bytes that are not the method's request message (a client built from another proto, a
// corrupted one) are INVALID_ARGUMENT saying so — not gRPC's bare UNIMPLEMENTED — on unary and
// streaming methods alike, and the node carries on.
TEST(ApiLimitsTest, RequestsThatDoNotParseAreInvalidArgumentSayingSo) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  auto api = Connect(node.api_target());
  grpc::GenericStub generic(api);
  const std::string garbage("\xff\xff\xff\x07garbage", 11);
  for (const char* method : {"/veil.v1.NodeService/GetNode", "/veil.v1.MessagingService/Send",
                             "/veil.v1.SecureChannelService/CreateSecureChannel",
                             "/veil.v1.IdentityService/CreateIdentity"}) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + seconds(10));
    grpc::Slice slice(garbage);
    grpc::ByteBuffer request(&slice, 1), response;
    grpc::Status result;
    std::promise<void> done;
    generic.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                      [&](grpc::Status s) {
                        result = std::move(s);
                        done.set_value();
                      });
    done.get_future().wait();
    EXPECT_EQ(result.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << method << ": " << result.error_message();
    EXPECT_EQ(ReasonOf(result), "INVALID_REQUEST") << method;
    EXPECT_NE(result.error_message().find("does not parse"), std::string::npos)
        << result.error_message();
  }
  EXPECT_TRUE(HealthServing(api));
}

TEST(ApiLimitsTest, ServeStreamsBeyondTheLimitAreRefusedUntilOneCloses) {
  VeildProcess node({"--api-max-serve-streams", "8"});
  ASSERT_TRUE(node.Start()) << node.log();
  auto api = Connect(node.api_target());
  std::vector<std::unique_ptr<ServeClient>> streams;
  for (int i = 0; i < 8; ++i) {
    streams.push_back(std::make_unique<ServeClient>(api, "a" + std::to_string(i)));
    ASSERT_TRUE(streams.back()->Read()->has_opened());
  }
  {
    ServeClient ninth(api, "a8");
    EXPECT_FALSE(ninth.Read().has_value());
    grpc::Status s = ninth.Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
    EXPECT_EQ(ReasonOf(s), "TOO_MANY_STREAMS");
  }
  streams.front()->Cancel();
  streams.erase(streams.begin());
  bool opened = false;
  for (int i = 0; i < 100 && !opened; ++i) {  // the cancelled stream goes asynchronously
    ServeClient again(api, "again");
    auto r = again.Read();
    opened = r.has_value() && r->has_opened();
    if (!opened) std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_TRUE(opened);
  EXPECT_TRUE(HealthServing(api));
}

// An app writes SendBatches as fast as it can and never reads the results (here every message
// fails, so each result carries 16 statuses). Once gRPC's flow-control window towards the app
// is full, unread results count against --api-max-pending-batches and the sidecar stops reading
// the app's requests, so the app's writes block instead of the sidecar's memory growing; once
// the app reads, every batch has its result.
TEST(ApiLimitsTest, StreamFloodWithoutReadingResultsIsHeldBackNotBuffered) {
  VeildProcess node({"--api-max-pending-batches", "64"});
  ASSERT_TRUE(node.Start()) << node.log();
  auto api = Connect(node.api_target());
  ServeClient flood(api, "flood");
  ASSERT_TRUE(flood.Read()->has_opened());
  const size_t rss_before = node.rss_kib();
  std::atomic<uint64_t> written{0};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    const std::vector<std::pair<std::string, std::string>> batch(
        16, {"/service/nobody", std::string(1024, 'f')});
    while (!stop && flood.Send(written + 1, batch)) ++written;
  });
  // Writes stall: the count stops growing while nobody reads the results.
  uint64_t last = 0;
  int still = 0;
  for (int i = 0; i < 1000 && still < 25; ++i) {
    std::this_thread::sleep_for(milliseconds(20));
    uint64_t now = written.load();
    still = now == last ? still + 1 : 0;
    last = now;
  }
  EXPECT_GE(still, 25) << "the flood was never held back: " << written << " batches written";
  std::printf("held back after %llu batches; RSS %zu -> %zu KiB\n",
              static_cast<unsigned long long>(written.load()), rss_before, node.rss_kib());
  // (Under AddressSanitizer freed memory sits in its quarantine: a looser bound there.)
  EXPECT_LT(node.rss_kib(), rss_before + (kAddressSanitizer ? 512 : 128) * 1024);
  EXPECT_TRUE(HealthServing(api));  // other calls are served meanwhile

  // Reading the results lets the flood through; every batch gets its result.
  stop = true;
  uint64_t results = 0;
  auto read_result = [&] {
    auto r = flood.Read();
    if (!r.has_value()) return false;
    if (r->has_send_result()) {
      ++results;
      EXPECT_EQ(r->send_result().failures_size(), 16);
      EXPECT_EQ(ReasonOf(r->send_result().failures(0).status()), "ROUTE_NOT_FOUND");
    }
    return true;
  };
  while (results + 1 < written.load()) ASSERT_TRUE(read_result()) << results << " of " << written;
  writer.join();  // its last write got through once results were read
  while (results < written.load()) ASSERT_TRUE(read_result()) << results << " of " << written;
  EXPECT_EQ(results, written.load());
  EXPECT_TRUE(HealthServing(api));
}

// 500 clients, each its own connection, call at once; every call is answered and the node is
// healthy afterwards.
TEST(ApiLimitsTest, ManyConnectionsAtOnce) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  constexpr int kClients = 500;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < kClients; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    args.SetInt("veil.test.client", i);
    channels.push_back(
        grpc::CreateCustomChannel(node.api_target(), grpc::InsecureChannelCredentials(), args));
  }
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 10; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kClients; i += 10) {
        auto stub = v1::NodeService::NewStub(channels[i]);
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + seconds(30));
        v1::Node response;
        if (stub->GetNode(&context, {}, &response).ok()) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kClients);
  EXPECT_TRUE(HealthServing(Connect(node.api_target())));
  channels.clear();
  EXPECT_TRUE(HealthServing(Connect(node.api_target())));
}

}  // namespace
}  // namespace veil::testing
