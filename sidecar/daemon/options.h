// veild's command-line options. `veild --help` documents each; docs/operations.md too.
#ifndef VEIL_SIDECAR_DAEMON_OPTIONS_H_
#define VEIL_SIDECAR_DAEMON_OPTIONS_H_

#include <chrono>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "sidecar/channel/channel_session.h"
#include "sidecar/transport/connection.h"

namespace veil::daemon {

struct Options {
  std::string state_dir;  // where state lives; created 0700
  std::string api;        // "unix:PATH" or "HOST:PORT"
  bool api_allow_public = false;
  std::string api_socket_mode = "0600";  // or "0660"
  // The serve socket's path; "" for none. Defaults from a Unix --api (DefaultServeSocket).
  std::string serve_socket;
  bool serve_direct_write = true;
  size_t api_max_request_bytes = 64 * 1024 * 1024;
  size_t api_max_serve_streams = 4096;
  size_t api_max_pending_batches = 1024;
  int api_max_calls_per_connection = 1024;
  std::string health_listen;            // "HOST:PORT" for the health-only listener
  std::string metrics_listen;           // "HOST:PORT" for Prometheus /metrics
  std::vector<std::string> tcp_listen;  // "HOST:PORT", repeatable
  std::vector<std::string> uds_listen;  // absolute Unix socket paths, repeatable
  std::string uds_mode = "0600";        // or "0660"
  std::vector<std::string> ws_listen;   // "HOST:PORT[/PATH]", repeatable
  std::vector<std::string> wss_listen;  // the same, with TLS (needs tls_cert, tls_key)
  std::string tls_cert, tls_key;        // PEM files for --wss-listen
  std::string tls_ca;                   // PEM CA bundle verifying /wss peers; "" = system store
  std::string connect_proxy;            // "HOST:PORT" HTTP CONNECT proxy for /ws and /wss
  bool insecure_plaintext = false;
  size_t max_frame_bytes = 0;
  std::string log_format = "text";  // "text" or "json"
  std::string log_level = "info";
  int threads = 1;  // io threads; 0 = one per core (at least 2)
  std::chrono::milliseconds shutdown_grace{10000};
  std::string vault_key_file;           // at-rest key or passphrase, e.g. a mounted Secret
  std::string config_file;              // declarative YAML config (config.h)
  bool check_config = false;            // only check config_file and exit
  std::vector<std::string> identities;  // ensured at start-up, besides "default"
  bool hub = false;                     // run the relay service
  // Hub replicas sharing a directory in etcd (docs/hubs.md): etcd client URLs, comma-separated;
  // the key prefix; this replica's name ("" = its hub identifier) and the route the other
  // replicas reach it by; TLS files for https endpoints; the lease's TTL.
  std::string hub_directory;
  std::string hub_directory_prefix = "/veil/";
  std::string hub_replica;
  std::string hub_route;
  std::string hub_directory_ca, hub_directory_cert, hub_directory_key;
  int hub_directory_lease_ttl_seconds = 10;
  size_t hub_directory_max_names_per_owner = 64;
  size_t hub_directory_max_names = 1000000;
  int64_t hub_directory_load_page = 5000;
  std::vector<std::string> relay_allow_policies;  // attribute policies; relay.name: the name
  // Credentials (docs/credentials.md): act as an authority (members, tickets, issuing), the
  // route its tickets carry, how long its credentials last; the authorities this node trusts,
  // each "IDENTIFIER" or "IDENTIFIER@ROUTE" (then this node's default identity, a member,
  // fetches and refreshes its credential there).
  bool authority = false;
  std::string authority_route;
  int64_t credential_ttl_seconds = 3600;
  int64_t credential_clock_skew_seconds = 60;
  std::vector<std::string> authority_identities;
  // A file holding an enrollment token (e.g. a mounted Secret): the default identity enrolls
  // with it at start-up unless it is already a member of that authority.
  std::string enroll_token_file;
  std::vector<std::string> relay_allow;  // "IDENTIFIER" or "IDENTIFIER:NAME"
  size_t relay_max_per_connection = 16;
  size_t relay_max_per_identity = 16;
  int relay_reservation_seconds = 300;
  double relay_heartbeat_seconds = 5;  // client side
  size_t relay_max_queued_bytes = 16 * 1024 * 1024;
  size_t portal_max_sessions = 10000;
  size_t max_connection_queue_bytes = transport::ConnectionOptions{}.max_write_queue_bytes;
  size_t max_connection_unsettled_bytes = transport::ConnectionOptions{}.max_unsettled_read_bytes;
  size_t max_channels = 100000;
  size_t max_pending_handshakes = 1024;
  // Access control and limits against strangers (docs/security.md).
  std::vector<std::string> allow_dial;  // /tcp hops dialled for others (dial_policy.h)
  size_t max_pending_handshakes_per_connection = 64;
  size_t max_pending_handshakes_per_address = 256;
  double max_handshake_rate = 1000;
  size_t max_channels_per_identity = 1024;
  std::chrono::milliseconds channel_idle_timeout{3600 * 1000};  // 0: never
  // Per-channel flow control: what a channel takes before it grants more (0: off), and what it
  // keeps for a far end that has not granted more before refusing local senders.
  size_t channel_window_bytes = channel::kDefaultReceiveWindow;
  size_t channel_send_queue_bytes = 16 * 1024 * 1024;
  size_t max_connections = 4096;
  size_t max_connections_per_address = 32;
  std::chrono::milliseconds connection_idle_timeout{300 * 1000};  // 0: never
  std::chrono::milliseconds api_open_timeout{5000};
  std::chrono::milliseconds handshake_timeout{30000};
};

// What ParseOptions asks main to do instead of running: print `text` and exit with `code`.
struct EarlyExit {
  int code = 0;
  std::string text;
};

// The serve socket beside a Unix API endpoint "unix:DIR/NAME.sock": DIR/NAME.serve.sock (a path
// not ending in .sock gets ".serve" appended). "" for a TCP endpoint or when the path would be
// too long for a Unix socket.
std::string DefaultServeSocket(const std::string& api);

// Parses argv. Defaults: state dir $VEIL_STATE_DIR, else $HOME/.veil; API
// unix:<state-dir>/api.sock. Returns EarlyExit for --help/--version (code 0) and for bad
// flags (code 2, with the error and a hint).
std::variant<Options, EarlyExit> ParseOptions(int argc, const char* const* argv);

}  // namespace veil::daemon

#endif  // VEIL_SIDECAR_DAEMON_OPTIONS_H_
