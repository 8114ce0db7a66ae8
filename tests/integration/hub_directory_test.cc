// Hub replicas sharing a directory in a real etcd (Debian's etcd-server) on loopback: a relay
// name is one owner's on every replica, races for one name across replicas have exactly one
// winner, etcd down and back, an admin's release of a name whose owner is gone, bounded bindings,
// the mesh (any replica reaches any relay; failover behind a balancer; no stranger joins), bad
// flags.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/api_client.h"
#include "tests/support/etcd_process.h"
#include "tests/support/metrics_scrape.h"
#include "tests/support/tcp_balancer.h"
#include "tests/support/veild_process.h"

namespace veil::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;

grpc::Status EchoThrough(const std::shared_ptr<grpc::Channel>& alice, const std::string& route,
                         const std::string& text) {
  v1::SecureChannel channel;
  grpc::Status s = CreateSecureChannel(alice, route, TrustEveryone(), &channel);
  if (!s.ok()) return s;
  v1::RequestResponse reply;
  s = Request(alice, channel.route() + "/service/echoer", text, &reply);
  if (!s.ok()) return s;
  EXPECT_EQ(reply.reply().payload(), text);
  return grpc::Status::OK;
}

grpc::Status DeleteRelay(const std::shared_ptr<grpc::Channel>& api, const std::string& name) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(20));
  v1::DeleteRelayRequest req;
  req.set_name(name);
  v1::DeleteRelayResponse r;
  return v1::RelayService::NewStub(api)->DeleteRelay(&ctx, req, &r);
}

grpc::Status ReleaseName(const std::shared_ptr<grpc::Channel>& hub_api, const std::string& name) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(20));
  v1::ReleaseRelayNameRequest req;
  req.set_name(name);
  v1::ReleaseRelayNameResponse r;
  return v1::RelayService::NewStub(hub_api)->ReleaseRelayName(&ctx, req, &r);
}

std::vector<v1::HostedRelay> Hosted(const std::shared_ptr<grpc::Channel>& hub_api) {
  grpc::ClientContext ctx;
  v1::ListHostedRelaysResponse r;
  EXPECT_TRUE(v1::RelayService::NewStub(hub_api)->ListHostedRelays(&ctx, {}, &r).ok());
  return {r.relays().begin(), r.relays().end()};
}

// Polls `condition` every 50 ms for up to `limit`.
bool Eventually(const std::function<bool()>& condition, milliseconds limit = seconds(20)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(milliseconds(50));  // polling a condition
  }
  return condition();
}

class HubDirectoryTest : public ::testing::Test {
 protected:
  struct Hub {
    std::unique_ptr<VeildProcess> process;
    std::shared_ptr<grpc::Channel> api;
    std::string route;
  };
  struct Sidecar {
    std::unique_ptr<VeildProcess> process;
    std::shared_ptr<grpc::Channel> api;
  };

  void SetUp() override { ASSERT_TRUE(etcd_.Start()) << etcd_.log(); }

  std::vector<std::string> HubArgs(const std::string& replica, std::string endpoint = "") const {
    if (endpoint.empty()) endpoint = etcd_.endpoint();
    return {"--hub",       "--tcp-listen",
            "127.0.0.1:0", "--hub-directory",
            endpoint,      "--hub-replica",
            replica,       "--hub-directory-lease-ttl",
            "3",           "--relay-max-per-identity",
            "256",         "--relay-max-per-connection",
            "256",         "--metrics-listen",
            "127.0.0.1:0"};
  }
  Hub StartHub(const std::string& replica, const std::string& endpoint = "",
               const std::vector<std::string>& more = {}) {
    Hub hub;
    std::vector<std::string> args = HubArgs(replica, endpoint);
    args.insert(args.end(), more.begin(), more.end());
    hub.process = std::make_unique<VeildProcess>(args);
    EXPECT_TRUE(hub.process->Start()) << hub.process->log();
    hub.api = Connect(hub.process->api_target());
    hub.route = "/tcp/" + TcpListenAddress(hub.api);
    return hub;
  }
  // `state_dir`: run on a copy of another sidecar's state (the same identity), else a fresh one.
  // `heartbeat`: --relay-heartbeat ("": veild's default).
  Sidecar StartSidecar(bool echoer = false, const std::string& state_dir = "",
                       const std::string& heartbeat = "0.3") {
    Sidecar s;
    std::vector<std::string> args;
    if (!heartbeat.empty()) args = {"--relay-heartbeat", heartbeat};
    s.process = state_dir.empty() ? std::make_unique<VeildProcess>(args)
                                  : std::make_unique<VeildProcess>(state_dir, args);
    EXPECT_TRUE(s.process->Start()) << s.process->log();
    s.api = Connect(s.process->api_target());
    if (echoer) {
      echoers_.push_back(std::make_unique<EchoApp>(s.api, "echoer"));
      EXPECT_TRUE(echoers_.back()->WaitOpened());
      EXPECT_TRUE(CreateListener(s.api, "listener", TrustEveryone()).ok());
    }
    return s;
  }

  EtcdProcess etcd_;
  std::vector<std::unique_ptr<EchoApp>> echoers_;
};

TEST_F(HubDirectoryTest, ANameIsOneOwnersOnEveryReplica) {
  Hub a = StartHub("a"), b = StartHub("b");
  Sidecar bob = StartSidecar(/*echoer=*/true), carol = StartSidecar(), alice = StartSidecar();
  v1::Relay relay;
  grpc::Status s = CreateRelay(bob.api, a.route, "bob", &relay);
  ASSERT_TRUE(s.ok()) << s.error_message() << a.process->log();

  // Carol asks for it on the other replica, and on the same one: taken, both times.
  s = CreateRelay(carol.api, b.route, "bob", &relay);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_EQ(ReasonOf(s), "RELAY_NAME_TAKEN");
  s = CreateRelay(carol.api, a.route, "bob", &relay);
  EXPECT_EQ(ReasonOf(s), "RELAY_NAME_TAKEN");
  EXPECT_TRUE(Hosted(b.api).empty());

  // B's view has it (from its watch), without hosting it.
  EXPECT_TRUE(Eventually([&] { return Scrape(*b.process, "veil_hub_directory_relays") == 1; }));
  EXPECT_EQ(Scrape(*a.process, "veil_hub_directory_claims"), 1);
  EXPECT_EQ(Scrape(*b.process, "veil_hub_directory_claims"), 0);
  EXPECT_EQ(Scrape(*b.process, "veil_hub_directory_lease_held"), 1);
  EXPECT_GE(Scrape(*b.process, "veil_hub_directory_claims_refused_total"), 1);

  // Bob is reached through the replica he registered with.
  s = EchoThrough(alice.api, a.route + "/service/forward_to_bob/service/listener", "via a");
  EXPECT_TRUE(s.ok()) << s.error_message();

  // Bob's sidecar goes: the name stays his (a durable binding), on every replica.
  bob.process->Kill();
  ASSERT_TRUE(Eventually([&] { return Hosted(a.api).empty(); })) << a.process->log();
  EXPECT_TRUE(Eventually([&] { return Scrape(*b.process, "veil_hub_directory_relays") == 0; }));
  s = CreateRelay(carol.api, b.route, "bob", &relay);
  EXPECT_EQ(ReasonOf(s), "RELAY_NAME_TAKEN") << s.error_message();
}

TEST_F(HubDirectoryTest, AnOwnersDeleteFreesTheNameOnEveryReplica) {
  Hub a = StartHub("a"), b = StartHub("b");
  Sidecar bob = StartSidecar(), carol = StartSidecar();
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob.api, a.route, "shared", &relay).ok());
  ASSERT_TRUE(
      Eventually([&] { return Scrape(*b.process, "veil_hub_directory_bound_names") == 1; }));
  grpc::Status s = DeleteRelay(bob.api, "shared");
  ASSERT_TRUE(s.ok()) << s.error_message();
  // The sidecar's unregister reaches the hub (and etcd) after DeleteRelay returns.
  ASSERT_TRUE(
      Eventually([&] { return Scrape(*b.process, "veil_hub_directory_bound_names") == 0; }));
  s = CreateRelay(carol.api, b.route, "shared", &relay);
  EXPECT_TRUE(s.ok()) << s.error_message() << b.process->log();
  // Now Bob is the stranger.
  s = CreateRelay(bob.api, a.route, "shared", &relay);
  EXPECT_EQ(ReasonOf(s), "RELAY_NAME_TAKEN");
}

// A binding outlives its owner's connection, so a stranger with many identities could otherwise
// fill etcd one name at a time: bounded per identity and in all, on every replica.
TEST_F(HubDirectoryTest, TheNamesAnIdentityHoldsAreBoundedOnEveryReplica) {
  const std::vector<std::string> limits = {"--hub-directory-max-names-per-owner", "2",
                                           "--hub-directory-max-names", "4"};
  Hub a = StartHub("a", "", limits), b = StartHub("b", "", limits);
  Sidecar bob = StartSidecar(), carol = StartSidecar(), dave = StartSidecar();
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob.api, a.route, "one", &relay).ok());
  ASSERT_TRUE(CreateRelay(bob.api, a.route, "two", &relay).ok());
  ASSERT_TRUE(
      Eventually([&] { return Scrape(*b.process, "veil_hub_directory_bound_names") == 2; }));
  grpc::Status s = CreateRelay(bob.api, b.route, "three", &relay);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_EQ(ReasonOf(s), "RELAY_LIMIT");
  EXPECT_NE(s.error_message().find("--hub-directory-max-names-per-owner"), std::string::npos)
      << s.error_message();
  EXPECT_TRUE(Hosted(b.api).empty());

  // Bob's names do not count against Carol; the directory's own bound does.
  ASSERT_TRUE(CreateRelay(carol.api, b.route, "three", &relay).ok());
  ASSERT_TRUE(CreateRelay(carol.api, b.route, "four", &relay).ok());
  ASSERT_TRUE(
      Eventually([&] { return Scrape(*a.process, "veil_hub_directory_bound_names") == 4; }));
  s = CreateRelay(dave.api, a.route, "five", &relay);
  EXPECT_EQ(ReasonOf(s), "RELAY_LIMIT") << s.error_message();
  EXPECT_NE(s.error_message().find("--hub-directory-max-names)"), std::string::npos)
      << s.error_message();

  // Bob's delete frees a binding: room again, on the other replica too.
  ASSERT_TRUE(DeleteRelay(bob.api, "one").ok());
  ASSERT_TRUE(
      Eventually([&] { return Scrape(*a.process, "veil_hub_directory_bound_names") == 3; }));
  s = CreateRelay(dave.api, a.route, "five", &relay);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Scrape(*a.process, "veil_hub_directory_claims_refused_total") +
                Scrape(*b.process, "veil_hub_directory_claims_refused_total"),
            2);
}

// Writes `count` owner bindings straight into etcd (what other replicas left), 100 per txn.
void WriteBindings(const EtcdProcess& etcd, int count, const std::string& owner) {
  auto kv = etcdserverpb::KV::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(etcd.client_port()), grpc::InsecureChannelCredentials()));
  for (int i = 0; i < count;) {
    etcdserverpb::TxnRequest txn;
    for (int end = std::min(count, i + 100); i < end; ++i) {
      auto* put = txn.add_success()->mutable_request_put();
      put->set_key("/veil/owners/preloaded-" + std::to_string(i));
      put->set_value(owner);
    }
    etcdserverpb::TxnResponse response;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(20));
    ASSERT_TRUE(kv->Txn(&ctx, txn, &response).ok());
  }
}

// A replica starting beside a large directory loads all of it (in pages: one response would
// pass gRPC's message limit) and holds the bounds against it.
TEST_F(HubDirectoryTest, AReplicaLoadsALargeDirectoryWhole) {
  constexpr int kBindings = 12000;
  Sidecar bob = StartSidecar();
  const std::string bob_id = DefaultIdentifier(bob.api);
  ASSERT_NO_FATAL_FAILURE(WriteBindings(etcd_, kBindings, bob_id));
  // Pages of 1,000 keys: the 12,000 bindings and a's own hubs/ record (written before the load)
  // take 13 Range calls, all at one revision; without paging one response would hold them all.
  Hub a = StartHub("a", "",
                   {"--hub-directory-max-names", std::to_string(kBindings + 1),
                    "--hub-directory-load-page", "1000"});
  ASSERT_TRUE(Eventually([&] {
    return Scrape(*a.process, "veil_hub_directory_bound_names") == kBindings;
  })) << Scrape(*a.process, "veil_hub_directory_bound_names");
  EXPECT_THAT(a.process->log(),
              HasSubstr(absl::StrCat("loaded ", kBindings + 1, " keys at revision")));
  EXPECT_THAT(a.process->log(), HasSubstr("in 13 page(s)"));
  // Bob holds 12,000 names, past the 64 one identity may hold: a new one is refused, one of his
  // own is his again.
  v1::Relay relay;
  grpc::Status s = CreateRelay(bob.api, a.route, "new-name", &relay);
  EXPECT_EQ(ReasonOf(s), "RELAY_LIMIT") << s.error_message();
  s = CreateRelay(bob.api, a.route, "preloaded-11999", &relay);
  EXPECT_TRUE(s.ok()) << s.error_message();
  // Carol's first name is the directory's last.
  Sidecar carol = StartSidecar(), dave = StartSidecar();
  s = CreateRelay(carol.api, a.route, "carol", &relay);
  EXPECT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(Eventually(
      [&] { return Scrape(*a.process, "veil_hub_directory_bound_names") == kBindings + 1; }));
  s = CreateRelay(dave.api, a.route, "dave", &relay);
  EXPECT_EQ(ReasonOf(s), "RELAY_LIMIT") << s.error_message();
}

TEST_F(HubDirectoryTest, TwoOwnersRacingForOneNameOnTwoReplicasExactlyOneWinsEveryTime) {
  Hub a = StartHub("a"), b = StartHub("b");
  Sidecar bob = StartSidecar(), carol = StartSidecar();
  const std::string bob_id = DefaultIdentifier(bob.api), carol_id = DefaultIdentifier(carol.api);
  // One relay each first, so that the race is of claims, not of channel set-ups.
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob.api, a.route, "bob-warm", &relay).ok());
  ASSERT_TRUE(CreateRelay(carol.api, b.route, "carol-warm", &relay).ok());
  int bob_wins = 0, carol_wins = 0;
  for (int round = 0; round < 100; ++round) {
    const std::string name = "race-" + std::to_string(round);
    grpc::Status bob_status, carol_status;
    std::atomic<int> ready{0};
    auto race = [&](const Sidecar& who, const std::string& route, grpc::Status* out) {
      ready.fetch_add(1);
      while (ready.load() < 2) std::this_thread::yield();  // both go at once
      v1::Relay r;
      *out = CreateRelay(who.api, route, name, &r);
    };
    std::thread t1(race, std::cref(bob), a.route, &bob_status);
    std::thread t2(race, std::cref(carol), b.route, &carol_status);
    t1.join();
    t2.join();
    ASSERT_NE(bob_status.ok(), carol_status.ok())
        << "round " << round << ": bob " << bob_status.error_message() << ", carol "
        << carol_status.error_message();
    const grpc::Status& lost = bob_status.ok() ? carol_status : bob_status;
    EXPECT_EQ(ReasonOf(lost), "RELAY_NAME_TAKEN") << lost.error_message();
    (bob_status.ok() ? bob_wins : carol_wins) += 1;
    // The winner's relay is on its replica, nowhere else.
    const Hub& winner_hub = bob_status.ok() ? a : b;
    const Hub& loser_hub = bob_status.ok() ? b : a;
    const std::string& winner_id = bob_status.ok() ? bob_id : carol_id;
    bool found = false;
    for (const auto& h : Hosted(winner_hub.api)) {
      if (h.name() == name) found = h.owner() == winner_id;
    }
    EXPECT_TRUE(found) << name;
    for (const auto& h : Hosted(loser_hub.api)) EXPECT_NE(h.name(), name);
  }
  EXPECT_EQ(bob_wins + carol_wins, 100);
}

TEST_F(HubDirectoryTest, WithEtcdDownRelaysWorkNewNamesAreRefusedAndItCatchesUp) {
  Hub a = StartHub("a"), b = StartHub("b");
  Sidecar bob = StartSidecar(/*echoer=*/true), carol = StartSidecar(), alice = StartSidecar();
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob.api, a.route, "bob", &relay).ok());
  const std::string via_a = a.route + "/service/forward_to_bob/service/listener";
  ASSERT_TRUE(EchoThrough(alice.api, via_a, "before").ok());

  etcd_.Kill();
  // What the replicas know keeps working: a new channel to Bob, through his relay.
  grpc::Status s = EchoThrough(alice.api, via_a, "etcd down");
  EXPECT_TRUE(s.ok()) << s.error_message();
  // A name the directory has never seen is refused, with the reason.
  s = CreateRelay(carol.api, b.route, "carol", &relay);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_EQ(ReasonOf(s), "DIRECTORY_UNAVAILABLE") << s.error_message();
  EXPECT_TRUE(Eventually([&] { return Scrape(*b.process, "veil_hub_directory_reachable") == 0; }));

  // Back: the replicas renew (their leases may have expired meanwhile) and take names again.
  ASSERT_TRUE(etcd_.Start()) << etcd_.log();
  EXPECT_TRUE(Eventually(
      [&] {
        v1::Relay r;
        return CreateRelay(carol.api, b.route, "carol", &r, /*exist_ok=*/true).ok();
      },
      seconds(30)))
      << b.process->log();
  // Bob's name is still his, and in the directory under A again.
  EXPECT_TRUE(Eventually(
      [&] { return Scrape(*a.process, "veil_hub_directory_pending_claims") == 0; }, seconds(30)));
  s = CreateRelay(carol.api, b.route, "bob", &relay);
  EXPECT_EQ(ReasonOf(s), "RELAY_NAME_TAKEN") << s.error_message();
  EXPECT_TRUE(EchoThrough(alice.api, via_a, "after").ok());
}

TEST_F(HubDirectoryTest, AReplicaPartitionedFromEtcdStopsClaimingAndDoesNotTakeNamesBack) {
  TcpBalancer gate(etcd_.client_port());
  Hub a = StartHub("a", gate.endpoint()), b = StartHub("b");
  Sidecar bob = StartSidecar(), dave = StartSidecar();
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob.api, a.route, "bob", &relay).ok());

  gate.Cut();
  // Past its TTL (3 s) without renewal, A holds no lease: its claim is void, new names refused.
  ASSERT_TRUE(Eventually([&] { return Scrape(*a.process, "veil_hub_directory_lease_held") == 0; }))
      << a.process->log();
  EXPECT_EQ(Scrape(*a.process, "veil_hub_directory_pending_claims"), 1);
  grpc::Status s = CreateRelay(dave.api, a.route, "dave", &relay);
  EXPECT_EQ(ReasonOf(s), "DIRECTORY_UNAVAILABLE") << s.error_message();
  // etcd let A's lease go; Bob (his identity, from a second sidecar) registers on B meanwhile.
  TempDir copy;
  std::filesystem::copy(bob.process->state_dir(), copy.path() + "/state",
                        std::filesystem::copy_options::recursive);
  Sidecar bob_again = StartSidecar(false, copy.path() + "/state");
  ASSERT_EQ(DefaultIdentifier(bob_again.api), DefaultIdentifier(bob.api));
  ASSERT_TRUE(Eventually(
      [&] {
        v1::Relay r;
        return CreateRelay(bob_again.api, b.route, "bob", &r, /*exist_ok=*/true).ok();
      },
      seconds(30)))
      << b.process->log();

  // Healed: A renews, finds the name on B, and lets it go instead of taking it back.
  gate.Heal();
  ASSERT_TRUE(Eventually([&] { return Scrape(*a.process, "veil_hub_directory_lease_held") == 1; },
                         seconds(30)))
      << a.process->log();
  EXPECT_TRUE(Eventually([&] { return Hosted(a.api).empty(); })) << a.process->log();
  EXPECT_GE(Scrape(*a.process, "veil_hub_directory_claims_lost_total"), 1);
  EXPECT_EQ(Scrape(*a.process, "veil_hub_directory_claims"), 0);
  bool on_b = false;
  for (const auto& h : Hosted(b.api)) on_b = on_b || h.name() == "bob";
  EXPECT_TRUE(on_b);
  // And A takes names again.
  s = CreateRelay(dave.api, a.route, "dave", &relay, /*exist_ok=*/true);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(HubDirectoryTest, AnAdminReleasesANameWhoseOwnerIsGone) {
  Hub a = StartHub("a"), b = StartHub("b");
  Sidecar carol = StartSidecar();
  {
    Sidecar bob = StartSidecar();
    v1::Relay relay;
    ASSERT_TRUE(CreateRelay(bob.api, a.route, "orphan", &relay).ok());
    bob.process->Kill();  // and his key with him
  }
  v1::Relay relay;
  grpc::Status s = CreateRelay(carol.api, b.route, "orphan", &relay);
  ASSERT_EQ(ReasonOf(s), "RELAY_NAME_TAKEN") << s.error_message();
  // An admin of any replica frees it for everyone.
  s = ReleaseName(b.api, "orphan");
  ASSERT_TRUE(s.ok()) << s.error_message();
  s = CreateRelay(carol.api, b.route, "orphan", &relay);
  EXPECT_TRUE(s.ok()) << s.error_message();
  // A name nobody holds: NOT_FOUND; a bad one: INVALID_ARGUMENT.
  s = ReleaseName(a.api, "nobody-has-this");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  s = ReleaseName(a.api, "bad name!");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  // An admin's release on the replica that hosts a live relay stops it there.
  s = ReleaseName(a.api, "orphan");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(Eventually([&] { return Hosted(b.api).empty(); })) << b.process->log();
}

// The mesh: Bob registers on one replica, Alice reaches him through each of the others, one
// hop; every echo comes back whole.
TEST_F(HubDirectoryTest, AliceReachesBobThroughAnyReplica) {
  Hub a = StartHub("a"), b = StartHub("b"), c = StartHub("c");
  Sidecar bob = StartSidecar(/*echoer=*/true), alice = StartSidecar();
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob.api, a.route, "bob", &relay).ok());
  for (Hub* entry : {&b, &c}) {
    ASSERT_TRUE(
        Eventually([&] { return Scrape(*entry->process, "veil_hub_directory_relays") == 1; }));
  }
  for (Hub* entry : {&b, &c, &a}) {
    v1::SecureChannel channel;
    grpc::Status s =
        CreateSecureChannel(alice.api, entry->route + "/service/forward_to_bob/service/listener",
                            TrustEveryone(), &channel);
    ASSERT_TRUE(s.ok()) << s.error_message() << entry->process->log();
    for (int i = 0; i < 50; ++i) {
      const std::string text = "message " + std::to_string(i) + " via " + entry->route;
      v1::RequestResponse reply;
      s = Request(alice.api, channel.route() + "/service/echoer", text, &reply);
      ASSERT_TRUE(s.ok()) << s.error_message();
      ASSERT_EQ(reply.reply().payload(), text);
    }
  }
  EXPECT_EQ(echoers_.front()->echoed(), 150u);
  // B and C handed on (the handshake, 50 requests), A delivered what they handed on; nobody
  // hosts Bob but A.
  for (Hub* entry : {&b, &c}) {
    EXPECT_GE(Scrape(*entry->process, "veil_hub_mesh_forwarded_total"), 51);
    EXPECT_GE(Scrape(*entry->process, "veil_hub_mesh_answered_total"), 51);
    EXPECT_EQ(Scrape(*entry->process, "veil_hub_mesh_links"), 1);
    EXPECT_TRUE(Hosted(entry->api).empty());
  }
  EXPECT_GE(Scrape(*a.process, "veil_hub_mesh_delivered_total"), 102);
  EXPECT_EQ(Scrape(*a.process, "veil_hub_mesh_forwarded_total"), 0);
  // What no replica has is refused as before, by the replica asked.
  v1::SecureChannel channel;
  grpc::Status s =
      CreateSecureChannel(alice.api, b.route + "/service/forward_to_nobody/service/listener",
                          TrustEveryone(), &channel);
  EXPECT_EQ(ReasonOf(s), "RELAY_NOT_FOUND") << s.error_message();
}

// Behind one balanced address (a Service): the replica Bob is on dies under Alice's traffic; he
// re-registers on another, Alice's channel ends with a refusal she sees, her new one works, and
// nothing was delivered twice or changed on the way.
TEST_F(HubDirectoryTest, WhenBobsReplicaDiesHeMovesAndAlicesNewChannelWorks) {
  Hub hubs[] = {StartHub("a"), StartHub("b"), StartHub("c")};
  std::vector<int> ports;
  for (const Hub& h : hubs) ports.push_back(std::stoi(h.route.substr(h.route.rfind(':') + 1)));
  TcpBalancer service(ports);
  // Bob's sidecar with veild's default timeouts: the failover time printed below is theirs.
  Sidecar bob = StartSidecar(/*echoer=*/true, "", /*heartbeat=*/""), alice = StartSidecar();
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob.api, service.route(), "bob", &relay).ok());
  int owner = -1;
  ASSERT_TRUE(Eventually([&] {
    for (int i = 0; i < 3; ++i) {
      if (!Hosted(hubs[i].api).empty()) owner = i;
    }
    return owner >= 0;
  }));
  Hub& entry = hubs[(owner + 1) % 3];
  ASSERT_TRUE(Eventually([&] { return Scrape(*entry.process, "veil_hub_directory_relays") == 1; }));
  const std::string to_bob = entry.route + "/service/forward_to_bob/service/listener";

  v1::SecureChannel channel;
  ASSERT_TRUE(CreateSecureChannel(alice.api, to_bob, TrustEveryone(), &channel).ok());
  int ok = 0, failed = 0;
  grpc::Status refusal;
  std::chrono::steady_clock::time_point killed;
  // Until the channel is refused: what was in flight to the dead replica gets no reply (it
  // is lost with it), the next message is refused on the way and the refusal closes the channel.
  for (int i = 0; i < 400 && ReasonOf(refusal) != "CHANNEL_CLOSED"; ++i) {
    if (i == 100) {
      hubs[owner].process->Kill();  // under traffic
      killed = std::chrono::steady_clock::now();
    }
    const std::string text = "before " + std::to_string(i);
    v1::RequestResponse reply;
    grpc::Status s =
        Request(alice.api, channel.route() + "/service/echoer", text, &reply, seconds(1));
    if (s.ok()) {
      ASSERT_EQ(reply.reply().payload(), text);
      ++ok;
    } else {
      ++failed;
      refusal = s;
      std::cout << "after the kill: " << ReasonOf(s) << ": " << s.error_message() << "\n";
    }
  }
  EXPECT_GE(ok, 100);
  EXPECT_EQ(ReasonOf(refusal), "CHANNEL_CLOSED") << "the channel through the dead replica never "
                                                    "ended";
  EXPECT_LE(failed, 3);
  // A new channel works once Bob is on a live replica: each try refused cleanly until then.
  bool reached = false;
  while (!reached && std::chrono::steady_clock::now() - killed < seconds(60)) {
    v1::SecureChannel fresh;
    if (!CreateSecureChannel(alice.api, to_bob, TrustEveryone(), &fresh, 3000).ok()) {
      std::this_thread::sleep_for(milliseconds(100));  // polling for the move
      continue;
    }
    v1::RequestResponse reply;
    reached =
        Request(alice.api, fresh.route() + "/service/echoer", "after", &reply, seconds(5)).ok() &&
        reply.reply().payload() == "after";
  }
  ASSERT_TRUE(reached) << entry.process->log();
  std::cout
      << "failover: a new channel to Bob worked "
      << std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - killed).count()
      << " ms after his replica died\n";
  // Each message reached Bob at most once: he echoed the ones answered, and at most the one that
  // was in flight besides.
  EXPECT_GE(echoers_.front()->echoed(), static_cast<uint64_t>(ok + 1));
  EXPECT_LE(echoers_.front()->echoed(), static_cast<uint64_t>(ok + failed + 1));
  bool moved = false;
  for (int i = 0; i < 3; ++i) moved = moved || (i != owner && !Hosted(hubs[i].api).empty());
  EXPECT_TRUE(moved);
}

// The mesh takes only hub replicas of the directory: a sidecar cannot open a channel to its
// listener, nor use the mesh worker through the hub's open listener.
TEST_F(HubDirectoryTest, ANonHubIdentityCannotJoinTheMesh) {
  Hub a = StartHub("a"), b = StartHub("b");
  Sidecar bob = StartSidecar(/*echoer=*/true), mallory = StartSidecar();
  v1::Relay relay;
  ASSERT_TRUE(CreateRelay(bob.api, a.route, "bob", &relay).ok());
  v1::SecureChannel channel;
  grpc::Status s =
      CreateSecureChannel(mallory.api, a.route + "/service/hub_mesh", TrustEveryone(), &channel);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  // Through the hub's listener (which admits everyone) to the mesh worker, as if from a peer
  // replica: refused, nothing reaches Bob.
  ASSERT_TRUE(
      CreateSecureChannel(mallory.api, a.route + "/service/hub", TrustEveryone(), &channel).ok());
  for (const char* rest :
       {"/service/mesh/service/forward_to_bob/service/echoer", "/service/mesh/service/relay"}) {
    v1::RequestResponse reply;
    s = Request(mallory.api, channel.route() + rest, "as a hub", &reply, seconds(3));
    EXPECT_FALSE(s.ok());
  }
  EXPECT_TRUE(Eventually([&] { return Scrape(*a.process, "veil_hub_mesh_refused_total") >= 2; }))
      << a.process->log();
  EXPECT_EQ(echoers_.front()->echoed(), 0u);
  // While B, a replica, is linked and works.
  Sidecar alice = StartSidecar();
  ASSERT_TRUE(Eventually([&] { return Scrape(*b.process, "veil_hub_directory_relays") == 1; }));
  s = EchoThrough(alice.api, b.route + "/service/forward_to_bob/service/listener", "via b");
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(HubDirectoryTest, ANodeThatIsNotAHubCannotReleaseNames) {
  Sidecar s = StartSidecar();
  grpc::Status status = ReleaseName(s.api, "x");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ReasonOf(status), "NOT_A_HUB");
}

TEST(HubDirectoryFlagsTest, BadDirectoryFlagsAreClearErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--hub-directory", "http://127.0.0.1:2379"}, "need --hub"},
      {{"--hub", "--hub-directory", "127.0.0.1:2379"}, "is not an etcd client URL"},
      {{"--hub", "--hub-directory", "http://127.0.0.1"}, "needs a host and a port"},
      {{"--hub", "--hub-directory", ","}, "no etcd endpoint"},
      {{"--hub", "--hub-replica", "a"}, "need --hub-directory"},
      {{"--hub", "--hub-directory", "https://127.0.0.1:2379", "--hub-directory-ca",
        "/nonexistent/ca.pem"},
       "cannot read the hub directory's CA file"},
  };
  for (const Case& c : cases) {
    VeildProcess p(c.args);
    EXPECT_FALSE(p.Start(seconds(10)));
    EXPECT_NE(p.log().find(c.message), std::string::npos) << p.log();
  }
}

// etcd as production runs it: TLS only, client certificates required. A replica with the CA and
// a client certificate of it claims names; one without a certificate, or trusting another CA,
// is refused by etcd and so refuses new names (DIRECTORY_UNAVAILABLE), never falling back to
// plaintext.
TEST(HubDirectoryTlsTest, ReplicasTalkToEtcdOverTlsWithClientCertificates) {
  EtcdProcess etcd;
  ASSERT_TRUE(etcd.EnableTls());
  ASSERT_TRUE(etcd.Start()) << etcd.log();
  ASSERT_EQ(etcd.endpoint().rfind("https://", 0), 0u);
  const std::string tls = etcd.tls_dir();
  auto hub = [&](const std::string& replica, std::vector<std::string> more) {
    std::vector<std::string> args = {"--hub",           "--tcp-listen",     "127.0.0.1:0",
                                     "--hub-directory", etcd.endpoint(),    "--hub-replica",
                                     replica,           "--metrics-listen", "127.0.0.1:0"};
    args.insert(args.end(), more.begin(), more.end());
    auto p = std::make_unique<VeildProcess>(args);
    EXPECT_TRUE(p->Start()) << p->log();
    return p;
  };
  auto good = hub("good", {"--hub-directory-ca", tls + "/ca.pem", "--hub-directory-cert",
                           tls + "/client.pem", "--hub-directory-key", tls + "/client.key"});
  auto no_cert = hub("no-cert", {"--hub-directory-ca", tls + "/ca.pem"});
  auto wrong_ca =
      hub("wrong-ca", {"--hub-directory-ca", tls + "/other-ca.pem", "--hub-directory-cert",
                       tls + "/client.pem", "--hub-directory-key", tls + "/client.key"});
  EXPECT_TRUE(Eventually([&] { return Scrape(*good, "veil_hub_directory_lease_held") == 1; }))
      << good->log();
  VeildProcess bob({"--relay-heartbeat", "0.3"});
  ASSERT_TRUE(bob.Start()) << bob.log();
  auto bob_api = Connect(bob.api_target());
  v1::Relay relay;
  grpc::Status s =
      CreateRelay(bob_api, "/tcp/" + TcpListenAddress(Connect(good->api_target())), "bob", &relay);
  EXPECT_TRUE(s.ok()) << s.error_message() << good->log();
  for (VeildProcess* refused : {no_cert.get(), wrong_ca.get()}) {
    EXPECT_EQ(Scrape(*refused, "veil_hub_directory_lease_held"), 0) << refused->log();
    EXPECT_EQ(Scrape(*refused, "veil_hub_directory_reachable"), 0);
    s = CreateRelay(bob_api, "/tcp/" + TcpListenAddress(Connect(refused->api_target())), "bob-too",
                    &relay);
    EXPECT_EQ(ReasonOf(s), "DIRECTORY_UNAVAILABLE") << s.error_message();
  }
  // The good replica's view, over TLS, has Bob; the others know nothing.
  EXPECT_TRUE(Eventually([&] { return Scrape(*good, "veil_hub_directory_relays") == 1; }));
  EXPECT_EQ(Scrape(*no_cert, "veil_hub_directory_relays"), 0);
}

TEST(HubDirectoryFlagsTest, AHubWhoseEtcdIsNotThereYetStartsAndRefusesNewNames) {
  EtcdProcess etcd;  // not started: nothing listens on its port yet
  VeildProcess hub({"--hub", "--tcp-listen", "127.0.0.1:0", "--hub-directory", etcd.endpoint(),
                    "--hub-replica", "lonely"});
  ASSERT_TRUE(hub.Start()) << hub.log();
  auto hub_api = Connect(hub.api_target());
  VeildProcess bob;
  ASSERT_TRUE(bob.Start()) << bob.log();
  auto bob_api = Connect(bob.api_target());
  v1::Relay relay;
  grpc::Status s = CreateRelay(bob_api, "/tcp/" + TcpListenAddress(hub_api), "bob", &relay);
  EXPECT_EQ(ReasonOf(s), "DIRECTORY_UNAVAILABLE") << s.error_message();
  ASSERT_TRUE(etcd.Start()) << etcd.log();
  EXPECT_TRUE(Eventually(
      [&] {
        v1::Relay r;
        return CreateRelay(bob_api, "/tcp/" + TcpListenAddress(hub_api), "bob", &r, true).ok();
      },
      seconds(30)))
      << hub.log();
}

}  // namespace
}  // namespace veil::testing
