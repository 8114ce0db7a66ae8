#include "sidecar/relay/relay_registry.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/identity/identifier.h"

namespace veil::relay {
namespace {

absl::Status Taken(absl::string_view name) {
  return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                         absl::StrCat("relay name \"", name, "\" belongs to another identity"),
                         reason::kRelayNameTaken);
}

absl::Status NotFound(absl::string_view name) {
  return ErrorWithReason(absl::StatusCode::kNotFound, absl::StrCat("no relay \"", name, "\""),
                         reason::kRelayNotFound);
}

absl::Status Exhausted(absl::string_view what) {
  return ErrorWithReason(absl::StatusCode::kResourceExhausted, what, reason::kRelayLimit);
}

}  // namespace

absl::Status ValidateRelayName(absl::string_view name) {
  bool ok = !name.empty() && name.size() <= kMaxRelayNameLength;
  for (char c : name) {
    ok = ok && (absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-');
  }
  if (ok) return absl::OkStatus();
  return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                         absl::StrCat("invalid relay name \"", name, "\": use 1 to ",
                                      kMaxRelayNameLength, " characters of [A-Za-z0-9._-]"),
                         reason::kInvalidRelayName);
}

absl::Status AllowList::Add(absl::string_view entry) {
  size_t colon = entry.find(':');
  std::string identifier(entry.substr(0, colon));
  RETURN_IF_ERROR(identity::ValidateIdentifier(identifier));
  std::string name = colon == absl::string_view::npos ? "*" : std::string(entry.substr(colon + 1));
  if (name != "*") RETURN_IF_ERROR(ValidateRelayName(name));
  entries_[identifier].insert(name);
  return absl::OkStatus();
}

absl::Status AllowList::AddPolicy(absl::string_view expression) {
  auto parsed = channel::PolicyExpression::Parse(expression);
  if (!parsed.ok()) return parsed.status();
  policies_.push_back(*std::move(parsed));
  return absl::OkStatus();
}

bool AllowList::Allows(const std::string& identifier, const std::string& name,
                       const identity::Attributes* attributes) const {
  if (empty()) return true;
  if (auto it = entries_.find(identifier); it != entries_.end()) {
    if (it->second.contains("*") || (!name.empty() && it->second.contains(name))) return true;
  }
  const channel::PeerView peer{identifier, attributes, name == "*" ? nullptr : &name};
  return std::any_of(policies_.begin(), policies_.end(),
                     [&](const channel::PolicyExpression& p) { return p.Evaluate(peer); });
}

void RelayRegistry::Expire(Clock::time_point now) {
  if (now < next_expiry_) return;
  next_expiry_ = Clock::time_point::max();
  absl::erase_if(relays_, [&](const auto& kv) {
    if (!kv.second.connection.empty()) return false;
    if (kv.second.reserved_until <= now) return true;
    next_expiry_ = std::min(next_expiry_, kv.second.reserved_until);
    return false;
  });
}

size_t RelayRegistry::CountOf(const absl::flat_hash_map<std::string, size_t>& counts,
                              const std::string& key) {
  auto it = counts.find(key);
  return it == counts.end() ? 0 : it->second;
}

void RelayRegistry::MakeLive(RelayEntry& entry, const std::string& connection) {
  if (!entry.connection.empty()) MakeNotLive(entry);
  entry.connection = connection;
  ++live_by_connection_[connection];
  ++live_by_owner_[entry.owner];
}

void RelayRegistry::MakeNotLive(RelayEntry& entry) {
  if (entry.connection.empty()) return;
  for (auto [counts, key] : {std::pair{&live_by_connection_, &entry.connection},
                             std::pair{&live_by_owner_, &entry.owner}}) {
    auto it = counts->find(*key);
    if (it != counts->end() && --it->second == 0) counts->erase(it);
  }
  entry.connection.clear();
}

absl::StatusOr<RelayEntry> RelayRegistry::Register(const std::string& owner,
                                                   const std::string& name,
                                                   const std::string& connection,
                                                   Clock::time_point now,
                                                   const identity::Attributes* attributes) {
  Expire(now);
  std::string chosen = name;
  if (chosen.empty()) {
    do {
      chosen = random_name_();
    } while (relays_.contains(chosen));
  }
  RETURN_IF_ERROR(ValidateRelayName(chosen));
  // A random name is allowed to whoever may register any name (to a policy, relay.name is then
  // unknown: a comparison with it is false).
  bool allowed = allow_.Allows(owner, name.empty() ? "*" : name, attributes);
  if (!allowed) {
    return ErrorWithReason(
        absl::StatusCode::kPermissionDenied,
        absl::StrCat("identity ", owner, " may not register relay \"", chosen, "\" on this hub"),
        reason::kRelayNotAllowed);
  }
  auto it = relays_.find(chosen);
  if (it != relays_.end()) {
    if (it->second.owner != owner) return Taken(chosen);
    bool was_live = !it->second.connection.empty();
    if (!was_live || it->second.connection != connection) {
      if (CountOf(live_by_connection_, connection) >= limits_.per_connection) {
        return Exhausted(absl::StrCat("this connection already has ", limits_.per_connection,
                                      " relays, the hub's limit"));
      }
      MakeLive(it->second, connection);
    }
    return it->second;
  }
  if (CountOf(live_by_connection_, connection) >= limits_.per_connection) {
    return Exhausted(absl::StrCat("this connection already has ", limits_.per_connection,
                                  " relays, the hub's limit"));
  }
  if (CountOf(live_by_owner_, owner) >= limits_.per_identity) {
    return Exhausted(absl::StrCat("identity ", owner, " already has ", limits_.per_identity,
                                  " relays, the hub's limit"));
  }
  if (relays_.size() >= limits_.total) return Exhausted("the hub has no room for more relays");
  RelayEntry& entry = relays_[chosen];
  entry = RelayEntry{chosen, owner, "", {}};
  MakeLive(entry, connection);
  return entry;
}

absl::Status RelayRegistry::Check(const std::string& owner, const std::string& name) const {
  auto it = relays_.find(name);
  if (it == relays_.end() || it->second.connection.empty()) return NotFound(name);
  if (it->second.owner != owner) return Taken(name);
  return absl::OkStatus();
}

absl::Status RelayRegistry::Unregister(const std::string& owner, const std::string& name) {
  auto it = relays_.find(name);
  if (it == relays_.end()) return NotFound(name);
  if (it->second.owner != owner) return Taken(name);
  MakeNotLive(it->second);
  relays_.erase(it);
  return absl::OkStatus();
}

bool RelayRegistry::Release(const std::string& name) {
  auto it = relays_.find(name);
  if (it == relays_.end()) return false;
  MakeNotLive(it->second);
  relays_.erase(it);
  return true;
}

std::vector<std::string> RelayRegistry::DropConnection(const std::string& connection,
                                                       Clock::time_point now) {
  std::vector<std::string> dropped;
  if (connection.empty() || !live_by_connection_.contains(connection)) return dropped;
  for (auto& [name, entry] : relays_) {
    if (entry.connection == connection) {
      MakeNotLive(entry);
      entry.reserved_until = now + limits_.reservation;
      next_expiry_ = std::min(next_expiry_, entry.reserved_until);
      dropped.push_back(name);
    }
  }
  std::sort(dropped.begin(), dropped.end());
  return dropped;
}

std::optional<RelayEntry> RelayRegistry::Find(const std::string& name) const {
  auto it = relays_.find(name);
  if (it == relays_.end() || it->second.connection.empty()) return std::nullopt;
  return it->second;
}

std::vector<RelayEntry> RelayRegistry::List() const {
  std::vector<RelayEntry> out;
  for (const auto& [name, entry] : relays_) {
    if (!entry.connection.empty()) out.push_back(entry);
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

}  // namespace veil::relay
