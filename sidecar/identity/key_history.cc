#include "sidecar/identity/key_history.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/identity/canonical.h"
#include "sidecar/identity/identifier.h"
#include "sidecar/vault/state_file.h"
#include "veil/state/v1/state.pb.h"
#include "veil/wire/v1/key_history.pb.h"

namespace veil::identity {
namespace {

constexpr absl::string_view kKnownKind = "KHST";
constexpr absl::string_view kKnownSuffix = ".keys";

absl::Status Invalid(absl::StatusCode code, absl::string_view why) {
  return ErrorWithReason(code, absl::StrCat("invalid key history: ", why),
                         reason::kKeyHistoryInvalid);
}
absl::Status Invalid(absl::string_view why) {
  return Invalid(absl::StatusCode::kInvalidArgument, why);
}

std::string Hash(absl::string_view data) {
  auto digest = vault::Sha256(data);
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

std::string SignedMessage(absl::string_view change) {
  return absl::StrCat(kKeyChangeContext, change);
}

}  // namespace

KeyHistory RootKeyHistory(absl::string_view public_key) {
  KeyHistory out;
  out.root_public_key = std::string(public_key);
  out.identifier = IdentifierOf(public_key);
  out.public_key = std::string(public_key);
  out.heads.push_back(Hash(public_key));
  return out;
}

absl::StatusOr<KeyHistory> VerifyKeyHistory(absl::string_view encoded) {
  if (encoded.size() > kMaxKeyHistoryBytes) {
    return Invalid(absl::StrCat(encoded.size(), " bytes; the most is ", kMaxKeyHistoryBytes));
  }
  wire::v1::KeyHistory history;
  if (!history.ParseFromArray(encoded.data(), static_cast<int>(encoded.size()))) {
    return Invalid("not a KeyHistory");
  }
  history.DiscardUnknownFields();  // recursive: an unknown field anywhere makes it differ below
  if (CanonicalEncoding(history) != encoded) return Invalid("not canonical");
  if (history.root_public_key().size() != vault::kEd25519PublicBytes) {
    return Invalid("the root key is not 32 bytes");
  }
  if (history.changes().empty())
    return Invalid("no change (an identity that never rotated sends none)");
  if (history.changes_size() > static_cast<int>(kMaxKeyChanges)) {
    return Invalid(absl::StrCat(history.changes_size(), " changes; the most is ", kMaxKeyChanges));
  }
  KeyHistory out = RootKeyHistory(history.root_public_key());
  absl::flat_hash_set<std::string> keys = {out.public_key};
  for (int i = 0; i < history.changes_size(); ++i) {
    const wire::v1::SignedKeyChange& signed_change = history.changes(i);
    auto bad = [i](absl::StatusCode code, absl::string_view why) {
      return Invalid(code, absl::StrCat("change ", i + 1, ": ", why));
    };
    wire::v1::KeyChange change;
    bool parsed = change.ParseFromString(signed_change.change());
    change.DiscardUnknownFields();
    if (!parsed || CanonicalEncoding(change) != signed_change.change()) {
      return bad(absl::StatusCode::kInvalidArgument, "not a canonical KeyChange");
    }
    if (change.version() != kKeyChangeVersion) {
      return bad(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("version ", change.version(), "; this node knows version ",
                              kKeyChangeVersion));
    }
    if (change.previous() != out.head()) {
      return bad(absl::StatusCode::kInvalidArgument, "it does not follow the change before it");
    }
    if (change.public_key().size() != vault::kEd25519PublicBytes) {
      return bad(absl::StatusCode::kInvalidArgument, "the key is not 32 bytes");
    }
    if (!keys.insert(change.public_key()).second) {
      return bad(absl::StatusCode::kInvalidArgument, "it goes back to a key used before");
    }
    const std::string message = SignedMessage(signed_change.change());
    if (!vault::Ed25519Verify(out.public_key, message, signed_change.previous_key_signature())
             .ok()) {
      return bad(absl::StatusCode::kUnauthenticated,
                 "the key before it did not sign it (not the identity's own change)");
    }
    if (!vault::Ed25519Verify(change.public_key(), message, signed_change.new_key_signature())
             .ok()) {
      return bad(absl::StatusCode::kUnauthenticated, "the new key did not sign it");
    }
    out.public_key = change.public_key();
    out.heads.push_back(Hash(message));
    out.changed_at = change.created_at();
  }
  out.encoded = std::string(encoded);
  return out;
}

absl::StatusOr<KeyHistory> KeyHistoryOf(absl::string_view public_key,
                                        absl::string_view encoded_history) {
  if (public_key.size() != vault::kEd25519PublicBytes) {
    return Invalid("the identity key is not 32 bytes");
  }
  if (encoded_history.empty()) return RootKeyHistory(public_key);
  ASSIGN_OR_RETURN(KeyHistory history, VerifyKeyHistory(encoded_history));
  if (history.public_key != public_key) {
    return Invalid("it does not end in the key presented with it");
  }
  return history;
}

absl::StatusOr<KeyHistory> ExtendKeyHistory(const KeyHistory& history,
                                            const vault::Ed25519KeyPair& current,
                                            const vault::Ed25519KeyPair& next, int64_t now) {
  auto refuse = [](absl::string_view why) {
    return Invalid(absl::StatusCode::kFailedPrecondition, why);
  };
  if (current.public_key != history.public_key) return refuse("the signing key is not the key now");
  if (history.changes() >= kMaxKeyChanges) {
    return refuse(absl::StrCat("the identity was rotated ", kMaxKeyChanges,
                               " times, the most; create a new identity instead"));
  }
  wire::v1::KeyHistory wire;
  if (history.encoded.empty()) {
    wire.set_root_public_key(history.root_public_key);
  } else if (!wire.ParseFromString(history.encoded)) {
    return refuse("the history does not decode");
  }
  if (next.public_key == history.root_public_key) return refuse("the new key was used before");
  for (const auto& c : wire.changes()) {
    wire::v1::KeyChange old;
    if (old.ParseFromString(c.change()) && old.public_key() == next.public_key) {
      return refuse("the new key was used before");
    }
  }
  wire::v1::KeyChange change;
  change.set_version(kKeyChangeVersion);
  change.set_previous(history.head());
  change.set_public_key(next.public_key);
  change.set_created_at(now);
  wire::v1::SignedKeyChange* signed_change = wire.add_changes();
  signed_change->set_change(CanonicalEncoding(change));
  const std::string message = SignedMessage(signed_change->change());
  signed_change->set_new_key_signature(vault::Ed25519Sign(next, message));
  signed_change->set_previous_key_signature(vault::Ed25519Sign(current, message));
  KeyHistory out = history;
  out.public_key = next.public_key;
  out.heads.push_back(Hash(message));
  out.encoded = CanonicalEncoding(wire);
  out.changed_at = now;
  if (out.encoded.size() > kMaxKeyHistoryBytes) return refuse("the history would be too long");
  return out;
}

absl::StatusOr<std::unique_ptr<KnownKeyHistories>> KnownKeyHistories::Open(std::string dir) {
  std::unique_ptr<KnownKeyHistories> known(new KnownKeyHistories(std::move(dir)));
  if (!known->dir_.empty()) {
    RETURN_IF_ERROR(vault::EnsurePrivateDirectory(known->dir_));
    RETURN_IF_ERROR(known->Load());
  }
  return known;
}

absl::Status KnownKeyHistories::Load() {
  veil::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(auto files, vault::ListFiles(dir_, kKnownSuffix));
  for (const std::string& file : files) {
    std::string path = absl::StrCat(dir_, "/", file);
    ASSIGN_OR_RETURN(std::string payload, vault::ReadStateFile(path, kKnownKind));
    state::v1::KnownKeyHistoryRecord record;
    if (!record.ParseFromString(payload) || !ValidateIdentifier(record.identifier()).ok() ||
        absl::StrCat(record.identifier(), kKnownSuffix) != file || record.changes() == 0 ||
        record.changes() > kMaxKeyChanges || record.head().size() != vault::kSha256Bytes) {
      return vault::DamagedStateFile(path, "not a consistent key history record");
    }
    known_[record.identifier()] = {record.identifier(), record.changes(), record.head(),
                                   record.public_key(), record.updated_unix_seconds()};
  }
  return absl::OkStatus();
}

absl::Status KnownKeyHistories::CheckLocked(const KeyHistory& history, bool* forward) const {
  *forward = false;
  auto it = known_.find(history.identifier);
  if (it == known_.end()) {
    *forward = history.changes() > 0;
    return absl::OkStatus();
  }
  const Known& known = it->second;
  if (history.changes() < known.changes) {
    return ErrorWithReason(
        absl::StatusCode::kPermissionDenied,
        absl::StrCat(history.identifier, " presented a key it rotated away from (", known.changes,
                     " key change(s) seen, ", history.changes(), " presented)"),
        reason::kKeyHistoryRollback);
  }
  if (history.heads[known.changes] != known.head) {
    return ErrorWithReason(
        absl::StatusCode::kPermissionDenied,
        absl::StrCat("the key history of ", history.identifier,
                     " differs from the one seen before at change ", known.changes,
                     " (an old key signed a change the identity did not make?)"),
        reason::kKeyHistoryConflict);
  }
  *forward = history.changes() > known.changes;
  return absl::OkStatus();
}

absl::Status KnownKeyHistories::Check(const KeyHistory& history) const {
  veil::MutexLock lock(&mu_);
  bool forward;
  return CheckLocked(history, &forward);
}

absl::Status KnownKeyHistories::Remember(const KeyHistory& history, int64_t now_unix_seconds) {
  veil::MutexLock lock(&mu_);
  bool forward;
  RETURN_IF_ERROR(CheckLocked(history, &forward));
  if (!forward) return absl::OkStatus();
  if (known_.size() >= kMaxKnownKeyHistories && !known_.contains(history.identifier)) {
    ++not_remembered_;
    return absl::OkStatus();
  }
  Known next{history.identifier, static_cast<uint32_t>(history.changes()), history.head(),
             history.public_key, now_unix_seconds};
  if (!dir_.empty()) {
    state::v1::KnownKeyHistoryRecord record;
    record.set_identifier(next.identifier);
    record.set_changes(next.changes);
    record.set_head(next.head);
    record.set_public_key(next.public_key);
    record.set_updated_unix_seconds(next.updated_unix_seconds);
    RETURN_IF_ERROR(
        vault::WriteFileAtomically(absl::StrCat(dir_, "/", next.identifier, kKnownSuffix),
                                   vault::EncodeStateFile(kKnownKind, record.SerializeAsString())));
  }
  known_[next.identifier] = std::move(next);
  return absl::OkStatus();
}

absl::StatusOr<KnownKeyHistories::Known> KnownKeyHistories::Get(
    absl::string_view identifier) const {
  veil::MutexLock lock(&mu_);
  auto it = known_.find(identifier);
  if (it == known_.end()) {
    return absl::NotFoundError(absl::StrCat("no key change of ", identifier, " was seen"));
  }
  return it->second;
}

size_t KnownKeyHistories::size() const {
  veil::MutexLock lock(&mu_);
  return known_.size();
}

}  // namespace veil::identity
