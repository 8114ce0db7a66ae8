// IdentityStore: this node's named identities and the public identities it was told to trust,
// kept in the state directory:
//
//   <state-dir>/identities/<name>.identity        one IdentityRecord each (secrets sealed)
//   <state-dir>/trusted/<identifier>.trusted      one TrustedIdentityRecord each
//   <state-dir>/key_histories/<identifier>.keys   what was seen of others' key rotations
//
// Everything is loaded at Open; a damaged or unsafe file fails Open with an error naming it
// and is never overwritten. Writes are atomic. An identity in use (a listener, relay or channel
// holds an IdentityLease) cannot be deleted.
//
// Thread-safety: all methods may be called from any thread.
#ifndef VEIL_SIDECAR_IDENTITY_IDENTITY_STORE_H_
#define VEIL_SIDECAR_IDENTITY_IDENTITY_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "sidecar/common/mutex.h"
#include "sidecar/identity/identity.h"
#include "sidecar/vault/vault.h"

namespace veil::identity {

// A public identity this node trusts (imported), e.g. for trust lists.
struct TrustedIdentity {
  std::string identifier;
  std::string public_key;  // Ed25519, 32 bytes
  std::string label;
  int64_t added_unix_seconds = 0;
};

class IdentityStore;

// Keeps an identity marked "in use" while it lives. Move-only.
class IdentityLease {
 public:
  IdentityLease() = default;
  IdentityLease(IdentityLease&& other) noexcept;
  IdentityLease& operator=(IdentityLease&& other) noexcept;
  ~IdentityLease();
  const std::shared_ptr<const Identity>& identity() const { return identity_; }

 private:
  friend class IdentityStore;
  IdentityLease(IdentityStore* store, std::shared_ptr<const Identity> identity)
      : store_(store), identity_(std::move(identity)) {}
  void Release();
  IdentityStore* store_ = nullptr;
  std::shared_ptr<const Identity> identity_;
};

class IdentityStore {
 public:
  // Loads identities and trusted identities from `state_dir` (creating the folders, 0700).
  // `vault` must outlive the store.
  static absl::StatusOr<std::unique_ptr<IdentityStore>> Open(const std::string& state_dir,
                                                             const vault::Vault& vault);

  // Creates and stores `name`. INVALID_ARGUMENT for a bad name; ALREADY_EXISTS when taken;
  // disk errors as returned by the write.
  absl::StatusOr<std::shared_ptr<const Identity>> Create(const std::string& name);
  // Returns `name`, creating it if missing.
  absl::StatusOr<std::shared_ptr<const Identity>> Ensure(const std::string& name);
  // NOT_FOUND (reason IDENTITY_NOT_FOUND) when absent.
  absl::StatusOr<std::shared_ptr<const Identity>> Get(const std::string& name) const;
  // Sorted by name.
  std::vector<std::shared_ptr<const Identity>> List() const;
  // Deletes `name` and its file. NOT_FOUND when absent; FAILED_PRECONDITION (reason
  // IDENTITY_IN_USE) while leased.
  absl::Status Delete(const std::string& name);
  // Marks `name` in use. NOT_FOUND when absent.
  absl::StatusOr<IdentityLease> Acquire(const std::string& name);
  // Gives `name` fresh keys, its identifier unchanged (key_history.h): stored first, then used
  // by every handshake that starts afterwards, by the listeners, relays and channels that hold
  // it too; established channels keep the keys they were made with. NOT_FOUND when absent;
  // FAILED_PRECONDITION (KEY_HISTORY_INVALID) after kMaxKeyChanges rotations; a disk error
  // leaves the identity as it was.
  absl::StatusOr<std::shared_ptr<const Identity>> Rotate(const std::string& name);

  // What this node saw of other identities' key rotations (checked in every handshake).
  KnownKeyHistories& key_histories() const { return *key_histories_; }

  // Imports a public identity to trust. INVALID_ARGUMENT when the key is not 32 bytes or the
  // identifier is not the one derived from it; an existing entry is replaced (new label).
  absl::StatusOr<TrustedIdentity> ImportTrusted(const std::string& identifier,
                                                const std::string& public_key,
                                                const std::string& label);
  std::vector<TrustedIdentity> ListTrusted() const;
  // NOT_FOUND when absent.
  absl::StatusOr<TrustedIdentity> GetTrusted(const std::string& identifier) const;
  absl::Status DeleteTrusted(const std::string& identifier);

 private:
  friend class IdentityLease;
  IdentityStore(std::string state_dir, const vault::Vault& vault);
  absl::Status LoadAll();
  absl::StatusOr<std::shared_ptr<const Identity>> CreateLocked(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseLease(const std::string& name);
  std::string IdentityPath(const std::string& name) const;
  std::string TrustedPath(const std::string& identifier) const;

  const std::string identities_dir_;
  const std::string trusted_dir_;
  std::unique_ptr<KnownKeyHistories> key_histories_;
  const vault::Vault& vault_;
  mutable veil::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const Identity>> identities_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> leases_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, TrustedIdentity> trusted_ ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::identity

#endif  // VEIL_SIDECAR_IDENTITY_IDENTITY_STORE_H_
