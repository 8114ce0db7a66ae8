#include "sidecar/api/messaging_service.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "boost/asio/steady_timer.hpp"
#include "sidecar/api/grpc_status.h"
#include "sidecar/api/outgoing.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/random_name.h"

namespace veil::api {
namespace {

constexpr auto kMaxRequestWait = std::chrono::minutes(5);
constexpr auto kDefaultRequestWait = std::chrono::seconds(30);

absl::Status NodeShuttingDown() {
  return ErrorWithReason(absl::StatusCode::kUnavailable, "the node is shutting down",
                         reason::kNodeShuttingDown);
}
grpc::Status ShuttingDown() { return ToGrpcStatus(NodeShuttingDown()); }

// Finishes a unary Send once every message in it has an outcome.
class SendTracker final : public core::SendTracker {
 public:
  SendTracker(grpc::ServerUnaryReactor* reactor, v1::SendResponse* response, uint32_t count)
      : reactor_(reactor), response_(response), remaining_(count) {}
  void Complete(uint32_t index, absl::Status status) override {
    {
      veil::MutexLock lock(&mu_);
      if (status.ok()) {
        ++accepted_;
      } else {
        ++failed_;
        if (index < first_failure_index_) {
          first_failure_index_ = index;
          first_failure_ = std::move(status);
        }
      }
      if (--remaining_ > 0) return;
    }
    // Last outcome: no other thread touches the tracker now.
    if (failed_ == 0) {
      response_->set_accepted(accepted_);
      reactor_->Finish(grpc::Status::OK);
    } else {
      reactor_->Finish(ToGrpcStatus(
          first_failure_,
          {{"index", std::to_string(first_failure_index_)}, {"failed", std::to_string(failed_)}}));
    }
  }

 private:
  grpc::ServerUnaryReactor* const reactor_;
  v1::SendResponse* const response_;
  veil::Mutex mu_;
  uint32_t remaining_ ABSL_GUARDED_BY(mu_);
  uint32_t accepted_ = 0;
  uint32_t failed_ = 0;
  uint32_t first_failure_index_ = UINT32_MAX;
  absl::Status first_failure_;
};

}  // namespace

// One Request call: a private reply address, the outgoing message's outcome, a deadline.
// Finishes exactly once: on the first reply, a send failure, the deadline, cancellation or the
// sidecar's drain.
class RequestCall final : public grpc::ServerUnaryReactor,
                          public std::enable_shared_from_this<RequestCall> {
 public:
  // Starts the call; `*out` is its reactor. The call keeps itself alive until OnDone.
  static std::shared_ptr<RequestCall> Start(core::Router& router, const ApiSettings& settings,
                                            grpc::CallbackServerContext* context,
                                            const v1::RequestRequest& request,
                                            v1::RequestResponse* response,
                                            grpc::ServerUnaryReactor** out);

  void OnCancel() override {
    Conclude(GrpcError(absl::StatusCode::kCancelled, "the request was cancelled",
                       reason::kRequestCancelled));
  }
  void OnDone() override { self_.reset(); }

  void OnReply(core::Message msg) {
    // Claim the finish first: once claimed, no cancel or deadline can Finish the call while
    // the response is being written.
    std::shared_ptr<core::Worker> worker;
    if (!msg.refusal.ok()) {  // the far node refused the request (through its channel)
      msg.receipt.Settle(absl::OkStatus());
      const absl::Status& why = msg.refusal;
      if (Claim(worker)) {
        FinishClaimed(
            std::move(worker),
            GrpcError(why.code(),
                      absl::StrCat(msg.sender.origin == core::SenderInfo::Origin::kSecureChannel
                                       ? "the far node refused the request: "
                                       : "a node on the way refused the request: ",
                                   why.message()),
                      ReasonOf(why)));
      }
      return;
    }
    if (!Claim(worker)) {
      msg.receipt.Settle(ErrorWithReason(absl::StatusCode::kNotFound,
                                         "the request already has its reply",
                                         reason::kRouteNotFound));
      return;
    }
    msg.receipt.Settle(absl::OkStatus());
    v1::Delivery* reply = response_->mutable_reply();
    ToDelivery(msg, *reply);
    reply->set_sequence(1);
    FinishClaimed(std::move(worker), grpc::Status::OK);
  }

  void OnSendOutcome(absl::Status status) {
    if (!status.ok()) Conclude(ToGrpcStatus(status));
  }

  // Ends the call with `status` unless it already ended (or is ending). Any thread.
  void Conclude(grpc::Status status) {
    std::shared_ptr<core::Worker> worker;
    if (Claim(worker)) FinishClaimed(std::move(worker), std::move(status));
  }

 private:
  class ReplyWorker final : public core::Worker {
   public:
    ReplyWorker(core::Strand strand, std::shared_ptr<RequestCall> call)
        : Worker(std::move(strand)), call_(std::move(call)) {}
    void HandleMessage(core::Message msg) override {
      if (call_ == nullptr) {  // queued behind OnStop: the call is over
        msg.receipt.Settle(ErrorWithReason(absl::StatusCode::kUnavailable,
                                           absl::StrCat("the request at ", address(), " is over"),
                                           reason::kRouteNotFound));
        return;
      }
      call_->OnReply(std::move(msg));
    }
    void OnStop() override { call_.reset(); }
    // A refusal of the request, from the far node (through the channel) or one on the way.
    bool TakesRefusals() const override { return true; }
    // The reply comes back the way the request went (out of its secure channel, say), or from
    // this node.
    absl::Status Admit(const core::SenderInfo& from) const override {
      using Origin = core::SenderInfo::Origin;
      if (from.origin == Origin::kApp || from.origin == Origin::kLocal) return absl::OkStatus();
      if (static_cast<int>(from.origin) == expected_origin_.load(std::memory_order_acquire) &&
          from.via == expected_via_.load(std::memory_order_acquire)) {
        return absl::OkStatus();
      }
      return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                             "a request takes its reply only from where the request went",
                             reason::kAccessDenied);
    }
    void Expect(core::Carrier carrier) {
      expected_via_.store(carrier.via, std::memory_order_release);
      expected_origin_.store(static_cast<int>(carrier.origin), std::memory_order_release);
    }

   private:
    std::shared_ptr<RequestCall> call_;
    std::atomic<int> expected_origin_{-1};
    std::atomic<uint64_t> expected_via_{0};
  };

  class Outcome final : public core::SendTracker {
   public:
    explicit Outcome(std::weak_ptr<RequestCall> call) : call_(std::move(call)) {}
    void Complete(uint32_t, absl::Status status) override {
      if (auto call = call_.lock()) call->OnSendOutcome(std::move(status));
    }

   private:
    std::weak_ptr<RequestCall> call_;
  };

  RequestCall(core::Router& router, v1::RequestResponse* response)
      : router_(router), response_(response), timer_(router.NewStrand()) {}

  // The one who gets true finishes the call (FinishClaimed); everyone else leaves it alone.
  bool Claim(std::shared_ptr<core::Worker>& worker) {
    veil::MutexLock lock(&mu_);
    if (done_) return false;
    done_ = true;
    worker = std::move(worker_);
    return true;
  }
  void FinishClaimed(std::shared_ptr<core::Worker> worker, grpc::Status status) {
    boost::asio::post(timer_.get_executor(),
                      [self = shared_from_this()] { self->timer_.cancel(); });
    if (worker != nullptr) router_.StopWorker(worker->address(), worker.get());
    Finish(std::move(status));
  }

  core::Router& router_;
  v1::RequestResponse* const response_;
  boost::asio::steady_timer timer_;
  std::shared_ptr<RequestCall> self_;
  veil::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<core::Worker> worker_ ABSL_GUARDED_BY(mu_);
};

std::shared_ptr<RequestCall> RequestCall::Start(core::Router& router, const ApiSettings& settings,
                                                grpc::CallbackServerContext* context,
                                                const v1::RequestRequest& request,
                                                v1::RequestResponse* response,
                                                grpc::ServerUnaryReactor** out) {
  std::shared_ptr<RequestCall> call(new RequestCall(router, response));
  call->self_ = call;
  *out = call.get();
  auto worker = std::make_shared<ReplyWorker>(router.NewStrand(), call);
  std::string reply_address;
  for (int attempt = 0; attempt < 4 && reply_address.empty(); ++attempt) {
    std::string candidate = RandomName("_req_");
    if (router.StartWorker(candidate, worker).ok()) reply_address = candidate;
  }
  if (reply_address.empty()) {
    worker->OnStop();
    call->Conclude(ShuttingDown());
    return call;
  }
  {
    veil::MutexLock lock(&call->mu_);
    call->worker_ = worker;
  }
  v1::OutgoingMessage outgoing = request.message();
  core::Route return_route;
  return_route.Append(core::Address::Local(reply_address));
  auto msg = PrepareOutgoing(outgoing, std::move(return_route), router, settings);
  if (!msg.ok()) {
    call->Conclude(ToGrpcStatus(msg.status()));
    return call;
  }
  if (auto carrier = router.CarrierWorker(msg->onward); carrier.ok()) {
    worker->Expect((*carrier)->CarrierOf());
  }
  // The wait: the request's own timeout, cut short of the call's deadline so that NO_REPLY, not
  // the client's bare deadline, is what the app hears.
  auto now = std::chrono::system_clock::now();
  std::chrono::system_clock::duration wait = request.timeout_ms() == 0
                                                 ? kDefaultRequestWait
                                                 : std::chrono::milliseconds(request.timeout_ms());
  wait = std::min<std::chrono::system_clock::duration>(wait, kMaxRequestWait);
  const auto left = context->deadline() - now;  // far in the future when the client set none
  if (left < wait + std::chrono::milliseconds(100)) {
    auto margin =
        std::min<std::chrono::system_clock::duration>(std::chrono::milliseconds(100), left / 10);
    wait = std::min(wait, left - margin);
  }
  call->timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::max<std::chrono::system_clock::duration>(wait, {})));
  call->timer_.async_wait([weak = std::weak_ptr<RequestCall>(call)](boost::system::error_code ec) {
    if (ec) return;
    if (auto call = weak.lock()) {
      call->Conclude(GrpcError(absl::StatusCode::kDeadlineExceeded,
                               "no reply arrived before the deadline", reason::kNoReply));
    }
  });
  msg->receipt = core::Receipt(std::make_shared<Outcome>(call), 0);
  router.Send(*std::move(msg));
  return call;
}

bool MessagingService::draining() const {
  veil::MutexLock lock(&mu_);
  return draining_;
}

grpc::ServerBidiReactor<v1::ServeRequest, v1::ServeResponse>* MessagingService::Serve(
    grpc::CallbackServerContext* context) {
  GrpcServeStream* stream = GrpcServeStream::Create(router_, settings_, stats_);
  Adopt(*stream);
  return stream;
}

void MessagingService::Adopt(ServeStream& stream) {
  veil::MutexLock lock(&mu_);
  if (draining_) {
    stream.End(NodeShuttingDown());
    return;
  }
  std::erase_if(streams_, [](const auto& w) { return w.expired(); });
  if (streams_.size() >= settings_.max_serve_streams) {
    stream.End(
        ErrorWithReason(absl::StatusCode::kResourceExhausted,
                        absl::StrCat("this sidecar serves at most ", settings_.max_serve_streams,
                                     " streams at once (--api-max-serve-streams)"),
                        reason::kTooManyStreams));
    return;
  }
  streams_.push_back(stream.weak_from_this());
}

grpc::ServerUnaryReactor* MessagingService::Send(grpc::CallbackServerContext* context,
                                                 const v1::SendRequest* request,
                                                 v1::SendResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const int n = request->messages_size();
  if (draining()) {
    reactor->Finish(ShuttingDown());
    return reactor;
  }
  if (n == 0 || static_cast<size_t>(n) > settings_.max_batch_messages) {
    reactor->Finish(GrpcError(absl::StatusCode::kInvalidArgument,
                              absl::StrCat("a SendRequest holds 1 to ",
                                           settings_.max_batch_messages, " messages, not ", n),
                              reason::kInvalidRequest));
    return reactor;
  }
  core::Route return_route;
  if (!request->return_address().empty()) {
    absl::Status valid = core::ValidateLocalName(request->return_address());
    if (!valid.ok()) {
      reactor->Finish(ToGrpcStatus(valid, {{"field", "return_address"}}));
      return reactor;
    }
    return_route.Append(core::Address::Local(request->return_address()));
  }
  // Validate every message before sending any, so a bad request sends nothing.
  std::vector<core::Message> messages;
  messages.reserve(n);
  OutgoingBatch prepare(router_, settings_, std::move(return_route));
  for (int i = 0; i < n; ++i) {
    // The request is ours until Finish; moving payloads out of it saves a copy per message.
    v1::OutgoingMessage& out = const_cast<v1::OutgoingMessage&>(request->messages(i));
    auto msg = prepare.Prepare(out);
    if (!msg.ok()) {
      reactor->Finish(ToGrpcStatus(msg.status(), {{"index", std::to_string(i)}}));
      return reactor;
    }
    msg->want_delivery = request->delivery_receipts();
    messages.push_back(*std::move(msg));
  }
  auto tracker = std::make_shared<SendTracker>(reactor, response, n);
  for (int i = 0; i < n; ++i) messages[i].receipt = core::Receipt(tracker, i);
  router_.SendBatch(std::move(messages));
  return reactor;
}

grpc::ServerUnaryReactor* MessagingService::Request(grpc::CallbackServerContext* context,
                                                    const v1::RequestRequest* request,
                                                    v1::RequestResponse* response) {
  if (draining()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ShuttingDown());
    return reactor;
  }
  grpc::ServerUnaryReactor* reactor = nullptr;
  std::shared_ptr<RequestCall> call =
      RequestCall::Start(router_, settings_, context, *request, response, &reactor);
  bool drained;
  {
    veil::MutexLock lock(&mu_);
    std::erase_if(requests_, [](const auto& w) { return w.expired(); });
    drained = draining_;
    if (!drained) requests_.push_back(call);
  }
  if (drained) call->Conclude(ShuttingDown());  // the drain began meanwhile
  return reactor;
}

void MessagingService::Drain() {
  std::vector<std::weak_ptr<ServeStream>> streams;
  std::vector<std::weak_ptr<RequestCall>> requests;
  {
    veil::MutexLock lock(&mu_);
    draining_ = true;
    streams.swap(streams_);
    requests.swap(requests_);
  }
  for (auto& weak : streams) {
    if (auto stream = weak.lock()) stream->End(NodeShuttingDown());
  }
  // A pending Request would otherwise hold the drain for its whole wait.
  for (auto& weak : requests) {
    if (auto call = weak.lock()) call->Conclude(ShuttingDown());
  }
}

}  // namespace veil::api
