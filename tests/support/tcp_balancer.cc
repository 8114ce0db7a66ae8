#include "tests/support/tcp_balancer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace veil::testing {

TcpBalancer::TcpBalancer(std::vector<int> targets, Policy policy)
    : targets_(std::move(targets)), policy_(policy) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::listen(listen_fd_, 256);
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { Accept(); });
}

TcpBalancer::~TcpBalancer() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  Cut();
  acceptor_.join();
  for (auto& t : pumps_) t.join();
  ::close(listen_fd_);
}

void TcpBalancer::Cut() {
  std::lock_guard<std::mutex> lock(mu_);
  cut_ = true;
  for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
}

void TcpBalancer::Heal() {
  std::lock_guard<std::mutex> lock(mu_);
  cut_ = false;
}

int TcpBalancer::Dial() {
  if (policy_ == Policy::kFirstLive) next_ = 0;
  for (size_t tried = 0; tried < targets_.size(); ++tried) {
    int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(targets_[next_++ % targets_.size()]));
    if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return server;
    ::close(server);
  }
  return -1;
}

void TcpBalancer::Accept() {
  while (!stopping_) {
    int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    int server = cut_ ? -1 : Dial();
    if (server < 0) {
      ::close(client);
      continue;
    }
    fds_.push_back(client);
    fds_.push_back(server);
    pumps_.emplace_back([client, server] { Pump(client, server); });
    pumps_.emplace_back([client, server] { Pump(server, client); });
  }
}

void TcpBalancer::Pump(int from, int to) {
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(from, buf, sizeof(buf));
    if (n <= 0) break;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(to, buf + done, static_cast<size_t>(n - done));
      if (w <= 0) return;
      done += w;
    }
  }
  ::shutdown(to, SHUT_WR);
}

}  // namespace veil::testing
