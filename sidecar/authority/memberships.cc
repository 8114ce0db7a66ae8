#include "sidecar/authority/memberships.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "boost/asio/post.hpp"
#include "sidecar/authority/authority.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/identity/identifier.h"
#include "sidecar/relay/backoff.h"
#include "sidecar/vault/state_file.h"
#include "spdlog/spdlog.h"
#include "veil/state/v1/state.pb.h"

namespace veil::authority {
namespace {

constexpr absl::string_view kMembershipKind = "MAUT";
constexpr absl::string_view kMembershipSuffix = ".authority";

int64_t UnixNow() { return absl::ToUnixSeconds(absl::Now()); }

// When to fetch the next credential: once two thirds of what is left of this one's life have
// passed (from now, to the millisecond: its times are whole seconds), so a slow or briefly
// unreachable authority still leaves time before peers see it expire; at least 500 ms apart.
std::chrono::milliseconds RefreshDelay(const identity::CredentialClaims& claims) {
  const int64_t left_ms = claims.expires_at * 1000 - absl::ToUnixMillis(absl::Now());
  return std::chrono::milliseconds(std::max<int64_t>(500, left_ms * 2 / 3));
}

double Uniform01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0, 1)(rng);
}

}  // namespace

absl::StatusOr<AuthorityEntry> ParseAuthorityEntry(absl::string_view text) {
  const size_t at = text.find('@');
  AuthorityEntry entry{std::string(text.substr(0, at)),
                       at == absl::string_view::npos ? "" : std::string(text.substr(at + 1))};
  RETURN_IF_ERROR(identity::ValidateIdentifier(entry.identifier));
  if (at != absl::string_view::npos) {
    auto route = core::Route::Parse(entry.route);
    if (!route.ok() || entry.route.empty()) {
      return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                             absl::StrCat("the route after '@' in ", QuoteInput(text),
                                          " is not a route (e.g. /tcp/authority:4200/service/"
                                          "authority)"),
                             reason::kInvalidRoute);
    }
  }
  return entry;
}

struct Memberships::Entry {
  Entry(core::Strand strand, std::string authority, std::string route,
        std::shared_ptr<const identity::Identity> identity, bool enrolled,
        const MembershipOptions& options)
      : strand(strand),
        timer(strand),
        authority(std::move(authority)),
        route(std::move(route)),
        identity(std::move(identity)),
        enrolled(enrolled),
        backoff(options.retry_initial, options.retry_max, Uniform01) {}
  core::Strand strand;
  boost::asio::steady_timer timer;  // on `strand`
  const std::string authority, route;
  const std::shared_ptr<const identity::Identity> identity;
  const bool enrolled;
  relay::Backoff backoff;  // on `strand`
  // Under Memberships::mu_:
  std::string credential;
  identity::CredentialClaims claims;
  uint64_t refreshes = 0;
  std::string last_error;
  bool stopped = false;
};

Memberships::Memberships(channel::SecureChannelManager& channels,
                         identity::IdentityStore& identities,
                         std::shared_ptr<channel::CredentialBook> book, std::string state_dir,
                         MembershipOptions options)
    : channels_(channels),
      identities_(identities),
      book_(std::move(book)),
      dir_(std::move(state_dir) + "/authorities"),
      options_(options) {}

Memberships::~Memberships() = default;

absl::Status Memberships::Load() {
  RETURN_IF_ERROR(vault::EnsurePrivateDirectory(dir_));
  ASSIGN_OR_RETURN(auto files, vault::ListFiles(dir_, kMembershipSuffix));
  for (const std::string& file : files) {
    std::string path = absl::StrCat(dir_, "/", file);
    ASSIGN_OR_RETURN(std::string payload, vault::ReadStateFile(path, kMembershipKind));
    state::v1::MemberAuthorityRecord record;
    if (!record.ParseFromString(payload) ||
        !identity::ValidateIdentifier(record.authority()).ok() ||
        !core::Route::Parse(record.route()).ok() ||
        absl::StrCat(record.authority(), ".", record.identity(), kMembershipSuffix) != file) {
      return vault::DamagedStateFile(path, "not a consistent membership record");
    }
    auto identity = identities_.Get(record.identity());
    if (!identity.ok()) {
      spdlog::warn("membership of {} in authority {}: the identity is gone; ignored",
                   record.identity(), record.authority());
      continue;
    }
    auto entry = AddEntry(record.authority(), record.route(), *identity, /*enrolled=*/true);
    if (!record.credential().empty()) {
      // Still valid (and ours): present it now; the refresh replaces it.
      if (absl::Status accepted = Accept(entry, record.credential()); !accepted.ok()) {
        spdlog::info(
            "membership of {} in authority {}: the stored credential is unusable ({}); "
            "fetching a new one",
            record.identity(), record.authority(), accepted.message());
      }
    }
    Refresh(entry);
  }
  return absl::OkStatus();
}

std::shared_ptr<Memberships::Entry> Memberships::AddEntry(
    const std::string& authority, const std::string& route,
    std::shared_ptr<const identity::Identity> identity, bool enrolled) {
  book_->Trust(authority);
  const std::string key = absl::StrCat(authority, ".", identity->name());
  veil::MutexLock lock(&mu_);
  if (auto it = entries_.find(key); it != entries_.end()) {
    it->second->stopped = true;  // replaced (enrolled again, maybe at another route)
    boost::asio::post(it->second->strand, [old = it->second] { old->timer.cancel(); });
  }
  auto entry = std::make_shared<Entry>(channels_.router().NewStrand(), authority, route,
                                       std::move(identity), enrolled, options_);
  entries_[key] = entry;
  return entry;
}

absl::Status Memberships::AddConfigured(const std::string& authority, const std::string& route,
                                        const std::string& identity_name) {
  RETURN_IF_ERROR(identity::ValidateIdentifier(authority));
  RETURN_IF_ERROR(core::Route::Parse(route).status());
  ASSIGN_OR_RETURN(auto identity, identities_.Get(identity_name));
  Refresh(AddEntry(authority, route, std::move(identity), /*enrolled=*/false));
  return absl::OkStatus();
}

absl::StatusOr<identity::CredentialClaims> Memberships::Verify(
    const std::string& authority, const identity::Identity& identity,
    const std::string& credential) const {
  const absl::flat_hash_set<std::string> issuer = {authority};
  return identity::VerifyCredential(credential, {.trusted_issuers = &issuer,
                                                 .subject = identity.identifier(),
                                                 .now = UnixNow(),
                                                 .key_histories = &identities_.key_histories()});
}

absl::Status Memberships::Accept(const std::shared_ptr<Entry>& entry,
                                 const std::string& credential) {
  ASSIGN_OR_RETURN(auto claims, Verify(entry->authority, *entry->identity, credential));
  return Accept(entry, credential, std::move(claims));
}

absl::Status Memberships::Accept(const std::shared_ptr<Entry>& entry, const std::string& credential,
                                 identity::CredentialClaims claims) {
  {
    veil::MutexLock lock(&mu_);
    if (entry->stopped) return absl::OkStatus();
    entry->credential = credential;
    entry->claims = std::move(claims);
    entry->last_error.clear();
  }
  book_->Put(entry->identity->identifier(), entry->authority, credential);
  channels_.CredentialsChanged(entry->identity->identifier());
  return Persist(*entry);
}

absl::Status Memberships::Persist(const Entry& entry) {
  if (!entry.enrolled) return absl::OkStatus();  // configured: the flags say it again
  state::v1::MemberAuthorityRecord record;
  record.set_authority(entry.authority);
  record.set_route(entry.route);
  record.set_identity(entry.identity->name());
  record.set_enrolled_unix_seconds(UnixNow());
  {
    veil::MutexLock lock(&mu_);
    record.set_credential(entry.credential);
  }
  return vault::WriteFileAtomically(
      absl::StrCat(dir_, "/", entry.authority, ".", entry.identity->name(), kMembershipSuffix),
      vault::EncodeStateFile(kMembershipKind, record.SerializeAsString()));
}

void Memberships::Schedule(const std::shared_ptr<Entry>& entry, std::chrono::milliseconds after) {
  boost::asio::post(entry->strand, [self = shared_from_this(), entry, after] {
    entry->timer.expires_after(after);
    entry->timer.async_wait([self, entry](boost::system::error_code ec) {
      if (!ec) self->Refresh(entry);
    });
  });
}

void Memberships::Refresh(const std::shared_ptr<Entry>& entry) {
  {
    veil::MutexLock lock(&mu_);
    if (shut_down_ || entry->stopped) return;
  }
  auto route = core::Route::Parse(entry->route);
  wire::v1::AuthorityRequest request;
  request.mutable_credential();
  AuthorityCall::Start(
      channels_, *route, entry->authority, entry->identity->name(), std::move(request),
      options_.call_timeout,
      [self = shared_from_this(), entry](absl::StatusOr<wire::v1::AuthorityResponse> response) {
        absl::Status outcome =
            response.ok() ? self->Accept(entry, response->credential()) : response.status();
        boost::asio::post(entry->strand, [self, entry, outcome] {
          std::chrono::milliseconds next;
          if (outcome.ok()) {
            entry->backoff.Reset();
            veil::MutexLock lock(&self->mu_);
            ++entry->refreshes;
            next = RefreshDelay(entry->claims);
          } else {
            next = entry->backoff.Next();
            spdlog::warn("membership of {} in authority {}: no credential ({}); again in {} ms",
                         entry->identity->name(), entry->authority, outcome.message(),
                         next.count());
            veil::MutexLock lock(&self->mu_);
            entry->last_error = std::string(outcome.message());
          }
          self->Schedule(entry, next);
        });
      });
}

void Memberships::Enroll(const std::string& token, const std::string& identity_name,
                         std::function<void(absl::StatusOr<MembershipInfo>)> done) {
  auto ticket = DecodeTicketToken(token);
  if (!ticket.ok()) {
    done(ticket.status());
    return;
  }
  auto identity = identities_.Get(identity_name);
  if (!identity.ok()) {
    done(identity.status());
    return;
  }
  auto route = core::Route::Parse(ticket->route());
  wire::v1::AuthorityRequest request;
  request.mutable_enroll()->set_ticket_secret(ticket->secret());
  AuthorityCall::Start(
      channels_, *route, ticket->authority(), identity_name, std::move(request),
      options_.call_timeout,
      [self = shared_from_this(), ticket = *ticket, identity = *std::move(identity),
       done = std::move(done)](absl::StatusOr<wire::v1::AuthorityResponse> response) {
        if (!response.ok()) {
          done(response.status());
          return;
        }
        // Verified before it replaces anything: a credential that does not verify (a broken
        // or hostile authority, a skewed clock) leaves no membership behind, and a membership
        // held before, with the same authority, goes on as it was.
        auto claims = self->Verify(ticket.authority(), *identity, response->credential());
        if (!claims.ok()) {
          done(ErrorWithReason(claims.status().code(),
                               absl::StrCat("authority ", ticket.authority(),
                                            " answered with a credential that does not verify: ",
                                            claims.status().message()),
                               ReasonOf(claims.status())));
          return;
        }
        auto entry = self->AddEntry(ticket.authority(), ticket.route(), identity, true);
        if (absl::Status accepted = self->Accept(entry, response->credential(), *std::move(claims));
            !accepted.ok()) {
          done(accepted);
          return;
        }
        spdlog::info("identity {} enrolled with authority {}", identity->name(),
                     ticket.authority());
        {
          veil::MutexLock lock(&self->mu_);
          ++entry->refreshes;
        }
        std::chrono::milliseconds next;
        {
          veil::MutexLock lock(&self->mu_);
          next = RefreshDelay(entry->claims);
        }
        self->Schedule(entry, next);
        done(self->InfoOf(*entry));
      });
}

absl::Status Memberships::EnrollOnStart(const std::string& token,
                                        const std::string& identity_name) {
  ASSIGN_OR_RETURN(auto ticket, DecodeTicketToken(token));
  ASSIGN_OR_RETURN(auto identity, identities_.Get(identity_name));
  {
    veil::MutexLock lock(&mu_);
    if (entries_.contains(absl::StrCat(ticket.authority(), ".", identity_name))) {
      return absl::OkStatus();  // enrolled before (the ticket is spent; refreshing goes on)
    }
  }
  struct Attempt : std::enable_shared_from_this<Attempt> {
    Attempt(std::shared_ptr<Memberships> m, std::string t, std::string i,
            const MembershipOptions& o)
        : self(std::move(m)),
          token(std::move(t)),
          identity(std::move(i)),
          timer(self->channels_.router().NewStrand()),
          backoff(o.retry_initial, o.retry_max, Uniform01) {}
    void Run() {
      {
        veil::MutexLock lock(&self->mu_);
        if (self->shut_down_) return;
      }
      self->Enroll(
          token, identity, [attempt = shared_from_this()](absl::StatusOr<MembershipInfo> info) {
            if (info.ok()) return;
            const absl::StatusCode code = info.status().code();
            if (code == absl::StatusCode::kPermissionDenied ||
                code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound) {
              spdlog::error("enrollment of {} refused, not retried: {}", attempt->identity,
                            info.status().message());
              return;
            }
            auto wait = attempt->backoff.Next();
            spdlog::warn("enrollment of {}: {}; again in {} ms", attempt->identity,
                         info.status().message(), wait.count());
            attempt->timer.expires_after(wait);
            attempt->timer.async_wait([attempt](boost::system::error_code ec) {
              if (!ec) attempt->Run();
            });
          });
    }
    std::shared_ptr<Memberships> self;
    std::string token, identity;
    boost::asio::steady_timer timer;
    relay::Backoff backoff;
  };
  std::make_shared<Attempt>(shared_from_this(), token, identity_name, options_)->Run();
  return absl::OkStatus();
}

MembershipInfo Memberships::InfoOf(const Entry& entry) const {
  MembershipInfo info;
  info.authority = entry.authority;
  info.route = entry.route;
  info.identity = entry.identity->name();
  info.identifier = entry.identity->identifier();
  info.enrolled = entry.enrolled;
  veil::MutexLock lock(&mu_);
  info.attributes = entry.claims.attributes;
  info.issued_at = entry.claims.issued_at;
  info.expires_at = entry.claims.expires_at;
  info.refreshes = entry.refreshes;
  info.last_error = entry.last_error;
  return info;
}

std::vector<MembershipInfo> Memberships::List() const {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    veil::MutexLock lock(&mu_);
    for (const auto& [key, entry] : entries_) entries.push_back(entry);
  }
  std::vector<MembershipInfo> out;
  for (const auto& entry : entries) out.push_back(InfoOf(*entry));
  std::sort(out.begin(), out.end(), [](const MembershipInfo& a, const MembershipInfo& b) {
    return std::tie(a.authority, a.identity) < std::tie(b.authority, b.identity);
  });
  return out;
}

void Memberships::Shutdown() {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    veil::MutexLock lock(&mu_);
    shut_down_ = true;
    for (const auto& [key, entry] : entries_) {
      entry->stopped = true;
      entries.push_back(entry);
    }
  }
  for (const auto& entry : entries) {
    boost::asio::post(entry->strand, [entry] { entry->timer.cancel(); });
  }
}

}  // namespace veil::authority
