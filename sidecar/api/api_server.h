// ApiServer: the gRPC server of veil.v1 — messaging, node, grpc.health.v1 and server
// reflection — on a Unix domain socket (default) or a TCP address, loopback unless explicitly
// allowed otherwise.
//
// Thread-safety: Drain and Wait may be called from any thread, Drain once.
#ifndef VEIL_SIDECAR_API_API_SERVER_H_
#define VEIL_SIDECAR_API_API_SERVER_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "sidecar/api/api_settings.h"
#include "sidecar/api/authority_service.h"
#include "sidecar/api/health_service.h"
#include "sidecar/api/identity_service.h"
#include "sidecar/api/messaging_service.h"
#include "sidecar/api/node_service.h"
#include "sidecar/api/portal_service.h"
#include "sidecar/api/relay_service.h"
#include "sidecar/api/secure_channel_service.h"
#include "sidecar/api/serve_socket.h"
#include "sidecar/core/router.h"
#include "sidecar/transport/node_transport.h"

namespace veil::api {

// Where the API listens.
struct ApiEndpoint {
  std::string unix_path;  // set for "unix:PATH"
  std::string host_port;  // set for "HOST:PORT"
};

// Parses "unix:PATH" (PATH absolute or relative, at most 107 bytes) or "HOST:PORT". A TCP host
// must be loopback (localhost, 127.0.0.0/8, ::1) unless `allow_public`. INVALID_ARGUMENT
// naming the rule otherwise.
absl::StatusOr<ApiEndpoint> ParseApiEndpoint(absl::string_view text, bool allow_public);

class ApiServer {
 public:
  // Binds and starts serving; also the serve socket at settings.serve_socket unless that is
  // empty (its connections run on `io`). For a Unix socket: creates the parent directory (0700) if
  // missing, removes a stale socket left by a dead veild, refuses (FAILED_PRECONDITION) when a
  // live process serves it or the path is not a socket, and leaves the socket mode 0600.
  static absl::StatusOr<std::unique_ptr<ApiServer>> Start(
      const ApiEndpoint& endpoint, ApiSettings settings, core::Router& router,
      transport::NodeTransport& tcp, identity::IdentityStore& identities,
      channel::SecureChannelManager& channels, relay::RelayClients& relays, relay::RelayHub* hub,
      portal::PortalManager& portals, boost::asio::io_context& io,
      std::shared_ptr<authority::Authority> authority,
      std::shared_ptr<authority::Memberships> memberships);
  ~ApiServer();

  // The bound endpoint, e.g. "unix:/run/veil/api.sock" or "127.0.0.1:40123".
  const std::string& endpoint() const { return settings_.endpoint; }

  // The bound health-only listener ("host:port"), or "" when there is none.
  const std::string& health_endpoint() const { return settings_.health_listen; }

  // Graceful stop: health goes NOT_SERVING (on the API and the health listener), Serve streams
  // (gRPC and serve socket) end with UNAVAILABLE (NODE_SHUTTING_DOWN), in-flight calls and
  // streams get up to `grace` to finish, then the server stops.
  void Drain(std::chrono::milliseconds grace);

  const ApiStats& stats() const { return stats_; }

 private:
  explicit ApiServer(ApiSettings settings) : settings_(std::move(settings)) {}

  ApiSettings settings_;
  ApiStats stats_;
  std::string unix_path_;
  std::unique_ptr<MessagingService> messaging_;
  std::unique_ptr<NodeService> node_;
  std::unique_ptr<IdentityService> identity_;
  std::unique_ptr<SecureChannelService> channels_;
  std::unique_ptr<RelayService> relays_;
  std::unique_ptr<PortalService> portals_;
  std::unique_ptr<AuthorityService> authority_;
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ServeSocketServer> serve_socket_;
  // The health-only listener: its own service instance, kept in step with health_.
  std::unique_ptr<HealthService> probe_health_;
  std::unique_ptr<grpc::Server> probe_server_;
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_API_SERVER_H_
