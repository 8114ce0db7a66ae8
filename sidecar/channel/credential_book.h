// CredentialBook: the node's view of credentials — which authorities it trusts, and the
// credentials each of its identities holds (refreshed from the authority by the daemon). Secure
// channels read it when they start (to present and to check); whoever changes an identity's
// credentials tells the channel manager (SecureChannelManager::CredentialsChanged) so every
// channel of that identity presents the new ones.
//
// Thread-safety: every method may be called from any thread; snapshots are immutable.
#ifndef VEIL_SIDECAR_CHANNEL_CREDENTIAL_BOOK_H_
#define VEIL_SIDECAR_CHANNEL_CREDENTIAL_BOOK_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "sidecar/common/mutex.h"
#include "sidecar/identity/credential.h"

namespace veil::channel {

class CredentialBook {
 public:
  using Authorities = absl::flat_hash_set<std::string>;
  using Credentials = std::vector<std::string>;  // encoded wire Credentials

  std::shared_ptr<const Authorities> trusted() const ABSL_LOCKS_EXCLUDED(mu_);
  void Trust(const std::string& authority_identifier) ABSL_LOCKS_EXCLUDED(mu_);
  void SetTrusted(Authorities authorities) ABSL_LOCKS_EXCLUDED(mu_);

  // The credentials `identifier` (one of this node's identities) presents: one per authority.
  std::shared_ptr<const Credentials> CredentialsOf(const std::string& identifier) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Stores `credential` (an encoded Credential about `identifier` from `authority`), replacing
  // that authority's earlier one.
  void Put(const std::string& identifier, const std::string& authority, std::string credential)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Removes the credential from `authority` (all when empty) of `identifier`.
  void Remove(const std::string& identifier, const std::string& authority = "")
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable veil::Mutex mu_;
  std::shared_ptr<const Authorities> trusted_ ABSL_GUARDED_BY(mu_) =
      std::make_shared<const Authorities>();
  // identifier -> authority -> credential, and the presented snapshot per identifier.
  absl::flat_hash_map<std::string, absl::flat_hash_map<std::string, std::string>> held_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<const Credentials>> presented_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::channel

#endif  // VEIL_SIDECAR_CHANNEL_CREDENTIAL_BOOK_H_
