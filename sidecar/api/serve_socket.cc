#include "sidecar/api/serve_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "boost/asio/bind_executor.hpp"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/asio/strand.hpp"
#include "sidecar/api/grpc_status.h"
#include "sidecar/api/serve_stream.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/unix_socket.h"
#include "sidecar/transport/frame_codec.h"
#include "sidecar/transport/stream.h"
#include "spdlog/spdlog.h"
#include "veil_frame.h"

namespace veil::api {

namespace {

using Socket = boost::asio::local::stream_protocol::socket;

constexpr size_t kMinRead = 64 * 1024;
constexpr int kSocketBuffer = 4 * 1024 * 1024;
// How long a finished stream goes on reading (and discarding) what its app still sends, before
// its connection is cut: see Connection::Linger.
constexpr auto kLinger = std::chrono::seconds(2);
// Read per turn while lingering, so that an app that keeps writing cannot hold the strand.
constexpr size_t kLingerTurnBytes = 256 * 1024;
constexpr size_t kLingerRead = 16 * 1024;

}  // namespace

// The streams not yet done, for Drain, and the finished ones still lingering.
class ServeSocketServer::Registry {
 public:
  void Add(const std::shared_ptr<Connection>& c) {
    veil::MutexLock lock(&mu_);
    open_.push_back(c);
  }
  // `c` wrote its last frame: it is no longer open, but lingers.
  void Finished(const std::shared_ptr<Connection>& c) {
    veil::MutexLock lock(&mu_);
    Erase(open_, c.get());
    lingering_.push_back(c);
    changed_.SignalAll();
  }
  void Lingered(const Connection* c) {
    veil::MutexLock lock(&mu_);
    Erase(lingering_, c);
  }
  // Waits up to `grace` for every open stream to finish: true when they did.
  bool WaitForOpen(std::chrono::milliseconds grace, size_t* left) {
    const auto deadline = std::chrono::steady_clock::now() + grace;
    veil::MutexLock lock(&mu_);
    for (;;) {
      Erase(open_, nullptr);
      *left = open_.size();
      if (open_.empty()) return true;
      if (!changed_.WaitUntil(&mu_, deadline)) {
        Erase(open_, nullptr);
        *left = open_.size();
        return open_.empty();
      }
    }
  }
  // Cuts the connections of every open stream and ends the streams, which finish on their own;
  // or of the finished streams still lingering.
  void CutOpen();
  void CutLingering();

 private:
  using List = std::vector<std::weak_ptr<Connection>>;
  // Removes `c` and the streams already gone.
  static void Erase(List& list, const Connection* c) {
    std::erase_if(list, [c](const std::weak_ptr<Connection>& w) {
      auto s = w.lock();
      return s == nullptr || s.get() == c;
    });
  }
  static std::vector<std::shared_ptr<Connection>> Live(const List& list) {
    std::vector<std::shared_ptr<Connection>> live;
    for (const auto& w : list) {
      if (auto s = w.lock()) live.push_back(std::move(s));
    }
    return live;
  }

  veil::Mutex mu_;
  veil::CondVar changed_;
  List open_ ABSL_GUARDED_BY(mu_);
  List lingering_ ABSL_GUARDED_BY(mu_);
};

// One app's connection to the serve socket: a ServeStream carried by the node's Unix-socket
// stream (transport/stream.h) with the shared frame decoder (transport/frame_codec.h).
//
// Reading: the holder of the read takes a request already decoded at once, from whatever thread
// it is on; reading more from the stream happens on the strand. Writing: the holder of the write
// serializes the response into an unzeroed buffer and, with direct writing, writes it to the
// socket at once from its own thread (Stream::WriteNow), a routing thread for deliveries; only
// what the socket does not take at once (or everything, without direct writing) is written on
// the strand. The socket is shut down from any thread (Cut) but closed only when the last
// reference goes, so a direct write never races a close.
class ServeSocketServer::Connection final : public ServeStream, public transport::StreamEvents {
 public:
  static std::shared_ptr<Connection> Create(Socket socket, core::Strand strand,
                                            core::Router& router, const ApiSettings& settings,
                                            ApiStats& stats, std::shared_ptr<Registry> registry) {
    std::shared_ptr<Connection> c(new Connection(std::move(socket), std::move(strand), router,
                                                 settings, stats, std::move(registry)));
    c->registry_->Add(c);
    return c;
  }

  // Starts reading requests (after MessagingService::Adopt, so that a refused stream reads
  // nothing and opens nothing).
  void Start() { Begin(Self()); }

  // From any thread.
  void Cut() { stream_->Cut(); }

  // transport::StreamEvents, on the strand.
  void OnOpened(absl::Status) override {}
  void OnRead(const boost::system::error_code& ec, size_t n) override;
  void OnWritten(const boost::system::error_code& ec, size_t n) override;

 private:
  Connection(Socket socket, core::Strand strand, core::Router& router, const ApiSettings& settings,
             ApiStats& stats, std::shared_ptr<Registry> registry)
      : ServeStream(router, settings, stats),
        settings_(settings),
        strand_(std::move(strand)),
        decoder_(transport::FrameFormat{kServeSocketVersion, settings.max_request_bytes,
                                        /*allow_empty=*/true}),
        registry_(std::move(registry)),
        linger_timer_(strand_) {
    // Room for a whole delivery batch in the socket (the kernel caps it at net.core.wmem_max):
    // fewer partial writes and waits for room.
    const int bytes = kSocketBuffer;
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    stream_ = transport::AcceptedStream(std::move(socket));
  }

  std::shared_ptr<Connection> Self() {
    return std::static_pointer_cast<Connection>(shared_from_this());
  }

  const char* carrier() const override { return "serve socket"; }

  // --- reading ---

  bool StartReadRequest(v1::ServeRequest* into) override;
  enum class Take { kRequest, kMore, kBad };
  // Parses the next whole request in the decoder into read_into_, if there is one.
  Take TakeRequest(absl::Status* why);
  void ReadMore();  // on the strand

  // --- writing ---

  void Serialize(const v1::ServeResponse& response);
  // Writes out_ (directly when the settings say so): true when it is all written.
  bool WriteOut();
  void WriteRest();  // on the strand
  bool StartWriteResponse(const v1::ServeResponse* response) override;
  void FinishStream(const absl::Status& status,
                    const std::map<std::string, std::string>& metadata) override;
  void Finished();

  // --- after the last frame ---

  void Linger();  // on the strand
  void Discard(size_t n);
  void EndLinger();

  const ApiSettings& settings_;
  const core::Strand strand_;
  std::unique_ptr<transport::Stream> stream_;
  transport::FrameDecoder decoder_;  // the holder of the read's
  const std::shared_ptr<Registry> registry_;

  // The holder of the read's.
  v1::ServeRequest* read_into_ = nullptr;
  // The strand's.
  bool read_in_flight_ = false;
  bool lingering_ = false;
  size_t lingered_bytes_ = 0;     // this turn
  std::unique_ptr<char[]> sink_;  // what lingering reads into
  boost::asio::steady_timer linger_timer_;

  // The holder of the write's.
  transport::UnzeroedBuffer out_;
  size_t out_len_ = 0;
  size_t out_pos_ = 0;
  bool version_written_ = false;
  bool finishing_ = false;
  std::vector<boost::asio::const_buffer> rest_;
};

bool ServeSocketServer::Connection::StartReadRequest(v1::ServeRequest* into) {
  read_into_ = into;
  absl::Status why;
  switch (TakeRequest(&why)) {
    case Take::kRequest:
      return true;
    case Take::kBad:
      End(std::move(why));
      return false;
    case Take::kMore:
      break;
  }
  boost::asio::dispatch(strand_, [self = Self()] { self->ReadMore(); });
  return false;
}

ServeSocketServer::Connection::Take ServeSocketServer::Connection::TakeRequest(absl::Status* why) {
  auto frame = decoder_.Next();
  if (!frame.ok()) {
    switch (decoder_.failure()) {
      case transport::FrameDecoder::Failure::kVersion:
        *why = ErrorWithReason(
            absl::StatusCode::kInvalidArgument,
            absl::StrCat("the serve socket speaks version ", int{kServeSocketVersion},
                         "; the client sent ", decoder_.failed_value()),
            reason::kInvalidRequest);
        break;
      case transport::FrameDecoder::Failure::kTooLong:
        *why =
            ErrorWithReason(absl::StatusCode::kResourceExhausted,
                            absl::StrCat("a serve socket frame of ", decoder_.failed_value(),
                                         " bytes is over the limit of ",
                                         settings_.max_request_bytes, " (--api-max-request-bytes)"),
                            reason::kMessageTooLarge);
        break;
      default:
        *why = frame.status();
    }
    return Take::kBad;
  }
  if (!frame->has_value()) return Take::kMore;
  if (!read_into_->ParseFromArray((*frame)->data(), static_cast<int>((*frame)->size()))) {
    *why = ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           "a serve socket frame is not a veil.v1.ServeRequest",
                           reason::kInvalidRequest);
    return Take::kBad;
  }
  return Take::kRequest;
}

void ServeSocketServer::Connection::ReadMore() {
  if (lingering_) return;  // finished meanwhile: the lingering reads now
  // Room for the rest of the frame being read, so a large one takes few reads.
  std::span<char> space = decoder_.WritableSpace(std::max(kMinRead, decoder_.missing()));
  read_in_flight_ = true;
  stream_->ReadSome(space, Self());
}

void ServeSocketServer::Connection::OnRead(const boost::system::error_code& ec, size_t n) {
  read_in_flight_ = false;
  if (lingering_) {
    if (ec) {
      EndLinger();  // the app closed its side, or the connection was cut
    } else {
      Discard(n);
    }
    return;
  }
  if (ec) {
    if (ec == boost::asio::error::eof) {
      ReadDone(false);  // the app closed its side (or the connection was cut)
    } else {
      Cancelled();  // ECONNRESET and the like: the app is gone
    }
    return;
  }
  decoder_.Commit(n);
  absl::Status why;
  switch (TakeRequest(&why)) {
    case Take::kRequest:
      ReadDone(true);
      return;
    case Take::kBad:
      End(std::move(why));
      return;
    case Take::kMore:
      ReadMore();
      return;
  }
}

void ServeSocketServer::Connection::Serialize(const v1::ServeResponse& response) {
  const size_t size = response.ByteSizeLong();
  const size_t head = version_written_ ? 0 : 1;
  out_.Reserve(head + frame::kHeaderBytes + size, 0);
  char* p = out_.data();
  if (head != 0) {
    p[0] = static_cast<char>(kServeSocketVersion);
    version_written_ = true;
  }
  frame::PutLength(p + head, static_cast<uint32_t>(size));
  response.SerializeWithCachedSizesToArray(
      reinterpret_cast<uint8_t*>(p + head + frame::kHeaderBytes));
  out_len_ = head + frame::kHeaderBytes + size;
  out_pos_ = 0;
}

bool ServeSocketServer::Connection::WriteOut() {
  if (settings_.serve_direct_write) {
    boost::system::error_code ec;
    out_pos_ += stream_->WriteNow(boost::asio::const_buffer(out_.data(), out_len_), ec);
    if (out_pos_ == out_len_) return true;
    // The socket is full, or the app is gone: the strand's write waits, or reports it.
  }
  boost::asio::post(strand_, [self = Self()] { self->WriteRest(); });
  return false;
}

void ServeSocketServer::Connection::WriteRest() {
  rest_.assign(1, boost::asio::const_buffer(out_.data() + out_pos_, out_len_ - out_pos_));
  stream_->WriteAll(rest_, Self());
}

void ServeSocketServer::Connection::OnWritten(const boost::system::error_code& ec, size_t) {
  if (finishing_) {
    Finished();
    return;
  }
  WriteDone(!ec);
}

bool ServeSocketServer::Connection::StartWriteResponse(const v1::ServeResponse* response) {
  Serialize(*response);
  return WriteOut();
}

void ServeSocketServer::Connection::FinishStream(
    const absl::Status& status, const std::map<std::string, std::string>& metadata) {
  v1::ServeResponse closed;
  *closed.mutable_closed() = ToRpcStatus(status, metadata);
  Serialize(closed);
  finishing_ = true;
  if (WriteOut()) Finished();
}

void ServeSocketServer::Connection::Finished() {
  auto self = Self();  // Done may drop the stream's own reference
  registry_->Finished(self);
  Done();
  boost::asio::dispatch(strand_, [self] { self->Linger(); });
}

// After the last frame (`closed`): stop writing, so the app reads `closed` and then the end of
// the stream, but go on reading and discarding what the app still sends until it closes its
// side, for at most kLinger. Cutting the connection at once would fail the app's writes in
// flight (EPIPE) — a refusal is written before the app's `open` is read — and some client
// libraries (Node's net.Socket) drop the unread `closed` frame with the failed write.
void ServeSocketServer::Connection::Linger() {
  stream_->ShutdownSend();
  lingering_ = true;
  // Not the decoder's buffer: a holder of the read may still be looking at it.
  sink_.reset(new char[kLingerRead]);
  linger_timer_.expires_after(kLinger);
  linger_timer_.async_wait(
      boost::asio::bind_executor(strand_, [self = Self()](boost::system::error_code ec) {
        if (!ec) self->Cut();  // the read below then ends it
      }));
  if (!read_in_flight_) Discard(0);  // else that read's completion discards
}

void ServeSocketServer::Connection::Discard(size_t n) {
  lingered_bytes_ += n;
  auto self = Self();
  if (lingered_bytes_ >= kLingerTurnBytes) {  // a full turn: let other work run first
    lingered_bytes_ = 0;
    boost::asio::post(strand_, [self] { self->Discard(0); });
    return;
  }
  read_in_flight_ = true;
  stream_->ReadSome(std::span<char>(sink_.get(), kLingerRead), self);
}

void ServeSocketServer::Connection::EndLinger() {
  Cut();
  linger_timer_.cancel();
  registry_->Lingered(this);
}

void ServeSocketServer::Registry::CutOpen() {
  std::vector<std::shared_ptr<Connection>> live;
  {
    veil::MutexLock lock(&mu_);
    live = Live(open_);
  }
  for (auto& c : live) {
    c->Cut();
    c->Cancelled();
  }
}

void ServeSocketServer::Registry::CutLingering() {
  std::vector<std::shared_ptr<Connection>> live;
  {
    veil::MutexLock lock(&mu_);
    live = Live(lingering_);
  }
  for (auto& c : live) c->Cut();  // its read ends the lingering
}

absl::StatusOr<std::unique_ptr<ServeSocketServer>> ServeSocketServer::Start(
    const std::string& path, boost::asio::io_context& io, core::Router& router,
    const ApiSettings& settings, ApiStats& stats, MessagingService& messaging) {
  absl::Status prepared = PrepareUnixSocketPath(path, "serve");
  if (!prepared.ok()) return prepared;
  std::unique_ptr<ServeSocketServer> server(
      new ServeSocketServer(path, io, router, settings, stats, messaging));
  {
    veil::MutexLock lock(&server->mu_);
    boost::system::error_code ec;
    server->acceptor_.open(boost::asio::local::stream_protocol(), ec);
    if (!ec) server->acceptor_.bind(boost::asio::local::stream_protocol::endpoint(path), ec);
    if (!ec) server->acceptor_.listen(boost::asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return ErrorWithReason(
          absl::StatusCode::kUnavailable,
          absl::StrCat("cannot serve the serve socket on ", path, ": ", ec.message()),
          reason::kListenFailed);
    }
  }
  ::chmod(path.c_str(), settings.socket_mode);
  server->Accept();
  spdlog::info("serve socket listening on {}", path);
  return server;
}

ServeSocketServer::ServeSocketServer(std::string path, boost::asio::io_context& io,
                                     core::Router& router, const ApiSettings& settings,
                                     ApiStats& stats, MessagingService& messaging)
    : path_(std::move(path)),
      router_(router),
      settings_(settings),
      stats_(stats),
      messaging_(messaging),
      acceptor_(io),
      registry_(std::make_shared<Registry>()) {}

void ServeSocketServer::Accept() {
  veil::MutexLock lock(&mu_);
  if (closed_) return;
  core::Strand strand = router_.NewStrand();
  acceptor_.async_accept(strand, [this, strand](boost::system::error_code ec, Socket socket) {
    if (ec == boost::asio::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors and the like: try again shortly rather than spin.
      spdlog::warn("serve socket: cannot accept: {}", ec.message());
      auto timer = std::make_shared<boost::asio::steady_timer>(socket.get_executor(),
                                                               std::chrono::milliseconds(100));
      timer->async_wait([this, timer](boost::system::error_code) { Accept(); });
      return;
    }
    auto c = Connection::Create(std::move(socket), strand, router_, settings_, stats_, registry_);
    messaging_.Adopt(*c);
    c->Start();
    Accept();
  });
}

void ServeSocketServer::Drain(std::chrono::milliseconds grace) {
  {
    veil::MutexLock lock(&mu_);
    if (!closed_) {
      closed_ = true;
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      ::unlink(path_.c_str());
    }
  }
  size_t left = 0;
  if (!registry_->WaitForOpen(grace, &left)) {
    spdlog::warn("serve socket: {} streams did not finish within the grace period; cutting them",
                 left);
    registry_->CutOpen();
  }
  registry_->CutLingering();
}

ServeSocketServer::~ServeSocketServer() { Drain(std::chrono::milliseconds(0)); }

}  // namespace veil::api
