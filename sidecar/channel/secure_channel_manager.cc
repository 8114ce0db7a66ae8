#include "sidecar/channel/secure_channel_manager.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "boost/asio/post.hpp"
#include "sidecar/channel/secure_channel.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/common/random_name.h"
#include "sidecar/common/status_macros.h"
#include "spdlog/spdlog.h"

namespace veil::channel {
namespace {

absl::Status ChannelNotFound(absl::string_view address) {
  return ErrorWithReason(absl::StatusCode::kNotFound,
                         absl::StrCat("no secure channel at ", address), reason::kChannelNotFound);
}

absl::Status ShuttingDown() {
  return ErrorWithReason(absl::StatusCode::kUnavailable, "the node is shutting down",
                         reason::kNodeShuttingDown);
}

}  // namespace

// A listener: its worker, what it was created with, and its identity lease.
struct SecureChannelManager::Listener {
  ListenerInfo info;
  std::shared_ptr<const TrustPolicy> policy;
  identity::IdentityLease lease;
  std::shared_ptr<core::Worker> worker;
};

namespace {

class ListenerWorker final : public core::Worker {
 public:
  ListenerWorker(core::Strand strand, SecureChannelManager& manager)
      : Worker(std::move(strand)), manager_(manager) {}
  void HandleMessage(core::Message msg) override { manager_.Accept(address(), std::move(msg)); }
  // Handshakes may come from anyone: the handshake and the trust policy decide.
  absl::Status Admit(const core::SenderInfo&) const override { return absl::OkStatus(); }

 private:
  SecureChannelManager& manager_;
};

}  // namespace

void ChannelStats::RecordHandshake(bool ok, std::chrono::steady_clock::duration latency) {
  (ok ? handshakes_completed : handshakes_failed).fetch_add(1, std::memory_order_relaxed);
  if (!ok) return;
  double seconds = std::chrono::duration<double>(latency).count();
  size_t bucket = 0;
  while (bucket < kLatencyBuckets.size() && seconds > kLatencyBuckets[bucket]) ++bucket;
  latency_counts[bucket].fetch_add(1, std::memory_order_relaxed);
  latency_sum_micros.fetch_add(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(latency).count()),
      std::memory_order_relaxed);
}

SecureChannelManager::SecureChannelManager(core::Router& router,
                                           identity::IdentityStore& identities,
                                           ChannelOptions options)
    : router_(router),
      identities_(identities),
      options_(std::move(options)),
      tokens_(options_.handshake_rate) {}

SecureChannelManager::~SecureChannelManager() { Shutdown(); }

absl::StatusOr<ListenerInfo> SecureChannelManager::CreateListener(
    const std::string& address, const std::string& identity_name,
    std::shared_ptr<const TrustPolicy> policy, bool exist_ok) {
  RETURN_IF_ERROR(core::ValidateAppAddress(address));
  {
    veil::MutexLock lock(&mu_);
    if (auto it = listeners_.find(address); it != listeners_.end()) {
      const ListenerInfo& existing = it->second->info;
      if (exist_ok && existing.identity == identity_name &&
          it->second->policy->Key() == policy->Key()) {
        return existing;
      }
      return ErrorWithReason(
          absl::StatusCode::kAlreadyExists,
          absl::StrCat("a listener at ", address, " already exists (identity ", existing.identity,
                       ", trusting ", existing.trust_policy, ")", exist_ok ? ", not this one" : ""),
          reason::kAddressInUse);
    }
  }
  ASSIGN_OR_RETURN(identity::IdentityLease lease, identities_.Acquire(identity_name));
  auto listener = std::make_shared<Listener>();
  listener->info = {address, identity_name, lease.identity()->identifier(), policy->Describe()};
  listener->policy = std::move(policy);
  listener->lease = std::move(lease);
  listener->worker = std::make_shared<ListenerWorker>(router_.NewStrand(), *this);
  veil::MutexLock lock(&mu_);
  if (shut_down_) return ShuttingDown();
  RETURN_IF_ERROR(router_.StartWorker(address, listener->worker));
  listeners_[address] = listener;
  Log(spdlog::level::info,
      {{log_field::kListener, address}, {log_field::kIdentifier, listener->info.identifier}},
      "secure channel listener at {} for identity {} ({}), trusting {}", address, identity_name,
      listener->info.identifier, listener->info.trust_policy);
  return listener->info;
}

std::vector<ListenerInfo> SecureChannelManager::ListListeners() const {
  std::vector<ListenerInfo> out;
  veil::MutexLock lock(&mu_);
  for (const auto& [address, l] : listeners_) out.push_back(l->info);
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.address < b.address; });
  return out;
}

absl::Status SecureChannelManager::DeleteListener(const std::string& address) {
  std::shared_ptr<Listener> listener;
  {
    veil::MutexLock lock(&mu_);
    auto it = listeners_.find(address);
    if (it == listeners_.end()) {
      return ErrorWithReason(absl::StatusCode::kNotFound,
                             absl::StrCat("no secure channel listener at ", address),
                             reason::kListenerNotFound);
    }
    listener = std::move(it->second);
    listeners_.erase(it);
  }
  router_.StopWorker(address, listener->worker.get());
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<SecureChannel>> SecureChannelManager::NewChannel(
    bool initiator, const std::string& identity_name, std::shared_ptr<const TrustPolicy> policy,
    const std::string& listener, core::Carrier carrier) {
  ASSIGN_OR_RETURN(identity::IdentityLease lease, identities_.Acquire(identity_name));
  auto channel =
      std::make_shared<SecureChannel>(*this, router_.NewStrand(), initiator, std::move(lease),
                                      std::move(policy), listener, carrier);
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) return ShuttingDown();
    if (channels_.size() >= options_.max_channels) {
      return ErrorWithReason(
          absl::StatusCode::kResourceExhausted,
          absl::StrCat("this node already has ", channels_.size(), " secure channels, its limit"),
          reason::kTooManyChannels);
    }
  }
  // Random: nobody can reach a channel's workers by guessing their names.
  RETURN_IF_ERROR(channel->Register(RandomWorkerName("")));
  veil::MutexLock lock(&mu_);
  channels_[channel->address()] = channel;
  if (carrier.via != 0) by_carrier_[carrier.via].insert(channel->address());
  return channel;
}

void SecureChannelManager::CreateChannel(const core::Route& route, const std::string& identity_name,
                                         std::shared_ptr<const TrustPolicy> policy,
                                         std::chrono::milliseconds timeout, CreateCallback done) {
  // The channel's traffic from the far end will arrive through the worker of its first hop:
  // for a /tcp hop, the connection the handshake goes out on (opened now), named in the route
  // so that the handshake takes exactly it.
  auto carrier_worker = router_.CarrierWorker(route);
  if (!carrier_worker.ok()) {
    done(carrier_worker.status());
    return;
  }
  core::Route remote = route;
  if (!remote.front().is_local()) {
    remote.PopFront();
    remote.PushFront(core::Address::Local((*carrier_worker)->address()));
  }
  auto channel =
      NewChannel(true, identity_name, std::move(policy), "", (*carrier_worker)->CarrierOf());
  if (!channel.ok()) {
    done(channel.status());
    return;
  }
  (*channel)->StartInitiator(std::move(remote), timeout, std::move(done));
}

void SecureChannelManager::RefuseHandshake(const core::Message& msg, absl::string_view why) {
  stats_.handshakes_refused.fetch_add(1, std::memory_order_relaxed);
  if (uint64_t suppressed = 0; refused_log_.ShouldLog(&suppressed)) {
    const std::string from = msg.return_route.empty() ? "-" : msg.return_route.front().ToString();
    Log(spdlog::level::warn, {{log_field::kRoute, from}},
        "secure channel listener: refused a handshake from {}: {}{}", from, why,
        suppressed > 0 ? absl::StrCat(" (and ", suppressed, " more not logged)") : "");
  }
  if (msg.return_route.empty()) return;
  core::Message refusal;
  refusal.onward = msg.return_route;
  refusal.payload = ChannelSession::HandshakeError(why);
  refusal.path_tag = msg.path_tag;  // the initiator believes only what echoes its tag
  router_.Send(std::move(refusal));
}

absl::Status SecureChannelManager::TakePendingSlot(const core::Message& msg, PendingSlot& slot) {
  using Origin = core::SenderInfo::Origin;
  const bool from_network = msg.sender.origin == Origin::kTransport;
  const bool privileged =
      from_network && options_.privileged_carrier && options_.privileged_carrier(msg.sender.via);
  // Who the sender is, as far as this node can tell: the connection it came over, or, over a
  // relay's connection to its hub, also the hub's connection from the sender (the hop after
  // ours in the return route: the hub put it there, the sender cannot choose it).
  slot.sender = absl::StrCat(static_cast<int>(msg.sender.origin), "/", msg.sender.via);
  if (privileged && msg.return_route.size() > 1) {
    absl::StrAppend(&slot.sender, "/", msg.return_route.hops()[1].ToString());
  }
  slot.host.clear();
  if (from_network && !privileged && !msg.return_route.empty()) {
    if (auto connection = router_.Find(msg.return_route.front().value())) {
      slot.host = std::string(connection->RemoteHost());
    }
  }
  auto busy = [](absl::string_view why) {
    return ErrorWithReason(absl::StatusCode::kResourceExhausted, why, reason::kListenerBusy);
  };
  veil::MutexLock lock(&mu_);
  const size_t total_limit = privileged || !from_network ? options_.max_pending_handshakes
                                                         : options_.max_pending_handshakes -
                                                               options_.max_pending_handshakes / 4;
  if (pending_total_ >= total_limit) return busy("the listener is busy; try again later");
  auto count = [](const absl::flat_hash_map<std::string, size_t>& map, const std::string& key) {
    auto it = map.find(key);
    return it == map.end() ? size_t{0} : it->second;
  };
  if (count(pending_by_sender_, slot.sender) >= options_.max_pending_handshakes_per_sender) {
    return busy("the listener is busy: too many handshakes in progress from your connection");
  }
  if (!slot.host.empty() &&
      count(pending_by_host_, slot.host) >= options_.max_pending_handshakes_per_address) {
    return busy("the listener is busy: too many handshakes in progress from your address");
  }
  if (from_network && !privileged) {  // the rate: what strangers may make this node compute
    auto now = std::chrono::steady_clock::now();
    tokens_ = std::min(
        options_.handshake_rate,
        tokens_ + options_.handshake_rate * std::chrono::duration<double>(now - refilled_).count());
    refilled_ = now;
    if (tokens_ < 1) return busy("the listener is busy: too many handshakes per second");
    tokens_ -= 1;
  }
  ++pending_by_sender_[slot.sender];
  if (!slot.host.empty()) ++pending_by_host_[slot.host];
  ++pending_total_;
  return absl::OkStatus();
}

void SecureChannelManager::Accept(const std::string& listener_address, core::Message msg) {
  msg.receipt.Settle(absl::OkStatus());
  if (msg.payload.empty() ||
      static_cast<ChannelMessageType>(msg.payload[0]) != ChannelMessageType::kHandshake1) {
    spdlog::debug("secure channel listener {}: ignored a message that is not a handshake",
                  listener_address);
    return;
  }
  std::shared_ptr<Listener> listener;
  {
    veil::MutexLock lock(&mu_);
    auto it = listeners_.find(listener_address);
    if (it == listeners_.end()) return;
    listener = it->second;
  }
  PendingSlot slot;
  if (absl::Status taken = TakePendingSlot(msg, slot); !taken.ok()) {
    RefuseHandshake(msg, taken.message());
    return;
  }
  // The responder's traffic arrives the way this handshake did.
  auto channel = NewChannel(false, listener->info.identity, listener->policy, listener_address,
                            {msg.sender.origin, msg.sender.via});
  if (!channel.ok()) {
    HandshakeSettled(slot);
    RefuseHandshake(msg, ReasonOf(channel.status()) == reason::kTooManyChannels
                             ? "the node has too many channels; try again later"
                             : "the listener cannot accept a channel now");
    const std::string reason = ReasonOf(channel.status());
    Log(spdlog::level::warn,
        {{log_field::kListener, listener_address}, {log_field::kReason, reason}},
        "secure channel listener {}: cannot accept: {}", listener_address,
        channel.status().message());
    return;
  }
  std::shared_ptr<SecureChannel> ch = *channel;
  ch->set_pending_slot(std::move(slot));
  ch->StartResponder(options_.responder_timeout);
  boost::asio::post(ch->strand(),
                    [ch, msg = std::move(msg)]() mutable { ch->OnChannelMessage(std::move(msg)); });
}

std::vector<ChannelInfo> SecureChannelManager::ListChannels() const {
  std::vector<std::shared_ptr<SecureChannel>> channels;
  {
    veil::MutexLock lock(&mu_);
    for (const auto& [address, ch] : channels_) channels.push_back(ch);
  }
  std::vector<ChannelInfo> out;
  for (const auto& ch : channels) out.push_back(ch->Info());
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.address < b.address; });
  return out;
}

absl::StatusOr<ChannelInfo> SecureChannelManager::GetChannel(const std::string& address) const {
  std::shared_ptr<SecureChannel> channel;
  {
    veil::MutexLock lock(&mu_);
    auto it = channels_.find(address);
    if (it == channels_.end()) return ChannelNotFound(address);
    channel = it->second;
  }
  return channel->Info();
}

absl::Status SecureChannelManager::DeleteChannel(const std::string& address) {
  std::shared_ptr<SecureChannel> channel;
  {
    veil::MutexLock lock(&mu_);
    auto it = channels_.find(address);
    if (it == channels_.end()) return ChannelNotFound(address);
    channel = it->second;
  }
  channel->Delete(ErrorWithReason(absl::StatusCode::kCancelled, "deleted through the API",
                                  reason::kChannelDeleted));
  return absl::OkStatus();
}

void SecureChannelManager::HandshakeSettled(const PendingSlot& slot) {
  veil::MutexLock lock(&mu_);
  --pending_total_;
  if (auto it = pending_by_sender_.find(slot.sender);
      it != pending_by_sender_.end() && --it->second == 0) {
    pending_by_sender_.erase(it);
  }
  if (auto it = pending_by_host_.find(slot.host);
      it != pending_by_host_.end() && --it->second == 0) {
    pending_by_host_.erase(it);
  }
}

bool SecureChannelManager::CountRemote(const std::string& identifier) {
  veil::MutexLock lock(&mu_);
  size_t& n = by_remote_[identifier];
  if (n >= options_.max_channels_per_identity) return false;
  ++n;
  return true;
}

void SecureChannelManager::UncountRemote(const std::string& identifier) {
  veil::MutexLock lock(&mu_);
  auto it = by_remote_.find(identifier);
  if (it != by_remote_.end() && --it->second == 0) by_remote_.erase(it);
}

void SecureChannelManager::Forget(const std::string& address, const SecureChannel* channel) {
  veil::MutexLock lock(&mu_);
  auto it = channels_.find(address);
  if (it == channels_.end() || it->second.get() != channel) return;
  if (uint64_t via = channel->carrier().via; via != 0) {
    auto c = by_carrier_.find(via);
    if (c != by_carrier_.end()) {
      c->second.erase(address);
      if (c->second.empty()) by_carrier_.erase(c);
    }
  }
  channels_.erase(it);
}

void SecureChannelManager::AddCarrierObserver(
    std::function<void(uint64_t carrier, absl::string_view why)> observer) {
  veil::MutexLock lock(&mu_);
  carrier_observers_.push_back(std::move(observer));
}

void SecureChannelManager::OnCarrierClosed(uint64_t carrier, absl::string_view why) {
  std::vector<std::shared_ptr<SecureChannel>> riding;
  std::vector<std::function<void(uint64_t, absl::string_view)>> observers;
  {
    veil::MutexLock lock(&mu_);
    observers = carrier_observers_;
  }
  for (const auto& observer : observers) observer(carrier, why);
  {
    veil::MutexLock lock(&mu_);
    auto c = by_carrier_.find(carrier);
    if (c == by_carrier_.end()) return;
    for (absl::string_view address : c->second) {
      auto it = channels_.find(address);
      if (it != channels_.end()) riding.push_back(it->second);
    }
  }
  for (auto& channel : riding) {
    stats_.carrier_closed.fetch_add(1, std::memory_order_relaxed);
    channel->Close(ErrorWithReason(absl::StatusCode::kUnavailable,
                                   absl::StrCat("the far end became unreachable: ", why),
                                   reason::kConnectionLost),
                   /*notify_peer=*/false);
  }
}

bool SecureChannelManager::Carries(uint64_t carrier) const {
  veil::MutexLock lock(&mu_);
  return by_carrier_.contains(carrier);
}

void SecureChannelManager::Shutdown() {
  std::vector<std::shared_ptr<SecureChannel>> channels;
  std::vector<std::shared_ptr<Listener>> listeners;
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    for (auto& [address, ch] : channels_) channels.push_back(ch);
    for (auto& [address, l] : listeners_) listeners.push_back(l);
    listeners_.clear();
  }
  for (auto& l : listeners) router_.StopWorker(l->info.address, l->worker.get());
  for (auto& ch : channels) {
    ch->Close(ErrorWithReason(absl::StatusCode::kUnavailable, "the node is shutting down",
                              reason::kNodeShuttingDown),
              /*notify_peer=*/true);
  }
}

SessionOptions SecureChannelManager::SessionOptionsFor(const identity::Identity& local) const {
  SessionOptions options = options_.session;
  if (options_.credentials != nullptr) {
    options.credentials = options_.credentials->CredentialsOf(local.identifier());
    options.trusted_authorities = options_.credentials->trusted();
  }
  return options;
}

void SecureChannelManager::CredentialsChanged(const std::string& identifier) {
  if (options_.credentials == nullptr) return;
  auto credentials = options_.credentials->CredentialsOf(identifier);
  std::vector<std::shared_ptr<SecureChannel>> channels;
  {
    veil::MutexLock lock(&mu_);
    for (const auto& [address, channel] : channels_) {
      if (channel->local_identifier() == identifier) channels.push_back(channel);
    }
  }
  for (const auto& channel : channels) channel->PresentCredentials(credentials);
}

}  // namespace veil::channel
