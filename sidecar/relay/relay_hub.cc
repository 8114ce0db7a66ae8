#include "sidecar/relay/relay_hub.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/common/random_name.h"
#include "sidecar/common/status_macros.h"
#include "spdlog/spdlog.h"

namespace veil::relay {
namespace {

class ServiceWorker final : public core::Worker {
 public:
  ServiceWorker(core::Strand strand, std::shared_ptr<RelayHub> hub)
      : Worker(std::move(strand)), hub_(std::move(hub)) {}
  void HandleMessage(core::Message msg) override {
    if (hub_ == nullptr) {  // queued behind OnStop: the node is shutting down
      msg.receipt.Settle(ErrorWithReason(absl::StatusCode::kUnavailable,
                                         "the relay service is stopping",
                                         reason::kNodeShuttingDown));
      return;
    }
    hub_->OnRequest(std::move(msg));
  }
  void OnStop() override { hub_.reset(); }
  // Relay requests must be authenticated: they come only out of a secure channel to the hub.
  absl::Status Admit(const core::SenderInfo& from) const override {
    if (from.origin == core::SenderInfo::Origin::kSecureChannel) return absl::OkStatus();
    return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                           "relay requests must come through a secure channel to the hub",
                           reason::kSecureChannelRequired);
  }

 private:
  std::shared_ptr<RelayHub> hub_;
};

void SetError(const absl::Status& status, wire::v1::RelayResponse& response) {
  auto* error = response.mutable_error();
  error->set_code(static_cast<int>(status.code()));
  error->set_reason(ReasonOf(status));
  error->set_message(std::string(status.message()));
}

}  // namespace

// Counts a relay's bytes from the moment it forwards a message until the connection has
// written it (or failed), then passes the outcome on to the original sender.
class QueuedBytes final : public core::SendTracker {
 public:
  QueuedBytes(std::shared_ptr<std::atomic<size_t>> queued, size_t bytes, core::Receipt original)
      : queued_(std::move(queued)), bytes_(bytes), original_(std::move(original)) {}
  void Complete(uint32_t, absl::Status status) override {
    queued_->fetch_sub(bytes_, std::memory_order_relaxed);
    original_.Settle(std::move(status));
  }

 private:
  std::shared_ptr<std::atomic<size_t>> queued_;
  size_t bytes_;
  core::Receipt original_;
};

// The relay's worker, both ways. Anyone may send to it (that is what a relay is for): it
// hands the message to the owner's connection, marked relayed, with itself put first on the
// return route. The owner's answers come back to it, over the owner's connection, naming next
// the connection (or local worker) that sent through the relay: only those may be answered,
// and the answer's return route again starts with the relay. So the hub's connections are
// reached from the network only through relays, and a relay only ever joins its owner to those
// who addressed it.
class RelayHub::Forwarder final : public core::Worker {
 public:
  Forwarder(core::Strand strand, std::string connection, uint64_t connection_id, size_t max_queued)
      : Worker(std::move(strand)),
        connection_(std::move(connection)),
        connection_id_(connection_id),
        max_queued_(max_queued) {}
  absl::Status Admit(const core::SenderInfo&) const override { return absl::OkStatus(); }
  bool TakesRefusals() const override { return true; }  // carries them both ways
  // A hub-local channel through this relay hears back over the owner's connection.
  core::Carrier CarrierOf() const override {
    veil::MutexLock lock(&mu_);
    return {core::SenderInfo::Origin::kTransport, connection_id_};
  }
  uint64_t connection_id() const {
    veil::MutexLock lock(&mu_);
    return connection_id_;
  }
  void HandleMessage(core::Message msg) override {
    std::string connection;
    uint64_t connection_id;
    {
      veil::MutexLock lock(&mu_);
      connection = connection_;
      connection_id = connection_id_;
    }
    const bool from_owner = msg.sender.origin == core::SenderInfo::Origin::kTransport &&
                            msg.sender.via == connection_id;
    if (from_owner) {
      Answer(std::move(msg));
      return;
    }
    size_t bytes = msg.payload.size();
    // A paced message (read from a connection) is taken over the limit: its connection stops
    // reading while it waits, so its sender is refused at home instead of losing it here.
    if (!msg.paced && queued_->load(std::memory_order_relaxed) + bytes > max_queued_) {
      msg.receipt.Settle(ErrorWithReason(absl::StatusCode::kResourceExhausted,
                                         absl::StrCat("relay ", address(), " has ", max_queued_,
                                                      " bytes queued: its owner is not keeping up"),
                                         reason::kQueueFull));
      return;
    }
    if (!msg.return_route.empty() && msg.return_route.front().is_local()) {
      veil::MutexLock lock(&mu_);
      senders_.insert(msg.return_route.front().value());  // who the owner may answer
    }
    msg.return_route.PushFront(core::Address::Local(address()));
    msg.sender.relayed = true;
    queued_->fetch_add(bytes, std::memory_order_relaxed);
    msg.receipt =
        core::Receipt(std::make_shared<QueuedBytes>(queued_, bytes, std::move(msg.receipt)), 0);
    msg.onward.PushFront(core::Address::Local(std::move(connection)));
    router().Send(std::move(msg));
  }
  // Locks what it shares: the router calls it on the sender's thread (one hop fewer per message).
  bool HandlesOnAnyThread() const override { return true; }
  void Retarget(std::string connection, uint64_t connection_id) {
    veil::MutexLock lock(&mu_);
    connection_ = std::move(connection);
    connection_id_ = connection_id;
  }
  // `worker` (a connection) is gone: it can no longer be answered.
  void Forget(const std::string& worker) {
    veil::MutexLock lock(&mu_);
    senders_.erase(worker);
  }

 private:
  // The owner answers someone who sent through this relay.
  void Answer(core::Message msg) {
    bool known;
    {
      veil::MutexLock lock(&mu_);
      known = !msg.onward.empty() && msg.onward.front().is_local() &&
              senders_.contains(msg.onward.front().value());
    }
    if (!known) {
      router().Refuse(std::move(msg),
                      ErrorWithReason(absl::StatusCode::kPermissionDenied,
                                      absl::StrCat("relay ", address(),
                                                   " answers only those who sent through it"),
                                      reason::kAccessDenied));
      return;
    }
    // The owner's connection put itself first on the return route: answers to this go back
    // through the relay instead.
    if (!msg.return_route.empty()) msg.return_route.PopFront();
    msg.return_route.PushFront(core::Address::Local(address()));
    msg.sender.relayed = true;
    router().Send(std::move(msg));
  }

  mutable veil::Mutex mu_;
  std::string connection_ ABSL_GUARDED_BY(mu_);
  uint64_t connection_id_ ABSL_GUARDED_BY(mu_);
  // The first hops of the return routes of what went through: whom the owner may answer.
  absl::flat_hash_set<std::string> senders_ ABSL_GUARDED_BY(mu_);
  const size_t max_queued_;
  const std::shared_ptr<std::atomic<size_t>> queued_ = std::make_shared<std::atomic<size_t>>(0);
};

RelayHub::RelayHub(core::Router& router, channel::SecureChannelManager& channels,
                   transport::NodeTransport& tcp, RelayLimits limits, AllowList allow)
    : router_(router),
      queued_bytes_per_relay_(limits.queued_bytes_per_relay),
      channels_(channels),
      tcp_(tcp),
      registry_(limits, std::move(allow), [] { return RandomName("").substr(0, 16); }) {}

RelayHub::~RelayHub() = default;

absl::Status RelayHub::Start(const std::string& identity_name) {
  tcp_.AddCloseObserver([weak = weak_from_this()](const std::string& connection, uint64_t) {
    if (auto hub = weak.lock()) hub->OnConnectionClosed(connection);
  });
  RETURN_IF_ERROR(router_.StartWorker(
      kRelayServiceAddress,
      std::make_shared<ServiceWorker>(router_.NewStrand(), shared_from_this())));
  // A channel through this hub to a relay it does not have is told so, not "no worker".
  router_.ExplainAbsence(kForwarderPrefix, [](absl::string_view address) {
    return ErrorWithReason(absl::StatusCode::kNotFound,
                           absl::StrCat("this hub has no relay named ",
                                        QuoteInput(address.substr(sizeof(kForwarderPrefix) - 1))),
                           reason::kRelayNotFound);
  });
  // Anyone may open a channel to the hub; what they may register is the registry's business.
  auto listener = channels_.CreateListener(
      kHubListenerAddress, identity_name,
      std::shared_ptr<const channel::TrustPolicy>(channel::TrustEveryone()));
  if (!listener.ok()) return listener.status();
  spdlog::info("hub: relay service at /service/{}, secure channel listener at /service/{} ({})",
               kRelayServiceAddress, kHubListenerAddress, listener->identifier);
  return absl::OkStatus();
}

absl::StatusOr<std::pair<std::string, uint64_t>> RelayHub::OwnerConnection(
    const core::Message& msg) const {
  if (msg.sender.origin != core::SenderInfo::Origin::kSecureChannel) {
    return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                           "relay requests must come through a secure channel to the hub",
                           reason::kSecureChannelRequired);
  }
  ASSIGN_OR_RETURN(channel::ChannelInfo info, channels_.GetChannel(msg.sender.channel));
  auto route = core::Route::Parse(info.remote_route);
  std::shared_ptr<core::Worker> first = route.ok() && !route->empty() && route->front().is_local()
                                            ? router_.Find(route->front().value())
                                            : nullptr;
  if (first == nullptr || !first->LeavesHost()) {
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                           "the secure channel to the hub does not arrive over a connection",
                           reason::kNoOwnerConnection);
  }
  return std::make_pair(route->front().value(), first->id());
}

bool RelayHub::HasRelayOn(uint64_t connection) const {
  veil::MutexLock lock(&mu_);
  for (const auto& [name, forwarder] : forwarders_) {
    if (forwarder->connection_id() == connection) return true;
  }
  return false;
}

void RelayHub::SetDirectory(RelayDirectory* directory) { directory_ = directory; }

absl::Status RelayHub::Activate(const RelayEntry& entry,
                                const std::pair<std::string, uint64_t>& connection) {
  std::string address = absl::StrCat(kForwarderPrefix, entry.name);
  auto it = forwarders_.find(entry.name);
  if (it != forwarders_.end()) {
    it->second->Retarget(connection.first, connection.second);
  } else {
    auto forwarder = std::make_shared<Forwarder>(router_.NewStrand(), connection.first,
                                                 connection.second, queued_bytes_per_relay_);
    RETURN_IF_ERROR(router_.StartWorker(address, forwarder));
    forwarders_[entry.name] = std::move(forwarder);
  }
  Log(spdlog::level::info,
      {{log_field::kRelay, address},
       {log_field::kIdentifier, entry.owner},
       {log_field::kConnection, connection.first}},
      "hub: relay {} for {} via {}", address, entry.owner, connection.first);
  return absl::OkStatus();
}

void RelayHub::StopForwarder(const std::string& name, absl::Status why) {
  auto it = forwarders_.find(name);
  if (it == forwarders_.end()) return;
  router_.StopWorker(absl::StrCat(kForwarderPrefix, name), it->second.get(), std::move(why));
  forwarders_.erase(it);
}

void RelayHub::Handle(const wire::v1::RelayRequest& request, const core::Message& msg,
                      Respond respond) {
  wire::v1::RelayResponse response;
  response.set_request_id(request.request_id());
  auto fail = [&response, &respond](const absl::Status& status) {
    SetError(status, response);
    respond(std::move(response));
  };
  auto connection = OwnerConnection(msg);
  if (!connection.ok()) return fail(connection.status());
  const std::string& owner = msg.sender.identifier;
  switch (request.kind_case()) {
    case wire::v1::RelayRequest::kRegister: {
      const std::string& asked = request.register_().name();
      RelayEntry entry;
      bool was_live;
      {
        veil::MutexLock lock(&mu_);
        auto registered =
            registry_.Register(owner, asked, connection->first, RelayRegistry::Clock::now(),
                               msg.sender.attributes.get());
        if (!registered.ok()) {
          Log(spdlog::level::warn,
              {{log_field::kRelay, asked},
               {log_field::kIdentifier, owner},
               {log_field::kReason, ReasonOf(registered.status())}},
              "hub: refused relay \"{}\" for {}: {}", asked, owner, registered.status().message());
          return fail(registered.status());
        }
        entry = *std::move(registered);
        was_live = forwarders_.contains(entry.name);
        if (directory_ == nullptr) {
          absl::Status started = Activate(entry, *connection);
          if (!started.ok()) {
            (void)registry_.Unregister(owner, entry.name);
            return fail(started);
          }
        }
      }
      auto answer = [this, entry, connection = *connection, was_live, response,
                     respond = std::move(respond)](absl::Status claimed) mutable {
        {
          veil::MutexLock lock(&mu_);
          if (claimed.ok() && directory_ != nullptr) {
            auto live = registry_.Find(entry.name);
            if (!live || live->owner != entry.owner || live->connection != connection.first) {
              claimed = ErrorWithReason(
                  absl::StatusCode::kUnavailable,
                  absl::StrCat("relay \"", entry.name,
                               "\" lost its connection while the directory answered"),
                  reason::kNoOwnerConnection);
              directory_->Drop(entry.name);
            } else {
              claimed = Activate(entry, connection);
            }
          }
          if (!claimed.ok()) {
            if (!was_live) (void)registry_.Unregister(entry.owner, entry.name);
            Log(spdlog::level::warn,
                {{log_field::kRelay, entry.name},
                 {log_field::kIdentifier, entry.owner},
                 {log_field::kReason, ReasonOf(claimed)}},
                "hub: refused relay \"{}\" for {}: {}", entry.name, entry.owner, claimed.message());
            SetError(claimed, response);
          } else {
            response.mutable_registered()->set_name(entry.name);
            response.mutable_registered()->set_address(absl::StrCat(kForwarderPrefix, entry.name));
          }
        }
        respond(std::move(response));
      };
      if (directory_ == nullptr) return answer(absl::OkStatus());
      // Kept alive by the callback: the directory answers on its own threads.
      directory_->Claim(entry.name, owner,
                        [self = shared_from_this(), answer = std::move(answer)](
                            absl::Status claimed) mutable { answer(std::move(claimed)); });
      return;
    }
    case wire::v1::RelayRequest::kHeartbeat: {
      absl::Status live;
      {
        veil::MutexLock lock(&mu_);
        live = registry_.Check(owner, request.heartbeat().name());
      }
      if (!live.ok()) return fail(live);
      response.mutable_heartbeat_ack();
      return respond(std::move(response));
    }
    case wire::v1::RelayRequest::kUnregister: {
      const std::string& name = request.unregister().name();
      {
        veil::MutexLock lock(&mu_);
        absl::Status removed = registry_.Unregister(owner, name);
        if (!removed.ok()) return fail(removed);
        StopForwarder(name, ErrorWithReason(
                                absl::StatusCode::kNotFound,
                                absl::StrCat("relay \"", name, "\" was unregistered by its owner"),
                                reason::kRelayNotFound));
      }
      Log(spdlog::level::info, {{log_field::kRelay, name}, {log_field::kIdentifier, owner}},
          "hub: relay {}{} unregistered by {}", kForwarderPrefix, name, owner);
      if (directory_ == nullptr) {
        response.mutable_unregistered();
        return respond(std::move(response));
      }
      directory_->Release(name, owner,
                          [self = shared_from_this(), response,
                           respond = std::move(respond)](absl::Status released) mutable {
                            if (released.ok()) {
                              response.mutable_unregistered();
                            } else {
                              SetError(released, response);
                            }
                            respond(std::move(response));
                          });
      return;
    }
    case wire::v1::RelayRequest::KIND_NOT_SET:
      break;
  }
  fail(ErrorWithReason(absl::StatusCode::kInvalidArgument, "empty relay request",
                       reason::kInvalidRequest));
}

void RelayHub::OnRequest(core::Message msg) {
  msg.receipt.Settle(absl::OkStatus());
  auto respond = [this, return_route = msg.return_route](wire::v1::RelayResponse response) {
    if (return_route.empty()) return;
    core::Message reply;
    reply.onward = return_route;
    reply.return_route.Append(core::Address::Local(kRelayServiceAddress));
    reply.payload = response.SerializeAsString();
    router_.Send(std::move(reply));
  };
  wire::v1::RelayRequest request;
  if (!request.ParseFromString(msg.payload)) {
    wire::v1::RelayResponse response;
    SetError(ErrorWithReason(absl::StatusCode::kInvalidArgument, "not a RelayRequest",
                             reason::kInvalidRequest),
             response);
    respond(std::move(response));
    return;
  }
  Handle(request, msg, std::move(respond));
}

void RelayHub::OnConnectionClosed(const std::string& connection) {
  veil::MutexLock lock(&mu_);
  for (auto& [name, forwarder] : forwarders_) forwarder->Forget(connection);
  for (const std::string& name :
       registry_.DropConnection(connection, RelayRegistry::Clock::now())) {
    if (directory_ != nullptr) directory_->Drop(name);
    if (!forwarders_.contains(name)) continue;
    StopForwarder(name, ErrorWithReason(absl::StatusCode::kUnavailable,
                                        absl::StrCat("relay \"", name,
                                                     "\" is down: its owner's connection to the "
                                                     "hub closed (the owner's sidecar re-registers "
                                                     "it)"),
                                        reason::kRelayNotFound));
    Log(spdlog::level::info, {{log_field::kRelay, name}, {log_field::kConnection, connection}},
        "hub: relay {}{} dropped: its connection {} closed", kForwarderPrefix, name, connection);
  }
}

void RelayHub::OnClaimLost(const std::string& name, const std::optional<DirectoryRelay>& now) {
  veil::MutexLock lock(&mu_);
  auto live = registry_.Find(name);
  if (live) (void)registry_.Unregister(live->owner, name);
  StopForwarder(name,
                ErrorWithReason(absl::StatusCode::kUnavailable,
                                now ? absl::StrCat("relay \"", name, "\" moved to hub replica ",
                                                   now->replica, " (its owner registered it there)")
                                    : absl::StrCat("relay \"", name, "\" was released"),
                                reason::kRelayMoved));
}

void RelayHub::Release(const std::string& name, std::function<void(absl::Status)> done) {
  if (absl::Status valid = ValidateRelayName(name); !valid.ok()) return done(valid);
  bool here = false;
  {
    veil::MutexLock lock(&mu_);
    here = registry_.Release(name);
    StopForwarder(
        name, ErrorWithReason(absl::StatusCode::kUnavailable,
                              absl::StrCat("relay \"", name, "\" was released by the hub's admin"),
                              reason::kRelayMoved));
  }
  if (directory_ != nullptr) {
    directory_->ForceRelease(name, [here, done = std::move(done)](absl::Status released) {
      done(here && absl::IsNotFound(released) ? absl::OkStatus() : released);
    });
    return;
  }
  if (!here) {
    return done(ErrorWithReason(absl::StatusCode::kNotFound,
                                absl::StrCat("this hub has no relay named ", QuoteInput(name)),
                                reason::kRelayNotFound));
  }
  spdlog::warn("hub: relay name {} released by an admin", QuoteInput(name));
  done(absl::OkStatus());
}

std::vector<RelayEntry> RelayHub::List() const {
  veil::MutexLock lock(&mu_);
  return registry_.List();
}

}  // namespace veil::relay
