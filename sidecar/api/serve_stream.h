// ServeStream: the reactor of one MessagingService.Serve call. It serves a local address for
// as long as the stream is open: a mailbox worker at that address queues deliveries, which the
// stream writes in batches within the app's credit window; the app acks to grant credit and
// may send messages whose return route is the served address.
//
// Lifetime: shared by gRPC (until OnDone) and the mailbox worker (until the router drops it);
// the last owner frees it. All Start*/Finish calls go through Pump(), which allows one
// outstanding write and calls Finish only when no write is in flight.
//
// Thread-safety: reactions run on gRPC threads, deliveries on the mailbox's strand, send
// outcomes on any thread; shared state is under mu_.
#ifndef VEIL_SIDECAR_API_SERVE_STREAM_H_
#define VEIL_SIDECAR_API_SERVE_STREAM_H_

#include <deque>
#include <span>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "sidecar/common/mutex.h"
#include "grpcpp/grpcpp.h"
#include "google/protobuf/arena.h"
#include "sidecar/api/api_settings.h"
#include "sidecar/core/router.h"
#include "veil/v1/messaging.pb.h"

namespace veil::api {

class ServeStream final : public grpc::ServerBidiReactor<v1::ServeRequest, v1::ServeResponse>,
                          public std::enable_shared_from_this<ServeStream> {
 public:
  // Creates a stream that keeps itself alive until OnDone, and starts reading.
  static ServeStream* Create(core::Router& router, const ApiSettings& settings,
                             ApiStats& stats);

  // Ends the stream with `status` once pending writes are done. Any thread.
  void End(grpc::Status status);

  // From the mailbox worker: queue `msg` for delivery or settle its receipt with the refusal.
  void Deliver(core::Message msg);
  // The same for messages routed together, in order, under one lock and one wake-up.
  void DeliverBatch(std::span<core::Message> msgs);

  // From a send batch's tracker: queue its result.
  void PostSendResult(v1::ServeResponse result);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  ServeStream(core::Router& router, const ApiSettings& settings, ApiStats& stats);

  void HandleOpen(const v1::ServeRequest::Open& open);
  void HandleAck(uint64_t sequence);
  void HandleSend(v1::ServeRequest::SendBatch& batch);
  // Starts the next write, or Finish when asked to end and idle.
  void Pump();

  core::Router& router_;
  const ApiSettings& settings_;
  ApiStats& stats_;
  std::shared_ptr<ServeStream> self_;  // keeps the reactor alive until OnDone
  v1::ServeRequest request_;           // the read buffer; owned by gRPC during a read

  veil::Mutex mu_;
  std::string address_ ABSL_GUARDED_BY(mu_);  // served address; empty before open
  std::shared_ptr<core::Worker> mailbox_ ABSL_GUARDED_BY(mu_);
  uint32_t window_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<v1::ServeResponse> control_ ABSL_GUARDED_BY(mu_);  // opened, send results
  // Messages waiting to be delivered (payload and routes; their receipts are in
  // queued_receipts_). They become Delivery messages only when written, on the write's arena.
  std::deque<core::Message> deliveries_ ABSL_GUARDED_BY(mu_);
  // Receipts of paced messages (read from a connection), settled when the app acks them:
  // one per queued delivery (empty for others), then one per delivery sent and not yet acked.
  std::deque<core::Receipt> queued_receipts_ ABSL_GUARDED_BY(mu_);
  std::deque<core::Receipt> unacked_receipts_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // SendBatches read whose results are not yet written; reading pauses at the limit.
  size_t pending_batches_ ABSL_GUARDED_BY(mu_) = 0;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> end_status_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // The write buffer, on an arena that is reset before each write (a delivery batch is many
  // small messages: one arena instead of several allocations each). Touched only by the
  // thread that set writing_.
  google::protobuf::Arena arena_;
  v1::ServeResponse* response_ = nullptr;
  std::vector<core::Message> writing_messages_;  // the deliveries being turned into response_
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_SERVE_STREAM_H_
