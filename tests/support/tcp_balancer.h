// Test support: a byte-for-byte TCP forwarder on 127.0.0.1 to one or more targets on
// 127.0.0.1 — a load balancer in front of hub replicas (a Kubernetes Service), or, with one
// target, a link that can be cut (every connection through it reset, new ones closed at once)
// and healed (a replica partitioned from etcd).
//
// Thread-safety: the forwarder runs its own threads; Cut and Heal may be called from any thread.
#ifndef VEIL_TESTS_SUPPORT_TCP_BALANCER_H_
#define VEIL_TESTS_SUPPORT_TCP_BALANCER_H_

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace veil::testing {

class TcpBalancer {
 public:
  enum class Policy {
    kRoundRobin,  // each connection to the next target in turn that accepts it
    kFirstLive,   // each connection to the first target that accepts it (primary, then backups)
  };
  explicit TcpBalancer(int target) : TcpBalancer(std::vector<int>{target}) {}
  explicit TcpBalancer(std::vector<int> targets, Policy policy = Policy::kRoundRobin);
  ~TcpBalancer();
  TcpBalancer(const TcpBalancer&) = delete;
  TcpBalancer& operator=(const TcpBalancer&) = delete;

  int port() const { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string route() const { return "/tcp/127.0.0.1:" + std::to_string(port_); }
  void Cut();
  void Heal();

 private:
  void Accept();
  int Dial();  // a connected socket to a target, or -1
  static void Pump(int from, int to);

  const std::vector<int> targets_;
  const Policy policy_;
  size_t next_ = 0;  // the acceptor's
  int listen_fd_ = -1, port_ = 0;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  bool cut_ = false;
  std::vector<int> fds_;  // closed with the process: a test's worth
  std::vector<std::thread> pumps_;
  std::thread acceptor_;
};

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_TCP_BALANCER_H_
