// NodeTransport: the router's transport for the hops that name another node —
// "/tcp/HOST:PORT", "/uds/PATH", "/ws/HOST:PORT[%2FPATH]", "/wss/…" — and the listeners other
// nodes connect to (TCP, Unix sockets, WebSocket with or without TLS).
//
// Sending to such a hop uses the open connection to it or opens one (on demand, reused
// afterwards); the hop is removed from the onward route (Ockam's hop rule) and the message
// goes to the connection worker. Listeners accept connections from other nodes; each becomes a
// connection worker. Every connection, whatever its transport, is a Connection (connection.h):
// the same frames, limits, backpressure and access control. Connection loss is reported to the
// senders of the messages it strands.
//
// Access control (Admit, asked by the router for every such hop): this node dials for its own
// workers; for its apps only with --insecure-plaintext (their payloads would leave in
// plaintext); for a message from the network, or out of a secure channel, only a hop the dial
// allow-list permits (DIAL_REFUSED otherwise, counted; a Unix socket only when listed by path). A
// message from the network it does forward pairs the two connections, each taking what is read from
// the other: replies come back the same way, and later messages may name the onward connection, as
// replies' return routes do.
//
// Limits on accepted connections (in all, per remote address — a Unix socket peer's user
// counts as its address) refuse the excess with a connection refusal (TOO_MANY_CONNECTIONS)
// that the peer reads.
//
// Thread-safety: all public methods may be called from any thread.
#ifndef VEIL_SIDECAR_TRANSPORT_NODE_TRANSPORT_H_
#define VEIL_SIDECAR_TRANSPORT_NODE_TRANSPORT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/local/stream_protocol.hpp"
#include "sidecar/common/mutex.h"
#include "sidecar/core/router.h"
#include "sidecar/transport/connection.h"
#include "sidecar/transport/websocket_stream.h"

namespace veil::transport {

// A snapshot of one connection, for the API.
struct ConnectionInfo {
  std::string worker;     // local address, e.g. "_tcp_3"
  std::string transport;  // "tcp", "uds", "ws", "wss"
  std::string peer;       // "host:port"; a socket path (outgoing) or "uid N pid M" (accepted)
  bool outgoing = false;
};

// A listener, for the API.
struct ListenerInfo {
  std::string transport;  // "tcp", "uds", "ws", "wss"
  std::string address;    // the bound "host:port" (WebSocket: and its URL path), or the path
  std::string hop;        // the route hop reaching it, e.g. "/tcp/127.0.0.1:4000"
};

class NodeTransport final : public core::Transport {
 public:
  // Registers itself with `router` for TCP, Unix socket and WebSocket hops. `router` must outlive
  // it.
  NodeTransport(core::Router& router, ConnectionOptions options);
  ~NodeTransport() override;

  // Listens on `host_port` ("host:port", port 0 for any) and returns the bound "host:port".
  // INVALID_ARGUMENT for a bad address; UNAVAILABLE when it cannot be bound.
  absl::StatusOr<std::string> Listen(absl::string_view host_port);
  // Listens on the Unix socket `path` (absolute; parent directory created 0700 if missing; a
  // stale socket replaced; FAILED_PRECONDITION ADDRESS_IN_USE when a live process serves it or
  // the path is not a socket), with permissions `mode` (0600: this user's processes; 0660:
  // also its group's). INVALID_ARGUMENT for a bad path or mode; UNAVAILABLE when it cannot be
  // bound. The socket file is removed at Shutdown.
  absl::Status ListenUnix(const std::string& path, uint32_t mode);
  // Listens for WebSocket connections on "host:port[/path]" (port 0 for any; path "/" when
  // none), over TLS when `tls` (ConfigureWebSocket must have set a certificate first). Returns
  // the bound "host:port[/path]". INVALID_ARGUMENT for a bad address or a missing certificate;
  // UNAVAILABLE when it cannot be bound.
  absl::StatusOr<std::string> ListenWebSocket(absl::string_view address, bool tls);

  // TLS and proxy settings for WebSocket streams (websocket_stream.h): the CA file verifying
  // /wss peers ("" for the system store), the certificate and key for --wss-listen ("" for
  // none), the HTTP CONNECT proxy for outgoing /ws and /wss ("" for none). Call before Listen*
  // and before traffic. INVALID_ARGUMENT naming a file that cannot be used.
  absl::Status ConfigureWebSocket(const std::string& ca_file, const std::string& cert_file,
                                  const std::string& key_file, const std::string& connect_proxy);
  // (Its client TLS context is set before the first /wss connection is made.)
  const WebSocketSettings& websocket() const { return websocket_; }

  void Send(core::Message msg) override;
  absl::Status Admit(const core::SenderInfo& from, const core::Address& hop) const override;
  absl::StatusOr<std::shared_ptr<core::Worker>> CarrierFor(const core::Address& hop) override;

  // OK when a message from `from` may leave the host in plaintext through `where`: always for
  // this node's workers and connections' traffic, for apps and decrypted messages only with
  // --insecure-plaintext; otherwise FAILED_PRECONDITION (PLAINTEXT_EGRESS_REFUSED). The one
  // plaintext egress rule.
  absl::Status PlaintextEgress(const core::SenderInfo& from, absl::string_view where) const;

  // `in_use(connection id)` says whether something of this node (a secure channel, a relay)
  // rides on a connection, which then never closes for being idle. Set before traffic starts.
  void SetInUse(std::function<bool(uint64_t)> in_use) { in_use_ = std::move(in_use); }
  bool InUse(uint64_t connection) const { return in_use_ && in_use_(connection); }

  // Lets replies from connection `from` be written to connection `to` (both ids): this node
  // forwarded a message read on `to` out over `from`. No-op when `to` is gone.
  void PairForReplies(uint64_t to, uint64_t from);

  const ConnectionOptions& options() const { return options_; }

  // Bound TCP listener addresses, in the order they were opened.
  std::vector<std::string> ListenAddresses() const;
  // Every listener, in the order they were opened.
  std::vector<ListenerInfo> Listeners() const;
  std::vector<ConnectionInfo> Connections() const;

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
    // Hops not dialled (DIAL_REFUSED), connections refused at accept (TOO_MANY_CONNECTIONS),
    // closed for idleness, and refusal notices dropped for a peer that does not read.
    std::atomic<uint64_t> dials_refused{0}, connections_refused{0}, idle_closed{0},
        notices_dropped{0};
  };
  Stats& stats() { return stats_; }
  const Stats& stats() const { return stats_; }

  // Called, from the closing connection's strand, with the worker address and id of every
  // connection that closes (for the hub: to drop the relays riding on it; for secure channels:
  // to close those it carried). Register before traffic starts.
  using CloseObserver = std::function<void(const std::string& worker, uint64_t id)>;
  void AddCloseObserver(CloseObserver observer);

  // Called by a connection as it starts closing: from then on Outgoing() dials a new one to
  // its peer instead of handing out this one (a channel opened meanwhile would otherwise ride
  // a connection about to close, and close with it).
  void ForgetOutgoing(Connection* connection);
  // Called by a connection when it has closed.
  void Forget(Connection* connection);

 private:
  struct Listener {
    std::unique_ptr<boost::asio::ip::tcp::acceptor> tcp;
    // Accepted TCP sockets become WebSocket streams at this path (with TLS when wss).
    std::optional<std::string> websocket_path;
    bool tls = false;
    std::unique_ptr<boost::asio::local::stream_protocol::acceptor> unix;
    ListenerInfo info;
  };
  // A TCP listener: plain, or for WebSocket at `websocket_path` (TLS when `tls`).
  absl::StatusOr<ListenerInfo> ListenTcp(absl::string_view host_port,
                                         std::optional<std::string> websocket_path, bool tls);
  template <typename Acceptor>
  void Accept(Listener* listener, Acceptor* acceptor);
  std::unique_ptr<Stream> MakeAccepted(const Listener& listener,
                                       boost::asio::ip::tcp::socket socket);
  std::unique_ptr<Stream> MakeAccepted(const Listener& listener,
                                       boost::asio::local::stream_protocol::socket socket);
  void Accepted(std::shared_ptr<Connection> connection);
  std::shared_ptr<Connection> Adopt(std::shared_ptr<Connection> connection);
  // The open or opening connection to `hop`, opened when there is none. UNAVAILABLE
  // (NODE_SHUTTING_DOWN) once shut down.
  absl::StatusOr<std::shared_ptr<Connection>> Outgoing(const core::Address& hop);
  // Loads the system's CA store for /wss peers unless ConfigureWebSocket set a context.
  void EnsureClientTls();
  // Why an accepted connection from `host` must be refused, or OK.
  absl::Status AcceptLimit(const std::string& host) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  core::Router& router_;
  const ConnectionOptions options_;
  WebSocketSettings websocket_;
  std::once_flag default_tls_;  // EnsureClientTls
  mutable Stats stats_;
  mutable veil::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Listener>> listeners_ ABSL_GUARDED_BY(mu_);
  // Outgoing connections by the hop of the routes that opened them.
  absl::flat_hash_map<core::Address, std::shared_ptr<Connection>> outgoing_ ABSL_GUARDED_BY(mu_);
  std::vector<CloseObserver> close_observers_ ABSL_GUARDED_BY(mu_);
  // Every live connection, by worker id.
  absl::flat_hash_map<uint64_t, std::shared_ptr<Connection>> all_ ABSL_GUARDED_BY(mu_);
  // Accepted connections open, in all and by remote address.
  size_t accepted_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, size_t> accepted_by_host_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::string> accepted_hosts_ ABSL_GUARDED_BY(mu_);  // counted ones
  std::function<bool(uint64_t)> in_use_;
};

}  // namespace veil::transport

#endif  // VEIL_SIDECAR_TRANSPORT_NODE_TRANSPORT_H_
