// Memberships: this node's identities as members of credential authorities — enrolled with a
// ticket (`veil enroll TOKEN`), or configured (--authority-identity ID@ROUTE). For each, the
// node trusts the authority, holds a credential (kept in the state directory, so a restart
// presents it at once while it is valid) and refreshes it over a secure channel to the
// authority when two thirds of its life have passed — retrying with capped backoff while the
// authority is unreachable — and every channel of the identity presents the new one.
//
//   <state-dir>/authorities/<authority>.<identity>.authority   MemberAuthorityRecord
//
// Thread-safety: every method may be called from any thread.
#ifndef VEIL_SIDECAR_AUTHORITY_MEMBERSHIPS_H_
#define VEIL_SIDECAR_AUTHORITY_MEMBERSHIPS_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "boost/asio/steady_timer.hpp"
#include "sidecar/channel/credential_book.h"
#include "sidecar/channel/secure_channel_manager.h"
#include "sidecar/common/mutex.h"
#include "sidecar/identity/identity_store.h"

namespace veil::authority {

struct MembershipInfo {
  std::string authority;   // identifier
  std::string route;       // to its listener
  std::string identity;    // this node's identity name
  std::string identifier;  // and its identifier
  bool enrolled = false;   // with a ticket (else configured)
  // The credential held: its attributes, issue and expiry (Unix seconds; 0: none yet).
  identity::Attributes attributes;
  int64_t issued_at = 0, expires_at = 0;
  uint64_t refreshes = 0;  // credentials received since start
  std::string last_error;  // of the last attempt, "" when it worked
};

// A trusted authority as flags and config give it: "IDENTIFIER" or "IDENTIFIER@ROUTE" (route:
// its listener's, empty when none). INVALID_ARGUMENT for a bad identifier or route.
struct AuthorityEntry {
  std::string identifier, route;
};
absl::StatusOr<AuthorityEntry> ParseAuthorityEntry(absl::string_view text);

struct MembershipOptions {
  std::chrono::milliseconds call_timeout{10000};
  std::chrono::milliseconds retry_initial{1000};
  std::chrono::milliseconds retry_max{60000};
};

class Memberships : public std::enable_shared_from_this<Memberships> {
 public:
  Memberships(channel::SecureChannelManager& channels, identity::IdentityStore& identities,
              std::shared_ptr<channel::CredentialBook> book, std::string state_dir,
              MembershipOptions options = {});
  ~Memberships();

  // Loads enrolled memberships from the state directory and starts refreshing them. A
  // damaged file fails with its path.
  absl::Status Load();
  // A membership known by configuration: trusts `authority` and fetches the identity's
  // credential from `route` (the authority must already list it as a member).
  absl::Status AddConfigured(const std::string& authority, const std::string& route,
                             const std::string& identity_name);
  // Enrolls `identity_name` with an enrollment token; `done` hears the membership (with its
  // first credential) or why not (the token's, the channel's or the authority's refusal).
  void Enroll(const std::string& token, const std::string& identity_name,
              std::function<void(absl::StatusOr<MembershipInfo>)> done);
  // At start-up: enrolls `identity_name` with `token` unless it already is a member of the
  // token's authority, retrying with backoff while the authority is unreachable. A refused
  // ticket (used by another identity, expired, revoked, unknown) is logged and not retried.
  // INVALID_ARGUMENT at once for a token that does not decode.
  absl::Status EnrollOnStart(const std::string& token, const std::string& identity_name);
  std::vector<MembershipInfo> List() const;
  // Stops refreshing (for shutdown).
  void Shutdown();

 private:
  struct Entry;
  std::shared_ptr<Entry> AddEntry(const std::string& authority, const std::string& route,
                                  std::shared_ptr<const identity::Identity> identity, bool enrolled)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Fetches a fresh credential for `entry` now.
  void Refresh(const std::shared_ptr<Entry>& entry);
  // What `credential`, from `authority`, says of `identity`: an error unless it is the
  // authority's, valid now and for that identity.
  absl::StatusOr<identity::CredentialClaims> Verify(const std::string& authority,
                                                    const identity::Identity& identity,
                                                    const std::string& credential) const;
  // Verifies `credential` for `entry` and makes it the one held: stored, presented.
  absl::Status Accept(const std::shared_ptr<Entry>& entry, const std::string& credential);
  // Makes `credential`, verified (`claims`), the one `entry` holds: stored, presented.
  absl::Status Accept(const std::shared_ptr<Entry>& entry, const std::string& credential,
                      identity::CredentialClaims claims);
  absl::Status Persist(const Entry& entry) ABSL_LOCKS_EXCLUDED(mu_);
  void Schedule(const std::shared_ptr<Entry>& entry, std::chrono::milliseconds after);
  MembershipInfo InfoOf(const Entry& entry) const ABSL_LOCKS_EXCLUDED(mu_);

  channel::SecureChannelManager& channels_;
  identity::IdentityStore& identities_;
  const std::shared_ptr<channel::CredentialBook> book_;
  const std::string dir_;
  const MembershipOptions options_;
  mutable veil::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // By "<authority>.<identity name>".
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::authority

#endif  // VEIL_SIDECAR_AUTHORITY_MEMBERSHIPS_H_
