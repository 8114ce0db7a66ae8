#include "sidecar/core/router.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "asio/post.hpp"
#include "sidecar/common/error_reason.h"

namespace veil::core {

absl::Status Router::StartWorker(std::string name, std::shared_ptr<Worker> worker) {
  absl::Status valid = ValidateLocalName(name);
  if (!valid.ok()) return valid;
  veil::MutexLock lock(&mu_);
  if (shut_down_) {
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition, "the node is shutting down",
                           reason::kNodeShuttingDown);
  }
  auto [it, inserted] = workers_.try_emplace(name, nullptr);
  if (!inserted) {
    return ErrorWithReason(absl::StatusCode::kAlreadyExists,
                           absl::StrCat("address \"", name, "\" is already in use"),
                           reason::kAddressInUse);
  }
  worker->address_ = std::move(name);
  worker->router_ = this;
  it->second = std::move(worker);
  return absl::OkStatus();
}

std::string Router::StartWorkerWithPrefix(absl::string_view prefix, std::shared_ptr<Worker> worker) {
  for (;;) {
    std::string name = absl::StrCat(prefix, next_id_.fetch_add(1, std::memory_order_relaxed));
    if (StartWorker(name, worker).ok()) return name;
    // The name was taken (an app chose it: rare) or the router is shutting down: try the next
    // id, unless shutting down.
    veil::MutexLock lock(&mu_);
    if (shut_down_) return "";
  }
}

bool Router::StopWorker(absl::string_view name, const Worker* expected) {
  std::shared_ptr<Worker> worker;
  {
    veil::MutexLock lock(&mu_);
    auto it = workers_.find(name);
    if (it == workers_.end() || (expected != nullptr && it->second.get() != expected)) {
      return false;
    }
    worker = std::move(it->second);
    workers_.erase(it);
  }
  asio::post(worker->strand(), [worker] { worker->OnStop(); });
  return true;
}

void Router::StopAll() {
  std::vector<std::shared_ptr<Worker>> stopped;
  {
    veil::MutexLock lock(&mu_);
    shut_down_ = true;
    for (auto& [name, worker] : workers_) stopped.push_back(std::move(worker));
    workers_.clear();
  }
  for (auto& worker : stopped) asio::post(worker->strand(), [worker] { worker->OnStop(); });
}

void Router::Send(Message msg) {
  routed_.fetch_add(1, std::memory_order_relaxed);
  if (msg.onward.empty()) {
    unroutable_.fetch_add(1, std::memory_order_relaxed);
    Refuse(std::move(msg), ErrorWithReason(absl::StatusCode::kInvalidArgument,
                                           "message has an empty onward route",
                                           reason::kInvalidRoute));
    return;
  }
  const Address& next = msg.onward.front();
  if (next.type() != AddressType::kLocal) {
    Transport* transport = tcp_transport_.load(std::memory_order_acquire);
    if (next.type() != AddressType::kTcp || transport == nullptr) {
      unroutable_.fetch_add(1, std::memory_order_relaxed);
      // The status first: `next` lives in `msg`, and argument order is unspecified.
      absl::Status why = ErrorWithReason(
          absl::StatusCode::kUnavailable,
          absl::StrCat("no transport on this node for ", next.ToString()), reason::kRouteNotFound);
      Refuse(std::move(msg), std::move(why));
      return;
    }
    transport->Send(std::move(msg));
    return;
  }
  std::shared_ptr<Worker> worker = Find(next.value());
  if (worker == nullptr) {
    unroutable_.fetch_add(1, std::memory_order_relaxed);
    absl::Status why = ErrorWithReason(absl::StatusCode::kNotFound,
                                       absl::StrCat("no worker at ", next.ToString()),
                                       reason::kRouteNotFound);
    Refuse(std::move(msg), std::move(why));  // (`next` lives in `msg`)
    return;
  }
  if (!msg.refusal.ok() && !worker->TakesRefusals()) {  // a notice nobody here reads
    msg.receipt.Settle(absl::OkStatus());
    return;
  }
  msg.onward.PopFront();
  if (worker->HandlesOnAnyThread()) {
    worker->HandleMessage(std::move(msg));
    return;
  }
  Worker* w = worker.get();
  RunOnStrand(w->strand(), [worker = std::move(worker), msg = std::move(msg)]() mutable {
    worker->HandleMessage(std::move(msg));
  });
}

void Router::SendBatch(std::vector<Message> msgs) {
  // A run: consecutive messages (not notices) whose first hop is the same local address.
  auto joins = [](const Message& m, const Address& hop) {
    return !m.onward.empty() && m.refusal.ok() && m.onward.front() == hop;
  };
  size_t i = 0;
  while (i < msgs.size()) {
    Message& first = msgs[i];
    if (first.onward.empty() || !first.onward.front().is_local() || !first.refusal.ok()) {
      Send(std::move(first));
      ++i;
      continue;
    }
    size_t end = i + 1;
    while (end < msgs.size() && joins(msgs[end], first.onward.front())) ++end;
    std::shared_ptr<Worker> worker =
        end - i > 1 ? Find(first.onward.front().value()) : nullptr;
    if (worker == nullptr) {  // one message, or nobody there: Send settles each
      for (; i < end; ++i) Send(std::move(msgs[i]));
      continue;
    }
    routed_.fetch_add(end - i, std::memory_order_relaxed);
    const bool whole = i == 0 && end == msgs.size();
    std::vector<Message> run;
    if (whole) {
      run = std::move(msgs);
    } else {
      run.reserve(end - i);
      for (size_t k = i; k < end; ++k) run.push_back(std::move(msgs[k]));
    }
    for (Message& m : run) m.onward.PopFront();
    if (worker->HandlesOnAnyThread()) {
      worker->HandleBatch(std::move(run));
      if (whole) return;
      i = end;
      continue;
    }
    Worker* w = worker.get();
    RunOnStrand(w->strand(), [worker = std::move(worker), run = std::move(run)]() mutable {
      worker->HandleBatch(std::move(run));
    });
    if (whole) return;
    i = end;
  }
}

void Router::Refuse(Message msg, absl::Status why) {
  // Only about a message read from a connection (its sender cannot see this receipt) that has
  // a way back, and never about a notice.
  const bool notify = msg.paced && msg.sender.origin == SenderInfo::Origin::kTransport &&
                      !msg.return_route.empty() && msg.refusal.ok() && !why.ok();
  Message notice;
  if (notify) {
    notice.onward = std::move(msg.return_route);
    notice.refusal = why;
  }
  msg.receipt.Settle(std::move(why));
  if (!notify) return;
  notices_sent_.fetch_add(1, std::memory_order_relaxed);
  Send(std::move(notice));
}

void Router::SetTransport(AddressType type, Transport* transport) {
  if (type == AddressType::kTcp) tcp_transport_.store(transport, std::memory_order_release);
}

std::shared_ptr<Worker> Router::Find(absl::string_view name) const {
  veil::ReaderMutexLock lock(&mu_);
  auto it = workers_.find(name);
  return it == workers_.end() ? nullptr : it->second;
}

bool Router::LeavesHost(const Route& route) const {
  if (route.empty()) return false;
  if (!route.front().is_local()) return true;
  std::shared_ptr<Worker> worker = Find(route.front().value());
  return worker != nullptr && worker->LeavesHost();
}

std::vector<std::string> Router::WorkerNames() const {
  std::vector<std::string> names;
  {
    veil::ReaderMutexLock lock(&mu_);
    for (const auto& [name, worker] : workers_) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace veil::core
