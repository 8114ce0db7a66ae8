#include "sidecar/api/serve_stream.h"

#include <algorithm>
#include <atomic>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sidecar/api/grpc_status.h"
#include "sidecar/api/outgoing.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "spdlog/spdlog.h"

namespace veil::api {
namespace {

constexpr size_t kMaxDeliveriesPerWrite = 1024;
constexpr size_t kMaxBytesPerWrite = 4 * 1024 * 1024;

// The worker at the served address: hands each message to the stream. It takes deliveries
// out of secure channels and from this node; from the network unencrypted only when the app
// opened the address with accept_unencrypted.
class Mailbox final : public core::Worker {
 public:
  Mailbox(core::Strand strand, std::shared_ptr<ServeStream> stream, bool accept_unencrypted)
      : Worker(std::move(strand)),
        stream_(std::move(stream)),
        accept_unencrypted_(accept_unencrypted) {}
  void HandleMessage(core::Message msg) override { stream_->Deliver(std::move(msg)); }
  void HandleBatch(std::vector<core::Message> msgs) override { stream_->DeliverBatch(msgs); }
  bool HandlesOnAnyThread() const override { return true; }  // DeliverBatch locks
  absl::Status Admit(const core::SenderInfo& from) const override {
    if (from.origin != core::SenderInfo::Origin::kTransport || accept_unencrypted_) {
      return absl::OkStatus();
    }
    return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                           absl::StrCat("/service/", address(),
                                        " takes messages from other nodes only through a secure "
                                        "channel"),
                           reason::kAccessDenied);
  }

 private:
  const std::shared_ptr<ServeStream> stream_;
  const bool accept_unencrypted_;
};

// Collects the outcomes of one SendBatch and posts the SendResult when all are in.
class BatchTracker final : public core::SendTracker {
 public:
  BatchTracker(std::weak_ptr<ServeStream> stream, uint64_t batch_id, uint32_t count,
               bool failures_only)
      : stream_(std::move(stream)), remaining_(count), failures_only_(failures_only) {
    result_.mutable_send_result()->set_batch_id(batch_id);
  }
  void Complete(uint32_t index, absl::Status status) override {
    if (status.ok()) {
      accepted_.fetch_add(1, std::memory_order_relaxed);
    } else {
      veil::MutexLock lock(&mu_);
      v1::SendFailure* f = result_.mutable_send_result()->add_failures();
      f->set_index(index);
      *f->mutable_status() = ToRpcStatus(status);
    }
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    veil::MutexLock lock(&mu_);  // the last: every other Complete is done
    auto* r = result_.mutable_send_result();
    r->set_accepted(accepted_.load(std::memory_order_relaxed));
    std::sort(r->mutable_failures()->begin(), r->mutable_failures()->end(),
              [](const auto& a, const auto& b) { return a.index() < b.index(); });
    auto stream = stream_.lock();
    if (stream == nullptr) return;
    if (failures_only_ && r->failures().empty()) {
      stream->BatchDoneQuietly();
    } else {
      stream->PostSendResult(std::move(result_));
    }
  }

 private:
  const std::weak_ptr<ServeStream> stream_;
  std::atomic<uint32_t> remaining_;
  std::atomic<uint32_t> accepted_{0};
  const bool failures_only_;
  veil::Mutex mu_;
  v1::ServeResponse result_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

GrpcServeStream* GrpcServeStream::Create(core::Router& router, const ApiSettings& settings,
                                         ApiStats& stats) {
  std::shared_ptr<GrpcServeStream> stream(new GrpcServeStream(router, settings, stats));
  stream->Begin(stream);
  return stream.get();
}

void GrpcServeStream::FinishStream(const absl::Status& status,
                                   const std::map<std::string, std::string>& metadata) {
  Finish(ToGrpcStatus(status, metadata));
}

namespace {

absl::Status AppGone() { return absl::CancelledError("the app ended the stream or went away"); }

}  // namespace

void ServeStream::Begin(std::shared_ptr<ServeStream> self) {
  {
    veil::MutexLock lock(&mu_);
    if (finished_) return;  // refused before it began (and finished): nothing to keep or read
    self_ = std::move(self);
  }
  // A stream that never opens would hold a stream slot for good.
  open_timer_.expires_after(settings_.open_timeout);
  open_timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    if (ec) return;
    if (auto stream = weak.lock()) stream->OpenTimedOut();
  });
  ReadNext();
}

void ServeStream::OpenTimedOut() {
  {
    veil::MutexLock lock(&mu_);
    if (!address_.empty() || end_status_.has_value()) return;
  }
  End(ErrorWithReason(absl::StatusCode::kDeadlineExceeded,
                      absl::StrCat("no `open` within ", settings_.open_timeout.count(),
                                   " ms of the stream's start (--api-open-timeout)"),
                      reason::kOpenTimeout));
}

namespace {

google::protobuf::ArenaOptions WriteArenaOptions() {
  google::protobuf::ArenaOptions options;
  options.start_block_size = 8 * 1024;  // an idle stream keeps nothing; a busy one grows fast
  options.max_block_size = 256 * 1024;
  return options;
}

}  // namespace

ServeStream::ServeStream(core::Router& router, const ApiSettings& settings, ApiStats& stats)
    : router_(router),
      settings_(settings),
      stats_(stats),
      open_timer_(router.NewStrand()),
      arena_(WriteArenaOptions()) {}

void ServeStream::ReadDone(bool ok) {
  if (!ok) {  // the app half-closed or the call ended: finish once writes drain
    End(absl::OkStatus());
    return;
  }
  if (HandleRequest()) ReadNext();
}

void ServeStream::ReadNext() {
  while (StartReadRequest(&request_)) {
    if (!HandleRequest()) return;
  }
}

bool ServeStream::HandleRequest() {
  bool opened;
  {
    veil::MutexLock lock(&mu_);
    opened = !address_.empty();
    if (end_status_.has_value()) return false;  // ending: read no more
  }
  switch (request_.kind_case()) {
    case v1::ServeRequest::kOpen:
      if (opened) {
        End(ErrorWithReason(absl::StatusCode::kInvalidArgument, "the stream is already open",
                            reason::kInvalidRequest));
        return false;
      }
      HandleOpen(request_.open());
      break;
    case v1::ServeRequest::kAck:
    case v1::ServeRequest::kSend:
      if (!opened) {
        End(ErrorWithReason(absl::StatusCode::kInvalidArgument,
                            "the first message on a Serve stream must be `open`",
                            reason::kInvalidRequest));
        return false;
      }
      if (request_.has_ack()) {
        HandleAck(request_.ack().sequence());
      } else {
        HandleSend(*request_.mutable_send());
      }
      break;
    case v1::ServeRequest::KIND_NOT_SET:
      End(ErrorWithReason(absl::StatusCode::kInvalidArgument,
                          "a ServeRequest must set one of open, ack or send",
                          reason::kInvalidRequest));
      return false;
  }
  veil::MutexLock lock(&mu_);
  if (end_status_.has_value()) return false;
  if (pending_batches_ >= settings_.max_pending_batches) {
    read_paused_ = true;  // AfterWrite reads on once results drain
    return false;
  }
  // The caller reads on outside the lock: a carrier may complete the read at once.
  return true;
}

void ServeStream::HandleOpen(const v1::ServeRequest::Open& open) {
  const std::string& address = open.address();
  absl::Status valid = core::ValidateAppAddress(address);
  if (!valid.ok()) {
    End(std::move(valid), {{"address", address}});
    return;
  }
  auto mailbox =
      std::make_shared<Mailbox>(router_.NewStrand(), shared_from_this(), open.accept_unencrypted());
  absl::Status started = router_.StartWorker(address, mailbox);
  if (!started.ok()) {
    End(std::move(started), {{"address", address}});
    return;
  }
  uint32_t window =
      open.window() == 0 ? settings_.default_window : std::min(open.window(), settings_.max_window);
  {
    veil::MutexLock lock(&mu_);
    address_ = address;
    mailbox_ = std::move(mailbox);
    window_ = window;
    v1::ServeResponse opened;
    opened.mutable_opened()->set_address(address);
    opened.mutable_opened()->set_route(core::Address::Local(address).ToString());
    opened.mutable_opened()->set_window(window);
    control_.push_back(std::move(opened));
  }
  Log(spdlog::level::info, {{log_field::kAddress, address}}, "app serves address {} ({}{})",
      address, carrier(),
      open.accept_unencrypted() ? ", taking unencrypted messages from the network" : "");
  Pump();
}

void ServeStream::HandleAck(uint64_t sequence) {
  std::vector<core::Receipt> handled;
  {
    veil::MutexLock lock(&mu_);
    if (sequence >= next_sequence_) sequence = next_sequence_ - 1;  // cannot ack the future
    for (; acked_ < sequence; ++acked_) {
      handled.push_back(std::move(unacked_receipts_.front()));
      unacked_receipts_.pop_front();
    }
  }
  for (core::Receipt& r : handled) r.Settle(absl::OkStatus());
  Pump();
}

void ServeStream::HandleSend(v1::ServeRequest::SendBatch& batch) {
  {
    veil::MutexLock lock(&mu_);
    ++pending_batches_;  // every batch is settled once: its result, or quietly (failures_only)
  }
  const int n = batch.messages_size();
  if (n == 0 && batch.failures_only()) {
    BatchDoneQuietly();
    return;
  }
  if (n == 0) {
    v1::ServeResponse empty;
    empty.mutable_send_result()->set_batch_id(batch.batch_id());
    PostSendResult(std::move(empty));
    return;
  }
  if (static_cast<size_t>(n) > settings_.max_batch_messages) {
    End(ErrorWithReason(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("a SendBatch holds at most ", settings_.max_batch_messages, " messages"),
        reason::kInvalidRequest));
    return;
  }
  core::Route return_route;
  {
    veil::MutexLock lock(&mu_);
    return_route.Append(core::Address::Local(address_));
  }
  auto tracker =
      std::make_shared<BatchTracker>(weak_from_this(), batch.batch_id(), n, batch.failures_only());
  OutgoingBatch prepare(router_, settings_, std::move(return_route));
  std::vector<core::Message> msgs;
  msgs.reserve(n);
  for (int i = 0; i < n; ++i) {
    auto msg = prepare.Prepare(*batch.mutable_messages(i));
    if (!msg.ok()) {
      tracker->Complete(i, msg.status());
      continue;
    }
    msg->receipt = core::Receipt(tracker, i);
    msg->want_delivery = batch.delivery_receipts();
    msgs.push_back(*std::move(msg));
  }
  router_.SendBatch(std::move(msgs));
}

void ServeStream::Deliver(core::Message msg) { DeliverBatch(std::span<core::Message>(&msg, 1)); }

void ServeStream::DeliverBatch(std::span<core::Message> msgs) {
  std::vector<std::pair<size_t, absl::Status>> refused;  // by index
  std::vector<core::Receipt> handed_on;  // not paced: settled once queued, outside the lock
  {
    veil::MutexLock lock(&mu_);
    for (size_t i = 0; i < msgs.size(); ++i) {
      core::Message& msg = msgs[i];
      if (end_status_.has_value()) {
        refused.emplace_back(
            i, ErrorWithReason(absl::StatusCode::kUnavailable,
                               absl::StrCat("the app serving ", address_, " is going away"),
                               reason::kRouteNotFound));
        continue;
      }
      const size_t bytes = msg.payload.size();
      // (A sender that wants to know of delivery waits for the ack, like a paced one.)
      const bool until_ack = msg.paced || msg.want_delivery;
      if (!msg.paced &&
          (deliveries_.size() >= settings_.max_queued_deliveries + window_ ||
           (queued_bytes_ > 0 && queued_bytes_ + bytes > settings_.max_queued_bytes))) {
        // A paced message is taken over the limit: its connection stops reading until the app
        // acks it, so the limit is enforced at the original sender's node instead. One message
        // always fits an empty queue: one the API took (up to --api-max-request-bytes) must be
        // deliverable, whatever its size.
        refused.emplace_back(i,
                             ErrorWithReason(absl::StatusCode::kResourceExhausted,
                                             absl::StrCat("the app serving ", address_,
                                                          " is not keeping up: its queue is full"),
                                             reason::kQueueFull));
        continue;
      }
      queued_bytes_ += bytes;
      // A paced message's receipt waits for the app's ack; others are handed on now.
      if (until_ack) {
        queued_receipts_.push_back(std::move(msg.receipt));
      } else {
        queued_receipts_.emplace_back();
        if (msg.receipt.pending()) handed_on.push_back(std::move(msg.receipt));
      }
      deliveries_.push_back(std::move(msg));
    }
  }
  if (!refused.empty())
    stats_.deliveries_dropped.fetch_add(refused.size(), std::memory_order_relaxed);
  for (auto& [i, why] : refused) msgs[i].receipt.Settle(std::move(why));
  for (core::Receipt& r : handed_on) r.Settle(absl::OkStatus());
  Pump();
}

void ServeStream::PostSendResult(v1::ServeResponse result) {
  {
    veil::MutexLock lock(&mu_);
    if (end_status_.has_value()) return;
    control_.push_back(std::move(result));
  }
  Pump();
}

bool ServeStream::SettleBatchLocked() {
  --pending_batches_;
  if (read_paused_ && pending_batches_ < settings_.max_pending_batches &&
      !end_status_.has_value()) {
    read_paused_ = false;
    return true;
  }
  return false;
}

void ServeStream::BatchDoneQuietly() {
  bool resume_reading;
  {
    veil::MutexLock lock(&mu_);
    resume_reading = SettleBatchLocked();
  }
  if (resume_reading) ReadNext();
}

void ServeStream::End(absl::Status status, std::map<std::string, std::string> metadata) {
  {
    veil::MutexLock lock(&mu_);
    if (end_status_.has_value()) return;
    end_status_ = std::move(status);
    end_metadata_ = std::move(metadata);
  }
  Pump();
}

void ServeStream::Pump() {
  // Each turn writes one response; a write the carrier completes at once goes round again.
  for (;;) {
    absl::Status finish_with;
    std::map<std::string, std::string> finish_metadata;
    bool finish = false;
    std::optional<v1::ServeResponse> control;
    uint64_t first_sequence = 0;
    {
      veil::MutexLock lock(&mu_);
      if (writing_ || finished_) return;
      if (!control_.empty() && !end_status_.has_value()) {
        control = std::move(control_.front());
        control_.pop_front();
      } else if (!deliveries_.empty() && !end_status_.has_value() &&
                 next_sequence_ - 1 - acked_ < window_) {
        uint64_t credit = window_ - (next_sequence_ - 1 - acked_);
        size_t bytes = 0;
        first_sequence = next_sequence_;
        while (!deliveries_.empty() && credit > 0 &&
               writing_messages_.size() < kMaxDeliveriesPerWrite && bytes < kMaxBytesPerWrite) {
          core::Message& m = deliveries_.front();
          bytes += m.payload.size();
          queued_bytes_ -= m.payload.size();
          writing_messages_.push_back(std::move(m));
          deliveries_.pop_front();
          unacked_receipts_.push_back(std::move(queued_receipts_.front()));
          queued_receipts_.pop_front();
          ++next_sequence_;
          --credit;
        }
      } else if (end_status_.has_value()) {
        finished_ = true;
        finish = true;
        finish_with = *end_status_;
        finish_metadata = end_metadata_;
      } else {
        return;
      }
      writing_ = !finish;
    }
    if (finish) {
      FinishStream(finish_with, finish_metadata);
      return;
    }
    // Outside the lock: this thread alone owns the write buffer until WriteDone.
    arena_.Reset();
    response_ = google::protobuf::Arena::CreateMessage<v1::ServeResponse>(&arena_);
    if (control.has_value()) {
      response_->Swap(&*control);  // different arenas: copies (a control message is small)
    } else {
      auto* batch = response_->mutable_deliveries()->mutable_deliveries();
      batch->Reserve(static_cast<int>(writing_messages_.size()));
      for (size_t i = 0; i < writing_messages_.size(); ++i) {
        v1::Delivery* d = batch->Add();
        d->set_sequence(first_sequence + i);
        ToDelivery(
            writing_messages_[i], *d,
            i == 0 ? std::pair<const core::Message*, const v1::Delivery*>{}
                   : std::pair{&writing_messages_[i - 1], &batch->Get(static_cast<int>(i - 1))});
      }
      writing_messages_.clear();
    }
    if (!StartWriteResponse(response_)) return;  // WriteDone follows
    AfterWrite(true);
  }
}

void ServeStream::WriteDone(bool ok) {
  AfterWrite(ok);
  Pump();
}

void ServeStream::AfterWrite(bool ok) {
  // response_ still holds what was written: the next Pump replaces it.
  const bool wrote_result = response_->has_send_result();
  bool resume_reading = false;
  {
    veil::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok && !end_status_.has_value()) end_status_ = AppGone();
    if (wrote_result) resume_reading = SettleBatchLocked();
  }
  if (resume_reading) ReadNext();
}

void ServeStream::Cancelled() { End(AppGone()); }

void ServeStream::Done() {
  std::deque<core::Receipt> dropped;
  std::shared_ptr<core::Worker> mailbox;
  size_t undelivered;
  std::string address;
  {
    veil::MutexLock lock(&mu_);
    mailbox = std::move(mailbox_);
    address = address_;
    undelivered = deliveries_.size() + (next_sequence_ - 1 - acked_);
    stats_.deliveries_dropped.fetch_add(undelivered, std::memory_order_relaxed);
    deliveries_.clear();
    // Unsettled receipts report MESSAGE_DROPPED (counted by the connections they came from),
    // below, outside the lock.
    dropped.swap(queued_receipts_);
    dropped.insert(dropped.end(), std::make_move_iterator(unacked_receipts_.begin()),
                   std::make_move_iterator(unacked_receipts_.end()));
    unacked_receipts_.clear();
  }
  if (!dropped.empty()) {
    const absl::Status unacked = ErrorWithReason(
        absl::StatusCode::kAborted,
        absl::StrCat("the app serving ", address, " went away before it acknowledged the message"),
        reason::kMessageDropped);
    for (core::Receipt& r : dropped) r.Settle(unacked);
  }
  if (mailbox != nullptr) {
    router_.StopWorker(address, mailbox.get());
    if (undelivered > 0) {
      Log(spdlog::level::warn, {{log_field::kAddress, address}},
          "app stopped serving {} with {} deliveries unacknowledged", address, undelivered);
    } else {
      Log(spdlog::level::info, {{log_field::kAddress, address}}, "app stopped serving {}", address);
    }
  }
  std::shared_ptr<ServeStream> last;
  {
    veil::MutexLock lock(&mu_);
    last = std::move(self_);
  }
  last.reset();  // may free this
}

}  // namespace veil::api
