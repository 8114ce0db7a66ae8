// Worker: an actor at a local address. Each worker runs on its own strand: its HandleMessage
// calls never overlap and arrive in the order they were routed to it.
//
// Access control: every worker declares, in Admit(), which provenances (Message::sender) may
// send to it; the router asks before it hands a message on and refuses — and counts — the
// rest, so a worker never sees what it does not admit. The default admits this node's apps and
// workers only: a worker reachable from the network says so. docs/security.md has the table.
//
// Thread-safety: HandleMessage and OnStop run only on strand(). address(), id(), router(),
// Admit() and Carrier() may be called from any thread once the worker has been started.
#ifndef VEIL_SIDECAR_CORE_WORKER_H_
#define VEIL_SIDECAR_CORE_WORKER_H_

#include <string>
#include <vector>

#include "boost/asio/dispatch.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/strand.hpp"
#include "sidecar/core/message.h"

namespace veil::core {

class Router;

// Where replies that come back through a worker arrive from, as their provenance says: a
// connection's replies are read from it (kTransport, via = its id), a secure channel's come out
// of its decryptor (kSecureChannel, via = its encryptor's id), anything else is this node's
// (kLocal). A secure channel admits to its decryptor only what comes from the carrier of its
// remote route's first hop.
struct Carrier {
  SenderInfo::Origin origin = SenderInfo::Origin::kLocal;
  uint64_t via = 0;
  friend bool operator==(const Carrier&, const Carrier&) = default;
};

using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

// Runs `f` on `strand`: at once on this thread when the strand is idle and this thread runs
// its io_context (a message then crosses the node without a trip through the scheduler, which
// costs a poll of the reactor per hop), queued otherwise — always queued when this thread is
// already inside `strand`, so a handler is never re-entered. Order on the strand is kept.
template <typename F>
void RunOnStrand(const Strand& strand, F&& f) {
  if (strand.running_in_this_thread()) {
    boost::asio::post(strand, std::forward<F>(f));
  } else {
    boost::asio::dispatch(strand, std::forward<F>(f));
  }
}

class Worker {
 public:
  // `strand` is where this worker runs; get one from Router::NewStrand().
  explicit Worker(Strand strand) : strand_(std::move(strand)) {}
  virtual ~Worker() = default;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Handles one message. `msg.onward` no longer holds this worker's own address. The worker
  // owns `msg.receipt`: it settles it once the message is handed on, or with the error (a
  // receipt dropped unsettled reports MESSAGE_DROPPED).
  virtual void HandleMessage(Message msg) = 0;

  // Handles messages routed together (Router::SendBatch), in order, as HandleMessage would one
  // by one — which is what the default does. Workers with a per-message fixed cost (a secure
  // channel sealing a record, an app's mailbox waking its stream) take them at once.
  virtual void HandleBatch(std::vector<Message> msgs) {
    for (Message& msg : msgs) HandleMessage(std::move(msg));
  }

  // Runs once on the strand after the worker was removed from its router.
  virtual void OnStop() {}

  // True for workers that carry messages off this host (transport connections). The plaintext
  // egress guard refuses app payloads whose first hop is such a worker.
  virtual bool LeavesHost() const { return false; }

  // True while the worker has stopped taking input for backpressure (a connection that stopped
  // reading): silence from its far side is then expected, not a sign the far side is dead.
  // Any thread.
  virtual bool HoldingBack() const { return false; }
  // Bytes received from its far side so far (transport connections; 0 otherwise). Any thread.
  virtual uint64_t BytesReceived() const { return 0; }
  // The IP address (or host) of its far side, for per-address limits (transport connections;
  // "" otherwise). Any thread.
  virtual absl::string_view RemoteHost() const { return {}; }

  // Whether this worker takes messages from `from`: OK, or the refusal the router settles the
  // message with (PERMISSION_DENIED, reason ACCESS_DENIED, unless the worker has a better
  // one). Any thread; must not block. Judges `from.origin`, `from.via` and `from.relayed`
  // only (the router judges a run of messages that share them once). The default admits kApp
  // and kLocal only.
  virtual absl::Status Admit(const SenderInfo& from) const;

  // See Carrier. Any thread.
  virtual Carrier CarrierOf() const { return {}; }

  // True for workers that take refusal notices (Message::refusal); the router drops notices
  // addressed to any other worker.
  virtual bool TakesRefusals() const { return false; }
  // True for a worker whose HandleMessage/HandleBatch may run on any thread, concurrently (it
  // locks what it shares): the router then calls it directly instead of posting to its strand,
  // saving a thread hop (an app's mailbox, which only queues for its stream).
  virtual bool HandlesOnAnyThread() const { return false; }

  // The local address it was started at ("" before).
  const std::string& address() const { return address_; }
  // Unique among this router's workers for its whole life (never reused); 0 before started.
  // Provenance names the worker a message arrived through by it (SenderInfo::via).
  uint64_t id() const { return id_; }
  // The router it was started on. Only valid once started.
  Router& router() const { return *router_; }
  const Strand& strand() const { return strand_; }

 private:
  friend class Router;
  Strand strand_;
  std::string address_;
  uint64_t id_ = 0;
  Router* router_ = nullptr;
};

}  // namespace veil::core

#endif  // VEIL_SIDECAR_CORE_WORKER_H_
