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
#include "spdlog/spdlog.h"

namespace veil::api {
namespace {

constexpr size_t kMaxDeliveriesPerWrite = 1024;
constexpr size_t kMaxBytesPerWrite = 4 * 1024 * 1024;

// The worker at the served address: hands each message to the stream.
class Mailbox final : public core::Worker {
 public:
  Mailbox(core::Strand strand, std::shared_ptr<ServeStream> stream)
      : Worker(std::move(strand)), stream_(std::move(stream)) {}
  void HandleMessage(core::Message msg) override { stream_->Deliver(std::move(msg)); }
  void HandleBatch(std::vector<core::Message> msgs) override { stream_->DeliverBatch(msgs); }

 private:
  const std::shared_ptr<ServeStream> stream_;
};

// Collects the outcomes of one SendBatch and posts the SendResult when all are in.
class BatchTracker final : public core::SendTracker {
 public:
  BatchTracker(std::weak_ptr<ServeStream> stream, uint64_t batch_id, uint32_t count)
      : stream_(std::move(stream)), remaining_(count) {
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
    if (auto stream = stream_.lock()) stream->PostSendResult(std::move(result_));
  }

 private:
  const std::weak_ptr<ServeStream> stream_;
  std::atomic<uint32_t> remaining_;
  std::atomic<uint32_t> accepted_{0};
  veil::Mutex mu_;
  v1::ServeResponse result_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

ServeStream* ServeStream::Create(core::Router& router, const ApiSettings& settings,
                                 ApiStats& stats) {
  std::shared_ptr<ServeStream> stream(new ServeStream(router, settings, stats));
  stream->self_ = stream;
  stream->StartRead(&stream->request_);
  return stream.get();
}

ServeStream::ServeStream(core::Router& router, const ApiSettings& settings, ApiStats& stats)
    : router_(router), settings_(settings), stats_(stats) {}

void ServeStream::OnReadDone(bool ok) {
  if (!ok) {  // the app half-closed or the call ended: finish once writes drain
    End(grpc::Status::OK);
    return;
  }
  bool opened;
  {
    veil::MutexLock lock(&mu_);
    opened = !address_.empty();
    if (end_status_.has_value()) return;  // ending: read no more
  }
  switch (request_.kind_case()) {
    case v1::ServeRequest::kOpen:
      if (opened) {
        End(GrpcError(absl::StatusCode::kInvalidArgument, "the stream is already open",
                      reason::kInvalidRequest));
        return;
      }
      HandleOpen(request_.open());
      break;
    case v1::ServeRequest::kAck:
    case v1::ServeRequest::kSend:
      if (!opened) {
        End(GrpcError(absl::StatusCode::kInvalidArgument,
                      "the first message on a Serve stream must be `open`",
                      reason::kInvalidRequest));
        return;
      }
      if (request_.has_ack()) {
        HandleAck(request_.ack().sequence());
      } else {
        HandleSend(*request_.mutable_send());
      }
      break;
    case v1::ServeRequest::KIND_NOT_SET:
      End(GrpcError(absl::StatusCode::kInvalidArgument,
                    "a ServeRequest must set one of open, ack or send", reason::kInvalidRequest));
      return;
  }
  veil::MutexLock lock(&mu_);
  if (end_status_.has_value()) return;
  if (pending_batches_ >= settings_.max_pending_batches) {
    read_paused_ = true;  // OnWriteDone reads on once results drain
    return;
  }
  StartRead(&request_);
}

void ServeStream::HandleOpen(const v1::ServeRequest::Open& open) {
  const std::string& address = open.address();
  absl::Status valid = core::ValidateLocalName(address);
  if (valid.ok() && absl::StartsWith(address, "_")) {
    valid = ErrorWithReason(absl::StatusCode::kInvalidArgument,
                            "addresses starting with '_' are reserved for the sidecar",
                            reason::kInvalidAddress);
  }
  if (!valid.ok()) {
    End(ToGrpcStatus(valid, {{"address", address}}));
    return;
  }
  auto mailbox = std::make_shared<Mailbox>(router_.NewStrand(), shared_from_this());
  absl::Status started = router_.StartWorker(address, mailbox);
  if (!started.ok()) {
    End(ToGrpcStatus(started, {{"address", address}}));
    return;
  }
  uint32_t window = open.window() == 0 ? settings_.default_window
                                       : std::min(open.window(), settings_.max_window);
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
  spdlog::info("app serves address {}", address);
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
    ++pending_batches_;  // every batch gets exactly one result, even an empty or invalid one
  }
  const int n = batch.messages_size();
  if (n == 0) {
    v1::ServeResponse empty;
    empty.mutable_send_result()->set_batch_id(batch.batch_id());
    PostSendResult(std::move(empty));
    return;
  }
  if (static_cast<size_t>(n) > settings_.max_batch_messages) {
    End(GrpcError(absl::StatusCode::kInvalidArgument,
                  absl::StrCat("a SendBatch holds at most ", settings_.max_batch_messages,
                               " messages"),
                  reason::kInvalidRequest));
    return;
  }
  core::Route return_route;
  {
    veil::MutexLock lock(&mu_);
    return_route.Append(core::Address::Local(address_));
  }
  auto tracker = std::make_shared<BatchTracker>(weak_from_this(), batch.batch_id(), n);
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
    msgs.push_back(*std::move(msg));
  }
  router_.SendBatch(std::move(msgs));
}

void ServeStream::Deliver(core::Message msg) { DeliverBatch(std::span<core::Message>(&msg, 1)); }

void ServeStream::DeliverBatch(std::span<core::Message> msgs) {
  // Outside the lock: turn every message into its delivery (the slow part).
  std::vector<v1::Delivery> deliveries(msgs.size());
  std::vector<size_t> sizes(msgs.size());
  for (size_t i = 0; i < msgs.size(); ++i) {
    sizes[i] = msgs[i].payload.size();
    ToDelivery(msgs[i], deliveries[i],
               i == 0 ? std::pair<const core::Message*, const v1::Delivery*>{}
                      : std::pair{&msgs[i - 1], &deliveries[i - 1]});
  }
  std::vector<std::pair<size_t, absl::Status>> refused;  // by index
  {
    veil::MutexLock lock(&mu_);
    for (size_t i = 0; i < msgs.size(); ++i) {
      core::Message& msg = msgs[i];
      if (end_status_.has_value()) {
        refused.emplace_back(i, ErrorWithReason(
            absl::StatusCode::kUnavailable,
            absl::StrCat("the app serving ", address_, " is going away"), reason::kRouteNotFound));
        continue;
      }
      if (!msg.paced && (deliveries_.size() >= settings_.max_queued_deliveries + window_ ||
                         queued_bytes_ + sizes[i] > settings_.max_queued_bytes)) {
        // A paced message is taken over the limit: its connection stops reading until the app
        // acks it, so the limit is enforced at the original sender's node instead.
        refused.emplace_back(i, ErrorWithReason(
            absl::StatusCode::kResourceExhausted,
            absl::StrCat("the app serving ", address_, " is not keeping up: its queue is full"),
            reason::kQueueFull));
        continue;
      }
      queued_bytes_ += sizes[i];
      deliveries_.push_back(std::move(deliveries[i]));
      // Others are handed on now; a paced message's receipt waits for the app's ack.
      queued_receipts_.push_back(msg.paced ? std::move(msg.receipt) : core::Receipt());
    }
  }
  if (!refused.empty()) stats_.deliveries_dropped.fetch_add(refused.size(), std::memory_order_relaxed);
  for (auto& [i, why] : refused) msgs[i].receipt.Settle(std::move(why));
  for (core::Message& msg : msgs) msg.receipt.Settle(absl::OkStatus());  // the rest
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

void ServeStream::End(grpc::Status status) {
  {
    veil::MutexLock lock(&mu_);
    if (end_status_.has_value()) return;
    end_status_ = std::move(status);
  }
  Pump();
}

void ServeStream::Pump() {
  grpc::Status finish_with;
  bool finish = false;
  {
    veil::MutexLock lock(&mu_);
    if (writing_ || finished_) return;
    response_.Clear();
    if (!control_.empty() && !end_status_.has_value()) {
      response_ = std::move(control_.front());
      control_.pop_front();
    } else if (!deliveries_.empty() && !end_status_.has_value() &&
               next_sequence_ - 1 - acked_ < window_) {
      uint64_t credit = window_ - (next_sequence_ - 1 - acked_);
      auto* batch = response_.mutable_deliveries()->mutable_deliveries();
      size_t bytes = 0;
      while (!deliveries_.empty() && credit > 0 &&
             static_cast<size_t>(batch->size()) < kMaxDeliveriesPerWrite &&
             bytes < kMaxBytesPerWrite) {
        v1::Delivery& d = deliveries_.front();
        d.set_sequence(next_sequence_++);
        bytes += d.payload().size();
        queued_bytes_ -= d.payload().size();
        *batch->Add() = std::move(d);
        deliveries_.pop_front();
        unacked_receipts_.push_back(std::move(queued_receipts_.front()));
        queued_receipts_.pop_front();
        --credit;
      }
    } else if (end_status_.has_value()) {
      finished_ = true;
      finish = true;
      finish_with = *end_status_;
    } else {
      return;
    }
    writing_ = !finish;
  }
  if (finish) {
    Finish(finish_with);
    return;
  }
  StartWrite(&response_);
}

void ServeStream::OnWriteDone(bool ok) {
  // response_ still holds what was written: the next Pump replaces it.
  const bool wrote_result = response_.has_send_result();
  {
    veil::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok && !end_status_.has_value()) end_status_ = grpc::Status::CANCELLED;
    if (wrote_result) {
      --pending_batches_;
      if (read_paused_ && pending_batches_ < settings_.max_pending_batches &&
          !end_status_.has_value()) {
        read_paused_ = false;
        StartRead(&request_);
      }
    }
  }
  Pump();
}

void ServeStream::OnCancel() { End(grpc::Status::CANCELLED); }

void ServeStream::OnDone() {
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
    // Unsettled receipts report MESSAGE_DROPPED (counted by the connections they came from)
    // when `dropped` goes, outside the lock.
    dropped.swap(queued_receipts_);
    dropped.insert(dropped.end(), std::make_move_iterator(unacked_receipts_.begin()),
                   std::make_move_iterator(unacked_receipts_.end()));
    unacked_receipts_.clear();
  }
  if (mailbox != nullptr) {
    router_.StopWorker(address, mailbox.get());
    if (undelivered > 0) {
      spdlog::warn("app stopped serving {} with {} deliveries unacknowledged", address,
                   undelivered);
    } else {
      spdlog::info("app stopped serving {}", address);
    }
  }
  self_.reset();  // may free this
}

}  // namespace veil::api
