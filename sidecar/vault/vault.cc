#include "sidecar/vault/vault.h"

#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/vault/state_file.h"
#include "veil/state/v1/state.pb.h"

namespace veil::vault {
namespace {

using state::v1::VaultMeta;

constexpr absl::string_view kMetaKind = "META";
constexpr absl::string_view kCheckContext = "veil vault key check v1";
constexpr absl::string_view kCheckValue = "veil vault key check value";
constexpr char kPlainTag = 0x00;
constexpr char kSealedTag = 0x01;

absl::Status KeyRejected(absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kFailedPrecondition, why, reason::kVaultKeyRejected);
}

bool IsHex64(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(c)) return false;
  }
  return true;
}

// A raw 32-byte key when `material` is one (32 bytes, or 64 hex digits), else nullopt.
std::optional<SecretBytes> RawKeyOf(const SecretBytes& material) {
  absl::string_view text(reinterpret_cast<const char*>(material.data()), material.size());
  if (text.size() == kAeadKeyBytes) return SecretBytes::CopyOf(text);
  absl::string_view trimmed = absl::StripTrailingAsciiWhitespace(text);
  if (!IsHex64(trimmed)) return std::nullopt;
  SecretBytes key(kAeadKeyBytes);
  for (size_t i = 0; i < kAeadKeyBytes; ++i) {
    auto nibble = [](char c) {
      return static_cast<uint8_t>(absl::ascii_isdigit(c) ? c - '0'
                                                         : absl::ascii_tolower(c) - 'a' + 10);
    };
    key.data()[i] = static_cast<uint8_t>(nibble(trimmed[2 * i]) << 4 | nibble(trimmed[2 * i + 1]));
  }
  return key;
}

SecretBytes Passphrase(const SecretBytes& material) {
  size_t n = material.size();
  if (n > 0 && material.data()[n - 1] == '\n') --n;
  if (n > 0 && material.data()[n - 1] == '\r') --n;
  return SecretBytes::CopyOf(std::span<const uint8_t>(material.data(), n));
}

bool IdentitiesExist(const std::string& state_dir) {
  auto files = ListFiles(state_dir + "/identities", ".identity");
  return files.ok() && !files->empty();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Vault>> Vault::Open(const std::string& state_dir,
                                                   std::optional<VaultKey> key) {
  if (!InitCrypto()) return absl::InternalError("libsodium failed to initialise");
  if (key.has_value() && Passphrase(key->material).empty()) {
    return KeyRejected(absl::StrCat("the vault key from ", key->source, " is empty"));
  }
  const std::string path = state_dir + "/vault.meta";
  auto payload = ReadStateFile(path, kMetaKind);
  if (absl::IsNotFound(payload.status())) {
    if (IdentitiesExist(state_dir)) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " is missing but ", state_dir,
          "/identities holds identities: refusing to create a new vault that could not read "
          "them (restore vault.meta)"));
    }
    VaultMeta meta;
    meta.set_version(1);
    SecretBytes vault_key;
    Protection protection = Protection::kNone;
    if (!key.has_value()) {
      meta.set_protection(VaultMeta::NONE);
    } else if (auto raw = RawKeyOf(key->material)) {
      meta.set_protection(VaultMeta::RAW_KEY);
      protection = Protection::kRawKey;
      vault_key = std::move(*raw);
    } else {
      meta.set_protection(VaultMeta::ARGON2ID);
      protection = Protection::kArgon2id;
      Argon2Params params = DefaultArgon2Params();
      meta.set_salt(RandomString(16));
      meta.set_ops_limit(params.ops_limit);
      meta.set_mem_limit(params.mem_limit);
      auto derived = Argon2id(Passphrase(key->material), meta.salt(), params);
      if (!derived.ok()) return derived.status();
      vault_key = *std::move(derived);
    }
    std::unique_ptr<Vault> vault(new Vault(protection, std::move(vault_key)));
    meta.set_key_check(vault->Seal(SecretBytes::CopyOf(kCheckValue), kCheckContext));
    absl::Status written =
        WriteFileAtomically(path, EncodeStateFile(kMetaKind, meta.SerializeAsString()));
    if (!written.ok()) return written;
    return vault;
  }
  if (!payload.ok()) return payload.status();
  VaultMeta meta;
  if (!meta.ParseFromString(*payload) || meta.version() != 1) {
    return DamagedStateFile(path, "not a vault record");
  }
  std::unique_ptr<Vault> vault;
  switch (meta.protection()) {
    case VaultMeta::NONE:
      if (key.has_value()) {
        return KeyRejected(absl::StrCat(
            "a vault key was given (", key->source, ") but the vault in ", state_dir,
            " is not encrypted; start without the key, or start a new state dir with it"));
      }
      vault.reset(new Vault(Protection::kNone, SecretBytes()));
      break;
    case VaultMeta::RAW_KEY: {
      if (!key.has_value()) {
        return KeyRejected(absl::StrCat("the vault in ", state_dir,
                                        " is encrypted: give its key (--vault-key-file or "
                                        "VEIL_VAULT_KEY)"));
      }
      auto raw = RawKeyOf(key->material);
      if (!raw.has_value()) {
        return KeyRejected(absl::StrCat("the vault in ", state_dir, " uses a raw 32-byte key, but ",
                                        key->source, " holds a passphrase"));
      }
      vault.reset(new Vault(Protection::kRawKey, std::move(*raw)));
      break;
    }
    case VaultMeta::ARGON2ID: {
      if (!key.has_value()) {
        return KeyRejected(absl::StrCat("the vault in ", state_dir,
                                        " is encrypted: give its passphrase (--vault-key-file "
                                        "or VEIL_VAULT_KEY)"));
      }
      auto derived =
          Argon2id(Passphrase(key->material), meta.salt(), {meta.ops_limit(), meta.mem_limit()});
      if (!derived.ok()) return derived.status();
      vault.reset(new Vault(Protection::kArgon2id, *std::move(derived)));
      break;
    }
    default:
      return ErrorWithReason(absl::StatusCode::kDataLoss,
                             absl::StrCat("state file ", path, " names an unknown protection"),
                             reason::kCorruptStateFile);
  }
  auto check = vault->Unseal(meta.key_check(), kCheckContext);
  if (!check.ok()) {
    return KeyRejected(absl::StrCat("the vault key from ", key ? key->source : "nowhere",
                                    " is wrong for the vault in ", state_dir));
  }
  return vault;
}

std::string Vault::Seal(const SecretBytes& secret, absl::string_view context) const {
  if (protection_ == Protection::kNone) {
    std::string out(1, kPlainTag);
    out.append(reinterpret_cast<const char*>(secret.data()), secret.size());
    return out;
  }
  return std::string(1, kSealedTag) + XChaChaSeal(key_, context, secret);
}

absl::StatusOr<SecretBytes> Vault::Unseal(absl::string_view sealed,
                                          absl::string_view context) const {
  if (sealed.empty()) {
    return ErrorWithReason(absl::StatusCode::kDataLoss, "empty sealed secret",
                           reason::kAuthenticationFailed);
  }
  char tag = sealed.front();
  sealed.remove_prefix(1);
  if (protection_ == Protection::kNone) {
    if (tag != kPlainTag) {
      return ErrorWithReason(absl::StatusCode::kDataLoss,
                             "secret is encrypted but the vault is not",
                             reason::kAuthenticationFailed);
    }
    return SecretBytes::CopyOf(sealed);
  }
  if (tag != kSealedTag) {
    return ErrorWithReason(absl::StatusCode::kDataLoss,
                           "secret is stored in the clear in an encrypted vault",
                           reason::kAuthenticationFailed);
  }
  return XChaChaOpen(key_, context, sealed);
}

}  // namespace veil::vault
