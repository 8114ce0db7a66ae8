// Worker: an actor at a local address. Each worker runs on its own strand: its HandleMessage
// calls never overlap and arrive in the order they were routed to it.
//
// Thread-safety: HandleMessage and OnStop run only on strand(). address() and router() may be
// read from any thread once the worker has been started.
#ifndef VEIL_SIDECAR_CORE_WORKER_H_
#define VEIL_SIDECAR_CORE_WORKER_H_

#include <string>
#include <vector>

#include "asio/io_context.hpp"
#include "asio/dispatch.hpp"
#include "asio/post.hpp"
#include "asio/strand.hpp"
#include "sidecar/core/message.h"

namespace veil::core {

class Router;
using Strand = asio::strand<asio::io_context::executor_type>;

// Runs `f` on `strand`: at once on this thread when the strand is idle and this thread runs
// its io_context (a message then crosses the node without a trip through the scheduler, which
// costs a poll of the reactor per hop), queued otherwise — always queued when this thread is
// already inside `strand`, so a handler is never re-entered. Order on the strand is kept.
template <typename F>
void RunOnStrand(const Strand& strand, F&& f) {
  if (strand.running_in_this_thread()) {
    asio::post(strand, std::forward<F>(f));
  } else {
    asio::dispatch(strand, std::forward<F>(f));
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

  // True for workers that take refusal notices (Message::refusal); the router drops notices
  // addressed to any other worker.
  virtual bool TakesRefusals() const { return false; }
  // True for a worker whose HandleMessage/HandleBatch may run on any thread, concurrently (it
  // locks what it shares): the router then calls it directly instead of posting to its strand,
  // saving a thread hop (an app's mailbox, which only queues for its stream).
  virtual bool HandlesOnAnyThread() const { return false; }

  // The local address it was started at ("" before).
  const std::string& address() const { return address_; }
  // The router it was started on. Only valid once started.
  Router& router() const { return *router_; }
  const Strand& strand() const { return strand_; }

 private:
  friend class Router;
  Strand strand_;
  std::string address_;
  Router* router_ = nullptr;
};

}  // namespace veil::core

#endif  // VEIL_SIDECAR_CORE_WORKER_H_
