#include "sidecar/identity/verified_signatures.h"

#include <deque>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "sidecar/common/mutex.h"
#include "sidecar/vault/crypto.h"

namespace veil::identity {
namespace {

class VerifiedSignatures {
 public:
  static VerifiedSignatures& Instance() {
    static auto* instance = new VerifiedSignatures();
    return *instance;
  }
  bool Contains(const std::string& key) {
    veil::MutexLock lock(&mu_);
    return set_.contains(key);
  }
  void Add(std::string key) {
    veil::MutexLock lock(&mu_);
    if (!set_.insert(key).second) return;
    order_.push_back(std::move(key));
    if (order_.size() > kMaxCachedSignatures) {
      set_.erase(order_.front());
      order_.pop_front();
    }
  }

 private:
  veil::Mutex mu_;
  absl::flat_hash_set<std::string> set_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

bool VerifySignatureCached(absl::string_view public_key, absl::string_view message,
                           absl::string_view signature) {
  if (public_key.size() != vault::kEd25519PublicBytes ||
      signature.size() != vault::kEd25519SignatureBytes) {
    return false;
  }
  // Fixed sizes first: (key, signature, message) has one reading.
  auto digest = vault::Sha256(absl::StrCat(public_key, signature, message));
  std::string key(reinterpret_cast<const char*>(digest.data()), digest.size());
  VerifiedSignatures& cache = VerifiedSignatures::Instance();
  if (cache.Contains(key)) return true;
  if (!vault::Ed25519Verify(public_key, message, signature).ok()) return false;
  cache.Add(std::move(key));
  return true;
}

}  // namespace veil::identity
