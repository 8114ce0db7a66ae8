#include "sidecar/core/router.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "tests/support/recording_tracker.h"

namespace veil::core {
namespace {

// Records what it receives; checks that calls never overlap (strand serialisation).
class RecordingWorker final : public Worker {
 public:
  using Worker::Worker;
  void HandleMessage(Message msg) override {
    EXPECT_FALSE(busy_.exchange(true));
    msg.receipt.Settle(absl::OkStatus());
    {
      std::lock_guard lock(mu_);
      payloads_.push_back(msg.refusal.ok() ? msg.payload : "refusal: " + ReasonOf(msg.refusal));
      onward_.push_back(msg.onward.ToString());
      cv_.notify_all();
    }
    busy_.store(false);
  }
  void HandleBatch(std::vector<Message> msgs) override {
    {
      std::lock_guard lock(mu_);
      batch_sizes_.push_back(msgs.size());
    }
    Worker::HandleBatch(std::move(msgs));
  }
  void OnStop() override { stopped_.set_value(); }
  bool TakesRefusals() const override { return takes_refusals_; }

  bool takes_refusals_ = false;
  bool WaitFor(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return payloads_.size() >= n; });
  }
  std::vector<std::string> payloads() {
    std::lock_guard lock(mu_);
    return payloads_;
  }
  std::vector<std::string> onward() {
    std::lock_guard lock(mu_);
    return onward_;
  }
  std::vector<size_t> batch_sizes() {
    std::lock_guard lock(mu_);
    return batch_sizes_;
  }
  std::promise<void> stopped_;

 private:
  std::atomic<bool> busy_{false};
  std::mutex mu_;  // std, not absl: TSan sees through it
  std::condition_variable cv_;
  std::vector<std::string> payloads_;
  std::vector<std::string> onward_;
  std::vector<size_t> batch_sizes_;
};

using Outcomes = veil::testing::RecordingTracker;

class RouterTest : public ::testing::Test {
 protected:
  RouterTest() : work_(boost::asio::make_work_guard(io_)) {
    for (int i = 0; i < 4; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~RouterTest() override {
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
  }
  Message Make(absl::string_view route, std::string payload,
               std::shared_ptr<SendTracker> tracker = nullptr, uint32_t index = 0) {
    Message m;
    m.onward = *Route::Parse(route);
    m.payload = std::move(payload);
    if (tracker) m.receipt = Receipt(std::move(tracker), index);
    return m;
  }

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  Router router_{io_};
};

TEST_F(RouterTest, DeliversLocallyInOrderWithOwnHopRemoved) {
  auto worker = std::make_shared<RecordingWorker>(router_.NewStrand());
  ASSERT_TRUE(router_.StartWorker("echoer", worker).ok());
  auto outcomes = std::make_shared<Outcomes>();
  for (int i = 0; i < 1000; ++i) {
    router_.Send(Make("/service/echoer/service/next", std::to_string(i), outcomes, i));
  }
  ASSERT_TRUE(worker->WaitFor(1000));
  auto payloads = worker->payloads();
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(payloads[i], std::to_string(i));
  EXPECT_EQ(worker->onward()[0], "/service/next");
  auto results = outcomes->Wait(1000);
  for (auto& [index, status] : results) EXPECT_TRUE(status.ok()) << status;
}

TEST_F(RouterTest, UnknownAddressFailsWithRouteNotFound) {
  auto outcomes = std::make_shared<Outcomes>();
  router_.Send(Make("/service/nobody", "x", outcomes));
  auto results = outcomes->Wait(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].second.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReasonOf(results[0].second), "ROUTE_NOT_FOUND");
  EXPECT_NE(results[0].second.message().find("/service/nobody"), std::string::npos);
}

TEST_F(RouterTest, RemoteHopWithoutTransportFails) {
  auto outcomes = std::make_shared<Outcomes>();
  router_.Send(Make("/tcp/127.0.0.1:9/service/x", "x", outcomes));
  auto results = outcomes->Wait(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].second.code(), absl::StatusCode::kUnavailable);
}

TEST_F(RouterTest, DroppedMessageReportsDropped) {
  auto outcomes = std::make_shared<Outcomes>();
  { Message m = Make("/service/x", "x", outcomes, 7); }
  auto results = outcomes->Wait(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].first, 7u);
  EXPECT_EQ(ReasonOf(results[0].second), "MESSAGE_DROPPED");
}

// A message read from a connection (paced, origin kTransport) that cannot be handed on sends a
// refusal notice back along its return route, to workers that take them; nothing else does,
// and nothing is sent about a notice.
TEST_F(RouterTest, RefusalNoticeGoesBackOnlyForMessagesFromAfar) {
  auto back = std::make_shared<RecordingWorker>(router_.NewStrand());
  back->takes_refusals_ = true;
  auto plain = std::make_shared<RecordingWorker>(router_.NewStrand());
  ASSERT_TRUE(router_.StartWorker("back", back).ok());
  ASSERT_TRUE(router_.StartWorker("plain", plain).ok());

  Message local = Make("/service/nobody", "local");
  local.return_route = *Route::Parse("/service/back");
  router_.Send(std::move(local));  // from this node: its sender sees the receipt

  Message afar = Make("/service/nobody", "afar");
  afar.return_route = *Route::Parse("/service/back/service/far");
  afar.paced = true;
  afar.sender.origin = SenderInfo::Origin::kTransport;
  router_.Send(std::move(afar));
  ASSERT_TRUE(back->WaitFor(1));
  EXPECT_EQ(back->payloads(), std::vector<std::string>{"refusal: ROUTE_NOT_FOUND"});
  EXPECT_EQ(back->onward()[0], "/service/far");
  EXPECT_EQ(router_.stats().notices_sent, 1u);

  // A notice that cannot be delivered is dropped, with no notice about it.
  Message notice = Make("/service/nobody", "");
  notice.refusal = absl::NotFoundError("x");
  notice.return_route = *Route::Parse("/service/back");
  notice.paced = true;
  notice.sender.origin = SenderInfo::Origin::kTransport;
  router_.Send(std::move(notice));
  // A notice for a worker that does not take them is dropped, settled OK.
  auto outcomes = std::make_shared<Outcomes>();
  Message to_plain = Make("/service/plain", "", outcomes);
  to_plain.refusal = absl::NotFoundError("x");
  router_.Send(std::move(to_plain));
  auto results = outcomes->Wait(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].second.ok());
  EXPECT_EQ(router_.stats().notices_sent, 1u);
  EXPECT_TRUE(plain->payloads().empty());
  EXPECT_EQ(back->payloads().size(), 1u);
}

// Access control: a worker takes only the provenances it admits (by default this node's apps
// and workers); the router refuses the rest before the worker sees them, counts them by
// provenance, and sends a notice back for what came from afar, echoing its path tag.
TEST_F(RouterTest, WorkersAdmitByProvenanceTheRestIsRefusedAndCounted) {
  auto guarded = std::make_shared<RecordingWorker>(router_.NewStrand());
  auto back = std::make_shared<RecordingWorker>(router_.NewStrand());
  back->takes_refusals_ = true;
  ASSERT_TRUE(router_.StartWorker("guarded", guarded).ok());
  ASSERT_TRUE(router_.StartWorker("back", back).ok());
  EXPECT_NE(guarded->id(), 0u);
  EXPECT_NE(guarded->id(), back->id());
  auto outcomes = std::make_shared<Outcomes>();
  auto from = [&](SenderInfo::Origin origin, std::string payload, uint32_t index) {
    Message m = Make("/service/guarded", std::move(payload), outcomes, index);
    m.sender.origin = origin;
    m.sender.via = 42;
    m.return_route = *Route::Parse("/service/back/service/far");
    m.paced = origin == SenderInfo::Origin::kTransport;
    m.path_tag = 0xfeed;
    return m;
  };
  router_.Send(from(SenderInfo::Origin::kTransport, "from afar", 0));
  router_.Send(from(SenderInfo::Origin::kSecureChannel, "decrypted", 1));
  router_.Send(from(SenderInfo::Origin::kApp, "app", 2));
  router_.Send(from(SenderInfo::Origin::kLocal, "worker", 3));
  std::vector<Message> batch;
  batch.push_back(from(SenderInfo::Origin::kApp, "b1", 4));
  batch.push_back(from(SenderInfo::Origin::kTransport, "b2", 5));
  batch.push_back(from(SenderInfo::Origin::kApp, "b3", 6));
  router_.SendBatch(std::move(batch));
  auto results = outcomes->Wait(7);
  ASSERT_EQ(results.size(), 7u);
  std::sort(results.begin(), results.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (uint32_t refused : {0u, 1u, 5u}) {
    EXPECT_EQ(results[refused].second.code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(ReasonOf(results[refused].second), "ACCESS_DENIED");
  }
  for (uint32_t ok : {2u, 3u, 4u, 6u}) EXPECT_TRUE(results[ok].second.ok()) << ok;
  ASSERT_TRUE(guarded->WaitFor(4));
  EXPECT_EQ(guarded->payloads(), (std::vector<std::string>{"app", "worker", "b1", "b3"}));
  // A notice went back for each of the three: two from the network, one out of a channel
  // (whose notice goes back through it).
  ASSERT_TRUE(back->WaitFor(3));
  EXPECT_EQ(back->payloads(),
            (std::vector<std::string>{"refusal: ACCESS_DENIED", "refusal: ACCESS_DENIED",
                                      "refusal: ACCESS_DENIED"}));
  const Router::Stats stats = router_.stats();
  EXPECT_EQ(stats.access_denied[static_cast<size_t>(SenderInfo::Origin::kTransport)], 2u);
  EXPECT_EQ(stats.access_denied[static_cast<size_t>(SenderInfo::Origin::kSecureChannel)], 1u);
  EXPECT_EQ(stats.access_denied[static_cast<size_t>(SenderInfo::Origin::kApp)], 0u);
  // Asked ahead of sending, the router says the same.
  SenderInfo network;
  network.origin = SenderInfo::Origin::kTransport;
  EXPECT_EQ(ReasonOf(router_.CheckAccess(*Route::Parse("/service/guarded"), network)),
            "ACCESS_DENIED");
  EXPECT_TRUE(router_.CheckAccess(*Route::Parse("/service/guarded"), SenderInfo{}).ok());
  EXPECT_TRUE(router_.CheckAccess(*Route::Parse("/service/nobody"), network).ok());
}

// A refusal notice carries the path tag of the message it refuses.
TEST_F(RouterTest, RefusalNoticesEchoThePathTag) {
  class TagRecorder final : public Worker {
   public:
    using Worker::Worker;
    bool TakesRefusals() const override { return true; }
    void HandleMessage(Message msg) override {
      msg.receipt.Settle(absl::OkStatus());
      tag.set_value(msg.path_tag);
    }
    std::promise<uint64_t> tag;
  };
  auto back = std::make_shared<TagRecorder>(router_.NewStrand());
  ASSERT_TRUE(router_.StartWorker("back", back).ok());
  Message afar = Make("/service/nobody", "x");
  afar.return_route = *Route::Parse("/service/back");
  afar.paced = true;
  afar.sender.origin = SenderInfo::Origin::kTransport;
  afar.path_tag = 0x1234567890abcdef;
  router_.Send(std::move(afar));
  auto tag = back->tag.get_future();
  ASSERT_EQ(tag.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(tag.get(), 0x1234567890abcdefu);
}

// A /tcp hop is judged by its transport before the transport is given the message.
TEST_F(RouterTest, TransportHopsAreJudgedByTheTransport) {
  class Judging final : public Transport {
   public:
    void Send(Message msg) override {
      ++sent;
      msg.receipt.Settle(absl::OkStatus());
    }
    absl::Status Admit(const SenderInfo& from, const Address&) const override {
      return from.origin == SenderInfo::Origin::kLocal
                 ? absl::OkStatus()
                 : ErrorWithReason(absl::StatusCode::kPermissionDenied, "no", "DIAL_REFUSED");
    }
    absl::StatusOr<std::shared_ptr<Worker>> CarrierFor(const Address&) override {
      return absl::UnavailableError("none");
    }
    std::atomic<int> sent{0};
  } judging;
  router_.SetTransport(AddressType::kTcp, &judging);
  auto outcomes = std::make_shared<Outcomes>();
  Message local = Make("/tcp/127.0.0.1:9/service/x", "mine", outcomes, 0);
  Message afar = Make("/tcp/127.0.0.1:9/service/x", "theirs", outcomes, 1);
  afar.sender.origin = SenderInfo::Origin::kTransport;
  router_.Send(std::move(local));
  router_.Send(std::move(afar));
  auto results = outcomes->Wait(2);
  router_.SetTransport(AddressType::kTcp, nullptr);
  ASSERT_EQ(results.size(), 2u);
  std::sort(results.begin(), results.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  EXPECT_TRUE(results[0].second.ok());
  EXPECT_EQ(ReasonOf(results[1].second), "DIAL_REFUSED");
  EXPECT_EQ(judging.sent.load(), 1);
}

TEST_F(RouterTest, AddressConflictAndStop) {
  auto a = std::make_shared<RecordingWorker>(router_.NewStrand());
  auto b = std::make_shared<RecordingWorker>(router_.NewStrand());
  ASSERT_TRUE(router_.StartWorker("svc", a).ok());
  absl::Status taken = router_.StartWorker("svc", b);
  EXPECT_EQ(taken.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ReasonOf(taken), "ADDRESS_IN_USE");
  EXPECT_FALSE(router_.StopWorker("svc", b.get()));  // not the owner
  EXPECT_TRUE(router_.StopWorker("svc", a.get()));
  EXPECT_EQ(a->stopped_.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(router_.StartWorker("svc", b).ok());
  EXPECT_EQ(router_.StartWorker("bad name", b).code(), absl::StatusCode::kInvalidArgument);
  // A worker is at one address at a time (the router keys it by its own address).
  EXPECT_EQ(router_.StartWorker("svc2", b).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(b->address(), "svc");
  EXPECT_EQ(router_.WorkerNames(), std::vector<std::string>{"svc"});
  EXPECT_TRUE(router_.StopWorker("svc", b.get()));
  EXPECT_TRUE(router_.StartWorker("svc2", b).ok());  // stopped, it may start elsewhere
  EXPECT_EQ(router_.WorkerNames(), std::vector<std::string>{"svc2"});
}

// A stopped worker's epitaph answers for its address (until a worker starts there again, or
// kEpitaphs later stops push it out); a prefix's explanation answers for names never seen.
TEST_F(RouterTest, StoppedWorkersLeaveAnEpitaphAndPrefixesExplainAbsence) {
  auto refused = [this](absl::string_view route) {
    auto outcomes = std::make_shared<Outcomes>();
    router_.Send(Make(route, "x", outcomes));
    auto results = outcomes->Wait(1);
    return results.size() == 1 ? results[0].second : absl::InternalError("no outcome");
  };
  auto worker = std::make_shared<RecordingWorker>(router_.NewStrand());
  ASSERT_TRUE(router_.StartWorker("chan", worker).ok());
  ASSERT_TRUE(router_.StopWorker(
      "chan", nullptr,
      ErrorWithReason(absl::StatusCode::kUnavailable, "chan is closed", "CHANNEL_CLOSED")));
  absl::Status s = refused("/service/chan/service/app");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReasonOf(s), "CHANNEL_CLOSED");
  EXPECT_EQ(s.message(), "chan is closed");
  // A worker started there again is reached, and once it stops without one, the address is
  // simply unknown.
  auto again = std::make_shared<RecordingWorker>(router_.NewStrand());
  ASSERT_TRUE(router_.StartWorker("chan", again).ok());
  EXPECT_TRUE(refused("/service/chan").ok());
  ASSERT_TRUE(router_.StopWorker("chan"));
  EXPECT_EQ(ReasonOf(refused("/service/chan")), "ROUTE_NOT_FOUND");

  // Bounded: the oldest epitaph goes first.
  for (size_t i = 0; i <= Router::kEpitaphs; ++i) {
    std::string name = absl::StrCat("w", i);
    ASSERT_TRUE(
        router_.StartWorker(name, std::make_shared<RecordingWorker>(router_.NewStrand())).ok());
    ASSERT_TRUE(router_.StopWorker(name, nullptr, absl::UnavailableError(name + " went")));
  }
  EXPECT_EQ(ReasonOf(refused("/service/w0")), "ROUTE_NOT_FOUND");
  EXPECT_EQ(refused("/service/w1").message(), "w1 went");
  EXPECT_EQ(refused(absl::StrCat("/service/w", Router::kEpitaphs)).message(),
            absl::StrCat("w", Router::kEpitaphs, " went"));

  router_.ExplainAbsence("forward_to_", [](absl::string_view name) {
    return ErrorWithReason(absl::StatusCode::kNotFound, absl::StrCat("no relay ", name.substr(11)),
                           "RELAY_NOT_FOUND");
  });
  s = refused("/service/forward_to_bob/service/listener");
  EXPECT_EQ(ReasonOf(s), "RELAY_NOT_FOUND");
  EXPECT_EQ(s.message(), "no relay bob");
  EXPECT_EQ(ReasonOf(refused("/service/other")), "ROUTE_NOT_FOUND");
}

TEST_F(RouterTest, ConcurrentSendersKeepPerSenderOrder) {
  auto worker = std::make_shared<RecordingWorker>(router_.NewStrand());
  ASSERT_TRUE(router_.StartWorker("sink", worker).ok());
  std::vector<std::thread> senders;
  for (int s = 0; s < 4; ++s) {
    senders.emplace_back([this, s] {
      for (int i = 0; i < 500; ++i) router_.Send(Make("/service/sink", absl::StrCat(s, ":", i)));
    });
  }
  for (auto& t : senders) t.join();
  ASSERT_TRUE(worker->WaitFor(2000));
  std::vector<int> last(4, -1);
  for (const std::string& p : worker->payloads()) {
    int s = p[0] - '0';
    int i = std::stoi(p.substr(2));
    EXPECT_EQ(i, last[s] + 1);
    last[s] = i;
  }
}

TEST_F(RouterTest, StopAllRefusesNewWorkers) {
  router_.StopAll();
  auto w = std::make_shared<RecordingWorker>(router_.NewStrand());
  EXPECT_EQ(router_.StartWorker("late", w).code(), absl::StatusCode::kFailedPrecondition);
}

// SendBatch hands each run of consecutive messages for one local worker over in one go, in
// order, with the worker's hop removed; anything else is routed (and refused) as Send would.
TEST_F(RouterTest, SendBatchHandsRunsOverTogetherInOrder) {
  auto a = std::make_shared<RecordingWorker>(router_.NewStrand());
  auto b = std::make_shared<RecordingWorker>(router_.NewStrand());
  ASSERT_TRUE(router_.StartWorker("a", a).ok());
  ASSERT_TRUE(router_.StartWorker("b", b).ok());
  auto outcomes = std::make_shared<Outcomes>();
  std::vector<Message> msgs;
  uint32_t index = 0;
  for (int i = 0; i < 3; ++i)
    msgs.push_back(Make("/service/a/service/x", "a" + std::to_string(i), outcomes, index++));
  msgs.push_back(Make("/service/b", "b0", outcomes, index++));
  msgs.push_back(Make("/service/nobody", "lost", outcomes, index++));
  for (int i = 3; i < 5; ++i)
    msgs.push_back(Make("/service/a", "a" + std::to_string(i), outcomes, index++));
  router_.SendBatch(std::move(msgs));
  ASSERT_TRUE(a->WaitFor(5));
  ASSERT_TRUE(b->WaitFor(1));
  EXPECT_EQ(a->payloads(), (std::vector<std::string>{"a0", "a1", "a2", "a3", "a4"}));
  EXPECT_EQ(a->onward()[0], "/service/x");
  EXPECT_EQ(a->batch_sizes(), (std::vector<size_t>{3, 2}));
  EXPECT_TRUE(b->batch_sizes().empty());  // a run of one goes as a single message
  auto results = outcomes->Wait(7);
  ASSERT_EQ(results.size(), 7u);
  for (auto& [i, status] : results) {
    if (i == 4) {
      EXPECT_EQ(ReasonOf(status), "ROUTE_NOT_FOUND");
    } else {
      EXPECT_TRUE(status.ok()) << i << ": " << status;
    }
  }
  EXPECT_EQ(router_.stats().routed, 7u);

  // A whole batch for one worker nobody serves: each message is refused.
  auto lost = std::make_shared<Outcomes>();
  std::vector<Message> none;
  for (uint32_t i = 0; i < 3; ++i) none.push_back(Make("/service/gone", "x", lost, i));
  router_.SendBatch(std::move(none));
  auto refused = lost->Wait(3);
  ASSERT_EQ(refused.size(), 3u);
  for (auto& [i, status] : refused) EXPECT_EQ(ReasonOf(status), "ROUTE_NOT_FOUND");
}

// A worker that handles messages on any thread is called by the sender itself, in order, with
// its own hop removed; Send and SendBatch alike.
TEST_F(RouterTest, AnyThreadWorkerIsCalledDirectlyBySender) {
  class Direct final : public Worker {
   public:
    using Worker::Worker;
    void HandleMessage(Message msg) override {
      threads.push_back(std::this_thread::get_id());
      payloads.push_back(msg.payload + msg.onward.ToString());
      msg.receipt.Settle(absl::OkStatus());
    }
    bool HandlesOnAnyThread() const override { return true; }
    // Only touched by this test's thread: every call is synchronous.
    std::vector<std::thread::id> threads;
    std::vector<std::string> payloads;
  };
  auto direct = std::make_shared<Direct>(router_.NewStrand());
  ASSERT_TRUE(router_.StartWorker("direct", direct).ok());
  auto outcomes = std::make_shared<Outcomes>();
  router_.Send(Make("/service/direct/service/x", "0", outcomes, 0));
  std::vector<Message> msgs;
  for (uint32_t i = 1; i < 4; ++i)
    msgs.push_back(Make("/service/direct", std::to_string(i), outcomes, i));
  router_.SendBatch(std::move(msgs));
  // Synchronous: everything is there before Send/SendBatch return.
  EXPECT_EQ(direct->payloads, (std::vector<std::string>{"0/service/x", "1", "2", "3"}));
  for (auto id : direct->threads) EXPECT_EQ(id, std::this_thread::get_id());
  auto results = outcomes->Wait(4);
  ASSERT_EQ(results.size(), 4u);
  for (auto& [i, status] : results) EXPECT_TRUE(status.ok()) << i << ": " << status;
}

// From a handler on an io thread, a message to a worker whose strand is idle is handled at
// once, on that thread (no trip through the scheduler); a worker sending to itself is never
// re-entered; a sender that is not an io thread only queues.
TEST_F(RouterTest, StrandWorkerRunsInlineFromAnIoThreadButIsNeverReentered) {
  struct Shared {
    std::atomic<int> depth{0};
    std::atomic<bool> reentered{false};
    std::promise<void> done;
    std::atomic<std::thread::id> b_thread{};
  };
  auto shared = std::make_shared<Shared>();
  class B final : public Worker {
   public:
    B(Strand strand, std::shared_ptr<Shared> s) : Worker(std::move(strand)), s_(std::move(s)) {}
    void HandleMessage(Message msg) override {
      s_->b_thread = std::this_thread::get_id();
      msg.receipt.Settle(absl::OkStatus());
    }

   private:
    std::shared_ptr<Shared> s_;
  };
  class A final : public Worker {
   public:
    A(Strand strand, std::shared_ptr<Shared> s) : Worker(std::move(strand)), s_(std::move(s)) {}
    void HandleMessage(Message msg) override {
      if (s_->depth.fetch_add(1) != 0) s_->reentered = true;
      if (msg.payload == "to b") {
        s_->b_thread = std::thread::id();
        Message m;
        m.onward = *Route::Parse("/service/b");
        router().Send(std::move(m));
        inline_b = s_->b_thread.load() == std::this_thread::get_id();
        Message again;
        again.onward = *Route::Parse("/service/a");
        again.payload = "to self";
        router().Send(std::move(again));  // queued behind this call, not run inside it
      } else {
        s_->done.set_value();
      }
      s_->depth.fetch_sub(1);
    }
    bool inline_b = false;  // read after `done`

   private:
    std::shared_ptr<Shared> s_;
  };
  auto a = std::make_shared<A>(router_.NewStrand(), shared);
  auto b = std::make_shared<B>(router_.NewStrand(), shared);
  ASSERT_TRUE(router_.StartWorker("a", a).ok());
  ASSERT_TRUE(router_.StartWorker("b", b).ok());
  router_.Send(Make("/service/a", "to b"));
  ASSERT_EQ(shared->done.get_future().wait_for(std::chrono::seconds(10)),
            std::future_status::ready);
  EXPECT_TRUE(a->inline_b) << "b was not handled inline from a's io thread";
  EXPECT_FALSE(shared->reentered) << "a worker sending to itself was re-entered";
  // From this thread (not one of the io_context's): queued, handled on an io thread.
  auto outcomes = std::make_shared<Outcomes>();
  router_.Send(Make("/service/b", "", outcomes, 0));
  ASSERT_EQ(outcomes->Wait(1).size(), 1u);
  EXPECT_NE(shared->b_thread.load(), std::this_thread::get_id());
}

// The parts of a split receipt settle the whole once all have, with the first error; a joined
// receipt settles every part with its status; dropping either reports MESSAGE_DROPPED.
TEST(ReceiptTest, SplitAndJoin) {
  auto whole = std::make_shared<Outcomes>();
  {
    std::vector<Receipt> parts = SplitReceipt(Receipt(whole, 9), 3);
    ASSERT_EQ(parts.size(), 3u);
    parts[0].Settle(absl::OkStatus());
    parts[2].Settle(absl::ResourceExhaustedError("full"));
    EXPECT_TRUE(whole->Wait(0).empty());  // one part still pending
    parts[1].Settle(absl::UnavailableError("later error"));
  }
  auto results = whole->Wait(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].first, 9u);
  EXPECT_EQ(results[0].second.code(), absl::StatusCode::kResourceExhausted);

  auto all_ok = std::make_shared<Outcomes>();
  {
    std::vector<Receipt> parts = SplitReceipt(Receipt(all_ok, 1), 2);
    for (Receipt& p : parts) p.Settle(absl::OkStatus());
  }
  ASSERT_EQ(all_ok->Wait(1).size(), 1u);
  EXPECT_TRUE(all_ok->Wait(1)[0].second.ok());

  auto dropped = std::make_shared<Outcomes>();
  { std::vector<Receipt> parts = SplitReceipt(Receipt(dropped, 0), 4); }  // nobody settles
  ASSERT_EQ(dropped->Wait(1).size(), 1u);
  EXPECT_EQ(ReasonOf(dropped->Wait(1)[0].second), "MESSAGE_DROPPED");
  EXPECT_TRUE(SplitReceipt(Receipt(), 3)[0].pending() == false);

  auto parts = std::make_shared<Outcomes>();
  {
    std::vector<Receipt> each;
    for (uint32_t i = 0; i < 3; ++i) each.emplace_back(parts, i);
    each.emplace_back();  // not pending: left out
    Receipt joined = JoinReceipts(std::move(each));
    ASSERT_TRUE(joined.pending());
    joined.Settle(absl::UnavailableError("connection lost"));
  }
  auto joined_results = parts->Wait(3);
  ASSERT_EQ(joined_results.size(), 3u);
  for (auto& [i, status] : joined_results) EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(JoinReceipts({}).pending());

  auto unsettled = std::make_shared<Outcomes>();
  {
    std::vector<Receipt> each;
    for (uint32_t i = 0; i < 2; ++i) each.emplace_back(unsettled, i);
    Receipt joined = JoinReceipts(std::move(each));
  }
  auto dropped_parts = unsettled->Wait(2);
  ASSERT_EQ(dropped_parts.size(), 2u);
  for (auto& [i, status] : dropped_parts) EXPECT_EQ(ReasonOf(status), "MESSAGE_DROPPED");
}

}  // namespace
}  // namespace veil::core
