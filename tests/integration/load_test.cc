// Load: 1,000 concurrent secure channels through one hub, 1,000 messages each, every payload
// checked at the far end — zero lost, corrupted or reordered — and the daemons' memory bounded.
// VEIL_SOAK_SECONDS=N repeats the rounds for N seconds (a soak; ctest runs one round).
#include <charconv>
#include <cstdio>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/api_client.h"
#include "tests/support/metrics_scrape.h"
#include "tests/support/veild_process.h"

namespace veil::testing {
namespace {

using Clock = std::chrono::steady_clock;

// The payload of message `seq` on channel `c`: a header and filler derived from both, so a
// corrupted, misrouted or reordered message is caught.
std::string Payload(int c, int seq) {
  std::string out = absl::StrCat(c, ":", seq, ":");
  for (int i = 0; i < 48; ++i) out.push_back(static_cast<char>('a' + (c * 31 + seq * 7 + i) % 26));
  return out;
}

// Bob's app: checks every delivery against Payload, per channel in order.
class Checker {
 public:
  Checker(const std::shared_ptr<grpc::Channel>& api, int channels)
      : client_(api, "sink", 65536), next_(channels, 0) {
    auto opened = client_.Read();
    EXPECT_TRUE(opened && opened->has_opened());
    thread_ = std::thread([this] { Run(); });
  }
  ~Checker() {
    client_.Cancel();
    thread_.join();
  }
  uint64_t received() const { return received_.load(); }
  uint64_t bad() const { return bad_.load(); }
  std::string first_error() {
    std::lock_guard lock(mu_);
    return first_error_;
  }
  // Expect the next round to start at `seq` on every channel.
  void ExpectRound(int base) {
    std::lock_guard lock(mu_);
    std::fill(next_.begin(), next_.end(), base);
  }

 private:
  void Run() {
    while (auto response = client_.Read()) {
      if (!response->has_deliveries()) continue;
      const auto& deliveries = response->deliveries().deliveries();
      if (deliveries.empty()) continue;
      {
        std::lock_guard lock(mu_);
        for (const auto& d : deliveries) Check(d);
      }
      received_ += deliveries.size();
      client_.Ack(deliveries[deliveries.size() - 1].sequence());
    }
  }
  void Check(const v1::Delivery& d) {
    const std::string& p = d.payload();
    int c = -1, seq = -1;
    auto colon = p.find(':');
    auto second = p.find(':', colon + 1);
    if (colon != std::string::npos && second != std::string::npos) {
      std::from_chars(p.data(), p.data() + colon, c);
      std::from_chars(p.data() + colon + 1, p.data() + second, seq);
    }
    if (c < 0 || c >= static_cast<int>(next_.size()) || p != Payload(c, seq)) {
      Bad("corrupted payload: " + p.substr(0, 40));
    } else if (seq != next_[c]) {
      Bad(absl::StrCat("channel ", c, ": got message ", seq, ", expected ", next_[c]));
      next_[c] = seq + 1;
    } else {
      ++next_[c];
    }
    if (d.sender().origin() != v1::Sender::ORIGIN_SECURE_CHANNEL)
      Bad("not through a secure channel");
  }
  void Bad(std::string why) {
    if (bad_++ == 0) first_error_ = std::move(why);
  }

  ServeClient client_;
  std::mutex mu_;
  std::vector<int> next_;
  std::atomic<uint64_t> received_{0}, bad_{0};
  std::string first_error_;
  std::thread thread_;
};

TEST(LoadTest, ThousandChannelsThroughOneHubThousandMessagesEach) {
  constexpr int kChannels = 1000;
  constexpr int kMessages = 1000;
  constexpr int kPerBatch = 1000;  // one message per channel per batch: interleaved channels
  VeildProcess hub({"--hub", "--tcp-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
  VeildProcess bob({"--max-pending-handshakes", "4096", "--metrics-listen", "127.0.0.1:0"});
  VeildProcess alice;
  ASSERT_TRUE(hub.Start()) << hub.log();
  ASSERT_TRUE(bob.Start()) << bob.log();
  ASSERT_TRUE(alice.Start()) << alice.log();
  auto bob_api = Connect(bob.api_target());
  auto alice_api = Connect(alice.api_target());
  ASSERT_TRUE(CreateListener(bob_api, "listener", TrustEveryone()).ok());
  v1::Relay relay;
  ASSERT_TRUE(
      CreateRelay(bob_api, "/tcp/" + TcpListenAddress(Connect(hub.api_target())), "bob", &relay)
          .ok());
  Checker checker(bob_api, kChannels);

  // 1,000 channels, 8 openers at once.
  std::vector<std::string> channels(kChannels);
  std::atomic<int> next{0}, failed{0};
  std::vector<std::thread> openers;
  for (int t = 0; t < 8; ++t) {
    openers.emplace_back([&] {
      for (int i = next++; i < kChannels; i = next++) {
        v1::SecureChannel channel;
        grpc::Status s = CreateSecureChannel(alice_api, relay.route() + "/service/listener",
                                             TrustEveryone(), &channel, 30000);
        if (s.ok())
          channels[i] = channel.address();
        else
          ++failed;
      }
    });
  }
  for (auto& t : openers) t.join();
  ASSERT_EQ(failed.load(), 0);
  size_t rss_start[3] = {hub.rss_kib(), bob.rss_kib(), alice.rss_kib()};

  const char* soak = std::getenv("VEIL_SOAK_SECONDS");
  const auto soak_until = Clock::now() + std::chrono::seconds(soak ? std::atoi(soak) : 0);
  int round = 0;
  ServeClient sender(alice_api, "load_src");
  ASSERT_TRUE(sender.Read().has_value());
  std::mutex mu;
  std::condition_variable cv;
  int outstanding = 0;
  uint64_t refused = 0;
  std::thread results([&] {
    while (auto r = sender.Read()) {
      if (!r->has_send_result()) continue;
      std::lock_guard lock(mu);
      --outstanding;
      refused += r->send_result().failures_size();
      cv.notify_all();
    }
  });
  // On every way out (an ASSERT included), end the stream and join its reader.
  struct Joiner {
    ServeClient& sender;
    std::thread& thread;
    ~Joiner() {
      sender.Cancel();
      if (thread.joinable()) thread.join();
    }
  } joiner{sender, results};
  // Nothing paces the sender but its own sidecar: hops that fall behind stop reading their
  // connections (backpressure) and Alice's app waits for her sidecar's send results.
  uint64_t expected = 0;
  do {
    checker.ExpectRound(round * kMessages);
    uint64_t batch_id = 0;
    for (int seq = round * kMessages; seq < (round + 1) * kMessages; ++seq) {
      std::vector<std::pair<std::string, std::string>> batch;
      batch.reserve(kPerBatch);
      for (int c = 0; c < kChannels; ++c) {
        batch.emplace_back("/service/" + channels[c] + "/service/sink", Payload(c, seq));
      }
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return outstanding < 8; });
        ++outstanding;
      }
      ASSERT_TRUE(sender.Send(++batch_id, batch));
    }
    expected += uint64_t{kChannels} * kMessages;
    // Everything handed on arrives (bounded wait: progress must not stall for 30 s).
    auto last_progress = Clock::now();
    uint64_t last = 0;
    while (checker.received() < expected &&
           Clock::now() - last_progress < std::chrono::seconds(30)) {
      if (checker.received() != last) {
        last = checker.received();
        last_progress = Clock::now();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(checker.received(), expected) << "lost messages (refused: " << refused << ")";
    ASSERT_EQ(checker.bad(), 0u) << checker.first_error();
    ++round;
  } while (Clock::now() < soak_until);
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(refused, 0u);
  }
  // No node dropped anything it read, and the hub and Bob did hold their senders back.
  for (const VeildProcess* p : {&hub, &bob}) {
    EXPECT_EQ(Scrape(*p, "veil_transport_received_refused_total"), 0) << p->log();
    std::printf("reads paused: %.0f\n", Scrape(*p, "veil_transport_reads_paused_total"));
  }

  // Memory stays bounded: what a million 64-byte messages pass through is not kept. (Under
  // AddressSanitizer freed memory sits in its quarantine, so the bound is looser there.)
  constexpr size_t kGrowthKiB = (kAddressSanitizer ? 1024 : 256) * 1024;
  size_t rss_end[3] = {hub.rss_kib(), bob.rss_kib(), alice.rss_kib()};
  const char* names[3] = {"hub", "bob", "alice"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_LT(rss_end[i], rss_start[i] + kGrowthKiB)
        << names[i] << ": " << rss_start[i] << " -> " << rss_end[i] << " KiB";
    std::printf("%s RSS: %zu -> %zu KiB\n", names[i], rss_start[i], rss_end[i]);
  }
  // Every channel is still up and counted every message.
  auto stub = v1::SecureChannelService::NewStub(alice_api);
  grpc::ClientContext context;
  v1::ListSecureChannelsResponse list;
  ASSERT_TRUE(stub->ListSecureChannels(&context, {}, &list).ok());
  int established = 0;
  for (const auto& ch : list.channels())
    established += ch.state() == v1::SecureChannel::ESTABLISHED;
  EXPECT_EQ(established, kChannels);
}

}  // namespace
}  // namespace veil::testing
