#include "sidecar/daemon/vault_key.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace veil::daemon {
namespace {

constexpr size_t kMaxKeyBytes = 4096;

}  // namespace

absl::StatusOr<std::optional<vault::VaultKey>> ReadVaultKey(const std::string& file) {
  const char* env = std::getenv(kVaultKeyEnv);
  bool have_env = env != nullptr && *env != '\0';
  if (!file.empty() && have_env) {
    return absl::InvalidArgumentError(absl::StrCat("both --vault-key-file and ", kVaultKeyEnv,
                                                   " are set; give the vault key one way"));
  }
  if (have_env) {
    vault::VaultKey key{vault::SecretBytes::CopyOf(absl::string_view(env)),
                        absl::StrCat("environment variable ", kVaultKeyEnv)};
    ::unsetenv(kVaultKeyEnv);
    return key;
  }
  if (file.empty()) return std::nullopt;
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read vault key file ", file, ": ", std::strerror(errno)));
  }
  vault::SecretBytes buffer(kMaxKeyBytes + 1);
  size_t got = 0;
  while (got < buffer.size()) {
    ssize_t r = ::read(fd, buffer.data() + got, buffer.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  if (got == 0 || got > kMaxKeyBytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "vault key file ", file, got == 0 ? " is empty" : " is larger than 4 KiB"));
  }
  return vault::VaultKey{vault::SecretBytes::CopyOf(std::span<const uint8_t>(buffer.data(), got)),
                         absl::StrCat("file ", file)};
}

}  // namespace veil::daemon
