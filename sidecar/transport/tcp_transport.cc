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
          if (Adopt(conn) != nullptr) conn->Start();
        }
        {
          veil::MutexLock lock(&mu_);
          if (shut_down_) return;
        }
        Accept(listener);
      });
}

std::shared_ptr<TcpConnection> TcpTransport::Adopt(std::shared_ptr<TcpConnection> connection) {
  std::string name = router_.StartWorkerWithPrefix("_tcp_", connection);
  if (name.empty()) return nullptr;  // shutting down
  veil::MutexLock lock(&mu_);
  if (shut_down_) {
    router_.StopWorker(name, connection.get());
    return nullptr;
  }
  all_.emplace(connection.get(), connection);
  return connection;
}

void TcpTransport::Send(core::Message msg) {
  std::shared_ptr<TcpConnection> connection;
  bool opened = false;
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_) {
      msg.receipt.Settle(ErrorWithReason(absl::StatusCode::kUnavailable,
                                         "the node is shutting down", reason::kNodeShuttingDown));
      return;
    }
    auto it = outgoing_.find(msg.onward.front().value());
    if (it != outgoing_.end()) connection = it->second;
  }
  if (connection == nullptr) {
    auto fresh = std::make_shared<TcpConnection>(router_.NewStrand(), *this, options_,
                                                 msg.onward.front().value());
    if (Adopt(fresh) == nullptr) {
      msg.receipt.Settle(ErrorWithReason(absl::StatusCode::kUnavailable,
                                         "the node is shutting down", reason::kNodeShuttingDown));
      return;
    }
    veil::MutexLock lock(&mu_);
    // Another thread may have opened one meanwhile: use the first, drop ours.
    auto [it, inserted] = outgoing_.try_emplace(fresh->peer(), fresh);
    connection = it->second;
    opened = inserted;
    if (!inserted) all_.erase(fresh.get());
    if (!inserted) router_.StopWorker(fresh->address(), fresh.get());
  }
  if (opened) connection->Start();
  msg.onward.PopFront();
  TcpConnection* raw = connection.get();
  core::RunOnStrand(raw->strand(), [connection = std::move(connection), msg = std::move(msg)]() mutable {
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
  for (const auto& [raw, conn] : all_) out.push_back({conn->address(), conn->peer(), conn->outgoing()});
  return out;
}

void TcpTransport::AddCloseObserver(std::function<void(const std::string& worker)> observer) {
  veil::MutexLock lock(&mu_);
  close_observers_.push_back(std::move(observer));
}

void TcpTransport::Forget(TcpConnection* connection) {
  std::vector<std::function<void(const std::string&)>> observers;
  {
    veil::MutexLock lock(&mu_);
    all_.erase(connection);
    auto it = outgoing_.find(connection->peer());
    if (it != outgoing_.end() && it->second.get() == connection) outgoing_.erase(it);
    observers = close_observers_;
  }
  for (const auto& observe : observers) observe(connection->address());
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
    for (auto& [raw, conn] : all_) connections.push_back(conn);
  }
  for (auto& conn : connections) {
    conn->Close(ErrorWithReason(absl::StatusCode::kUnavailable, "the node is shutting down",
                                reason::kNodeShuttingDown));
  }
}

}  // namespace veil::transport
