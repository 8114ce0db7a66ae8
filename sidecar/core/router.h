// Router: the actor runtime's switchboard. It owns the table of local workers and routes each
// message by its first onward hop: to a local worker's strand, or to the transport registered
// for the hop's address type (e.g. TCP). It never blocks and never drops a message silently:
// every failure settles the message's receipt with a status and a reason.
//
// Access control is the router's job (docs/security.md): before a message is handed to a
// worker, the worker's Admit() judges its provenance; before it is handed to a transport, the
// transport's Admit() judges the hop (what may make this node dial where). What is not
// admitted is refused — its receipt settled with the refusal, a refusal notice sent back when
// it came from the network — counted (Stats::access_denied) and logged, rate-limited.
//
// Thread-safety: all methods may be called from any thread.
#ifndef VEIL_SIDECAR_CORE_ROUTER_H_
#define VEIL_SIDECAR_CORE_ROUTER_H_

#include <array>
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "boost/asio/io_context.hpp"
#include "sidecar/common/log_limiter.h"
#include "sidecar/common/mutex.h"
#include "sidecar/core/message.h"
#include "sidecar/core/worker.h"

namespace veil::core {

// Carries messages whose first hop is of one non-local address type.
class Transport {
 public:
  virtual ~Transport() = default;
  // Takes `msg`, whose onward route starts with an address of this transport's type and which
  // Admit() let through. Settles the receipt on failure. May be called from any thread.
  virtual void Send(Message msg) = 0;
  // Whether a message from `from` may go to `hop` (of this transport's type): OK, or the
  // refusal. Any thread.
  virtual absl::Status Admit(const SenderInfo& from, const Address& hop) const = 0;
  // The worker that carries messages to `hop` (a connection), opened if need be, for a secure
  // channel that must know what its replies arrive through. Any thread.
  virtual absl::StatusOr<std::shared_ptr<Worker>> CarrierFor(const Address& hop) = 0;
};

class Router {
 public:
  explicit Router(boost::asio::io_context& io) : io_(io) {}
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  boost::asio::io_context& io() { return io_; }
  // A new strand on the router's io_context, for a new worker.
  Strand NewStrand() { return boost::asio::make_strand(io_); }

  // Starts `worker` at local address `name`. INVALID_ARGUMENT for a bad name; ALREADY_EXISTS
  // (reason ADDRESS_IN_USE) when the address is taken; FAILED_PRECONDITION once shut down.
  absl::Status StartWorker(std::string name, std::shared_ptr<Worker> worker);

  // Starts `worker` at a fresh, unguessable address "<prefix><11 letters and digits>" and returns
  // it;
  // "" once shut down.
  std::string StartWorkerWithPrefix(absl::string_view prefix, std::shared_ptr<Worker> worker);

  // Removes the worker at `name` if it is `expected` (any worker when null); its OnStop then
  // runs on its strand. Messages already queued to it are still handled. Returns whether a
  // worker was removed. `epitaph`, when not OK, is what a message sent to `name` from then on
  // is refused with instead of ROUTE_NOT_FOUND (kept for the last kEpitaphs stopped workers, or
  // until a worker starts there again): so a sender learns why the address went, the same way
  // every time.
  bool StopWorker(absl::string_view name, const Worker* expected = nullptr,
                  absl::Status epitaph = absl::OkStatus());
  static constexpr size_t kEpitaphs = 4096;

  // What a message to a missing worker whose name starts with `prefix` is refused with, instead
  // of ROUTE_NOT_FOUND (e.g. a hub: "no relay named x"). `explain` gets the whole name and runs
  // on any thread; an epitaph takes precedence.
  void ExplainAbsence(std::string prefix,
                      std::function<absl::Status(absl::string_view name)> explain);

  // Messages for a missing worker whose name starts with `prefix` go to `stand_in` instead
  // (admitted by its Admit), their onward route untouched: its first hop still names the
  // missing worker. It decides, before any epitaph or explanation (which it may give itself,
  // from NoWorker). A hub's mesh takes its relay names this way: the relay is on another
  // replica. The stand-in is not started at an address of its own (its router() and id() are
  // not set); StopAll drops it, after its OnStop.
  void StandIn(std::string prefix, std::shared_ptr<Worker> stand_in);

  // Why there is no worker at `name` (which there is not): its epitaph, the explanation of its
  // prefix, or NOT_FOUND ROUTE_NOT_FOUND naming `hop`.
  absl::Status NoWorker(absl::string_view name, const Address& hop) const;

  // Removes every worker (as StopWorker) and refuses new ones. For shutdown.
  void StopAll();

  // Routes `msg` by its first onward hop. A local hop is removed from the onward route before
  // the worker sees the message. Failures (empty route, unknown local address -> NOT_FOUND
  // ROUTE_NOT_FOUND, no transport for the type) settle the receipt.
  void Send(Message msg);

  // Routes `msgs` in order, as Send would one by one, but hands each run of consecutive
  // messages to the same local worker over in one go (Worker::HandleBatch): one lookup and one
  // strand hop per run instead of per message.
  void SendBatch(std::vector<Message> msgs);

  // Settles `msg`'s receipt with `why` (not OK). When `msg` came from another node — off a
  // connection (paced), or out of a secure channel — and has a return route, also sends a
  // refusal notice back along it (through the channel, for a decrypted one), so the sender's
  // node learns: a sender far away cannot see this node's receipts.
  void Refuse(Message msg, absl::Status why);

  // Registers the transport for `type` (not kLocal). `transport` must outlive the router.
  void SetTransport(AddressType type, Transport* transport);

  // The worker at `name`, or null.
  std::shared_ptr<Worker> Find(absl::string_view name) const;
  // The stand-in for a missing worker named `name`, or null.
  std::shared_ptr<Worker> StandInFor(absl::string_view name) const;

  // True when a message on `route` would leave this host at its first hop: a non-local hop,
  // or a local worker that LeavesHost().
  bool LeavesHost(const Route& route) const;

  // What Send would decide on admission for a message from `from` on `route`, without
  // sending it: OK, or the refusal. OK too when the first hop has no worker or transport (Send
  // reports that). For callers that check a batch before sending any of it.
  absl::Status CheckAccess(const Route& route, const SenderInfo& from) const;

  // The worker that carries `route`'s first hop: the worker there, or the connection a
  // transport uses (opened if need be) for a non-local hop — for a secure channel, which must
  // know what its replies will arrive through (Worker::CarrierOf). NOT_FOUND / UNAVAILABLE
  // when there is none.
  absl::StatusOr<std::shared_ptr<Worker>> CarrierWorker(const Route& route);

  // Local addresses in use, sorted.
  std::vector<std::string> WorkerNames() const;

  // Counters since start, for metrics.
  struct Stats {
    uint64_t routed = 0;        // messages given to Send
    uint64_t unroutable = 0;    // refused at once: unknown local address, no transport
    uint64_t notices_sent = 0;  // refusal notices sent back to a far sender's node
    // Refused by access control, by the provenance they had (SenderInfo::Origin order).
    std::array<uint64_t, 4> access_denied{};
  };
  Stats stats() const;

 private:
  boost::asio::io_context& io_;
  mutable veil::Mutex mu_;
  // Refuses `msg` for access control: counts, logs (rate-limited), settles and notifies.
  void Deny(Message msg, absl::Status why, absl::string_view to);
  Transport* TransportFor(const Address& hop) const;

  // Keyed by each worker's own address_ (a view: the entry holds the worker, so its key lives
  // as long as the entry; one copy of each name instead of two).
  absl::flat_hash_map<absl::string_view, std::shared_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, absl::Status> epitaphs_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> epitaph_order_ ABSL_GUARDED_BY(mu_);  // oldest first
  std::vector<std::pair<std::string, std::shared_ptr<Worker>>> stand_ins_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, std::function<absl::Status(absl::string_view)>>> absences_
      ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_worker_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::array<std::atomic<Transport*>, kAddressTypes> transports_{};  // by AddressType
  std::atomic<uint64_t> routed_{0}, unroutable_{0}, notices_sent_{0};
  std::array<std::atomic<uint64_t>, 4> access_denied_{};
  LogLimiter deny_log_;
};

}  // namespace veil::core

#endif  // VEIL_SIDECAR_CORE_ROUTER_H_
