#include "sidecar/api/api_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/core/address.h"
#include "spdlog/spdlog.h"

namespace veil::api {
namespace {

constexpr size_t kMaxUnixPath = sizeof(sockaddr_un::sun_path) - 1;

absl::Status BadEndpoint(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument, why, "INVALID_API_ENDPOINT");
}

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  return absl::StartsWith(host, "127.") && host.find_first_not_of("0123456789.") == std::string::npos;
}

// True when something accepts connections on the Unix socket at `path`.
bool UnixSocketIsLive(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return live;
}

absl::Status PrepareUnixPath(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create ", parent.string(), ": ", ec.message()));
    }
    ::chmod(parent.c_str(), 0700);
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return absl::OkStatus();  // nothing there
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a socket; refusing to replace it"));
  }
  if (UnixSocketIsLive(path)) {
    return ErrorWithReason(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat("another process already serves the API at ", path), reason::kAddressInUse);
  }
  spdlog::info("removing stale API socket {}", path);
  ::unlink(path.c_str());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ApiEndpoint> ParseApiEndpoint(absl::string_view text, bool allow_public) {
  ApiEndpoint out;
  if (absl::ConsumePrefix(&text, "unix:")) {
    if (text.empty()) return BadEndpoint("\"unix:\" needs a socket path, e.g. unix:/run/veil/api.sock");
    if (text.size() > kMaxUnixPath) {
      return BadEndpoint(absl::StrCat("Unix socket path is ", text.size(),
                                      " bytes; the limit is ", kMaxUnixPath));
    }
    out.unix_path = std::string(text);
    return out;
  }
  auto hp = core::ParseHostPort(text, /*allow_port_zero=*/true);
  if (!hp.ok()) {
    return BadEndpoint(absl::StrCat("API endpoint \"", text,
                                    "\" is neither unix:PATH nor HOST:PORT: ", hp.status().message()));
  }
  if (!allow_public && !IsLoopbackHost(hp->host)) {
    return BadEndpoint(absl::StrCat(
        "refusing to serve the API on non-loopback address ", text,
        ": anyone who reaches it could use this node's identities (pass --api-allow-public to "
        "do it anyway)"));
  }
  out.host_port = std::string(text);
  return out;
}

absl::StatusOr<std::unique_ptr<ApiServer>> ApiServer::Start(const ApiEndpoint& endpoint,
                                                            ApiSettings settings,
                                                            core::Router& router,
                                                            transport::TcpTransport& tcp,
                                                            identity::IdentityStore& identities,
                                                            channel::SecureChannelManager& channels,
                                                            relay::RelayClients& relays,
                                                            const relay::RelayHub* hub) {
  std::unique_ptr<ApiServer> server(new ApiServer(std::move(settings)));
  std::string listen;
  if (!endpoint.unix_path.empty()) {
    absl::Status prepared = PrepareUnixPath(endpoint.unix_path);
    if (!prepared.ok()) return prepared;
    listen = absl::StrCat("unix:", endpoint.unix_path);
    server->unix_path_ = endpoint.unix_path;
  } else {
    listen = endpoint.host_port;
  }
  server->messaging_ = std::make_unique<MessagingService>(router, server->settings_, server->stats_);
  server->node_ = std::make_unique<NodeService>(server->settings_, tcp);
  server->identity_ = std::make_unique<IdentityService>(identities);
  server->channels_ = std::make_unique<SecureChannelService>(channels, identities);
  server->relays_ = std::make_unique<RelayService>(relays, hub, identities);
  const std::vector<std::string> services = {
      v1::MessagingService::service_full_name(), v1::NodeService::service_full_name(),
      v1::IdentityService::service_full_name(), v1::SecureChannelService::service_full_name(),
      v1::RelayService::service_full_name()};
  server->health_ = std::make_unique<HealthService>(services);
  if (!server->settings_.health_listen.empty()) {
    auto hp = core::ParseHostPort(server->settings_.health_listen, /*allow_port_zero=*/true);
    if (!hp.ok()) return hp.status();
    server->probe_health_ = std::make_unique<HealthService>(services);
    grpc::ServerBuilder probe;
    int port = 0;
    probe.AddListeningPort(server->settings_.health_listen, grpc::InsecureServerCredentials(), &port);
    probe.RegisterService(server->probe_health_.get());
    server->probe_server_ = probe.BuildAndStart();
    if (server->probe_server_ == nullptr || port == 0) {
      return ErrorWithReason(absl::StatusCode::kUnavailable,
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
  builder.RegisterService(server->health_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || (endpoint.unix_path.empty() && selected_port == 0)) {
    return ErrorWithReason(absl::StatusCode::kUnavailable,
                           absl::StrCat("cannot serve the API on ", listen,
                                        " (address in use or not permitted?)"),
                           reason::kListenFailed);
  }
  if (!endpoint.unix_path.empty()) {
    ::chmod(endpoint.unix_path.c_str(), server->settings_.socket_mode);
    server->settings_.endpoint = listen;
  } else {
    auto hp = core::ParseHostPort(endpoint.host_port, true);
    server->settings_.endpoint = core::FormatHostPort(hp->host, static_cast<uint16_t>(selected_port));
  }
  spdlog::info("API listening on {}", server->settings_.endpoint);
  return server;
}

void ApiServer::Drain(std::chrono::milliseconds grace) {
  health_->SetServing(false);
  if (probe_health_) probe_health_->SetServing(false);
  messaging_->Drain();
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
  for (auto* s : {server_.get(), probe_server_.get()}) {
    if (s == nullptr) continue;
    s->Shutdown(std::chrono::system_clock::now());
    s->Wait();
  }
}

}  // namespace veil::api
