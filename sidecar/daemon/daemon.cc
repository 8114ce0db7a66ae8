#include "sidecar/daemon/daemon.h"

#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdlib>
#include <future>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "boost/asio/signal_set.hpp"
#include "sidecar/api/api_server.h"
#include "sidecar/authority/authority.h"
#include "sidecar/authority/memberships.h"
#include "sidecar/channel/secure_channel_manager.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/common/version.h"
#include "sidecar/core/router.h"
#include "sidecar/daemon/config.h"
#include "sidecar/daemon/metrics.h"
#include "sidecar/daemon/state_dir.h"
#include "sidecar/daemon/vault_key.h"
#include "sidecar/identity/identifier.h"
#include "sidecar/identity/identity.h"
#include "sidecar/identity/identity_store.h"
#include "sidecar/portal/portal_manager.h"
#include "sidecar/relay/hub_mesh.h"
#include "sidecar/relay/relay_clients.h"
#include "sidecar/relay/relay_hub.h"
#include "sidecar/transport/node_transport.h"
#include "spdlog/spdlog.h"

namespace veil::daemon {
namespace {

// The bound addresses of `transport`'s listeners, comma-separated, for the ready line.
std::string ListenedOn(const transport::NodeTransport& node, absl::string_view transport) {
  std::vector<std::string> out;
  for (const auto& l : node.Listeners()) {
    if (l.transport == transport) out.push_back(l.address);
  }
  return absl::StrJoin(out, ",");
}

// Runs `io` on `n` threads until stopped; joins them on destruction.
class IoThreads {
 public:
  IoThreads(boost::asio::io_context& io, int n) : io_(io), work_(boost::asio::make_work_guard(io)) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~IoThreads() {
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
  }

 private:
  boost::asio::io_context& io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
};

}  // namespace

absl::Status RunDaemon(const Options& options) {
  // glibc's default heap trimming returns freed memory so eagerly that every large receive
  // page-faults fresh memory: keep up to 256 MiB instead (see docs/performance.md). Setting the
  // trim threshold turns the dynamic mmap threshold off, so raise that too, or every buffer
  // over 128 KiB is a fresh mmap.
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
  mallopt(M_MMAP_THRESHOLD, 256 * 1024 * 1024);
  ::signal(SIGPIPE, SIG_IGN);
  ::umask(077);  // every file and socket we create is ours alone
  // A hub holds a connection per sidecar, and a sidecar a socket per app: the soft limit on
  // open files (often 1024) would refuse connections long before memory runs out.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }

  LoadedConfig config;
  if (!options.config_file.empty()) {
    auto loaded = LoadConfigFile(options.config_file);
    if (!loaded.ok()) return loaded.status();
    config = *std::move(loaded);
  }
  auto state_dir = StateDir::Open(options.state_dir);
  if (!state_dir.ok()) return state_dir.status();
  auto endpoint = api::ParseApiEndpoint(options.api, options.api_allow_public);
  if (!endpoint.ok()) return endpoint.status();
  auto key = ReadVaultKey(options.vault_key_file);
  if (!key.ok()) return key.status();
  auto vault = vault::Vault::Open(options.state_dir, *std::move(key));
  if (!vault.ok()) return vault.status();
  auto identities = identity::IdentityStore::Open(options.state_dir, **vault);
  if (!identities.ok()) return identities.status();
  std::vector<std::string> wanted = {identity::kDefaultIdentity};
  wanted.insert(wanted.end(), options.identities.begin(), options.identities.end());
  for (const std::string& name : wanted) {
    auto id = (*identities)->Ensure(name);
    if (!id.ok()) return id.status();
    spdlog::info("identity {}: {}", name, (*id)->identifier());
  }

  int threads = options.threads > 0
                    ? options.threads
                    : std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  boost::asio::io_context io(threads);
  core::Router router(io);
  transport::ConnectionOptions tcp_options;
  tcp_options.max_frame_bytes = options.max_frame_bytes;
  tcp_options.max_write_queue_bytes = options.max_connection_queue_bytes;
  tcp_options.max_unsettled_read_bytes = options.max_connection_unsettled_bytes;
  tcp_options.insecure_plaintext = options.insecure_plaintext;
  for (const std::string& entry : options.allow_dial) {
    absl::Status added = tcp_options.allow_dial.Add(entry);
    if (!added.ok()) return added;
  }
  tcp_options.max_connections = options.max_connections;
  tcp_options.max_connections_per_address = options.max_connections_per_address;
  tcp_options.idle_timeout = options.connection_idle_timeout;
  transport::NodeTransport tcp(router, tcp_options);
  std::promise<void>
      stop;  // not absl::Notification: TSan sees through std (sidecar/common/mutex.h)
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&stop, &signals](boost::system::error_code ec, int signal) {
    if (ec) return;
    spdlog::info("received {}; draining (send it again to exit at once)",
                 signal == SIGTERM ? "SIGTERM" : "SIGINT");
    stop.set_value();
    // A second one means "now": a Ctrl-C that was not patient enough for the drain.
    signals.async_wait([](boost::system::error_code ec, int signal) {
      if (ec) return;
      spdlog::warn("received {} again: exiting without finishing the drain",
                   signal == SIGTERM ? "SIGTERM" : "SIGINT");
      spdlog::default_logger()->flush();
      std::_Exit(1);
    });
  });
  RETURN_IF_ERROR(tcp.ConfigureWebSocket(options.tls_ca, options.tls_cert, options.tls_key,
                                         options.connect_proxy));
  std::string first_tcp_bound;  // HOST:PORT, as bound (the port picked for :0)
  for (const std::string& listen : options.tcp_listen) {
    auto bound = tcp.Listen(listen);
    if (!bound.ok()) return bound.status();
    if (first_tcp_bound.empty()) first_tcp_bound = *bound;
  }
  for (const std::string& listen : options.ws_listen) {
    RETURN_IF_ERROR(tcp.ListenWebSocket(listen, /*tls=*/false).status());
  }
  for (const std::string& listen : options.wss_listen) {
    RETURN_IF_ERROR(tcp.ListenWebSocket(listen, /*tls=*/true).status());
  }
  for (const std::string& path : options.uds_listen) {
    RETURN_IF_ERROR(tcp.ListenUnix(path, options.uds_mode == "0660" ? 0660 : 0600));
  }
  // What rides on a connection (for idleness and the handshake reserve), known once the relay
  // parts exist; these run only after start-up, on io threads.
  relay::RelayClients* relay_clients = nullptr;
  relay::RelayHub* relay_hub = nullptr;
  auto privileged = [&relay_clients, &relay_hub](uint64_t connection) {
    return (relay_clients != nullptr && relay_clients->RidesOn(connection)) ||
           (relay_hub != nullptr && relay_hub->HasRelayOn(connection));
  };
  channel::ChannelOptions channel_options;
  channel_options.max_channels = options.max_channels;
  channel_options.max_pending_handshakes = options.max_pending_handshakes;
  channel_options.max_pending_handshakes_per_sender = options.max_pending_handshakes_per_connection;
  channel_options.max_pending_handshakes_per_address = options.max_pending_handshakes_per_address;
  channel_options.handshake_rate = options.max_handshake_rate;
  channel_options.max_channels_per_identity = options.max_channels_per_identity;
  channel_options.idle_timeout = options.channel_idle_timeout;
  channel_options.responder_timeout = options.handshake_timeout;
  channel_options.privileged_carrier = privileged;
  channel_options.max_batch_bytes =
      std::min<size_t>(channel_options.max_batch_bytes, options.max_frame_bytes / 2);
  channel_options.session.receive_window = options.channel_window_bytes;
  channel_options.send_queue_bytes = options.channel_send_queue_bytes;
  auto credential_book = std::make_shared<channel::CredentialBook>();
  channel_options.credentials = credential_book;
  channel_options.session.clock_skew = options.credential_clock_skew_seconds;
  channel_options.session.key_histories = &(*identities)->key_histories();
  std::vector<authority::AuthorityEntry> configured_authorities;  // with a route
  std::vector<std::string> authority_entries = options.authority_identities;
  authority_entries.insert(authority_entries.end(), config.config.trusted_authorities().begin(),
                           config.config.trusted_authorities().end());
  for (const std::string& text : authority_entries) {
    ASSIGN_OR_RETURN(auto entry, authority::ParseAuthorityEntry(text));
    credential_book->Trust(entry.identifier);
    if (!entry.route.empty()) configured_authorities.push_back(std::move(entry));
  }
  channel::SecureChannelManager channels(router, **identities, channel_options);
  tcp.AddCloseObserver([&channels](const std::string& connection, uint64_t id) {
    channels.OnCarrierClosed(id, absl::StrCat("its connection ", connection, " closed"));
  });
  tcp.SetInUse([&channels, privileged](uint64_t connection) {
    return channels.Carries(connection) || privileged(connection);
  });
  relay::RelayClientOptions relay_options;
  relay_options.heartbeat_interval = relay_options.heartbeat_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(options.relay_heartbeat_seconds * 1000));
  relay::RelayClients relays(channels, relay_options);
  relay_clients = &relays;
  std::shared_ptr<relay::RelayHub> hub;
  std::unique_ptr<relay::RelayDirectory> directory;  // hub replicas sharing etcd
  std::shared_ptr<relay::HubMesh> mesh;              // and forwarding to each other
  if (options.hub) {
    relay::AllowList allow;
    for (const std::string& entry : options.relay_allow) {
      absl::Status added = allow.Add(entry);
      if (!added.ok()) return added;
    }
    for (const std::string& policy : options.relay_allow_policies) {
      RETURN_IF_ERROR(allow.AddPolicy(policy));
    }
    relay::RelayLimits limits;
    limits.per_connection = options.relay_max_per_connection;
    limits.per_identity = options.relay_max_per_identity;
    limits.reservation = std::chrono::seconds(options.relay_reservation_seconds);
    limits.queued_bytes_per_relay = options.relay_max_queued_bytes;
    hub = std::make_shared<relay::RelayHub>(router, channels, tcp, limits, std::move(allow));
    absl::Status started = hub->Start(identity::kDefaultIdentity);
    if (!started.ok()) return started;
    relay_hub = hub.get();
    if (!options.hub_directory.empty()) {
      relay::DirectoryOptions d;
      ASSIGN_OR_RETURN(d.endpoints, relay::ParseDirectoryEndpoints(options.hub_directory));
      d.prefix = options.hub_directory_prefix;
      d.identifier = (*identities)->Get(identity::kDefaultIdentity).value()->identifier();
      d.replica = options.hub_replica.empty() ? d.identifier : options.hub_replica;
      d.route = options.hub_route;
      if (d.route.empty()) d.route = relay::DefaultHubRoute(first_tcp_bound);
      if (!d.route.empty()) RETURN_IF_ERROR(core::Route::Parse(d.route).status());
      d.ca_file = options.hub_directory_ca;
      d.cert_file = options.hub_directory_cert;
      d.key_file = options.hub_directory_key;
      d.lease_ttl = std::chrono::seconds(options.hub_directory_lease_ttl_seconds);
      d.max_names_per_owner = options.hub_directory_max_names_per_owner;
      d.max_names = options.hub_directory_max_names;
      d.load_page = options.hub_directory_load_page;
      ASSIGN_OR_RETURN(directory,
                       relay::RelayDirectory::Start(
                           std::move(d), [weak = std::weak_ptr<relay::RelayHub>(hub)](
                                             const std::string& name,
                                             const std::optional<relay::DirectoryRelay>& now) {
                             if (auto h = weak.lock()) h->OnClaimLost(name, now);
                           }));
      hub->SetDirectory(directory.get());
      mesh = std::make_shared<relay::HubMesh>(router, channels, tcp, *directory,
                                              identity::kDefaultIdentity);
      RETURN_IF_ERROR(mesh->Start());
      hub->SetMesh(mesh.get());
    }
  } else if (!options.relay_allow.empty() || !options.relay_allow_policies.empty()) {
    return absl::InvalidArgumentError(options.relay_allow.empty()
                                          ? "--relay-allow-policy needs --hub"
                                          : "--relay-allow needs --hub");
  }
  if (!options.hub && (!options.hub_directory.empty() || !options.hub_replica.empty() ||
                       !options.hub_route.empty())) {
    return absl::InvalidArgumentError("--hub-directory, --hub-replica and --hub-route need --hub");
  }
  if (options.hub_directory.empty() &&
      (!options.hub_replica.empty() || !options.hub_route.empty())) {
    return absl::InvalidArgumentError("--hub-replica and --hub-route need --hub-directory");
  }
  portal::PortalLimits portal_limits;
  portal_limits.max_sessions = options.portal_max_sessions;
  portal::PortalManager portals(router, channels, io, portal_limits);
  std::shared_ptr<authority::Authority> authority;
  if (options.authority) {
    auto store = authority::AuthorityStore::Open(options.state_dir);
    if (!store.ok()) return store.status();
    authority = std::make_shared<authority::Authority>(
        router, channels, *(*identities)->Get(identity::kDefaultIdentity), *std::move(store),
        authority::AuthorityOptions{.credential_ttl_seconds = options.credential_ttl_seconds,
                                    .advertised_route = options.authority_route,
                                    .unix_now = nullptr});
    RETURN_IF_ERROR(authority->Start());
  } else if (!options.authority_route.empty()) {
    return absl::InvalidArgumentError("--authority-route needs --authority");
  }
  auto memberships = std::make_shared<authority::Memberships>(channels, **identities,
                                                              credential_book, options.state_dir);
  RETURN_IF_ERROR(memberships->Load());
  for (const auto& entry : configured_authorities) {
    RETURN_IF_ERROR(
        memberships->AddConfigured(entry.identifier, entry.route, identity::kDefaultIdentity));
  }
  absl::Status configured = ApplyConfig(config, **identities, channels, relays, portals);
  if (!configured.ok()) return configured;
  // After the config: its identities exist now.
  std::vector<std::pair<std::string, std::string>> enrollments;  // token file, identity
  if (!options.enroll_token_file.empty()) {
    enrollments.emplace_back(options.enroll_token_file, identity::kDefaultIdentity);
  }
  for (const auto& e : config.config.enrollments()) {
    enrollments.emplace_back(e.token_file(), identity::IdentityOrDefault(e.identity()));
  }
  for (const auto& [file, identity_name] : enrollments) {
    auto token = ReadSecretFile(file, "enrollment token");
    if (!token.ok()) return token.status();
    RETURN_IF_ERROR(memberships->EnrollOnStart(
        std::string(reinterpret_cast<const char*>(token->data()), token->size()), identity_name));
  }
  api::ApiSettings settings;
  settings.insecure_plaintext = options.insecure_plaintext;
  settings.socket_mode = options.api_socket_mode == "0660" ? 0660 : 0600;
  settings.serve_socket = options.serve_socket;
  settings.serve_direct_write = options.serve_direct_write;
  settings.max_frame_bytes = options.max_frame_bytes;
  settings.health_listen = options.health_listen;
  settings.hub = options.hub;
  settings.max_request_bytes = options.api_max_request_bytes;
  settings.max_serve_streams = options.api_max_serve_streams;
  settings.max_pending_batches = options.api_max_pending_batches;
  settings.max_calls_per_connection = options.api_max_calls_per_connection;
  settings.open_timeout = options.api_open_timeout;
  auto api = api::ApiServer::Start(*endpoint, settings, router, tcp, **identities, channels, relays,
                                   hub.get(), portals, io, authority, memberships);
  if (!api.ok()) return api.status();
  std::string metrics_bound = "-";
  auto collector = std::make_shared<MetricsCollector>(router, tcp, channels, relays, hub.get(),
                                                      portals, (*api)->stats());
  std::unique_ptr<prometheus::Exposer> metrics;
  if (!options.metrics_listen.empty()) {
    auto served = ServeMetrics(options.metrics_listen, collector, &metrics_bound);
    if (!served.ok()) return served.status();
    metrics = *std::move(served);
    spdlog::info("metrics at http://{}/metrics", metrics_bound);
  }
  // Started last, so that on every way out of this function the threads are joined before
  // anything they could touch is destroyed.
  IoThreads io_threads(io, threads);
  if (options.insecure_plaintext) {
    spdlog::warn("--insecure-plaintext: app payloads may leave this host unencrypted");
  }
  if (!tcp_options.allow_dial.empty()) {
    spdlog::warn("--allow-dial: this node dials {} for messages from other nodes",
                 absl::StrJoin(tcp_options.allow_dial.entries(), ", "));
  }
  spdlog::info(
      "veild {} ready: api={} serve-socket={} tcp=[{}] uds=[{}] ws=[{}] wss=[{}] health={} "
      "metrics={} state-dir={}",
      kVeilVersion, (*api)->endpoint(), options.serve_socket.empty() ? "-" : options.serve_socket,
      absl::StrJoin(tcp.ListenAddresses(), ","), absl::StrJoin(options.uds_listen, ","),
      ListenedOn(tcp, "ws"), ListenedOn(tcp, "wss"),
      (*api)->health_endpoint().empty() ? "-" : (*api)->health_endpoint(), metrics_bound,
      (*state_dir)->path());

  stop.get_future().wait();
  (*api)->Drain(options.shutdown_grace);
  memberships->Shutdown();
  relays.Shutdown();                                // unregisters from hubs
  if (directory != nullptr) directory->Shutdown();  // this replica's relays leave the directory
  portals.Shutdown();   // resets the portals' sessions (their far ends are told)
  channels.Shutdown();  // tells the far ends
  for (int i = 0; i < 100 && !channels.ListChannels().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // let CLOSE messages out
  }
  tcp.Shutdown();
  router.StopAll();
  spdlog::info("veild stopped");
  return absl::OkStatus();
}

}  // namespace veil::daemon
