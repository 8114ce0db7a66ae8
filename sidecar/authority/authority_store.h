// AuthorityStore: a credential authority's members and enrollment tickets, kept in the state
// directory (one file each, written atomically, loaded at Open):
//
//   <state-dir>/authority/members/<identifier>.member   AuthorityMemberRecord
//   <state-dir>/authority/tickets/<id>.ticket           AuthorityTicketRecord
//
// A ticket's secret is never stored: only its SHA-256. A ticket enrolls one identity, once
// (the same identity asking again — a retry after a lost answer — gets the same membership),
// until it expires or is revoked; used and expired tickets are listed until deleted.
//
// Thread-safety: every method may be called from any thread.
#ifndef VEIL_SIDECAR_AUTHORITY_AUTHORITY_STORE_H_
#define VEIL_SIDECAR_AUTHORITY_AUTHORITY_STORE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "sidecar/common/mutex.h"
#include "sidecar/identity/credential.h"

namespace veil::authority {

inline constexpr size_t kTicketSecretBytes = 32;
// The most tickets and members kept (each a file).
inline constexpr size_t kMaxTickets = 100000;
inline constexpr size_t kMaxMembers = 1000000;

struct Member {
  std::string identifier;
  identity::Attributes attributes;
  int64_t added_unix_seconds = 0;
  std::string ticket;  // the ticket it enrolled with; "" when added by an admin
};

struct Ticket {
  std::string id;
  identity::Attributes attributes;
  int64_t created_unix_seconds = 0, expires_unix_seconds = 0;
  std::string used_by;  // identifier; "" while unused
  bool revoked = false;
};

class AuthorityStore {
 public:
  static absl::StatusOr<std::unique_ptr<AuthorityStore>> Open(const std::string& state_dir);

  // Adds `identifier` with `attributes`, or replaces the attributes of a member.
  // INVALID_ARGUMENT for a bad identifier or attribute.
  absl::StatusOr<Member> PutMember(const std::string& identifier, identity::Attributes attributes,
                                   int64_t now, const std::string& ticket = "");
  // NOT_FOUND (MEMBER_NOT_FOUND) when absent.
  absl::Status RemoveMember(const std::string& identifier);
  std::optional<Member> GetMember(const std::string& identifier) const;
  std::vector<Member> ListMembers() const;  // by identifier

  // A new ticket for `attributes`, valid `ttl_seconds` (1 s to 30 days), and its secret
  // (kTicketSecretBytes; shown once, never stored).
  absl::StatusOr<std::pair<Ticket, std::string>> CreateTicket(identity::Attributes attributes,
                                                              int64_t ttl_seconds, int64_t now);
  std::vector<Ticket> ListTickets() const;  // by creation time
  // NOT_FOUND (TICKET_NOT_FOUND) when absent. Revoking twice is fine.
  absl::Status RevokeTicket(const std::string& id);
  // Makes `identifier` a member with the attributes of the ticket whose secret is `secret`.
  // PERMISSION_DENIED with reason TICKET_INVALID (no such secret), TICKET_USED (another
  // identity used it), TICKET_EXPIRED or TICKET_REVOKED.
  absl::StatusOr<Member> Enroll(absl::string_view secret, const std::string& identifier,
                                int64_t now);

 private:
  explicit AuthorityStore(const std::string& state_dir);
  absl::Status Load();
  absl::Status WriteMember(const Member& member) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteTicket(const Ticket& ticket, const std::string& secret_sha256)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string members_dir_, tickets_dir_;
  mutable veil::Mutex mu_;
  absl::flat_hash_map<std::string, Member> members_ ABSL_GUARDED_BY(mu_);
  struct StoredTicket {
    Ticket ticket;
    std::string secret_sha256;
  };
  absl::flat_hash_map<std::string, StoredTicket> tickets_ ABSL_GUARDED_BY(mu_);   // by id
  absl::flat_hash_map<std::string, std::string> by_secret_ ABSL_GUARDED_BY(mu_);  // sha -> id
};

}  // namespace veil::authority

#endif  // VEIL_SIDECAR_AUTHORITY_AUTHORITY_STORE_H_
