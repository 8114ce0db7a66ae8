// Stream: the byte stream under a node connection (connection.h), behind one small interface,
// so that one Connection class frames, queues, paces and polices every transport alike.
//
//   TcpStream        a TCP socket: "/tcp/HOST:PORT" hops, --tcp-listen
//   UnixStream       a Unix stream socket: "/uds/PATH" hops, --uds-listen
//   WebSocketStream  WebSocket, over TLS or not: "/ws", "/wss" hops, --ws-listen, --wss-listen
//                    (websocket_stream.h)
//
// A stream does I/O only: it connects (outgoing), reads into the buffer it is given, writes
// every byte of the buffers it is given, and reports each completion to its connection
// (StreamEvents) on the connection's strand. It owns no buffer and makes no decision.
//
// Thread-safety: every call on the owning connection's strand, but WriteNow and Cut (any thread).
#ifndef VEIL_SIDECAR_TRANSPORT_STREAM_H_
#define VEIL_SIDECAR_TRANSPORT_STREAM_H_

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "boost/asio/buffer.hpp"
#include "boost/asio/error.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/local/stream_protocol.hpp"
#include "boost/system/error_code.hpp"
#include "sidecar/core/address.h"
#include "sidecar/core/worker.h"

namespace veil::transport {

// What a stream reports to its connection. The connection keeps itself alive while an
// operation is in flight (the stream holds the shared_ptr it was given until it completes).
class StreamEvents {
 public:
  // Open() finished: OK, or UNAVAILABLE (CONNECTION_FAILED) saying why.
  virtual void OnOpened(absl::Status status) = 0;
  virtual void OnRead(const boost::system::error_code& ec, size_t n) = 0;
  virtual void OnWritten(const boost::system::error_code& ec, size_t n) = 0;

 protected:
  ~StreamEvents() = default;
};

class Stream {
 public:
  virtual ~Stream() = default;

  // The route hop naming the transport ("tcp", "uds", "ws", "wss"), for worker names ("_tcp_…")
  // and logs.
  virtual absl::string_view transport() const = 0;
  // The peer as the logs and the API show it: "host:port", or the socket path (outgoing) /
  // "uid N" (accepted Unix socket).
  virtual const std::string& peer() const = 0;
  // What accepted connections are counted and limited by: the remote IP address, or for a Unix
  // socket the peer's user ("uid N"); for outgoing ones the host or path dialled.
  virtual const std::string& remote_host() const = 0;

  // Makes the stream ready to carry frames — outgoing: resolves and connects (and for
  // WebSocket: TLS, the upgrade); accepted: nothing for a socket, the server's side of TLS and
  // the upgrade for WebSocket — then events->OnOpened (at once when there is nothing to do).
  virtual void Open(std::shared_ptr<StreamEvents> events) = 0;
  // One read of up to `into.size()` bytes; then events->OnRead.
  virtual void ReadSome(std::span<char> into, std::shared_ptr<StreamEvents> events) = 0;
  // Writes every byte of `buffers` (which must stay valid until it completes), in as few
  // system calls as the socket takes; then events->OnWritten.
  virtual void WriteAll(const std::vector<boost::asio::const_buffer>& buffers,
                        std::shared_ptr<StreamEvents> events) = 0;
  // Ends the writing side (the peer reads end of stream).
  virtual void ShutdownSend() = 0;
  // Cancels what is in flight and closes. Idempotent.
  virtual void Close() = 0;

  // Direct writing, for an owner that writes from the thread that has the bytes (the serve
  // socket's routing threads) instead of handing them to the strand: writes what the socket
  // takes at once, without waiting, and returns how many bytes; `ec` is would_block when the
  // socket is full (write the rest with WriteAll), another error when the peer is gone. Any
  // thread, while no other write is in flight and the stream is not closed. A stream that
  // cannot (WebSocket: its framing state is the strand's) returns 0 with
  // operation_not_supported.
  virtual size_t WriteNow(boost::asio::const_buffer bytes, boost::system::error_code& ec) {
    ec = boost::asio::error::operation_not_supported;
    (void)bytes;
    return 0;
  }
  // Shuts both directions down, from any thread: what is in flight fails, the peer reads end of
  // stream; the descriptor stays open (and not reusable) until Close. Idempotent.
  virtual void Cut() = 0;
};

struct WebSocketSettings;

// Why a stream could not be opened: UNAVAILABLE (CONNECTION_FAILED), "<what> <peer>: <why>".
// The one wording of every stream's opening errors.
absl::Status ConnectFailed(absl::string_view what, absl::string_view peer, absl::string_view why);

// A stream to `hop` (kTcp, kUds, kWs or kWss), not yet connected (its connection bounds Open()
// in time). `websocket` must outlive the stream.
std::unique_ptr<Stream> OutgoingStream(const core::Strand& strand, const core::Address& hop,
                                       const WebSocketSettings& websocket);
// Streams over accepted sockets (which use the connection's strand as their executor).
std::unique_ptr<Stream> AcceptedStream(boost::asio::ip::tcp::socket socket);
std::unique_ptr<Stream> AcceptedStream(boost::asio::local::stream_protocol::socket socket);

}  // namespace veil::transport

#endif  // VEIL_SIDECAR_TRANSPORT_STREAM_H_
