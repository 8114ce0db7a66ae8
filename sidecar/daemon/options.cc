#include "sidecar/daemon/options.h"

#include <cstdlib>
#include <sstream>

#include "CLI/CLI.hpp"
#include "sidecar/common/unix_socket.h"
#include "sidecar/common/version.h"
#include "sidecar/core/address.h"
#include "sidecar/transport/dial_policy.h"
#include "sidecar/transport/frame_codec.h"

namespace veil::daemon {

std::string DefaultServeSocket(const std::string& api) {
  constexpr std::string_view kUnix = "unix:", kSock = ".sock";
  if (api.rfind(kUnix, 0) != 0) return "";
  std::string path = api.substr(kUnix.size());
  if (path.size() > kSock.size() &&
      path.compare(path.size() - kSock.size(), kSock.size(), kSock) == 0) {
    path.resize(path.size() - kSock.size());
    path += ".serve.sock";
  } else {
    path += ".serve";
  }
  return path.size() <= kMaxUnixSocketPath ? path : "";
}

std::variant<Options, EarlyExit> ParseOptions(int argc, const char* const* argv) {
  Options o;
  o.max_frame_bytes = transport::kDefaultMaxFrameBytes;
  double grace_seconds = 10;
  double channel_idle_seconds = 3600, connection_idle_seconds = 300, open_seconds = 5,
         handshake_seconds = 30;
  CLI::App app{
      "veild — the veil daemon: a vault of keys, identities, routing, transports and secure\n"
      "channels, serving the veil.v1 gRPC API to local apps. See README.md and docs/.",
      "veild"};
  app.set_version_flag("--version", std::string("veild ") + kVeilVersion);
  app.add_option("--state-dir", o.state_dir,
                 "Directory for the node's state (created mode 0700). Default: $VEIL_STATE_DIR, "
                 "else $HOME/.veil");
  app.add_option("--api", o.api,
                 "Where the API listens: unix:PATH (default unix:<state-dir>/api.sock, mode "
                 "0600) or HOST:PORT on loopback (port 0 picks a free port)");
  app.add_option("--api-socket-mode", o.api_socket_mode,
                 "Mode of the API's Unix socket: 0600 (this user only) or 0660 (also this "
                 "user's group: app containers of a pod sharing its fsGroup)")
      ->check(CLI::IsMember({"0600", "0660"}))
      ->capture_default_str();
  app.add_option("--serve-socket", o.serve_socket,
                 "Unix socket carrying Serve streams without gRPC (docs/api.md, \"The serve "
                 "socket\"), mode as --api-socket-mode; \"none\" for none. Default: with a "
                 "Unix --api, its path with .sock replaced by .serve.sock (else .serve "
                 "appended); none with a TCP --api");
  app.add_option("--serve-socket-direct-write", o.serve_direct_write,
                 "The serve socket writes each delivery from the thread that routes it (true), "
                 "or hands every write to the connection's own thread (false: one more thread "
                 "hop per write, for comparison)")
      ->capture_default_str();
  app.add_option("--api-max-request-bytes", o.api_max_request_bytes,
                 "Largest API request (and response) in bytes; larger ones are refused with "
                 "RESOURCE_EXHAUSTED")
      ->check(CLI::Range(size_t{65536}, size_t{1} << 30))
      ->capture_default_str();
  app.add_option("--api-max-serve-streams", o.api_max_serve_streams,
                 "Serve streams open at once; more are ended with RESOURCE_EXHAUSTED "
                 "(TOO_MANY_STREAMS)")
      ->check(CLI::Range(size_t{1}, size_t{1000000}))
      ->capture_default_str();
  app.add_option("--api-max-pending-batches", o.api_max_pending_batches,
                 "SendBatches on one Serve stream whose results the app has not read; beyond "
                 "it the stream stops reading the app's requests until it does")
      ->check(CLI::Range(size_t{1}, size_t{1000000}))
      ->capture_default_str();
  app.add_option("--api-max-calls-per-connection", o.api_max_calls_per_connection,
                 "Concurrent calls on one API connection (HTTP/2 MAX_CONCURRENT_STREAMS)")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_flag("--api-allow-public", o.api_allow_public,
               "Allow --api on a non-loopback address. Anyone who reaches it can use this "
               "node: do not, unless something else guards it");
  app.add_option("--health-listen", o.health_listen,
                 "Serve grpc.health.v1 alone on HOST:PORT (for Kubernetes probes; may be the pod "
                 "IP). It answers NOT_SERVING from the start of a drain until veild exits");
  app.add_option(
      "--metrics-listen", o.metrics_listen,
      "Serve Prometheus metrics at http://HOST:PORT/metrics (channels, relays, messages, "
      "bytes, decrypt failures, handshake latency); port 0 picks a free port");
  app.add_option("--tcp-listen", o.tcp_listen,
                 "Accept connections from other nodes on HOST:PORT (repeatable; port 0 picks a "
                 "free port, see GetNode)");
  app.add_option("--uds-listen", o.uds_listen,
                 "Accept connections from other nodes on this host on the Unix socket PATH "
                 "(absolute; repeatable). Other nodes reach it as /uds/PATH with each '/' "
                 "written %2F (docs/routes.md)");
  app.add_option("--uds-mode", o.uds_mode,
                 "Mode of --uds-listen sockets: 0600 (this user's processes only) or 0660 (also "
                 "this user's group)")
      ->check(CLI::IsMember({"0600", "0660"}))
      ->capture_default_str();
  app.add_option("--ws-listen", o.ws_listen,
                 "Accept connections from other nodes over WebSocket on HOST:PORT[/PATH] (port 0 "
                 "picks a free port; PATH defaults to /), e.g. behind an HTTP reverse proxy or "
                 "ingress (repeatable). Other nodes reach it as /ws/HOST:PORT[%2FPATH]");
  app.add_option("--wss-listen", o.wss_listen,
                 "The same over TLS, with --tls-cert and --tls-key; reached as "
                 "/wss/HOST:PORT[%2FPATH]");
  app.add_option("--tls-cert", o.tls_cert,
                 "PEM certificate chain --wss-listen presents (the server's certificate first)");
  app.add_option("--tls-key", o.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-ca", o.tls_ca,
                 "PEM CA certificates that verify /wss peers, instead of the system's store");
  app.add_option("--connect-proxy", o.connect_proxy,
                 "Reach /ws and /wss hops through this HTTP CONNECT proxy (HOST:PORT)");
  app.add_flag("--insecure-plaintext", o.insecure_plaintext,
               "INSECURE, for testing: let app payloads leave this host outside a secure "
               "channel. Without it, such sends fail with FAILED_PRECONDITION");
  app.add_option("--max-frame-bytes", o.max_frame_bytes,
                 "Largest frame sent or accepted on a transport connection, in bytes; bigger "
                 "messages are refused to their sender")
      ->check(CLI::Range(size_t{1024}, size_t{256} * 1024 * 1024))
      ->capture_default_str();
  app.add_option("--log-format", o.log_format, "Log format: text (for people) or json (lines)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--log-level", o.log_level, "Least severe level logged")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads,
                 "Threads for routing, transports and secure channels. Default 1: a message "
                 "crosses the node without waking another thread (docs/performance.md); 0: one "
                 "per core, for a hub with many busy connections on a many-core machine")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  app.add_option("--shutdown-grace", grace_seconds,
                 "Seconds in-flight API calls get to finish after SIGTERM/SIGINT")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("--vault-key-file", o.vault_key_file,
                 "Encrypt secrets at rest with the key in this file: 32 raw bytes or 64 hex "
                 "digits (a raw XChaCha20-Poly1305 key), anything else a passphrase (Argon2id). "
                 "The environment variable VEIL_VAULT_KEY may hold it instead. A vault created "
                 "with a key needs the same key on every start");
  app.add_option("--config", o.config_file,
                 "Declarative YAML config applied at every start: identities, trusted "
                 "identities, secure channel listeners and relays (docs/operations.md)");
  app.add_flag("--check-config", o.check_config,
               "Only read and check the --config file, print what it declares, and exit (0 when "
               "valid, 1 when not)");
  app.add_option("--identity", o.identities,
                 "Create this identity at start-up if missing (repeatable); \"default\" always "
                 "exists");
  app.add_flag("--hub", o.hub,
               "Run as a hub: a relay service at /service/relay and a secure channel listener at "
               "/service/hub, so that sidecars with no open port can be reached through this "
               "node (give it a --tcp-listen or --uds-listen)");
  app.add_option(
      "--hub-directory", o.hub_directory,
      "Hub: share relay names with the other replicas through etcd at these client "
      "URLs (http://HOST:2379 or https://..., comma-separated): a name is its owner's on "
      "every replica (docs/hubs.md)");
  app.add_option("--hub-directory-prefix", o.hub_directory_prefix,
                 "Hub: the etcd key prefix the replicas of one deployment share")
      ->capture_default_str();
  app.add_option("--hub-replica", o.hub_replica,
                 "Hub: this replica's name in the directory, unique among the replicas (e.g. the "
                 "pod's name). Default: the hub's identifier");
  app.add_option("--hub-route", o.hub_route,
                 "Hub: the route the other replicas reach this one by, e.g. /tcp/10.0.0.7:4000, "
                 "written to the directory; the hub mesh forwards to it. Default: the first "
                 "--tcp-listen address as bound, unless it is 0.0.0.0 or [::]");
  app.add_option("--hub-directory-ca", o.hub_directory_ca,
                 "Hub: PEM CA bundle verifying https etcd endpoints (default: the system's)");
  app.add_option("--hub-directory-cert", o.hub_directory_cert,
                 "Hub: PEM client certificate for etcd (with --hub-directory-key)");
  app.add_option("--hub-directory-key", o.hub_directory_key,
                 "Hub: PEM private key of --hub-directory-cert");
  app.add_option("--hub-directory-lease-ttl", o.hub_directory_lease_ttl_seconds,
                 "Hub: seconds this replica's lease lives without renewal: its relays leave the "
                 "directory that long after it dies")
      ->check(CLI::Range(2, 300))
      ->capture_default_str();
  app.add_option("--hub-directory-max-names-per-owner", o.hub_directory_max_names_per_owner,
                 "Hub: relay names one identity may hold in the directory (a name stays its "
                 "owner's until it deletes the relay or an admin releases it)")
      ->check(CLI::Range(size_t{1}, size_t{1000000}))
      ->capture_default_str();
  app.add_option("--hub-directory-max-names", o.hub_directory_max_names,
                 "Hub: relay names the directory holds in all, over every owner")
      ->check(CLI::Range(size_t{1}, size_t{100000000}))
      ->capture_default_str();
  app.add_option("--hub-directory-load-page", o.hub_directory_load_page,
                 "Hub: keys per etcd Range call when the replica loads the directory (at start "
                 "and after a compaction); every page is read at one revision")
      ->check(CLI::Range(int64_t{1}, int64_t{100000}))
      ->capture_default_str();
  app.add_flag("--authority", o.authority,
               "Act as a credential authority: a secure channel listener at /service/authority "
               "and the credentials service; members and tickets with `veil authority` "
               "(docs/credentials.md)");
  app.add_option("--authority-route", o.authority_route,
                 "Authority: the route members reach its listener by, put in its enrollment "
                 "tickets, e.g. /tcp/authority.example:4000/service/authority");
  app.add_option("--credential-ttl", o.credential_ttl_seconds,
                 "Authority: seconds a credential it issues is valid (members refresh at two "
                 "thirds)")
      ->check(CLI::Range(int64_t{1}, int64_t{30 * 86400}))
      ->capture_default_str();
  app.add_option("--credential-clock-skew", o.credential_clock_skew_seconds,
                 "Seconds a peer's credential is still taken past its expiry (and before its "
                 "issue time): how far clocks may be apart")
      ->check(CLI::Range(int64_t{0}, int64_t{3600}))
      ->capture_default_str();
  app.add_option("--authority-identity", o.authority_identities,
                 "Trust credentials from this authority: IDENTIFIER, or IDENTIFIER@ROUTE to also "
                 "fetch and refresh the default identity's credential from its listener there "
                 "(repeatable). Enrolling with `veil enroll` adds one too")
      ->allow_extra_args(false);
  app.add_option("--enroll-token-file", o.enroll_token_file,
                 "Enroll the default identity with the enrollment token in this file at start-up "
                 "(e.g. a Kubernetes Secret), unless it is already a member of that authority; "
                 "retried while the authority is unreachable");
  app.add_option("--relay-allow", o.relay_allow,
                 "Hub: only these may register relays: IDENTIFIER (any name) or IDENTIFIER:NAME "
                 "(repeatable). Default: any identity, any free name");
  app.add_option("--relay-allow-policy", o.relay_allow_policies,
                 "Hub: identities this attribute policy admits may register relays, relay.name "
                 "being the name asked for, e.g. 'subject.role == \"db\" and relay.name == "
                 "subject.service' (repeatable; with --relay-allow, either admits)")
      ->allow_extra_args(false);
  app.add_option("--relay-max-per-connection", o.relay_max_per_connection,
                 "Hub: relays one connection may hold")
      ->check(CLI::Range(size_t{1}, size_t{100000}))
      ->capture_default_str();
  app.add_option("--relay-max-per-identity", o.relay_max_per_identity,
                 "Hub: relays one identity may hold")
      ->check(CLI::Range(size_t{1}, size_t{100000}))
      ->capture_default_str();
  app.add_option("--relay-reservation", o.relay_reservation_seconds,
                 "Hub: seconds a dropped relay's name stays reserved for its owner")
      ->check(CLI::Range(0, 86400))
      ->capture_default_str();
  app.add_option("--relay-max-queued-bytes", o.relay_max_queued_bytes,
                 "Hub: bytes one relay may have waiting for its owner's connection; more are "
                 "refused to their senders")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 34))
      ->capture_default_str();
  app.add_option("--portal-max-sessions", o.portal_max_sessions,
                 "Portal sessions at once per inlet and per outlet; beyond, new connections are "
                 "reset at once (docs/portals.md)")
      ->check(CLI::Range(size_t{1}, size_t{1000000}))
      ->capture_default_str();
  app.add_option("--max-connection-queue-bytes", o.max_connection_queue_bytes,
                 "Bytes waiting to be written on one transport connection before new messages "
                 "for it are refused to their senders")
      ->check(CLI::Range(size_t{65536}, size_t{1} << 36))
      ->capture_default_str();
  app.add_option("--max-connection-unsettled-bytes", o.max_connection_unsettled_bytes,
                 "Bytes read from one transport connection and still on their way on this node "
                 "(queued for an app, a relay or another connection) before the node stops "
                 "reading it, so that backpressure reaches the sender instead of a message "
                 "being dropped")
      ->check(CLI::Range(size_t{65536}, size_t{1} << 34))
      ->capture_default_str();
  app.add_option("--max-channels", o.max_channels, "Secure channels this node may hold at once")
      ->check(CLI::Range(size_t{1}, size_t{10000000}))
      ->capture_default_str();
  app.add_option("--max-pending-handshakes", o.max_pending_handshakes,
                 "Half-open handshakes this node's listeners may hold in all; more are refused "
                 "(\"the listener is busy\"). A quarter is kept for handshakes arriving over "
                 "the connections of relays (this node's, or on a hub its relay owners')")
      ->check(CLI::Range(size_t{4}, size_t{1000000}))
      ->capture_default_str();
  app.add_option("--max-pending-handshakes-per-connection", o.max_pending_handshakes_per_connection,
                 "Half-open handshakes from one sender: one connection, or, through a relay, one "
                 "connection of the hub's")
      ->check(CLI::Range(size_t{1}, size_t{1000000}))
      ->capture_default_str();
  app.add_option("--max-pending-handshakes-per-address", o.max_pending_handshakes_per_address,
                 "Half-open handshakes from one remote IP address (over direct connections)")
      ->check(CLI::Range(size_t{1}, size_t{1000000}))
      ->capture_default_str();
  app.add_option("--max-handshake-rate", o.max_handshake_rate,
                 "New handshakes per second this node answers from other nodes (bursts up to a "
                 "second's worth); beyond it they are refused as busy")
      ->check(CLI::Range(1.0, 1e7))
      ->capture_default_str();
  app.add_option("--max-channels-per-identity", o.max_channels_per_identity,
                 "Secure channels one remote identity may open to this node's listeners; more "
                 "are refused (TOO_MANY_CHANNELS)")
      ->check(CLI::Range(size_t{1}, size_t{10000000}))
      ->capture_default_str();
  app.add_option("--channel-idle-timeout", channel_idle_seconds,
                 "Seconds an established secure channel may carry nothing either way before it "
                 "closes (telling the far end); 0: never")
      ->check(CLI::Range(0.0, 1e7))
      ->capture_default_str();
  app.add_option("--channel-window-bytes", o.channel_window_bytes,
                 "Per-channel flow control: bytes of a secure channel's records this node takes "
                 "before it grants the far end more, as its apps take them; one slow app then "
                 "slows only its own channels' senders. 0: no flow control (as older nodes)")
      ->check(CLI::Range(size_t{0}, size_t{1} << 32))
      ->capture_default_str();
  app.add_option("--channel-send-queue-bytes", o.channel_send_queue_bytes,
                 "Bytes a secure channel keeps while the far end has not granted more, before "
                 "it refuses local senders with QUEUE_FULL")
      ->check(CLI::Range(size_t{0}, size_t{1} << 34))
      ->capture_default_str();
  app.add_option("--allow-dial", o.allow_dial,
                 "A /tcp hop this node may dial for messages from other nodes or out of secure "
                 "channels: HOST:PORT, HOST:*, an IP network (10.0.0.0/8:*) or * (repeatable). "
                 "Default: none; this node's own apps and workers may always dial");
  app.add_option("--max-connections", o.max_connections,
                 "Connections from other nodes open at once; more are refused "
                 "(TOO_MANY_CONNECTIONS)")
      ->check(CLI::Range(size_t{1}, size_t{10000000}))
      ->capture_default_str();
  app.add_option("--max-connections-per-address", o.max_connections_per_address,
                 "Connections from one remote IP address open at once")
      ->check(CLI::Range(size_t{1}, size_t{10000000}))
      ->capture_default_str();
  app.add_option("--connection-idle-timeout", connection_idle_seconds,
                 "Seconds a connection may carry no frame either way, with no secure channel "
                 "or relay of this node on it, before it is closed; 0: never")
      ->check(CLI::Range(0.0, 1e7))
      ->capture_default_str();
  app.add_option("--api-open-timeout", open_seconds,
                 "Seconds a Serve stream (gRPC or serve socket) has to send `open` before it is "
                 "ended (DEADLINE_EXCEEDED)")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.add_option("--handshake-timeout", handshake_seconds,
                 "Seconds a listener's half-open handshake may wait for the initiator's last "
                 "message, and an established channel for the initiator's confirmation, before "
                 "they are dropped")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.add_option("--relay-heartbeat", o.relay_heartbeat_seconds,
                 "Seconds between a relay session's heartbeats to its hub; a hub silent for as "
                 "long is taken for dead and the relay registers again")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    std::ostringstream out, err;
    app.exit(e, out, err);
    return EarlyExit{0, out.str() + err.str()};
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    app.exit(e, out, err);
    return EarlyExit{2, err.str() + out.str()};
  }
  for (const std::string& entry : o.allow_dial) {
    transport::DialAllowList check;
    if (absl::Status added = check.Add(entry); !added.ok()) {
      return EarlyExit{2, "veild: " + std::string(added.message()) + "\n"};
    }
  }
  for (const std::string& path : o.uds_listen) {
    if (absl::Status valid = core::ValidateUnixPath(path); !valid.ok()) {
      return EarlyExit{2, "veild: --uds-listen: " + std::string(valid.message()) + "\n"};
    }
  }
  for (const auto* list : {&o.ws_listen, &o.wss_listen}) {
    for (const std::string& address : *list) {
      auto target = core::ParseWebSocketTarget(address, /*allow_port_zero=*/true);
      if (!target.ok()) {
        return EarlyExit{2, std::string("veild: ") +
                                (list == &o.ws_listen ? "--ws-listen: " : "--wss-listen: ") +
                                std::string(target.status().message()) + "\n"};
      }
    }
  }
  if (!o.wss_listen.empty() && (o.tls_cert.empty() || o.tls_key.empty())) {
    return EarlyExit{2, "veild: --wss-listen needs --tls-cert and --tls-key\n"};
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return EarlyExit{2, "veild: --tls-cert and --tls-key go together\n"};
  }
  if (!o.connect_proxy.empty() && !core::ParseHostPort(o.connect_proxy).ok()) {
    return EarlyExit{2, "veild: --connect-proxy: " +
                            std::string(core::ParseHostPort(o.connect_proxy).status().message()) +
                            "\n"};
  }
  if (o.check_config && o.config_file.empty()) {
    return EarlyExit{2, "veild: --check-config needs --config FILE\n"};
  }
  if (o.state_dir.empty()) {
    if (const char* env = std::getenv("VEIL_STATE_DIR"); env != nullptr && *env != '\0') {
      o.state_dir = env;
    } else if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
      o.state_dir = std::string(home) + "/.veil";
    } else {
      return EarlyExit{2,
                       "veild: no --state-dir given and neither VEIL_STATE_DIR nor HOME is set\n"};
    }
  }
  if (o.api.empty()) o.api = "unix:" + o.state_dir + "/api.sock";
  if (o.serve_socket == "none") {
    o.serve_socket.clear();
  } else if (o.serve_socket.empty()) {
    o.serve_socket = DefaultServeSocket(o.api);
  } else if (o.serve_socket.size() > kMaxUnixSocketPath) {
    return EarlyExit{2, "veild: --serve-socket: the path is " +
                            std::to_string(o.serve_socket.size()) + " bytes; the limit is " +
                            std::to_string(kMaxUnixSocketPath) + "\n"};
  }
  auto millis = [](double seconds) {
    return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  };
  o.shutdown_grace = millis(grace_seconds);
  o.channel_idle_timeout = millis(channel_idle_seconds);
  o.connection_idle_timeout = millis(connection_idle_seconds);
  o.api_open_timeout = millis(open_seconds);
  o.handshake_timeout = millis(handshake_seconds);
  return o;
}

}  // namespace veil::daemon
