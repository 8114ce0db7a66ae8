#include "sidecar/authority/authority_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/random_name.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/identity/identifier.h"
#include "sidecar/vault/crypto.h"
#include "sidecar/vault/state_file.h"
#include "veil/state/v1/state.pb.h"

namespace veil::authority {
namespace {

constexpr absl::string_view kMemberKind = "AMBR";
constexpr absl::string_view kTicketKind = "ATKT";
constexpr absl::string_view kMemberSuffix = ".member";
constexpr absl::string_view kTicketSuffix = ".ticket";
constexpr int64_t kMaxTicketTtl = 30 * 24 * 3600;

std::string Sha256Of(absl::string_view data) {
  auto digest = vault::Sha256(data);
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

identity::Attributes FromMap(const google::protobuf::Map<std::string, std::string>& map) {
  return identity::Attributes(map.begin(), map.end());
}

void ToMap(const identity::Attributes& attributes,
           google::protobuf::Map<std::string, std::string>& map) {
  map.insert(attributes.begin(), attributes.end());
}

absl::Status ValidateTicketId(absl::string_view id) {
  bool ok = id.size() > 2 && id.size() <= 40 && id.substr(0, 2) == "t_";
  for (char c : id.substr(std::min<size_t>(2, id.size()))) {
    ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  }
  if (ok) return absl::OkStatus();
  return ErrorWithReason(absl::StatusCode::kNotFound,
                         absl::StrCat("no ticket ", QuoteInput(id, 40)), reason::kTicketNotFound);
}

}  // namespace

AuthorityStore::AuthorityStore(const std::string& state_dir)
    : members_dir_(state_dir + "/authority/members"),
      tickets_dir_(state_dir + "/authority/tickets") {}

absl::StatusOr<std::unique_ptr<AuthorityStore>> AuthorityStore::Open(const std::string& state_dir) {
  RETURN_IF_ERROR(vault::EnsurePrivateDirectory(state_dir + "/authority"));
  std::unique_ptr<AuthorityStore> store(new AuthorityStore(state_dir));
  RETURN_IF_ERROR(vault::EnsurePrivateDirectory(store->members_dir_));
  RETURN_IF_ERROR(vault::EnsurePrivateDirectory(store->tickets_dir_));
  RETURN_IF_ERROR(store->Load());
  return store;
}

absl::Status AuthorityStore::Load() {
  veil::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(auto members, vault::ListFiles(members_dir_, kMemberSuffix));
  for (const std::string& file : members) {
    std::string path = absl::StrCat(members_dir_, "/", file);
    ASSIGN_OR_RETURN(std::string payload, vault::ReadStateFile(path, kMemberKind));
    state::v1::AuthorityMemberRecord record;
    identity::Attributes attributes;
    if (record.ParseFromString(payload)) attributes = FromMap(record.attributes());
    if (!record.ParseFromString(payload) ||
        !identity::ValidateIdentifier(record.identifier()).ok() ||
        absl::StrCat(record.identifier(), kMemberSuffix) != file ||
        !identity::ValidateAttributes(attributes).ok()) {
      return vault::DamagedStateFile(path, "not a consistent member record");
    }
    members_[record.identifier()] = {record.identifier(), std::move(attributes),
                                     record.added_unix_seconds(), record.ticket()};
  }
  ASSIGN_OR_RETURN(auto tickets, vault::ListFiles(tickets_dir_, kTicketSuffix));
  for (const std::string& file : tickets) {
    std::string path = absl::StrCat(tickets_dir_, "/", file);
    ASSIGN_OR_RETURN(std::string payload, vault::ReadStateFile(path, kTicketKind));
    state::v1::AuthorityTicketRecord record;
    if (!record.ParseFromString(payload) || !ValidateTicketId(record.id()).ok() ||
        absl::StrCat(record.id(), kTicketSuffix) != file || record.secret_sha256().size() != 32) {
      return vault::DamagedStateFile(path, "not a consistent ticket record");
    }
    StoredTicket stored{{record.id(), FromMap(record.attributes()), record.created_unix_seconds(),
                         record.expires_unix_seconds(), record.used_by(), record.revoked()},
                        record.secret_sha256()};
    by_secret_[stored.secret_sha256] = record.id();
    tickets_[record.id()] = std::move(stored);
  }
  return absl::OkStatus();
}

absl::Status AuthorityStore::WriteMember(const Member& member) {
  state::v1::AuthorityMemberRecord record;
  record.set_identifier(member.identifier);
  ToMap(member.attributes, *record.mutable_attributes());
  record.set_added_unix_seconds(member.added_unix_seconds);
  record.set_ticket(member.ticket);
  return vault::WriteFileAtomically(
      absl::StrCat(members_dir_, "/", member.identifier, kMemberSuffix),
      vault::EncodeStateFile(kMemberKind, record.SerializeAsString()));
}

absl::Status AuthorityStore::WriteTicket(const Ticket& ticket, const std::string& secret_sha256) {
  state::v1::AuthorityTicketRecord record;
  record.set_id(ticket.id);
  record.set_secret_sha256(secret_sha256);
  ToMap(ticket.attributes, *record.mutable_attributes());
  record.set_created_unix_seconds(ticket.created_unix_seconds);
  record.set_expires_unix_seconds(ticket.expires_unix_seconds);
  record.set_used_by(ticket.used_by);
  record.set_revoked(ticket.revoked);
  return vault::WriteFileAtomically(
      absl::StrCat(tickets_dir_, "/", ticket.id, kTicketSuffix),
      vault::EncodeStateFile(kTicketKind, record.SerializeAsString()));
}

absl::StatusOr<Member> AuthorityStore::PutMember(const std::string& identifier,
                                                 identity::Attributes attributes, int64_t now,
                                                 const std::string& ticket) {
  RETURN_IF_ERROR(identity::ValidateIdentifier(identifier));
  RETURN_IF_ERROR(identity::ValidateAttributes(attributes));
  veil::MutexLock lock(&mu_);
  auto it = members_.find(identifier);
  if (it == members_.end() && members_.size() >= kMaxMembers) {
    return ErrorWithReason(absl::StatusCode::kResourceExhausted,
                           absl::StrCat("the authority has ", kMaxMembers, " members, its limit"),
                           reason::kInvalidRequest);
  }
  Member member{identifier, std::move(attributes),
                it == members_.end() ? now : it->second.added_unix_seconds, ticket};
  RETURN_IF_ERROR(WriteMember(member));
  members_[identifier] = member;
  return member;
}

absl::Status AuthorityStore::RemoveMember(const std::string& identifier) {
  veil::MutexLock lock(&mu_);
  if (!members_.contains(identifier)) {
    return ErrorWithReason(absl::StatusCode::kNotFound,
                           absl::StrCat(QuoteInput(identifier, 40), " is not a member"),
                           reason::kMemberNotFound);
  }
  RETURN_IF_ERROR(
      vault::RemoveFileDurably(absl::StrCat(members_dir_, "/", identifier, kMemberSuffix)));
  members_.erase(identifier);
  return absl::OkStatus();
}

std::optional<Member> AuthorityStore::GetMember(const std::string& identifier) const {
  veil::MutexLock lock(&mu_);
  auto it = members_.find(identifier);
  if (it == members_.end()) return std::nullopt;
  return it->second;
}

std::vector<Member> AuthorityStore::ListMembers() const {
  std::vector<Member> out;
  {
    veil::MutexLock lock(&mu_);
    for (const auto& [id, member] : members_) out.push_back(member);
  }
  std::sort(out.begin(), out.end(),
            [](const Member& a, const Member& b) { return a.identifier < b.identifier; });
  return out;
}

absl::StatusOr<std::pair<Ticket, std::string>> AuthorityStore::CreateTicket(
    identity::Attributes attributes, int64_t ttl_seconds, int64_t now) {
  RETURN_IF_ERROR(identity::ValidateAttributes(attributes));
  if (ttl_seconds < 1 || ttl_seconds > kMaxTicketTtl) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           absl::StrCat("a ticket's time to live is 1 s to ", kMaxTicketTtl / 86400,
                                        " days, not ", ttl_seconds, " s"),
                           reason::kInvalidRequest);
  }
  std::string secret = vault::RandomString(kTicketSecretBytes);
  Ticket ticket{RandomName("t_", 8), std::move(attributes), now, now + ttl_seconds, "", false};
  std::string sha = Sha256Of(secret);
  veil::MutexLock lock(&mu_);
  if (tickets_.size() >= kMaxTickets) {
    return ErrorWithReason(absl::StatusCode::kResourceExhausted,
                           absl::StrCat("the authority keeps ", kMaxTickets,
                                        " tickets, its limit: delete used or expired ones"),
                           reason::kInvalidRequest);
  }
  RETURN_IF_ERROR(WriteTicket(ticket, sha));
  by_secret_[sha] = ticket.id;
  tickets_[ticket.id] = {ticket, sha};
  return std::make_pair(ticket, secret);
}

std::vector<Ticket> AuthorityStore::ListTickets() const {
  std::vector<Ticket> out;
  {
    veil::MutexLock lock(&mu_);
    for (const auto& [id, stored] : tickets_) out.push_back(stored.ticket);
  }
  std::sort(out.begin(), out.end(), [](const Ticket& a, const Ticket& b) {
    return std::tie(a.created_unix_seconds, a.id) < std::tie(b.created_unix_seconds, b.id);
  });
  return out;
}

absl::Status AuthorityStore::RevokeTicket(const std::string& id) {
  RETURN_IF_ERROR(ValidateTicketId(id));
  veil::MutexLock lock(&mu_);
  auto it = tickets_.find(id);
  if (it == tickets_.end()) return ValidateTicketId("");  // the same NOT_FOUND
  if (it->second.ticket.revoked) return absl::OkStatus();
  Ticket revoked = it->second.ticket;
  revoked.revoked = true;
  RETURN_IF_ERROR(WriteTicket(revoked, it->second.secret_sha256));
  it->second.ticket = std::move(revoked);
  return absl::OkStatus();
}

absl::StatusOr<Member> AuthorityStore::Enroll(absl::string_view secret,
                                              const std::string& identifier, int64_t now) {
  RETURN_IF_ERROR(identity::ValidateIdentifier(identifier));
  auto refused = [](absl::string_view why, absl::string_view reason) {
    return ErrorWithReason(absl::StatusCode::kPermissionDenied, why, reason);
  };
  identity::Attributes attributes;
  std::string ticket_id;
  {
    veil::MutexLock lock(&mu_);
    auto id = by_secret_.find(Sha256Of(secret));
    if (secret.size() != kTicketSecretBytes || id == by_secret_.end()) {
      return refused("no such enrollment ticket", reason::kTicketInvalid);
    }
    StoredTicket& stored = tickets_.at(id->second);
    Ticket& ticket = stored.ticket;
    if (ticket.revoked) return refused("the enrollment ticket was revoked", reason::kTicketRevoked);
    if (!ticket.used_by.empty() && ticket.used_by != identifier) {
      return refused("the enrollment ticket was already used", reason::kTicketUsed);
    }
    if (ticket.used_by.empty()) {
      if (now >= ticket.expires_unix_seconds) {
        return refused("the enrollment ticket expired", reason::kTicketExpired);
      }
      Ticket used = ticket;
      used.used_by = identifier;
      RETURN_IF_ERROR(WriteTicket(used, stored.secret_sha256));  // used before it counts
      ticket = std::move(used);
    }
    attributes = ticket.attributes;
    ticket_id = ticket.id;
  }
  return PutMember(identifier, std::move(attributes), now, ticket_id);
}

}  // namespace veil::authority
