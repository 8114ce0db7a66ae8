// Test support: a real veild process in a temp state dir, with its API on a temp Unix socket.
// Start() waits (with a deadline, never a fixed sleep) until the API socket accepts
// connections; the destructor stops the process (SIGKILL if SIGTERM is ignored).
//
// Thread-safety: not synchronised; use from one test thread.
#ifndef VEIL_TESTS_SUPPORT_VEILD_PROCESS_H_
#define VEIL_TESTS_SUPPORT_VEILD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace veil::testing {

// True in an AddressSanitizer build (gcc defines __SANITIZE_ADDRESS__, clang has the feature):
// freed memory then sits in ASan's quarantine, so memory bounds must be looser.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kAddressSanitizer = true;
#else
inline constexpr bool kAddressSanitizer = false;
#endif
#else
inline constexpr bool kAddressSanitizer = false;
#endif

// The same for ThreadSanitizer, whose shadow memory makes every byte cost several.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kThreadSanitizer = true;
#else
inline constexpr bool kThreadSanitizer = false;
#endif
#else
inline constexpr bool kThreadSanitizer = false;
#endif

// A TCP port on 127.0.0.1 that was free a moment ago (for a process that must listen on a port
// known before it starts, or come back on the same one).
int FreeLoopbackPort();

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class VeildProcess {
 public:
  // `extra_args` are appended to --state-dir and --api unix:<temp>/api.sock (the latter left out
  // when `extra_args` has its own --api); the binary is $VEILD.
  explicit VeildProcess(std::vector<std::string> extra_args = {});
  // Reuses `state_dir` (to test restarts); the caller keeps it.
  VeildProcess(std::string state_dir, std::vector<std::string> extra_args);
  ~VeildProcess();
  VeildProcess(const VeildProcess&) = delete;
  VeildProcess& operator=(const VeildProcess&) = delete;

  // Sets an environment variable for the process (before Start).
  void SetEnv(const std::string& name, const std::string& value) {
    env_.push_back(name + "=" + value);
  }
  // Runs `binary` instead of $VEILD (before Start).
  void SetBinary(std::string binary) { binary_ = std::move(binary); }
  // Starts veild and waits up to `timeout` for its "ready" log line. Returns false (and the log
  // says why) when it exits or does not come up.
  bool Start(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Sends `signal`.
  void Signal(int signal);
  // Waits up to `timeout` for exit; returns the exit code, or -signal when killed by one, or
  // nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // SIGKILL and reap.
  void Kill();

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // Its resident set size (VmRSS) in KiB; 0 when not running.
  size_t rss_kib() const;
  // Its open file descriptors (entries in /proc/PID/fd); 0 when not running.
  size_t open_fds() const;
  // CPU time it has used so far, user and system, in seconds; 0 when not running.
  double cpu_seconds() const;
  // The exit code when Start() failed because veild exited.
  std::optional<int> exit_code() const { return exit_code_; }
  // The API endpoint from veild's "ready" log line (e.g. "unix:/tmp/.../api.sock" or
  // "127.0.0.1:40123"), for grpc::CreateChannel.
  const std::string& api_target() const { return api_target_; }
  const std::string& socket_path() const { return socket_path_; }
  const std::string& state_dir() const { return state_dir_; }
  // Everything veild wrote to stderr so far.
  std::string log() const;

 private:
  std::optional<TempDir> own_dir_;
  std::string state_dir_;
  std::string socket_path_;
  std::string log_path_;
  std::string api_target_;
  std::optional<int> exit_code_;
  std::vector<std::string> args_;
  std::vector<std::string> env_;
  std::string binary_;
  pid_t pid_ = -1;
};

// Makes a veild with `make` into `process` and starts it; while it fails because an address it
// must listen on is taken, makes and starts another, for up to `limit`. For a restart on a fixed
// port, which another test's connection (tests run in parallel) may hold for a moment. Returns
// whether it started; `process` is the last one made (its log says why not).
bool StartWhileAddressInUse(const std::function<std::unique_ptr<VeildProcess>()>& make,
                            std::unique_ptr<VeildProcess>& process,
                            std::chrono::milliseconds limit = std::chrono::seconds(10));

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_VEILD_PROCESS_H_
