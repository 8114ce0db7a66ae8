#include "tests/support/tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "tests/support/socket_io.h"
#include "veil_frame.h"

namespace veil::testing {
TcpProxy::TcpProxy(int target_port) : target_port_(target_port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::listen(listen_fd_, 16);
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

TcpProxy::~TcpProxy() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : fds_) {
      if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
    }
  }
  acceptor_.join();
  for (auto& t : threads_) t.join();
  for (int fd : fds_) {
    if (fd >= 0) ::close(fd);
  }
}

std::string TcpProxy::recorded() {
  std::lock_guard<std::mutex> lock(mu_);
  return recorded_;
}

void TcpProxy::set_hook(FrameHook hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hook_ = std::move(hook);
}

void TcpProxy::Record(const char* data, size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  recorded_.append(data, n);
}

void TcpProxy::AcceptLoop() {
  while (!stopping_) {
    int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(target_port_));
    if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(client);
      ::close(server);
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      fds_.push_back(client);
      fds_.push_back(server);
    }
    threads_.emplace_back([this, client, server] { PumpFrames(client, server); });
    threads_.emplace_back([this, client, server] { PumpRaw(server, client); });
  }
}

void TcpProxy::PumpRaw(int from, int to) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(from, buf, sizeof(buf));
    if (n <= 0) break;
    Record(buf, static_cast<size_t>(n));
    if (!WriteFull(to, buf, static_cast<size_t>(n))) break;
  }
  if (reset_) {  // ResetAbruptly closes the fds once we are done with them
    std::lock_guard<std::mutex> lock(mu_);
    raw_pump_done_ = true;
    raw_stopped_.notify_all();
  } else {
    ::shutdown(to, SHUT_WR);
  }
}

void TcpProxy::PumpFrames(int from, int to) {
  char version;
  if (!ReadFull(from, &version, 1)) return;
  Record(&version, 1);
  WriteFull(to, &version, 1);
  for (;;) {
    char header[frame::kHeaderBytes];
    if (!ReadFull(from, header, frame::kHeaderBytes)) break;
    const uint32_t n = frame::GetLength(header);
    std::string frame(header, frame::kHeaderBytes);
    frame.resize(frame::kHeaderBytes + n);
    if (!ReadFull(from, frame.data() + frame::kHeaderBytes, n)) break;
    Record(frame.data(), frame.size());
    FrameHook hook;
    {
      std::lock_guard<std::mutex> lock(mu_);
      hook = hook_;
    }
    if (reset_mid_frame_.exchange(false)) {
      WriteFull(to, frame.data(), frame.size() / 2);
      ResetAbruptly(from, to);
      return;
    }
    std::vector<std::string> out = hook ? hook(frame) : std::vector<std::string>{frame};
    bool ok = true;
    for (const auto& f : out) ok = ok && WriteFull(to, f.data(), f.size());
    if (!ok) break;
  }
  ::shutdown(to, SHUT_WR);
}

void TcpProxy::ResetAbruptly(int client, int server) {
  linger abort{1, 0};  // close() then sends RST
  ::setsockopt(client, SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
  ::setsockopt(server, SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
  reset_ = true;
  ::shutdown(server, SHUT_RD);  // wakes the other pump, which reads only `server`
  // Closes both once the other pump has stopped using them.
  std::unique_lock<std::mutex> lock(mu_);
  raw_stopped_.wait(lock, [&] { return raw_pump_done_; });
  for (int& fd : fds_) {
    if (fd == client || fd == server) {
      ::close(fd);
      fd = -1;
    }
  }
}

}  // namespace veil::testing
