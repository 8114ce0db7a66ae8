#include "sidecar/transport/stream.h"

#include <sys/socket.h>

#include <cerrno>
#include <limits>

#include "absl/strings/str_cat.h"
#include "boost/asio/bind_executor.hpp"
#include "boost/asio/connect.hpp"
#include "boost/asio/write.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/transport/websocket_stream.h"

namespace veil::transport {
namespace {

// Write everything queued, in as few send calls as the socket takes. (asio's own transfer_all
// hands the socket at most 64 KiB per call; each call has a fixed cost, and a hub forwarding
// 64 KiB messages spent 0.9 CPU-s per GB that way against 0.64 with this: docs/performance.md.)
struct WriteAllCondition {
  size_t operator()(const boost::system::error_code& ec, size_t) const {
    return ec ? 0 : std::numeric_limits<size_t>::max();
  }
};

// What TCP and Unix stream sockets share: everything but connecting.
template <typename Protocol>
class SocketStream : public Stream {
 public:
  using Socket = typename Protocol::socket;

  SocketStream(Socket socket, std::string peer, std::string remote_host, bool accepted)
      : socket_(std::move(socket)),
        peer_(std::move(peer)),
        remote_host_(std::move(remote_host)),
        accepted_(accepted) {}

  const std::string& peer() const override { return peer_; }
  const std::string& remote_host() const override { return remote_host_; }

  void ReadSome(std::span<char> into, std::shared_ptr<StreamEvents> events) override {
    socket_.async_read_some(boost::asio::buffer(into.data(), into.size()),
                            boost::asio::bind_executor(
                                socket_.get_executor(),
                                [events = std::move(events)](const boost::system::error_code& ec,
                                                             size_t n) { events->OnRead(ec, n); }));
  }

  void WriteAll(const std::vector<boost::asio::const_buffer>& buffers,
                std::shared_ptr<StreamEvents> events) override {
    boost::asio::async_write(
        socket_, buffers, WriteAllCondition{},
        boost::asio::bind_executor(
            socket_.get_executor(),
            [events = std::move(events)](const boost::system::error_code& ec, size_t n) {
              events->OnWritten(ec, n);
            }));
  }

  void ShutdownSend() override {
    boost::system::error_code ignored;
    socket_.shutdown(boost::asio::socket_base::shutdown_send, ignored);
  }

  void Close() override {
    boost::system::error_code ignored;
    socket_.shutdown(boost::asio::socket_base::shutdown_both, ignored);
    socket_.close(ignored);
  }

  // Straight to the descriptor: the socket object is the strand's, the descriptor is not (it
  // stays valid until Close, which the caller does not race).
  size_t WriteNow(boost::asio::const_buffer bytes, boost::system::error_code& ec) override {
    const int fd = socket_.native_handle();
    const char* data = static_cast<const char*>(bytes.data());
    size_t written = 0;
    ec.clear();
    while (written < bytes.size()) {
      const ssize_t n =
          ::send(fd, data + written, bytes.size() - written, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        written += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        ec = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
                 ? boost::system::error_code(boost::asio::error::would_block)
                 : boost::system::error_code(n < 0 ? errno : EPIPE,
                                             boost::system::system_category());
        break;
      }
    }
    return written;
  }

  void Cut() override { ::shutdown(socket_.native_handle(), SHUT_RDWR); }

 protected:
  Socket socket_;
  std::string peer_;
  std::string remote_host_;
  const bool accepted_;  // Open() has nothing to do
};

class TcpStream final : public SocketStream<boost::asio::ip::tcp> {
 public:
  // Outgoing, to "host:port".
  TcpStream(const core::Strand& strand, std::string host_port)
      : SocketStream(boost::asio::ip::tcp::socket(strand), host_port, HostOf(host_port), false),
        resolver_(strand) {}
  // Accepted.
  explicit TcpStream(boost::asio::ip::tcp::socket socket)
      : SocketStream(std::move(socket), "unknown", "unknown", true),
        resolver_(socket_.get_executor()) {
    boost::system::error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    if (!ec) {
      peer_ = core::FormatHostPort(ep.address().to_string(), ep.port());
      remote_host_ = ep.address().to_string();
    }
    Tune();
  }

  absl::string_view transport() const override { return "tcp"; }

  void Open(std::shared_ptr<StreamEvents> events) override {
    if (accepted_) return events->OnOpened(absl::OkStatus());
    auto host_port = core::ParseHostPort(peer_);
    if (!host_port.ok()) {  // the route parser validated it; defensive only
      events->OnOpened(host_port.status());
      return;
    }
    resolver_.async_resolve(
        host_port->host, std::to_string(host_port->port),
        boost::asio::bind_executor(
            socket_.get_executor(), [this, events = std::move(events)](
                                        const boost::system::error_code& ec,
                                        boost::asio::ip::tcp::resolver::results_type results) {
              if (ec) {
                events->OnOpened(ConnectFailed("cannot resolve", peer_, ec.message()));
                return;
              }
              boost::asio::async_connect(
                  socket_, results,
                  boost::asio::bind_executor(
                      socket_.get_executor(),
                      [this, events](const boost::system::error_code& ec, const auto&) {
                        if (!ec) Tune();
                        events->OnOpened(
                            ec ? ConnectFailed("cannot connect to", peer_, ec.message())
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
    boost::system::error_code ignored;
    socket_.set_option(boost::asio::ip::tcp::no_delay(true), ignored);
    socket_.set_option(boost::asio::socket_base::keep_alive(true), ignored);
  }

  boost::asio::ip::tcp::resolver resolver_;
};

class UnixStream final : public SocketStream<boost::asio::local::stream_protocol> {
 public:
  // Outgoing, to the socket at `path`.
  UnixStream(const core::Strand& strand, std::string path)
      : SocketStream(boost::asio::local::stream_protocol::socket(strand), path, path, false) {}
  // Accepted: the peer is known by its user (SO_PEERCRED), which the per-address limits count.
  explicit UnixStream(boost::asio::local::stream_protocol::socket socket)
      : SocketStream(std::move(socket), "unknown", "unknown", true) {
    ucred cred{};
    socklen_t size = sizeof(cred);
    if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &size) == 0) {
      peer_ = absl::StrCat("uid ", cred.uid, " pid ", cred.pid);
      remote_host_ = absl::StrCat("uid ", cred.uid);
    }
  }

  absl::string_view transport() const override { return "uds"; }

  void Open(std::shared_ptr<StreamEvents> events) override {
    if (accepted_) return events->OnOpened(absl::OkStatus());
    socket_.async_connect(
        boost::asio::local::stream_protocol::endpoint(peer_),
        boost::asio::bind_executor(
            socket_.get_executor(),
            [this, events = std::move(events)](const boost::system::error_code& ec) {
              events->OnOpened(ec ? ConnectFailed("cannot connect to", peer_, ec.message())
                                  : absl::OkStatus());
            }));
  }
};

}  // namespace

absl::Status ConnectFailed(absl::string_view what, absl::string_view peer, absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kUnavailable, absl::StrCat(what, " ", peer, ": ", why),
                         reason::kConnectionFailed);
}

std::unique_ptr<Stream> OutgoingStream(const core::Strand& strand, const core::Address& hop,
                                       const WebSocketSettings& websocket) {
  switch (hop.type()) {
    case core::AddressType::kUds:
      return std::make_unique<UnixStream>(strand, hop.value());
    case core::AddressType::kWs:
    case core::AddressType::kWss:
      return OutgoingWebSocket(strand, hop, websocket);
    default:
      return std::make_unique<TcpStream>(strand, hop.value());
  }
}

std::unique_ptr<Stream> AcceptedStream(boost::asio::ip::tcp::socket socket) {
  return std::make_unique<TcpStream>(std::move(socket));
}

std::unique_ptr<Stream> AcceptedStream(boost::asio::local::stream_protocol::socket socket) {
  return std::make_unique<UnixStream>(std::move(socket));
}

}  // namespace veil::transport
