// Preparing the path of a Unix socket a veild listens on (the API, the serve socket, a node
// listener).
//
// Thread-safety: pure function of the file system.
#ifndef VEIL_SIDECAR_COMMON_UNIX_SOCKET_H_
#define VEIL_SIDECAR_COMMON_UNIX_SOCKET_H_

#include <sys/un.h>

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace veil {

// The longest Unix socket path (sockaddr_un's sun_path, less its terminating NUL).
inline constexpr size_t kMaxUnixSocketPath = sizeof(sockaddr_un::sun_path) - 1;

// Makes `path` ready to bind: creates its parent directory (0700) if missing and removes a stale
// socket left by a dead process. FAILED_PRECONDITION when the path exists and is not a socket, or
// (reason ADDRESS_IN_USE) when a live process accepts on it. `what` names the socket in errors
// and logs: "API", "serve" or "node" (the "<what> socket").
absl::Status PrepareUnixSocketPath(const std::string& path, absl::string_view what);

}  // namespace veil

#endif  // VEIL_SIDECAR_COMMON_UNIX_SOCKET_H_
