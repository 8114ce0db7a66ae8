// Two routers in one process, connected by real TCP sockets on 127.0.0.1.
#include "sidecar/transport/tcp_transport.h"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "asio/write.hpp"
#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "tests/support/recording_tracker.h"

namespace veil::transport {
namespace {

using core::Message;
using core::Route;

// Keeps what it receives; replies to messages whose payload starts with "echo:". Takes messages
// of any provenance: these tests are about the transport, not access control.
class Sink final : public core::Worker {
 public:
  using Worker::Worker;
  absl::Status Admit(const core::SenderInfo&) const override { return absl::OkStatus(); }
  void HandleMessage(Message msg) override {
    msg.receipt.Settle(absl::OkStatus());
    if (msg.payload.rfind("echo:", 0) == 0) {
      Message reply;
      reply.onward = msg.return_route;
      reply.return_route.Append(core::Address::Local(address()));
      reply.payload = msg.payload.substr(5);
      router().Send(std::move(reply));
    }
    std::lock_guard lock(mu_);
    got_.push_back(std::move(msg));
    cv_.notify_all();
  }
  std::vector<Message> Wait(size_t n) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [&] { return got_.size() >= n; });
    return std::move(got_);
  }

 private:
  std::mutex mu_;  // std, not absl: TSan sees through it
  std::condition_variable cv_;
  std::vector<Message> got_;
};

using Outcomes = veil::testing::RecordingTracker;

struct Node {
  explicit Node(TcpOptions options = {}) : transport(router, options) {
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { io.run(); });
  }
  ~Node() {
    transport.Shutdown();
    router.StopAll();
    work.reset();
    io.stop();
    for (auto& t : threads) t.join();
  }
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{asio::make_work_guard(io)};
  core::Router router{io};
  TcpTransport transport;
  std::vector<std::thread> threads;
};

Message Make(absl::string_view route, std::string payload, absl::string_view back = "",
             std::shared_ptr<core::SendTracker> tracker = nullptr) {
  Message m;
  m.onward = *Route::Parse(route);
  if (!back.empty()) m.return_route = *Route::Parse(back);
  m.payload = std::move(payload);
  if (tracker) m.receipt = core::Receipt(std::move(tracker), 0);
  return m;
}

TEST(TcpTransportTest, DeliversAppliesHopRulesAndRepliesRetrace) {
  Node a, b;
  auto address = b.transport.Listen("127.0.0.1:0");
  ASSERT_TRUE(address.ok()) << address.status();
  auto sink_b = std::make_shared<Sink>(b.router.NewStrand());
  auto sink_a = std::make_shared<Sink>(a.router.NewStrand());
  ASSERT_TRUE(b.router.StartWorker("echoer", sink_b).ok());
  ASSERT_TRUE(a.router.StartWorker("app", sink_a).ok());

  auto outcomes = std::make_shared<Outcomes>();
  a.router.Send(Make("/tcp/" + *address + "/service/echoer", "echo:hi", "/service/app", outcomes));
  auto got = sink_b->Wait(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].onward.empty());
  // The receiver prepended its connection worker to the return route.
  ASSERT_EQ(got[0].return_route.size(), 2u);
  EXPECT_EQ(got[0].return_route.hops()[0].value().rfind("_tcp_", 0), 0u);
  EXPECT_EQ(got[0].return_route.hops()[1], core::Address::Local("app"));
  EXPECT_EQ(got[0].sender.origin, core::SenderInfo::Origin::kTransport);
  EXPECT_TRUE(outcomes->Wait(1)[0].second.ok());

  auto replies = sink_a->Wait(1);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].payload, "hi");
  EXPECT_EQ(replies[0].return_route.hops()[1], core::Address::Local("echoer"));
  // One connection each way, reused.
  a.router.Send(Make("/tcp/" + *address + "/service/echoer", "again"));
  sink_b->Wait(1);
  EXPECT_EQ(a.transport.Connections().size(), 1u);
  EXPECT_EQ(b.transport.Connections().size(), 1u);
}

TEST(TcpTransportTest, ThousandMessagesInOrder) {
  Node a, b;
  auto address = b.transport.Listen("127.0.0.1:0");
  ASSERT_TRUE(address.ok());
  auto sink = std::make_shared<Sink>(b.router.NewStrand());
  ASSERT_TRUE(b.router.StartWorker("sink", sink).ok());
  for (int i = 0; i < 1000; ++i) {
    a.router.Send(Make("/tcp/" + *address + "/service/sink", std::to_string(i)));
  }
  auto got = sink->Wait(1000);
  ASSERT_EQ(got.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(got[i].payload, std::to_string(i));
}

TEST(TcpTransportTest, ConnectFailureIsReported) {
  Node a;
  // Find a port nobody listens on: bind, read it, close.
  std::string closed_port;
  {
    asio::io_context io;
    asio::ip::tcp::acceptor acc(io, {asio::ip::make_address("127.0.0.1"), 0});
    closed_port = std::to_string(acc.local_endpoint().port());
  }
  auto outcomes = std::make_shared<Outcomes>();
  a.router.Send(Make("/tcp/127.0.0.1:" + closed_port + "/service/x", "p", "", outcomes));
  auto results = outcomes->Wait(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].second.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReasonOf(results[0].second), "CONNECTION_FAILED");
}

TEST(TcpTransportTest, OversizedMessageIsRefusedToItsSender) {
  TcpOptions small;
  small.max_frame_bytes = 4096;
  Node a(small), b;
  auto address = b.transport.Listen("127.0.0.1:0");
  ASSERT_TRUE(address.ok());
  auto outcomes = std::make_shared<Outcomes>();
  a.router.Send(Make("/tcp/" + *address + "/service/x", std::string(5000, 'x'), "", outcomes));
  auto results = outcomes->Wait(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].second.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(results[0].second), "MESSAGE_TOO_LARGE");
}

TEST(TcpTransportTest, PeerGoneIsReportedAndConnectionForgotten) {
  Node a;
  std::string address;
  {
    Node b;
    auto bound = b.transport.Listen("127.0.0.1:0");
    ASSERT_TRUE(bound.ok());
    address = *bound;
    auto sink = std::make_shared<Sink>(b.router.NewStrand());
    ASSERT_TRUE(b.router.StartWorker("sink", sink).ok());
    a.router.Send(Make("/tcp/" + address + "/service/sink", "1"));
    ASSERT_EQ(sink->Wait(1).size(), 1u);
  }  // b is gone
  // The connection notices and is forgotten; the next send reopens and fails to connect.
  for (int i = 0; i < 100 && !a.transport.Connections().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(a.transport.Connections().empty());
  auto outcomes = std::make_shared<Outcomes>();
  a.router.Send(Make("/tcp/" + address + "/service/sink", "2", "", outcomes));
  auto results = outcomes->Wait(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].second.code(), absl::StatusCode::kUnavailable);
}

TEST(TcpTransportTest, GarbageFromPeerClosesConnectionWithoutCrash) {
  Node b;
  auto address = b.transport.Listen("127.0.0.1:0");
  ASSERT_TRUE(address.ok());
  auto hp = core::ParseHostPort(*address);
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address(hp->host), hp->port});
  asio::write(s, asio::buffer(std::string("\x01\x00\x00\x00\x03zzz", 8)));
  char buf[16];
  asio::error_code ec;
  // Reads the node's version byte, then sees the close.
  size_t total = 0;
  while (!ec) total += s.read_some(asio::buffer(buf), ec);
  EXPECT_LE(total, 1u);  // at most the version byte
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
}

TEST(TcpTransportTest, PeerThatDoesNotReadFillsTheQueueThenSendersAreRefused) {
  // A peer that accepts and never reads: kernel buffers fill, then our write queue, then
  // senders hear QUEUE_FULL — memory stays bounded.
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  asio::ip::tcp::socket stuck(io);
  std::thread accept([&] { acceptor.accept(stuck); });
  TcpOptions small;
  small.max_write_queue_bytes = 1 << 20;
  Node a(small);
  std::string route =
      "/tcp/127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) + "/service/x";
  auto outcomes = std::make_shared<Outcomes>();
  constexpr int kMessages = 200;  // 200 MiB: far beyond kernel buffers and the queue
  for (int i = 0; i < kMessages; ++i) {
    Message m = Make(route, std::string(1 << 20, 'x'));
    m.receipt = core::Receipt(outcomes, i);
    a.router.Send(std::move(m));
  }
  accept.join();
  auto results = outcomes->Wait(kMessages - 20);  // the last few may stay queued: never mind
  int refused = 0;
  for (const auto& [index, status] : results) {
    if (!status.ok()) {
      EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
      EXPECT_EQ(ReasonOf(status), "QUEUE_FULL");
      ++refused;
    }
  }
  EXPECT_GT(refused, kMessages / 2);
}

// Beyond the connection limit a node refuses a connection with a frame saying why; the peer's
// node closes it on reading that.
TEST(TcpTransportTest, ConnectionsBeyondTheLimitAreRefusedWithAReason) {
  TcpOptions one;
  one.max_connections_per_address = 1;
  Node b(one), a1, a2;
  auto address = b.transport.Listen("127.0.0.1:0");
  ASSERT_TRUE(address.ok());
  auto sink = std::make_shared<Sink>(b.router.NewStrand());
  ASSERT_TRUE(b.router.StartWorker("sink", sink).ok());
  a1.router.Send(Make("/tcp/" + *address + "/service/sink", "first"));
  ASSERT_EQ(sink->Wait(1).size(), 1u);
  a2.router.Send(Make("/tcp/" + *address + "/service/sink", "second"));
  bool closed = false;
  for (int i = 0; i < 250 && !closed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    closed = a2.transport.Connections().empty();
  }
  EXPECT_TRUE(closed) << "the refused connection stayed open";
  EXPECT_EQ(b.transport.stats().connections_refused.load(), 1u);
  EXPECT_EQ(a1.transport.Connections().size(), 1u);
  EXPECT_TRUE(sink->Wait(0).empty()) << "a refused connection's message was taken";
}

// A connection with no frame either way for the idle timeout, that nothing uses, is closed;
// one the node uses (InUse) stays.
TEST(TcpTransportTest, IdleConnectionsThatNothingUsesAreClosed) {
  TcpOptions idle;
  idle.idle_timeout = std::chrono::milliseconds(200);
  Node b(idle), a;
  std::atomic<bool> in_use{true};
  b.transport.SetInUse([&in_use](uint64_t) { return in_use.load(); });
  auto address = b.transport.Listen("127.0.0.1:0");
  ASSERT_TRUE(address.ok());
  auto sink = std::make_shared<Sink>(b.router.NewStrand());
  ASSERT_TRUE(b.router.StartWorker("sink", sink).ok());
  a.router.Send(Make("/tcp/" + *address + "/service/sink", "hello"));
  ASSERT_EQ(sink->Wait(1).size(), 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_EQ(b.transport.Connections().size(), 1u);  // in use: kept
  in_use = false;
  bool closed = false;
  for (int i = 0; i < 100 && !closed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    closed = b.transport.Connections().empty() && a.transport.Connections().empty();
  }
  EXPECT_TRUE(closed);
  EXPECT_EQ(b.transport.stats().idle_closed.load(), 1u);
}

TEST(TcpTransportTest, ListenRefusesBadAddress) {
  Node a;
  EXPECT_EQ(a.transport.Listen("nonsense").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace veil::transport
