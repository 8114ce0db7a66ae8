// Two routers in one process, connected by real TCP sockets on 127.0.0.1 or real Unix sockets
// in a temp dir: every test of the connection's behaviour runs over each transport.
#include "sidecar/transport/node_transport.h"

#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "boost/asio/write.hpp"
#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "tests/support/recording_tracker.h"
#include "tests/support/test_certificate.h"

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
  explicit Node(ConnectionOptions options = {}) : transport(router, options) {
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { io.run(); });
  }
  ~Node() {
    transport.Shutdown();
    router.StopAll();
    work.reset();
    io.stop();
    for (auto& t : threads) t.join();
  }
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{
      boost::asio::make_work_guard(io)};
  core::Router router{io};
  NodeTransport transport;
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

// A temp dir for sockets, removed at the end.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/veil-transport-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

enum class Kind { kTcp, kUds, kWs, kWss };

const char* NameOf(Kind kind) {
  switch (kind) {
    case Kind::kTcp:
      return "tcp";
    case Kind::kUds:
      return "uds";
    case Kind::kWs:
      return "ws";
    case Kind::kWss:
      return "wss";
  }
  return "";
}

class NodeTransportTest : public ::testing::TestWithParam<Kind> {
 protected:
  // One certificate for the suite, trusted as the system's store (SSL_CERT_FILE) by every
  // node made afterwards.
  static void SetUpTestSuite() {
    cert_dir_ = new TempDir();
    cert_ = veil::testing::MakeTestCertificate(cert_dir_->path);
    ASSERT_FALSE(cert_.cert.empty()) << "openssl could not make a certificate";
    ::setenv("SSL_CERT_FILE", cert_.cert.c_str(), 1);
  }
  static void TearDownTestSuite() { delete cert_dir_; }

  // Opens a listener of the transport under test on `node`; returns the route hop to it.
  std::string ListenOn(Node& node) {
    switch (GetParam()) {
      case Kind::kTcp: {
        auto bound = node.transport.Listen("127.0.0.1:0");
        EXPECT_TRUE(bound.ok()) << bound.status();
        return "/tcp/" + bound.value_or("");
      }
      case Kind::kUds: {
        std::string path = absl::StrCat(dir_.path, "/node", ++sockets_, ".sock");
        absl::Status listening = node.transport.ListenUnix(path, 0600);
        EXPECT_TRUE(listening.ok()) << listening;
        return core::Address::Uds(path).ToString();
      }
      case Kind::kWs:
      case Kind::kWss: {
        const bool tls = GetParam() == Kind::kWss;
        if (tls) {
          absl::Status configured =
              node.transport.ConfigureWebSocket("", cert_.cert, cert_.key, "");
          EXPECT_TRUE(configured.ok()) << configured;
        }
        auto bound = node.transport.ListenWebSocket("127.0.0.1:0/veil", tls);
        EXPECT_TRUE(bound.ok()) << bound.status();
        return core::Address::WebSocket(bound.value_or(""), tls).ToString();
      }
    }
    return "";
  }
  // A hop where nothing listens.
  std::string ClosedHop() {
    if (GetParam() == Kind::kUds) return core::Address::Uds(dir_.path + "/nobody.sock").ToString();
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor acc(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    return absl::StrCat("/", NameOf(GetParam()), "/127.0.0.1:", acc.local_endpoint().port());
  }
  std::string prefix() const { return absl::StrCat("_", NameOf(GetParam()), "_"); }

  static TempDir* cert_dir_;
  static veil::testing::TestCertificate cert_;
  TempDir dir_;
  int sockets_ = 0;
};

TempDir* NodeTransportTest::cert_dir_ = nullptr;
veil::testing::TestCertificate NodeTransportTest::cert_;

INSTANTIATE_TEST_SUITE_P(Transports, NodeTransportTest,
                         ::testing::Values(Kind::kTcp, Kind::kUds, Kind::kWs, Kind::kWss),
                         [](const auto& info) { return std::string(NameOf(info.param)); });

TEST_P(NodeTransportTest, DeliversAppliesHopRulesAndRepliesRetrace) {
  Node a, b;
  const std::string hop = ListenOn(b);
  auto sink_b = std::make_shared<Sink>(b.router.NewStrand());
  auto sink_a = std::make_shared<Sink>(a.router.NewStrand());
  ASSERT_TRUE(b.router.StartWorker("echoer", sink_b).ok());
  ASSERT_TRUE(a.router.StartWorker("app", sink_a).ok());

  auto outcomes = std::make_shared<Outcomes>();
  a.router.Send(Make(hop + "/service/echoer", "echo:hi", "/service/app", outcomes));
  auto got = sink_b->Wait(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].onward.empty());
  // The receiver prepended its connection worker to the return route.
  ASSERT_EQ(got[0].return_route.size(), 2u);
  EXPECT_EQ(got[0].return_route.hops()[0].value().rfind(prefix(), 0), 0u);
  EXPECT_EQ(got[0].return_route.hops()[1], core::Address::Local("app"));
  EXPECT_EQ(got[0].sender.origin, core::SenderInfo::Origin::kTransport);
  EXPECT_TRUE(outcomes->Wait(1)[0].second.ok());

  auto replies = sink_a->Wait(1);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].payload, "hi");
  EXPECT_EQ(replies[0].return_route.hops()[1], core::Address::Local("echoer"));
  // One connection each way, reused.
  a.router.Send(Make(hop + "/service/echoer", "again"));
  sink_b->Wait(1);
  ASSERT_EQ(a.transport.Connections().size(), 1u);
  ASSERT_EQ(b.transport.Connections().size(), 1u);
  EXPECT_EQ(a.transport.Connections()[0].transport, NameOf(GetParam()));
  EXPECT_TRUE(a.transport.Connections()[0].outgoing);
  if (GetParam() == Kind::kUds) {
    // An accepted Unix socket's peer is the connecting process, by user and pid.
    EXPECT_EQ(b.transport.Connections()[0].peer,
              absl::StrCat("uid ", ::getuid(), " pid ", ::getpid()));
  }
}

TEST_P(NodeTransportTest, ThousandMessagesInOrderAndLargeOnesWhole) {
  Node a, b;
  const std::string hop = ListenOn(b);
  auto sink = std::make_shared<Sink>(b.router.NewStrand());
  ASSERT_TRUE(b.router.StartWorker("sink", sink).ok());
  for (int i = 0; i < 1000; ++i) {
    // Every tenth is large (written from where it is, not copied): order still holds.
    std::string payload = std::to_string(i);
    if (i % 10 == 0) payload.append(100 * 1024, static_cast<char>('a' + i % 26));
    a.router.Send(Make(hop + "/service/sink", std::move(payload)));
  }
  auto got = sink->Wait(1000);
  ASSERT_EQ(got.size(), 1000u);
  for (int i = 0; i < 1000; ++i) {
    std::string want = std::to_string(i);
    if (i % 10 == 0) want.append(100 * 1024, static_cast<char>('a' + i % 26));
    EXPECT_EQ(got[i].payload, want);
  }
}

TEST_P(NodeTransportTest, ConnectFailureIsReported) {
  Node a;
  auto outcomes = std::make_shared<Outcomes>();
  a.router.Send(Make(ClosedHop() + "/service/x", "p", "", outcomes));
  auto results = outcomes->Wait(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].second.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReasonOf(results[0].second), "CONNECTION_FAILED");
}

TEST_P(NodeTransportTest, OversizedMessageIsRefusedToItsSender) {
  ConnectionOptions small;
  small.max_frame_bytes = 4096;
  Node a(small), b;
  const std::string hop = ListenOn(b);
  auto outcomes = std::make_shared<Outcomes>();
  a.router.Send(Make(hop + "/service/x", std::string(5000, 'x'), "", outcomes));
  auto results = outcomes->Wait(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].second.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(results[0].second), "MESSAGE_TOO_LARGE");
}

TEST_P(NodeTransportTest, PeerGoneIsReportedAndConnectionForgotten) {
  Node a;
  std::string hop;
  {
    Node b;
    hop = ListenOn(b);
    auto sink = std::make_shared<Sink>(b.router.NewStrand());
    ASSERT_TRUE(b.router.StartWorker("sink", sink).ok());
    a.router.Send(Make(hop + "/service/sink", "1"));
    ASSERT_EQ(sink->Wait(1).size(), 1u);
  }  // b is gone
  // The connection notices and is forgotten; the next send reopens and fails to connect.
  for (int i = 0; i < 100 && !a.transport.Connections().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(a.transport.Connections().empty());
  auto outcomes = std::make_shared<Outcomes>();
  a.router.Send(Make(hop + "/service/sink", "2", "", outcomes));
  auto results = outcomes->Wait(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].second.code(), absl::StatusCode::kUnavailable);
}

// Writes `bytes` to the node listening at `hop` as a raw client, and returns how many bytes it
// read back before the node closed the connection (and how it ended).
template <typename Socket>
std::pair<size_t, boost::system::error_code> WriteRaw(Socket& s, const std::string& bytes) {
  boost::asio::write(s, boost::asio::buffer(bytes));
  char buf[16];
  boost::system::error_code ec;
  size_t total = 0;
  while (!ec) total += s.read_some(boost::asio::buffer(buf), ec);
  return {total, ec};
}

TEST_P(NodeTransportTest, GarbageFromPeerClosesConnectionWithoutCrash) {
  Node b;
  const std::string hop = ListenOn(b);
  const std::string garbage("\x01\x00\x00\x00\x03zzz", 8);
  boost::asio::io_context io;
  std::pair<size_t, boost::system::error_code> got;
  if (GetParam() != Kind::kUds) {  // raw bytes at the TCP port (WebSocket: not even HTTP)
    auto value = core::UnescapeHopValue(hop.substr(hop.find('/', 1) + 1));
    auto hp = core::ParseHostPort(value->substr(0, value->find('/')));
    boost::asio::ip::tcp::socket s(io);
    s.connect({boost::asio::ip::make_address(hp->host), hp->port});
    got = WriteRaw(s, garbage);
  } else {
    boost::asio::local::stream_protocol::socket s(io);
    s.connect(
        boost::asio::local::stream_protocol::endpoint(*core::UnescapeHopValue(hop.substr(5))));
    got = WriteRaw(s, garbage);
  }
  // Reads the node's version byte, then sees the close.
  EXPECT_LE(got.first, 1u);  // at most the version byte
  EXPECT_TRUE(got.second == boost::asio::error::eof ||
              got.second == boost::asio::error::connection_reset)
      << got.second.message();
}

TEST(TcpTransportTest, PeerThatDoesNotReadFillsTheQueueThenSendersAreRefused) {
  // A peer that accepts and never reads: kernel buffers fill, then our write queue, then
  // senders hear QUEUE_FULL — memory stays bounded.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  boost::asio::ip::tcp::socket stuck(io);
  std::thread accept([&] { acceptor.accept(stuck); });
  ConnectionOptions small;
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
// (Over a Unix socket the peer's user is its address: both clients here are this process's.)
TEST_P(NodeTransportTest, ConnectionsBeyondTheLimitAreRefusedWithAReason) {
  ConnectionOptions one;
  one.max_connections_per_address = 1;
  Node b(one), a1, a2;
  const std::string hop = ListenOn(b);
  auto sink = std::make_shared<Sink>(b.router.NewStrand());
  ASSERT_TRUE(b.router.StartWorker("sink", sink).ok());
  a1.router.Send(Make(hop + "/service/sink", "first"));
  ASSERT_EQ(sink->Wait(1).size(), 1u);
  a2.router.Send(Make(hop + "/service/sink", "second"));
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
TEST_P(NodeTransportTest, IdleConnectionsThatNothingUsesAreClosed) {
  ConnectionOptions idle;
  idle.idle_timeout = std::chrono::milliseconds(200);
  Node b(idle), a;
  std::atomic<bool> in_use{true};
  b.transport.SetInUse([&in_use](uint64_t) { return in_use.load(); });
  const std::string hop = ListenOn(b);
  auto sink = std::make_shared<Sink>(b.router.NewStrand());
  ASSERT_TRUE(b.router.StartWorker("sink", sink).ok());
  a.router.Send(Make(hop + "/service/sink", "hello"));
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

// The socket file: mode as asked, a stale one replaced, a live one or a non-socket refused,
// removed at shutdown; and the listener reported with its route hop.
TEST(UnixListenerTest, ModeStaleLiveNotASocketAndCleanUp) {
  TempDir dir;
  const std::string path = dir.path + "/sub/bob.sock";  // the directory is made
  {
    Node a;
    ASSERT_TRUE(a.transport.ListenUnix(path, 0600).ok());
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    auto listeners = a.transport.Listeners();
    ASSERT_EQ(listeners.size(), 1u);
    EXPECT_EQ(listeners[0].transport, "uds");
    EXPECT_EQ(listeners[0].address, path);
    EXPECT_EQ(listeners[0].hop, "/uds/%2Ftmp%2F" + dir.path.substr(5) + "%2Fsub%2Fbob.sock");
    EXPECT_TRUE(a.transport.ListenAddresses().empty());  // TCP only
    Node b;
    absl::Status taken = b.transport.ListenUnix(path, 0600);
    EXPECT_EQ(ReasonOf(taken), "ADDRESS_IN_USE") << taken;
  }
  EXPECT_FALSE(std::filesystem::exists(path)) << "the socket outlived its node";
  {
    // A stale socket (its process died without removing it) is replaced.
    boost::asio::io_context io;
    boost::asio::local::stream_protocol::acceptor stale(
        io, boost::asio::local::stream_protocol::endpoint(path));
    stale.close();
    ASSERT_TRUE(std::filesystem::exists(path));
    Node a;
    EXPECT_TRUE(a.transport.ListenUnix(path, 0660).ok());
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0660u);
  }
  std::ofstream(dir.path + "/file") << "not a socket";
  Node a;
  EXPECT_EQ(a.transport.ListenUnix(dir.path + "/file", 0600).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.transport.ListenUnix("relative.sock", 0600).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.transport.ListenUnix(dir.path + "/x.sock", 0666).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.transport.ListenUnix("/" + std::string(200, 'a'), 0600).code(),
            absl::StatusCode::kInvalidArgument);
}

// From the network (or out of a secure channel) a Unix socket hop is dialled only when
// --allow-dial lists its path: "*" does not cover it.
TEST(UnixDialTest, OnlyListedPathsForOthers) {
  ConnectionOptions options;
  ASSERT_TRUE(options.allow_dial.Add("*").ok());
  ASSERT_TRUE(options.allow_dial.Add("unix:/run/veil/ok.sock").ok());
  EXPECT_FALSE(options.allow_dial.Add("unix:relative").ok());
  EXPECT_FALSE(options.allow_dial.Add("unix:/a/../b").ok());
  Node a(options);
  core::SenderInfo network;
  network.origin = core::SenderInfo::Origin::kTransport;
  core::SenderInfo local;
  local.origin = core::SenderInfo::Origin::kLocal;
  const auto ok = core::Address::Uds("/run/veil/ok.sock");
  const auto other = core::Address::Uds("/var/run/docker.sock");
  EXPECT_TRUE(a.transport.Admit(network, ok).ok());
  absl::Status refused = a.transport.Admit(network, other);
  EXPECT_EQ(ReasonOf(refused), "DIAL_REFUSED") << refused;
  EXPECT_TRUE(a.transport.Admit(local, other).ok());  // this node's own workers
  EXPECT_EQ(a.transport.stats().dials_refused.load(), 1u);
}

}  // namespace
}  // namespace veil::transport

namespace veil::transport {
namespace {

// What a WebSocket listener says to what is not a WebSocket upgrade to its path, and what a
// /wss client says of a certificate it cannot verify: clear errors, nothing carried.
class WebSocketErrorsTest : public ::testing::Test {
 protected:
  static std::string Bound(Node& node, bool tls) {
    auto bound = node.transport.ListenWebSocket("127.0.0.1:0/veil", tls);
    EXPECT_TRUE(bound.ok()) << bound.status();
    return bound.value_or("");
  }
  absl::Status SendTo(Node& from, const std::string& hop) {
    auto outcomes = std::make_shared<Outcomes>();
    from.router.Send(Make(hop + "/service/x", "p", "", outcomes));
    auto results = outcomes->Wait(1);
    EXPECT_EQ(results.size(), 1u);
    return results.empty() ? absl::OkStatus() : results[0].second;
  }
  TempDir dir_;
};

TEST_F(WebSocketErrorsTest, AnotherPathIs404AndPlainHttpIs426) {
  Node b, a;
  const std::string bound = Bound(b, false);
  const std::string port = bound.substr(bound.find(':') + 1, bound.find('/') - bound.find(':') - 1);
  absl::Status wrong = SendTo(a, "/ws/127.0.0.1:" + port + "%2Fother");
  EXPECT_EQ(ReasonOf(wrong), "CONNECTION_FAILED") << wrong;
  EXPECT_NE(wrong.message().find("answered 404"), std::string::npos) << wrong;
  // A browser, a probe or curl without an upgrade: told what this is, and closed.
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket s(io);
  s.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(std::stoi(port))});
  boost::asio::write(s, boost::asio::buffer(std::string("GET /veil HTTP/1.1\r\nHost: x\r\n\r\n")));
  std::string answer;
  char buf[512];
  boost::system::error_code ec;
  while (!ec) answer.append(buf, s.read_some(boost::asio::buffer(buf), ec));
  EXPECT_EQ(answer.rfind("HTTP/1.1 426", 0), 0u) << answer;
  EXPECT_NE(answer.find("Upgrade: websocket"), std::string::npos) << answer;
  for (int i = 0; i < 100 && !b.transport.Connections().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(b.transport.Connections().empty());
}

TEST_F(WebSocketErrorsTest, AnUntrustedCertificateFailsTheConnection) {
  // The server's certificate is not the one the client trusts (SSL_CERT_FILE, if the suite above
  // set it, names another).
  auto other = veil::testing::MakeTestCertificate(dir_.path, "untrusted");
  ASSERT_FALSE(other.cert.empty());
  Node b, a;
  ASSERT_TRUE(b.transport.ConfigureWebSocket("", other.cert, other.key, "").ok());
  auto trusted = veil::testing::MakeTestCertificate(dir_.path, "trusted");
  ASSERT_TRUE(a.transport.ConfigureWebSocket(trusted.cert, "", "", "").ok());
  const std::string bound = Bound(b, true);
  absl::Status failed = SendTo(a, core::Address::WebSocket(bound, true).ToString());
  EXPECT_EQ(ReasonOf(failed), "CONNECTION_FAILED") << failed;
  EXPECT_NE(failed.message().find("certificate verify failed"), std::string::npos) << failed;
  // A missing CA file is a clear error, naming the file.
  absl::Status missing = a.transport.ConfigureWebSocket(dir_.path + "/nope.pem", "", "", "");
  EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.message().find("nope.pem"), std::string::npos) << missing;
  // So is a key that does not go with... anything: a certificate file given as the key.
  absl::Status bad_key = a.transport.ConfigureWebSocket("", other.cert, other.cert, "");
  EXPECT_EQ(bad_key.code(), absl::StatusCode::kInvalidArgument) << bad_key;
  Node c;
  EXPECT_EQ(c.transport.ListenWebSocket("127.0.0.1:0", true).status().code(),
            absl::StatusCode::kInvalidArgument);  // no certificate set
}

}  // namespace
}  // namespace veil::transport
