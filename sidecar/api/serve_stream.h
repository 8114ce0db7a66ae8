// ServeStream: one app serving a local address, for as long as its stream is open: a mailbox
// worker at that address queues deliveries, which the stream writes in batches within the
// app's credit window; the app acks to grant credit and may send messages whose return route
// is the served address.
//
// The protocol logic lives here; a subclass carries the messages: GrpcServeStream (the
// MessagingService.Serve call) or the serve socket's stream (serve_socket.h). A subclass
// implements StartReadRequest / StartWriteResponse / FinishStream and reports back with
// ReadDone / WriteDone / Cancelled and, once finished and idle, Done. A read or write a carrier
// completes at once (a request already buffered, a response the socket took whole) is reported
// by its return value instead, and this class loops: no completion nests in another, however
// many complete at once.
//
// How a stream ends is an absl::Status (with its reason, common/error_reason.h) and the
// ErrorInfo metadata to go with it; each carrier turns it into its own form (a gRPC status, the
// serve socket's `closed` frame).
//
// Lifetime: shared by the carrier (until Done) and the mailbox worker (until the router drops
// it); the last owner frees it. All writes and the finish go through Pump(), which allows one
// outstanding write and finishes only when no write is in flight; there is at most one
// outstanding read.
//
// Thread-safety: reactions run on the carrier's threads, deliveries on whichever thread routes
// them, send outcomes on any thread; shared state is under mu_.
#ifndef VEIL_SIDECAR_API_SERVE_STREAM_H_
#define VEIL_SIDECAR_API_SERVE_STREAM_H_

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "boost/asio/steady_timer.hpp"
#include "google/protobuf/arena.h"
#include "grpcpp/grpcpp.h"
#include "sidecar/api/api_settings.h"
#include "sidecar/common/mutex.h"
#include "sidecar/core/router.h"
#include "veil/v1/messaging.pb.h"

namespace veil::api {

class ServeStream : public std::enable_shared_from_this<ServeStream> {
 public:
  virtual ~ServeStream() = default;

  // Ends the stream with `status` (OK: the app ended it) once pending writes are done; the
  // carrier reports it with `metadata` in its ErrorInfo. Any thread.
  void End(absl::Status status, std::map<std::string, std::string> metadata = {});

  // From the mailbox worker: queue `msg` for delivery or settle its receipt with the refusal.
  void Deliver(core::Message msg);
  // The same for messages routed together, in order, under one lock and one wake-up.
  void DeliverBatch(std::span<core::Message> msgs);

  // From a send batch's tracker: queue its result; or, for a batch that asked for failures
  // only and had none, just count it done.
  void PostSendResult(v1::ServeResponse result);
  void BatchDoneQuietly();

  // From the carrier: the read started by StartReadRequest completed (false: no more
  // requests: the app half-closed or went away), the write finished, the app went away, and
  // the stream is finished with nothing outstanding (releases the carrier's reference).
  void ReadDone(bool ok);
  void WriteDone(bool ok);
  void Cancelled();
  void Done();

 protected:
  ServeStream(core::Router& router, const ApiSettings& settings, ApiStats& stats);

  // Keeps this alive until Done and starts reading the first request; does nothing when the
  // stream already finished (ended before it began). Called once by the subclass.
  void Begin(std::shared_ptr<ServeStream> self);

  // What carries the stream, for the log: "gRPC" or "serve socket".
  virtual const char* carrier() const = 0;
  // Read the next request into `*into`: true when it is there already (no ReadDone follows),
  // false when the read is under way (ReadDone follows). Any thread, by the holder of the read.
  virtual bool StartReadRequest(v1::ServeRequest* into) = 0;
  // Write `response` (valid until written): true when written already (no WriteDone follows),
  // false when under way (WriteDone follows). Any thread, by the holder of the write.
  virtual bool StartWriteResponse(const v1::ServeResponse* response) = 0;
  // End the stream with `status` and `metadata`, then call Done once nothing is outstanding.
  // Called once, with no write in flight.
  virtual void FinishStream(const absl::Status& status,
                            const std::map<std::string, std::string>& metadata) = 0;

 private:
  // Reads and handles requests while they complete at once.
  void ReadNext();
  // Handles request_: true when reading goes on.
  bool HandleRequest();
  // A write finished: frees it, settles a batch's result; reads on if that unpaused reading.
  void AfterWrite(bool ok);
  void HandleOpen(const v1::ServeRequest::Open& open);
  void OpenTimedOut();
  void HandleAck(uint64_t sequence);
  void HandleSend(v1::ServeRequest::SendBatch& batch);
  // One SendBatch settled (its result written, or quietly): true when reading, paused at the
  // pending-batch limit, should resume (the caller then calls ReadNext, unlocked).
  bool SettleBatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts the next write, or FinishStream when asked to end and idle.
  void Pump();

  core::Router& router_;
  const ApiSettings& settings_;
  ApiStats& stats_;
  std::shared_ptr<ServeStream> self_ ABSL_GUARDED_BY(mu_);  // keeps the stream alive until Done
  v1::ServeRequest request_;              // the read buffer; owned by the carrier during a read
  boost::asio::steady_timer open_timer_;  // armed once, in Begin; its handler holds a weak_ptr

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
  std::optional<absl::Status> end_status_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> end_metadata_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // The write buffer, on an arena that is reset before each write (a delivery batch is many
  // small messages: one arena instead of several allocations each). Touched only by the
  // thread that set writing_.
  google::protobuf::Arena arena_;
  v1::ServeResponse* response_ = nullptr;
  std::vector<core::Message> writing_messages_;  // the deliveries being turned into response_
};

// The carrier of one MessagingService.Serve call.
class GrpcServeStream final : public ServeStream,
                              public grpc::ServerBidiReactor<v1::ServeRequest, v1::ServeResponse> {
 public:
  // Creates a stream that keeps itself alive until OnDone, and starts reading.
  static GrpcServeStream* Create(core::Router& router, const ApiSettings& settings,
                                 ApiStats& stats);

  void OnReadDone(bool ok) override { ReadDone(ok); }
  void OnWriteDone(bool ok) override { WriteDone(ok); }
  void OnCancel() override { Cancelled(); }
  void OnDone() override { Done(); }

 private:
  using ServeStream::ServeStream;
  const char* carrier() const override { return "gRPC"; }
  bool StartReadRequest(v1::ServeRequest* into) override {
    StartRead(into);
    return false;
  }
  bool StartWriteResponse(const v1::ServeResponse* response) override {
    StartWrite(response);
    return false;
  }
  void FinishStream(const absl::Status& status,
                    const std::map<std::string, std::string>& metadata) override;
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_SERVE_STREAM_H_
