// Where the vault key comes from: --vault-key-file, or the environment variable VEIL_VAULT_KEY
// (as a Kubernetes Secret would provide either). The variable is removed from the environment
// once read, and its value wiped where it was (so /proc/PID/environ no longer shows it). The
// file must be a regular file not readable by others; one readable by its group is taken with
// a warning (a Kubernetes Secret mounted for the pod's fsGroup is 0440).
#ifndef VEIL_SIDECAR_DAEMON_VAULT_KEY_H_
#define VEIL_SIDECAR_DAEMON_VAULT_KEY_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "sidecar/vault/vault.h"

namespace veil::daemon {

inline constexpr char kVaultKeyEnv[] = "VEIL_VAULT_KEY";

// The key from `file` (when not empty) or $VEIL_VAULT_KEY; nullopt when neither is given.
// INVALID_ARGUMENT when both are given, FAILED_PRECONDITION when the file cannot be read, is
// not a regular file, is readable by others, or is empty or larger than 4 KiB.
absl::StatusOr<std::optional<vault::VaultKey>> ReadVaultKey(const std::string& file);

// A secret from `file` (the vault key, an enrollment token), under the same rules: a regular
// file not readable by others (by its group: with a warning), 1 byte to 4 KiB. `what` names it
// in errors. FAILED_PRECONDITION otherwise.
absl::StatusOr<vault::SecretBytes> ReadSecretFile(const std::string& file, absl::string_view what);

}  // namespace veil::daemon

#endif  // VEIL_SIDECAR_DAEMON_VAULT_KEY_H_
