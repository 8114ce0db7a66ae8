// veild's declarative configuration (`--config FILE`): a YAML document mapped onto
// veil.config.v1.Config (proto/veil/config/v1/config.proto) field by field, then applied at
// start-up. See docs/operations.md.
//
// Failure cases, each an INVALID_ARGUMENT naming the file, line and column and the field path
// (e.g. "bob.yaml:7:9: listeners[0].trust_policy: unknown field \"trust_everybody\""): YAML
// syntax errors, unknown fields, a scalar where a map or list is wanted (and the reverse),
// numbers out of range, bad booleans, enums or base64, two members of one oneof. A file that
// is missing, unreadable or larger than 1 MiB is a FAILED_PRECONDITION.
#ifndef VEIL_SIDECAR_DAEMON_CONFIG_H_
#define VEIL_SIDECAR_DAEMON_CONFIG_H_

#include <set>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "sidecar/channel/secure_channel_manager.h"
#include "sidecar/identity/identity_store.h"
#include "sidecar/portal/portal_manager.h"
#include "sidecar/relay/relay_clients.h"
#include "veil/config/v1/config.pb.h"

namespace veil::daemon {

inline constexpr size_t kMaxConfigBytes = 1 << 20;

// Where each field of a YAML document was written: "file:line:col" by field path
// ("listeners[0].identity"), so that a check made after parsing still points at the field.
using ConfigMarks = absl::flat_hash_map<std::string, std::string>;

// Fills `out` from the YAML document `text`; `source` names it in errors; `marks`, when given,
// gets each field's place. An empty document leaves `out` empty. Pure: no I/O, safe on any
// input.
absl::Status YamlToMessage(absl::string_view text, absl::string_view source,
                           google::protobuf::Message& out, ConfigMarks* marks = nullptr);

struct LoadedConfig {
  config::v1::Config config;
  ConfigMarks marks;
};

// Reads, parses and checks (every check that needs no state) the config file at `path`. Each
// error names the file, line and column and the field ("bob.yaml:7:15:
// listeners[0].identity: ...").
absl::StatusOr<LoadedConfig> LoadConfigFile(const std::string& path);

// NOT_FOUND (IDENTITY_NOT_FOUND), at the field, for a listener or relay naming an identity that
// is neither declared in the file, nor "default", nor in `known`; `elsewhere` says where else
// was looked, for the message. For --check-config.
absl::Status CheckIdentitiesKnown(const LoadedConfig& config, const std::set<std::string>& known,
                                  absl::string_view elsewhere);

// Applies `config` in order: identities, trusted identities, listeners, relays, outlets,
// inlets. Stops at the first failure, saying which field of which entry failed, and where in
// the file. Relays are started and left to come up (or keep retrying) in the background; an
// inlet opens its channel at its first connection.
absl::Status ApplyConfig(const LoadedConfig& config, identity::IdentityStore& identities,
                         channel::SecureChannelManager& channels, relay::RelayClients& relays,
                         portal::PortalManager& portals);

}  // namespace veil::daemon

#endif  // VEIL_SIDECAR_DAEMON_CONFIG_H_
