#include "sidecar/channel/trust_policy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/mutex.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/identity/identifier.h"

namespace veil::channel {
namespace {

absl::Status Untrusted(absl::string_view identifier, absl::string_view policy) {
  return ErrorWithReason(
      absl::StatusCode::kPermissionDenied,
      absl::StrCat("identity ", identifier, " is not trusted (trust policy: ", policy, ")"),
      reason::kUntrustedIdentity);
}

class Everyone final : public TrustPolicy {
 public:
  absl::Status CheckPeer(const PeerView&) const override { return absl::OkStatus(); }
  std::string Describe() const override { return "everyone"; }
  std::string Key() const override { return "everyone"; }
};

class Identifiers final : public TrustPolicy {
 public:
  explicit Identifiers(absl::flat_hash_set<std::string> set) : set_(std::move(set)) {}
  absl::Status CheckPeer(const PeerView& peer) const override {
    return set_.contains(peer.identifier) ? absl::OkStatus()
                                          : Untrusted(peer.identifier, Describe());
  }
  std::string Describe() const override {
    return set_.size() == 1 ? *set_.begin() : absl::StrCat("one of ", set_.size(), " identifiers");
  }
  std::string Key() const override {
    std::vector<std::string> sorted(set_.begin(), set_.end());
    std::sort(sorted.begin(), sorted.end());
    return absl::StrCat("identifiers(", absl::StrJoin(sorted, ","), ")");
  }

 private:
  absl::flat_hash_set<std::string> set_;
};

// Reads the file once and again only when it changed (another inode, size or modification
// time), so that a handshake costs a stat, not a parse.
class IdentifiersFile final : public TrustPolicy {
 public:
  IdentifiersFile(std::string path, absl::flat_hash_set<std::string> set, FileStamp stamp)
      : path_(std::move(path)), set_(std::move(set)), stamp_(stamp) {}
  absl::Status CheckPeer(const PeerView& peer) const override {
    veil::MutexLock lock(&mu_);
    auto stamp = StampOf(path_);
    if (!stamp.ok() || *stamp != stamp_) {
      FileStamp read_stamp;
      auto set = ParseIdentifiersFile(path_, &read_stamp);
      if (!set.ok()) {
        return ErrorWithReason(
            absl::StatusCode::kPermissionDenied,
            absl::StrCat("trust file unusable, trusting no one: ", set.status().message()),
            reason::kUntrustedIdentity);
      }
      set_ = *std::move(set);
      stamp_ = read_stamp;
    }
    return set_.contains(peer.identifier) ? absl::OkStatus()
                                          : Untrusted(peer.identifier, Describe());
  }
  std::string Describe() const override { return absl::StrCat("identifiers in ", path_); }
  std::string Key() const override { return absl::StrCat("file(", path_, ")"); }

 private:
  const std::string path_;
  mutable veil::Mutex mu_;
  mutable absl::flat_hash_set<std::string> set_ ABSL_GUARDED_BY(mu_);
  mutable FileStamp stamp_ ABSL_GUARDED_BY(mu_);
};

class Imported final : public TrustPolicy {
 public:
  explicit Imported(const identity::IdentityStore& store) : store_(store) {}
  absl::Status CheckPeer(const PeerView& peer) const override {
    return store_.GetTrusted(std::string(peer.identifier)).ok()
               ? absl::OkStatus()
               : Untrusted(peer.identifier, Describe());
  }
  std::string Describe() const override { return "imported trusted identities"; }
  std::string Key() const override { return "imported"; }

 private:
  const identity::IdentityStore& store_;
};

class Combination final : public TrustPolicy {
 public:
  Combination(bool all, std::vector<std::unique_ptr<TrustPolicy>> parts)
      : all_(all), parts_(std::move(parts)) {}
  absl::Status CheckPeer(const PeerView& peer) const override {
    absl::Status first_refusal;
    for (const auto& part : parts_) {
      absl::Status checked = part->CheckPeer(peer);
      if (all_ && !checked.ok()) {
        return ReasonOf(checked) == reason::kCredentialRequired
                   ? checked
                   : Untrusted(peer.identifier, Describe());
      }
      if (!all_ && checked.ok()) return absl::OkStatus();
      if (first_refusal.ok()) first_refusal = std::move(checked);
    }
    if (all_) return absl::OkStatus();
    // Say a credential is missing when that is what would have let the peer in.
    if (ReasonOf(first_refusal) == reason::kCredentialRequired) return first_refusal;
    return Untrusted(peer.identifier, Describe());
  }
  bool uses_attributes() const override {
    return std::any_of(parts_.begin(), parts_.end(),
                       [](const auto& part) { return part->uses_attributes(); });
  }
  std::string Describe() const override {
    std::string out = all_ ? "all of (" : "any of (";
    for (size_t i = 0; i < parts_.size(); ++i) {
      absl::StrAppend(&out, i ? "; " : "", parts_[i]->Describe());
    }
    return out + ")";
  }
  std::string Key() const override {
    std::string out = all_ ? "all(" : "any(";
    for (size_t i = 0; i < parts_.size(); ++i)
      absl::StrAppend(&out, i ? ";" : "", parts_[i]->Key());
    return out + ")";
  }

 private:
  bool all_;
  std::vector<std::unique_ptr<TrustPolicy>> parts_;
};

class Expression final : public TrustPolicy {
 public:
  explicit Expression(PolicyExpression expression) : expression_(std::move(expression)) {}
  absl::Status CheckPeer(const PeerView& peer) const override {
    if (expression_.Evaluate(peer)) return absl::OkStatus();
    if (expression_.uses_attributes() && (peer.attributes == nullptr || peer.attributes->empty())) {
      return ErrorWithReason(
          absl::StatusCode::kPermissionDenied,
          absl::StrCat("identity ", peer.identifier,
                       " presented no credential from a trusted authority, and the policy (",
                       Describe(), ") reads attributes"),
          reason::kCredentialRequired);
    }
    return Untrusted(peer.identifier, Describe());
  }
  bool uses_attributes() const override { return expression_.uses_attributes(); }
  std::string Describe() const override { return expression_.canonical(); }
  std::string Key() const override {
    return absl::StrCat("expression(", expression_.canonical(), ")");
  }

 private:
  PolicyExpression expression_;
};

absl::Status BadPolicy(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument, why, reason::kInvalidTrustPolicy);
}

}  // namespace

std::unique_ptr<TrustPolicy> TrustEveryone() { return std::make_unique<Everyone>(); }

absl::StatusOr<std::unique_ptr<TrustPolicy>> TrustExpression(absl::string_view expression) {
  auto parsed = PolicyExpression::Parse(expression);
  if (!parsed.ok()) return parsed.status();
  return std::unique_ptr<TrustPolicy>(new Expression(*std::move(parsed)));
}

absl::StatusOr<std::unique_ptr<TrustPolicy>> TrustIdentifiers(
    std::vector<std::string> identifiers) {
  if (identifiers.empty()) return BadPolicy("a trusted identifier list must not be empty");
  absl::flat_hash_set<std::string> set;
  for (auto& id : identifiers) {
    RETURN_IF_ERROR(identity::ValidateIdentifier(id));
    set.insert(std::move(id));
  }
  return std::unique_ptr<TrustPolicy>(new Identifiers(std::move(set)));
}

absl::StatusOr<FileStamp> StampOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read trust file ", path, ": ", std::strerror(errno)));
  }
  return FileStamp{st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec};
}

absl::StatusOr<absl::flat_hash_set<std::string>> ParseIdentifiersFile(const std::string& path,
                                                                      FileStamp* stamp) {
  auto unreadable = [&path](absl::string_view why) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read trust file ", path, ": ", why));
  };
  // Non-blocking: a FIFO must not hang the caller; it is refused below as not a regular file.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return unreadable(std::strerror(errno));
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  struct stat st {};
  if (::fstat(fd, &st) != 0) return unreadable(std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return unreadable("not a regular file");
  if (static_cast<size_t>(st.st_size) > kMaxTrustFileBytes) {
    return unreadable(absl::StrCat("larger than ", kMaxTrustFileBytes, " bytes"));
  }
  std::string text;
  text.resize(static_cast<size_t>(st.st_size) + 1);
  size_t got = 0;
  while (got < text.size()) {
    ssize_t r = ::read(fd, text.data() + got, text.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return unreadable(std::strerror(errno));
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  if (got > static_cast<size_t>(st.st_size)) return unreadable("it grew while being read");
  text.resize(got);
  if (stamp != nullptr) {
    *stamp = FileStamp{st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec};
  }
  absl::flat_hash_set<std::string> set;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    // Never quote the line: the file may be anything this process can read (a key file).
    if (!identity::ValidateIdentifier(line).ok()) {
      return BadPolicy(absl::StrCat(path, ":", number,
                                    ": not an identifier (expected one per line: I followed by "
                                    "32 hex digits; # starts a comment)"));
    }
    set.insert(std::string(line));
  }
  return set;
}

absl::StatusOr<std::unique_ptr<TrustPolicy>> TrustIdentifiersFile(std::string path) {
  FileStamp stamp;
  ASSIGN_OR_RETURN(absl::flat_hash_set<std::string> set, ParseIdentifiersFile(path, &stamp));
  return std::unique_ptr<TrustPolicy>(new IdentifiersFile(std::move(path), std::move(set), stamp));
}

std::unique_ptr<TrustPolicy> TrustImported(const identity::IdentityStore& store) {
  return std::make_unique<Imported>(store);
}

absl::StatusOr<std::unique_ptr<TrustPolicy>> AnyOf(
    std::vector<std::unique_ptr<TrustPolicy>> policies) {
  if (policies.empty()) return BadPolicy("any_of needs at least one policy");
  return std::unique_ptr<TrustPolicy>(new Combination(false, std::move(policies)));
}

absl::StatusOr<std::unique_ptr<TrustPolicy>> AllOf(
    std::vector<std::unique_ptr<TrustPolicy>> policies) {
  if (policies.empty()) return BadPolicy("all_of needs at least one policy");
  return std::unique_ptr<TrustPolicy>(new Combination(true, std::move(policies)));
}

}  // namespace veil::channel
