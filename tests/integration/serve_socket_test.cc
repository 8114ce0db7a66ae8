// The serve socket: Serve streams without gRPC (docs/api.md, "The serve socket"). Real veild
// processes, the SDK's ServeSocket client and raw Unix sockets for malformed input.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <thread>

#include "gtest/gtest.h"
#include "tests/support/api_client.h"
#include "tests/support/socket_io.h"
#include "tests/support/veild_process.h"
#include "veil_frame.h"
#include "veil_sdk.h"

namespace veil::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A raw connection to the serve socket, for bytes the SDK would never send.
class RawConnection {
 public:
  explicit RawConnection(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{10, 0};  // a test never hangs on a read
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawConnection() { ::close(fd_); }
  bool connected() const { return connected_; }
  bool WriteBytes(const std::string& bytes) { return WriteFull(fd_, bytes.data(), bytes.size()); }
  bool WriteFrame(const std::string& body) {
    return WriteBytes(Header(static_cast<uint32_t>(body.size())) + body);
  }
  bool WriteRequest(const v1::ServeRequest& request) {
    return WriteFrame(request.SerializeAsString());
  }
  // The sidecar's version byte, then its next frame; nullopt at EOF.
  std::optional<v1::ServeResponse> ReadResponse() {
    if (!version_read_) {
      char v;
      if (!ReadFull(fd_, &v, 1)) return std::nullopt;
      EXPECT_EQ(v, 1);
      version_read_ = true;
    }
    char head[frame::kHeaderBytes];
    if (!ReadFull(fd_, head, frame::kHeaderBytes)) return std::nullopt;
    const size_t n = frame::GetLength(head);
    std::string body(n, '\0');
    if (!ReadFull(fd_, body.data(), n)) return std::nullopt;
    v1::ServeResponse response;
    EXPECT_TRUE(response.ParseFromString(body));
    return response;
  }
  // True when the sidecar closed the connection (after its last frame).
  bool AtEof() {
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }
  static std::string Header(uint32_t n) {
    std::string h;
    frame::AppendHeader(h, n);
    return h;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool version_read_ = false;
};

std::string ReasonIn(const google::rpc::Status& status) { return ReasonOf(status); }

v1::ServeRequest OpenRequest(const std::string& address, uint32_t window = 0) {
  v1::ServeRequest r;
  r.mutable_open()->set_address(address);
  r.mutable_open()->set_window(window);
  return r;
}

v1::ServeRequest SendRequest(uint64_t batch_id,
                             const std::vector<std::pair<std::string, std::string>>& messages) {
  v1::ServeRequest r;
  r.mutable_send()->set_batch_id(batch_id);
  for (const auto& [route, payload] : messages) {
    auto* m = r.mutable_send()->add_messages();
    m->set_route(route);
    m->set_payload(payload);
  }
  return r;
}

v1::ServeRequest AckRequest(uint64_t sequence) {
  v1::ServeRequest r;
  r.mutable_ack()->set_sequence(sequence);
  return r;
}

// Opens `address` on the serve socket, retrying while a previous holder is still going away.
std::optional<sdk::ServeSocket> OpenEventually(const std::string& path, const std::string& address,
                                               uint32_t window = 0) {
  for (int i = 0; i < 100; ++i) {
    try {
      return sdk::ServeSocket::Open(path, address, window);
    } catch (const sdk::Error& e) {
      if (e.code() != grpc::StatusCode::ALREADY_EXISTS) throw;
      std::this_thread::sleep_for(milliseconds(50));
    }
  }
  return std::nullopt;
}

// Every case with the sidecar writing from the routing threads (the default) and with every
// write handed to the connection's strand (--serve-socket-direct-write=false).
class ServeSocketTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(node_.Start()) << node_.log();
    api_ = Connect(node_.api_target());
    path_ = GetNode(api_).serve_socket();
  }

  VeildProcess node_{
      {"--api-max-request-bytes", "1048576",
       GetParam() ? "--serve-socket-direct-write=true" : "--serve-socket-direct-write=false"}};
  std::shared_ptr<grpc::Channel> api_;
  std::string path_;
};

INSTANTIATE_TEST_SUITE_P(Writes, ServeSocketTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Direct" : "OnTheStrand";
                         });

TEST_P(ServeSocketTest, GetNodeNamesItBesideTheApiSocketWithTheSameMode) {
  std::string expected = node_.socket_path();  // ".../api.sock"
  expected.replace(expected.size() - 5, 5, ".serve.sock");
  EXPECT_EQ(path_, expected);
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_P(ServeSocketTest, AnAppServesAnAddressAndEchoesAGrpcRequest) {
  auto echoer = sdk::ServeSocket::Open(path_, "echoer");
  EXPECT_EQ(echoer.opened().address(), "echoer");
  EXPECT_EQ(echoer.opened().route(), "/service/echoer");
  EXPECT_EQ(echoer.opened().window(), 1024u);
  std::thread app([&] {
    v1::ServeResponse r;
    while (echoer.Read(&r)) {
      for (const auto& d : r.deliveries().deliveries()) {
        EXPECT_EQ(d.sender().origin(), v1::Sender::ORIGIN_LOCAL);
        echoer.Write(SendRequest(d.sequence(), {{d.return_route(), "echo: " + d.payload()}}));
        echoer.Write(AckRequest(d.sequence()));
      }
    }
  });
  v1::RequestResponse response;
  grpc::Status status = Request(api_, "/service/echoer", "Hello veil!", &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.reply().payload(), "echo: Hello veil!");
  EXPECT_EQ(response.reply().return_route(), "/service/echoer");
  echoer.WritesDone();
  app.join();
  EXPECT_TRUE(echoer.status().ok()) << echoer.status().error_message();
}

TEST_P(ServeSocketTest, TheSdkServesOnItWhenItCanAndOnGrpcWhenItCannot) {
  auto reachable = sdk::Sidecar::Connect(node_.api_target());
  std::promise<void> opened;
  std::thread app([&] {
    try {
      reachable.Serve(
          "sdk_echoer", [](sdk::Message& m) { m.Reply(m.payload()); },
          [&](const std::string&) { opened.set_value(); });
    } catch (const sdk::Error&) {
      // the stream ends with the node
    }
  });
  ASSERT_EQ(opened.get_future().wait_for(seconds(20)), std::future_status::ready);
  v1::RequestResponse response;
  ASSERT_TRUE(Request(api_, "/service/sdk_echoer", "via the socket", &response).ok());
  EXPECT_EQ(response.reply().payload(), "via the socket");
  EXPECT_NE(node_.log().find("app serves address sdk_echoer (serve socket)"), std::string::npos)
      << node_.log();
  // A sidecar whose serve socket this process cannot reach: the SDK falls back to gRPC.
  TempDir dir;
  VeildProcess elsewhere({"--serve-socket", dir.path() + "/serve.sock"});
  ASSERT_TRUE(elsewhere.Start()) << elsewhere.log();
  // As if in another container: the path GetNode names leads nowhere from here.
  ASSERT_EQ(::unlink((dir.path() + "/serve.sock").c_str()), 0);
  auto unreachable = sdk::Sidecar::Connect(elsewhere.api_target());
  std::promise<void> fallback_opened;
  std::thread fallback([&] {
    try {
      unreachable.Serve(
          "fallback", [](sdk::Message& m) { m.Reply(m.payload()); },
          [&](const std::string&) { fallback_opened.set_value(); });
    } catch (const sdk::Error&) {
    }
  });
  ASSERT_EQ(fallback_opened.get_future().wait_for(seconds(20)), std::future_status::ready);
  ASSERT_TRUE(
      Request(Connect(elsewhere.api_target()), "/service/fallback", "via gRPC", &response).ok());
  EXPECT_EQ(response.reply().payload(), "via gRPC");
  EXPECT_NE(elsewhere.log().find("app serves address fallback (gRPC)"), std::string::npos)
      << elsewhere.log();
  elsewhere.Signal(SIGTERM);
  fallback.join();
  node_.Signal(SIGTERM);
  app.join();
}

TEST_P(ServeSocketTest, TheSdkLearnsWhenTheAppAckedWhatItSent) {
  auto app = sdk::Sidecar::Connect(node_.api_target());
  auto sender = sdk::Sidecar::Connect(node_.api_target());
  std::promise<void> opened, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> handled{0};
  std::thread serving([&] {
    try {
      app.Serve(
          "sink",
          [&](sdk::Message&) {
            ++handled;
            released.wait();  // the batch is acked once the handler returns
          },
          [&](const std::string&) { opened.set_value(); });
    } catch (const sdk::Error&) {
    }
  });
  ASSERT_EQ(opened.get_future().wait_for(seconds(20)), std::future_status::ready);
  std::future<void> delivered = sender.SendAsync("/service/sink", "hello");
  EXPECT_EQ(delivered.wait_for(milliseconds(300)), std::future_status::timeout)
      << "delivered before the app had handled it";
  EXPECT_EQ(handled.load(), 1);
  release.set_value();
  ASSERT_EQ(delivered.wait_for(seconds(10)), std::future_status::ready);
  EXPECT_NO_THROW(delivered.get());
  EXPECT_NO_THROW(sender.Send("/service/sink", "and this one", /*delivered=*/true));
  EXPECT_EQ(handled.load(), 2);

  // An app that goes without acking: its message is reported dropped, with the reason.
  std::promise<void> fragile_opened;
  std::thread fragile([&] {
    try {
      app.Serve(
          "fragile", [](sdk::Message&) { throw std::runtime_error("handler broke"); },
          [&](const std::string&) { fragile_opened.set_value(); });
    } catch (const std::exception&) {
    }
  });
  ASSERT_EQ(fragile_opened.get_future().wait_for(seconds(20)), std::future_status::ready);
  try {
    sender.SendAsync("/service/fragile", "x").get();
    ADD_FAILURE() << "a message the app never acked was reported delivered";
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.reason(), "MESSAGE_DROPPED") << e.what();
  }
  fragile.join();
  // A delivered send the sidecar refuses throws its reason.
  try {
    sender.Send("/tcp/127.0.0.1:9/service/x", "x", /*delivered=*/true);
    ADD_FAILURE() << "plaintext left the node";
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.reason(), "PLAINTEXT_EGRESS_REFUSED") << e.what();
  }
  node_.Signal(SIGTERM);
  serving.join();
}

TEST_P(ServeSocketTest, TenThousandMessagesArriveInOrderWithinTheWindow) {
  auto sink = sdk::ServeSocket::Open(path_, "sink", /*window=*/64);
  EXPECT_EQ(sink.opened().window(), 64u);
  auto sender = sdk::ServeSocket::Open(path_, "sender");
  constexpr int kMessages = 10000;
  std::thread send([&] {
    for (int batch = 0; batch < kMessages / 500; ++batch) {
      std::vector<std::pair<std::string, std::string>> messages;
      for (int i = 0; i < 500; ++i) {
        messages.emplace_back("/service/sink", "message " + std::to_string(batch * 500 + i));
      }
      ASSERT_TRUE(sender.Write(SendRequest(batch, messages)));
    }
  });
  uint32_t accepted = 0;
  std::thread results([&] {
    v1::ServeResponse r;
    for (int got = 0; got < kMessages / 500 && sender.Read(&r); ++got) {
      ASSERT_TRUE(r.has_send_result());
      EXPECT_EQ(r.send_result().batch_id(), static_cast<uint64_t>(got));
      EXPECT_EQ(r.send_result().failures_size(), 0);
      accepted += r.send_result().accepted();
    }
  });
  int next = 0;
  uint64_t acked = 0;
  v1::ServeResponse r;
  while (next < kMessages && sink.Read(&r)) {
    ASSERT_TRUE(r.has_deliveries());
    for (const auto& d : r.deliveries().deliveries()) {
      EXPECT_EQ(d.sequence(), static_cast<uint64_t>(next + 1));
      EXPECT_LE(d.sequence() - acked, 64u) << "more than the window outstanding";
      EXPECT_EQ(d.payload(), "message " + std::to_string(next));
      EXPECT_EQ(d.return_route(), "/service/sender");
      ++next;
    }
    acked = r.deliveries().deliveries().rbegin()->sequence();
    ASSERT_TRUE(sink.Write(AckRequest(acked)));
  }
  EXPECT_EQ(next, kMessages);
  send.join();
  results.join();
  EXPECT_EQ(accepted, static_cast<uint32_t>(kMessages));
}

TEST_P(ServeSocketTest, FailuresOnlyBatchesAreReportedOnlyWhenSomethingFailed) {
  auto sink = sdk::ServeSocket::Open(path_, "quiet_sink");
  auto sender = sdk::ServeSocket::Open(path_, "quiet_sender");
  constexpr int kQuiet = 3000;  // more than --api-max-pending-batches (1,024): none stays pending
  std::atomic<int> delivered{0};
  std::thread reader([&] {
    v1::ServeResponse r;
    while (delivered < kQuiet + 1 && sink.Read(&r)) {
      for (const auto& d : r.deliveries().deliveries()) {
        EXPECT_EQ(d.payload(), std::to_string(delivered.load()));
        ++delivered;
        sink.Write(AckRequest(d.sequence()));
      }
    }
  });
  for (int i = 0; i < kQuiet; ++i) {
    v1::ServeRequest quiet = SendRequest(i, {{"/service/quiet_sink", std::to_string(i)}});
    quiet.mutable_send()->set_failures_only(true);
    ASSERT_TRUE(sender.Write(quiet));
  }
  v1::ServeRequest failing = SendRequest(5000, {{"/service/nobody", "x"}});
  failing.mutable_send()->set_failures_only(true);
  ASSERT_TRUE(sender.Write(failing));
  ASSERT_TRUE(sender.Write(SendRequest(6000, {{"/service/quiet_sink", std::to_string(kQuiet)}})));
  v1::ServeResponse r;
  ASSERT_TRUE(sender.Read(&r));
  EXPECT_EQ(r.send_result().batch_id(), 5000u) << "a quiet batch was reported: " << r.DebugString();
  ASSERT_EQ(r.send_result().failures_size(), 1);
  EXPECT_EQ(ReasonIn(r.send_result().failures(0).status()), "ROUTE_NOT_FOUND");
  ASSERT_TRUE(sender.Read(&r));
  EXPECT_EQ(r.send_result().batch_id(), 6000u);
  EXPECT_EQ(r.send_result().accepted(), 1u);
  reader.join();
  EXPECT_EQ(delivered.load(), kQuiet + 1);
}

TEST_P(ServeSocketTest, LargeMessagesAndASlowReaderLoseNothing) {
  auto sink = sdk::ServeSocket::Open(path_, "sink", /*window=*/8);
  auto sender = sdk::ServeSocket::Open(path_, "sender");
  // 64 x 1 MiB (less the frame's overhead): far more than the socket buffers while the sink
  // sleeps, so the sidecar's writes to it must wait for room and resume.
  constexpr int kMessages = 64;
  const size_t size = 1000 * 1000;
  std::thread send([&] {
    for (int i = 0; i < kMessages; ++i) {
      ASSERT_TRUE(sender.Write(
          SendRequest(i, {{"/service/sink", std::string(size, static_cast<char>('a' + i % 26))}})));
      v1::ServeResponse result;
      ASSERT_TRUE(sender.Read(&result));
      EXPECT_EQ(result.send_result().accepted(), 1u) << result.DebugString();
    }
  });
  std::this_thread::sleep_for(milliseconds(500));
  int got = 0;
  v1::ServeResponse r;
  while (got < kMessages && sink.Read(&r)) {
    for (const auto& d : r.deliveries().deliveries()) {
      ASSERT_EQ(d.payload().size(), size);
      EXPECT_EQ(d.payload(), std::string(size, static_cast<char>('a' + got % 26)));
      ++got;
      ASSERT_TRUE(sink.Write(AckRequest(d.sequence())));
    }
  }
  EXPECT_EQ(got, kMessages);
  send.join();
}

TEST_P(ServeSocketTest, RefusalsAreTheGrpcStreamsWithTheirReasons) {
  auto held = sdk::ServeSocket::Open(path_, "taken");
  try {
    sdk::ServeSocket::Open(path_, "taken");
    ADD_FAILURE() << "a served address was opened twice";
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), grpc::StatusCode::ALREADY_EXISTS) << e.what();
  }
  // An address held on the serve socket is held for gRPC streams too.
  ServeClient grpc_twin(api_, "taken");
  EXPECT_FALSE(grpc_twin.Read().has_value());
  EXPECT_EQ(grpc_twin.Finish().error_code(), grpc::StatusCode::ALREADY_EXISTS);
  try {
    sdk::ServeSocket::Open(path_, "_reserved");
    ADD_FAILURE() << "a reserved address was opened";
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), grpc::StatusCode::INVALID_ARGUMENT) << e.what();
    EXPECT_EQ(e.reason(), "INVALID_ADDRESS");
  }
  RawConnection ack_first(path_);
  ASSERT_TRUE(ack_first.WriteBytes(std::string(1, '\1')));
  ASSERT_TRUE(ack_first.WriteRequest(AckRequest(1)));
  auto closed = ack_first.ReadResponse();
  ASSERT_TRUE(closed.has_value() && closed->has_closed());
  EXPECT_EQ(closed->closed().code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(closed->closed().message().find("must be `open`"), std::string::npos);
  EXPECT_TRUE(ack_first.AtEof());
  // Sending to nowhere fails per message, in the batch's result; the stream goes on.
  held.Write(SendRequest(9, {{"/service/nobody", "x"}, {"not a route", "y"}}));
  v1::ServeResponse result;
  ASSERT_TRUE(held.Read(&result));
  ASSERT_EQ(result.send_result().failures_size(), 2) << result.DebugString();
  EXPECT_EQ(ReasonIn(result.send_result().failures(0).status()), "ROUTE_NOT_FOUND");
  EXPECT_EQ(ReasonIn(result.send_result().failures(1).status()), "INVALID_ROUTE");
}

TEST_P(ServeSocketTest, MalformedInputEndsThatStreamWithAClearStatusAndNothingElse) {
  auto bystander = sdk::ServeSocket::Open(path_, "bystander");
  struct Case {
    std::string name;
    std::string bytes;
    grpc::StatusCode code;
    std::string says;
  };
  std::string huge_header = RawConnection::Header(2 * 1024 * 1024);  // over --api-max-request-bytes
  const std::vector<Case> cases = {
      {"wrong version", std::string(1, '\7') + RawConnection::Header(0),
       grpc::StatusCode::INVALID_ARGUMENT, "speaks version 1; the client sent 7"},
      {"frame over the limit", std::string(1, '\1') + huge_header,
       grpc::StatusCode::RESOURCE_EXHAUSTED, "over the limit of 1048576"},
      {"not a ServeRequest", std::string(1, '\1') + RawConnection::Header(3) + "\xff\xff\xff",
       grpc::StatusCode::INVALID_ARGUMENT, "not a veil.v1.ServeRequest"},
      {"empty request", std::string(1, '\1') + RawConnection::Header(0),
       grpc::StatusCode::INVALID_ARGUMENT, "must set one of open, ack or send"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    RawConnection raw(path_);
    ASSERT_TRUE(raw.connected());
    ASSERT_TRUE(raw.WriteBytes(c.bytes));
    auto closed = raw.ReadResponse();
    ASSERT_TRUE(closed.has_value() && closed->has_closed());
    EXPECT_EQ(closed->closed().code(), c.code);
    EXPECT_NE(closed->closed().message().find(c.says), std::string::npos)
        << closed->closed().message();
    EXPECT_TRUE(raw.AtEof());
  }
  {
    // Half a frame, then gone: the address it opened is free again.
    RawConnection raw(path_);
    ASSERT_TRUE(raw.WriteBytes(std::string(1, '\1')));
    ASSERT_TRUE(raw.WriteRequest(OpenRequest("vanishing")));
    ASSERT_TRUE(raw.ReadResponse()->has_opened());
    ASSERT_TRUE(raw.WriteBytes(RawConnection::Header(100) + "partial"));
  }
  EXPECT_TRUE(OpenEventually(path_, "vanishing").has_value());
  // The other stream never noticed.
  v1::RequestResponse unused;
  std::thread echo([&] {
    v1::ServeResponse r;
    ASSERT_TRUE(bystander.Read(&r));
    const auto& d = r.deliveries().deliveries(0);
    bystander.Write(SendRequest(1, {{d.return_route(), d.payload()}}));
  });
  EXPECT_TRUE(Request(api_, "/service/bystander", "still here", &unused).ok());
  EXPECT_EQ(unused.reply().payload(), "still here");
  echo.join();
}

TEST_P(ServeSocketTest, HalfClosingFinishesOkAndFreesTheAddress) {
  auto first = sdk::ServeSocket::Open(path_, "again");
  first.WritesDone();
  v1::ServeResponse r;
  EXPECT_FALSE(first.Read(&r));
  EXPECT_TRUE(first.status().ok()) << first.status().error_message();
  EXPECT_TRUE(OpenEventually(path_, "again").has_value());
}

TEST_P(ServeSocketTest, StreamsCountTowardsTheSameLimitAsGrpcStreams) {
  VeildProcess node({"--api-max-serve-streams", "1"});
  ASSERT_TRUE(node.Start()) << node.log();
  auto api = Connect(node.api_target());
  const std::string path = GetNode(api).serve_socket();
  ServeClient grpc_stream(api, "one");
  ASSERT_TRUE(grpc_stream.Read().has_value());
  try {
    sdk::ServeSocket::Open(path, "two");
    ADD_FAILURE() << "a second stream was opened past --api-max-serve-streams 1";
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << e.what();
    EXPECT_EQ(e.reason(), "TOO_MANY_STREAMS");
  }
  // The refusal comes before the sidecar reads anything, and then the connection lingers: what
  // the app still writes is read and discarded (its writes do not fail), it reads `closed` and
  // then the end of the stream. An `open` larger than the socket's buffers is still being
  // written when the refusal is; the SDK reports the refusal, not "connection lost".
  {
    RawConnection raw(path);
    auto closed = raw.ReadResponse();
    ASSERT_TRUE(closed.has_value() && closed->has_closed());
    EXPECT_EQ(ReasonIn(closed->closed()), "TOO_MANY_STREAMS");
    EXPECT_TRUE(raw.WriteBytes(std::string(1, '\1')));
    EXPECT_TRUE(raw.WriteRequest(OpenRequest("late")));
    EXPECT_TRUE(raw.AtEof());
    // An app that neither closes nor stops writing is cut after the lingering time (2 s).
    bool cut = false;
    for (int i = 0; i < 100 && !cut; ++i) {
      std::this_thread::sleep_for(milliseconds(100));
      cut = !raw.WriteBytes("more");
    }
    EXPECT_TRUE(cut) << "the lingering connection was never cut";
  }
  try {
    sdk::ServeSocket::Open(path, std::string(16 << 20, 'a'));
    ADD_FAILURE() << "a second stream was opened past --api-max-serve-streams 1";
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << e.what();
    EXPECT_EQ(e.reason(), "TOO_MANY_STREAMS");
  }
}

TEST(ServeSocketLimitsTest, StreamsThatNeverOpenAreEndedAndFreeTheirSlot) {
  VeildProcess node({"--api-max-serve-streams", "1", "--api-open-timeout", "0.5"});
  ASSERT_TRUE(node.Start()) << node.log();
  auto api = Connect(node.api_target());
  const std::string path = GetNode(api).serve_socket();
  {  // A serve socket connection that sends nothing holds the only slot, then is ended.
    RawConnection raw(path);
    ASSERT_TRUE(raw.connected());
    auto start = std::chrono::steady_clock::now();
    auto closed = raw.ReadResponse();
    ASSERT_TRUE(closed.has_value() && closed->has_closed());
    EXPECT_EQ(closed->closed().code(), static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED));
    EXPECT_EQ(ReasonIn(closed->closed()), "OPEN_TIMEOUT");
    EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
  }
  // The same for a gRPC Serve call that never opens (once the ended stream has let its slot
  // go: its connection lingers a moment after the last frame).
  grpc::Status status;
  for (int i = 0; i < 100; ++i) {
    auto stub = v1::MessagingService::NewStub(api);
    grpc::ClientContext context;
    auto stream = stub->Serve(&context);
    v1::ServeResponse response;
    EXPECT_FALSE(stream->Read(&response));
    status = stream->Finish();
    if (ReasonOf(status) != "TOO_MANY_STREAMS") break;
    std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_EQ(ReasonOf(status), "OPEN_TIMEOUT");
  // The slot is free again (once the ended streams are gone): an app that opens at once serves.
  std::optional<sdk::ServeSocket> socket;
  for (int i = 0; i < 100 && !socket.has_value(); ++i) {
    try {
      socket = sdk::ServeSocket::Open(path, "echoer");
    } catch (const sdk::Error& e) {
      ASSERT_EQ(e.code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << e.what();
      std::this_thread::sleep_for(milliseconds(50));
    }
  }
  EXPECT_TRUE(socket.has_value());
}

TEST_P(ServeSocketTest, ShutdownEndsStreamsWithNodeShuttingDownAndRemovesTheSocket) {
  auto app = sdk::ServeSocket::Open(path_, "app");
  node_.Signal(SIGTERM);
  v1::ServeResponse r;
  EXPECT_FALSE(app.Read(&r));
  EXPECT_EQ(app.status().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(sdk::ReasonOf(app.status()), "NODE_SHUTTING_DOWN");
  EXPECT_EQ(node_.Wait(), 0) << node_.log();
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_P(ServeSocketTest, TheSdkReportsTheSidecarsStatusWhenAReplyFindsTheStreamEnded) {
  // A reply written after the sidecar ended the stream fails (EPIPE). Serve reads on to the
  // status the sidecar wrote before closing, and throws that, not a bare "stream ended".
  auto app = sdk::Sidecar::Connect(node_.api_target());
  auto sender = sdk::Sidecar::Connect(node_.api_target());
  std::promise<void> opened;
  auto ready = opened.get_future();
  std::thread send([&] {
    ready.wait();
    sender.Send("/service/late_replier", "ping");
  });
  try {
    app.Serve(
        "late_replier",
        [&](sdk::Message& m) {
          node_.Signal(SIGTERM);
          EXPECT_EQ(node_.Wait(), 0) << node_.log();
          m.Reply("too late");
          ADD_FAILURE() << "a reply after the stream ended did not fail";
        },
        [&](const std::string&) { opened.set_value(); });
    ADD_FAILURE() << "Serve returned normally";
  } catch (const sdk::Error& e) {
    EXPECT_EQ(e.code(), grpc::StatusCode::UNAVAILABLE) << e.what();
    EXPECT_EQ(e.reason(), "NODE_SHUTTING_DOWN") << e.what();
  }
  send.join();
}

TEST(ServeSocketOptionsTest, NoneTurnsItOffAnExplicitPathIsUsedAndALiveOneIsNotTaken) {
  VeildProcess off({"--serve-socket", "none"});
  ASSERT_TRUE(off.Start()) << off.log();
  EXPECT_EQ(GetNode(Connect(off.api_target())).serve_socket(), "");
  std::string beside = off.socket_path();
  beside.replace(beside.size() - 5, 5, ".serve.sock");
  EXPECT_FALSE(std::filesystem::exists(beside));

  TempDir dir;
  const std::string path = dir.path() + "/fast.sock";
  VeildProcess on({"--serve-socket", path});
  ASSERT_TRUE(on.Start()) << on.log();
  EXPECT_EQ(GetNode(Connect(on.api_target())).serve_socket(), path);
  EXPECT_NO_THROW(sdk::ServeSocket::Open(path, "here"));

  VeildProcess second({"--serve-socket", path});
  EXPECT_FALSE(second.Start(seconds(10)));
  EXPECT_NE(second.log().find("another process already serves the serve socket at " + path),
            std::string::npos)
      << second.log();

  // Left behind by a veild that died: replaced.
  on.Kill();
  ASSERT_TRUE(std::filesystem::exists(path));
  VeildProcess after({"--serve-socket", path});
  ASSERT_TRUE(after.Start()) << after.log();
  EXPECT_NE(after.log().find("removing stale serve socket " + path), std::string::npos)
      << after.log();
  EXPECT_NO_THROW(sdk::ServeSocket::Open(path, "here_again"));

  // A TCP API has no serve socket unless asked for one.
  VeildProcess tcp({"--api", "127.0.0.1:0"});
  ASSERT_TRUE(tcp.Start()) << tcp.log();
  EXPECT_EQ(GetNode(Connect(tcp.api_target())).serve_socket(), "");
}

}  // namespace
}  // namespace veil::testing
