#include "sidecar/identity/identity_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/identity/identifier.h"
#include "sidecar/vault/state_file.h"

namespace veil::identity {
namespace {

constexpr absl::string_view kIdentityKind = "IDNT";
constexpr absl::string_view kTrustedKind = "TRST";
constexpr absl::string_view kIdentitySuffix = ".identity";
constexpr absl::string_view kTrustedSuffix = ".trusted";

absl::Status NotFound(absl::string_view name) {
  return ErrorWithReason(absl::StatusCode::kNotFound,
                         absl::StrCat("no identity named \"", name, "\""),
                         reason::kIdentityNotFound);
}

int64_t NowSeconds() { return absl::ToUnixSeconds(absl::Now()); }

}  // namespace

IdentityLease::IdentityLease(IdentityLease&& other) noexcept
    : store_(other.store_), identity_(std::move(other.identity_)) {
  other.store_ = nullptr;
}

IdentityLease& IdentityLease::operator=(IdentityLease&& other) noexcept {
  if (this != &other) {
    Release();
    store_ = other.store_;
    identity_ = std::move(other.identity_);
    other.store_ = nullptr;
  }
  return *this;
}

IdentityLease::~IdentityLease() { Release(); }

void IdentityLease::Release() {
  if (store_ != nullptr && identity_ != nullptr) store_->ReleaseLease(identity_->name());
  store_ = nullptr;
  identity_.reset();
}

IdentityStore::IdentityStore(std::string state_dir, const vault::Vault& vault)
    : identities_dir_(state_dir + "/identities"),
      trusted_dir_(state_dir + "/trusted"),
      vault_(vault) {}

absl::StatusOr<std::unique_ptr<IdentityStore>> IdentityStore::Open(const std::string& state_dir,
                                                                   const vault::Vault& vault) {
  std::unique_ptr<IdentityStore> store(new IdentityStore(state_dir, vault));
  RETURN_IF_ERROR(vault::EnsurePrivateDirectory(store->identities_dir_));
  RETURN_IF_ERROR(vault::EnsurePrivateDirectory(store->trusted_dir_));
  ASSIGN_OR_RETURN(store->key_histories_, KnownKeyHistories::Open(state_dir + "/key_histories"));
  RETURN_IF_ERROR(store->LoadAll());
  return store;
}

absl::Status IdentityStore::LoadAll() {
  veil::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(auto names, vault::ListFiles(identities_dir_, kIdentitySuffix));
  for (const std::string& file : names) {
    std::string path = absl::StrCat(identities_dir_, "/", file);
    ASSIGN_OR_RETURN(std::string payload, vault::ReadStateFile(path, kIdentityKind));
    state::v1::IdentityRecord record;
    if (!record.ParseFromString(payload))
      return vault::DamagedStateFile(path, "not an identity record");
    if (absl::StrCat(record.name(), kIdentitySuffix) != file) {
      return vault::DamagedStateFile(path, absl::StrCat("holds identity \"", record.name(), "\""));
    }
    ASSIGN_OR_RETURN(auto identity, Identity::FromRecord(record, vault_, path));
    identities_[identity->name()] = std::move(identity);
  }
  ASSIGN_OR_RETURN(auto trusted, vault::ListFiles(trusted_dir_, kTrustedSuffix));
  for (const std::string& file : trusted) {
    std::string path = absl::StrCat(trusted_dir_, "/", file);
    ASSIGN_OR_RETURN(std::string payload, vault::ReadStateFile(path, kTrustedKind));
    state::v1::TrustedIdentityRecord record;
    if (!record.ParseFromString(payload) ||
        IdentifierOf(record.public_key()) != record.identifier() ||
        absl::StrCat(record.identifier(), kTrustedSuffix) != file) {
      return vault::DamagedStateFile(path, "not a consistent trusted identity record");
    }
    trusted_[record.identifier()] = {record.identifier(), record.public_key(), record.label(),
                                     record.added_unix_seconds()};
  }
  return absl::OkStatus();
}

std::string IdentityStore::IdentityPath(const std::string& name) const {
  return absl::StrCat(identities_dir_, "/", name, kIdentitySuffix);
}

std::string IdentityStore::TrustedPath(const std::string& identifier) const {
  return absl::StrCat(trusted_dir_, "/", identifier, kTrustedSuffix);
}

absl::StatusOr<std::shared_ptr<const Identity>> IdentityStore::CreateLocked(
    const std::string& name) {
  RETURN_IF_ERROR(ValidateIdentityName(name));
  if (identities_.contains(name)) {
    return ErrorWithReason(absl::StatusCode::kAlreadyExists,
                           absl::StrCat("identity \"", name, "\" already exists"),
                           reason::kIdentityExists);
  }
  auto identity = Identity::Generate(name, NowSeconds());
  RETURN_IF_ERROR(vault::WriteFileAtomically(
      IdentityPath(name),
      vault::EncodeStateFile(kIdentityKind, identity->ToRecord(vault_).SerializeAsString())));
  identities_[name] = identity;
  return identity;
}

absl::StatusOr<std::shared_ptr<const Identity>> IdentityStore::Create(const std::string& name) {
  veil::MutexLock lock(&mu_);
  return CreateLocked(name);
}

absl::StatusOr<std::shared_ptr<const Identity>> IdentityStore::Ensure(const std::string& name) {
  veil::MutexLock lock(&mu_);
  auto it = identities_.find(name);
  if (it != identities_.end()) return it->second;
  return CreateLocked(name);
}

absl::StatusOr<std::shared_ptr<const Identity>> IdentityStore::Get(const std::string& name) const {
  RETURN_IF_ERROR(ValidateIdentityName(name));
  veil::MutexLock lock(&mu_);
  auto it = identities_.find(name);
  if (it == identities_.end()) return NotFound(name);
  return it->second;
}

std::vector<std::shared_ptr<const Identity>> IdentityStore::List() const {
  std::vector<std::shared_ptr<const Identity>> out;
  {
    veil::MutexLock lock(&mu_);
    for (const auto& [name, identity] : identities_) out.push_back(identity);
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a->name() < b->name(); });
  return out;
}

absl::Status IdentityStore::Delete(const std::string& name) {
  RETURN_IF_ERROR(ValidateIdentityName(name));
  veil::MutexLock lock(&mu_);
  if (!identities_.contains(name)) return NotFound(name);
  auto lease = leases_.find(name);
  if (lease != leases_.end() && lease->second > 0) {
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                           absl::StrCat("identity \"", name, "\" is in use by ", lease->second,
                                        " listener(s), relay(s) or channel(s); delete those first"),
                           reason::kIdentityInUse);
  }
  RETURN_IF_ERROR(vault::RemoveFileDurably(IdentityPath(name)));
  identities_.erase(name);
  return absl::OkStatus();
}

absl::StatusOr<IdentityLease> IdentityStore::Acquire(const std::string& name) {
  RETURN_IF_ERROR(ValidateIdentityName(name));
  veil::MutexLock lock(&mu_);
  auto it = identities_.find(name);
  if (it == identities_.end()) return NotFound(name);
  ++leases_[name];
  return IdentityLease(this, it->second);
}

absl::StatusOr<std::shared_ptr<const Identity>> IdentityStore::Rotate(const std::string& name) {
  RETURN_IF_ERROR(ValidateIdentityName(name));
  veil::MutexLock lock(&mu_);
  auto it = identities_.find(name);
  if (it == identities_.end()) return NotFound(name);
  const std::shared_ptr<const Identity>& identity = it->second;
  ASSIGN_OR_RETURN(std::shared_ptr<const IdentityKeys> next, identity->NextKeys(NowSeconds()));
  RETURN_IF_ERROR(vault::WriteFileAtomically(
      IdentityPath(name),
      vault::EncodeStateFile(kIdentityKind,
                             identity->ToRecord(vault_, next.get()).SerializeAsString())));
  identity->InstallKeys(std::move(next));
  return identity;
}

void IdentityStore::ReleaseLease(const std::string& name) {
  veil::MutexLock lock(&mu_);
  auto it = leases_.find(name);
  if (it != leases_.end() && --it->second <= 0) leases_.erase(it);
}

absl::StatusOr<TrustedIdentity> IdentityStore::ImportTrusted(const std::string& identifier,
                                                             const std::string& public_key,
                                                             const std::string& label) {
  RETURN_IF_ERROR(ValidateIdentifier(identifier));
  if (public_key.size() != vault::kEd25519PublicBytes) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           absl::StrCat("a public key is ", vault::kEd25519PublicBytes,
                                        " bytes, not ", public_key.size()),
                           reason::kInvalidPublicKey);
  }
  if (IdentifierOf(public_key) != identifier) {
    return ErrorWithReason(
        absl::StatusCode::kInvalidArgument,
        absl::StrCat("identifier ", identifier, " is not the one derived from the public key (",
                     IdentifierOf(public_key), ")"),
        reason::kIdentifierMismatch);
  }
  if (label.size() > 256) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument, "a label is at most 256 bytes",
                           reason::kInvalidRequest);
  }
  TrustedIdentity trusted{identifier, public_key, label, NowSeconds()};
  state::v1::TrustedIdentityRecord record;
  record.set_identifier(identifier);
  record.set_public_key(public_key);
  record.set_label(label);
  record.set_added_unix_seconds(trusted.added_unix_seconds);
  veil::MutexLock lock(&mu_);
  RETURN_IF_ERROR(vault::WriteFileAtomically(
      TrustedPath(identifier), vault::EncodeStateFile(kTrustedKind, record.SerializeAsString())));
  trusted_[identifier] = trusted;
  return trusted;
}

std::vector<TrustedIdentity> IdentityStore::ListTrusted() const {
  std::vector<TrustedIdentity> out;
  {
    veil::MutexLock lock(&mu_);
    for (const auto& [id, t] : trusted_) out.push_back(t);
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.identifier < b.identifier; });
  return out;
}

absl::StatusOr<TrustedIdentity> IdentityStore::GetTrusted(const std::string& identifier) const {
  veil::MutexLock lock(&mu_);
  auto it = trusted_.find(identifier);
  if (it == trusted_.end()) {
    return ErrorWithReason(absl::StatusCode::kNotFound,
                           absl::StrCat("no trusted identity ", identifier),
                           reason::kTrustedIdentityNotFound);
  }
  return it->second;
}

absl::Status IdentityStore::DeleteTrusted(const std::string& identifier) {
  RETURN_IF_ERROR(ValidateIdentifier(identifier));
  veil::MutexLock lock(&mu_);
  if (!trusted_.contains(identifier)) {
    return ErrorWithReason(absl::StatusCode::kNotFound,
                           absl::StrCat("no trusted identity ", identifier),
                           reason::kTrustedIdentityNotFound);
  }
  RETURN_IF_ERROR(vault::RemoveFileDurably(TrustedPath(identifier)));
  trusted_.erase(identifier);
  return absl::OkStatus();
}

}  // namespace veil::identity
