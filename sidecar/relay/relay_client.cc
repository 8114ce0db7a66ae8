#include "sidecar/relay/relay_client.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "boost/asio/post.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/relay/relay_hub.h"
#include "spdlog/spdlog.h"

namespace veil::relay {
namespace {}  // namespace

// Where the hub's answers arrive: only out of the session's current channel to the hub.
class RelayClient::ResponseWorker final : public core::Worker {
 public:
  ResponseWorker(core::Strand strand, std::weak_ptr<RelayClient> client)
      : Worker(std::move(strand)), client_(std::move(client)) {}
  void HandleMessage(core::Message msg) override {
    msg.receipt.Settle(absl::OkStatus());
    if (auto client = client_.lock()) client->OnResponse(std::move(msg));
  }
  absl::Status Admit(const core::SenderInfo& from) const override {
    if (from.origin == core::SenderInfo::Origin::kSecureChannel &&
        from.via == channel_.load(std::memory_order_acquire)) {
      return absl::OkStatus();
    }
    return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                           "a relay session takes answers only from its channel to the hub",
                           reason::kAccessDenied);
  }
  // The channel to the hub (its encryptor's worker id), 0 when none.
  void set_channel(uint64_t encryptor_id) {
    channel_.store(encryptor_id, std::memory_order_release);
  }

 private:
  std::weak_ptr<RelayClient> client_;
  std::atomic<uint64_t> channel_{0};
};

namespace {

// Reports a request that could not be handed on (dead channel or connection).
class RequestTracker final : public core::SendTracker {
 public:
  RequestTracker(std::weak_ptr<RelayClient> client, std::function<void(absl::Status)> on_failure)
      : client_(std::move(client)), on_failure_(std::move(on_failure)) {}
  void Complete(uint32_t, absl::Status status) override {
    if (status.ok()) return;
    if (auto client = client_.lock()) {
      boost::asio::post(client->strand(), [f = on_failure_, status] { f(status); });
    }
  }

 private:
  std::weak_ptr<RelayClient> client_;
  std::function<void(absl::Status)> on_failure_;
};

bool Terminal(absl::StatusCode code) {
  return code == absl::StatusCode::kPermissionDenied ||
         code == absl::StatusCode::kInvalidArgument ||
         code == absl::StatusCode::kResourceExhausted || code == absl::StatusCode::kUnauthenticated;
}

}  // namespace

RelayClient::RelayClient(channel::SecureChannelManager& channels, core::Route hub_route,
                         std::string name, std::string identity,
                         std::shared_ptr<const channel::TrustPolicy> hub_policy,
                         RelayClientOptions options, std::shared_ptr<ConnectGate> gate)
    : channels_(channels),
      router_(channels.router()),
      strand_(router_.NewStrand()),
      hub_route_(std::move(hub_route)),
      identity_(std::move(identity)),
      hub_policy_(std::move(hub_policy)),
      options_(options),
      rng_(std::random_device{}()),
      backoff_(options.backoff_initial, options.backoff_max,
               [this] { return std::uniform_real_distribution<double>(0, 1)(rng_); }),
      timer_(strand_),
      reply_timer_(strand_),
      gate_(std::move(gate)),
      requested_name_(std::move(name)) {
  status_.name = requested_name_;
  status_.hub_route = hub_route_.ToString();
  status_.identity = identity_;
}

void ConnectGate::Enter(std::function<bool()> go) {
  {
    veil::MutexLock lock(&mu_);
    if (free_ == 0) {
      waiting_.push_back(std::move(go));
      return;
    }
    --free_;
  }
  if (!go()) Leave();
}

void ConnectGate::Leave() {
  for (;;) {  // the slot passes straight to the next waiter that takes it
    std::function<bool()> next;
    {
      veil::MutexLock lock(&mu_);
      if (waiting_.empty()) {
        ++free_;
        return;
      }
      next = std::move(waiting_.front());
      waiting_.pop_front();
    }
    if (next()) return;
  }
}

RelayClient::~RelayClient() {
  if (in_gate_) gate_->Leave();
}

void RelayClient::LeaveGate() {
  if (!in_gate_) return;
  in_gate_ = false;
  gate_->Leave();
}

bool RelayClient::HasName(const std::string& name) const {
  veil::MutexLock lock(&mu_);
  return status_.name == name;
}

void RelayClient::Update(std::function<void(RelayStatus&)> change) {
  veil::MutexLock lock(&mu_);
  change(status_);
}

RelayStatus RelayClient::Status() const {
  veil::MutexLock lock(&mu_);
  return status_;
}

void RelayClient::Start(Outcome first, bool retry_until_up) {
  boost::asio::post(strand_, [self = shared_from_this(), first = std::move(first),
                              retry_until_up]() mutable {
    self->first_ = std::move(first);
    self->retry_until_up_ = retry_until_up;
    self->response_worker_ = std::make_shared<ResponseWorker>(self->strand_, self);
    self->worker_address_ = self->router_.StartWorkerWithPrefix("_relay_", self->response_worker_);
    self->Connect();
  });
}

void RelayClient::Connect() {
  if (stopped_) return;
  uint64_t generation = ++generation_;
  if (gate_ == nullptr || in_gate_) return Dial(generation);
  gate_->Enter([weak = weak_from_this(), generation] {
    auto self = weak.lock();
    if (!self) return false;
    boost::asio::post(self->strand_, [self, generation] {
      self->in_gate_ = true;
      if (self->stopped_ || generation != self->generation_) return self->LeaveGate();
      self->Dial(generation);
    });
    return true;
  });
}

void RelayClient::Dial(uint64_t generation) {
  core::Route route = hub_route_;
  route.Append(core::Address::Local(kHubListenerAddress));
  channels_.CreateChannel(route, identity_, hub_policy_, options_.handshake_timeout,
                          [weak = weak_from_this(), generation](auto info) {
                            auto self = weak.lock();
                            if (!self) return;
                            boost::asio::post(self->strand_,
                                              [self, generation, info = std::move(info)] {
                                                self->OnChannel(generation, std::move(info));
                                              });
                          });
}

void RelayClient::OnChannel(uint64_t generation, absl::StatusOr<channel::ChannelInfo> info) {
  if (generation != generation_ || stopped_) {
    if (info.ok()) (void)channels_.DeleteChannel(info->address);
    return;
  }
  if (!info.ok()) {
    if (ReasonOf(info.status()) == reason::kRouteNotFound &&
        absl::StrContains(info.status().message(),
                          absl::StrCat("/service/", kHubListenerAddress))) {
      // Reached a node, but it has no hub listener: not a hub. Final, like a refusal.
      Finish(ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                             absl::StrCat("the node at ", hub_route_.ToString(),
                                          " is not a hub (it has no /service/", kHubListenerAddress,
                                          "; run it with --hub)"),
                             reason::kNotAHub),
             RelayStatus::State::kFailed);
      return;
    }
    Lost(info.status());
    return;
  }
  channel_ = info->address;
  response_worker_->set_channel(info->encryptor_id);
  hub_carrier_.store(info->carrier, std::memory_order_release);
  Update([&](RelayStatus& s) {
    s.channel = info->address;
    s.hub_identifier = info->remote_identifier;
  });
  wire::v1::RelayRequest request;
  request.mutable_register_()->set_name(requested_name_);
  SendRequest(std::move(request));
}

void RelayClient::SendRequest(wire::v1::RelayRequest request) {
  request.set_request_id(next_request_++);
  pending_request_ = request.request_id();
  core::Message msg;
  msg.onward.Append(core::Address::Local(channel_));
  msg.onward.Append(core::Address::Local(kRelayServiceAddress));
  msg.return_route.Append(core::Address::Local(worker_address_));
  msg.payload = request.SerializeAsString();
  uint64_t generation = generation_;
  msg.receipt = core::Receipt(
      std::make_shared<RequestTracker>(weak_from_this(),
                                       [weak = weak_from_this(), generation](absl::Status s) {
                                         auto self = weak.lock();
                                         if (self && generation == self->generation_) self->Lost(s);
                                       }),
      0);
  hub_bytes_seen_ = HubBytesReceived();
  ArmReplyTimer(generation);
  router_.Send(std::move(msg));
}

void RelayClient::ArmReplyTimer(uint64_t generation) {
  reply_timer_.expires_after(options_.heartbeat_timeout);
  reply_timer_.async_wait([weak = weak_from_this(), generation](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || generation != self->generation_ || self->pending_request_ == 0) return;
    // The answer may wait behind a backlog: this node stopped reading the hub's connection
    // (an app here is not keeping up), or is still reading what came before it. A hub whose
    // connection brought anything since is alive; keep waiting.
    uint64_t seen = self->HubBytesReceived();
    if (self->HubConnectionHeldBack() || seen != self->hub_bytes_seen_) {
      spdlog::debug("relay {}: the hub's answer waits behind a backlog; still waiting",
                    self->requested_name_);
      self->hub_bytes_seen_ = seen;
      self->ArmReplyTimer(generation);
      return;
    }
    self->Lost(ErrorWithReason(absl::StatusCode::kUnavailable, "the hub did not answer in time",
                               reason::kHubNotAnswering));
  });
}

std::shared_ptr<core::Worker> RelayClient::HubConnection() const {
  if (channel_.empty()) return nullptr;
  auto info = channels_.GetChannel(channel_);
  if (!info.ok()) return nullptr;
  auto route = core::Route::Parse(info->remote_route);
  if (!route.ok() || route->empty() || !route->front().is_local()) return nullptr;
  return router_.Find(route->front().value());
}

bool RelayClient::HubConnectionHeldBack() const {
  std::shared_ptr<core::Worker> connection = HubConnection();
  return connection != nullptr && connection->HoldingBack();
}

uint64_t RelayClient::HubBytesReceived() const {
  std::shared_ptr<core::Worker> connection = HubConnection();
  return connection != nullptr ? connection->BytesReceived() : 0;
}

void RelayClient::OnResponse(core::Message msg) {
  if (stopped_) return;
  wire::v1::RelayResponse response;
  if (!response.ParseFromString(msg.payload) || response.request_id() != pending_request_ ||
      msg.sender.origin != core::SenderInfo::Origin::kSecureChannel ||
      msg.sender.channel != channel_) {
    return;  // stale, or not from our channel to the hub: ignore
  }
  pending_request_ = 0;
  reply_timer_.cancel();
  switch (response.kind_case()) {
    case wire::v1::RelayResponse::kRegistered: {
      LeaveGate();                                     // connected: the next session's turn
      requested_name_ = response.registered().name();  // keep a hub-assigned name
      backoff_.Reset();
      Update([&](RelayStatus& s) {
        s.name = response.registered().name();
        s.address = response.registered().address();
        s.state = RelayStatus::State::kUp;
        s.last_error.clear();  // up again: what went wrong before is over
        ++s.registrations;
      });
      const std::string hub = hub_route_.ToString();
      Log(spdlog::level::info,
          {{log_field::kRelay, response.registered().address()}, {log_field::kHub, hub}},
          "relay {} is up on hub {}", response.registered().address(), hub);
      if (first_) {
        auto first = std::move(first_);
        first_ = nullptr;
        first(Status());
      }
      ScheduleHeartbeat();
      return;
    }
    case wire::v1::RelayResponse::kHeartbeatAck:
      ScheduleHeartbeat();
      return;
    case wire::v1::RelayResponse::kError: {
      LeaveGate();
      absl::Status error = ErrorWithReason(
          static_cast<absl::StatusCode>(response.error().code()),
          absl::StrCat("the hub refused: ", response.error().message()), response.error().reason());
      if (Terminal(error.code())) {
        Finish(error, RelayStatus::State::kFailed);
      } else {
        Lost(error);  // e.g. the hub lost our relay: register again
      }
      return;
    }
    default:
      return;
  }
}

void RelayClient::CarrierClosed(uint64_t carrier, absl::string_view why) {
  boost::asio::post(strand_, [weak = weak_from_this(), carrier, why = std::string(why)] {
    auto self = weak.lock();
    if (!self || self->stopped_ || carrier == 0 || self->hub_carrier() != carrier) return;
    self->Lost(ErrorWithReason(absl::StatusCode::kUnavailable,
                               absl::StrCat("the connection to the hub closed: ", why),
                               reason::kConnectionLost));
  });
}

void RelayClient::ScheduleHeartbeat() {
  uint64_t generation = generation_;
  timer_.expires_after(options_.heartbeat_interval);
  timer_.async_wait([weak = weak_from_this(), generation](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->stopped_ || generation != self->generation_) return;
    wire::v1::RelayRequest request;
    request.mutable_heartbeat()->set_name(self->requested_name_);
    self->SendRequest(std::move(request));
  });
}

void RelayClient::CloseChannel() {
  if (response_worker_ != nullptr) response_worker_->set_channel(0);
  hub_carrier_.store(0, std::memory_order_release);
  if (!channel_.empty()) {
    (void)channels_.DeleteChannel(channel_);
    channel_.clear();
  }
}

void RelayClient::Lost(absl::Status why) {
  if (stopped_) return;
  if (first_ && !retry_until_up_) {  // never came up: report and stop
    Finish(std::move(why), RelayStatus::State::kFailed);
    return;
  }
  ++generation_;
  pending_request_ = 0;
  reply_timer_.cancel();
  CloseChannel();
  LeaveGate();  // others connect while this one backs off
  auto delay = backoff_.Next();
  const std::string hub = hub_route_.ToString(), reason = ReasonOf(why);
  Log(spdlog::level::warn,
      {{log_field::kRelay, requested_name_}, {log_field::kHub, hub}, {log_field::kReason, reason}},
      "relay {} on hub {} lost ({}); reconnecting in {} ms", requested_name_, hub, why.message(),
      delay.count());
  Update([&](RelayStatus& s) {
    s.state = RelayStatus::State::kReconnecting;
    s.last_error = std::string(why.message());
    s.channel.clear();
  });
  timer_.expires_after(delay);
  timer_.async_wait(
      [weak = weak_from_this(), generation = generation_](boost::system::error_code ec) {
        auto self = weak.lock();
        if (ec || !self || generation != self->generation_) return;
        self->Connect();
      });
}

void RelayClient::Finish(absl::Status why, RelayStatus::State state) {
  stopped_ = true;
  LeaveGate();
  ++generation_;
  timer_.cancel();
  reply_timer_.cancel();
  CloseChannel();
  router_.StopWorker(worker_address_);
  Update([&](RelayStatus& s) {
    s.state = state;
    if (!why.ok()) s.last_error = std::string(why.message());
    s.channel.clear();
  });
  if (first_) {
    auto first = std::move(first_);
    first_ = nullptr;
    first(why.ok() ? absl::StatusOr<RelayStatus>(Status()) : absl::StatusOr<RelayStatus>(why));
  }
}

void RelayClient::Stop() {
  boost::asio::post(strand_, [self = shared_from_this()] {
    if (self->stopped_) return;
    if (!self->channel_.empty() && !self->requested_name_.empty()) {
      wire::v1::RelayRequest request;
      request.set_request_id(self->next_request_++);
      request.mutable_unregister()->set_name(self->requested_name_);
      core::Message msg;
      msg.onward.Append(core::Address::Local(self->channel_));
      msg.onward.Append(core::Address::Local(kRelayServiceAddress));
      msg.payload = request.SerializeAsString();
      self->router_.Send(std::move(msg));
    }
    self->Finish(absl::OkStatus(), RelayStatus::State::kStopped);
  });
}

}  // namespace veil::relay
