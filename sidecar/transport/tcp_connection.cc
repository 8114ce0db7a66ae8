#include "sidecar/transport/tcp_connection.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "asio/bind_executor.hpp"
#include "asio/connect.hpp"
#include "asio/post.hpp"
#include "asio/write.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/core/address.h"
#include "sidecar/core/router.h"
#include "sidecar/transport/tcp_transport.h"
#include "spdlog/spdlog.h"

namespace veil::transport {
namespace {

constexpr size_t kReadChunk = 256 * 1024;
// Payloads from this size on are written from where they are rather than copied into the queue.
constexpr size_t kGatherPayloadBytes = 32 * 1024;

absl::Status Lost(absl::string_view peer, absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kUnavailable,
                         absl::StrCat("connection to ", peer, " lost: ", why),
                         reason::kConnectionLost);
}

// Write everything queued, in as few send calls as the socket takes. (asio's own transfer_all
// hands the socket at most 64 KiB per call; each call has a fixed cost, and a hub forwarding
// 64 KiB messages spent 0.9 CPU-s per GB that way against 0.64 with this: docs/performance.md.)
struct WriteAll {
  size_t operator()(const asio::error_code& ec, size_t) const {
    return ec ? 0 : std::numeric_limits<size_t>::max();
  }
};

void TuneSocket(asio::ip::tcp::socket& socket) {
  asio::error_code ignored;
  socket.set_option(asio::ip::tcp::no_delay(true), ignored);
  socket.set_option(asio::socket_base::keep_alive(true), ignored);
}

}  // namespace

// Counts the bytes of messages read from the socket until their receipts settle (the receipt's
// index is the message's size), and wakes the paused reader once they fall below half the
// limit. Settled from any thread.
class TcpConnection::ReadTracker final : public core::SendTracker {
 public:
  ReadTracker(std::weak_ptr<TcpConnection> connection, size_t limit, TcpTransport::Stats& stats)
      : connection_(std::move(connection)), limit_(limit), stats_(stats) {}

  // Called on the strand before handing a message of `bytes` on.
  void Add(size_t bytes) { unsettled_.fetch_add(bytes, std::memory_order_relaxed); }
  // Called on the strand after a read: true when the reader should stop.
  bool ShouldPause() {
    if (unsettled_.load(std::memory_order_acquire) <= limit_) return false;
    paused_.store(true, std::memory_order_release);
    // A settlement may have raced in before paused_ was set: look again.
    if (unsettled_.load(std::memory_order_acquire) > limit_ / 2) return true;
    paused_.store(false, std::memory_order_release);
    return false;
  }
  void Complete(uint32_t bytes, absl::Status status) override {
    if (!status.ok()) stats_.received_refused.fetch_add(1, std::memory_order_relaxed);
    size_t left = unsettled_.fetch_sub(bytes, std::memory_order_acq_rel) - bytes;
    if (left <= limit_ / 2 && paused_.exchange(false, std::memory_order_acq_rel)) {
      if (auto connection = connection_.lock()) connection->ResumeReading();
    }
  }

 private:
  const std::weak_ptr<TcpConnection> connection_;
  const size_t limit_;
  TcpTransport::Stats& stats_;
  std::atomic<size_t> unsettled_{0};
  std::atomic<bool> paused_{false};
};

TcpConnection::TcpConnection(core::Strand strand, TcpTransport& transport,
                             const TcpOptions& options, std::string peer)
    : core::Worker(strand),
      transport_(transport),
      options_(options),
      peer_(std::move(peer)),
      outgoing_(true),
      socket_(strand),
      resolver_(strand),
      connect_timer_(strand),
      decoder_(options.max_frame_bytes) {
  pending_.push_back(static_cast<char>(kWireVersion));
}

TcpConnection::TcpConnection(core::Strand strand, TcpTransport& transport,
                             const TcpOptions& options, asio::ip::tcp::socket socket)
    : core::Worker(strand),
      transport_(transport),
      options_(options),
      peer_([&] {
        asio::error_code ec;
        auto ep = socket.remote_endpoint(ec);
        return ec ? std::string("unknown")
                  : core::FormatHostPort(ep.address().to_string(), ep.port());
      }()),
      outgoing_(false),
      socket_(std::move(socket)),
      resolver_(strand),
      connect_timer_(strand),
      decoder_(options.max_frame_bytes) {
  pending_.push_back(static_cast<char>(kWireVersion));
}

void TcpConnection::Start() {
  asio::post(strand(), [self = shared_from_this()] {
    if (self->outgoing_) {
      self->Connect();
    } else {
      self->OnConnected();
    }
  });
}

void TcpConnection::Connect() {
  auto host_port = core::ParseHostPort(peer_);
  if (!host_port.ok()) {  // the route parser validated it; defensive only
    CloseNow(host_port.status());
    return;
  }
  connect_timer_.expires_after(options_.connect_timeout);
  connect_timer_.async_wait(
      asio::bind_executor(strand(), [self = shared_from_this()](asio::error_code ec) {
        if (ec || self->state_ != State::kConnecting) return;
        self->CloseNow(ErrorWithReason(absl::StatusCode::kUnavailable,
                                       absl::StrCat("connecting to ", self->peer_, " timed out"),
                                       reason::kConnectionFailed));
      }));
  resolver_.async_resolve(
      host_port->host, std::to_string(host_port->port),
      asio::bind_executor(strand(), [self = shared_from_this()](
                                        asio::error_code ec,
                                        asio::ip::tcp::resolver::results_type results) {
        if (self->state_ != State::kConnecting) return;
        if (ec) {
          self->CloseNow(ErrorWithReason(
              absl::StatusCode::kUnavailable,
              absl::StrCat("cannot resolve ", self->peer_, ": ", ec.message()),
              reason::kConnectionFailed));
          return;
        }
        asio::async_connect(
            self->socket_, results,
            asio::bind_executor(self->strand(), [self](asio::error_code ec, const auto&) {
              if (self->state_ != State::kConnecting) return;
              if (ec) {
                self->CloseNow(ErrorWithReason(
                    absl::StatusCode::kUnavailable,
                    absl::StrCat("cannot connect to ", self->peer_, ": ", ec.message()),
                    reason::kConnectionFailed));
                return;
              }
              self->OnConnected();
            }));
      }));
}

void TcpConnection::OnConnected() {
  if (state_ == State::kClosed) return;
  state_ = State::kOpen;
  transport_.stats().connections_opened.fetch_add(1, std::memory_order_relaxed);
  connect_timer_.cancel();
  TuneSocket(socket_);
  read_tracker_ = std::make_shared<ReadTracker>(weak_from_this(), options_.max_unsettled_read_bytes,
                                                transport_.stats());
  spdlog::debug("tcp connection {} {} {}", address(), outgoing_ ? "to" : "from", peer_);
  ReadMore();
  Flush();
}

void TcpConnection::HandleMessage(core::Message msg) {
  if (state_ == State::kClosed) {
    if (outgoing_ && was_open_ && msg.refusal.ok()) {
      // Routed here just before this connection closed (the transport had not yet forgotten
      // it). Nothing of it was written: it goes again, over a new connection to the peer.
      msg.onward.PushFront(core::Address::Tcp(peer_));
      transport_.Send(std::move(msg));
      return;
    }
    router().Refuse(std::move(msg), close_status_);
    return;
  }
  if (pending_.size() + pending_pieces_bytes_ > options_.max_write_queue_bytes && !msg.paced) {
    router().Refuse(std::move(msg), ErrorWithReason(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("write queue to ", peer_, " is full (", options_.max_write_queue_bytes,
                     " bytes)"),
        reason::kQueueFull));
    return;
  }
  const bool gather = msg.payload.size() >= kGatherPayloadBytes;
  absl::Status framed =
      gather ? AppendFrameHead(msg.onward, msg.return_route, msg.payload.size(),
                               options_.max_frame_bytes, pending_, msg.refusal)
             : AppendFrame(msg.onward, msg.return_route, msg.payload, options_.max_frame_bytes,
                           pending_, msg.refusal);
  if (!framed.ok()) {
    router().Refuse(std::move(msg), std::move(framed));
    return;
  }
  if (gather) {
    pending_pieces_bytes_ += pending_.size() + msg.payload.size();
    pending_pieces_.push_back(std::move(pending_));
    pending_pieces_.push_back(std::move(msg.payload));
    pending_.clear();
  }
  transport_.stats().frames_sent.fetch_add(1, std::memory_order_relaxed);
  if (msg.receipt.pending()) pending_receipts_.push_back(std::move(msg.receipt));
  if (state_ == State::kOpen && !write_in_flight_) Flush();
}

void TcpConnection::Flush() {
  if (write_in_flight_ || (pending_.empty() && pending_pieces_.empty()) ||
      state_ != State::kOpen) {
    return;
  }
  std::swap(pending_, writing_);
  std::swap(pending_pieces_, writing_pieces_);
  pending_pieces_bytes_ = 0;
  std::swap(pending_receipts_, writing_receipts_);
  write_in_flight_ = true;
  write_buffers_.clear();
  for (const std::string& piece : writing_pieces_) write_buffers_.push_back(asio::buffer(piece));
  if (!writing_.empty()) write_buffers_.push_back(asio::buffer(writing_));
  asio::async_write(
      socket_, write_buffers_, WriteAll{},
      asio::bind_executor(strand(), [self = shared_from_this()](asio::error_code ec, size_t n) {
        self->write_in_flight_ = false;
        self->transport_.stats().bytes_sent.fetch_add(n, std::memory_order_relaxed);
        if (ec) {
          self->CloseNow(Lost(self->peer_, ec.message()));
          return;
        }
        for (core::Receipt& r : self->writing_receipts_) r.Settle(absl::OkStatus());
        self->writing_receipts_.clear();
        self->writing_.clear();
        self->writing_pieces_.clear();
        self->Flush();
      }));
}

void TcpConnection::ReadMore() {
  std::span<char> space = decoder_.WritableSpace(kReadChunk);
  socket_.async_read_some(
      asio::buffer(space.data(), space.size()),
      asio::bind_executor(strand(), [self = shared_from_this()](asio::error_code ec, size_t n) {
        if (self->state_ == State::kClosed) return;
        if (ec) {
          self->CloseNow(Lost(self->peer_, ec == asio::error::eof ? "closed by the peer"
                                                                   : ec.message()));
          return;
        }
        self->OnRead(n);
      }));
}

void TcpConnection::OnRead(size_t n) {
  transport_.stats().bytes_received.fetch_add(n, std::memory_order_relaxed);
  bytes_received_.fetch_add(n, std::memory_order_relaxed);
  decoder_.Commit(n);
  for (;;) {
    auto frame = decoder_.Next();
    if (!frame.ok()) {
      spdlog::warn("tcp connection {} from {}: {}; closing", address(), peer_,
                   frame.status().message());
      CloseNow(Lost(peer_, frame.status().message()));
      return;
    }
    if (!frame->has_value()) break;
    auto msg = core::DecodeMessage(**frame);
    if (!msg.ok()) {
      spdlog::warn("tcp connection {} from {}: {}; closing", address(), peer_,
                   msg.status().message());
      CloseNow(Lost(peer_, msg.status().message()));
      return;
    }
    transport_.stats().frames_received.fetch_add(1, std::memory_order_relaxed);
    msg->return_route.PushFront(core::Address::Local(address()));
    msg->sender.origin = core::SenderInfo::Origin::kTransport;
    // The frame's size, which bounds the message's: what the tracker counts until it settles.
    auto bytes = static_cast<uint32_t>((*frame)->size());
    read_tracker_->Add(bytes);
    msg->receipt = core::Receipt(read_tracker_, bytes);
    msg->paced = true;
    router().Send(*std::move(msg));
  }
  if (read_tracker_->ShouldPause()) {
    read_paused_ = true;
    transport_.stats().reads_paused.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("tcp connection {} from {}: paused reading until what it read is handed on",
                  address(), peer_);
    return;
  }
  ReadMore();
}

void TcpConnection::ResumeReading() {
  asio::post(strand(), [self = shared_from_this()] {
    if (self->state_ != State::kOpen || !self->read_paused_) return;
    self->read_paused_ = false;
    self->ReadMore();
  });
}

void TcpConnection::Close(absl::Status why) {
  asio::post(strand(), [self = shared_from_this(), why = std::move(why)]() mutable {
    self->CloseNow(std::move(why));
  });
}

void TcpConnection::OnStop() {
  CloseNow(ErrorWithReason(absl::StatusCode::kUnavailable, "the connection was stopped",
                           reason::kConnectionLost));
}

void TcpConnection::CloseNow(absl::Status why) {
  if (state_ == State::kClosed) return;
  bool was_open = state_ == State::kOpen;
  was_open_ = was_open;
  state_ = State::kClosed;
  close_status_ = why;
  if (was_open) {
    spdlog::info("tcp connection {} {} {} closed: {}", address(), outgoing_ ? "to" : "from",
                 peer_, why.message());
  } else {
    transport_.stats().connections_failed.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("tcp connection {} to {} failed: {}", address(), peer_, why.message());
  }
  asio::error_code ignored;
  connect_timer_.cancel();
  resolver_.cancel();
  socket_.shutdown(asio::socket_base::shutdown_both, ignored);
  socket_.close(ignored);
  for (core::Receipt& r : writing_receipts_) r.Settle(why);
  for (core::Receipt& r : pending_receipts_) r.Settle(why);
  writing_receipts_.clear();
  pending_receipts_.clear();
  pending_.clear();
  pending_.shrink_to_fit();
  pending_pieces_.clear();
  pending_pieces_bytes_ = 0;
  router().StopWorker(address(), this);
  transport_.Forget(this);
}

}  // namespace veil::transport
