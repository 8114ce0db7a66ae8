#include "tests/support/veild_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace veil::testing {

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/veil-test-XXXXXX";
  char* made = ::mkdtemp(tmpl.data());
  path_ = made ? made : "";
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

VeildProcess::VeildProcess(std::vector<std::string> extra_args) : own_dir_(std::in_place) {
  state_dir_ = own_dir_->path() + "/state";
  socket_path_ = own_dir_->path() + "/api.sock";
  log_path_ = own_dir_->path() + "/veild.log";
  args_ = std::move(extra_args);
}

VeildProcess::VeildProcess(std::string state_dir, std::vector<std::string> extra_args)
    : own_dir_(std::in_place), state_dir_(std::move(state_dir)) {
  socket_path_ = own_dir_->path() + "/api.sock";
  log_path_ = own_dir_->path() + "/veild.log";
  args_ = std::move(extra_args);
}

VeildProcess::~VeildProcess() {
  if (pid_ > 0) {
    Signal(SIGTERM);
    if (!Wait(std::chrono::seconds(10)).has_value()) Kill();
  }
}

bool VeildProcess::Start(std::chrono::milliseconds timeout) {
  const char* binary = std::getenv("VEILD");
  if (binary == nullptr || *binary == '\0') binary = VEIL_DEFAULT_VEILD;
  if (!binary_.empty()) binary = binary_.c_str();
  std::vector<std::string> argv = {binary, "--state-dir", state_dir_};
  if (std::find(args_.begin(), args_.end(), "--api") == args_.end()) {
    argv.push_back("--api");
    argv.push_back("unix:" + socket_path_);
  }
  argv.insert(argv.end(), args_.begin(), args_.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  std::vector<std::string> env = env_;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);  // env_ first wins
  std::vector<char*> cenv;
  for (auto& e : env) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  int rc = posix_spawn(&pid_, binary, &actions, nullptr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    return false;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::string text = log();
    size_t ready = text.find(" ready: api=");
    if (ready != std::string::npos && text.find('\n', ready) != std::string::npos) {
      size_t begin = ready + std::strlen(" ready: api=");
      api_target_ = text.substr(begin, text.find(' ', begin) - begin);
      return true;
    }
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) exit_code_ = WEXITSTATUS(status);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling a condition
  }
  return false;
}

void VeildProcess::Signal(int signal) {
  if (pid_ > 0) ::kill(pid_, signal);
}

std::optional<int> VeildProcess::Wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return std::nullopt;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return -WTERMSIG(status);
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void VeildProcess::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

size_t VeildProcess::rss_kib() const {
  if (pid_ <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  }
  return 0;
}

size_t VeildProcess::open_fds() const {
  if (pid_ <= 0) return 0;
  std::error_code ec;
  size_t n = 0;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid_) + "/fd", ec), end;
       !ec && it != end; it.increment(ec)) {
    ++n;
  }
  return n;
}

double VeildProcess::cpu_seconds() const {
  if (pid_ <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // "PID (comm) state ppid ...": utime and stime are fields 14 and 15, the 12th and 13th after
  // the command's closing parenthesis (the command may itself hold spaces and parentheses).
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 1; i <= 13 && fields >> field; ++i) {
    if (i == 12) utime = std::stoull(field);
    if (i == 13) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::string VeildProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool StartWhileAddressInUse(const std::function<std::unique_ptr<VeildProcess>()>& make,
                            std::unique_ptr<VeildProcess>& process,
                            std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    process.reset();  // the previous one first: it may hold the very address
    process = make();
    if (process->Start()) return true;
    if (process->log().find("already in use") == std::string::npos ||
        std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace veil::testing
