// Stream: the byte stream under a node connection (connection.h), behind one small interface,
// so that one Connection class frames, queues, paces and polices every transport alike.
//
//   TcpStream   a TCP socket: "/tcp/HOST:PORT" hops, --tcp-listen
//   UnixStream  a Unix stream socket: "/uds/PATH" hops, --uds-listen
//
// A stream does I/O only: it connects (outgoing), reads into the buffer it is given, writes
// every byte of the buffers it is given, and reports each completion to its connection
// (StreamEvents) on the connection's strand. It owns no buffer and makes no decision.
//
// Thread-safety: every call on the owning connection's strand.
#ifndef VEIL_SIDECAR_TRANSPORT_STREAM_H_
#define VEIL_SIDECAR_TRANSPORT_STREAM_H_

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "asio/buffer.hpp"
#include "asio/error_code.hpp"
#include "asio/ip/tcp.hpp"
#include "asio/local/stream_protocol.hpp"
#include "sidecar/core/address.h"
#include "sidecar/core/worker.h"

namespace veil::transport {

// What a stream reports to its connection. The connection keeps itself alive while an
// operation is in flight (the stream holds the shared_ptr it was given until it completes).
class StreamEvents {
 public:
  // Open() finished: OK, or UNAVAILABLE (CONNECTION_FAILED) saying why.
  virtual void OnOpened(absl::Status status) = 0;
  virtual void OnRead(const asio::error_code& ec, size_t n) = 0;
  virtual void OnWritten(const asio::error_code& ec, size_t n) = 0;

 protected:
  ~StreamEvents() = default;
};

class Stream {
 public:
  virtual ~Stream() = default;

  // The route hop naming the transport ("tcp", "uds"), for worker names ("_tcp_…") and logs.
  virtual absl::string_view transport() const = 0;
  // The peer as the logs and the API show it: "host:port", or the socket path (outgoing) /
  // "uid N" (accepted Unix socket).
  virtual const std::string& peer() const = 0;
  // What accepted connections are counted and limited by: the remote IP address, or for a Unix
  // socket the peer's user ("uid N"); for outgoing ones the host or path dialled.
  virtual const std::string& remote_host() const = 0;

  // Outgoing only: resolves and connects; then events->OnOpened.
  virtual void Open(std::shared_ptr<StreamEvents> events) = 0;
  // One read of up to `into.size()` bytes; then events->OnRead.
  virtual void ReadSome(std::span<char> into, std::shared_ptr<StreamEvents> events) = 0;
  // Writes every byte of `buffers` (which must stay valid until it completes), in as few
  // system calls as the socket takes; then events->OnWritten.
  virtual void WriteAll(const std::vector<asio::const_buffer>& buffers,
                        std::shared_ptr<StreamEvents> events) = 0;
  // Ends the writing side (the peer reads end of stream).
  virtual void ShutdownSend() = 0;
  // Cancels what is in flight and closes. Idempotent.
  virtual void Close() = 0;
};

// A stream to `hop` (kTcp or kUds), not yet connected (its connection bounds Open() in time).
std::unique_ptr<Stream> OutgoingStream(const core::Strand& strand, const core::Address& hop);
// Streams over accepted sockets (which use the connection's strand as their executor).
std::unique_ptr<Stream> AcceptedStream(asio::ip::tcp::socket socket);
std::unique_ptr<Stream> AcceptedStream(asio::local::stream_protocol::socket socket);

}  // namespace veil::transport

#endif  // VEIL_SIDECAR_TRANSPORT_STREAM_H_
