#include "sidecar/transport/stream.h"

#include <sys/socket.h>

#include <limits>

#include "absl/strings/str_cat.h"
#include "asio/bind_executor.hpp"
#include "asio/connect.hpp"
#include "asio/write.hpp"
#include "sidecar/common/error_reason.h"

namespace veil::transport {
namespace {

// Write everything queued, in as few send calls as the socket takes. (asio's own transfer_all
// hands the socket at most 64 KiB per call; each call has a fixed cost, and a hub forwarding
// 64 KiB messages spent 0.9 CPU-s per GB that way against 0.64 with this: docs/performance.md.)
struct WriteAllCondition {
  size_t operator()(const asio::error_code& ec, size_t) const {
    return ec ? 0 : std::numeric_limits<size_t>::max();
  }
};

absl::Status ConnectFailed(absl::string_view what, absl::string_view peer,
                           const asio::error_code& ec) {
  return ErrorWithReason(absl::StatusCode::kUnavailable,
                         absl::StrCat(what, " ", peer, ": ", ec.message()),
                         reason::kConnectionFailed);
}

// What TCP and Unix stream sockets share: everything but connecting.
template <typename Protocol>
class SocketStream : public Stream {
 public:
  using Socket = typename Protocol::socket;

  SocketStream(Socket socket, std::string peer, std::string remote_host)
      : socket_(std::move(socket)), peer_(std::move(peer)), remote_host_(std::move(remote_host)) {}

  const std::string& peer() const override { return peer_; }
  const std::string& remote_host() const override { return remote_host_; }

  void ReadSome(std::span<char> into, std::shared_ptr<StreamEvents> events) override {
    socket_.async_read_some(
        asio::buffer(into.data(), into.size()),
        asio::bind_executor(socket_.get_executor(),
                            [events = std::move(events)](const asio::error_code& ec, size_t n) {
                              events->OnRead(ec, n);
                            }));
  }

  void WriteAll(const std::vector<asio::const_buffer>& buffers,
                std::shared_ptr<StreamEvents> events) override {
    asio::async_write(
        socket_, buffers, WriteAllCondition{},
        asio::bind_executor(socket_.get_executor(),
                            [events = std::move(events)](const asio::error_code& ec, size_t n) {
                              events->OnWritten(ec, n);
                            }));
  }

  void ShutdownSend() override {
    asio::error_code ignored;
    socket_.shutdown(asio::socket_base::shutdown_send, ignored);
  }

  void Close() override {
    asio::error_code ignored;
    socket_.shutdown(asio::socket_base::shutdown_both, ignored);
    socket_.close(ignored);
  }

 protected:
  Socket socket_;
  std::string peer_;
  std::string remote_host_;
};

class TcpStream final : public SocketStream<asio::ip::tcp> {
 public:
  // Outgoing, to "host:port".
  TcpStream(const core::Strand& strand, std::string host_port)
      : SocketStream(asio::ip::tcp::socket(strand), host_port, HostOf(host_port)),
        resolver_(strand) {}
  // Accepted.
  explicit TcpStream(asio::ip::tcp::socket socket)
      : SocketStream(std::move(socket), "unknown", "unknown"), resolver_(socket_.get_executor()) {
    asio::error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    if (!ec) {
      peer_ = core::FormatHostPort(ep.address().to_string(), ep.port());
      remote_host_ = ep.address().to_string();
    }
    Tune();
  }

  absl::string_view transport() const override { return "tcp"; }

  void Open(std::shared_ptr<StreamEvents> events) override {
    auto host_port = core::ParseHostPort(peer_);
    if (!host_port.ok()) {  // the route parser validated it; defensive only
      events->OnOpened(host_port.status());
      return;
    }
    resolver_.async_resolve(
        host_port->host, std::to_string(host_port->port),
        asio::bind_executor(
            socket_.get_executor(),
            [this, events = std::move(events)](const asio::error_code& ec,
                                               asio::ip::tcp::resolver::results_type results) {
              if (ec) {
                events->OnOpened(ConnectFailed("cannot resolve", peer_, ec));
                return;
              }
              asio::async_connect(
                  socket_, results,
                  asio::bind_executor(socket_.get_executor(),
                                      [this, events](const asio::error_code& ec, const auto&) {
                                        if (!ec) Tune();
                                        events->OnOpened(
                                            ec ? ConnectFailed("cannot connect to", peer_, ec)
                                               : absl::OkStatus());
                                      }));
            }));
  }

  void Close() override {
    resolver_.cancel();
    SocketStream::Close();
  }

 private:
  static std::string HostOf(const std::string& host_port) {
    auto parsed = core::ParseHostPort(host_port);
    return parsed.ok() ? parsed->host : host_port;
  }
  void Tune() {
    asio::error_code ignored;
    socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
    socket_.set_option(asio::socket_base::keep_alive(true), ignored);
  }

  asio::ip::tcp::resolver resolver_;
};

class UnixStream final : public SocketStream<asio::local::stream_protocol> {
 public:
  // Outgoing, to the socket at `path`.
  UnixStream(const core::Strand& strand, std::string path)
      : SocketStream(asio::local::stream_protocol::socket(strand), path, path) {}
  // Accepted: the peer is known by its user (SO_PEERCRED), which the per-address limits count.
  explicit UnixStream(asio::local::stream_protocol::socket socket)
      : SocketStream(std::move(socket), "unknown", "unknown") {
    ucred cred{};
    socklen_t size = sizeof(cred);
    if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &size) == 0) {
      peer_ = absl::StrCat("uid ", cred.uid, " pid ", cred.pid);
      remote_host_ = absl::StrCat("uid ", cred.uid);
    }
  }

  absl::string_view transport() const override { return "uds"; }

  void Open(std::shared_ptr<StreamEvents> events) override {
    socket_.async_connect(
        asio::local::stream_protocol::endpoint(peer_),
        asio::bind_executor(socket_.get_executor(), [this, events = std::move(events)](
                                                        const asio::error_code& ec) {
          events->OnOpened(ec ? ConnectFailed("cannot connect to", peer_, ec) : absl::OkStatus());
        }));
  }
};

}  // namespace

std::unique_ptr<Stream> OutgoingStream(const core::Strand& strand, const core::Address& hop) {
  if (hop.type() == core::AddressType::kUds)
    return std::make_unique<UnixStream>(strand, hop.value());
  return std::make_unique<TcpStream>(strand, hop.value());
}

std::unique_ptr<Stream> AcceptedStream(asio::ip::tcp::socket socket) {
  return std::make_unique<TcpStream>(std::move(socket));
}

std::unique_ptr<Stream> AcceptedStream(asio::local::stream_protocol::socket socket) {
  return std::make_unique<UnixStream>(std::move(socket));
}

}  // namespace veil::transport
