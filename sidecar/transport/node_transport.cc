#include "sidecar/transport/node_transport.h"

#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "boost/asio/post.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/common/unix_socket.h"
#include "sidecar/common/version.h"
#include "sidecar/core/tcp_listen.h"
#include "spdlog/spdlog.h"

namespace veil::transport {

namespace {
constexpr core::AddressType kHopTypes[] = {core::AddressType::kTcp, core::AddressType::kUds,
                                           core::AddressType::kWs, core::AddressType::kWss};
}  // namespace

NodeTransport::NodeTransport(core::Router& router, ConnectionOptions options)
    : router_(router), options_(options) {
  websocket_.agent = absl::StrCat("veild/", kVeilVersion);
  for (auto type : kHopTypes) router_.SetTransport(type, this);
}

NodeTransport::~NodeTransport() {
  Shutdown();
  for (auto type : kHopTypes) router_.SetTransport(type, nullptr);
}

absl::Status NodeTransport::ConfigureWebSocket(const std::string& ca_file,
                                               const std::string& cert_file,
                                               const std::string& key_file,
                                               const std::string& connect_proxy) {
  if (!connect_proxy.empty()) {
    auto proxy = core::ParseHostPort(connect_proxy);
    if (!proxy.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--connect-proxy: ", proxy.status().message()));
    }
  }
  WebSocketSettings settings;
  RETURN_IF_ERROR(LoadTls(ca_file, cert_file, key_file, settings));
  websocket_.client_tls = std::move(settings.client_tls);
  websocket_.server_tls = std::move(settings.server_tls);
  websocket_.connect_proxy = connect_proxy;
  return absl::OkStatus();
}

absl::StatusOr<std::string> NodeTransport::Listen(absl::string_view host_port) {
  auto bound = ListenTcp(host_port, std::nullopt, false);
  if (!bound.ok()) return bound.status();
  return bound->address;
}

absl::StatusOr<std::string> NodeTransport::ListenWebSocket(absl::string_view address, bool tls) {
  auto target = core::ParseWebSocketTarget(address, /*allow_port_zero=*/true);
  if (!target.ok()) return target.status();
  if (tls && websocket_.server_tls == nullptr) {
    return absl::InvalidArgumentError(
        "--wss-listen needs a certificate and its key (--tls-cert, --tls-key)");
  }
  const size_t slash = address.find('/');
  auto bound = ListenTcp(address.substr(0, slash), target->path, tls);
  if (!bound.ok()) return bound.status();
  return bound->address;
}

absl::StatusOr<ListenerInfo> NodeTransport::ListenTcp(absl::string_view host_port,
                                                      std::optional<std::string> websocket_path,
                                                      bool tls) {
  auto hp = core::ParseHostPort(host_port, /*allow_port_zero=*/true);
  if (!hp.ok()) return hp.status();
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(hp->host, ec);
  if (ec) {  // a name: resolve it synchronously, at start-up only
    boost::asio::ip::tcp::resolver resolver(router_.io());
    auto results = resolver.resolve(hp->host, std::to_string(hp->port), ec);
    if (ec || results.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot resolve \"", hp->host, "\""));
    }
    address = results.begin()->endpoint().address();
  }
  auto listener = std::make_unique<Listener>();
  listener->tcp = std::make_unique<boost::asio::ip::tcp::acceptor>(router_.NewStrand());
  boost::asio::ip::tcp::endpoint endpoint(address, hp->port);
  auto& acceptor = *listener->tcp;
  ec = core::OpenTcpListener(acceptor, endpoint);
  if (ec) {
    return ErrorWithReason(absl::StatusCode::kUnavailable,
                           absl::StrCat("cannot listen on ", host_port, ": ", ec.message()),
                           reason::kListenFailed);
  }
  auto bound = acceptor.local_endpoint(ec);
  const std::string host_port_bound =
      core::FormatHostPort(bound.address().to_string(), bound.port());
  listener->websocket_path = websocket_path;
  listener->tls = tls;
  if (websocket_path.has_value()) {
    listener->info.transport = tls ? "wss" : "ws";
    listener->info.address =
        host_port_bound + (*websocket_path == "/" ? std::string() : *websocket_path);
    listener->info.hop = core::Address::WebSocket(listener->info.address, tls).ToString();
  } else {
    listener->info.transport = "tcp";
    listener->info.address = host_port_bound;
    listener->info.hop = core::Address::Tcp(listener->info.address).ToString();
  }
  ListenerInfo result = listener->info;
  Listener* raw = listener.get();
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) return absl::FailedPreconditionError("transport is shut down");
    listeners_.push_back(std::move(listener));
  }
  spdlog::info("{} listener on {} (route hop {})", result.transport, result.address, result.hop);
  Accept(raw, raw->tcp.get());
  return result;
}

absl::Status NodeTransport::ListenUnix(const std::string& path, uint32_t mode) {
  RETURN_IF_ERROR(core::ValidateUnixPath(path));
  if (mode != 0600 && mode != 0660) {
    return absl::InvalidArgumentError(
        absl::StrCat("a Unix socket listener's mode is 0600 or 0660, not 0", absl::Hex(mode)));
  }
  RETURN_IF_ERROR(PrepareUnixSocketPath(path, "node"));
  auto listener = std::make_unique<Listener>();
  listener->unix =
      std::make_unique<boost::asio::local::stream_protocol::acceptor>(router_.NewStrand());
  auto& acceptor = *listener->unix;
  boost::system::error_code ec;
  boost::asio::local::stream_protocol::endpoint endpoint(path);
  acceptor.open(endpoint.protocol(), ec);
  // Bound with no permissions at all, then opened up to `mode`: no moment where another user
  // could connect.
  const mode_t old_umask = ::umask(0777);
  if (!ec) acceptor.bind(endpoint, ec);
  ::umask(old_umask);
  if (!ec && ::chmod(path.c_str(), mode) != 0)
    ec = boost::system::error_code(errno, boost::system::system_category());
  if (!ec) acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) {
    ::unlink(path.c_str());
    return ErrorWithReason(absl::StatusCode::kUnavailable,
                           absl::StrCat("cannot listen on ", path, ": ", ec.message()),
                           reason::kListenFailed);
  }
  listener->info.transport = "uds";
  listener->info.address = path;
  listener->info.hop = core::Address::Uds(path).ToString();
  Listener* raw = listener.get();
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) return absl::FailedPreconditionError("transport is shut down");
    listeners_.push_back(std::move(listener));
  }
  spdlog::info("uds listener on {} (mode 0{:o}, route hop {})", path, mode, raw->info.hop);
  Accept(raw, raw->unix.get());
  return absl::OkStatus();
}

template <typename Acceptor>
void NodeTransport::Accept(Listener* listener, Acceptor* acceptor) {
  core::Strand strand = router_.NewStrand();
  acceptor->async_accept(
      strand, [this, listener, acceptor, strand](boost::system::error_code ec,
                                                 typename Acceptor::protocol_type::socket socket) {
        if (ec == boost::asio::error::operation_aborted) return;
        if (ec) {
          // Out of file descriptors and the like: log, and keep accepting.
          spdlog::warn("{} listener {}: accept failed: {}", listener->info.transport,
                       listener->info.address, ec.message());
        } else {
          Accepted(std::make_shared<Connection>(strand, *this, options_,
                                                MakeAccepted(*listener, std::move(socket))));
        }
        {
          veil::MutexLock lock(&mu_);
          if (shut_down_) return;
        }
        Accept(listener, acceptor);
      });
}

std::unique_ptr<Stream> NodeTransport::MakeAccepted(const Listener& listener,
                                                    boost::asio::ip::tcp::socket socket) {
  if (listener.websocket_path.has_value()) {
    return AcceptedWebSocket(std::move(socket), listener.tls, *listener.websocket_path, websocket_);
  }
  return AcceptedStream(std::move(socket));
}

std::unique_ptr<Stream> NodeTransport::MakeAccepted(
    const Listener&, boost::asio::local::stream_protocol::socket socket) {
  return AcceptedStream(std::move(socket));
}

void NodeTransport::Accepted(std::shared_ptr<Connection> conn) {
  if (Adopt(conn) == nullptr) return;
  absl::Status limit;
  {
    veil::MutexLock lock(&mu_);
    limit = AcceptLimit(conn->remote_host());
    if (limit.ok()) {
      ++accepted_;
      ++accepted_by_host_[conn->remote_host()];
      accepted_hosts_.emplace(conn->id(), conn->remote_host());
    }
  }
  // Refused before it starts: nothing it sends is ever read (with several io threads its first
  // read could otherwise complete before a refusal posted after Start).
  if (!limit.ok()) {
    stats_.connections_refused.fetch_add(1, std::memory_order_relaxed);
    conn->Refuse(std::move(limit));
  }
  conn->Start();
}

absl::Status NodeTransport::AcceptLimit(const std::string& host) {
  if (accepted_ >= options_.max_connections) {
    return ErrorWithReason(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("this node has ", accepted_, " connections from other nodes, its limit"),
        reason::kTooManyConnections);
  }
  auto it = accepted_by_host_.find(host);
  if (it != accepted_by_host_.end() && it->second >= options_.max_connections_per_address) {
    return ErrorWithReason(absl::StatusCode::kResourceExhausted,
                           absl::StrCat("this node has ", it->second, " connections from ", host,
                                        ", its limit per address"),
                           reason::kTooManyConnections);
  }
  return absl::OkStatus();
}

std::shared_ptr<Connection> NodeTransport::Adopt(std::shared_ptr<Connection> connection) {
  std::string name = router_.StartWorkerWithPrefix(
      absl::StrCat("_", connection->transport_name(), "_"), connection);
  if (name.empty()) return nullptr;  // shutting down
  veil::MutexLock lock(&mu_);
  if (shut_down_) {
    router_.StopWorker(name, connection.get());
    return nullptr;
  }
  all_.emplace(connection->id(), connection);
  return connection;
}

void NodeTransport::EnsureClientTls() {
  // The system's CA store, loaded on the first /wss dial when nothing was configured (loading
  // it costs tens of milliseconds: not for every transport made, as tests and fuzzers do).
  std::call_once(default_tls_, [this] {
    if (websocket_.client_tls != nullptr) return;
    WebSocketSettings loaded;
    (void)LoadTls("", "", "", loaded);
    websocket_.client_tls = std::move(loaded.client_tls);
  });
}

absl::StatusOr<std::shared_ptr<Connection>> NodeTransport::Outgoing(const core::Address& hop) {
  if (hop.type() == core::AddressType::kWss) EnsureClientTls();
  auto shutting_down = [] {
    return ErrorWithReason(absl::StatusCode::kUnavailable, "the node is shutting down",
                           reason::kNodeShuttingDown);
  };
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) return shutting_down();
    auto it = outgoing_.find(hop);
    if (it != outgoing_.end()) return it->second;
  }
  auto fresh = std::make_shared<Connection>(router_.NewStrand(), *this, options_, hop);
  if (Adopt(fresh) == nullptr) return shutting_down();
  std::shared_ptr<Connection> connection;
  bool opened;
  {
    veil::MutexLock lock(&mu_);
    // Another thread may have opened one meanwhile: use the first, drop ours.
    auto [it, inserted] = outgoing_.try_emplace(hop, fresh);
    connection = it->second;
    opened = inserted;
    if (!inserted) all_.erase(fresh->id());
  }
  if (opened) {
    connection->Start();
  } else {
    router_.StopWorker(fresh->address(), fresh.get());
  }
  return connection;
}

absl::StatusOr<std::shared_ptr<core::Worker>> NodeTransport::CarrierFor(const core::Address& hop) {
  auto connection = Outgoing(hop);
  if (!connection.ok()) return connection.status();
  return std::shared_ptr<core::Worker>(*std::move(connection));
}

absl::Status NodeTransport::PlaintextEgress(const core::SenderInfo& from,
                                            absl::string_view where) const {
  using Origin = core::SenderInfo::Origin;
  if (from.origin == Origin::kLocal || from.origin == Origin::kTransport ||
      options_.insecure_plaintext) {
    return absl::OkStatus();
  }
  if (from.origin == Origin::kSecureChannel) {
    return ErrorWithReason(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat("a message decrypted out of a secure channel may not leave the host in "
                     "plaintext (its next hop ",
                     where, " does)"),
        reason::kPlaintextEgressRefused);
  }
  return ErrorWithReason(
      absl::StatusCode::kFailedPrecondition,
      absl::StrCat("refusing to send plaintext to ", where,
                   ": it leaves this host, and app payloads leave the host only inside a secure "
                   "channel (veild --insecure-plaintext allows it, for testing)"),
      reason::kPlaintextEgressRefused);
}

absl::Status NodeTransport::Admit(const core::SenderInfo& from, const core::Address& hop) const {
  using Origin = core::SenderInfo::Origin;
  if (from.origin == Origin::kLocal) return absl::OkStatus();
  absl::Status plaintext = PlaintextEgress(from, hop.ToString());
  if (!plaintext.ok()) return plaintext;
  if (from.origin == Origin::kApp) return absl::OkStatus();  // an app of this node, insecure
  // From the network or out of a secure channel: only where the allow-list says.
  if (hop.type() == core::AddressType::kUds) {
    if (options_.allow_dial.AllowsUnix(hop.value())) return absl::OkStatus();
  } else {
    // A WebSocket hop is allowed by its host and port, whatever its URL path.
    const absl::string_view value = hop.value();
    auto host_port = core::ParseHostPort(value.substr(0, value.find('/')));
    if (host_port.ok() && options_.allow_dial.Allows(host_port->host, host_port->port)) {
      return absl::OkStatus();
    }
  }
  stats_.dials_refused.fetch_add(1, std::memory_order_relaxed);
  return ErrorWithReason(
      absl::StatusCode::kPermissionDenied,
      absl::StrCat("this node does not dial ", hop.ToString(),
                   " for messages from other nodes (not in its --allow-dial list)"),
      reason::kDialRefused);
}

void NodeTransport::PairForReplies(uint64_t to, uint64_t from) {
  std::shared_ptr<Connection> connection;
  {
    veil::MutexLock lock(&mu_);
    auto it = all_.find(to);
    if (it == all_.end()) return;
    connection = it->second;
  }
  connection->AdmitRepliesFrom(from);
}

void NodeTransport::Send(core::Message msg) {
  auto connection = Outgoing(msg.onward.front());
  if (!connection.ok()) {
    msg.receipt.Settle(connection.status());
    return;
  }
  if (msg.sender.origin == core::SenderInfo::Origin::kTransport) {
    // Forwarding for another node (the allow-list let it): replies come back this way, and
    // what follows them may go on by the connection's name (the return route names it).
    PairForReplies(msg.sender.via, (*connection)->id());
    (*connection)->AdmitRepliesFrom(msg.sender.via);
  }
  msg.onward.PopFront();
  Connection* raw = connection->get();
  core::RunOnStrand(raw->strand(),
                    [connection = *std::move(connection), msg = std::move(msg)]() mutable {
                      connection->HandleMessage(std::move(msg));
                    });
}

std::vector<std::string> NodeTransport::ListenAddresses() const {
  veil::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& l : listeners_) {
    if (l->info.transport == "tcp") out.push_back(l->info.address);
  }
  return out;
}

std::vector<ListenerInfo> NodeTransport::Listeners() const {
  veil::MutexLock lock(&mu_);
  std::vector<ListenerInfo> out;
  for (const auto& l : listeners_) out.push_back(l->info);
  return out;
}

std::vector<ConnectionInfo> NodeTransport::Connections() const {
  veil::MutexLock lock(&mu_);
  std::vector<ConnectionInfo> out;
  for (const auto& [id, conn] : all_)
    out.push_back(
        {conn->address(), std::string(conn->transport_name()), conn->peer(), conn->outgoing()});
  return out;
}

void NodeTransport::AddCloseObserver(CloseObserver observer) {
  veil::MutexLock lock(&mu_);
  close_observers_.push_back(std::move(observer));
}

void NodeTransport::ForgetOutgoing(Connection* connection) {
  if (!connection->hop().has_value()) return;
  veil::MutexLock lock(&mu_);
  auto it = outgoing_.find(*connection->hop());
  if (it != outgoing_.end() && it->second.get() == connection) outgoing_.erase(it);
}

void NodeTransport::Forget(Connection* connection) {
  std::vector<CloseObserver> observers;
  {
    veil::MutexLock lock(&mu_);
    all_.erase(connection->id());
    if (auto it = accepted_hosts_.find(connection->id()); it != accepted_hosts_.end()) {
      --accepted_;
      if (--accepted_by_host_[it->second] == 0) accepted_by_host_.erase(it->second);
      accepted_hosts_.erase(it);
    }
    if (connection->hop().has_value()) {
      auto it = outgoing_.find(*connection->hop());
      if (it != outgoing_.end() && it->second.get() == connection) outgoing_.erase(it);
    }
    observers = close_observers_;
  }
  for (const auto& observe : observers) observe(connection->address(), connection->id());
}

void NodeTransport::Shutdown() {
  std::vector<std::shared_ptr<Connection>> connections;
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    for (auto& l : listeners_) {
      if (auto* acceptor = l->tcp.get()) {
        boost::asio::post(acceptor->get_executor(), [acceptor] {
          boost::system::error_code ignored;
          acceptor->close(ignored);
        });
      }
      if (auto* acceptor = l->unix.get()) {
        ::unlink(l->info.address.c_str());
        boost::asio::post(acceptor->get_executor(), [acceptor] {
          boost::system::error_code ignored;
          acceptor->close(ignored);
        });
      }
    }
    for (auto& [id, conn] : all_) connections.push_back(conn);
  }
  for (auto& conn : connections) {
    conn->Close(ErrorWithReason(absl::StatusCode::kUnavailable, "the node is shutting down",
                                reason::kNodeShuttingDown));
  }
}

}  // namespace veil::transport
