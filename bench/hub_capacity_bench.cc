// Hub scale-out, measured (issue 21): N relays across R hub replicas sharing one real local etcd
// (Debian's etcd-server), registered by real sidecars, in one run:
//
//   registration   relays registered per second (each: a secure channel to a replica, the
//                  registration, the directory's claim transaction in etcd), and how long until
//                  every replica's watched view holds all of them
//   memory         each replica's RSS growth per relay it hosts and per relay in the directory
//                  (every replica keeps the whole view), and etcd's
//   lookup         a new channel to a relay through a replica that does not host it (directory
//                  lookup in memory, one mesh hop) beside one through the replica that does
//   failover       the replica holding F relays (registered through a balancer, a Service's
//                  stand-in) is killed; how long until all F are registered on a live one, and
//                  until a new channel to one of them works
//
// Relay owners are S sidecars (the relays are split among them, each registering 8 at a time);
// one more sidecar is Alice. The
// sidecars' relay heartbeat is 30 s (100,000 sessions at the default 5 s would be 20,000
// heartbeats a second on these two cores, beside the measurement). Usage:
//   hub_capacity_bench [--relays N] [--failover F] [--sidecars S] [--samples K] [--quick]
// (--quick: 600 relays, 150 to fail over, 4 sidecars: the smoke run `make test` does).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/api_client.h"
#include "tests/support/etcd_process.h"
#include "tests/support/metrics_scrape.h"
#include "tests/support/tcp_balancer.h"
#include "tests/support/veild_process.h"

namespace veil::bench {
namespace {

using Clock = std::chrono::steady_clock;
using testing::Connect;
using testing::EtcdProcess;
using testing::Scrape;
using testing::TcpBalancer;
using testing::VeildProcess;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

[[noreturn]] void Fail(const std::string& what) {
  std::cerr << "hub_capacity_bench: " << what << "\n";
  std::exit(1);
}

size_t RssKib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Polls `done` every 20 ms until it holds or `limit` passes.
bool Await(const std::function<bool()>& done, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling metrics
  }
  return true;
}

struct Replica {
  std::unique_ptr<VeildProcess> process;
  std::string route;
  int port = 0;
  size_t rss_before = 0;
};

int Run(size_t relays, size_t failover, size_t sidecars, size_t samples) {
  EtcdProcess etcd;
  if (!etcd.Start()) Fail("etcd did not start: " + etcd.log());
  const size_t etcd_rss_before = RssKib(etcd.pid());
  const std::string big = "1000000";
  std::vector<Replica> replicas(3);
  const char* names[] = {"a", "b", "c"};
  for (size_t r = 0; r < replicas.size(); ++r) {
    replicas[r].process = std::make_unique<VeildProcess>(
        std::vector<std::string>{"--hub",
                                 "--tcp-listen",
                                 "127.0.0.1:0",
                                 "--metrics-listen",
                                 "127.0.0.1:0",
                                 "--hub-directory",
                                 etcd.endpoint(),
                                 "--hub-replica",
                                 names[r],
                                 "--hub-directory-max-names-per-owner",
                                 big,
                                 "--relay-max-per-identity",
                                 "100000",
                                 "--relay-max-per-connection",
                                 "100000",
                                 "--max-channels",
                                 big,
                                 "--max-channels-per-identity",
                                 big,
                                 "--max-handshake-rate",
                                 big,
                                 "--max-pending-handshakes",
                                 big,
                                 "--max-pending-handshakes-per-connection",
                                 big,
                                 "--max-pending-handshakes-per-address",
                                 big});
    if (!replicas[r].process->Start())
      Fail("a hub replica did not start: " + replicas[r].process->log());
    auto api = Connect(replicas[r].process->api_target());
    replicas[r].route = "/tcp/" + testing::TcpListenAddress(api);
    replicas[r].port = std::stoi(replicas[r].route.substr(replicas[r].route.rfind(':') + 1));
    replicas[r].rss_before = replicas[r].process->rss_kib();
  }
  // The failover group reaches the replicas as through a Service: replica a while it lives.
  TcpBalancer service({replicas[0].port, replicas[1].port, replicas[2].port},
                      TcpBalancer::Policy::kFirstLive);

  struct Owner {
    std::unique_ptr<VeildProcess> process;
    std::shared_ptr<grpc::Channel> api;
    std::string route;  // where its relays go
    size_t first = 0, count = 0;
  };
  std::vector<Owner> owners(sidecars);
  const size_t failover_owners = std::max<size_t>(1, sidecars * failover / relays);
  for (size_t s = 0; s < sidecars; ++s) {
    Owner& o = owners[s];
    o.process = std::make_unique<VeildProcess>(std::vector<std::string>{
        "--relay-heartbeat", "30", "--max-channels", big, "--max-pending-handshakes", big});
    if (!o.process->Start()) Fail("a sidecar did not start: " + o.process->log());
    o.api = Connect(o.process->api_target());
    if (!testing::CreateListener(o.api, "listener", testing::TrustEveryone()).ok()) {
      Fail("no listener");
    }
    const bool in_failover_group = s < failover_owners;
    const size_t group = in_failover_group ? failover : relays - failover;
    const size_t members = in_failover_group ? failover_owners : sidecars - failover_owners;
    const size_t index = in_failover_group ? s : s - failover_owners;
    o.count = group / members + (index < group % members ? 1 : 0);
    o.first = s == 0 ? 0 : owners[s - 1].first + owners[s - 1].count;
    o.route = in_failover_group ? service.route() : replicas[1 + index % 2].route;
  }

  // Registration: every owner at once, kInFlight CreateRelay calls at a time each (etcd
  // commits concurrent claims together).
  constexpr size_t kInFlight = 8;
  std::atomic<size_t> failed{0};
  const auto reg_start = Clock::now();
  {
    std::vector<std::thread> threads;
    for (Owner& o : owners) {
      for (size_t lane = 0; lane < kInFlight; ++lane) {
        threads.emplace_back([&o, &failed, lane] {
          for (size_t k = o.first + lane; k < o.first + o.count; k += kInFlight) {
            v1::Relay relay;
            grpc::Status s = testing::CreateRelay(o.api, o.route, "r" + std::to_string(k), &relay);
            if (!s.ok()) {
              if (failed.fetch_add(1) < 5)
                std::cerr << "relay r" << k << ": " << s.error_message() << "\n";
            }
          }
        });
      }
    }
    for (auto& t : threads) t.join();
  }
  const double reg_s = Seconds(Clock::now() - reg_start);
  if (failed > 0) Fail(std::to_string(failed.load()) + " registrations failed");
  const auto view_start = Clock::now();
  for (Replica& r : replicas) {
    if (!Await([&] { return Scrape(*r.process, "veil_hub_directory_relays") >= relays; },
               std::chrono::seconds(120))) {
      Fail("a replica's view never held every relay");
    }
  }
  const double view_s = Seconds(Clock::now() - view_start);
  std::this_thread::sleep_for(std::chrono::seconds(2));  // let allocators settle
  std::vector<double> hosted(replicas.size());
  std::vector<size_t> rss_after(replicas.size());
  for (size_t r = 0; r < replicas.size(); ++r) {
    hosted[r] = Scrape(*replicas[r].process, "veil_hub_relays");
    rss_after[r] = replicas[r].process->rss_kib();
  }
  const size_t etcd_rss_after = RssKib(etcd.pid());

  // Lookup: channels to relays hosted on b, through c (the mesh) and through b itself.
  VeildProcess alice_process(std::vector<std::string>{});
  if (!alice_process.Start()) Fail("Alice did not start");
  auto alice = Connect(alice_process.api_target());
  const Owner& on_b = owners[failover_owners];  // its relays are on b
  std::vector<double> via_mesh, direct;
  for (size_t i = 0; i <= samples; ++i) {
    const std::string relay = "r" + std::to_string(on_b.first + (i * 7919) % on_b.count);
    for (int through : {2, 1}) {
      v1::SecureChannel channel;
      const auto t0 = Clock::now();
      grpc::Status s = testing::CreateSecureChannel(
          alice, replicas[through].route + "/service/forward_to_" + relay + "/service/listener",
          testing::TrustEveryone(), &channel);
      const double ms = Seconds(Clock::now() - t0) * 1e3;
      if (!s.ok()) Fail("a channel to " + relay + " failed: " + s.error_message());
      if (i > 0) (through == 2 ? via_mesh : direct).push_back(ms);  // the first opens the link
      grpc::ClientContext ctx;
      v1::DeleteSecureChannelRequest del;
      del.set_address(channel.address());
      v1::DeleteSecureChannelResponse ignored;
      (void)v1::SecureChannelService::NewStub(alice)->DeleteSecureChannel(&ctx, del, &ignored);
    }
  }

  // Failover: kill a, which holds the failover group.
  const double on_a = Scrape(*replicas[0].process, "veil_hub_relays");
  const double b_before = Scrape(*replicas[1].process, "veil_hub_relays");
  const auto killed = Clock::now();
  replicas[0].process->Kill();
  double reach_s = -1;
  const std::string moved = "r" + std::to_string(owners[0].first);
  bool all_moved = Await(
      [&] {
        if (reach_s < 0) {
          v1::SecureChannel channel;
          if (testing::CreateSecureChannel(
                  alice, replicas[2].route + "/service/forward_to_" + moved + "/service/listener",
                  testing::TrustEveryone(), &channel, 2000)
                  .ok()) {
            reach_s = Seconds(Clock::now() - killed);
          }
        }
        return reach_s >= 0 && Scrape(*replicas[1].process, "veil_hub_relays") >= b_before + on_a;
      },
      std::chrono::seconds(300));
  const double failover_s = Seconds(Clock::now() - killed);
  if (!all_moved) Fail("the failover group never moved whole");

  std::printf(
      "\nhub scale-out: %zu relays on 3 replicas (a %.0f, b %.0f, c %.0f), one etcd, %zu "
      "owner sidecars\n",
      relays, hosted[0], hosted[1], hosted[2], sidecars);
  std::printf("| measure | figure |\n|---|---|\n");
  std::printf("| registration rate | %.0f relays/s (%zu in %.1f s) |\n", relays / reg_s, relays,
              reg_s);
  std::printf("| every replica's view complete | %.2f s after the last registration |\n", view_s);
  for (size_t r = 0; r < replicas.size(); ++r) {
    const double growth = static_cast<double>(rss_after[r]) - replicas[r].rss_before;
    std::printf(
        "| replica %s RSS growth | %.0f MiB: %.2f KiB per relay in the directory, %.2f "
        "KiB per hosted relay |\n",
        names[r], growth / 1024, growth / relays, hosted[r] > 0 ? growth / hosted[r] : 0);
  }
  std::printf("| etcd RSS growth | %.0f MiB: %.2f KiB per relay |\n",
              (static_cast<double>(etcd_rss_after) - etcd_rss_before) / 1024,
              (static_cast<double>(etcd_rss_after) - etcd_rss_before) / relays);
  std::printf("| new channel through the replica hosting the relay | p50 %.2f ms, p99 %.2f ms |\n",
              Percentile(direct, 0.5), Percentile(direct, 0.99));
  std::printf(
      "| new channel through another replica (lookup + one mesh hop) | p50 %.2f ms, p99 "
      "%.2f ms |\n",
      Percentile(via_mesh, 0.5), Percentile(via_mesh, 0.99));
  std::printf("| failover of %.0f relays: a new channel to one works | %.2f s after the kill |\n",
              on_a, reach_s);
  std::printf(
      "| failover of %.0f relays: all re-registered on a live replica | %.2f s after the "
      "kill |\n",
      on_a, failover_s);
  return 0;
}

}  // namespace
}  // namespace veil::bench

int main(int argc, char** argv) {
  size_t relays = 100000, failover = 10000, sidecars = 20, samples = 200;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> size_t {
      if (i + 1 >= argc) veil::bench::Fail(arg + " needs a value");
      return std::strtoull(argv[++i], nullptr, 10);
    };
    if (arg == "--relays") {
      relays = value();
    } else if (arg == "--failover") {
      failover = value();
    } else if (arg == "--sidecars") {
      sidecars = value();
    } else if (arg == "--samples") {
      samples = value();
    } else if (arg == "--quick") {
      relays = 600, failover = 150, sidecars = 4, samples = 20;
    } else {
      veil::bench::Fail("unknown argument " + arg);
    }
  }
  if (sidecars < 2 || failover == 0 || failover >= relays) {
    veil::bench::Fail("need --sidecars >= 2 and 0 < --failover < --relays");
  }
  return veil::bench::Run(relays, failover, sidecars, samples);
}
