// The full path, end to end, beside the tools users would pick instead, in one run:
//
//   veil:      app -> sidecar -> hub -> sidecar -> app, over a secure channel (Noise XX,
//              ChaCha20-Poly1305), three real veild processes on loopback
//   stunnel:   app -> stunnel (TLS 1.3, ChaCha20-Poly1305) -> socat -b 131072 -> stunnel -> app
//   plain TCP: app -> socat -b 131072 -> app
//
// Throughput for 64 B, 1 KiB and 64 KiB messages with many in flight, 64 B echo round trips
// (p50/p99), secure channels established per second, and RSS growth per idle channel (on the
// responder's sidecar) and per idle relay (on the hub). The apps use the serve socket (Serve
// streams without gRPC); each throughput and echo figure is measured again with the apps on
// gRPC Serve calls, in the same run. Beside the echo: the floor gRPC alone
// sets — the same four app <-> server crossings through a bare gRPC echo server (another
// process, Unix socket, the callback API as veild uses it) with no veil code at all — and the
// same crossings over a plain Unix socket. Prints one table; docs/performance.md has the
// figures and the machine. Then the seed path over each transport (TCP, Unix socket,
// WebSocket), each on a fresh topology. Usage: e2e_bench [--quick] (--veil-only SIZE,
// --echo-only, --idle-only: one case, for profiling; add --grpc for apps on gRPC Serve calls,
// --transport uds|ws for the hub, relay and channel on another transport; --soak [--csv FILE]:
// the soak, below)
#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/sync_stream.h"
#include "sodium.h"
#include "tests/support/socket_io.h"
#include "tests/support/veild_process.h"
#include "veil/v1/authority.grpc.pb.h"
#include "veil/v1/messaging.grpc.pb.h"
#include "veil/v1/portal.grpc.pb.h"
#include "veil/v1/relay.grpc.pb.h"
#include "veil/v1/secure_channel.grpc.pb.h"
#include "veil_sdk.h"

extern char** environ;

namespace veil::bench {
namespace {

using Clock = std::chrono::steady_clock;
using testing::ReadFull;
using testing::TempDir;
using testing::VeildProcess;
using testing::WriteFull;

bool quick = false;
size_t only_size = 0;  // --veil-only SIZE: just veil's throughput at SIZE, for profiling
std::string only_transport = "tcp";  // --transport T: the topology of --veil-only/--echo-only
bool echo_only = false;              // --echo-only: just veil's echo latencies, for profiling
bool grpc_only = false;  // --grpc: with --echo-only / --veil-only, apps on gRPC Serve calls
bool idle_only = false;  // --idle-only: just the fresh topology's handshakes and idle memory

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// ---------------------------------------------------------------------------------------------
// Results

struct Throughput {
  uint64_t messages = 0;
  uint64_t bytes = 0;
  double seconds = 0;
  uint64_t refused = 0;
  double per_second() const { return seconds > 0 ? messages / seconds : 0; }
  double mb_per_second() const { return seconds > 0 ? bytes / seconds / 1e6 : 0; }
};

struct Latency {
  double p50_us = 0, p99_us = 0;
};

Latency Percentiles(std::vector<double> samples_us) {
  std::sort(samples_us.begin(), samples_us.end());
  if (samples_us.empty()) return {};
  auto at = [&](double q) {
    return samples_us[std::min(samples_us.size() - 1, size_t(q * samples_us.size()))];
  };
  return {at(0.50), at(0.99)};
}

// ---------------------------------------------------------------------------------------------
// veil: apps on the API

std::shared_ptr<grpc::Channel> Connect(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(128 * 1024 * 1024);
  args.SetMaxSendMessageSize(128 * 1024 * 1024);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// How an app reaches its sidecar: the gRPC API, and the serve socket ("" to use gRPC's Serve
// call for streams instead).
struct Api {
  std::shared_ptr<grpc::Channel> grpc;
  std::string serve_socket;
};

// One Serve stream, opened: through the serve socket when the Api names one, else gRPC.
class ServeConn {
 public:
  ServeConn(const Api& api, const std::string& address, uint32_t window = 0) {
    if (!api.serve_socket.empty()) {
      try {
        socket_.emplace(sdk::ServeSocket::Open(api.serve_socket, address, window));
        ok_ = true;
      } catch (const sdk::Error& e) {
        std::cerr << "cannot open " << address << " on the serve socket: " << e.what() << "\n";
      }
      return;
    }
    stub_ = v1::MessagingService::NewStub(api.grpc);
    stream_ = stub_->Serve(&context_);
    v1::ServeRequest open;
    open.mutable_open()->set_address(address);
    open.mutable_open()->set_window(window);
    v1::ServeResponse opened;
    ok_ = stream_->Write(open) && stream_->Read(&opened) && opened.has_opened();
    if (!ok_) std::cerr << "cannot open " << address << " on a gRPC Serve stream\n";
  }
  bool ok() const { return ok_; }
  bool Write(const v1::ServeRequest& r) { return socket_ ? socket_->Write(r) : stream_->Write(r); }
  // Several requests: in one system call on the serve socket.
  bool Write(std::span<const v1::ServeRequest> rs) {
    if (socket_) return socket_->Write(rs);
    for (const auto& r : rs) {
      if (!stream_->Write(r)) return false;
    }
    return true;
  }
  bool Read(v1::ServeResponse* r) { return socket_ ? socket_->Read(r) : stream_->Read(r); }
  // Ends the stream; a Read in progress returns false soon after.
  void Close() {
    if (socket_) {
      socket_->WritesDone();
    } else {
      stream_->WritesDone();
      context_.TryCancel();
    }
  }

 private:
  bool ok_ = false;
  std::optional<sdk::ServeSocket> socket_;
  std::unique_ptr<v1::MessagingService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ServeRequest, v1::ServeResponse>> stream_;
};

// Serves `address` on a sidecar: counts what arrives (sink) or echoes it (echo).
class App {
 public:
  App(const Api& api, const std::string& address, bool echo)
      : stream_(api, address, 65536), echo_(echo) {
    thread_ = std::thread([this] { Run(); });
  }
  ~App() {
    stream_.Close();
    thread_.join();
  }
  uint64_t messages() const { return messages_.load(); }
  uint64_t bytes() const { return bytes_.load(); }

 private:
  void Run() {
    v1::ServeResponse response;
    uint64_t batch = 0;
    // The echo and the ack of what it answers, written together.
    std::vector<v1::ServeRequest> out(2);
    while (stream_.Read(&response)) {
      if (!response.has_deliveries()) continue;
      auto& deliveries = *response.mutable_deliveries()->mutable_deliveries();
      if (deliveries.empty()) continue;
      uint64_t bytes = 0;
      for (const auto& d : deliveries) bytes += d.payload().size();
      uint64_t last = deliveries[deliveries.size() - 1].sequence();
      out[1].mutable_ack()->set_sequence(last);
      if (echo_) {
        v1::ServeRequest& reply = out[0];
        reply.mutable_send()->Clear();
        reply.mutable_send()->set_batch_id(++batch);
        reply.mutable_send()->set_failures_only(true);
        for (auto& d : deliveries) {
          auto* m = reply.mutable_send()->add_messages();
          m->set_route(d.return_route());
          m->set_payload(std::move(*d.mutable_payload()));
        }
        stream_.Write(std::span<const v1::ServeRequest>(out));
      } else {
        stream_.Write(out[1]);
      }
      bytes_ += bytes;
      messages_ += deliveries.size();
    }
  }

  ServeConn stream_;
  bool echo_;
  std::atomic<uint64_t> messages_{0}, bytes_{0};
  std::thread thread_;
};

// Sends batches of messages on a Serve stream as fast as the sidecar takes them, keeping at
// most `max_batches` unanswered.
Throughput VeilThroughput(const Api& alice, const std::string& route, const App& sink, size_t size,
                          double seconds) {
  ServeConn conn(alice, "bench_src");
  ServeConn* stream = &conn;
  const size_t per_batch = std::clamp<size_t>((256 * 1024) / size, 4, 4096);
  const int max_batches = 32;
  std::mutex mu;
  std::condition_variable cv;
  int outstanding = 0;
  uint64_t refused = 0;
  std::thread reader([&] {
    v1::ServeResponse r;
    while (stream->Read(&r)) {
      if (!r.has_send_result()) continue;
      std::lock_guard lock(mu);
      --outstanding;
      refused += r.send_result().failures_size();
      cv.notify_all();
    }
  });
  v1::ServeRequest batch;
  for (size_t i = 0; i < per_batch; ++i) {
    auto* m = batch.mutable_send()->add_messages();
    m->set_route(route);
    m->set_payload(std::string(size, 'x'));
  }
  uint64_t start_messages = sink.messages(), start_bytes = sink.bytes();
  uint64_t sent = 0;
  auto start = Clock::now();
  auto stop_sending =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  uint64_t id = 0;
  while (Clock::now() < stop_sending) {
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return outstanding < max_batches; });
      ++outstanding;
    }
    batch.mutable_send()->set_batch_id(++id);
    if (!stream->Write(batch)) break;
    sent += per_batch;
  }
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::seconds(60), [&] { return outstanding == 0; });
  }
  // Wait until everything handed on has arrived (or stops arriving).
  uint64_t expected = sent - refused;
  auto last_progress = Clock::now();
  uint64_t last_count = 0;
  while (sink.messages() - start_messages < expected) {
    uint64_t now = sink.messages();
    if (now != last_count) {
      last_count = now;
      last_progress = Clock::now();
    } else if (Clock::now() - last_progress > std::chrono::seconds(10)) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  Throughput t;
  t.seconds = Seconds(Clock::now() - start);
  t.messages = sink.messages() - start_messages;
  t.bytes = sink.bytes() - start_bytes;
  t.refused = refused;
  stream->Close();
  reader.join();
  return t;
}

Latency VeilEcho(const std::shared_ptr<grpc::Channel>& alice, const std::string& route, int n) {
  auto stub = v1::MessagingService::NewStub(alice);
  std::vector<double> samples;
  v1::RequestRequest request;
  request.mutable_message()->set_route(route);
  request.mutable_message()->set_payload(std::string(64, 'e'));
  for (int i = 0; i < n + n / 10; ++i) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::RequestResponse response;
    auto t0 = Clock::now();
    grpc::Status s = stub->Request(&context, request, &response);
    auto t1 = Clock::now();
    if (!s.ok()) {
      std::cerr << "echo failed: " << s.error_message() << "\n";
      break;
    }
    if (i >= n / 10) samples.push_back(Seconds(t1 - t0) * 1e6);  // after a warm-up
  }
  return Percentiles(std::move(samples));
}

// Round trips on one long-lived Serve stream, as a latency-minded app would talk (the peers
// keep their TCP connection too): send one message with the stream's address as return route,
// wait for the echo's delivery, ack it.
Latency VeilStreamEcho(const Api& alice, const std::string& route, int n) {
  ServeConn conn(alice, "bench_pinger");
  if (!conn.ok()) return {};
  ServeConn* stream = &conn;
  v1::ServeResponse response;
  // The ack of the previous echo goes with the next send, in one write.
  std::vector<v1::ServeRequest> out(2);
  v1::ServeRequest& ack = out[0];
  v1::ServeRequest& send = out[1];
  auto* m = send.mutable_send()->add_messages();
  m->set_route(route);
  m->set_payload(std::string(64, 'e'));
  send.mutable_send()->set_failures_only(true);  // a result only if it failed
  std::vector<double> samples;
  for (int i = 0; i < n + n / 10; ++i) {
    send.mutable_send()->set_batch_id(i);
    auto t0 = Clock::now();
    if (!(i == 0 ? stream->Write(send) : stream->Write(std::span<const v1::ServeRequest>(out))))
      break;
    bool got = false;
    while (!got && stream->Read(&response)) {
      if (response.has_send_result() && response.send_result().failures_size() > 0) {
        std::cerr << "echo failed: " << response.send_result().failures(0).status().message()
                  << "\n";
        return {};
      }
      if (!response.has_deliveries() || response.deliveries().deliveries_size() == 0) continue;
      got = true;
      ack.mutable_ack()->set_sequence(
          response.deliveries().deliveries(response.deliveries().deliveries_size() - 1).sequence());
    }
    auto t1 = Clock::now();
    if (!got) break;
    if (i >= n / 10) samples.push_back(Seconds(t1 - t0) * 1e6);  // after a warm-up
  }
  stream->Close();
  return Percentiles(std::move(samples));
}

// ---------------------------------------------------------------------------------------------
// Peers: plain TCP apps behind stunnel/socat

int Listen(uint16_t* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::listen(fd, 16);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

uint16_t FreePort() {
  uint16_t port;
  ::close(Listen(&port));
  return port;
}

int ConnectTcp(uint16_t port) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return fd;
    }
    ::close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return -1;
}

// The peer apps' server: each connection either counts length-prefixed messages or echoes them.
class PeerServer {
 public:
  explicit PeerServer(bool echo) : echo_(echo) {
    fd_ = Listen(&port_);
    thread_ = std::thread([this] {
      for (;;) {  // one connection at a time: each measurement opens its own
        int conn = ::accept(fd_, nullptr, nullptr);
        if (conn < 0) return;
        Handle(conn);
      }
    });
  }
  ~PeerServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  uint16_t port() const { return port_; }
  uint64_t messages() const { return messages_.load(); }
  uint64_t bytes() const { return bytes_.load(); }

 private:
  void Handle(int conn) {
    int one = 1;
    ::setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::vector<char> buf(1 << 20);
    size_t have = 0;
    for (;;) {
      ssize_t r = ::read(conn, buf.data() + have, buf.size() - have);
      if (r <= 0) break;
      have += static_cast<size_t>(r);
      size_t pos = 0;
      while (have - pos >= 4) {
        uint32_t len;
        std::memcpy(&len, buf.data() + pos, 4);
        len = ntohl(len);
        if (have - pos < 4 + len) break;
        if (echo_) WriteFull(conn, buf.data() + pos, 4 + len);
        messages_ += 1;
        bytes_ += len;
        pos += 4 + len;
      }
      std::memmove(buf.data(), buf.data() + pos, have - pos);
      have -= pos;
      if (buf.size() - have < 128 * 1024) buf.resize(buf.size() * 2);
    }
    ::close(conn);
  }

  bool echo_;
  int fd_;
  uint16_t port_;
  std::atomic<uint64_t> messages_{0}, bytes_{0};
  std::thread thread_;
};

Throughput PeerThroughput(uint16_t entry, const PeerServer& sink, size_t size, double seconds) {
  int fd = ConnectTcp(entry);
  // Many messages per write, as an app streaming over TCP would (and as the veil sender batches).
  const size_t per_write = std::clamp<size_t>((256 * 1024) / (size + 4), 1, 4096);
  std::string chunk;
  for (size_t i = 0; i < per_write; ++i) {
    uint32_t len = htonl(static_cast<uint32_t>(size));
    chunk.append(reinterpret_cast<char*>(&len), 4);
    chunk.append(size, 'x');
  }
  uint64_t start_messages = sink.messages(), start_bytes = sink.bytes();
  uint64_t sent = 0;
  auto start = Clock::now();
  auto stop =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < stop) {
    if (!WriteFull(fd, chunk.data(), chunk.size())) break;
    sent += per_write;
  }
  while (sink.messages() - start_messages < sent)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  Throughput t;
  t.seconds = Seconds(Clock::now() - start);
  t.messages = sink.messages() - start_messages;
  t.bytes = sink.bytes() - start_bytes;
  ::close(fd);
  return t;
}

Latency PeerEcho(uint16_t entry, int n) {
  int fd = ConnectTcp(entry);
  std::string msg(4 + 64, 'e');
  uint32_t len = htonl(64);
  std::memcpy(msg.data(), &len, 4);
  std::vector<double> samples;
  std::string back(msg.size(), '\0');
  for (int i = 0; i < n + n / 10; ++i) {
    auto t0 = Clock::now();
    if (!WriteFull(fd, msg.data(), msg.size()) || !ReadFull(fd, back.data(), back.size())) break;
    if (i >= n / 10) samples.push_back(Seconds(Clock::now() - t0) * 1e6);
  }
  ::close(fd);
  return Percentiles(std::move(samples));
}

// A child process (stunnel, socat), stopped on destruction.
class Child {
 public:
  Child(std::vector<std::string> argv, const std::string& log) {
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (posix_spawnp(&pid_, cargv[0], &actions, nullptr, cargv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  bool ok() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

bool Run(const std::string& command) { return std::system(command.c_str()) == 0; }

std::string SelfPath() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("e2e_bench");
}

// stunnel client -> socat -> stunnel server -> `target`; returns the entry port. With
// `tls` false: socat -> target only.
struct PeerPath {
  PeerPath(const TempDir& dir, uint16_t target, bool tls, const std::string& name) {
    uint16_t relay_in = FreePort(), server_in = tls ? FreePort() : target;
    std::string log = dir.path() + "/" + name + ".log";
    socat_.emplace(
        std::vector<std::string>{
            "socat", "-b", "131072",
            "TCP-LISTEN:" + std::to_string(relay_in) + ",bind=127.0.0.1,reuseaddr,fork,nodelay",
            "TCP:127.0.0.1:" + std::to_string(server_in) + ",nodelay"},
        log);
    entry = relay_in;
    if (!tls) return;
    entry = FreePort();
    std::string common =
        "foreground = yes\npid =\nsslVersion = TLSv1.3\nciphersuites = "
        "TLS_CHACHA20_POLY1305_SHA256\n"
        "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n";
    std::ofstream(dir.path() + "/" + name + "-client.conf")
        << common << "[c]\nclient = yes\naccept = 127.0.0.1:" << entry
        << "\nconnect = 127.0.0.1:" << relay_in << "\n";
    std::ofstream(dir.path() + "/" + name + "-server.conf")
        << common << "cert = " << dir.path() << "/cert.pem\nkey = " << dir.path()
        << "/key.pem\n[s]\naccept = 127.0.0.1:" << server_in << "\nconnect = 127.0.0.1:" << target
        << "\n";
    server_.emplace(std::vector<std::string>{"stunnel4", dir.path() + "/" + name + "-server.conf"},
                    log);
    client_.emplace(std::vector<std::string>{"stunnel4", dir.path() + "/" + name + "-client.conf"},
                    log);
  }
  uint16_t entry = 0;
  std::optional<Child> socat_, server_, client_;
};

// ---------------------------------------------------------------------------------------------
// veil topology

struct Veil {
  TempDir dir;
  std::unique_ptr<VeildProcess> hub, bob, alice;
  std::shared_ptr<grpc::Channel> hub_api, bob_api, alice_api;
  std::string bob_serve, alice_serve;  // their serve sockets
  std::string hub_route, listener_route;

  // Bob's and Alice's apps: Serve streams on the serve socket, or on gRPC.
  Api Bob(bool serve_socket) const { return {bob_api, serve_socket ? bob_serve : ""}; }
  Api Alice(bool serve_socket) const { return {alice_api, serve_socket ? alice_serve : ""}; }

  // `transport`: what the hub listens on, and Bob's relay and Alice's channel ride — "tcp",
  // "uds" or "ws".
  bool Start(const std::string& transport = "tcp") {
    std::vector<std::string> flags = {"--tcp-listen", "127.0.0.1:0"};
    if (transport == "uds") flags = {"--uds-listen", dir.path() + "/hub.sock"};
    if (transport == "ws") flags = {"--ws-listen", "127.0.0.1:0/veil"};
    flags.insert(flags.end(), {"--hub", "--relay-max-per-connection", "5000",
                               "--relay-max-per-identity", "5000"});
    hub = std::make_unique<VeildProcess>(flags);
    // Alice opens more channels to Bob than one identity may hold by default (1,024).
    bob = std::make_unique<VeildProcess>(
        std::vector<std::string>{"--max-channels-per-identity", "100000"});
    alice = std::make_unique<VeildProcess>(std::vector<std::string>{});
    for (auto* p : {hub.get(), bob.get(), alice.get()}) {
      if (!p->Start()) {
        std::cerr << p->log();
        return false;
      }
    }
    hub_api = Connect(hub->api_target());
    bob_api = Connect(bob->api_target());
    alice_api = Connect(alice->api_target());
    for (auto [api, serve] : {std::pair{bob_api, &bob_serve}, std::pair{alice_api, &alice_serve}}) {
      grpc::ClientContext context;
      v1::Node node;
      if (!v1::NodeService::NewStub(api)->GetNode(&context, v1::GetNodeRequest(), &node).ok() ||
          node.serve_socket().empty()) {
        std::cerr << "a sidecar has no serve socket\n";
        return false;
      }
      *serve = node.serve_socket();
    }
    // The hub's route hop, from its listeners.
    {
      grpc::ClientContext context;
      v1::Node node;
      if (!v1::NodeService::NewStub(hub_api)->GetNode(&context, v1::GetNodeRequest(), &node).ok() ||
          node.listeners_size() == 0) {
        std::cerr << "the hub has no listener\n";
        return false;
      }
      hub_route = node.listeners(0).route();
    }
    auto channels = v1::SecureChannelService::NewStub(bob_api);
    grpc::ClientContext c1;
    v1::CreateSecureChannelListenerRequest listen;
    listen.set_address("listener");
    listen.mutable_trust_policy()->set_trust_everyone(true);
    v1::SecureChannelListener l;
    grpc::Status listened = channels->CreateSecureChannelListener(&c1, listen, &l);
    if (!listened.ok()) {
      std::cerr << "listener: " << listened.error_message() << "\n";
      return false;
    }
    auto relays = v1::RelayService::NewStub(bob_api);
    grpc::ClientContext c2;
    v1::CreateRelayRequest relay;
    relay.set_hub_route(hub_route);
    relay.set_name("bob");
    v1::Relay r;
    grpc::Status s = relays->CreateRelay(&c2, relay, &r);
    if (!s.ok()) {
      std::cerr << "relay: " << s.error_message() << "\n";
      return false;
    }
    listener_route = r.route() + "/service/listener";
    return true;
  }

  // A portal to 127.0.0.1:`target` on Bob's host: an outlet `name` on Bob's sidecar, an inlet on
  // Alice's; the inlet's port (0 when it could not be made).
  uint16_t Portal(const std::string& name, uint16_t target) {
    grpc::ClientContext c1;
    v1::CreateOutletRequest outlet;
    outlet.set_name(name);
    outlet.set_target("127.0.0.1:" + std::to_string(target));
    outlet.mutable_trust_policy()->set_trust_everyone(true);
    v1::Outlet o;
    grpc::Status s = v1::PortalService::NewStub(bob_api)->CreateOutlet(&c1, outlet, &o);
    if (!s.ok()) {
      std::cerr << "outlet: " << s.error_message() << "\n";
      return 0;
    }
    grpc::ClientContext c2;
    v1::CreateInletRequest inlet;
    inlet.set_listen_address("127.0.0.1:0");
    inlet.set_route(listener_route);
    inlet.set_outlet(name);
    v1::Inlet i;
    s = v1::PortalService::NewStub(alice_api)->CreateInlet(&c2, inlet, &i);
    if (!s.ok()) {
      std::cerr << "inlet: " << s.error_message() << "\n";
      return 0;
    }
    return static_cast<uint16_t>(
        std::stoi(i.listen_address().substr(i.listen_address().rfind(':') + 1)));
  }
  // Sessions open now on Bob's outlet `name`.
  uint64_t OutletSessions(const std::string& name) {
    grpc::ClientContext context;
    v1::ListOutletsResponse r;
    if (!v1::PortalService::NewStub(bob_api)->ListOutlets(&context, {}, &r).ok()) return 0;
    for (const auto& o : r.outlets()) {
      if (o.name() == name) return o.counters().sessions_active();
    }
    return 0;
  }

  // Opens a channel from Alice to Bob's listener through the hub; its local address.
  std::string OpenChannel(const std::string& route = "") {
    auto stub = v1::SecureChannelService::NewStub(alice_api);
    grpc::ClientContext context;
    v1::CreateSecureChannelRequest request;
    request.set_route(route.empty() ? listener_route : route);
    request.mutable_trust_policy()->set_trust_everyone(true);
    v1::SecureChannel channel;
    grpc::Status s = stub->CreateSecureChannel(&context, request, &channel);
    if (!s.ok()) std::cerr << "channel: " << s.error_message() << "\n";
    return s.ok() ? channel.address() : "";
  }
};

// ---------------------------------------------------------------------------------------------
// The soak (--soak): VEIL_SOAK_SECONDS (default 600) of 1 KiB messages at half what veil
// carries on this machine (measured first, on the same path), while channels open and close
// beside them: a new channel about every 100 ms, each proven by a round trip through it, the
// oldest closed once 50 are open. Every second: each daemon's RSS, open fds and CPU, and what
// arrived. Writes the samples as CSV (--csv FILE; bench/soak_plot.py draws them) and judges the
// curves after a warm-up: RSS, fds and CPU flat, and every message sent either delivered or
// refused at the sender, none lost.

struct SoakSample {
  double t = 0;
  size_t rss_kib[3] = {}, fds[3] = {};
  double cpu_pct[3] = {};
  double delivered_per_s = 0;
  uint64_t channels_opened = 0, channels_open = 0, refused = 0;
};

// Median of `f` over the samples in [from, to).
template <typename F>
double MedianOf(const std::vector<SoakSample>& s, size_t from, size_t to, F f) {
  std::vector<double> v;
  for (size_t i = from; i < to && i < s.size(); ++i) v.push_back(f(s[i]));
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Soak(const std::string& csv_path) {
  const char* env = std::getenv("VEIL_SOAK_SECONDS");
  const double soak_seconds = env && *env ? std::stod(env) : 600;
  const size_t size = 1024;
  Veil veil;
  if (!veil.Start()) return 1;
  std::string channel = veil.OpenChannel();
  if (channel.empty()) return 1;
  const std::string to_sink = "/service/" + channel + "/service/sink";
  App sink(veil.Bob(true), "sink", false);
  App echoer(veil.Bob(true), "echoer", true);

  Throughput max = VeilThroughput(veil.Alice(true), to_sink, sink, size, 5);
  const double rate = max.per_second() / 2;
  std::printf(
      "soak: %.0f s of %zu B messages at %.0f/s (half of the %.0f/s measured), channels "
      "opening and closing beside them\n",
      soak_seconds, size, rate, max.per_second());
  if (rate <= 0) return 1;

  std::atomic<bool> stop{false};
  // The paced sender: batches of 64 on one Serve stream, on a 10 ms clock.
  ServeConn src(veil.Alice(true), "soak_src");
  if (!src.ok()) return 1;
  std::mutex mu;
  std::condition_variable cv;
  int outstanding = 0;
  std::atomic<uint64_t> refused{0}, sent{0};
  std::thread results([&] {
    v1::ServeResponse r;
    while (src.Read(&r)) {
      if (!r.has_send_result()) continue;
      refused += r.send_result().failures_size();
      std::lock_guard lock(mu);
      --outstanding;
      cv.notify_all();
    }
  });
  const uint64_t sink_start = sink.messages();
  std::thread sender([&] {
    const size_t per_batch = 64;
    v1::ServeRequest batch;
    for (size_t i = 0; i < per_batch; ++i) {
      auto* m = batch.mutable_send()->add_messages();
      m->set_route(to_sink);
      m->set_payload(std::string(size, 's'));
    }
    uint64_t id = 0;
    const auto start = Clock::now();
    while (!stop) {
      const double due = rate * Seconds(Clock::now() - start);
      while (!stop && static_cast<double>(sent.load()) + per_batch <= due) {
        {
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return outstanding < 32 || stop; });
          if (stop) break;
          ++outstanding;
        }
        batch.mutable_send()->set_batch_id(++id);
        if (!src.Write(batch)) return;
        sent += per_batch;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  // Channels opening and closing: each proven by a round trip to the echoer through it.
  std::atomic<uint64_t> opened{0}, open_now{0}, churn_failed{0};
  std::thread churn([&] {
    auto channels = v1::SecureChannelService::NewStub(veil.alice_api);
    auto messaging = v1::MessagingService::NewStub(veil.alice_api);
    std::deque<std::string> live;
    auto close_oldest = [&] {
      grpc::ClientContext context;
      v1::DeleteSecureChannelRequest request;
      request.set_address(live.front());
      v1::DeleteSecureChannelResponse response;
      if (!channels->DeleteSecureChannel(&context, request, &response).ok()) ++churn_failed;
      live.pop_front();
    };
    while (!stop) {
      std::string address = veil.OpenChannel();
      if (address.empty()) {
        ++churn_failed;
      } else {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        v1::RequestRequest request;
        request.mutable_message()->set_route("/service/" + address + "/service/echoer");
        request.mutable_message()->set_payload("churn");
        v1::RequestResponse response;
        if (!messaging->Request(&context, request, &response).ok() ||
            response.reply().payload() != "churn") {
          ++churn_failed;
        }
        live.push_back(address);
        ++opened;
      }
      while (live.size() > 50) close_oldest();
      open_now = live.size();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    while (!live.empty()) close_oldest();
  });

  VeildProcess* daemons[3] = {veil.hub.get(), veil.bob.get(), veil.alice.get()};
  std::vector<SoakSample> samples;
  double cpu_before[3];
  for (int d = 0; d < 3; ++d) cpu_before[d] = daemons[d]->cpu_seconds();
  uint64_t delivered_before = sink.messages();
  const auto start = Clock::now();
  auto last = start;
  for (int tick = 1; Seconds(Clock::now() - start) < soak_seconds; ++tick) {
    std::this_thread::sleep_until(start + std::chrono::seconds(tick));
    const auto now = Clock::now();
    const double dt = Seconds(now - last);
    last = now;
    SoakSample s;
    s.t = Seconds(now - start);
    for (int d = 0; d < 3; ++d) {
      s.rss_kib[d] = daemons[d]->rss_kib();
      s.fds[d] = daemons[d]->open_fds();
      const double cpu = daemons[d]->cpu_seconds();
      s.cpu_pct[d] = 100 * (cpu - cpu_before[d]) / dt;
      cpu_before[d] = cpu;
    }
    const uint64_t delivered = sink.messages();
    s.delivered_per_s = static_cast<double>(delivered - delivered_before) / dt;
    delivered_before = delivered;
    s.channels_opened = opened, s.channels_open = open_now, s.refused = refused;
    samples.push_back(s);
    if (tick % 60 == 0) {
      std::fprintf(stderr,
                   "  %4.0f s: %.0f/s delivered; RSS hub %zu bob %zu alice %zu KiB; fds %zu %zu "
                   "%zu; %lu channels opened\n",
                   s.t, s.delivered_per_s, s.rss_kib[0], s.rss_kib[1], s.rss_kib[2], s.fds[0],
                   s.fds[1], s.fds[2], (unsigned long)s.channels_opened);
    }
  }
  stop = true;
  cv.notify_all();
  sender.join();
  churn.join();
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::seconds(60), [&] { return outstanding == 0; });
  }
  // Everything taken must arrive.
  const uint64_t expected = sent - refused;
  for (int i = 0; i < 600 && sink.messages() - sink_start < expected; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const uint64_t arrived = sink.messages() - sink_start;
  src.Close();
  results.join();

  if (!csv_path.empty()) {
    std::ofstream csv(csv_path);
    csv << "t_s,hub_rss_kib,bob_rss_kib,alice_rss_kib,hub_fds,bob_fds,alice_fds,hub_cpu_pct,"
           "bob_cpu_pct,alice_cpu_pct,delivered_per_s,channels_opened,channels_open,refused\n";
    for (const auto& s : samples) {
      csv << s.t << "," << s.rss_kib[0] << "," << s.rss_kib[1] << "," << s.rss_kib[2] << ","
          << s.fds[0] << "," << s.fds[1] << "," << s.fds[2] << "," << s.cpu_pct[0] << ","
          << s.cpu_pct[1] << "," << s.cpu_pct[2] << "," << s.delivered_per_s << ","
          << s.channels_opened << "," << s.channels_open << "," << s.refused << "\n";
    }
    std::printf("samples: %s\n", csv_path.c_str());
  }
  bool ok = arrived == expected && churn_failed == 0;
  std::printf("sent %lu, refused at the sender %lu, arrived %lu%s\n", (unsigned long)sent.load(),
              (unsigned long)refused.load(), (unsigned long)arrived,
              arrived == expected ? " (none lost)" : " (LOST SOME)");
  std::printf("channels opened and closed: %lu (%lu failures)\n", (unsigned long)opened.load(),
              (unsigned long)churn_failed.load());
  // The curves after a warm-up (the first tenth, at least 30 s): the median of the first and
  // the last sixth of the rest. Shorter runs are reported but not judged.
  const size_t n = samples.size();
  const size_t warm = std::max<size_t>(30, n / 10);
  if (n < warm + 60) {
    std::printf("too short to judge the curves (%zu s; at least %zu s)\n", n, warm + 60);
    return ok ? 0 : 1;
  }
  const size_t sixth = (n - warm) / 6;
  const size_t a0 = warm, a1 = warm + sixth, b0 = n - sixth, b1 = n;
  const char* names[3] = {"hub", "bob", "alice"};
  std::printf(
      "| daemon | RSS after warm-up | RSS at the end | fds (min-max) | CPU after warm-up | "
      "CPU at the end |\n|---|---|---|---|---|---|\n");
  for (int d = 0; d < 3; ++d) {
    const double rss_a =
        MedianOf(samples, a0, a1, [&](const SoakSample& s) { return double(s.rss_kib[d]); });
    const double rss_b =
        MedianOf(samples, b0, b1, [&](const SoakSample& s) { return double(s.rss_kib[d]); });
    const double cpu_a =
        MedianOf(samples, a0, a1, [&](const SoakSample& s) { return s.cpu_pct[d]; });
    const double cpu_b =
        MedianOf(samples, b0, b1, [&](const SoakSample& s) { return s.cpu_pct[d]; });
    size_t fd_min = SIZE_MAX, fd_max = 0;
    for (size_t i = warm; i < n; ++i) {
      fd_min = std::min(fd_min, samples[i].fds[d]);
      fd_max = std::max(fd_max, samples[i].fds[d]);
    }
    // Flat: RSS within 10 % (or 2 MiB), fds within 4, CPU within 25 % (or 5 points).
    const bool rss_flat = rss_b - rss_a <= std::max(0.10 * rss_a, 2048.0);
    const bool fds_flat = fd_max - fd_min <= 4;
    const bool cpu_flat = std::abs(cpu_b - cpu_a) <= std::max(0.25 * cpu_a, 5.0);
    ok = ok && rss_flat && fds_flat && cpu_flat;
    std::printf("| %s | %.1f MiB | %.1f MiB%s | %zu-%zu%s | %.0f %% | %.0f %%%s |\n", names[d],
                rss_a / 1024, rss_b / 1024, rss_flat ? "" : " (GREW)", fd_min, fd_max,
                fds_flat ? "" : " (GREW)", cpu_a, cpu_b, cpu_flat ? "" : " (MOVED)");
  }
  std::printf("%s\n", ok ? "flat: nothing grew, nothing lost" : "NOT FLAT, or something lost");
  return ok ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// The gRPC floor: a bare echo server (this binary, run as `e2e_bench --grpc-echo-server PATH`)

class BareEcho final : public grpc::ServerGenericBidiReactor {
 public:
  BareEcho() { StartRead(&buffer_); }
  void OnReadDone(bool ok) override {
    if (ok)
      StartWrite(&buffer_);
    else
      Finish(grpc::Status::OK);
  }
  void OnWriteDone(bool ok) override {
    if (ok)
      StartRead(&buffer_);
    else
      Finish(grpc::Status::OK);
  }
  void OnDone() override { delete this; }

 private:
  grpc::ByteBuffer buffer_;
};

class BareEchoService final : public grpc::CallbackGenericService {
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext*) override {
    return new BareEcho;
  }
};

int RunBareEchoServer(const std::string& path) {
  BareEchoService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + path, grpc::InsecureServerCredentials());
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) return 1;
  server->Wait();  // until SIGTERM ends the process
  return 0;
}

// Round trips of 64 B through the bare server, two per sample: the four app <-> server
// crossings of a veil echo (app -> sidecar -> echoer app and back), without veil.
Latency GrpcFloorEcho(const std::string& path, int n) {
  auto channel = grpc::CreateChannel("unix:" + path, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::cerr << "grpc floor: the bare echo server did not come up\n";
    return {};
  }
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel.get(),
          grpc::internal::RpcMethod("/bench.Bare/Echo", nullptr,
                                    grpc::internal::RpcMethod::BIDI_STREAMING),
          &context));
  grpc::Slice slice(std::string(64, 'e'));
  grpc::ByteBuffer out(&slice, 1), in;
  std::vector<double> samples;
  for (int i = 0; i < n + n / 10; ++i) {
    auto t0 = Clock::now();
    if (!stream->Write(out) || !stream->Read(&in) || !stream->Write(out) || !stream->Read(&in)) {
      std::cerr << "grpc floor: the stream broke\n";
      return {};
    }
    if (i >= n / 10) samples.push_back(Seconds(Clock::now() - t0) * 1e6);  // after a warm-up
  }
  stream->WritesDone();
  context.TryCancel();
  return Percentiles(std::move(samples));
}

// What a data plane that is not gRPC could reach: the same four crossings over a plain Unix
// socket to an echo server in another process (this binary, `--unix-echo-server PATH`), 64 B
// messages with a 4-byte length, as the peers frame theirs.
int RunUnixEchoServer(const std::string& path) {
  int listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  ::unlink(path.c_str());
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 8) != 0) {
    return 1;
  }
  for (;;) {  // until SIGTERM ends the process
    int fd = ::accept(listener, nullptr, nullptr);
    if (fd < 0) continue;
    std::thread([fd] {
      std::string buf(4 + 64, '\0');
      while (ReadFull(fd, buf.data(), buf.size()) && WriteFull(fd, buf.data(), buf.size())) {
      }
      ::close(fd);
    }).detach();
  }
}

Latency UnixFloorEcho(const std::string& path, int n) {
  int fd = -1;
  for (int attempt = 0; attempt < 400 && fd < 0; ++attempt) {
    fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd);
      fd = -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  }
  if (fd < 0) {
    std::cerr << "unix floor: the echo server did not come up\n";
    return {};
  }
  std::string msg(4 + 64, 'e');
  uint32_t len = htonl(64);
  std::memcpy(msg.data(), &len, 4);
  std::string back(msg.size(), '\0');
  std::vector<double> samples;
  for (int i = 0; i < n + n / 10; ++i) {
    auto t0 = Clock::now();
    bool ok = true;
    for (int leg = 0; leg < 2 && ok; ++leg) {
      ok = WriteFull(fd, msg.data(), msg.size()) && ReadFull(fd, back.data(), back.size());
    }
    if (!ok) break;
    if (i >= n / 10) samples.push_back(Seconds(Clock::now() - t0) * 1e6);  // after a warm-up
  }
  ::close(fd);
  return Percentiles(std::move(samples));
}

// The two floors, each against its server in a child process (this binary) kept for the run.
Latency MeasureGrpcFloor(const TempDir& dir, int n) {
  const std::string socket = dir.path() + "/bare.sock";
  Child bare({SelfPath(), "--grpc-echo-server", socket}, dir.path() + "/bare.log");
  return GrpcFloorEcho(socket, n);
}

Latency MeasureUnixFloor(const TempDir& dir, int n) {
  const std::string socket = dir.path() + "/plain.sock";
  Child plain({SelfPath(), "--unix-echo-server", socket}, dir.path() + "/plain.log");
  return UnixFloorEcho(socket, n);
}

// ---------------------------------------------------------------------------------------------
// Printing

void Row(const std::string& what, const std::string& veil, const std::string& peer,
         const std::string& plain, const std::string& ratio) {
  std::printf("| %-44s | %16s | %16s | %16s | %7s |\n", what.c_str(), veil.c_str(), peer.c_str(),
              plain.c_str(), ratio.c_str());
}

std::string Fmt(double v, const char* unit, int decimals = 0) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f %s", decimals, v, unit);
  return buf;
}

std::string Ratio(double a, double b) { return b > 0 ? Fmt(a / b, "x", 2) : "-"; }

// An authority beside `veil`'s nodes, Bob and Alice enrolled with it, and a listener of Bob's
// admitting `subject.role == "bench"`; `route` gets the way to it (Bob's listener route, but
// cred_listener).
bool CredentialedListener(Veil& veil, std::string& route) {
  static VeildProcess* authority = nullptr;  // lives as long as the bench
  authority = new VeildProcess({"--authority", "--tcp-listen", "127.0.0.1:0"});
  if (!authority->Start()) {
    std::cerr << "authority: " << authority->log();
    return false;
  }
  auto api = Connect(authority->api_target());
  std::string authority_route;
  {
    grpc::ClientContext context;
    v1::Node node;
    if (!v1::NodeService::NewStub(api)->GetNode(&context, v1::GetNodeRequest(), &node).ok() ||
        node.listeners_size() == 0) {
      std::cerr << "the authority has no listener\n";
      return false;
    }
    authority_route = node.listeners(0).route() + "/service/authority";
  }
  for (const auto& member : {veil.bob_api, veil.alice_api}) {
    v1::CreateTicketRequest ticket_request;
    (*ticket_request.mutable_attributes())["role"] = "bench";
    ticket_request.set_route(authority_route);
    v1::Ticket ticket;
    grpc::ClientContext c1;
    grpc::Status s = v1::AuthorityService::NewStub(api)->CreateTicket(&c1, ticket_request, &ticket);
    v1::EnrollRequest enroll;
    enroll.set_token(ticket.token());
    v1::Membership membership;
    grpc::ClientContext c2;
    if (s.ok()) s = v1::AuthorityService::NewStub(member)->Enroll(&c2, enroll, &membership);
    if (!s.ok()) {
      std::cerr << "enroll: " << s.error_message() << "\n";
      return false;
    }
  }
  v1::CreateSecureChannelListenerRequest listener;
  listener.set_address("cred_listener");
  listener.mutable_trust_policy()->set_expression(R"(subject.role == "bench")");
  v1::SecureChannelListener created;
  grpc::ClientContext c3;
  grpc::Status s = v1::SecureChannelService::NewStub(veil.bob_api)
                       ->CreateSecureChannelListener(&c3, listener, &created);
  if (!s.ok()) {
    std::cerr << "listener: " << s.error_message() << "\n";
    return false;
  }
  route = veil.listener_route.substr(0, veil.listener_route.rfind('/') + 1) + "cred_listener";
  return true;
}

int Main() {
  if (sodium_init() < 0) return 1;
  sdk::TuneMalloc();  // as every app should (docs/performance.md)
  const double seconds = quick ? 1.0 : 3.0;
  const int echoes = quick ? 500 : 3000;
  const int channels_n = quick ? 200 : 1000;
  TempDir dir;
  if (!Run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
           "-subj /CN=bench -keyout " +
           dir.path() + "/key.pem -out " + dir.path() + "/cert.pem >/dev/null 2>&1")) {
    std::cerr << "e2e_bench: openssl could not make a certificate\n";
    return 1;
  }
  Veil veil;
  if (!veil.Start(echo_only || only_size != 0 ? only_transport : "tcp")) return 1;
  std::string channel = veil.OpenChannel();
  if (channel.empty()) return 1;
  const std::string to_sink = "/service/" + channel + "/service/sink";
  const std::string to_echoer = "/service/" + channel + "/service/echoer";
  if (echo_only || only_size > 0) {
    // Profiling runs: apps on the serve socket, or with --grpc on gRPC Serve calls.
    const bool socket = !grpc_only;
    App sink(veil.Bob(socket), "sink", false);
    App echoer(veil.Bob(socket), "echoer", true);
    std::fprintf(stderr, "pids: hub %d bob %d alice %d bench %d\n", veil.hub->pid(),
                 veil.bob->pid(), veil.alice->pid(), ::getpid());
    if (only_size > 0) {
      Throughput v = VeilThroughput(veil.Alice(socket), to_sink, sink, only_size, seconds * 3);
      std::printf("veil %zu B (%s): %.0f messages/s, %.1f MB/s (%lu refused)\n", only_size,
                  socket ? "serve socket" : "gRPC Serve", v.per_second(), v.mb_per_second(),
                  (unsigned long)v.refused);
      return 0;
    }
    Latency s = VeilStreamEcho(veil.Alice(socket), to_echoer, echoes);
    {
      App local(veil.Alice(socket), "local_echoer", true);
      Latency l = VeilStreamEcho(veil.Alice(socket), "/service/local_echoer", echoes);
      std::printf(
          "local echo (app -> sidecar -> app and back, no network): p50 %.0f us p99 %.0f us\n",
          l.p50_us, l.p99_us);
    }
    Latency g = MeasureGrpcFloor(dir, echoes);
    std::printf("gRPC alone, the same 4 crossings (bare echo server): p50 %.0f us p99 %.0f us\n",
                g.p50_us, g.p99_us);
    Latency u = MeasureUnixFloor(dir, echoes);
    std::printf("plain Unix socket, the same 4 crossings: p50 %.0f us p99 %.0f us\n", u.p50_us,
                u.p99_us);
    Latency r = VeilEcho(veil.alice_api, to_echoer, echoes);
    std::printf(
        "veil echo 64 B (%s): Serve stream p50 %.0f us p99 %.0f us; Request RPC p50 %.0f us p99 "
        "%.0f us\n",
        socket ? "serve socket" : "gRPC Serve", s.p50_us, s.p99_us, r.p50_us, r.p99_us);
    return 0;
  }

  PeerServer peer_sink(false), peer_echo_server(true);
  PeerPath tls_sink(dir, peer_sink.port(), true, "tls-sink");
  PeerPath tls_echo(dir, peer_echo_server.port(), true, "tls-echo");
  PeerServer plain_sink(false), plain_echo(true);
  PeerPath tcp_sink(dir, plain_sink.port(), false, "tcp-sink");
  PeerPath tcp_echo(dir, plain_echo.port(), false, "tcp-echo");

  // Handshakes and memory on a topology of their own, first and fresh (after throughput runs,
  // freed buffers stay in the heap by design — see TuneMalloc — and would hide what idle
  // channels and relays cost), then stopped: its 1,000 relays heartbeat to the hub and would
  // load the daemons the throughput and echo runs measure.
  size_t bob_before = 0, alice_before = 0, bob_after = 0, alice_after = 0;
  size_t hub_before = 0, hub_after = 0;
  size_t portal_bob_before = 0, portal_bob_after = 0, portal_alice_before = 0,
         portal_alice_after = 0;
  uint64_t portal_sessions = 0;
  std::atomic<int> opened{0}, failed{0}, relays_ok{0};
  double handshake_s = 0;
  std::atomic<int> cred_opened{0}, cred_failed{0};
  double cred_handshake_s = 0;
  std::string cred_route;
  {
    Veil fresh;
    if (!fresh.Start()) return 1;
    // Secure channels per second (8 concurrent openers), and RSS per idle channel on Bob's sidecar.
    // First a tenth as many channels (100) the same way, not counted: what the first ones cost once
    // (the threads gRPC and the routers start under 8 concurrent callers, their stacks and malloc
    // arenas) is not a cost per channel.
    {
      std::vector<std::thread> warm;
      for (int t = 0; t < 8; ++t) {
        warm.emplace_back([&] {
          for (int i = 0; i < channels_n / 80; ++i) (void)fresh.OpenChannel();
        });
      }
      for (auto& t : warm) t.join();
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    bob_before = fresh.bob->rss_kib(), alice_before = fresh.alice->rss_kib();
    auto start = Clock::now();
    std::vector<std::thread> openers;
    for (int t = 0; t < 8; ++t) {
      openers.emplace_back([&] {
        while (opened + failed < channels_n) {
          if (fresh.OpenChannel().empty())
            ++failed;
          else
            ++opened;
        }
      });
    }
    for (auto& t : openers) t.join();
    handshake_s = Seconds(Clock::now() - start);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    bob_after = fresh.bob->rss_kib(), alice_after = fresh.alice->rss_kib();

    // RSS per idle relay on the hub: relays from Bob's sidecar, 8 at once.
    hub_before = fresh.hub->rss_kib();
    std::atomic<int> next{0};
    std::vector<std::thread> creators;
    for (int t = 0; t < 8; ++t) {
      creators.emplace_back([&] {
        auto stub = v1::RelayService::NewStub(fresh.bob_api);
        for (int i = next++; i < channels_n; i = next++) {
          grpc::ClientContext context;
          v1::CreateRelayRequest request;
          request.set_hub_route(fresh.hub_route);
          std::string name = "r";
          name += std::to_string(i);  // (not "r" + ...: GCC 12 warns wrongly at -O3)
          request.set_name(name);
          v1::Relay relay;
          if (stub->CreateRelay(&context, request, &relay).ok()) ++relays_ok;
        }
      });
    }
    for (auto& t : creators) t.join();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    hub_after = fresh.hub->rss_kib();

    // RSS per idle portal session, on each side: channels_n connections through one portal.
    PeerServer idle_target(true);
    uint16_t inlet = fresh.Portal("idle", idle_target.port());
    portal_bob_before = fresh.bob->rss_kib(), portal_alice_before = fresh.alice->rss_kib();
    std::vector<int> idle;
    for (int i = 0; i < channels_n && inlet != 0; ++i) idle.push_back(ConnectTcp(inlet));
    for (int i = 0; i < 200 && fresh.OutletSessions("idle") < idle.size(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    portal_sessions = fresh.OutletSessions("idle");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    portal_bob_after = fresh.bob->rss_kib(), portal_alice_after = fresh.alice->rss_kib();
    for (int fd : idle) ::close(fd);

    // The same with credentials (docs/credentials.md): both sides members of an authority,
    // Bob's listener admitting by attribute; each handshake carries and checks a credential
    // each way. A quarter as many, the same 8 at once.
    if (!CredentialedListener(fresh, cred_route)) return 1;
    auto cred_start = Clock::now();
    std::vector<std::thread> cred_openers;
    for (int t = 0; t < 8; ++t) {
      cred_openers.emplace_back([&] {
        while (cred_opened + cred_failed < channels_n / 4) {
          if (fresh.OpenChannel(cred_route).empty())
            ++cred_failed;
          else
            ++cred_opened;
        }
      });
    }
    for (auto& t : cred_openers) t.join();
    cred_handshake_s = Seconds(Clock::now() - cred_start);
  }
  // The rows of the fresh topology's figures (idle memory, handshakes).
  auto print_idle = [&] {
    Row("RSS per idle portal session, outlet sidecar",
        Fmt(double(portal_bob_after - std::min(portal_bob_after, portal_bob_before)) /
                std::max<uint64_t>(1, portal_sessions),
            "KiB", 1),
        "-", "-", "-");
    Row("RSS per idle portal session, inlet sidecar",
        Fmt(double(portal_alice_after - std::min(portal_alice_after, portal_alice_before)) /
                std::max<uint64_t>(1, portal_sessions),
            "KiB", 1),
        "-", "-", "-");
    if (portal_sessions < static_cast<uint64_t>(channels_n)) {
      std::printf("  (only %lu of %d idle portal sessions opened)\n",
                  (unsigned long)portal_sessions, channels_n);
    }

    Row("secure channels established / s (8 at once)", Fmt(opened / handshake_s, "/s"), "-", "-",
        "-");
    // Target: with credentials at least 0.8x of without.
    Row("  the same with credentials (vs without)", Fmt(cred_opened / cred_handshake_s, "/s"),
        Fmt(opened / handshake_s, "/s"), "-",
        Ratio(cred_opened / cred_handshake_s, opened / handshake_s));
    if (cred_failed > 0) std::printf("  (%d credentialed channels failed)\n", cred_failed.load());
    Row("RSS per idle channel, responder sidecar",
        Fmt(double(bob_after - std::min(bob_after, bob_before)) / std::max(1, opened.load()), "KiB",
            1),
        "-", "-", "-");
    Row("RSS per idle channel, initiator sidecar",
        Fmt(double(alice_after - std::min(alice_after, alice_before)) / std::max(1, opened.load()),
            "KiB", 1),
        "-", "-", "-");
    Row("RSS per idle relay, hub",
        Fmt(double(hub_after - std::min(hub_after, hub_before)) / std::max(1, relays_ok.load()),
            "KiB", 1),
        "-", "-", "-");
    if (failed > 0 || relays_ok < channels_n) {
      std::printf("  (%d channels and %d relays could not be made)\n", failed.load(),
                  channels_n - relays_ok.load());
    }
  };
  if (idle_only) {
    Row("case", "veil", "-", "-", "-");
    print_idle();
    return 0;
  }
  std::printf(
      "veil end to end through a hub, beside stunnel (TLS 1.3 ChaCha20) + socat and plain TCP + "
      "socat\n");
  std::printf("2 processes per path end, all on this host; %g s per throughput run\n\n", seconds);
  Row("case", "veil", "stunnel path", "plain TCP", "veil/stunnel");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(18, '-').c_str(),
              std::string(18, '-').c_str(), std::string(18, '-').c_str(),
              std::string(9, '-').c_str());
  // Bob's apps: on the serve socket (the table's veil figures) and on gRPC Serve calls.
  App sink(veil.Bob(true), "sink", false);
  App echoer(veil.Bob(true), "echoer", true);
  App grpc_sink(veil.Bob(false), "grpc_sink", false);
  App grpc_echoer(veil.Bob(false), "grpc_echoer", true);
  const std::string to_grpc_sink = "/service/" + channel + "/service/grpc_sink";
  const std::string to_grpc_echoer = "/service/" + channel + "/service/grpc_echoer";
  std::map<size_t, Throughput> stunnel_throughput;
  for (size_t size : {size_t{64}, size_t{1024}, size_t{65536}}) {
    std::fprintf(stderr, "  measuring %zu B: veil...", size);
    Throughput v = VeilThroughput(veil.Alice(true), to_sink, sink, size, seconds);
    std::fprintf(stderr, " veil on gRPC...");
    Throughput vg = VeilThroughput(veil.Alice(false), to_grpc_sink, grpc_sink, size, seconds);
    std::fprintf(stderr, " stunnel...");
    Throughput p = PeerThroughput(tls_sink.entry, peer_sink, size, seconds);
    stunnel_throughput[size] = p;
    std::fprintf(stderr, " tcp...\n");
    Throughput t = PeerThroughput(tcp_sink.entry, plain_sink, size, seconds);
    std::string label = size == 64 ? "64 B" : size == 1024 ? "1 KiB" : "64 KiB";
    Row("throughput " + label + ", messages/s", Fmt(v.per_second(), "/s"),
        Fmt(p.per_second(), "/s"), Fmt(t.per_second(), "/s"),
        Ratio(v.per_second(), p.per_second()));
    Row("throughput " + label + ", MB/s", Fmt(v.mb_per_second(), "MB/s", 1),
        Fmt(p.mb_per_second(), "MB/s", 1), Fmt(t.mb_per_second(), "MB/s", 1),
        Ratio(v.mb_per_second(), p.mb_per_second()));
    if (size == 64) {
      Row("  the same, apps on gRPC Serve, messages/s", Fmt(vg.per_second(), "/s"),
          Fmt(p.per_second(), "/s"), Fmt(t.per_second(), "/s"),
          Ratio(vg.per_second(), p.per_second()));
    } else {
      Row("  the same, apps on gRPC Serve, MB/s", Fmt(vg.mb_per_second(), "MB/s", 1),
          Fmt(p.mb_per_second(), "MB/s", 1), Fmt(t.mb_per_second(), "MB/s", 1),
          Ratio(vg.mb_per_second(), p.mb_per_second()));
    }
    if (v.refused + vg.refused > 0) {
      std::printf("  (veil: %lu messages refused by backpressure and not counted)\n",
                  (unsigned long)(v.refused + vg.refused));
    }
  }
  Latency lv = VeilStreamEcho(veil.Alice(true), to_echoer, echoes);
  Latency lvg = VeilStreamEcho(veil.Alice(false), to_grpc_echoer, echoes);
  Latency lr = VeilEcho(veil.alice_api, to_echoer, echoes);
  Latency ll, llg;
  {
    App local(veil.Alice(true), "local_echoer", true);
    ll = VeilStreamEcho(veil.Alice(true), "/service/local_echoer", echoes);
  }
  {
    App local(veil.Alice(false), "local_grpc_echoer", true);
    llg = VeilStreamEcho(veil.Alice(false), "/service/local_grpc_echoer", echoes);
  }
  Latency lp = PeerEcho(tls_echo.entry, echoes);
  Latency lt = PeerEcho(tcp_echo.entry, echoes);
  Latency lg = MeasureGrpcFloor(dir, echoes);
  Latency lu = MeasureUnixFloor(dir, echoes);
  Row("echo round trip 64 B, p50", Fmt(lv.p50_us, "us"), Fmt(lp.p50_us, "us"), Fmt(lt.p50_us, "us"),
      Ratio(lv.p50_us, lp.p50_us));
  Row("echo round trip 64 B, p99", Fmt(lv.p99_us, "us"), Fmt(lp.p99_us, "us"), Fmt(lt.p99_us, "us"),
      Ratio(lv.p99_us, lp.p99_us));
  Row("  the same, apps on gRPC Serve, p50", Fmt(lvg.p50_us, "us"), Fmt(lp.p50_us, "us"),
      Fmt(lt.p50_us, "us"), Ratio(lvg.p50_us, lp.p50_us));
  Row("  the same, apps on gRPC Serve, p99", Fmt(lvg.p99_us, "us"), Fmt(lp.p99_us, "us"),
      Fmt(lt.p99_us, "us"), Ratio(lvg.p99_us, lp.p99_us));
  Row("echo 64 B app>sidecar>app, no network, p50", Fmt(ll.p50_us, "us"), "-", "-", "-");
  Row("  the same, app on gRPC Serve, p50", Fmt(llg.p50_us, "us"), "-", "-", "-");
  Row("floor: the 4 gRPC crossings alone, p50", Fmt(lg.p50_us, "us"), Fmt(lp.p50_us, "us"),
      Fmt(lt.p50_us, "us"), Ratio(lg.p50_us, lp.p50_us));
  Row("floor: the 4 gRPC crossings alone, p99", Fmt(lg.p99_us, "us"), Fmt(lp.p99_us, "us"),
      Fmt(lt.p99_us, "us"), Ratio(lg.p99_us, lp.p99_us));
  Row("same 4 crossings on a plain Unix socket, p50", Fmt(lu.p50_us, "us"), Fmt(lp.p50_us, "us"),
      Fmt(lt.p50_us, "us"), Ratio(lu.p50_us, lp.p50_us));
  Row("echo 64 B by Request RPC (a call each), p50", Fmt(lr.p50_us, "us"), Fmt(lp.p50_us, "us"),
      Fmt(lt.p50_us, "us"), Ratio(lr.p50_us, lp.p50_us));
  Row("echo 64 B by Request RPC (a call each), p99", Fmt(lr.p99_us, "us"), Fmt(lp.p99_us, "us"),
      Fmt(lt.p99_us, "us"), Ratio(lr.p99_us, lp.p99_us));

  // Portals: the peers' own TCP traffic, through inlet -> hub -> outlet instead of stunnel.
  PeerServer portal_sink(false), portal_echo(true);
  const uint16_t sink_in = veil.Portal("portal_sink", portal_sink.port());
  const uint16_t echo_in = veil.Portal("portal_echo", portal_echo.port());
  if (sink_in != 0 && echo_in != 0) {
    for (size_t size : {size_t{1024}, size_t{65536}}) {
      std::fprintf(stderr, "  measuring the portal, %zu B...\n", size);
      Throughput pt = PeerThroughput(sink_in, portal_sink, size, seconds);
      const Throughput& p = stunnel_throughput[size];
      Row(std::string("portal throughput, ") + (size == 1024 ? "1 KiB" : "64 KiB") +
              " writes, MB/s",
          Fmt(pt.mb_per_second(), "MB/s", 1), Fmt(p.mb_per_second(), "MB/s", 1), "-",
          Ratio(pt.mb_per_second(), p.mb_per_second()));
    }
    Latency lpe = PeerEcho(echo_in, echoes);
    Row("portal request/response 64 B, p50", Fmt(lpe.p50_us, "us"), Fmt(lp.p50_us, "us"),
        Fmt(lt.p50_us, "us"), Ratio(lpe.p50_us, lp.p50_us));
    Row("portal request/response 64 B, p99", Fmt(lpe.p99_us, "us"), Fmt(lp.p99_us, "us"),
        Fmt(lt.p99_us, "us"), Ratio(lpe.p99_us, lp.p99_us));
  }
  print_idle();

  // The same seed path with the hub, Bob's relay and Alice's channel over each transport, each
  // on its own topology measured the same way, TCP among them (the baseline of the ratios):
  // WebSocket should stay within 10 % of TCP at 64 KiB, a Unix socket ahead of TCP loopback.
  std::printf(
      "\nthe seed path over each transport (hub, relay and channel on it; apps on the serve "
      "socket; a topology each, measured in turns)\n\n");
  Row("case", "veil", "veil over TCP", "-", "x/TCP");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(18, '-').c_str(),
              std::string(18, '-').c_str(), std::string(18, '-').c_str(),
              std::string(9, '-').c_str());
  // All three topologies up at once (an idle one costs nothing), then their throughput in
  // turns, TCP, Unix socket, WebSocket, three rounds of a third of the time each: the machine's
  // drift over the minute this takes falls on each transport alike, not on whichever came last.
  struct Over {
    std::string transport;
    Veil veil;
    std::string channel;
    std::unique_ptr<App> sink, echoer;
    Throughput sum;
  };
  std::vector<std::unique_ptr<Over>> overs;
  for (const char* transport : {"tcp", "uds", "ws"}) {
    auto over = std::make_unique<Over>();
    over->transport = transport;
    if (!over->veil.Start(transport)) return 1;
    over->channel = over->veil.OpenChannel();
    if (over->channel.empty()) return 1;
    over->sink = std::make_unique<App>(over->veil.Bob(true), "sink", false);
    over->echoer = std::make_unique<App>(over->veil.Bob(true), "echoer", true);
    overs.push_back(std::move(over));
  }
  for (int round = 0; round < 3; ++round) {
    for (auto& over : overs) {
      std::fprintf(stderr, "  measuring the seed path over %s (round %d of 3)...\n",
                   over->transport.c_str(), round + 1);
      Throughput o =
          VeilThroughput(over->veil.Alice(true), "/service/" + over->channel + "/service/sink",
                         *over->sink, 65536, seconds / 3);
      over->sum.messages += o.messages;
      over->sum.bytes += o.bytes;
      over->sum.seconds += o.seconds;
      over->sum.refused += o.refused;
    }
  }
  const double tcp_mb = overs[0]->sum.mb_per_second();
  double tcp_p50 = 0;
  for (auto& over : overs) {
    Latency oe = VeilStreamEcho(over->veil.Alice(true),
                                "/service/" + over->channel + "/service/echoer", echoes);
    const std::string& t = over->transport;
    if (t == "tcp") {
      tcp_p50 = oe.p50_us;
      continue;
    }
    const double mb = over->sum.mb_per_second();
    const std::string name = t == "ws" ? "WebSocket" : "Unix socket";
    Row("over " + name + ": throughput 64 KiB, MB/s", Fmt(mb, "MB/s", 1), Fmt(tcp_mb, "MB/s", 1),
        "-", Ratio(mb, tcp_mb));
    Row("over " + name + ": echo round trip 64 B, p50", Fmt(oe.p50_us, "us"), Fmt(tcp_p50, "us"),
        "-", Ratio(oe.p50_us, tcp_p50));
  }
  return 0;
}

}  // namespace
}  // namespace veil::bench

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--grpc-echo-server") {
    return veil::bench::RunBareEchoServer(argv[2]);
  }
  if (argc == 3 && std::string(argv[1]) == "--unix-echo-server") {
    return veil::bench::RunUnixEchoServer(argv[2]);
  }
  bool soak = false;
  std::string csv;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--soak") soak = true;
    if (std::string(argv[i]) == "--csv" && i + 1 < argc) csv = argv[++i];
    if (std::string(argv[i]) == "--quick") veil::bench::quick = true;
    if (std::string(argv[i]) == "--echo-only") veil::bench::echo_only = true;
    if (std::string(argv[i]) == "--grpc") veil::bench::grpc_only = true;
    if (std::string(argv[i]) == "--idle-only") veil::bench::idle_only = true;
    if (std::string(argv[i]) == "--veil-only" && i + 1 < argc)
      veil::bench::only_size = std::stoul(argv[++i]);
    if (std::string(argv[i]) == "--transport" && i + 1 < argc)
      veil::bench::only_transport = argv[++i];
  }
  ::signal(SIGPIPE, SIG_IGN);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (soak) {
    if (sodium_init() < 0) return 1;
    veil::sdk::TuneMalloc();
    return veil::bench::Soak(csv);
  }
  return veil::bench::Main();
}
