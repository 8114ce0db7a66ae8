#include "sidecar/relay/hub_mesh.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/relay/relay_registry.h"
#include "spdlog/spdlog.h"

namespace veil::relay {
namespace {

using Origin = core::SenderInfo::Origin;

// The hub-to-hub listener's policy: the live replicas of the directory, nobody else.
class MeshTrust final : public channel::TrustPolicy {
 public:
  explicit MeshTrust(const RelayDirectory& directory) : directory_(directory) {}
  absl::Status CheckPeer(const channel::PeerView& peer) const override {
    if (directory_.IsHub(peer.identifier)) return absl::OkStatus();
    return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                           absl::StrCat("identity ", peer.identifier,
                                        " is not a hub replica of this directory: the hub mesh "
                                        "admits only those"),
                           reason::kUntrustedIdentity);
  }
  std::string Describe() const override { return "the hub replicas of the directory"; }
  std::string Key() const override {
    return absl::StrCat("hub-mesh:", directory_.options().prefix);
  }

 private:
  const RelayDirectory& directory_;
};

absl::Status NotAdmitted(absl::string_view what) {
  return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                         absl::StrCat("the hub mesh refuses ", what), reason::kAccessDenied);
}

}  // namespace

// Settles the original receipt; when the message failed, also tells its original sender with a
// notice along the return route it had here (what the router would have done had the message
// kept its provenance).
class HubMesh::OnFailure final : public core::SendTracker {
 public:
  OnFailure(std::weak_ptr<HubMesh> mesh, core::Receipt original, core::Route back,
            uint64_t path_tag, std::string replica, std::string channel)
      : mesh_(std::move(mesh)),
        original_(std::move(original)),
        back_(std::move(back)),
        path_tag_(path_tag),
        replica_(std::move(replica)),
        channel_(std::move(channel)) {}
  void Complete(uint32_t, absl::Status status) override {
    if (!status.ok()) {
      if (auto mesh = mesh_.lock()) {
        if (!channel_.empty()) mesh->LinkFailed(replica_, channel_);
        if (!back_.empty()) {
          core::Message notice;
          notice.onward = std::move(back_);
          notice.refusal = status;
          notice.path_tag = path_tag_;
          mesh->router_.Send(std::move(notice));
        }
      }
    }
    original_.Settle(std::move(status));
  }

 private:
  const std::weak_ptr<HubMesh> mesh_;
  core::Receipt original_;
  core::Route back_;
  const uint64_t path_tag_;
  const std::string replica_, channel_;
};

// The stand-in for forward_to_* names no local relay has: anyone may send to a relay.
class HubMesh::Entry final : public core::Worker {
 public:
  Entry(core::Strand strand, std::shared_ptr<HubMesh> mesh)
      : Worker(std::move(strand)), mesh_(std::move(mesh)) {}
  absl::Status Admit(const core::SenderInfo&) const override { return absl::OkStatus(); }
  bool TakesRefusals() const override { return true; }
  bool HandlesOnAnyThread() const override { return true; }
  void HandleMessage(core::Message msg) override {
    if (std::shared_ptr<HubMesh> mesh = mesh_.lock()) {
      mesh->Forward(std::move(msg));
    } else {
      msg.receipt.Settle(ErrorWithReason(absl::StatusCode::kUnavailable, "the hub is stopping",
                                         reason::kNodeShuttingDown));
    }
  }

 private:
  const std::weak_ptr<HubMesh> mesh_;  // the mesh owns the workers' lifetimes, not they its
};

// /service/mesh: what comes out of mesh channels, and local relays' answers to them.
class HubMesh::Exit final : public core::Worker {
 public:
  Exit(core::Strand strand, std::shared_ptr<HubMesh> mesh)
      : Worker(std::move(strand)), mesh_(std::move(mesh)) {}
  absl::Status Admit(const core::SenderInfo& from) const override {
    if (from.origin == Origin::kSecureChannel || from.origin == Origin::kLocal) {
      return absl::OkStatus();  // which channel, and what for: judged per message
    }
    if (from.origin == Origin::kTransport && from.relayed) return absl::OkStatus();
    return NotAdmitted(absl::StrCat("messages from ", core::OriginName(from.origin)));
  }
  bool TakesRefusals() const override { return true; }
  bool HandlesOnAnyThread() const override { return true; }
  void HandleMessage(core::Message msg) override {
    std::shared_ptr<HubMesh> mesh = mesh_.lock();
    if (mesh == nullptr) {
      msg.receipt.Settle(ErrorWithReason(absl::StatusCode::kUnavailable, "the hub is stopping",
                                         reason::kNodeShuttingDown));
      return;
    }
    if (msg.sender.origin == Origin::kSecureChannel) {
      mesh->FromPeer(std::move(msg));
    } else {
      mesh->FromRelay(std::move(msg));
    }
  }

 private:
  const std::weak_ptr<HubMesh> mesh_;
};

std::string DefaultHubRoute(absl::string_view tcp_bound) {
  if (tcp_bound.empty()) return "";
  auto host_port = core::ParseHostPort(tcp_bound);
  if (!host_port.ok()) return "";
  const std::string& host = host_port->host;
  if (host.empty() || host == "0.0.0.0" || host == "::") return "";
  return absl::StrCat("/tcp/", tcp_bound);
}

HubMesh::HubMesh(core::Router& router, channel::SecureChannelManager& channels,
                 transport::NodeTransport& transport, RelayDirectory& directory,
                 std::string identity_name, MeshOptions options)
    : router_(router),
      channels_(channels),
      transport_(transport),
      directory_(directory),
      identity_name_(std::move(identity_name)),
      options_(options) {}

HubMesh::~HubMesh() = default;

absl::Status HubMesh::Start() {
  auto listener = channels_.CreateListener(kMeshListenerAddress, identity_name_,
                                           std::make_shared<MeshTrust>(directory_));
  if (!listener.ok()) return listener.status();
  auto exit = std::make_shared<Exit>(router_.NewStrand(), shared_from_this());
  if (absl::Status started = router_.StartWorker(kMeshAddress, exit); !started.ok()) {
    return started;
  }
  exit_id_ = exit->id();
  router_.StandIn(kForwarderPrefix,
                  std::make_shared<Entry>(router_.NewStrand(), shared_from_this()));
  transport_.AddCloseObserver([weak = weak_from_this()](const std::string& connection, uint64_t) {
    if (auto mesh = weak.lock()) mesh->ConnectionClosed(connection);
  });
  spdlog::info(
      "hub mesh: listener at /service/{} for the replicas of the directory, worker at "
      "/service/{}",
      kMeshListenerAddress, kMeshAddress);
  return absl::OkStatus();
}

void HubMesh::Refuse(core::Message msg, absl::Status why) {
  refused_.fetch_add(1, std::memory_order_relaxed);
  router_.Refuse(std::move(msg), std::move(why));
}

void HubMesh::NoticeOnFailure(core::Message& msg, bool router_notifies, std::string replica,
                              std::string channel) {
  const bool from_afar = (msg.paced && msg.sender.origin == Origin::kTransport) ||
                         msg.sender.origin == Origin::kSecureChannel;
  const bool notify =
      from_afar && !router_notifies && msg.refusal.ok() && !msg.return_route.empty();
  if (!notify && channel.empty()) return;
  msg.receipt = core::Receipt(
      std::make_shared<OnFailure>(weak_from_this(), std::move(msg.receipt),
                                  notify ? msg.return_route : core::Route(), msg.path_tag,
                                  std::move(replica), std::move(channel)),
      0);
}

void HubMesh::Forward(core::Message msg) {
  const core::Address& hop = msg.onward.front();
  const std::string name = hop.value().substr(sizeof(kForwarderPrefix) - 1);
  // Never a second hop: what the mesh handed on does not come back to it.
  if (msg.sender.origin == Origin::kTransport && msg.sender.via == exit_id_) {
    absl::Status why = router_.NoWorker(hop.value(), hop);
    return Refuse(std::move(msg), std::move(why));
  }
  std::optional<DirectoryRelay> where = directory_.Lookup(name);
  if (!where.has_value() || where->replica == directory_.options().replica) {
    absl::Status why = router_.NoWorker(hop.value(), hop);
    return Refuse(std::move(msg), std::move(why));
  }
  std::optional<DirectoryHub> peer = directory_.Hub(where->replica);
  if (!peer.has_value() || peer->route.empty()) {
    return Refuse(
        std::move(msg),
        ErrorWithReason(
            absl::StatusCode::kUnavailable,
            absl::StrCat("relay ", QuoteInput(name), " is on hub replica ", where->replica,
                         peer.has_value() ? ", which gave no --hub-route to reach it by"
                                          : ", which is not live in the directory"),
            reason::kMeshUnavailable));
  }
  enum class Then { kSend, kWait, kOpen, kFull } then;
  std::string channel;
  {
    veil::MutexLock lock(&mu_);
    Link& link = links_[where->replica];
    if (link.identifier != peer->identifier || link.route != peer->route) {
      // A new replica under that name (restarted with another identity, or moved): start over.
      for (core::Message& waiting : link.waiting) {
        waiting.receipt.Settle(ErrorWithReason(
            absl::StatusCode::kUnavailable, "the hub replica changed", reason::kMeshUnavailable));
      }
      link = Link();
      link.identifier = peer->identifier;
      link.route = peer->route;
    }
    if (!msg.return_route.empty() && msg.return_route.front().is_local()) {
      link.senders.insert(msg.return_route.front().value());
    }
    if (!link.channel.empty()) {
      channel = link.channel;
      then = Then::kSend;
    } else if (link.waiting.size() >= options_.max_waiting ||
               link.waiting_bytes + msg.payload.size() > options_.max_waiting_bytes) {
      then = Then::kFull;
    } else {
      link.waiting_bytes += msg.payload.size();
      link.waiting.push_back(std::move(msg));
      then = link.opening ? Then::kWait : Then::kOpen;
      link.opening = true;
    }
  }
  switch (then) {
    case Then::kSend:
      NoticeOnFailure(msg, /*router_notifies=*/false, where->replica, channel);
      SendOnLink(std::move(msg), channel);
      return;
    case Then::kFull:
      return Refuse(std::move(msg),
                    ErrorWithReason(absl::StatusCode::kResourceExhausted,
                                    absl::StrCat("the link to hub replica ", where->replica,
                                                 " is opening and holds as much as it may"),
                                    reason::kQueueFull));
    case Then::kWait:
      return;
    case Then::kOpen:
      break;
  }
  auto route = core::Route::Parse(absl::StrCat(peer->route, "/service/", kMeshListenerAddress));
  auto trust = channel::TrustIdentifiers({peer->identifier});
  if (!route.ok() || !trust.ok()) {
    LinkOpened(where->replica, peer->identifier, !route.ok() ? route.status() : trust.status());
    return;
  }
  channels_.CreateChannel(
      *route, identity_name_, std::shared_ptr<const channel::TrustPolicy>(*std::move(trust)),
      options_.handshake_timeout,
      [weak = weak_from_this(), replica = where->replica,
       identifier = peer->identifier](absl::StatusOr<channel::ChannelInfo> info) {
        if (auto mesh = weak.lock()) mesh->LinkOpened(replica, identifier, std::move(info));
      });
}

void HubMesh::SendOnLink(core::Message msg, const std::string& channel) {
  msg.onward.PushFront(core::Address::Local(kMeshAddress));
  msg.onward.PushFront(core::Address::Local(channel));
  msg.return_route.PushFront(core::Address::Local(kMeshAddress));
  msg.sender = core::SenderInfo();  // this hub vouches for it to its channel
  forwarded_.fetch_add(1, std::memory_order_relaxed);
  router_.Send(std::move(msg));
}

void HubMesh::LinkOpened(const std::string& replica, const std::string& identifier,
                         absl::StatusOr<channel::ChannelInfo> info) {
  std::vector<core::Message> waiting;
  std::string channel;
  {
    veil::MutexLock lock(&mu_);
    auto it = links_.find(replica);
    if (it == links_.end() || it->second.identifier != identifier) {
      if (info.ok()) (void)channels_.DeleteChannel(info->address);  // a link nobody waits for
      return;
    }
    Link& link = it->second;
    link.opening = false;
    waiting = std::move(link.waiting);
    link.waiting.clear();
    link.waiting_bytes = 0;
    if (info.ok()) {
      link.channel = info->address;
      channel = link.channel;
    }
  }
  if (!info.ok()) {
    Log(spdlog::level::warn, {{log_field::kReason, ReasonOf(info.status())}},
        "hub mesh: no link to replica {}: {}", replica, info.status().message());
    absl::Status why = ErrorWithReason(
        absl::StatusCode::kUnavailable,
        absl::StrCat("cannot reach hub replica ", replica, ": ", info.status().message()),
        reason::kMeshUnavailable);
    for (core::Message& msg : waiting) Refuse(std::move(msg), why);
    return;
  }
  spdlog::info("hub mesh: linked to replica {} ({}) over {}", replica, identifier, channel);
  for (core::Message& msg : waiting) {
    NoticeOnFailure(msg, /*router_notifies=*/false, replica, channel);
    SendOnLink(std::move(msg), channel);
  }
}

void HubMesh::LinkFailed(const std::string& replica, const std::string& channel) {
  veil::MutexLock lock(&mu_);
  auto it = links_.find(replica);
  if (it != links_.end() && it->second.channel == channel) links_.erase(it);
}

void HubMesh::FromPeer(core::Message msg) {
  if (!directory_.IsHub(msg.sender.identifier)) {
    return Refuse(std::move(msg), NotAdmitted(absl::StrCat("identity ", msg.sender.identifier,
                                                           ": not a hub replica of this "
                                                           "directory")));
  }
  if (msg.onward.empty() || !msg.onward.front().is_local()) {
    return Refuse(std::move(msg), NotAdmitted("a route that does not name a relay or connection"));
  }
  const core::Address& next = msg.onward.front();
  if (absl::StartsWith(next.value(), kForwarderPrefix)) {
    // A peer's entry hands this replica a message for one of its relays: only a local one.
    if (router_.Find(next.value()) == nullptr) {
      absl::Status why = router_.NoWorker(next.value(), next);
      return Refuse(std::move(msg), std::move(why));
    }
    if (!msg.return_route.empty() && msg.return_route.front().is_local()) {
      Remember(msg.return_route.front().value());
    }
    msg.return_route.PushFront(core::Address::Local(kMeshAddress));
    // Handed on as read from the network (the relay admits that): the router tells the sender
    // of a refusal when the message is paced, this hop otherwise.
    NoticeOnFailure(msg, /*router_notifies=*/msg.paced);
    msg.sender = core::SenderInfo();
    msg.sender.origin = Origin::kTransport;
    msg.sender.via = exit_id_;
    delivered_.fetch_add(1, std::memory_order_relaxed);
    router_.Send(std::move(msg));
    return;
  }
  // An answer (or notice) for a connection that sent through this very link.
  bool known = false;
  {
    veil::MutexLock lock(&mu_);
    for (const auto& [replica, link] : links_) {
      if (link.channel == msg.sender.channel) {
        known = link.senders.contains(next.value());
        break;
      }
    }
  }
  if (!known) {
    return Refuse(std::move(msg), NotAdmitted("an answer for someone who did not send through "
                                              "that link"));
  }
  // The channel put itself first on the return route: answers go back the way they came.
  if (!msg.return_route.empty()) msg.return_route.PopFront();
  NoticeOnFailure(msg, /*router_notifies=*/msg.paced);
  msg.sender = core::SenderInfo();
  msg.sender.origin = Origin::kTransport;
  msg.sender.via = exit_id_;
  msg.sender.relayed = true;
  answered_.fetch_add(1, std::memory_order_relaxed);
  router_.Send(std::move(msg));
}

void HubMesh::Remember(const std::string& channel) {
  std::vector<std::string> known;
  {
    veil::MutexLock lock(&mu_);
    if (!inbound_.insert(channel).second || inbound_.size() <= kPruneInboundAt) return;
    known.assign(inbound_.begin(), inbound_.end());
  }
  // Now and then, forget the channels that closed (a peer replica reconnected, or died).
  std::vector<std::string> gone;
  for (const std::string& c : known) {
    auto info = channels_.GetChannel(c);
    if (!info.ok() || info->state == channel::ChannelInfo::State::kClosed) gone.push_back(c);
  }
  veil::MutexLock lock(&mu_);
  for (const std::string& c : gone) inbound_.erase(c);
}

void HubMesh::FromRelay(core::Message msg) {
  // A local relay's answer (kTransport, relayed), or a notice this node made (kLocal) about
  // something a mesh channel delivered: back into that channel only.
  if (msg.sender.origin == Origin::kLocal && msg.refusal.ok()) {
    return Refuse(std::move(msg), NotAdmitted("local messages other than refusal notices"));
  }
  bool known = false;
  if (!msg.onward.empty() && msg.onward.front().is_local()) {
    veil::MutexLock lock(&mu_);
    known = inbound_.contains(msg.onward.front().value());
  }
  if (!known) {
    return Refuse(std::move(msg), NotAdmitted("an answer for a channel that delivered nothing"));
  }
  NoticeOnFailure(msg, /*router_notifies=*/false);
  msg.sender = core::SenderInfo();
  answered_.fetch_add(1, std::memory_order_relaxed);
  router_.Send(std::move(msg));
}

void HubMesh::ConnectionClosed(const std::string& connection) {
  veil::MutexLock lock(&mu_);
  for (auto& [replica, link] : links_) link.senders.erase(connection);
}

MeshStats HubMesh::Stats() const {
  MeshStats stats;
  stats.forwarded = forwarded_.load(std::memory_order_relaxed);
  stats.delivered = delivered_.load(std::memory_order_relaxed);
  stats.answered = answered_.load(std::memory_order_relaxed);
  stats.refused = refused_.load(std::memory_order_relaxed);
  veil::MutexLock lock(&mu_);
  stats.links = links_.size();
  return stats;
}

}  // namespace veil::relay
