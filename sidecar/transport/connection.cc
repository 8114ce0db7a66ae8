#include "sidecar/transport/connection.h"

#include "absl/strings/str_cat.h"
#include "boost/asio/bind_executor.hpp"
#include "boost/asio/post.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/core/address.h"
#include "sidecar/core/router.h"
#include "sidecar/transport/node_transport.h"
#include "spdlog/spdlog.h"

namespace veil::transport {
namespace {

// Reads start with a small buffer (an idle or unauthenticated connection costs little) and
// double up to kMaxReadChunk while reads fill what they are given.
constexpr size_t kFirstReadChunk = 4 * 1024;
constexpr size_t kMaxReadChunk = 256 * 1024;
// How long a refused connection is kept, reading and discarding, for its peer to close it.
constexpr std::chrono::milliseconds kRefusalLinger{2000};

absl::Status Lost(absl::string_view peer, absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kUnavailable,
                         absl::StrCat("connection to ", peer, " lost: ", why),
                         reason::kConnectionLost);
}

}  // namespace

// WriteQueue.

std::string& WriteQueue::OpenPiece() {
  if (!queued_.last_open) {
    queued_.pieces.emplace_back();
    queued_.last_open = true;
  }
  return queued_.pieces.back();
}

absl::Status WriteQueue::Append(core::Message& msg, size_t max_frame_bytes) {
  std::string& piece = OpenPiece();
  const size_t before = piece.size();
  const bool gather = msg.payload.size() >= kGatherPayloadBytes;
  absl::Status framed = gather ? AppendFrameHead(msg.onward, msg.return_route, msg.payload.size(),
                                                 max_frame_bytes, piece, msg.refusal, msg.path_tag)
                               : AppendFrame(msg.onward, msg.return_route, msg.payload,
                                             max_frame_bytes, piece, msg.refusal, msg.path_tag);
  if (!framed.ok()) return framed;
  queued_bytes_ += piece.size() - before;
  if (gather) {
    queued_bytes_ += msg.payload.size();
    queued_.pieces.push_back(std::move(msg.payload));
    queued_.last_open = false;
    msg.payload.clear();
  }
  if (msg.receipt.pending()) queued_.receipts.push_back(std::move(msg.receipt));
  return absl::OkStatus();
}

void WriteQueue::AppendRaw(absl::string_view bytes) {
  OpenPiece().append(bytes.data(), bytes.size());
  queued_bytes_ += bytes.size();
}

const std::vector<boost::asio::const_buffer>& WriteQueue::StartWrite() {
  std::swap(queued_, written_);
  queued_bytes_ = 0;
  writing_ = true;
  buffers_.clear();
  for (const std::string& piece : written_.pieces) {
    if (!piece.empty()) buffers_.push_back(boost::asio::buffer(piece));
  }
  return buffers_;
}

void WriteQueue::FinishWrite(const absl::Status& status) {
  writing_ = false;
  for (core::Receipt& r : written_.receipts) r.Settle(status);
  written_.receipts.clear();
  written_.pieces.clear();
  written_.last_open = false;
  buffers_.clear();
}

void WriteQueue::FailAll(const absl::Status& why) {
  for (core::Receipt& r : written_.receipts) r.Settle(why);
  written_.receipts.clear();
  for (core::Receipt& r : queued_.receipts) r.Settle(why);
  queued_ = Batch{};
  queued_bytes_ = 0;
  // A batch being written stays until its write completes: the socket may still read it.
  if (!writing_) written_ = Batch{};
}

// Counts the bytes of messages read from the stream until their receipts settle (the receipt's
// index is the message's size), and wakes the paused reader once they fall below half the
// limit. Settled from any thread.
class Connection::ReadTracker final : public core::SendTracker {
 public:
  ReadTracker(std::weak_ptr<Connection> connection, size_t limit, NodeTransport::Stats& stats)
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
  const std::weak_ptr<Connection> connection_;
  const size_t limit_;
  NodeTransport::Stats& stats_;
  std::atomic<size_t> unsettled_{0};
  std::atomic<bool> paused_{false};
};

Connection::Connection(core::Strand strand, NodeTransport& transport,
                       const ConnectionOptions& options, core::Address hop)
    : core::Worker(strand),
      transport_(transport),
      options_(options),
      hop_(hop),
      stream_(OutgoingStream(strand, hop, transport.websocket())),
      connect_timer_(strand),
      idle_timer_(strand),
      read_chunk_(kFirstReadChunk),
      decoder_(options.max_frame_bytes) {
  writes_.AppendRaw(absl::string_view(reinterpret_cast<const char*>(&kWireVersion), 1));
}

Connection::Connection(core::Strand strand, NodeTransport& transport,
                       const ConnectionOptions& options, std::unique_ptr<Stream> stream)
    : core::Worker(strand),
      transport_(transport),
      options_(options),
      stream_(std::move(stream)),
      connect_timer_(strand),
      idle_timer_(strand),
      read_chunk_(kFirstReadChunk),
      decoder_(options.max_frame_bytes) {
  writes_.AppendRaw(absl::string_view(reinterpret_cast<const char*>(&kWireVersion), 1));
}

void Connection::Start() {
  boost::asio::post(strand(), [self = shared_from_this()] { self->Connect(); });
}

void Connection::Connect() {
  connect_timer_.expires_after(options_.connect_timeout);
  connect_timer_.async_wait(boost::asio::bind_executor(
      strand(), [self = shared_from_this()](boost::system::error_code ec) {
        if (ec || self->state_ != State::kConnecting) return;
        self->CloseNow(ErrorWithReason(
            absl::StatusCode::kUnavailable,
            absl::StrCat(self->outgoing() ? "connecting to " : "opening the connection from ",
                         self->peer(), " timed out"),
            reason::kConnectionFailed));
      }));
  stream_->Open(shared_from_this());
}

void Connection::OnOpened(absl::Status status) {
  if (state_ != State::kConnecting) return;
  if (!status.ok()) {
    CloseNow(std::move(status));
    return;
  }
  OnConnected();
}

void Connection::OnConnected() {
  if (state_ == State::kClosed) return;
  state_ = State::kOpen;
  transport_.stats().connections_opened.fetch_add(1, std::memory_order_relaxed);
  connect_timer_.cancel();
  read_tracker_ = std::make_shared<ReadTracker>(weak_from_this(), options_.max_unsettled_read_bytes,
                                                transport_.stats());
  spdlog::debug("{} connection {} {} {}", transport_name(), address(), outgoing() ? "to" : "from",
                peer());
  last_frame_ = std::chrono::steady_clock::now();
  if (options_.idle_timeout.count() > 0) ArmIdleTimer(options_.idle_timeout);
  ReadMore();
  Flush();
}

void Connection::ArmIdleTimer(std::chrono::milliseconds after) {
  idle_timer_.expires_after(after);
  idle_timer_.async_wait(boost::asio::bind_executor(
      strand(), [self = shared_from_this()](boost::system::error_code ec) {
        if (!ec) self->OnIdleTimer();
      }));
}

void Connection::OnIdleTimer() {
  if (state_ != State::kOpen) return;
  if (close_after_flush_.has_value()) {  // refused, and the peer did not close in time
    absl::Status why = *close_after_flush_;
    CloseNow(std::move(why));
    return;
  }
  auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - last_frame_);
  if (idle < options_.idle_timeout || writes_.writing() || transport_.InUse(id())) {
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

void Connection::Refuse(absl::Status why) {
  boost::asio::post(strand(), [self = shared_from_this(), why = std::move(why)]() mutable {
    if (self->state_ == State::kClosed || self->close_after_flush_.has_value()) return;
    const std::string reason = ReasonOf(why);
    Log(spdlog::level::info,
        {{log_field::kConnection, self->address()},
         {log_field::kPeer, self->peer()},
         {log_field::kReason, reason}},
        "{} connection {} {} {}: refusing it: {}", self->transport_name(), self->address(),
        self->outgoing() ? "to" : "from", self->peer(), why.message());
    std::string frame;
    AppendConnectionRefusalFrame(why, frame);
    self->writes_.AppendRaw(frame);
    self->close_after_flush_ = std::move(why);
    if (self->state_ == State::kOpen) self->Flush();
  });
}

void Connection::AdmitRepliesFrom(uint64_t connection) {
  veil::MutexLock lock(&replies_mu_);
  reply_connections_.insert(connection);
}

absl::Status Connection::Admit(const core::SenderInfo& from) const {
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

void Connection::HandleMessage(core::Message msg) {
  if (state_ == State::kClosed) {
    if (outgoing() && was_open_ && !refused_by_peer_ && msg.refusal.ok()) {
      // Routed here just before this connection closed (the transport had not yet forgotten
      // it). Nothing of it was written: it goes again, over a new connection to the peer —
      // unless the peer refused this one (it would refuse the next too: the sender is told).
      msg.onward.PushFront(*hop_);
      transport_.Send(std::move(msg));
      return;
    }
    router().Refuse(std::move(msg), close_status_);
    return;
  }
  if (msg.want_delivery) {  // a connection can only say it wrote the message
    router().Refuse(std::move(msg),
                    ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                                    absl::StrCat("delivery receipts need a secure channel: the "
                                                 "message would leave in plaintext over ",
                                                 peer()),
                                    reason::kDeliveryReceiptsUnsupported));
    return;
  }
  const size_t queued = writes_.queued_bytes();
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
                                    absl::StrCat("write queue to ", peer(), " is full (",
                                                 options_.max_write_queue_bytes, " bytes)"),
                                    reason::kQueueFull));
    return;
  }
  absl::Status framed = writes_.Append(msg, options_.max_frame_bytes);
  if (!framed.ok()) {
    router().Refuse(std::move(msg), std::move(framed));
    return;
  }
  transport_.stats().frames_sent.fetch_add(1, std::memory_order_relaxed);
  if (state_ == State::kOpen && !writes_.writing()) Flush();
}

void Connection::Flush() {
  if (writes_.writing() || !writes_.has_queued() || state_ != State::kOpen) return;
  stream_->WriteAll(writes_.StartWrite(), shared_from_this());
}

void Connection::OnWritten(const boost::system::error_code& ec, size_t n) {
  transport_.stats().bytes_sent.fetch_add(n, std::memory_order_relaxed);
  if (state_ == State::kClosed) {  // its receipts were settled when it closed
    writes_.FinishWrite(close_status_);
    return;
  }
  if (ec) {
    absl::Status lost = Lost(peer(), ec.message());
    writes_.FinishWrite(lost);
    CloseNow(std::move(lost));
    return;
  }
  writes_.FinishWrite(absl::OkStatus());
  last_frame_ = std::chrono::steady_clock::now();
  if (state_ != State::kOpen) return;
  if (close_after_flush_.has_value() && !writes_.has_queued()) {
    // The refusal is written: stop writing, and read (and discard) until the peer closes or
    // kRefusalLinger passes, so that closing with unread input (a reset) does not destroy the
    // refusal before the peer reads it.
    stream_->ShutdownSend();
    ArmIdleTimer(kRefusalLinger);
    return;
  }
  Flush();
}

void Connection::ReadMore() {
  std::span<char> space = decoder_.WritableSpace(read_chunk_);
  read_size_ = space.size();
  stream_->ReadSome(space, shared_from_this());
}

void Connection::OnRead(const boost::system::error_code& ec, size_t n) {
  if (state_ == State::kClosed) return;
  if (ec) {
    CloseNow(Lost(peer(), ec == boost::asio::error::eof ? "closed by the peer" : ec.message()));
    return;
  }
  HandleRead(n);
}

void Connection::HandleRead(size_t n) {
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
      spdlog::warn("{} connection {} from {}: {}; closing", transport_name(), address(), peer(),
                   frame.status().message());
      CloseNow(Lost(peer(), frame.status().message()));
      return;
    }
    if (!frame->has_value()) break;
    last_frame_ = std::chrono::steady_clock::now();
    auto msg = core::DecodeMessage(**frame);
    if (!msg.ok()) {
      spdlog::warn("{} connection {} from {}: {}; closing", transport_name(), address(), peer(),
                   msg.status().message());
      CloseNow(Lost(peer(), msg.status().message()));
      return;
    }
    transport_.stats().frames_received.fetch_add(1, std::memory_order_relaxed);
    if (core::IsConnectionRefusal(*msg)) {
      const absl::Status& why = msg->refusal;
      refused_by_peer_ = true;  // dialling again would only be refused again
      CloseNow(ErrorWithReason(why.code(),
                               absl::StrCat(peer(), " refused the connection: ", why.message()),
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
    spdlog::debug("{} connection {} from {}: paused reading until what it read is handed on",
                  transport_name(), address(), peer());
    return;
  }
  ReadMore();
}

void Connection::ResumeReading() {
  boost::asio::post(strand(), [self = shared_from_this()] {
    if (self->state_ != State::kOpen || !self->read_paused_) return;
    self->read_paused_ = false;
    self->ReadMore();
  });
}

void Connection::Close(absl::Status why) {
  boost::asio::post(strand(), [self = shared_from_this(), why = std::move(why)]() mutable {
    self->CloseNow(std::move(why));
  });
}

void Connection::OnStop() {
  CloseNow(ErrorWithReason(absl::StatusCode::kUnavailable, "the connection was stopped",
                           reason::kConnectionLost));
}

void Connection::CloseNow(absl::Status why) {
  if (state_ == State::kClosed) return;
  bool was_open = state_ == State::kOpen;
  was_open_ = was_open;
  state_ = State::kClosed;
  close_status_ = why;
  if (outgoing()) transport_.ForgetOutgoing(this);  // new channels get a new connection
  const std::string reason = ReasonOf(why);
  if (was_open) {
    Log(spdlog::level::info,
        {{log_field::kConnection, address()},
         {log_field::kPeer, peer()},
         {log_field::kReason, reason}},
        "{} connection {} {} {} closed: {}", transport_name(), address(),
        outgoing() ? "to" : "from", peer(), why.message());
  } else {
    transport_.stats().connections_failed.fetch_add(1, std::memory_order_relaxed);
    Log(spdlog::level::warn,
        {{log_field::kConnection, address()},
         {log_field::kPeer, peer()},
         {log_field::kReason, reason}},
        "{} connection {} {} {} failed: {}", transport_name(), address(),
        outgoing() ? "to" : "from", peer(), why.message());
  }
  connect_timer_.cancel();
  idle_timer_.cancel();
  stream_->Close();
  // A write in flight completes (cancelled) later; its receipts settle now, with the reason.
  writes_.FailAll(why);
  // What is routed here from now on (a handshake that raced a failed connect, a reply) is
  // refused with why the connection ended, not "no worker".
  router().StopWorker(address(), this, why);
  transport_.Forget(this);
}

}  // namespace veil::transport
