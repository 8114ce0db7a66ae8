// The node's state directory: created mode 0700 if missing, tightened to 0700 if we own it and
// it is looser, and locked (flock on "veild.lock") so that two veild processes never share
// one.
//
// Thread-safety: a StateDir is immutable after Open.
#ifndef VEIL_SIDECAR_DAEMON_STATE_DIR_H_
#define VEIL_SIDECAR_DAEMON_STATE_DIR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace veil::daemon {

class StateDir {
 public:
  // Opens (creating) and locks `path`. FAILED_PRECONDITION when it is not a directory, belongs
  // to another user, cannot be created, or another veild holds its lock.
  static absl::StatusOr<std::unique_ptr<StateDir>> Open(const std::string& path);
  ~StateDir();
  StateDir(const StateDir&) = delete;
  StateDir& operator=(const StateDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  StateDir(std::string path, int lock_fd) : path_(std::move(path)), lock_fd_(lock_fd) {}
  std::string path_;
  int lock_fd_;
};

}  // namespace veil::daemon

#endif  // VEIL_SIDECAR_DAEMON_STATE_DIR_H_
