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
  absl::erase_if(relays_, [now](const auto& kv) {
    return kv.second.connection.empty() && kv.second.reserved_until <= now;
  });
}

size_t RelayRegistry::Count(std::string RelayEntry::*field, const std::string& value) const {
  size_t n = 0;
  for (const auto& [name, entry] : relays_) {
    if (!entry.connection.empty() && entry.*field == value) ++n;
  }
  return n;
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
      if (Count(&RelayEntry::connection, connection) >= limits_.per_connection) {
        return Exhausted(absl::StrCat("this connection already has ", limits_.per_connection,
                                      " relays, the hub's limit"));
      }
    }
    it->second.connection = connection;
    return it->second;
  }
  if (Count(&RelayEntry::connection, connection) >= limits_.per_connection) {
    return Exhausted(absl::StrCat("this connection already has ", limits_.per_connection,
                                  " relays, the hub's limit"));
  }
  if (Count(&RelayEntry::owner, owner) >= limits_.per_identity) {
    return Exhausted(absl::StrCat("identity ", owner, " already has ", limits_.per_identity,
                                  " relays, the hub's limit"));
  }
  if (relays_.size() >= limits_.total) return Exhausted("the hub has no room for more relays");
  RelayEntry entry{chosen, owner, connection, {}};
  relays_[chosen] = entry;
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
  relays_.erase(it);
  return absl::OkStatus();
}

bool RelayRegistry::Release(const std::string& name) { return relays_.erase(name) > 0; }

std::vector<std::string> RelayRegistry::DropConnection(const std::string& connection,
                                                       Clock::time_point now) {
  std::vector<std::string> dropped;
  for (auto& [name, entry] : relays_) {
    if (entry.connection == connection) {
      entry.connection.clear();
      entry.reserved_until = now + limits_.reservation;
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
