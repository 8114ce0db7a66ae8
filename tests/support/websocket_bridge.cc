#include "tests/support/websocket_bridge.h"

#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <type_traits>

#include "boost/asio/connect.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/posix/stream_descriptor.hpp"
#include "boost/asio/ssl.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/websocket.hpp"
#include "boost/beast/websocket/ssl.hpp"

namespace veil::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

template <bool kTls>
class Bridge final : public WebSocketBridge {
  using Next = std::conditional_t<kTls, asio::ssl::stream<beast::tcp_stream>, beast::tcp_stream>;

 public:
  Bridge(const std::string& ca_file)
      : tls_(asio::ssl::context::tls_client), ws_(MakeNext()), local_(io_) {
    if (!ca_file.empty()) tls_.load_verify_file(ca_file);
  }
  ~Bridge() override {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  bool Connect(const core::WebSocketTarget& target, int* fd) {
    boost::system::error_code ec;
    asio::ip::tcp::resolver resolver(io_);
    auto results =
        resolver.resolve(target.host_port.host, std::to_string(target.host_port.port), ec);
    if (ec) return false;
    beast::get_lowest_layer(ws_).connect(results, ec);
    if (ec) return false;
    if constexpr (kTls) {
      ws_.next_layer().set_verify_mode(asio::ssl::verify_peer);
      ws_.next_layer().handshake(asio::ssl::stream_base::client, ec);
      if (ec) return false;
    }
    ws_.handshake(core::FormatHostPort(target.host_port.host, target.host_port.port), target.path,
                  ec);
    if (ec) return false;
    ws_.binary(true);
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return false;
    local_.assign(pair[0]);
    *fd = pair[1];
    FromWebSocket();
    FromLocal();
    thread_ = std::thread([this] { io_.run(); });
    return true;
  }

 private:
  Next MakeNext() {
    if constexpr (kTls) {
      return Next(io_, tls_);
    } else {
      return Next(io_);
    }
  }
  void Stop() {
    boost::system::error_code ignored;
    local_.close(ignored);
    beast::get_lowest_layer(ws_).socket().close(ignored);
  }
  void FromWebSocket() {
    ws_.async_read_some(asio::buffer(in_), [this](boost::system::error_code ec, size_t n) {
      if (ec) return Stop();
      asio::async_write(local_, asio::buffer(in_, n), [this](boost::system::error_code ec, size_t) {
        if (ec) return Stop();
        FromWebSocket();
      });
    });
  }
  void FromLocal() {
    local_.async_read_some(asio::buffer(out_), [this](boost::system::error_code ec, size_t n) {
      if (ec) return Stop();
      ws_.async_write(asio::buffer(out_, n), [this](boost::system::error_code ec, size_t) {
        if (ec) return Stop();
        FromLocal();
      });
    });
  }

  asio::io_context io_;
  asio::ssl::context tls_;
  websocket::stream<Next> ws_;
  asio::posix::stream_descriptor local_;
  char in_[64 * 1024];
  char out_[64 * 1024];
  std::thread thread_;
};

}  // namespace

std::unique_ptr<WebSocketBridge> WebSocketBridge::Open(const core::Address& hop,
                                                       const std::string& ca_file, int* fd) {
  auto target = core::ParseWebSocketTarget(hop.value());
  if (!target.ok()) return nullptr;
  if (hop.type() == core::AddressType::kWss) {
    auto bridge = std::make_unique<Bridge<true>>(ca_file);
    if (!bridge->Connect(*target, fd)) return nullptr;
    return bridge;
  }
  auto bridge = std::make_unique<Bridge<false>>(ca_file);
  if (!bridge->Connect(*target, fd)) return nullptr;
  return bridge;
}

}  // namespace veil::testing
