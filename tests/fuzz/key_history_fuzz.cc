// Key history verifier (what a peer's proof or a credential's issuer carries): never crashes;
// whatever verifies is consistent (one head per change plus the root's, the identifier of the
// root key, an encoding that verifies again to the same), and is taken by a node that saw nothing.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "sidecar/identity/identifier.h"
#include "sidecar/identity/key_history.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  auto history = veil::identity::VerifyKeyHistory(bytes);
  if (!history.ok()) return 0;
  if (history->changes() == 0 || history->changes() > veil::identity::kMaxKeyChanges) std::abort();
  if (history->identifier != veil::identity::IdentifierOf(history->root_public_key)) std::abort();
  auto again = veil::identity::KeyHistoryOf(history->public_key, bytes);
  if (!again.ok() || again->heads != history->heads) std::abort();
  auto known = veil::identity::KnownKeyHistories::Open("");
  if (!known.ok() || !(*known)->Remember(*history, 0).ok()) std::abort();
  return 0;
}
