// TcpTransport: the router's transport for "/tcp/HOST:PORT" hops, and TCP listeners.
//
// Sending to a TCP hop uses the open connection to that "host:port" or opens one (on demand,
// reused afterwards); the hop is removed from the onward route (Ockam's hop rule) and the
// message goes to the connection worker. Listeners accept connections from other nodes; each
// becomes a connection worker. Connection loss is reported to the senders of the messages it
// strands (see tcp_connection.h).
//
// Thread-safety: all public methods may be called from any thread.
#ifndef VEIL_SIDECAR_TRANSPORT_TCP_TRANSPORT_H_
#define VEIL_SIDECAR_TRANSPORT_TCP_TRANSPORT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "sidecar/common/mutex.h"
#include "asio/ip/tcp.hpp"
#include "sidecar/core/router.h"
#include "sidecar/transport/tcp_connection.h"

namespace veil::transport {

// A snapshot of one connection, for the API.
struct TcpConnectionInfo {
  std::string worker;  // local address, e.g. "_tcp_3"
  std::string peer;    // "host:port"
  bool outgoing = false;
};

class TcpTransport final : public core::Transport {
 public:
  // Registers itself with `router` for TCP hops. `router` must outlive it.
  TcpTransport(core::Router& router, TcpOptions options);
  ~TcpTransport() override;

  // Listens on `host_port` ("host:port", port 0 for any) and returns the bound "host:port".
  // INVALID_ARGUMENT for a bad address; UNAVAILABLE when it cannot be bound.
  absl::StatusOr<std::string> Listen(absl::string_view host_port);

  void Send(core::Message msg) override;

  // Bound listener addresses, in the order they were opened.
  std::vector<std::string> ListenAddresses() const;
  std::vector<TcpConnectionInfo> Connections() const;

  // Closes listeners and every connection (queued messages fail with NODE_SHUTTING_DOWN).
  void Shutdown();

  core::Router& router() { return router_; }

  // Counters since start, for metrics (updated by connections).
  struct Stats {
    std::atomic<uint64_t> bytes_sent{0}, bytes_received{0}, frames_sent{0}, frames_received{0};
    std::atomic<uint64_t> connections_opened{0}, connections_failed{0};
    // Messages read from connections that this node could not hand on (their senders are
    // elsewhere and cannot be told), and times a connection stopped reading for backpressure.
    std::atomic<uint64_t> received_refused{0}, reads_paused{0};
  };
  Stats& stats() { return stats_; }

  // Called, from the closing connection's strand, with the worker address of every connection
  // that closes (for the hub: to drop the relays riding on it). Register before traffic starts.
  void AddCloseObserver(std::function<void(const std::string& worker)> observer);

  // Called by a connection when it closes.
  void Forget(TcpConnection* connection);

 private:
  struct Listener {
    std::unique_ptr<asio::ip::tcp::acceptor> acceptor;
    std::string address;
  };
  void Accept(Listener* listener);
  std::shared_ptr<TcpConnection> Adopt(std::shared_ptr<TcpConnection> connection);

  core::Router& router_;
  const TcpOptions options_;
  Stats stats_;
  mutable veil::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Listener>> listeners_ ABSL_GUARDED_BY(mu_);
  // Outgoing connections by the "host:port" of the routes that opened them.
  absl::flat_hash_map<std::string, std::shared_ptr<TcpConnection>> outgoing_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void(const std::string&)>> close_observers_ ABSL_GUARDED_BY(mu_);
  // Every live connection.
  absl::flat_hash_map<TcpConnection*, std::shared_ptr<TcpConnection>> all_ ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::transport

#endif  // VEIL_SIDECAR_TRANSPORT_TCP_TRANSPORT_H_
