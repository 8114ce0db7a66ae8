#include "sidecar/transport/tcp_transport.h"

#include "absl/strings/str_cat.h"
#include "asio/post.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "spdlog/spdlog.h"

namespace veil::transport {

TcpTransport::TcpTransport(core::Router& router, TcpOptions options)
    : router_(router), options_(options) {
  router_.SetTransport(core::AddressType::kTcp, this);
}

TcpTransport::~TcpTransport() {
  Shutdown();
  router_.SetTransport(core::AddressType::kTcp, nullptr);
}

absl::StatusOr<std::string> TcpTransport::Listen(absl::string_view host_port) {
  auto hp = core::ParseHostPort(host_port, /*allow_port_zero=*/true);
  if (!hp.ok()) return hp.status();
  asio::error_code ec;
  auto address = asio::ip::make_address(hp->host, ec);
  if (ec) {  // a name: resolve it synchronously, at start-up only
    asio::ip::tcp::resolver resolver(router_.io());
    auto results = resolver.resolve(hp->host, std::to_string(hp->port), ec);
    if (ec || results.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot resolve \"", hp->host, "\""));
    }
    address = results.begin()->endpoint().address();
  }
  auto listener = std::make_unique<Listener>();
  listener->acceptor = std::make_unique<asio::ip::tcp::acceptor>(router_.NewStrand());
  asio::ip::tcp::endpoint endpoint(address, hp->port);
  auto& acceptor = *listener->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return ErrorWithReason(absl::StatusCode::kUnavailable,
                           absl::StrCat("cannot listen on ", host_port, ": ", ec.message()),
                           reason::kListenFailed);
  }
  auto bound = acceptor.local_endpoint(ec);
  listener->address = core::FormatHostPort(bound.address().to_string(), bound.port());
  std::string result = listener->address;
  Listener* raw = listener.get();
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) return absl::FailedPreconditionError("transport is shut down");
    listeners_.push_back(std::move(listener));
  }
  spdlog::info("tcp listener on {}", result);
  Accept(raw);
  return result;
}

void TcpTransport::Accept(Listener* listener) {
  core::Strand strand = router_.NewStrand();
  listener->acceptor->async_accept(
      strand, [this, listener, strand](asio::error_code ec, asio::ip::tcp::socket socket) {
        if (ec == asio::error::operation_aborted) return;
        if (ec) {
          // Out of file descriptors and the like: log, and keep accepting.
          spdlog::warn("tcp listener {}: accept failed: {}", listener->address, ec.message());
        } else {
          auto conn = std::make_shared<TcpConnection>(strand, *this, options_, std::move(socket));
          if (Adopt(conn) != nullptr) {
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
            // Refused before it starts: nothing it sends is ever read (with several io threads
            // its first read could otherwise complete before a refusal posted after Start).
            if (!limit.ok()) {
              stats_.connections_refused.fetch_add(1, std::memory_order_relaxed);
              conn->Refuse(std::move(limit));
            }
            conn->Start();
          }
        }
        {
          veil::MutexLock lock(&mu_);
          if (shut_down_) return;
        }
        Accept(listener);
      });
}

absl::Status TcpTransport::AcceptLimit(const std::string& host) {
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

std::shared_ptr<TcpConnection> TcpTransport::Adopt(std::shared_ptr<TcpConnection> connection) {
  std::string name = router_.StartWorkerWithPrefix("_tcp_", connection);
  if (name.empty()) return nullptr;  // shutting down
  veil::MutexLock lock(&mu_);
  if (shut_down_) {
    router_.StopWorker(name, connection.get());
    return nullptr;
  }
  all_.emplace(connection->id(), connection);
  return connection;
}

absl::StatusOr<std::shared_ptr<TcpConnection>> TcpTransport::Outgoing(
    const std::string& host_port) {
  auto shutting_down = [] {
    return ErrorWithReason(absl::StatusCode::kUnavailable, "the node is shutting down",
                           reason::kNodeShuttingDown);
  };
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) return shutting_down();
    auto it = outgoing_.find(host_port);
    if (it != outgoing_.end()) return it->second;
  }
  auto fresh = std::make_shared<TcpConnection>(router_.NewStrand(), *this, options_, host_port);
  if (Adopt(fresh) == nullptr) return shutting_down();
  std::shared_ptr<TcpConnection> connection;
  bool opened;
  {
    veil::MutexLock lock(&mu_);
    // Another thread may have opened one meanwhile: use the first, drop ours.
    auto [it, inserted] = outgoing_.try_emplace(fresh->peer(), fresh);
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

absl::StatusOr<std::shared_ptr<core::Worker>> TcpTransport::CarrierFor(const core::Address& hop) {
  auto connection = Outgoing(hop.value());
  if (!connection.ok()) return connection.status();
  return std::shared_ptr<core::Worker>(*std::move(connection));
}

absl::Status TcpTransport::PlaintextEgress(const core::SenderInfo& from,
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

absl::Status TcpTransport::Admit(const core::SenderInfo& from, const core::Address& hop) const {
  using Origin = core::SenderInfo::Origin;
  if (from.origin == Origin::kLocal) return absl::OkStatus();
  absl::Status plaintext = PlaintextEgress(from, hop.ToString());
  if (!plaintext.ok()) return plaintext;
  if (from.origin == Origin::kApp) return absl::OkStatus();  // an app of this node, insecure
  // From the network or out of a secure channel: only where the allow-list says.
  auto host_port = core::ParseHostPort(hop.value());
  if (host_port.ok() && options_.allow_dial.Allows(host_port->host, host_port->port)) {
    return absl::OkStatus();
  }
  stats_.dials_refused.fetch_add(1, std::memory_order_relaxed);
  return ErrorWithReason(
      absl::StatusCode::kPermissionDenied,
      absl::StrCat("this node does not dial ", hop.ToString(),
                   " for messages from other nodes (not in its --allow-dial list)"),
      reason::kDialRefused);
}

void TcpTransport::PairForReplies(uint64_t to, uint64_t from) {
  std::shared_ptr<TcpConnection> connection;
  {
    veil::MutexLock lock(&mu_);
    auto it = all_.find(to);
    if (it == all_.end()) return;
    connection = it->second;
  }
  connection->AdmitRepliesFrom(from);
}

void TcpTransport::Send(core::Message msg) {
  auto connection = Outgoing(msg.onward.front().value());
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
  TcpConnection* raw = connection->get();
  core::RunOnStrand(raw->strand(),
                    [connection = *std::move(connection), msg = std::move(msg)]() mutable {
                      connection->HandleMessage(std::move(msg));
                    });
}

std::vector<std::string> TcpTransport::ListenAddresses() const {
  veil::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& l : listeners_) out.push_back(l->address);
  return out;
}

std::vector<TcpConnectionInfo> TcpTransport::Connections() const {
  veil::MutexLock lock(&mu_);
  std::vector<TcpConnectionInfo> out;
  for (const auto& [id, conn] : all_)
    out.push_back({conn->address(), conn->peer(), conn->outgoing()});
  return out;
}

void TcpTransport::AddCloseObserver(CloseObserver observer) {
  veil::MutexLock lock(&mu_);
  close_observers_.push_back(std::move(observer));
}

void TcpTransport::ForgetOutgoing(TcpConnection* connection) {
  veil::MutexLock lock(&mu_);
  auto it = outgoing_.find(connection->peer());
  if (it != outgoing_.end() && it->second.get() == connection) outgoing_.erase(it);
}

void TcpTransport::Forget(TcpConnection* connection) {
  std::vector<CloseObserver> observers;
  {
    veil::MutexLock lock(&mu_);
    all_.erase(connection->id());
    if (auto it = accepted_hosts_.find(connection->id()); it != accepted_hosts_.end()) {
      --accepted_;
      if (--accepted_by_host_[it->second] == 0) accepted_by_host_.erase(it->second);
      accepted_hosts_.erase(it);
    }
    auto it = outgoing_.find(connection->peer());
    if (it != outgoing_.end() && it->second.get() == connection) outgoing_.erase(it);
    observers = close_observers_;
  }
  for (const auto& observe : observers) observe(connection->address(), connection->id());
}

void TcpTransport::Shutdown() {
  std::vector<std::shared_ptr<TcpConnection>> connections;
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    for (auto& l : listeners_) {
      asio::ip::tcp::acceptor* acceptor = l->acceptor.get();
      asio::post(acceptor->get_executor(), [acceptor] {
        asio::error_code ignored;
        acceptor->close(ignored);
      });
    }
    for (auto& [id, conn] : all_) connections.push_back(conn);
  }
  for (auto& conn : connections) {
    conn->Close(ErrorWithReason(absl::StatusCode::kUnavailable, "the node is shutting down",
                                reason::kNodeShuttingDown));
  }
}

}  // namespace veil::transport
