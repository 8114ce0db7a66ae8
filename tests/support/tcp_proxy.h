// Test support: a TCP proxy between two veil nodes on 127.0.0.1 that records every byte in
// both directions and lets a test rewrite the frames going one way (to tamper, drop or
// replay). Frames are parsed with the wire framing (version byte, u32 length, body).
//
// Thread-safety: the proxy runs its own threads; recorded() and the hook are synchronised.
#ifndef VEIL_TESTS_SUPPORT_TCP_PROXY_H_
#define VEIL_TESTS_SUPPORT_TCP_PROXY_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace veil::testing {

class TcpProxy {
 public:
  // Rewrites one frame (length prefix included) going from the client side to the target;
  // returns the frames to send instead.
  using FrameHook = std::function<std::vector<std::string>(const std::string& frame)>;

  // Forwards connections accepted on 127.0.0.1:<port()> to `target_port` on 127.0.0.1.
  explicit TcpProxy(int target_port);
  // The same for a "127.0.0.1:<port>" target.
  explicit TcpProxy(const std::string& target)
      : TcpProxy(std::stoi(target.substr(target.rfind(':') + 1))) {}
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  int port() const { return port_; }
  // Every byte seen, both directions, concatenated.
  std::string recorded();
  void set_hook(FrameHook hook);
  // The next frame from the client side is cut in half, and then both connections are reset
  // (RST, not FIN): a connection reset mid-frame, seen from both nodes.
  void ResetMidFrame() { reset_mid_frame_ = true; }

 private:
  void AcceptLoop();
  void PumpRaw(int from, int to);
  void PumpFrames(int from, int to);
  void Record(const char* data, size_t n);
  void ResetAbruptly(int client, int server);

  int listen_fd_ = -1;
  int port_ = 0;
  int target_port_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> reset_mid_frame_{false};
  std::atomic<bool> reset_{false};  // a connection was reset; supports one connection
  std::condition_variable raw_stopped_;
  bool raw_pump_done_ = false;  // guarded by mu_
  std::mutex mu_;
  std::string recorded_;
  FrameHook hook_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_TCP_PROXY_H_
