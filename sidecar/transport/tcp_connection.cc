#include "sidecar/transport/tcp_connection.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "asio/bind_executor.hpp"
#include "asio/connect.hpp"
#include "asio/post.hpp"
#include "asio/write.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/core/address.h"
#include "sidecar/core/router.h"
#include "sidecar/transport/tcp_transport.h"
#include "spdlog/spdlog.h"

namespace veil::transport {
namespace {

// Reads start with a small buffer (an idle or unauthenticated connection costs little) and
// double up to kMaxReadChunk while reads fill what they are given.
constexpr size_t kFirstReadChunk = 4 * 1024;
constexpr size_t kMaxReadChunk = 256 * 1024;
// How long a refused connection is kept, reading and discarding, for its peer to close it.
constexpr std::chrono::milliseconds kRefusalLinger{2000};
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
      idle_timer_(strand),
      read_chunk_(kFirstReadChunk),
      decoder_(options.max_frame_bytes) {
  auto host_port = core::ParseHostPort(peer_);
  remote_host_ = host_port.ok() ? host_port->host : peer_;
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
      idle_timer_(strand),
      read_chunk_(kFirstReadChunk),
      decoder_(options.max_frame_bytes) {
  asio::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  remote_host_ = ec ? std::string("unknown") : ep.address().to_string();
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
      asio::bind_executor(
          strand(), [self = shared_from_this()](asio::error_code ec,
                                                asio::ip::tcp::resolver::results_type results) {
            if (self->state_ != State::kConnecting) return;
            if (ec) {
              self->CloseNow(
                  ErrorWithReason(absl::StatusCode::kUnavailable,
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
  last_frame_ = std::chrono::steady_clock::now();
  if (options_.idle_timeout.count() > 0) ArmIdleTimer(options_.idle_timeout);
  ReadMore();
  Flush();
}

void TcpConnection::ArmIdleTimer(std::chrono::milliseconds after) {
  idle_timer_.expires_after(after);
  idle_timer_.async_wait(
      asio::bind_executor(strand(), [self = shared_from_this()](asio::error_code ec) {
        if (!ec) self->OnIdleTimer();
      }));
}

void TcpConnection::OnIdleTimer() {
  if (state_ != State::kOpen) return;
  if (close_after_flush_.has_value()) {  // refused, and the peer did not close in time
    absl::Status why = *close_after_flush_;
    CloseNow(std::move(why));
    return;
  }
  auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - last_frame_);
  if (idle < options_.idle_timeout || write_in_flight_ || transport_.InUse(id())) {
    ArmIdleTimer(idle < options_.idle_timeout ? options_.idle_timeout - idle
                                              : options_.idle_timeout);
    return;
  }
  transport_.stats().idle_closed.fetch_add(1, std::memory_order_relaxed);
  Refuse(ErrorWithReason(absl::StatusCode::kUnavailable,
                         absl::StrCat("no frame either way for ", options_.idle_timeout.count(),
                                      " ms and nothing of this node uses it"),
                         reason::kIdleTimeout));
}

void TcpConnection::Refuse(absl::Status why) {
  asio::post(strand(), [self = shared_from_this(), why = std::move(why)]() mutable {
    if (self->state_ == State::kClosed || self->close_after_flush_.has_value()) return;
    const std::string reason = ReasonOf(why);
    Log(spdlog::level::info,
        {{log_field::kConnection, self->address()},
         {log_field::kPeer, self->peer_},
         {log_field::kReason, reason}},
        "tcp connection {} {} {}: refusing it: {}", self->address(),
        self->outgoing_ ? "to" : "from", self->peer_, why.message());
    AppendConnectionRefusalFrame(why, self->pending_);
    self->close_after_flush_ = std::move(why);
    if (self->state_ == State::kOpen) self->Flush();
  });
}

void TcpConnection::AdmitRepliesFrom(uint64_t connection) {
  veil::MutexLock lock(&replies_mu_);
  reply_connections_.insert(connection);
}

absl::Status TcpConnection::Admit(const core::SenderInfo& from) const {
  switch (from.origin) {
    case core::SenderInfo::Origin::kLocal:
      return absl::OkStatus();
    case core::SenderInfo::Origin::kApp:
    case core::SenderInfo::Origin::kSecureChannel:
      return transport_.PlaintextEgress(from, absl::StrCat("/service/", address()));
    case core::SenderInfo::Origin::kTransport: {
      if (from.relayed) return absl::OkStatus();
      veil::MutexLock lock(&replies_mu_);
      if (reply_connections_.contains(from.via)) return absl::OkStatus();
      break;
    }
  }
  return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                         "a connection of this node carries on only what this node forwarded",
                         reason::kAccessDenied);
}

void TcpConnection::HandleMessage(core::Message msg) {
  if (state_ == State::kClosed) {
    if (outgoing_ && was_open_ && !refused_by_peer_ && msg.refusal.ok()) {
      // Routed here just before this connection closed (the transport had not yet forgotten
      // it). Nothing of it was written: it goes again, over a new connection to the peer —
      // unless the peer refused this one (it would refuse the next too: the sender is told).
      msg.onward.PushFront(core::Address::Tcp(peer_));
      transport_.Send(std::move(msg));
      return;
    }
    router().Refuse(std::move(msg), close_status_);
    return;
  }
  const size_t queued = pending_.size() + pending_pieces_bytes_;
  if (!msg.refusal.ok() && queued > kMaxQueuedNoticeBytes) {  // a peer that does not read
    transport_.stats().notices_dropped.fetch_add(1, std::memory_order_relaxed);
    msg.receipt.Settle(absl::OkStatus());
    return;
  }
  if (close_after_flush_.has_value()) {
    router().Refuse(std::move(msg), *close_after_flush_);
    return;
  }
  // Forwarded (paced) messages too: a stalled far end holds at most this much here, however
  // many connections feed it.
  if (queued > options_.max_write_queue_bytes) {
    router().Refuse(std::move(msg),
                    ErrorWithReason(absl::StatusCode::kResourceExhausted,
                                    absl::StrCat("write queue to ", peer_, " is full (",
                                                 options_.max_write_queue_bytes, " bytes)"),
                                    reason::kQueueFull));
    return;
  }
  const bool gather = msg.payload.size() >= kGatherPayloadBytes;
  absl::Status framed =
      gather ? AppendFrameHead(msg.onward, msg.return_route, msg.payload.size(),
                               options_.max_frame_bytes, pending_, msg.refusal, msg.path_tag)
             : AppendFrame(msg.onward, msg.return_route, msg.payload, options_.max_frame_bytes,
                           pending_, msg.refusal, msg.path_tag);
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
  if (write_in_flight_ || (pending_.empty() && pending_pieces_.empty()) || state_ != State::kOpen) {
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
        self->last_frame_ = std::chrono::steady_clock::now();
        if (self->close_after_flush_.has_value() && self->pending_.empty() &&
            self->pending_pieces_.empty()) {
          // The refusal is written: stop writing, and read (and discard) until the peer
          // closes or kRefusalLinger passes, so that closing with unread input (a reset) does
          // not destroy the refusal before the peer reads it.
          asio::error_code ignored;
          self->socket_.shutdown(asio::socket_base::shutdown_send, ignored);
          self->ArmIdleTimer(kRefusalLinger);
          return;
        }
        self->Flush();
      }));
}

void TcpConnection::ReadMore() {
  std::span<char> space = decoder_.WritableSpace(read_chunk_);
  read_size_ = space.size();
  socket_.async_read_some(
      asio::buffer(space.data(), space.size()),
      asio::bind_executor(strand(), [self = shared_from_this()](asio::error_code ec, size_t n) {
        if (self->state_ == State::kClosed) return;
        if (ec) {
          self->CloseNow(
              Lost(self->peer_, ec == asio::error::eof ? "closed by the peer" : ec.message()));
          return;
        }
        self->OnRead(n);
      }));
}

void TcpConnection::OnRead(size_t n) {
  if (close_after_flush_.has_value()) {  // refused: what the peer still sends is discarded
    ReadMore();
    return;
  }
  if (n == read_size_ && read_chunk_ < kMaxReadChunk) read_chunk_ *= 2;  // reads keep up: grow
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
    last_frame_ = std::chrono::steady_clock::now();
    auto msg = core::DecodeMessage(**frame);
    if (!msg.ok()) {
      spdlog::warn("tcp connection {} from {}: {}; closing", address(), peer_,
                   msg.status().message());
      CloseNow(Lost(peer_, msg.status().message()));
      return;
    }
    transport_.stats().frames_received.fetch_add(1, std::memory_order_relaxed);
    if (core::IsConnectionRefusal(*msg)) {
      const absl::Status& why = msg->refusal;
      refused_by_peer_ = true;  // dialling again would only be refused again
      CloseNow(ErrorWithReason(why.code(),
                               absl::StrCat(peer_, " refused the connection: ", why.message()),
                               ReasonOf(why)));
      return;
    }
    msg->return_route.PushFront(core::Address::Local(address()));
    msg->sender.origin = core::SenderInfo::Origin::kTransport;
    msg->sender.via = id();
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
  if (outgoing_) transport_.ForgetOutgoing(this);  // new channels get a new connection
  const std::string reason = ReasonOf(why);
  if (was_open) {
    Log(spdlog::level::info,
        {{log_field::kConnection, address()},
         {log_field::kPeer, peer_},
         {log_field::kReason, reason}},
        "tcp connection {} {} {} closed: {}", address(), outgoing_ ? "to" : "from", peer_,
        why.message());
  } else {
    transport_.stats().connections_failed.fetch_add(1, std::memory_order_relaxed);
    Log(spdlog::level::warn,
        {{log_field::kConnection, address()},
         {log_field::kPeer, peer_},
         {log_field::kReason, reason}},
        "tcp connection {} to {} failed: {}", address(), peer_, why.message());
  }
  asio::error_code ignored;
  connect_timer_.cancel();
  idle_timer_.cancel();
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
