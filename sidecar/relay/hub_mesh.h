// HubMesh: hub replicas sharing a RelayDirectory forward to each other, exactly one hop, so
// that a sender may reach any relay through any replica (docs/hubs.md, "The mesh").
//
// On the replica a message arrives at (the entry), a message for forward_to_NAME that no local
// relay takes goes to the mesh (a router stand-in for the prefix). The directory names the
// replica that has the relay; the entry sends the message through its hub-to-hub secure channel
// to that replica (one per peer replica, opened on first use, trusting exactly the identifier
// the directory gives it), to the peer's mesh worker at /service/mesh, itself first on the
// return route. The owner replica's mesh worker hands it to its local relay — never on to
// another replica — and the owner's answers come back the same way. Refusals travel back
// along the same path, so a sender whose relay's replica died learns it.
//
// Access control: the hub-to-hub listener (/service/hub_mesh) admits only identifiers that are
// live replicas in the directory (hubs/: the trust domain is the directory); the mesh worker
// takes from secure channels only messages of such identities and only for a local relay (or,
// on the entry, answers for a connection that sent through that very link), and from local
// relays only answers for a mesh channel that delivered to them.
//
// Thread-safety: all methods may be called from any thread.
#ifndef VEIL_SIDECAR_RELAY_HUB_MESH_H_
#define VEIL_SIDECAR_RELAY_HUB_MESH_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "sidecar/channel/secure_channel_manager.h"
#include "sidecar/common/mutex.h"
#include "sidecar/core/router.h"
#include "sidecar/relay/relay_directory.h"
#include "sidecar/transport/node_transport.h"

namespace veil::relay {

inline constexpr char kMeshListenerAddress[] = "hub_mesh";
inline constexpr char kMeshAddress[] = "mesh";

struct MeshOptions {
  std::chrono::milliseconds handshake_timeout{5000};
  // Messages (and their bytes) held per peer replica while its link's handshake runs.
  size_t max_waiting = 4096;
  size_t max_waiting_bytes = 8 * 1024 * 1024;
};

struct MeshStats {
  uint64_t forwarded = 0;  // messages sent on to another replica
  uint64_t delivered = 0;  // messages from another replica handed to a local relay
  uint64_t answered = 0;   // answers carried back either way
  uint64_t refused = 0;    // refused by the mesh (no replica has it, unreachable, not admitted)
  size_t links = 0;        // links to peer replicas, established or opening
};

// The route other replicas reach this one by when --hub-route is not given: "/tcp/HOST:PORT"
// of the first TCP listener as bound, unless it is bound to every address (0.0.0.0, [::]),
// which names no host another replica could dial; "" then.
std::string DefaultHubRoute(absl::string_view tcp_bound);

class HubMesh : public std::enable_shared_from_this<HubMesh> {
 public:
  // `router`, `channels`, `transport` and `directory` must outlive the mesh.
  HubMesh(core::Router& router, channel::SecureChannelManager& channels,
          transport::NodeTransport& transport, RelayDirectory& directory, std::string identity_name,
          MeshOptions options = {});
  ~HubMesh();

  // Starts the hub-to-hub listener, the mesh worker and the stand-in for relay names.
  absl::Status Start();
  MeshStats Stats() const;

 private:
  class Entry;
  class Exit;
  class OnFailure;
  struct Link {
    std::string identifier;  // the peer replica's, from the directory
    std::string route;
    std::string channel;  // its encryptor address here, once established
    bool opening = false;
    std::vector<core::Message> waiting;
    size_t waiting_bytes = 0;
    // The connections (first return hops) that sent through this link: only they are answered.
    absl::flat_hash_set<std::string> senders;
  };

  // Entry: `msg.onward` starts with forward_to_NAME, which no local worker has.
  void Forward(core::Message msg);
  // Exit: out of a mesh channel, or an answer from a local relay.
  void FromPeer(core::Message msg);
  void FromRelay(core::Message msg);
  void LinkOpened(const std::string& replica, const std::string& identifier,
                  absl::StatusOr<channel::ChannelInfo> channel);
  // Sends `msg` on an established link (its onward route still starting with forward_to_NAME).
  void SendOnLink(core::Message msg, const std::string& channel);
  // The link's channel refused what it was given (closed): the next message opens a new one.
  void LinkFailed(const std::string& replica, const std::string& channel);
  void Refuse(core::Message msg, absl::Status why);
  // Makes `msg`'s receipt tell its original sender (a notice along its return route as it is
  // now) when it fails later: a hop that rewrites the provenance takes on the router's notice.
  // `router_notifies`: the router will itself (the message is handed on paced, from afar).
  void NoticeOnFailure(core::Message& msg, bool router_notifies, std::string replica = "",
                       std::string channel = "");
  // An inbound mesh channel delivered to a local relay: its answers may go back into it.
  void Remember(const std::string& channel);
  static constexpr size_t kPruneInboundAt = 64;
  void ConnectionClosed(const std::string& connection);

  core::Router& router_;
  channel::SecureChannelManager& channels_;
  transport::NodeTransport& transport_;
  RelayDirectory& directory_;
  const std::string identity_name_;
  const MeshOptions options_;
  uint64_t exit_id_ = 0;  // the mesh worker's id: the `via` of what it hands on
  std::atomic<uint64_t> forwarded_{0}, delivered_{0}, answered_{0}, refused_{0};
  mutable veil::Mutex mu_;
  absl::flat_hash_map<std::string, Link> links_ ABSL_GUARDED_BY(mu_);  // by peer replica
  // Encryptor addresses of the mesh channels that delivered to a local relay: only they get
  // answers from local relays.
  absl::flat_hash_set<std::string> inbound_ ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::relay

#endif  // VEIL_SIDECAR_RELAY_HUB_MESH_H_
