#include "sidecar/vault/state_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/vault/crypto.h"

namespace veil::vault {
namespace {

constexpr absl::string_view kMagic = "VEIL";
constexpr uint8_t kVersion = 1;
constexpr size_t kHeaderBytes = 4 + 1 + 4 + 4;

absl::Status SystemError(absl::string_view what, absl::string_view path, int err) {
  absl::StatusCode code = err == ENOSPC || err == EDQUOT ? absl::StatusCode::kResourceExhausted
                          : err == EACCES || err == EROFS || err == EPERM
                              ? absl::StatusCode::kFailedPrecondition
                              : absl::StatusCode::kInternal;
  return absl::Status(code, absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(err)));
}

absl::Status FsyncDirectory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return SystemError("open directory", dir, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : SystemError("fsync directory", dir, err);
}

std::string DirOf(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

}  // namespace

absl::Status DamagedStateFile(absl::string_view path, absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kDataLoss,
                         absl::StrCat("state file ", path, " is damaged: ", why),
                         reason::kCorruptStateFile);
}

std::string EncodeStateFile(absl::string_view kind, absl::string_view payload) {
  std::string out(kMagic);
  out.push_back(static_cast<char>(kVersion));
  out.append(kind.data(), 4);
  uint32_t n = static_cast<uint32_t>(payload.size());
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(n >> shift));
  out.append(payload.data(), payload.size());
  auto digest = Sha256(out);
  out.append(reinterpret_cast<const char*>(digest.data()), digest.size());
  return out;
}

absl::StatusOr<std::string> DecodeStateFile(absl::string_view path, absl::string_view kind,
                                            absl::string_view contents) {
  if (contents.size() < kHeaderBytes + kSha256Bytes) {
    return DamagedStateFile(path, absl::StrCat("truncated (", contents.size(), " bytes)"));
  }
  if (contents.substr(0, 4) != kMagic) return DamagedStateFile(path, "not a veil state file");
  if (static_cast<uint8_t>(contents[4]) != kVersion) {
    return DamagedStateFile(path,
                            absl::StrCat("unknown format version ", static_cast<int>(contents[4])));
  }
  if (contents.substr(5, 4) != kind) {
    return DamagedStateFile(
        path, absl::StrCat("holds a \"", contents.substr(5, 4), "\" record, not \"", kind, "\""));
  }
  uint32_t n = 0;
  for (int i = 9; i < 13; ++i) n = (n << 8) | static_cast<uint8_t>(contents[i]);
  if (contents.size() != kHeaderBytes + n + kSha256Bytes) {
    return DamagedStateFile(
        path, absl::StrCat("truncated or extended (", contents.size(), " bytes, expected ",
                           kHeaderBytes + n + kSha256Bytes, ")"));
  }
  auto digest = Sha256(contents.substr(0, kHeaderBytes + n));
  if (contents.substr(kHeaderBytes + n) !=
      absl::string_view(reinterpret_cast<const char*>(digest.data()), digest.size())) {
    return DamagedStateFile(path, "checksum mismatch");
  }
  return std::string(contents.substr(kHeaderBytes, n));
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  std::string dir = DirOf(path);
  std::string temp =
      absl::StrCat(path, ".tmp-", ::getpid(), "-", absl::BytesToHexString(RandomString(8)));
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return SystemError("create", temp, errno);
  const char* p = contents.data();
  size_t left = contents.size();
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(temp.c_str());
      return SystemError("write", temp, err);
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(temp.c_str());
    return SystemError("fsync", temp, err);
  }
  ::close(fd);
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    return SystemError("rename into place", path, err);
  }
  return FsyncDirectory(dir);
}

absl::StatusOr<std::string> ReadPrivateFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    return SystemError("open", path, errno);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                           absl::StrCat(path, " is not a regular file"),
                           reason::kUnsafePermissions);
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    ::close(fd);
    return ErrorWithReason(
        absl::StatusCode::kFailedPrecondition,
        absl::StrFormat("%s has unsafe ownership or mode (uid %d, mode %04o): it must belong to "
                        "uid %d with mode 0600; fix it (chmod 600) and restart",
                        path, st.st_uid, st.st_mode & 07777, ::geteuid()),
        reason::kUnsafePermissions);
  }
  if (static_cast<size_t>(st.st_size) > kMaxStateFileBytes) {
    ::close(fd);
    return DamagedStateFile(path, absl::StrCat("too large (", st.st_size, " bytes)"));
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t r = ::read(fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

absl::StatusOr<std::string> ReadStateFile(const std::string& path, absl::string_view kind) {
  auto contents = ReadPrivateFile(path);
  if (!contents.ok()) return contents.status();
  return DecodeStateFile(path, kind, *contents);
}

absl::Status RemoveFileDurably(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return SystemError("remove", path, errno);
  return FsyncDirectory(DirOf(path));
}

absl::Status EnsurePrivateDirectory(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    std::filesystem::create_directories(path, ec);
    if (ec) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create ", path, ": ", ec.message()));
    }
    ::chmod(path.c_str(), 0700);
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a directory"));
  }
  if (st.st_uid != ::geteuid()) {
    return ErrorWithReason(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat(path, " belongs to uid ", st.st_uid, ", not to uid ", ::geteuid()),
        reason::kUnsafePermissions);
  }
  if ((st.st_mode & 077) != 0 && ::chmod(path.c_str(), 0700) != 0) {
    return SystemError("chmod 0700", path, errno);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ListFiles(const std::string& dir,
                                                   absl::string_view suffix) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return names;
    return SystemError("list", dir, errno);
  }
  while (dirent* entry = ::readdir(d)) {
    std::string name = entry->d_name;
    if (entry->d_type != DT_REG && entry->d_type != DT_UNKNOWN) continue;
    if (absl::EndsWith(name, suffix) && name.size() > suffix.size()) names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace veil::vault
