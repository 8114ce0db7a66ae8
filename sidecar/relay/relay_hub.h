// RelayHub: the relay service of a hub. It serves the local address "relay"; sidecars send it
// RelayRequests through a secure channel (to the hub's listener "hub"), so each request carries
// the authenticated identity of its sender. A registered relay is a worker
// "forward_to_<name>" that sends every message it receives over the owner's connection, with
// the rest of its onward route kept — the hub forwards ciphertext it cannot read.
//
// The owner's connection is the first hop of the secure channel's remote route; when that
// connection closes the relay is dropped (its name stays reserved for the owner, see
// RelayRegistry).
//
// With a directory (relay_directory.h, hub replicas sharing etcd), a registration also claims the
// name there, and the answer waits for it; a name the directory gives to another replica or
// releases stops its relay here (RELAY_MOVED).
//
// Thread-safety: all public methods may be called from any thread.
#ifndef VEIL_SIDECAR_RELAY_RELAY_HUB_H_
#define VEIL_SIDECAR_RELAY_RELAY_HUB_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "sidecar/channel/secure_channel_manager.h"
#include "sidecar/common/mutex.h"
#include "sidecar/core/router.h"
#include "sidecar/relay/relay_directory.h"
#include "sidecar/relay/relay_registry.h"
#include "sidecar/transport/node_transport.h"
#include "veil/wire/v1/relay.pb.h"

namespace veil::relay {

class HubMesh;

// The hub's well-known addresses.
inline constexpr char kHubListenerAddress[] = "hub";
inline constexpr char kRelayServiceAddress[] = "relay";

class RelayHub : public std::enable_shared_from_this<RelayHub> {
 public:
  // All references must outlive the hub.
  RelayHub(core::Router& router, channel::SecureChannelManager& channels,
           transport::NodeTransport& tcp, RelayLimits limits, AllowList allow);
  ~RelayHub();

  // Starts the relay service and the secure channel listener for `identity_name`. The hub must
  // be owned by a shared_ptr: the service worker keeps it alive while it can receive messages.
  absl::Status Start(const std::string& identity_name);
  // Claims names in `directory` from now on (which must outlive the hub's use of it, until
  // Stop). Call before the node takes requests.
  void SetDirectory(RelayDirectory* directory);
  // The directory gave `name` to another replica (`now`), or released it (nullopt).
  void OnClaimLost(const std::string& name, const std::optional<DirectoryRelay>& now);
  // An admin releases `name` whatever its owner: its relay here stops and, with a directory, its
  // owner binding there goes. `done` (maybe on another thread, once etcd answered) gets OK, or
  // NOT_FOUND when nothing has it.
  void Release(const std::string& name, std::function<void(absl::Status)> done);
  RelayDirectory* directory() const { return directory_; }
  // The mesh to the other replicas (with a directory), for its metrics. Set before requests.
  void SetMesh(const HubMesh* mesh) { mesh_ = mesh; }
  const HubMesh* mesh() const { return mesh_; }
  // Live relays, sorted by name.
  std::vector<RelayEntry> List() const;
  // Whether a relay forwards over the connection with worker id `connection`. Any thread.
  bool HasRelayOn(uint64_t connection) const;

  // For the service worker, on its strand.
  void OnRequest(core::Message msg);

 private:
  class Forwarder;
  using Respond = std::function<void(wire::v1::RelayResponse)>;
  // Answers `request` through `respond`, at once or (with a directory) when etcd has answered.
  void Handle(const wire::v1::RelayRequest& request, const core::Message& msg, Respond respond);
  // Starts (or retargets) the relay of a registered `entry` on `connection`.
  absl::Status Activate(const RelayEntry& entry, const std::pair<std::string, uint64_t>& connection)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StopForwarder(const std::string& name, absl::Status why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The connection (worker address and id) the secure channel `msg` came out of runs over.
  absl::StatusOr<std::pair<std::string, uint64_t>> OwnerConnection(const core::Message& msg) const;
  void OnConnectionClosed(const std::string& connection);

  core::Router& router_;
  const size_t queued_bytes_per_relay_;
  channel::SecureChannelManager& channels_;
  transport::NodeTransport& tcp_;
  const HubMesh* mesh_ = nullptr;
  RelayDirectory* directory_ = nullptr;
  mutable veil::Mutex mu_;
  RelayRegistry registry_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<Forwarder>> forwarders_ ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::relay

#endif  // VEIL_SIDECAR_RELAY_RELAY_HUB_H_
