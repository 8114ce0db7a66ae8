// The serve socket: MessagingService.Serve streams carried without gRPC, on a Unix socket of
// their own, for apps that move many messages or want the shortest round trip.
//
// Wire (docs/api.md, "The serve socket"): the app connects and writes one version byte (1);
// the sidecar answers with the same byte. Each side then writes frames: a u32 big-endian
// length, then that many bytes of a protobuf message — veil.v1.ServeRequest from the app,
// veil.v1.ServeResponse from the sidecar. The stream behaves exactly as a gRPC Serve call; where
// that call would end with a status, the sidecar writes a ServeResponse `closed` (a
// google.rpc.Status with its ErrorInfo) and closes the connection. The app ends the stream by
// shutting down its writing side (or closing).
//
// Why: four app <-> sidecar crossings cost 210-270 us p50 through gRPC on this machine and
// 40 us over a plain Unix socket (make bench); DESIGN.md's API stays gRPC for everything else.
//
// Built on the node's transport pieces: the Unix-socket Stream (transport/stream.h) and the
// frame decoder (transport/frame_codec.h, with the serve socket's version byte and limit).
//
// Hot path: whichever thread routes a delivery to the app writes it to the socket at once
// (Stream::WriteNow, a non-blocking send), without waking another thread; only a full socket
// buffer defers the rest to the connection's strand (ApiSettings::serve_direct_write turns
// this off: every write then goes through the strand). Requests are read on the strand and
// handled there, or by whichever thread takes the read when one is already buffered.
//
// Thread-safety: ServeSocketServer's Drain and destructor from one controlling thread; the
// streams as ServeStream.
#ifndef VEIL_SIDECAR_API_SERVE_SOCKET_H_
#define VEIL_SIDECAR_API_SERVE_SOCKET_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "boost/asio/io_context.hpp"
#include "boost/asio/local/stream_protocol.hpp"
#include "sidecar/api/api_settings.h"
#include "sidecar/api/messaging_service.h"
#include "sidecar/common/mutex.h"
#include "sidecar/core/router.h"

namespace veil::api {

// The version byte this sidecar speaks.
inline constexpr unsigned char kServeSocketVersion = 1;

class ServeSocketServer {
 public:
  // Listens on the Unix socket `path` (parent directory created 0700 if missing; a stale socket
  // left by a dead veild is replaced; FAILED_PRECONDITION with reason ADDRESS_IN_USE when a live
  // process serves it or the path is not a socket), mode settings.socket_mode. Streams are
  // counted by `messaging` (limits, draining). Everything passed must outlive the server.
  static absl::StatusOr<std::unique_ptr<ServeSocketServer>> Start(
      const std::string& path, boost::asio::io_context& io, core::Router& router,
      const ApiSettings& settings, ApiStats& stats, MessagingService& messaging);
  ~ServeSocketServer();

  const std::string& path() const { return path_; }

  // Stops accepting, then waits up to `grace` for open streams (already ended by
  // MessagingService::Drain) to write their last frames; cuts the rest. Removes the socket.
  void Drain(std::chrono::milliseconds grace);

 private:
  class Connection;
  class Registry;
  ServeSocketServer(std::string path, boost::asio::io_context& io, core::Router& router,
                    const ApiSettings& settings, ApiStats& stats, MessagingService& messaging);
  void Accept();

  const std::string path_;
  core::Router& router_;
  const ApiSettings& settings_;
  ApiStats& stats_;
  MessagingService& messaging_;
  veil::Mutex mu_;  // the acceptor: Accept runs on the io_context, Drain on another thread
  boost::asio::local::stream_protocol::acceptor acceptor_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // The open streams' connections, to cut them after the grace period.
  std::shared_ptr<Registry> registry_;
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_SERVE_SOCKET_H_
