// Key rotation: an identity's signed change history (wire::v1::KeyHistory, docs/protocol.md
// "Key rotation"). The identifier is derived from the identity's first key, for good; each
// rotation appends a change naming the new key, signed by the new key and by the one before, and
// chained to what came before by hash. A peer that holds the history can check, with no one to
// ask, that the key now in use speaks for the identifier.
//
//   VerifyKeyHistory    everything about an encoded history: structure, links, signatures
//   KeyHistoryOf        what a peer presents (its key now, and its history if it rotated)
//   ExtendKeyHistory    a rotation: the history with one more change
//   KnownKeyHistories   what this node has seen of each peer's history, so that a peer that
//                       rotated cannot be impersonated later with a key it rotated away from
//
// Refusals carry reason KEY_HISTORY_INVALID, KEY_HISTORY_ROLLBACK or KEY_HISTORY_CONFLICT.
//
// Thread-safety: free functions on values; KnownKeyHistories may be used from any thread.
#ifndef VEIL_SIDECAR_IDENTITY_KEY_HISTORY_H_
#define VEIL_SIDECAR_IDENTITY_KEY_HISTORY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sidecar/common/mutex.h"
#include "sidecar/vault/crypto.h"

namespace veil::identity {

inline constexpr uint32_t kKeyChangeVersion = 1;
// What both signatures of a change cover, and what a change's head hashes: this, then the change.
inline constexpr absl::string_view kKeyChangeContext = "veil/v1 identity key change\n";
// The most changes a history holds (an identity that needs more is replaced, not rotated).
inline constexpr size_t kMaxKeyChanges = 32;
// The largest encoded history taken (32 changes fit).
inline constexpr size_t kMaxKeyHistoryBytes = 8 * 1024;
// The most rotated identities a node remembers (a small file each).
inline constexpr size_t kMaxKnownKeyHistories = 10'000;

// A verified history, or the trivial one of an identity that never rotated.
struct KeyHistory {
  std::string root_public_key;  // the key the identifier is derived from
  std::string identifier;
  std::string public_key;  // the key now: the last change's, or the root
  // heads[0] = SHA-256(root key); heads[i]: after change i. Always changes() + 1 of them.
  std::vector<std::string> heads;
  std::string encoded;     // the wire::v1::KeyHistory; empty when there is no change
  int64_t changed_at = 0;  // the last change's created_at; 0: none

  size_t changes() const { return heads.size() - 1; }
  const std::string& head() const { return heads.back(); }
};

// The history of an identity whose only key is `public_key` (32 bytes).
KeyHistory RootKeyHistory(absl::string_view public_key);

// Decodes and checks an encoded history: at most kMaxKeyHistoryBytes and kMaxKeyChanges, every
// part canonical, keys of 32 bytes never repeated, every `previous` the head before it, both
// signatures of every change good. INVALID_ARGUMENT (KEY_HISTORY_INVALID) for structure,
// UNAUTHENTICATED (KEY_HISTORY_INVALID) for a signature; the message says which change.
absl::StatusOr<KeyHistory> VerifyKeyHistory(absl::string_view encoded);

// What a peer presents: its key now and, if it rotated, its encoded history, which must end in
// that key. Empty `encoded_history`: the trivial history of `public_key`.
absl::StatusOr<KeyHistory> KeyHistoryOf(absl::string_view public_key,
                                        absl::string_view encoded_history);

// `history` with one more change, from `current` (the key now, history.public_key) to `next`,
// signed by both. FAILED_PRECONDITION (KEY_HISTORY_INVALID) when `current` is not the key now,
// `next` was used before, or the history is full.
absl::StatusOr<KeyHistory> ExtendKeyHistory(const KeyHistory& history,
                                            const vault::Ed25519KeyPair& current,
                                            const vault::Ed25519KeyPair& next, int64_t now);

// What this node has seen of other identities' histories: for each identifier whose key was
// rotated, how many changes and the head. A peer presenting less than was seen (an old key:
// perhaps the one the rotation was for) is refused with KEY_HISTORY_ROLLBACK; one whose history
// does not contain what was seen (a fork: someone else signed a change with an old key) with
// KEY_HISTORY_CONFLICT. A longer history that contains what was seen replaces it. Identities
// that never rotated cost nothing.
//
// Kept in `<dir>/<identifier>.keys` (one state file each), so that a restart forgets nothing.
class KnownKeyHistories {
 public:
  struct Known {
    std::string identifier;
    uint32_t changes = 0;
    std::string head;
    std::string public_key;
    int64_t updated_unix_seconds = 0;
  };

  // Loads `dir` (created, 0700). Empty `dir`: memory only (tests, tools).
  static absl::StatusOr<std::unique_ptr<KnownKeyHistories>> Open(std::string dir);

  // Admits `history` or says why not (above), remembering nothing: for a peer not yet admitted
  // (a stranger must not make this node write a file for every identity it makes up).
  absl::Status Check(const KeyHistory& history) const;
  // The same, then remembers a history that moved forward: for a peer the trust policy admitted,
  // or a trusted issuer. A write error is returned (a node that cannot remember a rotation must
  // not act as if it did). Past kMaxKnownKeyHistories identifiers, new ones are not remembered
  // (counted in not_remembered()): the bound on what admitted peers can make this node keep.
  absl::Status Remember(const KeyHistory& history, int64_t now_unix_seconds);
  // NOT_FOUND when nothing was seen for `identifier` (it never rotated, as far as this node knows).
  absl::StatusOr<Known> Get(absl::string_view identifier) const;
  size_t size() const;
  uint64_t not_remembered() const {
    veil::MutexLock lock(&mu_);
    return not_remembered_;
  }

 private:
  explicit KnownKeyHistories(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Load();
  // *forward: `history` is longer than what is known (or the first rotation seen).
  absl::Status CheckLocked(const KeyHistory& history, bool* forward) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string dir_;
  mutable veil::Mutex mu_;
  absl::flat_hash_map<std::string, Known> known_ ABSL_GUARDED_BY(mu_);
  uint64_t not_remembered_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace veil::identity

#endif  // VEIL_SIDECAR_IDENTITY_KEY_HISTORY_H_
