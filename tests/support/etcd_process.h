// Test support: a real single-member etcd (Debian's etcd-server) in a temp data directory on
// 127.0.0.1, on ports picked free. Start() waits (with a deadline) until it serves clients; Kill
// and Start again bring it back on the same ports with the same data (a crash and restart).
//
// Thread-safety: not synchronised; use from one test thread.
#ifndef VEIL_TESTS_SUPPORT_ETCD_PROCESS_H_
#define VEIL_TESTS_SUPPORT_ETCD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <string>

#include "tests/support/veild_process.h"

namespace veil::testing {

class EtcdProcess {
 public:
  EtcdProcess();
  ~EtcdProcess();
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  // Before Start: serve clients over TLS only, asking each for a certificate of the CA. Makes
  // (with the openssl CLI) a CA, a server certificate for 127.0.0.1 and a client certificate,
  // in ca.pem, client.pem and client.key under tls_dir() (and another CA, other-ca.pem, that
  // signed nothing of etcd's). False when openssl fails.
  bool EnableTls();
  std::string tls_dir() const { return dir_.path() + "/tls"; }
  bool Start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  void Kill();  // SIGKILL: the data stays for the next Start
  // "http://127.0.0.1:PORT" (https with TLS), for --hub-directory.
  std::string endpoint() const {
    return (tls_ ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(client_port_);
  }
  int client_port() const { return client_port_; }
  pid_t pid() const { return pid_; }
  std::string log() const;

 private:
  TempDir dir_;
  int client_port_ = 0, peer_port_ = 0;
  bool tls_ = false;
  pid_t pid_ = -1;
};

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_ETCD_PROCESS_H_
