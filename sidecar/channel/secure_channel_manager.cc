#include "sidecar/channel/secure_channel_manager.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "asio/post.hpp"
#include "sidecar/channel/secure_channel.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/status_macros.h"
#include "spdlog/spdlog.h"

namespace veil::channel {
namespace {

absl::Status ChannelNotFound(absl::string_view address) {
  return ErrorWithReason(absl::StatusCode::kNotFound,
                         absl::StrCat("no secure channel at ", address), "CHANNEL_NOT_FOUND");
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
    : router_(router), identities_(identities), options_(options) {}

SecureChannelManager::~SecureChannelManager() { Shutdown(); }

absl::StatusOr<ListenerInfo> SecureChannelManager::CreateListener(
    const std::string& address, const std::string& identity_name,
    std::shared_ptr<const TrustPolicy> policy) {
  RETURN_IF_ERROR(core::ValidateLocalName(address));
  if (absl::StartsWith(address, "_")) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           "addresses starting with '_' are reserved for the sidecar",
                           reason::kInvalidAddress);
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
  spdlog::info("secure channel listener at {} for identity {} ({}), trusting {}", address,
               identity_name, listener->info.identifier, listener->info.trust_policy);
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
                             "LISTENER_NOT_FOUND");
    }
    listener = std::move(it->second);
    listeners_.erase(it);
  }
  router_.StopWorker(address, listener->worker.get());
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<SecureChannel>> SecureChannelManager::NewChannel(
    bool initiator, const std::string& identity_name, std::shared_ptr<const TrustPolicy> policy,
    const std::string& listener) {
  ASSIGN_OR_RETURN(identity::IdentityLease lease, identities_.Acquire(identity_name));
  auto channel = std::make_shared<SecureChannel>(*this, router_.NewStrand(), initiator,
                                                 std::move(lease), std::move(policy), listener);
  uint64_t id;
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) return ShuttingDown();
    if (channels_.size() >= options_.max_channels) {
      return ErrorWithReason(absl::StatusCode::kResourceExhausted,
                             absl::StrCat("this node already has ", channels_.size(),
                                          " secure channels, its limit"),
                             "TOO_MANY_CHANNELS");
    }
    id = next_id_++;
  }
  RETURN_IF_ERROR(channel->Register(id));
  veil::MutexLock lock(&mu_);
  channels_[channel->address()] = channel;
  return channel;
}

void SecureChannelManager::CreateChannel(const core::Route& route, const std::string& identity_name,
                                         std::shared_ptr<const TrustPolicy> policy,
                                         std::chrono::milliseconds timeout, CreateCallback done) {
  auto channel = NewChannel(true, identity_name, std::move(policy), "");
  if (!channel.ok()) {
    done(channel.status());
    return;
  }
  (*channel)->StartInitiator(route, timeout, std::move(done));
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
  size_t pending = 0;
  {
    veil::MutexLock lock(&mu_);
    auto it = listeners_.find(listener_address);
    if (it == listeners_.end()) return;
    listener = it->second;
    pending = pending_[listener_address];
    if (pending < options_.max_pending_handshakes_per_listener) ++pending_[listener_address];
  }
  if (pending >= options_.max_pending_handshakes_per_listener) {
    spdlog::warn("secure channel listener {}: {} handshakes pending, refusing another",
                 listener_address, pending);
    core::Message refusal;
    refusal.onward = msg.return_route;
    refusal.payload = ChannelSession::HandshakeError("the listener is busy; try again later");
    if (!refusal.onward.empty()) router_.Send(std::move(refusal));
    return;
  }
  auto channel = NewChannel(false, listener->info.identity, listener->policy, listener_address);
  if (!channel.ok()) {
    HandshakeSettled(listener_address);
    spdlog::warn("secure channel listener {}: cannot accept: {}", listener_address,
                 channel.status().message());
    return;
  }
  (*channel)->StartResponder(options_.responder_timeout);
  std::shared_ptr<SecureChannel> ch = *channel;
  asio::post(ch->strand(), [ch, msg = std::move(msg)]() mutable {
    ch->OnChannelMessage(std::move(msg));
  });
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
  channel->Close(ErrorWithReason(absl::StatusCode::kCancelled, "deleted through the API",
                                 "CHANNEL_DELETED"),
                 /*notify_peer=*/true);
  return absl::OkStatus();
}

void SecureChannelManager::HandshakeSettled(const std::string& listener) {
  veil::MutexLock lock(&mu_);
  auto it = pending_.find(listener);
  if (it != pending_.end() && --it->second == 0) pending_.erase(it);
}

void SecureChannelManager::Forget(const std::string& address, const SecureChannel* channel) {
  veil::MutexLock lock(&mu_);
  auto it = channels_.find(address);
  if (it != channels_.end() && it->second.get() == channel) channels_.erase(it);
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

}  // namespace veil::channel
