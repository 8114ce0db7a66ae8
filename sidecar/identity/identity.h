// Identity: a named Ed25519 key pair (who this node is, to others) and the X25519 static key
// it uses in Noise handshakes, bound to it by an Ed25519 signature over the static public key
// (domain-separated, see kStaticKeySignatureContext). The private keys never leave this object:
// it signs and performs DH on request, and exports only public parts.
//
// Thread-safety: immutable after creation; share it as std::shared_ptr<const Identity>.
#ifndef VEIL_SIDECAR_IDENTITY_IDENTITY_H_
#define VEIL_SIDECAR_IDENTITY_IDENTITY_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
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

class Identity {
 public:
  // A new identity with fresh keys.
  static std::shared_ptr<const Identity> Generate(std::string name, int64_t created_unix_seconds);
  // Loads a stored record, unsealing its secrets with `vault`. DATA_LOSS naming `path` when the
  // record is inconsistent (keys that do not match, a name that differs from the file's).
  static absl::StatusOr<std::shared_ptr<const Identity>> FromRecord(
      const state::v1::IdentityRecord& record, const vault::Vault& vault, absl::string_view path);
  // The record to store, secrets sealed by `vault`.
  state::v1::IdentityRecord ToRecord(const vault::Vault& vault) const;

  Identity(const Identity&) = delete;
  Identity& operator=(const Identity&) = delete;

  const std::string& name() const { return name_; }
  const std::string& identifier() const { return identifier_; }
  // Ed25519 public key, 32 bytes.
  const std::string& public_key() const { return signing_.public_key; }
  // X25519 static public key for Noise, 32 bytes, and this identity's signature over it.
  const std::string& static_public_key() const { return static_.public_key; }
  const std::string& static_key_signature() const { return static_key_signature_; }
  int64_t created_unix_seconds() const { return created_unix_seconds_; }

  std::string Sign(absl::string_view message) const {
    return vault::Ed25519Sign(signing_, message);
  }
  // DH of the static key with `peer_public`, for the Noise handshake.
  absl::StatusOr<vault::SecretBytes> StaticDh(absl::string_view peer_public) const {
    return vault::X25519(static_.secret, peer_public);
  }

 private:
  Identity(std::string name, vault::Ed25519KeyPair signing, vault::X25519KeyPair static_key,
           int64_t created_unix_seconds);

  std::string name_;
  vault::Ed25519KeyPair signing_;
  vault::X25519KeyPair static_;
  std::string identifier_;
  std::string static_key_signature_;
  int64_t created_unix_seconds_;
};

}  // namespace veil::identity

#endif  // VEIL_SIDECAR_IDENTITY_IDENTITY_H_
