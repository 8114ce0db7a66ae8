// WebSocket streams (stream.h) for "/ws/HOST:PORT[%2FPATH]" and "/wss/…" hops and the
// --ws-listen / --wss-listen listeners, on Boost.Beast over Boost.Asio, TLS by OpenSSL through
// boost::asio::ssl (docs/architecture.md says why these).
//
// On the wire (docs/protocol.md, "WebSocket"): an HTTP/1.1 upgrade to WebSocket (RFC 6455) at
// the URL path, no extensions; then binary messages whose payloads, concatenated, are the
// connection's byte stream — the same version byte and frames as over TCP. A writer sends each
// batch of frames as one message; a reader does not care where messages begin or end, so any
// intermediary may re-fragment them. Idle connections are kept alive with pings (a reverse
// proxy closes a silent one), and a peer that answers nothing for the idle timeout is dropped.
//
// Outgoing: resolve, TCP connect (through an HTTP CONNECT proxy when one is set), TLS for /wss
// (SNI, certificate verified against the system store or the given CA file, and the host name
// checked), then the upgrade. Accepted: TLS for a --wss-listen listener, then the HTTP request:
// not an upgrade -> 426, another path -> 404, then the upgrade answer.
//
// Thread-safety: as Stream.
#ifndef VEIL_SIDECAR_TRANSPORT_WEBSOCKET_STREAM_H_
#define VEIL_SIDECAR_TRANSPORT_WEBSOCKET_STREAM_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/ssl/context.hpp"
#include "sidecar/core/address.h"
#include "sidecar/transport/stream.h"

namespace veil::transport {

// What every WebSocket stream of a node shares.
struct WebSocketSettings {
  // Verifies /wss peers: the system's CA store, or only `ca_file`'s certificates when set.
  std::shared_ptr<boost::asio::ssl::context> client_tls;
  // Presents the --tls-cert certificate on --wss-listen listeners; null when none is set.
  std::shared_ptr<boost::asio::ssl::context> server_tls;
  // "host:port" of an HTTP CONNECT proxy for outgoing /ws and /wss connections, or "".
  std::string connect_proxy;
  // The User-Agent and Server header.
  std::string agent = "veild";
};

// The TLS contexts for `settings` from PEM files: `ca_file` ("" for the system store) for
// clients, `cert_file` and `key_file` (both or neither) for servers. INVALID_ARGUMENT naming the
// file that cannot be used (never quoting it).
absl::Status LoadTls(const std::string& ca_file, const std::string& cert_file,
                     const std::string& key_file, WebSocketSettings& settings);

// A stream to the /ws or /wss `hop`, not yet connected.
std::unique_ptr<Stream> OutgoingWebSocket(const core::Strand& strand, const core::Address& hop,
                                          const WebSocketSettings& settings);
// A stream over an accepted TCP socket of a WebSocket listener serving `path` (TLS first when
// `tls`). `socket` must use the connection's strand as its executor.
std::unique_ptr<Stream> AcceptedWebSocket(boost::asio::ip::tcp::socket socket, bool tls,
                                          std::string path, const WebSocketSettings& settings);

}  // namespace veil::transport

#endif  // VEIL_SIDECAR_TRANSPORT_WEBSOCKET_STREAM_H_
