// Access control in the router: fuzzed messages — any provenance (origin, via, relayed), a
// route over a few workers with different Admit policies, unknown names and /tcp hops, sent one
// by one or in batches — never reach a worker that does not admit them, and a /tcp hop is
// handed to the transport only when the real TCP transport's rule (NodeTransport::Admit: this
// node's workers, apps only when insecure, others only for allow-listed hops) says so. Every
// message that is not handed on is settled with an error.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "boost/asio/io_context.hpp"
#include "sidecar/core/router.h"
#include "sidecar/transport/node_transport.h"
#include "spdlog/sinks/null_sink.h"
#include "spdlog/spdlog.h"

namespace {

using veil::core::Message;
using veil::core::SenderInfo;

// A worker with a fixed policy that aborts on anything it should not have been given.
class Probe final : public veil::core::Worker {
 public:
  enum class Policy { kDefault, kAnyone, kCarrier, kSecureChannels };
  Probe(veil::core::Strand strand, Policy policy, veil::core::Carrier carrier)
      : Worker(std::move(strand)), policy_(policy), carrier_(carrier) {}
  absl::Status Admit(const SenderInfo& from) const override {
    switch (policy_) {
      case Policy::kDefault:
        return Worker::Admit(from);
      case Policy::kAnyone:
        return absl::OkStatus();
      case Policy::kCarrier:
        return from.origin == carrier_.origin && from.via == carrier_.via
                   ? absl::OkStatus()
                   : absl::PermissionDeniedError("not the carrier");
      case Policy::kSecureChannels:
        return from.origin == SenderInfo::Origin::kSecureChannel
                   ? absl::OkStatus()
                   : absl::PermissionDeniedError("not a channel");
    }
    return absl::InternalError("unreachable");
  }
  void HandleMessage(Message msg) override {
    if (!Admit(msg.sender).ok()) std::abort();
    msg.receipt.Settle(absl::OkStatus());
  }

 private:
  const Policy policy_;
  const veil::core::Carrier carrier_;
};

// Stands in for the node transport (TCP and Unix socket hops), with its real admission rule.
class CheckedTcp final : public veil::core::Transport {
 public:
  CheckedTcp(const veil::transport::NodeTransport& real, bool any_tcp)
      : real_(real), any_tcp_(any_tcp) {}
  void Send(Message msg) override {
    if (!real_.Admit(msg.sender, msg.onward.front()).ok()) std::abort();
    const auto origin = msg.sender.origin;
    const veil::core::Address& hop = msg.onward.front();
    auto hp = veil::core::ParseHostPort(hop.value());
    const bool insecure = real_.options().insecure_plaintext;
    const bool listed = hop.type() == veil::core::AddressType::kUds
                            ? hop.value() == "/tmp/listed.sock"
                            : any_tcp_ || (hp.ok() && hp->port == 4000 && hp->host == "127.0.0.1");
    const bool allowed = origin == SenderInfo::Origin::kLocal ||
                         (origin == SenderInfo::Origin::kApp && insecure) ||
                         (origin == SenderInfo::Origin::kTransport && listed) ||
                         (origin == SenderInfo::Origin::kSecureChannel && insecure && listed);
    if (!allowed) std::abort();
    msg.receipt.Settle(absl::OkStatus());
  }
  absl::Status Admit(const SenderInfo& from, const veil::core::Address& hop) const override {
    return real_.Admit(from, hop);
  }
  absl::StatusOr<std::shared_ptr<veil::core::Worker>> CarrierFor(
      const veil::core::Address&) override {
    return absl::UnavailableError("no connections here");
  }

 private:
  const veil::transport::NodeTransport& real_;
  const bool any_tcp_;
};

// Counts outcomes: every message must be settled exactly once.
class Outcomes final : public veil::core::SendTracker {
 public:
  void Complete(uint32_t, absl::Status) override { ++settled; }
  int settled = 0;
};

}  // namespace

// Each input makes a new router, whose refusal log starts afresh: on the console the smoke run
// printed some 370,000 warnings, which cost executions and drowned CI's log. They are still
// formatted (hostile names and reasons go through it), into a logger that writes nowhere.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_default_logger(spdlog::null_logger_mt("access_fuzz"));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  boost::asio::io_context io;
  veil::core::Router router(io);
  veil::transport::ConnectionOptions options;
  options.insecure_plaintext = in.ConsumeBool();
  (void)options.allow_dial.Add("127.0.0.1:4000");
  (void)options.allow_dial.Add("unix:/tmp/listed.sock");
  const bool any_tcp = in.ConsumeBool();
  if (any_tcp) (void)options.allow_dial.Add("*");  // never covers a Unix socket
  veil::transport::NodeTransport tcp(router, options);
  CheckedTcp checked(tcp, any_tcp);
  router.SetTransport(veil::core::AddressType::kTcp, &checked);
  router.SetTransport(veil::core::AddressType::kUds, &checked);
  const char* const kNames[] = {"apps", "anyone", "carrier", "channels"};
  for (int i = 0; i < 4; ++i) {
    auto probe = std::make_shared<Probe>(router.NewStrand(), static_cast<Probe::Policy>(i),
                                         veil::core::Carrier{SenderInfo::Origin::kTransport, 7});
    (void)router.StartWorker(kNames[i], probe);
  }
  const std::vector<std::string> hops = {"/service/apps",
                                         "/service/anyone",
                                         "/service/carrier",
                                         "/service/channels",
                                         "/service/nobody",
                                         "/tcp/127.0.0.1:4000",
                                         "/tcp/127.0.0.1:4001",
                                         "/tcp/10.0.0.1:4000",
                                         "/uds/%2Ftmp%2Flisted.sock",
                                         "/uds/%2Fvar%2Frun%2Fdocker.sock"};
  auto outcomes = std::make_shared<Outcomes>();
  uint32_t sent = 0;
  while (in.remaining_bytes() > 0) {
    std::vector<Message> batch;
    const int n = in.ConsumeIntegralInRange(1, 4);
    for (int k = 0; k < n; ++k) {
      Message msg;
      std::string route;
      const int length = in.ConsumeIntegralInRange(1, 3);
      for (int h = 0; h < length; ++h)
        route += hops[in.ConsumeIntegralInRange<size_t>(0, hops.size() - 1)];
      msg.onward = *veil::core::Route::Parse(route);
      msg.sender.origin = static_cast<SenderInfo::Origin>(in.ConsumeIntegralInRange(0, 3));
      msg.sender.via = in.ConsumeIntegralInRange<uint64_t>(0, 8);
      msg.sender.relayed = in.ConsumeBool();
      msg.payload = in.ConsumeRandomLengthString(16);
      if (in.ConsumeBool()) msg.refusal = absl::NotFoundError("a notice");
      msg.receipt = veil::core::Receipt(outcomes, sent++);
      batch.push_back(std::move(msg));
    }
    if (in.ConsumeBool()) {
      router.SendBatch(std::move(batch));
    } else {
      for (Message& msg : batch) router.Send(std::move(msg));
    }
    io.restart();  // a poll that ran out of work leaves the context stopped
    io.poll();
  }
  io.restart();
  io.poll();
  if (outcomes->settled != static_cast<int>(sent)) {
    fprintf(stderr, "settled %d of %u\n", outcomes->settled, sent);
    std::abort();
  }
  router.SetTransport(veil::core::AddressType::kTcp, nullptr);
  router.SetTransport(veil::core::AddressType::kUds, nullptr);
  router.StopAll();
  io.restart();
  io.poll();
  return 0;
}
