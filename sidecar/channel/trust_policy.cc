#include "sidecar/channel/trust_policy.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/identity/identifier.h"

namespace veil::channel {
namespace {

absl::Status Untrusted(const std::string& identifier, absl::string_view policy) {
  return ErrorWithReason(
      absl::StatusCode::kPermissionDenied,
      absl::StrCat("identity ", identifier, " is not trusted (trust policy: ", policy, ")"),
      kUntrustedIdentity);
}

class Everyone final : public TrustPolicy {
 public:
  absl::Status Check(const std::string&) const override { return absl::OkStatus(); }
  std::string Describe() const override { return "everyone"; }
};

class Identifiers final : public TrustPolicy {
 public:
  explicit Identifiers(absl::flat_hash_set<std::string> set) : set_(std::move(set)) {}
  absl::Status Check(const std::string& identifier) const override {
    return set_.contains(identifier) ? absl::OkStatus() : Untrusted(identifier, Describe());
  }
  std::string Describe() const override {
    return set_.size() == 1 ? *set_.begin() : absl::StrCat("one of ", set_.size(), " identifiers");
  }

 private:
  absl::flat_hash_set<std::string> set_;
};

class IdentifiersFile final : public TrustPolicy {
 public:
  explicit IdentifiersFile(std::string path) : path_(std::move(path)) {}
  absl::Status Check(const std::string& identifier) const override {
    auto set = ParseIdentifiersFile(path_);
    if (!set.ok()) {
      return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                             absl::StrCat("trust file unusable, trusting no one: ",
                                          set.status().message()),
                             kUntrustedIdentity);
    }
    return set->contains(identifier) ? absl::OkStatus() : Untrusted(identifier, Describe());
  }
  std::string Describe() const override { return absl::StrCat("identifiers in ", path_); }

 private:
  std::string path_;
};

class Imported final : public TrustPolicy {
 public:
  explicit Imported(const identity::IdentityStore& store) : store_(store) {}
  absl::Status Check(const std::string& identifier) const override {
    return store_.GetTrusted(identifier).ok() ? absl::OkStatus() : Untrusted(identifier, Describe());
  }
  std::string Describe() const override { return "imported trusted identities"; }

 private:
  const identity::IdentityStore& store_;
};

class Combination final : public TrustPolicy {
 public:
  Combination(bool all, std::vector<std::unique_ptr<TrustPolicy>> parts)
      : all_(all), parts_(std::move(parts)) {}
  absl::Status Check(const std::string& identifier) const override {
    for (const auto& part : parts_) {
      bool ok = part->Check(identifier).ok();
      if (all_ && !ok) return Untrusted(identifier, Describe());
      if (!all_ && ok) return absl::OkStatus();
    }
    return all_ ? absl::OkStatus() : Untrusted(identifier, Describe());
  }
  std::string Describe() const override {
    std::string out = all_ ? "all of (" : "any of (";
    for (size_t i = 0; i < parts_.size(); ++i) {
      absl::StrAppend(&out, i ? "; " : "", parts_[i]->Describe());
    }
    return out + ")";
  }

 private:
  bool all_;
  std::vector<std::unique_ptr<TrustPolicy>> parts_;
};

absl::Status BadPolicy(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument, why, "INVALID_TRUST_POLICY");
}

}  // namespace

std::unique_ptr<TrustPolicy> TrustEveryone() { return std::make_unique<Everyone>(); }

absl::StatusOr<std::unique_ptr<TrustPolicy>> TrustIdentifiers(std::vector<std::string> identifiers) {
  if (identifiers.empty()) return BadPolicy("a trusted identifier list must not be empty");
  absl::flat_hash_set<std::string> set;
  for (auto& id : identifiers) {
    RETURN_IF_ERROR(identity::ValidateIdentifier(id));
    set.insert(std::move(id));
  }
  return std::unique_ptr<TrustPolicy>(new Identifiers(std::move(set)));
}

absl::StatusOr<absl::flat_hash_set<std::string>> ParseIdentifiersFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read trust file ", path));
  }
  absl::flat_hash_set<std::string> set;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    absl::string_view text = line;
    size_t hash = text.find('#');
    if (hash != absl::string_view::npos) text = text.substr(0, hash);
    text = absl::StripAsciiWhitespace(text);
    if (text.empty()) continue;
    absl::Status valid = identity::ValidateIdentifier(text);
    if (!valid.ok()) {
      return BadPolicy(absl::StrCat(path, ":", number, ": ", valid.message()));
    }
    set.insert(std::string(text));
  }
  return set;
}

absl::StatusOr<std::unique_ptr<TrustPolicy>> TrustIdentifiersFile(std::string path) {
  RETURN_IF_ERROR(ParseIdentifiersFile(path).status());
  return std::unique_ptr<TrustPolicy>(new IdentifiersFile(std::move(path)));
}

std::unique_ptr<TrustPolicy> TrustImported(const identity::IdentityStore& store) {
  return std::make_unique<Imported>(store);
}

absl::StatusOr<std::unique_ptr<TrustPolicy>> AnyOf(std::vector<std::unique_ptr<TrustPolicy>> policies) {
  if (policies.empty()) return BadPolicy("any_of needs at least one policy");
  return std::unique_ptr<TrustPolicy>(new Combination(false, std::move(policies)));
}

absl::StatusOr<std::unique_ptr<TrustPolicy>> AllOf(std::vector<std::unique_ptr<TrustPolicy>> policies) {
  if (policies.empty()) return BadPolicy("all_of needs at least one policy");
  return std::unique_ptr<TrustPolicy>(new Combination(true, std::move(policies)));
}

}  // namespace veil::channel
