// RelayDirectory: the hub replicas' shared book of relay names, kept in etcd (its v3 gRPC API,
// stubs generated from the .proto files Debian ships). docs/hubs.md describes the layout; in
// short, under a prefix P (default "/veil/"):
//
//   P owners/NAME    the owner's identifier, no lease: the durable binding of a name to its
//                    owner, which outlives any replica (an admin releases it: ForceRelease)
//   P relays/NAME    {"owner", "replica"} under the replica's lease: where the relay is now;
//                    its mod_revision is the claim's epoch
//   P hubs/REPLICA   {"identifier", "route"} under the replica's lease: the live replicas
//
// One lease per replica (keepalive cost grows with replicas, not relays). A claim is one
// transaction: the binding is created if absent, or must already be this owner's; only then is
// relays/NAME written. Every replica watches the prefix and answers lookups from memory.
//
// When etcd cannot be reached the replica keeps what it has, refuses names it does not know
// (UNAVAILABLE, DIRECTORY_UNAVAILABLE) and takes an owner's re-registration of a name the
// directory already gives that owner as pending. When its lease is lost (not renewed within its
// TTL) its claims are void: it grants a new lease once etcd answers and re-claims each name,
// unless another replica has claimed it meanwhile; a claim that is lost (another replica took
// the name, or an admin released it) is reported to `on_lost`.
//
// Thread-safety: all public methods may be called from any thread; callbacks run on the
// directory's own threads (or gRPC's), never with its lock held.
#ifndef VEIL_SIDECAR_RELAY_RELAY_DIRECTORY_H_
#define VEIL_SIDECAR_RELAY_RELAY_DIRECTORY_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sidecar/common/mutex.h"

namespace grpc {
class ClientContext;
}

namespace veil::relay {

struct DirectoryOptions {
  // etcd client URLs, "http://HOST:PORT" or "https://HOST:PORT" (then TLS, with the files
  // below), tried in turn.
  std::vector<std::string> endpoints;
  std::string prefix = "/veil/";
  std::string replica;     // this replica's name: unique among the replicas
  std::string identifier;  // this replica's hub identifier (hubs/REPLICA)
  std::string route;       // how the other replicas reach this one (hubs/REPLICA); may be ""
  std::string ca_file;     // PEM CA bundle for https endpoints ("" = the system's)
  std::string cert_file, key_file;  // a client certificate, when etcd asks for one
  std::chrono::seconds lease_ttl{10};
  std::chrono::milliseconds call_timeout{3000};
  // Durable bindings (owners/NAME) outlive every connection, so they are bounded: per owner
  // identifier and in all. Counted from the watched view, so replicas claiming at the same
  // moment can overshoot by the claims in flight, never without bound.
  size_t max_names_per_owner = 64;
  size_t max_names = 1000000;
  // Keys per Range call when the view loads (a single response would pass gRPC's message limit
  // at scale); every page is read at the first one's revision.
  int64_t load_page = 5000;
};

// Parses a comma-separated --hub-directory value. INVALID_ARGUMENT for an empty list or an
// endpoint that is not http(s)://HOST:PORT.
absl::StatusOr<std::vector<std::string>> ParseDirectoryEndpoints(absl::string_view text);

struct DirectoryRelay {
  std::string name;
  std::string owner;    // identifier
  std::string replica;  // where it is registered now
  int64_t epoch = 0;    // the mod_revision of relays/NAME
};

struct DirectoryHub {
  std::string replica;
  std::string identifier;  // its hub identity's
  std::string route;       // how other replicas reach it ("": they cannot)
};

struct DirectoryStats {
  bool reachable = false;       // the last call to etcd succeeded
  bool lease_held = false;      // this replica's lease is live
  size_t known_relays = 0;      // in the watched view, on every replica
  size_t bound_names = 0;       // durable owner bindings in the watched view
  size_t claims = 0;            // names this replica holds (claimed or pending)
  size_t pending_claims = 0;    // of which waiting for etcd
  uint64_t claims_lost = 0;     // since start
  uint64_t claims_refused = 0;  // since start: taken, or etcd unreachable
};

class RelayDirectory {
 public:
  using Done = std::function<void(absl::Status)>;
  // A claim of this replica is void: `name` went to `now` (nullopt: released).
  using Lost =
      std::function<void(const std::string& name, const std::optional<DirectoryRelay>& now)>;

  // Connects, grants the lease, writes hubs/REPLICA, loads the view and starts watching.
  // UNAVAILABLE (DIRECTORY_UNAVAILABLE) when no endpoint answers within call_timeout.
  static absl::StatusOr<std::unique_ptr<RelayDirectory>> Start(DirectoryOptions options,
                                                               Lost on_lost);
  ~RelayDirectory();  // Shutdown()

  // Claims `name` for `owner` on this replica (taking it from another replica: the owner has
  // just connected here). `done` gets OK, PERMISSION_DENIED (RELAY_NAME_TAKEN) when the name is
  // another owner's, or UNAVAILABLE (DIRECTORY_UNAVAILABLE).
  void Claim(const std::string& name, const std::string& owner, Done done);
  // This replica no longer has the relay (its owner's connection closed): relays/NAME goes if it
  // is still this replica's claim; the owner's binding stays.
  void Drop(const std::string& name);
  // The owner unregistered the name: its binding and relay entry go. `done` as for Claim.
  void Release(const std::string& name, const std::string& owner, Done done);
  // An admin releases a name whatever its owner (who lost its key): `done` gets OK, NOT_FOUND
  // (RELAY_NOT_FOUND) when no owner has it, or UNAVAILABLE (DIRECTORY_UNAVAILABLE).
  void ForceRelease(const std::string& name, Done done);

  // From the watched view.
  std::optional<DirectoryRelay> Lookup(const std::string& name) const;
  // A live replica (its hubs/ record), by name.
  std::optional<DirectoryHub> Hub(const std::string& replica) const;
  // Whether `identifier` is a live replica's: a hub of this directory's trust domain.
  bool IsHub(absl::string_view identifier) const;
  DirectoryStats Stats() const;
  const DirectoryOptions& options() const { return options_; }

  // Stops the threads and revokes the lease (the replica's entries go at once). Idempotent.
  void Shutdown();

 private:
  struct Claimed {
    std::string owner;
    int64_t epoch = 0;  // 0: pending (to be claimed when etcd and a lease are back)
    int64_t lease = 0;  // the lease it was claimed under
  };
  class Etcd;

  RelayDirectory(DirectoryOptions options, Lost on_lost);
  void KeepAliveLoop();
  void WatchLoop();
  // Grants a lease, writes hubs/REPLICA and re-claims the pending names.
  absl::Status Renew();
  void Reclaim(int64_t lease);
  std::string Key(absl::string_view kind, absl::string_view name) const;
  void Apply(const std::string& key, const std::string& value, int64_t mod_revision,
             int64_t prev_lease, bool deleted);
  void ApplyBinding(absl::string_view name, const std::string& owner, bool deleted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RELAY_LIMIT when binding `name` to `owner` anew would pass a bound; OK when it is bound to
  // `owner` already (or to another: the claim's transaction refuses that).
  absl::Status CheckBindingRoom(const std::string& name, const std::string& owner) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReportLost(const std::string& name, const std::optional<DirectoryRelay>& now);
  // etcd cannot answer now: takes `name` as pending when the directory (`known`, its entry)
  // already gives it to `owner`; false otherwise.
  bool TakePending(const std::string& name, const std::string& owner,
                   const std::optional<DirectoryRelay>& known);

  const DirectoryOptions options_;
  const Lost on_lost_;
  std::unique_ptr<Etcd> etcd_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> reachable_{false};
  std::atomic<uint64_t> claims_lost_{0}, claims_refused_{0};
  mutable veil::Mutex mu_;
  veil::CondVar wake_;
  int64_t lease_ ABSL_GUARDED_BY(mu_) = 0;  // 0: none held
  absl::flat_hash_map<std::string, DirectoryRelay> view_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::string> bindings_ ABSL_GUARDED_BY(mu_);  // name -> owner
  absl::flat_hash_map<std::string, size_t> bound_per_owner_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, DirectoryHub> hubs_ ABSL_GUARDED_BY(mu_);  // by replica
  absl::flat_hash_map<std::string, Claimed> claims_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* watch_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;  // the watch stream's, to cancel
  std::thread keepalive_, watch_;
};

}  // namespace veil::relay

#endif  // VEIL_SIDECAR_RELAY_RELAY_DIRECTORY_H_
