#include "sidecar/daemon/state_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace veil::daemon {

absl::StatusOr<std::unique_ptr<StateDir>> StateDir::Open(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    std::filesystem::create_directories(path, ec);
    if (ec) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create state dir ", path, ": ", ec.message()));
    }
    ::chmod(path.c_str(), 0700);
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("state dir ", path, " is not a directory"));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "state dir ", path, " belongs to uid ", st.st_uid, ", not to us (uid ", ::geteuid(), ")"));
  }
  if ((st.st_mode & 077) != 0) {
    spdlog::warn("state dir {} had mode {:o}; setting 0700", path, st.st_mode & 0777);
    if (::chmod(path.c_str(), 0700) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot chmod state dir ", path, ": ", std::strerror(errno)));
    }
  }
  std::string lock_path = path + "/veild.lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open ", lock_path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("another veild is using state dir ", path, " (", lock_path, " is locked)"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot lock ", lock_path, ": ", std::strerror(err)));
  }
  return std::unique_ptr<StateDir>(new StateDir(path, fd));
}

StateDir::~StateDir() { ::close(lock_fd_); }

}  // namespace veil::daemon
