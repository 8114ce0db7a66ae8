#include "sidecar/portal/portal_manager.h"

#include <algorithm>
#include <atomic>
#include <deque>

#include "absl/strings/str_cat.h"
#include "boost/asio/bind_executor.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/post.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/common/log_limiter.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/core/tcp_listen.h"
#include "spdlog/spdlog.h"

namespace veil::portal {

absl::StatusOr<core::HostPort> ParseOutletTarget(absl::string_view target) {
  auto hp = core::ParseHostPort(target);
  if (!hp.ok()) {
    return ErrorWithReason(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("target: ", QuoteInput(target), " is not host:port: ", hp.status().message()),
        reason::kInvalidTarget);
  }
  return hp;
}

absl::StatusOr<boost::asio::ip::tcp::endpoint> ParseInletAddress(absl::string_view listen,
                                                                 bool allow_public) {
  auto hp = core::ParseHostPort(listen, /*allow_port_zero=*/true);
  if (!hp.ok()) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           absl::StrCat("listen_address: ", QuoteInput(listen),
                                        " is not host:port: ", hp.status().message()),
                           reason::kInvalidAddress);
  }
  if (!allow_public && !core::IsLoopbackHost(hp->host)) {
    return ErrorWithReason(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat(listen,
                     " is not loopback: anyone who reaches it reaches the outlet as this "
                     "sidecar's identity (allow it explicitly: --public / allow_public)"),
        reason::kPublicBindRefused);
  }
  boost::system::error_code ec;
  boost::asio::ip::address ip = hp->host == "localhost"
                                    ? boost::asio::ip::make_address("127.0.0.1")
                                    : boost::asio::ip::make_address(hp->host, ec);
  if (ec) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           absl::StrCat("the inlet's host ", QuoteInput(hp->host),
                                        " is not an IP address or localhost"),
                           reason::kInvalidAddress);
  }
  return boost::asio::ip::tcp::endpoint(ip, hp->port);
}

CounterValues Snapshot(const PortalCounters& c) {
  CounterValues v;
  v.active = c.active.load(std::memory_order_relaxed);
  v.total = c.total.load(std::memory_order_relaxed);
  v.reset = c.reset.load(std::memory_order_relaxed);
  v.refused = c.refused.load(std::memory_order_relaxed);
  v.bytes_in = c.bytes_in.load(std::memory_order_relaxed);
  v.bytes_out = c.bytes_out.load(std::memory_order_relaxed);
  return v;
}

namespace {

absl::Status NotFound(absl::string_view what) {
  return ErrorWithReason(absl::StatusCode::kNotFound, what, reason::kPortalNotFound);
}

// Tells the session that sent `open` (its return route) that it is refused, without a session.
void RefuseOpen(core::Router& router, const core::Message& open, absl::string_view reason_code,
                absl::string_view message) {
  if (open.return_route.empty()) return;
  core::Message m;
  m.onward = open.return_route;
  m.payload = ResetFramePayload(reason_code, message);
  router.Send(std::move(m));
}

LogLimiter& RefusedLog() {
  static LogLimiter limiter;
  return limiter;
}

}  // namespace

// The sessions of one inlet or outlet, to reset them all when it goes. Any thread.
class SessionSet {
 public:
  void Add(const std::shared_ptr<PortalSession>& session) {
    veil::MutexLock lock(&mu_);
    sessions_.emplace(session.get(), session);
  }
  void Remove(const PortalSession* session) {
    veil::MutexLock lock(&mu_);
    sessions_.erase(session);
  }
  void ResetAll(absl::string_view why) {
    std::vector<std::shared_ptr<PortalSession>> sessions;
    {
      veil::MutexLock lock(&mu_);
      for (auto& [raw, weak] : sessions_) {
        if (auto s = weak.lock()) sessions.push_back(std::move(s));
      }
    }
    for (auto& s : sessions) {
      s->Reset(ErrorWithReason(absl::StatusCode::kUnavailable, why, reason::kPortalReset));
    }
  }

 private:
  veil::Mutex mu_;
  absl::flat_hash_map<const PortalSession*, std::weak_ptr<PortalSession>> sessions_
      ABSL_GUARDED_BY(mu_);
};

bool PortalManager::StartSession(const std::shared_ptr<PortalSession>& session,
                                 absl::string_view prefix, std::shared_ptr<SessionSet> owner) {
  session->OnEnded([this, owner, raw = session.get()](bool) {
    Untrack(raw);
    owner->Remove(raw);
  });
  owner->Add(session);
  Track(session);
  if (router_.StartWorkerWithPrefix(prefix, session).empty()) {  // shutting down
    Untrack(session.get());
    owner->Remove(session.get());
    return false;
  }
  return true;
}

// The outlet's worker: takes Opens out of secure channels.
class Outlet final : public core::Worker, public std::enable_shared_from_this<Outlet> {
 public:
  Outlet(core::Strand strand, PortalManager& manager, std::string name, core::HostPort target,
         std::shared_ptr<const channel::TrustPolicy> policy, uint32_t idle_timeout_ms)
      : Worker(std::move(strand)),
        manager_(manager),
        name_(std::move(name)),
        target_(std::move(target)),
        policy_(std::move(policy)),
        idle_timeout_ms_(idle_timeout_ms),
        counters_(std::make_shared<PortalCounters>()) {}

  // Only what comes out of a secure channel: the peer's identity is then authenticated (its
  // policy is judged per Open, on the strand: a policy may read a file).
  absl::Status Admit(const core::SenderInfo& from) const override {
    if (from.origin == core::SenderInfo::Origin::kSecureChannel) return absl::OkStatus();
    return ErrorWithReason(
        absl::StatusCode::kPermissionDenied,
        absl::StrCat("the outlet ", name_, " takes sessions only through a secure channel"),
        reason::kSecureChannelRequired);
  }

  void HandleMessage(core::Message msg) override {
    msg.receipt.Settle(absl::OkStatus());
    if (stopped_) return;
    wire::v1::PortalFrame frame;
    if (!frame.ParseFromString(msg.payload) || !frame.has_open()) {
      return;  // e.g. the Reset of an inlet session whose Open timed out: nothing to do
    }
    if (absl::Status trusted =
            policy_->CheckPeer({msg.sender.identifier, msg.sender.attributes.get()});
        !trusted.ok()) {
      if (ReasonOf(trusted) == reason::kCredentialRequired) {
        Refuse(msg, reason::kCredentialRequired,
               "a credential from a trusted authority is required");
      } else {
        Refuse(msg, reason::kUntrustedIdentity, "identity not trusted");
      }
      return;
    }
    if (counters_->active.load(std::memory_order_relaxed) >= manager_.limits().max_sessions) {
      Refuse(
          msg, reason::kTooManySessions,
          absl::StrCat("the outlet has ", manager_.limits().max_sessions, " sessions, its limit"));
      return;
    }
    const uint32_t window = std::min<uint32_t>(frame.open().window(), 64u << 20);
    if (window == 0 || msg.return_route.empty()) {
      Refuse(msg, reason::kPortalProtocolError, "an Open without a window or a way back");
      return;
    }
    SessionOptions options = manager_.limits().session;
    options.idle_timeout = std::chrono::milliseconds(idle_timeout_ms_);
    auto session = std::make_shared<PortalSession>(
        manager_.router().NewStrand(), PortalSession::Role::kOutlet, name_,
        boost::asio::ip::tcp::socket(manager_.io()), msg.sender.via, options, counters_);
    if (!manager_.StartSession(session, "_po_", sessions_)) return;
    boost::asio::post(session->strand(), [session, peer = msg.return_route, window,
                                          host = target_.host, port = target_.port]() mutable {
      session->StartOutlet(std::move(peer), window, std::move(host), port);
    });
  }

  void OnStop() override {
    stopped_ = true;
    sessions_->ResetAll("the outlet was deleted");
  }

  OutletInfo Info() const {
    OutletInfo info;
    info.name = name_;
    info.target = core::FormatHostPort(target_.host, target_.port);
    info.trust_policy = policy_->Describe();
    info.idle_timeout_ms = idle_timeout_ms_;
    info.counters = Snapshot(*counters_);
    return info;
  }
  bool Same(const core::HostPort& target, const channel::TrustPolicy& policy) const {
    return target.host == target_.host && target.port == target_.port &&
           policy.Key() == policy_->Key();
  }
  const std::shared_ptr<PortalCounters>& counters() const { return counters_; }

 private:
  void Refuse(const core::Message& open, absl::string_view reason_code, absl::string_view message) {
    counters_->refused.fetch_add(1, std::memory_order_relaxed);
    if (uint64_t suppressed = 0; RefusedLog().ShouldLog(&suppressed)) {
      Log(spdlog::level::warn,
          {{log_field::kPortal, name_},
           {log_field::kIdentifier, open.sender.identifier},
           {log_field::kReason, reason_code}},
          "outlet {}: refused a session from {}: {}{}", name_, open.sender.identifier, message,
          suppressed > 0 ? absl::StrCat(" (and ", suppressed, " more not logged)") : "");
    }
    RefuseOpen(manager_.router(), open, reason_code, message);
  }

  PortalManager& manager_;
  const std::string name_;
  const core::HostPort target_;
  const std::shared_ptr<const channel::TrustPolicy> policy_;
  const uint32_t idle_timeout_ms_;
  std::shared_ptr<PortalCounters> counters_;
  bool stopped_ = false;  // on the strand
  std::shared_ptr<SessionSet> sessions_ = std::make_shared<SessionSet>();
};

// An inlet: a TCP acceptor and the channel its sessions share.
class Inlet final : public std::enable_shared_from_this<Inlet> {
 public:
  Inlet(PortalManager& manager, boost::asio::ip::tcp::acceptor acceptor, std::string listen,
        core::Route route, std::string outlet, std::string identity,
        std::shared_ptr<const channel::TrustPolicy> policy, uint32_t idle_timeout_ms)
      : manager_(manager),
        strand_(manager.router().NewStrand()),
        acceptor_(std::move(acceptor)),
        listen_(std::move(listen)),
        route_(std::move(route)),
        outlet_(std::move(outlet)),
        identity_(std::move(identity)),
        policy_(std::move(policy)),
        idle_timeout_ms_(idle_timeout_ms),
        counters_(std::make_shared<PortalCounters>()) {}

  void Start() {
    boost::asio::post(strand_, [self = shared_from_this()] { self->Accept(); });
  }

  void Stop() {
    boost::asio::post(strand_, [self = shared_from_this()] {
      self->stopped_ = true;
      boost::system::error_code ignored;
      self->acceptor_.close(ignored);
      for (auto& socket : self->pending_) self->ResetSocket(socket);
      self->pending_.clear();
      std::string channel;
      {
        veil::MutexLock lock(&self->mu_);
        channel.swap(self->channel_address_);
      }
      // The channel was the inlet's own: it goes with it (the far end is told).
      if (!channel.empty()) (void)self->manager_.channels().DeleteChannel(channel);
    });
    sessions_->ResetAll("the inlet was deleted");
  }

  // The channel with encryptor id `via` closed: the next connection opens a new one. (Called
  // for every carrier that closes on this node: most are not this inlet's channel.)
  void OnChannelClosed(uint64_t via) {
    if (channel_via_.load(std::memory_order_relaxed) != via) return;
    boost::asio::post(strand_, [self = shared_from_this(), via] {
      if (self->channel_via_.load(std::memory_order_relaxed) == via) {
        self->channel_via_.store(0, std::memory_order_relaxed);
        veil::MutexLock lock(&self->mu_);
        self->channel_address_.clear();
      }
    });
  }

  InletInfo Info() const {
    InletInfo info;
    info.listen_address = listen_;
    info.route = route_.ToString();
    info.outlet = outlet_;
    info.identity = identity_;
    info.trust_policy = policy_->Describe();
    info.idle_timeout_ms = idle_timeout_ms_;
    {
      veil::MutexLock lock(&mu_);
      info.channel = channel_address_;
    }
    info.counters = Snapshot(*counters_);
    return info;
  }
  bool Same(const core::Route& route, const std::string& outlet) const {
    return route == route_ && outlet == outlet_;
  }
  const std::shared_ptr<PortalCounters>& counters() const { return counters_; }

 private:
  void Accept() {
    if (stopped_) return;
    acceptor_.async_accept(
        manager_.io(),
        boost::asio::bind_executor(
            strand_, [self = shared_from_this()](const boost::system::error_code& ec,
                                                 boost::asio::ip::tcp::socket socket) {
              if (self->stopped_ || ec == boost::asio::error::operation_aborted) return;
              if (!ec) self->OnAccepted(std::move(socket));
              self->Accept();
            }));
  }

  void OnAccepted(boost::asio::ip::tcp::socket socket) {
    if (counters_->active.load(std::memory_order_relaxed) + pending_.size() >=
        manager_.limits().max_sessions) {
      counters_->refused.fetch_add(1, std::memory_order_relaxed);
      ResetSocket(socket);
      return;
    }
    if (channel_via_.load(std::memory_order_relaxed) != 0) {
      StartSession(std::move(socket));
      return;
    }
    pending_.push_back(std::move(socket));
    if (!opening_) OpenChannel();
  }

  void OpenChannel() {
    opening_ = true;
    manager_.channels().CreateChannel(
        route_, identity_, policy_, manager_.limits().session.open_timeout,
        [self = shared_from_this()](absl::StatusOr<channel::ChannelInfo> info) {
          boost::asio::post(self->strand_, [self, info = std::move(info)]() mutable {
            self->OnChannel(std::move(info));
          });
        });
  }

  void OnChannel(absl::StatusOr<channel::ChannelInfo> info) {
    opening_ = false;
    if (stopped_) return;
    if (!info.ok()) {
      const std::string reason = ReasonOf(info.status());
      if (uint64_t suppressed = 0; RefusedLog().ShouldLog(&suppressed)) {
        Log(spdlog::level::warn,
            {{log_field::kPortal, listen_},
             {log_field::kRoute, route_.ToString()},
             {log_field::kReason, reason}},
            "inlet {}: cannot open a secure channel to {}: {}; resetting {} connection(s){}",
            listen_, route_.ToString(), info.status().message(), pending_.size(),
            suppressed > 0 ? absl::StrCat(" (and ", suppressed, " more not logged)") : "");
      }
      counters_->refused.fetch_add(pending_.size(), std::memory_order_relaxed);
      for (auto& socket : pending_) ResetSocket(socket);
      pending_.clear();
      return;
    }
    channel_via_.store(info->encryptor_id, std::memory_order_relaxed);
    {
      veil::MutexLock lock(&mu_);
      channel_address_ = info->address;
    }
    Log(spdlog::level::info,
        {{log_field::kPortal, listen_},
         {log_field::kChannel, info->address},
         {log_field::kIdentifier, info->remote_identifier}},
        "inlet {}: sessions to outlet {} run in secure channel {} with {}", listen_, outlet_,
        info->address, info->remote_identifier);
    std::deque<boost::asio::ip::tcp::socket> waiting = std::move(pending_);
    pending_.clear();
    for (auto& socket : waiting) StartSession(std::move(socket));
  }

  void StartSession(boost::asio::ip::tcp::socket socket) {
    SessionOptions options = manager_.limits().session;
    options.idle_timeout = std::chrono::milliseconds(idle_timeout_ms_);
    auto session = std::make_shared<PortalSession>(
        manager_.router().NewStrand(), PortalSession::Role::kInlet, listen_, std::move(socket),
        channel_via_.load(std::memory_order_relaxed), options, counters_);
    if (!manager_.StartSession(session, "_pi_", sessions_)) return;
    core::Route outlet_route;
    {
      veil::MutexLock lock(&mu_);
      outlet_route.Append(core::Address::Local(channel_address_));
    }
    outlet_route.Append(core::Address::Local(outlet_));
    boost::asio::post(session->strand(),
                      [session, outlet_route = std::move(outlet_route)]() mutable {
                        session->StartInlet(std::move(outlet_route));
                      });
  }

  static void ResetSocket(boost::asio::ip::tcp::socket& socket) {
    boost::system::error_code ignored;
    socket.set_option(boost::asio::socket_base::linger(true, 0), ignored);
    socket.close(ignored);
  }

  PortalManager& manager_;
  core::Strand strand_;
  boost::asio::ip::tcp::acceptor acceptor_;
  const std::string listen_;
  const core::Route route_;
  const std::string outlet_;
  const std::string identity_;
  const std::shared_ptr<const channel::TrustPolicy> policy_;
  const uint32_t idle_timeout_ms_;
  std::shared_ptr<PortalCounters> counters_;
  std::shared_ptr<SessionSet> sessions_ = std::make_shared<SessionSet>();
  // Written on the strand; read anywhere (OnChannelClosed skips what is not its channel).
  std::atomic<uint64_t> channel_via_{0};
  // On the strand:
  bool stopped_ = false;
  bool opening_ = false;
  std::deque<boost::asio::ip::tcp::socket> pending_;
  mutable veil::Mutex mu_;
  std::string channel_address_ ABSL_GUARDED_BY(mu_);
};

PortalManager::PortalManager(core::Router& router, channel::SecureChannelManager& channels,
                             boost::asio::io_context& io, PortalLimits limits)
    : router_(router), channels_(channels), io_(io), limits_(limits) {
  channels_.AddCarrierObserver(
      [this](uint64_t carrier, absl::string_view why) { OnChannelClosed(carrier, why); });
}

PortalManager::~PortalManager() { Shutdown(); }

absl::StatusOr<OutletInfo> PortalManager::CreateOutlet(
    const std::string& name, const std::string& target,
    std::shared_ptr<const channel::TrustPolicy> policy, uint32_t idle_timeout_ms, bool exist_ok) {
  RETURN_IF_ERROR(core::ValidateAppAddress(name));
  auto hp = ParseOutletTarget(target);
  if (!hp.ok()) return hp.status();
  veil::MutexLock lock(&mu_);
  if (shut_down_) {
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition, "the node is shutting down",
                           reason::kNodeShuttingDown);
  }
  if (auto it = outlets_.find(name); it != outlets_.end()) {
    if (exist_ok && it->second->Same(*hp, *policy)) return it->second->Info();
    return ErrorWithReason(absl::StatusCode::kAlreadyExists,
                           absl::StrCat("an outlet named ", name, " already exists (to ",
                                        it->second->Info().target, ")"),
                           reason::kAddressInUse);
  }
  auto outlet = std::make_shared<Outlet>(router_.NewStrand(), *this, name, *hp, std::move(policy),
                                         idle_timeout_ms);
  RETURN_IF_ERROR(router_.StartWorker(name, outlet));
  outlets_[name] = outlet;
  OutletInfo info = outlet->Info();
  Log(spdlog::level::info, {{log_field::kPortal, name}}, "outlet {} to {}, trusting {}", name,
      info.target, info.trust_policy);
  return info;
}

std::vector<OutletInfo> PortalManager::ListOutlets() const {
  std::vector<OutletInfo> out;
  veil::MutexLock lock(&mu_);
  for (const auto& [name, outlet] : outlets_) out.push_back(outlet->Info());
  std::sort(out.begin(), out.end(),
            [](const OutletInfo& a, const OutletInfo& b) { return a.name < b.name; });
  return out;
}

absl::Status PortalManager::DeleteOutlet(const std::string& name) {
  std::shared_ptr<Outlet> outlet;
  {
    veil::MutexLock lock(&mu_);
    auto it = outlets_.find(name);
    if (it == outlets_.end()) return NotFound(absl::StrCat("no outlet named ", QuoteInput(name)));
    outlet = std::move(it->second);
    outlets_.erase(it);
  }
  router_.StopWorker(
      name, outlet.get(),
      ErrorWithReason(absl::StatusCode::kNotFound,
                      absl::StrCat("the outlet ", name, " was deleted"), reason::kPortalNotFound));
  Log(spdlog::level::info, {{log_field::kPortal, name}}, "outlet {} deleted", name);
  return absl::OkStatus();
}

absl::StatusOr<InletInfo> PortalManager::CreateInlet(
    const std::string& listen, const core::Route& route, const std::string& outlet,
    const std::string& identity, std::shared_ptr<const channel::TrustPolicy> policy,
    bool allow_public, uint32_t idle_timeout_ms, bool exist_ok) {
  auto parsed = ParseInletAddress(listen, allow_public);
  if (!parsed.ok()) return parsed.status();
  const boost::asio::ip::tcp::endpoint endpoint = *parsed;
  if (route.empty()) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument, "the inlet needs a route",
                           reason::kInvalidRoute);
  }
  RETURN_IF_ERROR(core::ValidateAppAddress(outlet));
  boost::system::error_code ec;
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) {
      return ErrorWithReason(absl::StatusCode::kFailedPrecondition, "the node is shutting down",
                             reason::kNodeShuttingDown);
    }
    if (endpoint.port() != 0) {
      if (auto it =
              inlets_.find(core::FormatHostPort(endpoint.address().to_string(), endpoint.port()));
          it != inlets_.end()) {
        if (exist_ok && it->second->Same(route, outlet)) return it->second->Info();
        return ErrorWithReason(absl::StatusCode::kAlreadyExists,
                               absl::StrCat("an inlet already listens on ", listen),
                               reason::kAddressInUse);
      }
    }
  }
  boost::asio::ip::tcp::acceptor acceptor(io_);
  ec = core::OpenTcpListener(acceptor, endpoint);
  if (ec) {
    return ErrorWithReason(absl::StatusCode::kUnavailable,
                           absl::StrCat("the inlet cannot listen on ", listen, ": ", ec.message()),
                           reason::kListenFailed);
  }
  const boost::asio::ip::tcp::endpoint bound = acceptor.local_endpoint(ec);
  std::string bound_text = core::FormatHostPort(bound.address().to_string(), bound.port());
  auto inlet = std::make_shared<Inlet>(*this, std::move(acceptor), bound_text, route, outlet,
                                       identity, std::move(policy), idle_timeout_ms);
  {
    veil::MutexLock lock(&mu_);
    if (inlets_.contains(bound_text)) {
      return ErrorWithReason(absl::StatusCode::kAlreadyExists,
                             absl::StrCat("an inlet already listens on ", bound_text),
                             reason::kAddressInUse);
    }
    inlets_[bound_text] = inlet;
  }
  inlet->Start();
  InletInfo info = inlet->Info();
  Log(spdlog::level::info, {{log_field::kPortal, bound_text}, {log_field::kRoute, info.route}},
      "inlet on {} to outlet {} through {}", bound_text, outlet, info.route);
  return info;
}

std::vector<InletInfo> PortalManager::ListInlets() const {
  std::vector<InletInfo> out;
  veil::MutexLock lock(&mu_);
  for (const auto& [address, inlet] : inlets_) out.push_back(inlet->Info());
  std::sort(out.begin(), out.end(), [](const InletInfo& a, const InletInfo& b) {
    return a.listen_address < b.listen_address;
  });
  return out;
}

absl::Status PortalManager::DeleteInlet(const std::string& listen_address) {
  std::shared_ptr<Inlet> inlet;
  {
    veil::MutexLock lock(&mu_);
    auto it = inlets_.find(listen_address);
    if (it == inlets_.end()) {
      return NotFound(absl::StrCat("no inlet listens on ", QuoteInput(listen_address)));
    }
    inlet = std::move(it->second);
    inlets_.erase(it);
  }
  inlet->Stop();
  Log(spdlog::level::info, {{log_field::kPortal, listen_address}}, "inlet on {} deleted",
      listen_address);
  return absl::OkStatus();
}

void PortalManager::Shutdown() {
  absl::flat_hash_map<std::string, std::shared_ptr<Outlet>> outlets;
  absl::flat_hash_map<std::string, std::shared_ptr<Inlet>> inlets;
  {
    veil::MutexLock lock(&mu_);
    shut_down_ = true;
    outlets.swap(outlets_);
    inlets.swap(inlets_);
  }
  for (auto& [name, outlet] : outlets) router_.StopWorker(name, outlet.get());
  for (auto& [address, inlet] : inlets) inlet->Stop();
}

void PortalManager::Track(const std::shared_ptr<PortalSession>& session) {
  veil::MutexLock lock(&sessions_mu_);
  by_channel_[session->channel_via()].emplace(session.get(), session);
}

void PortalManager::Untrack(const PortalSession* session) {
  veil::MutexLock lock(&sessions_mu_);
  auto it = by_channel_.find(session->channel_via());
  if (it == by_channel_.end()) return;
  it->second.erase(session);
  if (it->second.empty()) by_channel_.erase(it);
}

void PortalManager::OnChannelClosed(uint64_t via, absl::string_view why) {
  std::vector<std::shared_ptr<PortalSession>> sessions;
  {
    veil::MutexLock lock(&sessions_mu_);
    auto it = by_channel_.find(via);
    if (it != by_channel_.end()) {
      for (auto& [raw, weak] : it->second) {
        if (auto s = weak.lock()) sessions.push_back(std::move(s));
      }
      by_channel_.erase(it);
    }
  }
  for (auto& s : sessions) {
    s->Reset(ErrorWithReason(absl::StatusCode::kUnavailable,
                             absl::StrCat("the secure channel closed: ", why),
                             reason::kChannelClosed));
  }
  std::vector<std::shared_ptr<Inlet>> inlets;
  {
    veil::MutexLock lock(&mu_);
    for (auto& [address, inlet] : inlets_) inlets.push_back(inlet);
  }
  for (auto& inlet : inlets) inlet->OnChannelClosed(via);
}

}  // namespace veil::portal
