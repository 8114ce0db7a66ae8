#include "sidecar/api/serve_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "boost/asio/steady_timer.hpp"
#include "sidecar/api/grpc_status.h"
#include "sidecar/api/serve_stream.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/unix_socket.h"
#include "spdlog/spdlog.h"
#include "veil_frame.h"

namespace veil::api {

// The streams not yet done, for Drain, and the finished ones still lingering.
struct ServeSocketRegistry {
  std::mutex mu;
  std::condition_variable changed;
  // Each with its connection's descriptor, valid while the stream lives.
  std::vector<std::pair<std::weak_ptr<ServeStream>, int>> open;
  std::vector<std::pair<std::weak_ptr<ServeStream>, int>> lingering;
  // Cuts every open stream's connection (shutdown(2)) and ends the stream, which then finishes
  // on its own.
  void CutAll();
  // Cuts the connections of finished streams still reading what their apps sent last.
  void CutLingering();
};

namespace {

using Socket = boost::asio::local::stream_protocol::socket;

constexpr size_t kFrameHeader = frame::kHeaderBytes;
constexpr size_t kInitialReadBuffer = 64 * 1024;
// A buffer grown past this for one large frame is released once that frame is through, so an
// idle stream does not keep it.
constexpr size_t kKeptBuffer = 1024 * 1024;
constexpr int kSocketBuffer = 4 * 1024 * 1024;
// How long a finished stream goes on reading (and discarding) what its app still sends, before
// its connection is cut: see Stream::Linger.
constexpr auto kLinger = std::chrono::seconds(2);
// Read per turn while lingering, so that an app that keeps writing cannot hold the io thread.
constexpr size_t kLingerTurnBytes = 256 * 1024;

// A growable byte buffer that does not zero what it allocates (a 4 MiB delivery batch is
// serialized straight into it).
class Bytes {
 public:
  char* data() { return data_.get(); }
  size_t capacity() const { return capacity_; }
  // Makes room for `n` bytes, keeping the first `keep`.
  void Reserve(size_t n, size_t keep) {
    if (n <= capacity_) return;
    size_t cap = std::max(n, capacity_ * 2);
    std::unique_ptr<char[]> bigger(new char[cap]);
    if (keep > 0) std::memcpy(bigger.get(), data_.get(), keep);
    data_ = std::move(bigger);
    capacity_ = cap;
  }
  void Release() {
    data_.reset();
    capacity_ = 0;
  }

 private:
  std::unique_ptr<char[]> data_;
  size_t capacity_ = 0;
};

// Calls nested in a completion on the same thread are turned into another turn of the
// completing loop, so a run of completions does not grow the stack (a write that completes at
// once starts the next, which completes at once, ...).
struct Trampoline {
  const void* owner = nullptr;
  int* again = nullptr;  // 0: no nested call; otherwise its argument + 1
};
thread_local Trampoline tl_reading;
thread_local Trampoline tl_writing;

// Runs `turn(arg)`, then again for each nested call made through this trampoline meanwhile.
template <typename Turn>
void RunTrampolined(Trampoline& tl, const void* owner, int arg, Turn&& turn) {
  if (tl.owner == owner) {
    *tl.again = arg + 1;
    return;
  }
  const Trampoline saved = tl;
  int again = arg + 1;
  tl = {owner, &again};
  while (again != 0) {
    const int a = again - 1;
    again = 0;
    turn(a);
  }
  tl = saved;
}

google::rpc::Status ToRpc(const grpc::Status& status) {
  google::rpc::Status out;
  if (!status.error_details().empty() && out.ParseFromString(status.error_details())) return out;
  out.set_code(static_cast<int>(status.error_code()));
  out.set_message(status.error_message());
  return out;
}

}  // namespace

void ServeSocketRegistry::CutAll() {
  std::vector<std::shared_ptr<ServeStream>> streams;
  {
    std::lock_guard lock(mu);
    for (auto& [weak, fd] : open) {
      if (auto s = weak.lock()) {
        ::shutdown(fd, SHUT_RDWR);
        streams.push_back(std::move(s));
      }
    }
  }
  for (auto& s : streams) s->Cancelled();
}

void ServeSocketRegistry::CutLingering() {
  std::lock_guard lock(mu);
  for (auto& [weak, fd] : lingering) {
    if (auto s = weak.lock()) ::shutdown(fd, SHUT_RDWR);  // its read wait ends the lingering
  }
}

class ServeSocketServer::Stream final : public ServeStream {
 public:
  static std::shared_ptr<Stream> Create(Socket socket, core::Router& router,
                                        const ApiSettings& settings, ApiStats& stats,
                                        std::shared_ptr<ServeSocketRegistry> registry) {
    std::shared_ptr<Stream> stream(
        new Stream(std::move(socket), router, settings, stats, std::move(registry)));
    {
      std::lock_guard lock(stream->registry_->mu);
      stream->registry_->open.emplace_back(stream, stream->fd_);
    }
    return stream;
  }

  // Starts reading requests (after MessagingService::Adopt, so that a refused stream reads
  // nothing and opens nothing).
  void Start() { Begin(Self()); }

 private:
  Stream(Socket socket, core::Router& router, const ApiSettings& settings, ApiStats& stats,
         std::shared_ptr<ServeSocketRegistry> registry)
      : ServeStream(router, settings, stats),
        settings_(settings),
        socket_(std::move(socket)),
        fd_(socket_.native_handle()),
        registry_(std::move(registry)) {
    // Room for a whole delivery batch in the socket (the kernel caps it at net.core.wmem_max):
    // fewer partial sends and waits for room.
    const int bytes = kSocketBuffer;
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  }

  std::shared_ptr<Stream> Self() { return std::static_pointer_cast<Stream>(shared_from_this()); }

  const char* carrier() const override { return "serve socket"; }

  // --- reading: one request at a time, by whoever holds the read ---

  void StartReadRequest(v1::ServeRequest* into) override {
    read_into_ = into;
    auto self = Self();
    RunTrampolined(tl_reading, this, 0, [this](int) { ReadTurn(); });
  }

  enum class Take { kRequest, kMore, kBad };

  // Takes the next whole request out of the read buffer, if there is one.
  Take TakeRequest(grpc::Status* why) {
    char* in = in_.data();
    if (!version_read_) {
      if (in_end_ == in_begin_) return Take::kMore;
      const auto version = static_cast<unsigned char>(in[in_begin_++]);
      version_read_ = true;
      if (version != kServeSocketVersion) {
        *why = GrpcError(absl::StatusCode::kInvalidArgument,
                         absl::StrCat("the serve socket speaks version ", int{kServeSocketVersion},
                                      "; the client sent ", int{version}),
                         reason::kInvalidRequest);
        return Take::kBad;
      }
    }
    const frame::Peek peek =
        frame::PeekFrame(in + in_begin_, in_end_ - in_begin_, settings_.max_request_bytes);
    const uint32_t length = peek.length;
    if (peek.next == frame::Next::kTooLong) {
      *why =
          GrpcError(absl::StatusCode::kResourceExhausted,
                    absl::StrCat("a serve socket frame of ", length, " bytes is over the limit of ",
                                 settings_.max_request_bytes, " (--api-max-request-bytes)"),
                    reason::kMessageTooLarge);
      return Take::kBad;
    }
    if (peek.next == frame::Next::kNeedMore) return Take::kMore;
    if (!read_into_->ParseFromArray(in + in_begin_ + kFrameHeader, static_cast<int>(length))) {
      *why =
          GrpcError(absl::StatusCode::kInvalidArgument,
                    "a serve socket frame is not a veil.v1.ServeRequest", reason::kInvalidRequest);
      return Take::kBad;
    }
    in_begin_ += kFrameHeader + length;
    return Take::kRequest;
  }

  // One turn of the read loop: hands on one request, or reads more, or waits for more.
  void ReadTurn() {
    for (;;) {
      grpc::Status why;
      switch (TakeRequest(&why)) {
        case Take::kRequest:
          ReadDone(true);  // asks for the next request through the trampoline
          return;
        case Take::kBad:
          End(why);
          return;
        case Take::kMore:
          break;
      }
      // Room for the rest of the frame being read (or a header), at the start of the buffer.
      size_t want = kInitialReadBuffer;
      if (version_read_ && in_end_ - in_begin_ >= kFrameHeader) {
        want = std::max(want, kFrameHeader + frame::GetLength(in_.data() + in_begin_));
      }
      if (in_begin_ > 0 && (in_begin_ == in_end_ || in_.capacity() - in_begin_ < want)) {
        std::memmove(in_.data(), in_.data() + in_begin_, in_end_ - in_begin_);
        in_end_ -= in_begin_;
        in_begin_ = 0;
      }
      if (in_begin_ == in_end_ && in_.capacity() > kKeptBuffer) {
        in_.Release();
        in_begin_ = in_end_ = 0;
      }
      in_.Reserve(in_begin_ + want, in_end_);
      const ssize_t n = ::recv(fd_, in_.data() + in_end_, in_.capacity() - in_end_, MSG_DONTWAIT);
      if (n > 0) {
        in_end_ += static_cast<size_t>(n);
        continue;
      }
      if (n == 0) {  // the app closed its side (or the connection was cut)
        ReadDone(false);
        return;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        veil::MutexLock lock(&socket_mu_);
        socket_.async_wait(Socket::wait_read, [self = Self()](boost::system::error_code ec) {
          if (ec) {
            self->Cancelled();
            return;
          }
          RunTrampolined(tl_reading, self.get(), 0, [&self](int) { self->ReadTurn(); });
        });
        return;
      }
      Cancelled();  // ECONNRESET and the like: the app is gone
      return;
    }
  }

  // --- writing: one frame at a time, by whoever holds the write ---

  void Serialize(const v1::ServeResponse& response) {
    const size_t size = response.ByteSizeLong();
    const size_t head = version_written_ ? 0 : 1;
    if (out_.capacity() > kKeptBuffer && head + kFrameHeader + size <= kKeptBuffer) {
      out_.Release();
    }
    out_.Reserve(head + kFrameHeader + size, 0);
    char* p = out_.data();
    if (head != 0) {
      p[0] = static_cast<char>(kServeSocketVersion);
      version_written_ = true;
    }
    frame::PutLength(p + head, static_cast<uint32_t>(size));
    response.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(p + head + kFrameHeader));
    out_len_ = head + kFrameHeader + size;
    out_pos_ = 0;
  }

  void StartWriteResponse(const v1::ServeResponse* response) override {
    Serialize(*response);
    SendOut();
  }

  void FinishStream(const grpc::Status& status) override {
    v1::ServeResponse closed;
    *closed.mutable_closed() = ToRpc(status);
    Serialize(closed);
    finishing_ = true;
    SendOut();
  }

  // Sends what is left of the frame; waits for room when the socket is full.
  void SendOut() {
    while (out_pos_ < out_len_) {
      const ssize_t n =
          ::send(fd_, out_.data() + out_pos_, out_len_ - out_pos_, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        out_pos_ += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        veil::MutexLock lock(&socket_mu_);
        socket_.async_wait(Socket::wait_write, [self = Self()](boost::system::error_code ec) {
          if (ec) {
            self->Sent(false);
          } else {
            self->SendOut();
          }
        });
        return;
      }
      Sent(false);  // EPIPE and the like: the app is gone
      return;
    }
    Sent(true);
  }

  void Sent(bool ok) {
    if (finishing_) {
      auto self = Self();
      {
        std::lock_guard lock(registry_->mu);
        EraseThis(registry_->open);
        registry_->lingering.emplace_back(self, fd_);
        registry_->changed.notify_all();
      }
      Done();
      Linger(std::move(self));
      return;
    }
    auto self = Self();
    RunTrampolined(tl_writing, this, ok ? 1 : 0, [this](int wrote) { WriteDone(wrote != 0); });
  }

  // After the last frame (`closed`): stop writing, so the app reads `closed` and then the end of
  // the stream, but go on reading and discarding what the app still sends until it closes its
  // side, for at most kLinger. Cutting the connection at once would fail the app's writes in
  // flight (EPIPE) — a refusal is written before the app's `open` is read — and some client
  // libraries (Node's net.Socket) drop the unread `closed` frame with the failed write. The
  // descriptor stays open (and not reusable) until the stream is destroyed.
  void Linger(std::shared_ptr<Stream> self) {
    ::shutdown(fd_, SHUT_WR);
    {
      veil::MutexLock lock(&socket_mu_);
      linger_timer_.emplace(socket_.get_executor(), kLinger);
      linger_timer_->async_wait([self](boost::system::error_code ec) {
        if (!ec) ::shutdown(self->fd_, SHUT_RDWR);  // the read wait below then ends it
      });
    }
    DiscardTurn(std::move(self));
  }

  void DiscardTurn(std::shared_ptr<Stream> self) {
    char sink[16 * 1024];
    size_t read = 0;
    for (;;) {
      const ssize_t n = ::recv(fd_, sink, sizeof(sink), MSG_DONTWAIT);
      if (n > 0) {
        read += static_cast<size_t>(n);
        if (read < kLingerTurnBytes) continue;
        // A full turn: yield to other work, then read on (the wait fires at once).
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        EndLinger();  // the app closed its side, or the connection was cut
        return;
      }
      veil::MutexLock lock(&socket_mu_);
      socket_.async_wait(Socket::wait_read, [self](boost::system::error_code ec) {
        if (ec) {
          self->EndLinger();
        } else {
          self->DiscardTurn(self);
        }
      });
      return;
    }
  }

  void EndLinger() {
    ::shutdown(fd_, SHUT_RDWR);
    {
      veil::MutexLock lock(&socket_mu_);
      if (linger_timer_.has_value()) linger_timer_->cancel();
    }
    std::lock_guard lock(registry_->mu);
    EraseThis(registry_->lingering);
  }

  // Removes this stream (and any that are gone) from a registry list; registry_->mu held.
  void EraseThis(std::vector<std::pair<std::weak_ptr<ServeStream>, int>>& list) {
    std::erase_if(list, [this](const auto& entry) {
      auto s = entry.first.lock();
      return s == nullptr || s.get() == this;
    });
  }

  const ApiSettings& settings_;
  veil::Mutex socket_mu_;  // calls on socket_ (an asio object is not safe to share)
  Socket socket_ ABSL_GUARDED_BY(socket_mu_);
  const int fd_;  // send/recv go straight to the descriptor, closed only with socket_
  const std::shared_ptr<ServeSocketRegistry> registry_;

  // Owned by the holder of the read.
  v1::ServeRequest* read_into_ = nullptr;
  Bytes in_;
  size_t in_begin_ = 0;
  size_t in_end_ = 0;
  bool version_read_ = false;

  // Owned by the holder of the write.
  Bytes out_;
  size_t out_len_ = 0;
  size_t out_pos_ = 0;
  bool version_written_ = false;
  bool finishing_ = false;

  // Cuts a lingering connection after kLinger.
  std::optional<boost::asio::steady_timer> linger_timer_ ABSL_GUARDED_BY(socket_mu_);
};

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
      registry_(std::make_shared<ServeSocketRegistry>()) {}

void ServeSocketServer::Accept() {
  veil::MutexLock lock(&mu_);
  if (closed_) return;
  acceptor_.async_accept([this](boost::system::error_code ec, Socket socket) {
    if (ec == boost::asio::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors and the like: try again shortly rather than spin.
      spdlog::warn("serve socket: cannot accept: {}", ec.message());
      auto timer = std::make_shared<boost::asio::steady_timer>(socket.get_executor(),
                                                               std::chrono::milliseconds(100));
      timer->async_wait([this, timer](boost::system::error_code) { Accept(); });
      return;
    }
    auto stream = Stream::Create(std::move(socket), router_, settings_, stats_, registry_);
    messaging_.Adopt(*stream);
    stream->Start();
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
  std::unique_lock lock(registry_->mu);
  const bool drained = registry_->changed.wait_for(lock, grace, [this] {
    std::erase_if(registry_->open, [](const auto& entry) { return entry.first.expired(); });
    return registry_->open.empty();
  });
  if (!drained) {
    spdlog::warn("serve socket: {} streams did not finish within the grace period; cutting them",
                 registry_->open.size());
    lock.unlock();
    registry_->CutAll();
  } else {
    lock.unlock();
  }
  registry_->CutLingering();
}

ServeSocketServer::~ServeSocketServer() { Drain(std::chrono::milliseconds(0)); }

}  // namespace veil::api
