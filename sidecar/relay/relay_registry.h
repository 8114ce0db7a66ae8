// RelayRegistry: the hub's book of relays — which name belongs to which identity and goes to
// which connection — as a pure class (no I/O; the clock is passed in).
//
// Rules:
//  - a name is registered by an authenticated identity; only that identity may re-register it
//    (e.g. after reconnecting: the relay then follows the new connection); anyone else gets
//    PERMISSION_DENIED (RELAY_NAME_TAKEN);
//  - when a connection closes its relays are dropped, but each name stays reserved for its
//    owner for `reservation` so that nobody can squat it while the owner reconnects;
//  - an optional allow-list limits who may register, and which names;
//  - limits on relays per connection, per identity and in all give RESOURCE_EXHAUSTED.
//
// Thread-safety: not synchronised; the hub's relay service serialises calls.
#ifndef VEIL_SIDECAR_RELAY_RELAY_REGISTRY_H_
#define VEIL_SIDECAR_RELAY_RELAY_REGISTRY_H_

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "sidecar/channel/policy_expression.h"

namespace veil::relay {

inline constexpr char kForwarderPrefix[] = "forward_to_";
inline constexpr size_t kMaxRelayNameLength = 64;

// INVALID_ARGUMENT (INVALID_RELAY_NAME) unless 1 to 64 of [A-Za-z0-9._-].
absl::Status ValidateRelayName(absl::string_view name);

// Who may register relays: empty allows everyone; otherwise an identifier may register the
// names listed for it ("*": any name).
class AllowList {
 public:
  // Entries "IDENTIFIER" (any name) or "IDENTIFIER:NAME". INVALID_ARGUMENT for a bad entry.
  absl::Status Add(absl::string_view entry);
  // An attribute policy (channel/policy_expression.h) over the owner's identifier and
  // credentials, with relay.name the name asked for: whoever it admits may register.
  // INVALID_ARGUMENT (INVALID_TRUST_POLICY) when it does not parse.
  absl::Status AddPolicy(absl::string_view expression);
  bool empty() const { return entries_.empty() && policies_.empty(); }
  // `name` "*": any name (a random one; relay.name is unknown to policies). `attributes`: the
  // owner's, from its credentials.
  bool Allows(const std::string& identifier, const std::string& name,
              const identity::Attributes* attributes = nullptr) const;

 private:
  absl::flat_hash_map<std::string, absl::flat_hash_set<std::string>> entries_;  // "*" = any
  std::vector<channel::PolicyExpression> policies_;
};

struct RelayLimits {
  size_t per_connection = 16;
  size_t per_identity = 16;
  size_t total = 100000;
  // Bytes a relay may have waiting to be written to its owner's connection; beyond it messages
  // are refused to their senders (RESOURCE_EXHAUSTED, QUEUE_FULL).
  size_t queued_bytes_per_relay = 16 * 1024 * 1024;
  std::chrono::seconds reservation{300};
};

struct RelayEntry {
  std::string name;
  std::string owner;       // authenticated identifier
  std::string connection;  // local address of the owner's connection ("" while reserved)
  std::chrono::steady_clock::time_point reserved_until{};  // when dropped
};

class RelayRegistry {
 public:
  using Clock = std::chrono::steady_clock;
  using NameGenerator = std::function<std::string()>;

  RelayRegistry(RelayLimits limits, AllowList allow, NameGenerator random_name)
      : limits_(limits), allow_(std::move(allow)), random_name_(std::move(random_name)) {}

  // Registers `name` (or a random one when empty) for `owner` on `connection`. Returns the
  // entry. A re-registration by the owner moves it to `connection`.
  absl::StatusOr<RelayEntry> Register(const std::string& owner, const std::string& name,
                                      const std::string& connection, Clock::time_point now,
                                      const identity::Attributes* attributes = nullptr);
  // OK when `name` is live and owned by `owner` (NOT_FOUND / PERMISSION_DENIED otherwise).
  absl::Status Check(const std::string& owner, const std::string& name) const;
  // Removes a relay and its reservation. NOT_FOUND / PERMISSION_DENIED.
  absl::Status Unregister(const std::string& owner, const std::string& name);
  // Removes `name`, live or reserved, whoever owns it (an admin's release). Whether it was there.
  bool Release(const std::string& name);
  // Drops every relay of `connection` (their names stay reserved); returns their names.
  std::vector<std::string> DropConnection(const std::string& connection, Clock::time_point now);
  // The live relay called `name`.
  std::optional<RelayEntry> Find(const std::string& name) const;
  // Live relays, sorted by name.
  std::vector<RelayEntry> List() const;

 private:
  // Removes reservations that ran out (a scan only once the earliest one is due).
  void Expire(Clock::time_point now);
  static size_t CountOf(const absl::flat_hash_map<std::string, size_t>& counts,
                        const std::string& key);
  // Keep the live counts: `entry` becomes live on `connection`, or stops being live.
  void MakeLive(RelayEntry& entry, const std::string& connection);
  void MakeNotLive(RelayEntry& entry);

  RelayLimits limits_;
  AllowList allow_;
  NameGenerator random_name_;
  absl::flat_hash_map<std::string, RelayEntry> relays_;  // live and reserved, by name
  // Live relays per connection and per owner, so that a registration's limits cost a lookup,
  // not a scan of every relay (a hub replica holds tens of thousands).
  absl::flat_hash_map<std::string, size_t> live_by_connection_, live_by_owner_;
  Clock::time_point next_expiry_ = Clock::time_point::max();
};

}  // namespace veil::relay

#endif  // VEIL_SIDECAR_RELAY_RELAY_REGISTRY_H_
