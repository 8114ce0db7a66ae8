// Credential decoder: never crashes; whatever decodes has a canonical body (re-encoding what was
// decoded gives the same bytes, which DecodeCredential itself insists on) and valid parts.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "sidecar/identity/credential.h"
#include "sidecar/identity/identifier.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  auto decoded = veil::identity::DecodeCredential(bytes);
  if (!decoded.ok()) return 0;
  if (!veil::identity::ValidateIdentifier(decoded->claims.subject).ok()) std::abort();
  if (!veil::identity::ValidateAttributes(decoded->claims.attributes).ok()) std::abort();
  if (decoded->claims.expires_at <= decoded->claims.issued_at) std::abort();
  // Verification of the same bytes: refused or accepted, never a crash.
  absl::flat_hash_set<std::string> trusted = {decoded->claims.issuer};
  (void)veil::identity::VerifyCredential(
      bytes, {.trusted_issuers = &trusted, .subject = decoded->claims.subject, .now = 0});
  return 0;
}
