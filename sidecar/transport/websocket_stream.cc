#include "sidecar/transport/websocket_stream.h"

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <type_traits>

#include "absl/strings/str_cat.h"
#include "boost/asio/bind_executor.hpp"
#include "boost/asio/connect.hpp"
#include "boost/asio/ssl/host_name_verification.hpp"
#include "boost/asio/ssl/stream.hpp"
#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/websocket.hpp"
#include "boost/beast/websocket/ssl.hpp"
#include "sidecar/common/error_reason.h"

namespace veil::transport {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using boost::system::error_code;

// Below this much silence either way a connection is pinged; twice as long with no answer and
// it is dropped. (A reverse proxy closes a connection silent for its read timeout: nginx's
// default is 60 s.)
constexpr std::chrono::seconds kIdlePing{20};
// The largest HTTP request header an accepted connection may send before its upgrade.
constexpr uint32_t kMaxRequestHeaderBytes = 8 * 1024;

bool IsIpAddress(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

template <bool kTls>
class WebSocketStream final : public Stream {
  // A plain socket below (not beast::tcp_stream: the WebSocket layer keeps its own idle timer,
  // and our connection bounds the opening; tcp_stream's per-operation timer costs throughput).
  using Lowest = asio::ip::tcp::socket;
  using Next = std::conditional_t<kTls, asio::ssl::stream<Lowest>, Lowest>;

 public:
  // Outgoing.
  WebSocketStream(const core::Strand& strand, const core::Address& hop,
                  const WebSocketSettings& settings)
      : ws_(MakeOutgoing(strand, settings)),
        resolver_(strand),
        settings_(settings),
        outgoing_(true),
        peer_(hop.value()) {
    auto target = core::ParseWebSocketTarget(hop.value());
    if (target.ok()) target_ = *std::move(target);
    remote_host_ = target_.host_port.host;
  }
  // Accepted.
  WebSocketStream(asio::ip::tcp::socket socket, std::string path, const WebSocketSettings& settings)
      : ws_(MakeAccepted(std::move(socket), settings)),
        resolver_(beast::get_lowest_layer(ws_).get_executor()),
        settings_(settings),
        outgoing_(false),
        peer_("unknown"),
        remote_host_("unknown") {
    target_.path = std::move(path);
    error_code ec;
    auto ep = beast::get_lowest_layer(ws_).remote_endpoint(ec);
    if (!ec) {
      peer_ = core::FormatHostPort(ep.address().to_string(), ep.port());
      remote_host_ = ep.address().to_string();
    }
    Tune();
  }

  absl::string_view transport() const override { return kTls ? "wss" : "ws"; }
  const std::string& peer() const override { return peer_; }
  const std::string& remote_host() const override { return remote_host_; }

  void Open(std::shared_ptr<StreamEvents> events) override {
    events_ = events;
    if (outgoing_) {
      Resolve(std::move(events));
    } else {
      ServerTls();
    }
  }

  void ReadSome(std::span<char> into, std::shared_ptr<StreamEvents> events) override {
    ws_.async_read_some(asio::buffer(into.data(), into.size()),
                        Bind([events = std::move(events)](const error_code& ec, size_t n) {
                          events->OnRead(ec == websocket::error::closed ? asio::error::eof : ec, n);
                        }));
  }

  void WriteAll(const std::vector<asio::const_buffer>& buffers,
                std::shared_ptr<StreamEvents> events) override {
    ws_.async_write(buffers, Bind([events = std::move(events)](const error_code& ec, size_t n) {
                      events->OnWritten(ec, n);
                    }));
  }

  void ShutdownSend() override {
    error_code ignored;
    beast::get_lowest_layer(ws_).shutdown(asio::socket_base::shutdown_send, ignored);
  }

  void Cut() override { ::shutdown(beast::get_lowest_layer(ws_).native_handle(), SHUT_RDWR); }

  void Close() override {
    resolver_.cancel();
    error_code ignored;
    auto& socket = beast::get_lowest_layer(ws_);
    socket.shutdown(asio::socket_base::shutdown_both, ignored);
    socket.close(ignored);
    events_.reset();
  }

 private:
  static Next MakeOutgoing(const core::Strand& strand, const WebSocketSettings& settings) {
    if constexpr (kTls) {
      return Next(Lowest(strand), *settings.client_tls);
    } else {
      return Next(strand);
    }
  }
  static Next MakeAccepted(asio::ip::tcp::socket socket, const WebSocketSettings& settings) {
    if constexpr (kTls) {
      return Next(Lowest(std::move(socket)), *settings.server_tls);
    } else {
      return Next(std::move(socket));
    }
  }

  template <typename F>
  auto Bind(F&& f) {
    return asio::bind_executor(beast::get_lowest_layer(ws_).get_executor(), std::forward<F>(f));
  }

  void Opened(absl::Status status) {
    std::shared_ptr<StreamEvents> events = events_.lock();
    events_.reset();
    if (events) events->OnOpened(std::move(status));
  }

  void Tune() {
    error_code ignored;
    auto& socket = beast::get_lowest_layer(ws_);
    socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    socket.set_option(asio::socket_base::keep_alive(true), ignored);
  }

  // Outgoing: resolve the proxy or the target, connect, CONNECT, TLS, upgrade.
  void Resolve(std::shared_ptr<StreamEvents> keep) {
    const bool proxied = !settings_.connect_proxy.empty();
    core::HostPort first = target_.host_port;
    if (proxied) {
      auto proxy = core::ParseHostPort(settings_.connect_proxy);
      if (!proxy.ok()) return Opened(proxy.status());
      first = *std::move(proxy);
    }
    resolver_.async_resolve(
        first.host, std::to_string(first.port),
        Bind([this, proxied, keep = std::move(keep)](
                 const error_code& ec, asio::ip::tcp::resolver::results_type results) {
          if (ec) {
            return Opened(ConnectFailed("cannot resolve", proxied ? settings_.connect_proxy : peer_,
                                        ec.message()));
          }
          asio::async_connect(beast::get_lowest_layer(ws_), results,
                              Bind([this, proxied, keep](const error_code& ec, const auto&) {
                                if (ec) {
                                  return Opened(ConnectFailed(
                                      "cannot connect to",
                                      proxied ? settings_.connect_proxy : peer_, ec.message()));
                                }
                                Tune();
                                if (proxied) {
                                  ProxyConnect();
                                } else {
                                  ClientTls();
                                }
                              }));
        }));
  }

  void ProxyConnect() {
    const std::string authority =
        core::FormatHostPort(target_.host_port.host, target_.host_port.port);
    proxy_request_ = {http::verb::connect, authority, 11};
    proxy_request_.set(http::field::host, authority);
    proxy_request_.set(http::field::user_agent, settings_.agent);
    http::async_write(
        beast::get_lowest_layer(ws_), proxy_request_,
        Bind([this, keep = events_.lock()](const error_code& ec, size_t) {
          if (ec) return Opened(ConnectFailed("cannot reach", peer_, "the proxy: " + ec.message()));
          proxy_response_.emplace();
          proxy_response_->skip(true);  // a CONNECT answer has no body
          http::async_read(
              beast::get_lowest_layer(ws_), buffer_, *proxy_response_,
              Bind([this, keep](const error_code& ec, size_t) {
                if (ec)
                  return Opened(ConnectFailed("cannot reach", peer_, "the proxy: " + ec.message()));
                const auto& answer = proxy_response_->get();
                if (answer.result() != http::status::ok) {
                  return Opened(ConnectFailed(
                      "cannot reach", peer_,
                      absl::StrCat("the proxy ", settings_.connect_proxy, " answered ",
                                   answer.result_int(), " ", std::string(answer.reason()))));
                }
                proxy_response_.reset();
                ClientTls();
              }));
        }));
  }

  void ClientTls() {
    if constexpr (kTls) {
      auto& tls = ws_.next_layer();
      const std::string& host = target_.host_port.host;
      if (!IsIpAddress(host)) SSL_set_tlsext_host_name(tls.native_handle(), host.c_str());
      tls.set_verify_mode(asio::ssl::verify_peer);
      tls.set_verify_callback(asio::ssl::host_name_verification(host));
      tls.async_handshake(asio::ssl::stream_base::client,
                          Bind([this, keep = events_.lock()](const error_code& ec) {
                            if (ec) {
                              return Opened(ConnectFailed("TLS with", peer_, TlsError(ec)));
                            }
                            Upgrade();
                          }));
    } else {
      Upgrade();
    }
  }

  void Upgrade() {
    ws_.set_option(websocket::stream_base::decorator(
        [agent = settings_.agent](auto& request) { request.set(http::field::user_agent, agent); }));
    ws_.async_handshake(
        upgrade_response_, core::FormatHostPort(target_.host_port.host, target_.host_port.port),
        target_.path, Bind([this, keep = events_.lock()](const error_code& ec) {
          if (ec) {
            std::string why = ec.message();
            if (upgrade_response_.result_int() != 0 &&
                upgrade_response_.result() != http::status::switching_protocols) {
              why = absl::StrCat("the server answered ", upgrade_response_.result_int(), " ",
                                 std::string(upgrade_response_.reason()),
                                 " instead of a WebSocket upgrade");
            }
            return Opened(ConnectFailed("WebSocket upgrade with", peer_, why));
          }
          Configure();
          Opened(absl::OkStatus());
        }));
  }

  // Accepted: TLS, the HTTP request, the upgrade.
  void ServerTls() {
    if constexpr (kTls) {
      ws_.next_layer().async_handshake(
          asio::ssl::stream_base::server, Bind([this, keep = events_.lock()](const error_code& ec) {
            if (ec) {
              return Opened(ConnectFailed("TLS from", peer_, TlsError(ec)));
            }
            ReadRequest();
          }));
    } else {
      ReadRequest();
    }
  }

  void ReadRequest() {
    request_.emplace();
    request_->header_limit(kMaxRequestHeaderBytes);
    request_->body_limit(0);
    http::async_read(ws_.next_layer(), buffer_, *request_,
                     Bind([this, keep = events_.lock()](const error_code& ec, size_t) {
                       if (ec)
                         return Opened(ConnectFailed("HTTP request from", peer_, ec.message()));
                       auto request = request_->release();
                       request_.reset();
                       absl::string_view target(request.target().data(), request.target().size());
                       target = target.substr(0, target.find('?'));
                       if (!websocket::is_upgrade(request)) {
                         return Answer(http::status::upgrade_required, request.version(),
                                       "this is a veil node: it speaks WebSocket here\n");
                       }
                       if (target != target_.path) {
                         return Answer(http::status::not_found, request.version(),
                                       absl::StrCat("no WebSocket listener at this path\n"));
                       }
                       ws_.set_option(websocket::stream_base::decorator(
                           [agent = settings_.agent](auto& response) {
                             response.set(http::field::server, agent);
                           }));
                       ws_.async_accept(request, Bind([this, keep](const error_code& ec) {
                                          if (ec)
                                            return Opened(ConnectFailed("WebSocket upgrade from",
                                                                        peer_, ec.message()));
                                          Configure();
                                          Opened(absl::OkStatus());
                                        }));
                     }));
  }

  // Answers a request that is not for us, then gives up the connection.
  void Answer(http::status status, unsigned version, std::string body) {
    answer_.emplace(status, version);
    answer_->set(http::field::server, settings_.agent);
    answer_->set(http::field::content_type, "text/plain");
    if (status == http::status::upgrade_required) {
      answer_->set(http::field::upgrade, "websocket");
      answer_->set(http::field::connection, "Upgrade");
    }
    answer_->body() = std::move(body);
    answer_->keep_alive(false);
    answer_->prepare_payload();
    http::async_write(
        ws_.next_layer(), *answer_,
        Bind([this, status, keep = events_.lock()](const error_code&, size_t) {
          Opened(ConnectFailed("HTTP request from", peer_,
                               absl::StrCat("answered ", static_cast<unsigned>(status),
                                            ": not a WebSocket upgrade to ", target_.path)));
        }));
  }

  void Configure() {
    websocket::stream_base::timeout timeout{};
    timeout.handshake_timeout = std::chrono::seconds(10);  // the closing handshake
    timeout.idle_timeout = kIdlePing;
    timeout.keep_alive_pings = true;
    ws_.set_option(timeout);
    ws_.binary(true);
    ws_.auto_fragment(false);
    ws_.read_message_max(0);             // frames inside are limited; messages need not be
    ws_.write_buffer_bytes(256 * 1024);  // a client masks into it: fewer, larger writes
    // Masks keep a browser's script from steering a transparent proxy's cache with chosen
    // bytes; a node's payload is ciphertext it did not choose, so the fast generator will do.
    ws_.secure_prng(false);
  }

  static std::string TlsError(const error_code& ec) {
    std::string why = ec.message();
    if (ec.category() == asio::error::get_ssl_category()) {
      // "certificate verify failed" and the like, with OpenSSL's own words.
      char text[256];
      ERR_error_string_n(static_cast<unsigned long>(ec.value()), text, sizeof(text));
      why = text;
    }
    return why;
  }

  websocket::stream<Next> ws_;
  asio::ip::tcp::resolver resolver_;
  const WebSocketSettings& settings_;
  const bool outgoing_;
  std::string peer_;
  std::string remote_host_;
  core::WebSocketTarget target_;
  // The connection, while Open() runs. Weak: each step's handler holds it strongly while it is
  // in flight, and a strong one here would be a cycle (connection -> stream -> connection) that
  // outlives an io_context stopped mid-handshake.
  std::weak_ptr<StreamEvents> events_;
  beast::flat_buffer buffer_;
  http::request<http::empty_body> proxy_request_;
  std::optional<http::response_parser<http::empty_body>> proxy_response_;
  websocket::response_type upgrade_response_;
  std::optional<http::request_parser<http::empty_body>> request_;
  std::optional<http::response<http::string_body>> answer_;
};

}  // namespace

absl::Status LoadTls(const std::string& ca_file, const std::string& cert_file,
                     const std::string& key_file, WebSocketSettings& settings) {
  auto client = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  client->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1);
  error_code ec;
  if (ca_file.empty()) {
    client->set_default_verify_paths(ec);
  } else {
    client->load_verify_file(ca_file, ec);
  }
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat("cannot load the CA certificates ",
                                                   ca_file.empty() ? "of the system" : "", ca_file,
                                                   ": ", ec.message()));
  }
  settings.client_tls = std::move(client);
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (cert_file.empty()) return absl::OkStatus();
  auto server = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  server->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  server->use_certificate_chain_file(cert_file, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot use the certificate chain in ", cert_file, ": ", ec.message()));
  }
  server->use_private_key_file(key_file, asio::ssl::context::pem, ec);
  if (ec) {
    // Never the key's bytes: only where it is and what is wrong.
    return absl::InvalidArgumentError(
        absl::StrCat("cannot use the private key in ", key_file, ": ", ec.message()));
  }
  settings.server_tls = std::move(server);
  return absl::OkStatus();
}

std::unique_ptr<Stream> OutgoingWebSocket(const core::Strand& strand, const core::Address& hop,
                                          const WebSocketSettings& settings) {
  if (hop.type() == core::AddressType::kWss) {
    return std::make_unique<WebSocketStream<true>>(strand, hop, settings);
  }
  return std::make_unique<WebSocketStream<false>>(strand, hop, settings);
}

std::unique_ptr<Stream> AcceptedWebSocket(boost::asio::ip::tcp::socket socket, bool tls,
                                          std::string path, const WebSocketSettings& settings) {
  if (tls) {
    return std::make_unique<WebSocketStream<true>>(std::move(socket), std::move(path), settings);
  }
  return std::make_unique<WebSocketStream<false>>(std::move(socket), std::move(path), settings);
}

}  // namespace veil::transport
