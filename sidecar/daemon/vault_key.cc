#include "sidecar/daemon/vault_key.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sidecar/common/fmt_absl.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace veil::daemon {
namespace {

constexpr size_t kMaxKeyBytes = 4096;

// Removes VEIL_VAULT_KEY from the environment and wipes its value where it lies: unsetenv alone
// leaves the bytes in the process's initial environment block, which /proc/PID/environ shows
// to anyone who may read it (and to a core dump).
void ScrubVaultKeyFromEnvironment() {
  const size_t name_size = std::strlen(kVaultKeyEnv);
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    char* text = *entry;
    if (std::strncmp(text, kVaultKeyEnv, name_size) == 0 && text[name_size] == '=') {
      sodium_memzero(text + name_size + 1, std::strlen(text + name_size + 1));
    }
  }
  ::unsetenv(kVaultKeyEnv);
}

}  // namespace

absl::StatusOr<vault::SecretBytes> ReadSecretFile(const std::string& file, absl::string_view what) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read ", what, " file ", file, ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat(what, " file ", file, " is not a regular file"));
  }
  if ((st.st_mode & S_IROTH) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat(what, " file ", file, " is readable by every user (mode ",
                     absl::StrFormat("%04o", st.st_mode & 0777),
                     "): anyone on this host could read it; chmod 600 (or 400) it"));
  }
  if ((st.st_mode & S_IRGRP) != 0) {
    spdlog::warn(
        "{} file {} is readable by its group (gid {}, mode 0{:03o}): everyone in that group "
        "can read it. Fine for a Kubernetes Secret mounted for the pod's fsGroup; elsewhere "
        "chmod 600 it",
        what, file, st.st_gid, st.st_mode & 0777);
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
    return absl::FailedPreconditionError(
        absl::StrCat(what, " file ", file, got == 0 ? " is empty" : " is larger than 4 KiB"));
  }
  return vault::SecretBytes::CopyOf(std::span<const uint8_t>(buffer.data(), got));
}

absl::StatusOr<std::optional<vault::VaultKey>> ReadVaultKey(const std::string& file) {
  const char* env = std::getenv(kVaultKeyEnv);
  bool have_env = env != nullptr && *env != '\0';
  if (!file.empty() && have_env) {
    ScrubVaultKeyFromEnvironment();
    return absl::InvalidArgumentError(absl::StrCat("both --vault-key-file and ", kVaultKeyEnv,
                                                   " are set; give the vault key one way"));
  }
  if (have_env) {
    vault::VaultKey key{vault::SecretBytes::CopyOf(absl::string_view(env)),
                        absl::StrCat("environment variable ", kVaultKeyEnv)};
    ScrubVaultKeyFromEnvironment();
    return key;
  }
  if (env != nullptr) ScrubVaultKeyFromEnvironment();  // set but empty
  if (file.empty()) return std::nullopt;
  auto secret = ReadSecretFile(file, "vault key");
  if (!secret.ok()) return secret.status();
  return vault::VaultKey{*std::move(secret), absl::StrCat("file ", file)};
}

}  // namespace veil::daemon
