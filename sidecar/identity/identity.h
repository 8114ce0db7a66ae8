// Identity: a named Ed25519 key pair (who this node is, to others) and the X25519 static key
// it uses in Noise handshakes, bound to it by an Ed25519 signature over the static public key
// (domain-separated, see kStaticKeySignatureContext). The private keys never leave this object:
// it signs and performs DH on request, and exports only public parts.
//
// Rotation (IdentityStore::Rotate) replaces the keys, never the identifier: that is derived
// from the identity's first key, and the keys now are tied to it by a signed KeyHistory
// (key_history.h) that travels in every handshake.
//
// Thread-safety: the name, identifier and first key are fixed; the keys are replaced whole by a
// rotation, so a user takes one snapshot (keys()) for everything that must match (a handshake).
#ifndef VEIL_SIDECAR_IDENTITY_IDENTITY_H_
#define VEIL_SIDECAR_IDENTITY_IDENTITY_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "sidecar/common/mutex.h"
#include "sidecar/identity/key_history.h"
#include "sidecar/vault/crypto.h"
#include "sidecar/vault/vault.h"
#include "veil/state/v1/state.pb.h"

namespace veil::identity {

// What an identity's signature over its Noise static key covers: this context, then the key.
inline constexpr absl::string_view kStaticKeySignatureContext =
    "veil/v1 noise static key binding\n";

// The identity every node has, and the one a request that names none means.
inline constexpr char kDefaultIdentity[] = "default";
inline std::string IdentityOrDefault(const std::string& name) {
  return name.empty() ? kDefaultIdentity : name;
}

// The message signed to bind `static_public_key` to an identity.
std::string StaticKeyBindingMessage(absl::string_view static_public_key);

// The keys an identity uses now, with the history that ties them to its identifier. Immutable.
class IdentityKeys {
 public:
  IdentityKeys(vault::Ed25519KeyPair signing, vault::X25519KeyPair static_key, KeyHistory history);
  IdentityKeys(const IdentityKeys&) = delete;
  IdentityKeys& operator=(const IdentityKeys&) = delete;

  // Ed25519 public key now, 32 bytes (the identity's first key until it rotates).
  const std::string& public_key() const { return signing_.public_key; }
  // X25519 static public key for Noise, 32 bytes, and the signature over it by public_key().
  const std::string& static_public_key() const { return static_.public_key; }
  const std::string& static_key_signature() const { return static_key_signature_; }
  // From the first key to public_key(); history().encoded is empty until the first rotation.
  const KeyHistory& history() const { return history_; }

  std::string Sign(absl::string_view message) const {
    return vault::Ed25519Sign(signing_, message);
  }
  // DH of the static key with `peer_public`, for the Noise handshake.
  absl::StatusOr<vault::SecretBytes> StaticDh(absl::string_view peer_public) const {
    return vault::X25519(static_.secret, peer_public);
  }

 private:
  friend class Identity;
  vault::Ed25519KeyPair signing_;
  vault::X25519KeyPair static_;
  std::string static_key_signature_;
  KeyHistory history_;
};

class Identity {
 public:
  // A new identity with fresh keys.
  static std::shared_ptr<const Identity> Generate(std::string name, int64_t created_unix_seconds);
  // Loads a stored record, unsealing its secrets with `vault`. DATA_LOSS naming `path` when the
  // record is inconsistent (keys that do not match, a name that differs from the file's, a key
  // history that does not verify or does not end in the signing key).
  static absl::StatusOr<std::shared_ptr<const Identity>> FromRecord(
      const state::v1::IdentityRecord& record, const vault::Vault& vault, absl::string_view path);
  // The record to store (of the keys now, or of `keys`), secrets sealed by `vault`.
  state::v1::IdentityRecord ToRecord(const vault::Vault& vault,
                                     const IdentityKeys* keys = nullptr) const;

  Identity(const Identity&) = delete;
  Identity& operator=(const Identity&) = delete;

  const std::string& name() const { return name_; }
  const std::string& identifier() const { return identifier_; }
  // The identity's first Ed25519 key, 32 bytes: the one its identifier is derived from, and
  // what others import to trust it. It stays the same across rotations.
  const std::string& public_key() const { return root_public_key_; }
  int64_t created_unix_seconds() const { return created_unix_seconds_; }

  // The keys now.
  std::shared_ptr<const IdentityKeys> keys() const {
    veil::MutexLock lock(&mu_);
    return keys_;
  }
  std::string Sign(absl::string_view message) const { return keys()->Sign(message); }

  // Fresh keys following the ones now, the history extended (signed by the old key and the new);
  // not in use until installed (IdentityStore::Rotate stores them first). FAILED_PRECONDITION
  // (KEY_HISTORY_INVALID) when the history is full.
  absl::StatusOr<std::shared_ptr<const IdentityKeys>> NextKeys(int64_t now_unix_seconds) const;

 private:
  friend class IdentityStore;
  Identity(std::string name, std::shared_ptr<const IdentityKeys> keys,
           int64_t created_unix_seconds);
  // Makes `keys` (from NextKeys) the keys now.
  void InstallKeys(std::shared_ptr<const IdentityKeys> keys) const;

  const std::string name_;
  const std::string root_public_key_;
  const std::string identifier_;
  const int64_t created_unix_seconds_;
  mutable veil::Mutex mu_;
  mutable std::shared_ptr<const IdentityKeys> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::identity

#endif  // VEIL_SIDECAR_IDENTITY_IDENTITY_H_
