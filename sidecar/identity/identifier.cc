#include "sidecar/identity/identifier.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/vault/crypto.h"

namespace veil::identity {

std::string IdentifierOf(absl::string_view ed25519_public_key) {
  auto digest = vault::Sha256(ed25519_public_key);
  return absl::StrCat(
      "I", absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest.data()),
                                                    kIdentifierHashBytes)));
}

absl::Status ValidateIdentifier(absl::string_view text) {
  bool ok = text.size() == kIdentifierLength && text[0] == 'I';
  for (size_t i = 1; ok && i < text.size(); ++i) {
    ok = absl::ascii_isdigit(text[i]) || (text[i] >= 'a' && text[i] <= 'f');
  }
  if (ok) return absl::OkStatus();
  return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                         absl::StrCat("\"", text, "\" is not an identifier: \"I\" followed by ",
                                      2 * kIdentifierHashBytes, " lowercase hex digits"),
                         reason::kInvalidIdentifier);
}

absl::Status ValidateIdentityName(absl::string_view name) {
  bool ok = !name.empty() && name.size() <= kMaxIdentityNameLength &&
            (absl::ascii_islower(name[0]) || absl::ascii_isdigit(name[0]));
  for (char c : name) {
    ok = ok && (absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' || c == '-');
  }
  if (ok) return absl::OkStatus();
  return ErrorWithReason(
      absl::StatusCode::kInvalidArgument,
      absl::StrCat("invalid identity name \"", name, "\": use 1 to ", kMaxIdentityNameLength,
                   " characters of a-z, 0-9, '_' and '-', starting with a letter or digit"),
      reason::kInvalidIdentityName);
}

}  // namespace veil::identity
