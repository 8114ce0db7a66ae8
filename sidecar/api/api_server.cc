#include "sidecar/api/api_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "sidecar/api/grpc_status.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/unix_socket.h"
#include "sidecar/core/address.h"
#include "spdlog/spdlog.h"

namespace veil::api {
namespace {

absl::Status BadEndpoint(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument, why, reason::kInvalidApiEndpoint);
}

}  // namespace

absl::StatusOr<ApiEndpoint> ParseApiEndpoint(absl::string_view text, bool allow_public) {
  ApiEndpoint out;
  if (absl::ConsumePrefix(&text, "unix:")) {
    if (text.empty())
      return BadEndpoint("\"unix:\" needs a socket path, e.g. unix:/run/veil/api.sock");
    if (text.size() > kMaxUnixSocketPath) {
      return BadEndpoint(absl::StrCat("Unix socket path is ", text.size(), " bytes; the limit is ",
                                      kMaxUnixSocketPath));
    }
    out.unix_path = std::string(text);
    return out;
  }
  auto hp = core::ParseHostPort(text, /*allow_port_zero=*/true);
  if (!hp.ok()) {
    return BadEndpoint(absl::StrCat(
        "API endpoint \"", text, "\" is neither unix:PATH nor HOST:PORT: ", hp.status().message()));
  }
  if (!allow_public && !core::IsLoopbackHost(hp->host)) {
    return BadEndpoint(absl::StrCat(
        "refusing to serve the API on non-loopback address ", text,
        ": anyone who reaches it could use this node's identities (pass --api-allow-public to "
        "do it anyway)"));
  }
  out.host_port = std::string(text);
  return out;
}

absl::StatusOr<std::unique_ptr<ApiServer>> ApiServer::Start(
    const ApiEndpoint& endpoint, ApiSettings settings, core::Router& router,
    transport::NodeTransport& tcp, identity::IdentityStore& identities,
    channel::SecureChannelManager& channels, relay::RelayClients& relays, relay::RelayHub* hub,
    portal::PortalManager& portals, boost::asio::io_context& io,
    std::shared_ptr<authority::Authority> authority,
    std::shared_ptr<authority::Memberships> memberships) {
  std::unique_ptr<ApiServer> server(new ApiServer(std::move(settings)));
  std::string listen;
  if (!endpoint.unix_path.empty()) {
    absl::Status prepared = PrepareUnixSocketPath(endpoint.unix_path, "API");
    if (!prepared.ok()) return prepared;
    listen = absl::StrCat("unix:", endpoint.unix_path);
    server->unix_path_ = endpoint.unix_path;
  } else {
    listen = endpoint.host_port;
  }
  server->messaging_ =
      std::make_unique<MessagingService>(router, server->settings_, server->stats_);
  server->node_ = std::make_unique<NodeService>(server->settings_, tcp);
  server->identity_ = std::make_unique<IdentityService>(identities);
  server->channels_ = std::make_unique<SecureChannelService>(channels, identities);
  server->relays_ = std::make_unique<RelayService>(relays, hub, identities);
  server->portals_ = std::make_unique<PortalService>(portals, identities);
  server->authority_ =
      std::make_unique<AuthorityService>(std::move(authority), std::move(memberships));
  const std::vector<std::string> services = {
      v1::MessagingService::service_full_name(), v1::NodeService::service_full_name(),
      v1::IdentityService::service_full_name(),  v1::SecureChannelService::service_full_name(),
      v1::RelayService::service_full_name(),     v1::PortalService::service_full_name(),
      v1::AuthorityService::service_full_name()};
  server->health_ = std::make_unique<HealthService>(services);
  if (!server->settings_.health_listen.empty()) {
    auto hp = core::ParseHostPort(server->settings_.health_listen, /*allow_port_zero=*/true);
    if (!hp.ok()) return hp.status();
    server->probe_health_ = std::make_unique<HealthService>(services);
    grpc::ServerBuilder probe;
    int port = 0;
    probe.AddListeningPort(server->settings_.health_listen, grpc::InsecureServerCredentials(),
                           &port);
    probe.RegisterService(server->probe_health_.get());
    server->probe_server_ = probe.BuildAndStart();
    if (server->probe_server_ == nullptr || port == 0) {
      return ErrorWithReason(
          absl::StatusCode::kUnavailable,
          absl::StrCat("cannot serve health on ", server->settings_.health_listen),
          reason::kListenFailed);
    }
    server->settings_.health_listen = core::FormatHostPort(hp->host, static_cast<uint16_t>(port));
    spdlog::info("health listening on {}", server->settings_.health_listen);
  }

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &selected_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(server->settings_.max_request_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(server->settings_.max_request_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             server->settings_.max_calls_per_connection);
  builder.RegisterService(server->messaging_.get());
  builder.RegisterService(server->node_.get());
  builder.RegisterService(server->identity_.get());
  builder.RegisterService(server->channels_.get());
  builder.RegisterService(server->relays_.get());
  builder.RegisterService(server->portals_.get());
  builder.RegisterService(server->authority_.get());
  builder.RegisterService(server->health_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(UnparsableRequestExplainer());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || (endpoint.unix_path.empty() && selected_port == 0)) {
    return ErrorWithReason(
        absl::StatusCode::kUnavailable,
        absl::StrCat("cannot serve the API on ", listen, " (address in use or not permitted?)"),
        reason::kListenFailed);
  }
  if (!endpoint.unix_path.empty()) {
    ::chmod(endpoint.unix_path.c_str(), server->settings_.socket_mode);
    server->settings_.endpoint = listen;
  } else {
    auto hp = core::ParseHostPort(endpoint.host_port, true);
    server->settings_.endpoint =
        core::FormatHostPort(hp->host, static_cast<uint16_t>(selected_port));
  }
  spdlog::info("API listening on {}", server->settings_.endpoint);
  if (!server->settings_.serve_socket.empty()) {
    auto serve = ServeSocketServer::Start(server->settings_.serve_socket, io, router,
                                          server->settings_, server->stats_, *server->messaging_);
    if (!serve.ok()) return serve.status();
    server->serve_socket_ = *std::move(serve);
  }
  return server;
}

void ApiServer::Drain(std::chrono::milliseconds grace) {
  health_->SetServing(false);
  if (probe_health_) probe_health_->SetServing(false);
  messaging_->Drain();
  if (serve_socket_) serve_socket_->Drain(grace);
  health_->EndWatches();
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
  // Probes see NOT_SERVING for the whole grace period; the health listener goes last.
  if (probe_server_) {
    probe_health_->EndWatches();
    probe_server_->Shutdown(std::chrono::system_clock::now());
    probe_server_->Wait();
  }
}

ApiServer::~ApiServer() {
  serve_socket_.reset();
  for (auto* s : {server_.get(), probe_server_.get()}) {
    if (s == nullptr) continue;
    s->Shutdown(std::chrono::system_clock::now());
    s->Wait();
  }
}

}  // namespace veil::api
