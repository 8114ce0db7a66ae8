// Trust policies: which authenticated remote identities a secure channel accepts. Checked
// after the remote's identity proof verified, so the identifier is authenticated.
//
//   TrustEveryone, TrustIdentifiers (one or a set, inline), TrustIdentifiersFile (one per
//   line; read once, and again when it changes, so edits apply to new channels),
//   TrustImported (the node's imported trusted identities), TrustExpression (an attribute
//   policy over the identifier and the peer's verified credentials: policy_expression.h),
//   AnyOf / AllOf combinations.
//
// Thread-safety: Check may be called from any thread.
#ifndef VEIL_SIDECAR_CHANNEL_TRUST_POLICY_H_
#define VEIL_SIDECAR_CHANNEL_TRUST_POLICY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sidecar/channel/policy_expression.h"
#include "sidecar/identity/identity_store.h"

namespace veil::channel {

class TrustPolicy {
 public:
  virtual ~TrustPolicy() = default;
  // OK when the peer is trusted; PERMISSION_DENIED otherwise (UNTRUSTED_IDENTITY, or
  // CREDENTIAL_REQUIRED when the policy reads attributes and the peer has none).
  virtual absl::Status CheckPeer(const PeerView& peer) const = 0;
  // The same for a peer known only by its identifier (no credentials).
  absl::Status Check(absl::string_view identifier) const { return CheckPeer({identifier}); }
  // Whether the policy reads credential attributes.
  virtual bool uses_attributes() const { return false; }
  // For people: "everyone", "one of 3 identifiers", ...
  virtual std::string Describe() const = 0;
  // What the policy is, whole and canonical (every identifier, sorted): two policies with the
  // same key admit the same identities. For comparing, not for showing.
  virtual std::string Key() const = 0;
};

std::unique_ptr<TrustPolicy> TrustEveryone();
// INVALID_ARGUMENT when a listed identifier is malformed or the list is empty.
absl::StatusOr<std::unique_ptr<TrustPolicy>> TrustIdentifiers(std::vector<std::string> identifiers);
// The file must exist and parse now (INVALID_ARGUMENT / FAILED_PRECONDITION otherwise); a file
// that later disappears or breaks makes Check refuse everyone.
absl::StatusOr<std::unique_ptr<TrustPolicy>> TrustIdentifiersFile(std::string path);
// `store` must outlive the policy.
std::unique_ptr<TrustPolicy> TrustImported(const identity::IdentityStore& store);
// INVALID_ARGUMENT (INVALID_TRUST_POLICY) when `expression` does not parse.
absl::StatusOr<std::unique_ptr<TrustPolicy>> TrustExpression(absl::string_view expression);
absl::StatusOr<std::unique_ptr<TrustPolicy>> AnyOf(
    std::vector<std::unique_ptr<TrustPolicy>> policies);
absl::StatusOr<std::unique_ptr<TrustPolicy>> AllOf(
    std::vector<std::unique_ptr<TrustPolicy>> policies);

// The largest identifiers file read.
inline constexpr size_t kMaxTrustFileBytes = 1024 * 1024;

// What tells that a file changed.
struct FileStamp {
  uint64_t device = 0, inode = 0;
  int64_t size = 0, mtime_seconds = 0, mtime_nanos = 0;
  friend bool operator==(const FileStamp&, const FileStamp&) = default;
};
absl::StatusOr<FileStamp> StampOf(const std::string& path);

// Parses an identifiers file: one identifier per line; blank lines and '#' comments ignored.
// Only a regular file of at most kMaxTrustFileBytes (FAILED_PRECONDITION otherwise: a device, a
// FIFO, a directory); a bad line is INVALID_ARGUMENT naming the file and line number, never
// quoting it (the file might be a secret). `stamp`, when given, gets the file's stamp as read.
absl::StatusOr<absl::flat_hash_set<std::string>> ParseIdentifiersFile(const std::string& path,
                                                                      FileStamp* stamp = nullptr);

}  // namespace veil::channel

#endif  // VEIL_SIDECAR_CHANNEL_TRUST_POLICY_H_
