// Vault: how this node's secrets are protected at rest, and the one place that turns a secret
// into bytes for storage and back.
//
// <state-dir>/vault.meta records the protection: NONE (secrets in the clear in 0600 files),
// RAW_KEY or ARGON2ID (XChaCha20-Poly1305 under the key given at start-up — a raw 32-byte key,
// or a passphrase stretched with Argon2id). The metadata holds a sealed check value, so a
// wrong key is refused at start-up instead of creating a new vault; a key given for an
// unprotected vault, or none for a protected one, is refused too.
//
// Thread-safety: immutable after Open; all methods may be called from any thread.
#ifndef VEIL_SIDECAR_VAULT_VAULT_H_
#define VEIL_SIDECAR_VAULT_VAULT_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "sidecar/vault/crypto.h"
#include "sidecar/vault/secret_bytes.h"

namespace veil::vault {

// Key material as given by the operator (a file or an environment variable), and where it came
// from, for error messages. 32 raw bytes or 64 hex digits (optionally followed by a newline)
// are a raw key; anything else is a passphrase (one trailing newline is dropped).
struct VaultKey {
  SecretBytes material;
  std::string source;  // e.g. "file /run/secrets/veil-key" or "environment variable VEIL_VAULT_KEY"
};

class Vault {
 public:
  enum class Protection { kNone, kRawKey, kArgon2id };

  // Opens the vault of `state_dir`, creating vault.meta when absent (protected iff `key` is
  // given). `state_dir` must exist. FAILED_PRECONDITION (reason VAULT_KEY_REJECTED) for a wrong
  // key, a key the vault does not use, or no key for a protected vault; DATA_LOSS when
  // vault.meta is damaged; FAILED_PRECONDITION when vault.meta is missing but identities exist
  // (a new vault would orphan them).
  static absl::StatusOr<std::unique_ptr<Vault>> Open(const std::string& state_dir,
                                                     std::optional<VaultKey> key);

  Protection protection() const { return protection_; }

  // The stored form of `secret`, bound to `context` (a string naming what it is, e.g.
  // "identity bob signing seed"), so it cannot be moved to another record unnoticed.
  std::string Seal(const SecretBytes& secret, absl::string_view context) const;
  // The secret back. DATA_LOSS (reason AUTHENTICATION_FAILED) when it
  // was tampered with, belongs to another context, or was sealed under another protection.
  absl::StatusOr<SecretBytes> Unseal(absl::string_view sealed, absl::string_view context) const;

 private:
  Vault(Protection protection, SecretBytes key) : protection_(protection), key_(std::move(key)) {}

  Protection protection_;
  SecretBytes key_;  // empty for kNone
};

}  // namespace veil::vault

#endif  // VEIL_SIDECAR_VAULT_VAULT_H_
