#include "tests/support/etcd_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

extern char** environ;

namespace veil::testing {

EtcdProcess::EtcdProcess() : client_port_(FreeLoopbackPort()), peer_port_(FreeLoopbackPort()) {}

EtcdProcess::~EtcdProcess() { Kill(); }

std::string EtcdProcess::log() const {
  std::ifstream in(dir_.path() + "/etcd.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool EtcdProcess::EnableTls() {
  const std::string d = tls_dir();
  const std::string steps[] = {
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
      "-subj /CN=test-etcd-ca -keyout " +
          d + "/ca.key -out " + d + "/ca.pem",
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
      "-subj /CN=another-ca -keyout " +
          d + "/other-ca.key -out " + d + "/other-ca.pem",
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 "
      "-keyout " +
          d + "/server.key -out " + d + "/server.csr",
      "openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.pem -CAkey " + d +
          "/ca.key -CAcreateserial -days 1 -extfile " + d + "/server.ext -out " + d + "/server.pem",
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=veil-hub "
      "-keyout " +
          d + "/client.key -out " + d + "/client.csr",
      "openssl x509 -req -in " + d + "/client.csr -CA " + d + "/ca.pem -CAkey " + d +
          "/ca.key -CAcreateserial -days 1 -extfile " + d + "/client.ext -out " + d + "/client.pem",
  };
  std::filesystem::create_directories(d);
  std::ofstream(d + "/server.ext") << "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
  std::ofstream(d + "/client.ext") << "extendedKeyUsage=clientAuth\n";
  for (const std::string& step : steps) {
    if (std::system((step + " >/dev/null 2>&1").c_str()) != 0) return false;
  }
  tls_ = true;
  return true;
}

bool EtcdProcess::Start(std::chrono::milliseconds timeout) {
  const std::string client = endpoint();
  const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  std::vector<std::string> argv = {"etcd",
                                   "--name",
                                   "test",
                                   "--data-dir",
                                   dir_.path() + "/data",
                                   "--listen-client-urls",
                                   client,
                                   "--advertise-client-urls",
                                   client,
                                   "--listen-peer-urls",
                                   peer,
                                   "--initial-advertise-peer-urls",
                                   peer,
                                   "--initial-cluster",
                                   "test=" + peer,
                                   "--logger",
                                   "zap",
                                   "--log-outputs",
                                   "stderr"};
  if (tls_) {
    for (const std::string& a :
         {"--cert-file=" + tls_dir() + "/server.pem", "--key-file=" + tls_dir() + "/server.key",
          "--trusted-ca-file=" + tls_dir() + "/ca.pem", std::string("--client-cert-auth")}) {
      argv.push_back(a);
    }
  }
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const std::string log_path = dir_.path() + "/etcd.log";
  const size_t before = log().size();  // a restart appends
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  int rc = posix_spawnp(&pid_, "etcd", &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    return false;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::string text = log();
    if (text.find("serving client traffic", before) != std::string::npos) return true;
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling its log
  }
  return false;
}

void EtcdProcess::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

}  // namespace veil::testing
