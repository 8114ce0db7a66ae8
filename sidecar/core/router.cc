#include "sidecar/core/router.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "boost/asio/post.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/common/random_name.h"
#include "spdlog/spdlog.h"

namespace veil::core {

absl::Status Worker::Admit(const SenderInfo& from) const {
  if (from.origin == SenderInfo::Origin::kApp || from.origin == SenderInfo::Origin::kLocal) {
    return absl::OkStatus();
  }
  return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                         absl::StrCat("/service/", address(), " does not take messages from ",
                                      OriginName(from.origin)),
                         reason::kAccessDenied);
}

absl::Status Router::StartWorker(std::string name, std::shared_ptr<Worker> worker) {
  absl::Status valid = ValidateLocalName(name);
  if (!valid.ok()) return valid;
  veil::MutexLock lock(&mu_);
  if (shut_down_) {
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition, "the node is shutting down",
                           reason::kNodeShuttingDown);
  }
  // A worker is at one address at a time: the map keys it by its own address_.
  if (auto at = workers_.find(worker->address_); at != workers_.end() && at->second == worker) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker already started at \"", worker->address_, "\""));
  }
  if (workers_.contains(name)) {
    return ErrorWithReason(absl::StatusCode::kAlreadyExists,
                           absl::StrCat("address \"", name, "\" is already in use"),
                           reason::kAddressInUse);
  }
  if (!epitaphs_.empty()) epitaphs_.erase(name);  // (its place in epitaph_order_ ages out)
  worker->address_ = std::move(name);
  worker->id_ = next_worker_id_++;
  worker->router_ = this;
  const absl::string_view key = worker->address_;  // the worker's own copy: it stays put
  workers_.emplace(key, std::move(worker));
  return absl::OkStatus();
}

std::string Router::StartWorkerWithPrefix(absl::string_view prefix,
                                          std::shared_ptr<Worker> worker) {
  for (;;) {
    std::string name = RandomWorkerName(prefix);
    if (StartWorker(name, worker).ok()) return name;
    // The name was taken (vanishingly rare) or the router is shutting down: try another,
    // unless shutting down.
    veil::MutexLock lock(&mu_);
    if (shut_down_) return "";
  }
}

bool Router::StopWorker(absl::string_view name, const Worker* expected, absl::Status epitaph) {
  std::shared_ptr<Worker> worker;
  {
    veil::MutexLock lock(&mu_);
    auto it = workers_.find(name);
    if (it == workers_.end() || (expected != nullptr && it->second.get() != expected)) {
      return false;
    }
    worker = std::move(it->second);
    workers_.erase(it);
    if (!epitaph.ok()) {
      if (epitaph_order_.size() >= kEpitaphs) {
        epitaphs_.erase(epitaph_order_.front());  // the oldest goes
        epitaph_order_.pop_front();
      }
      epitaph_order_.emplace_back(name);
      epitaphs_.insert_or_assign(std::string(name), std::move(epitaph));
    }
  }
  boost::asio::post(worker->strand(), [worker] { worker->OnStop(); });
  return true;
}

void Router::StopAll() {
  std::vector<std::shared_ptr<Worker>> stopped;
  {
    veil::MutexLock lock(&mu_);
    shut_down_ = true;
    for (auto& [name, worker] : workers_) stopped.push_back(std::move(worker));
    workers_.clear();
    for (auto& [prefix, worker] : stand_ins_) stopped.push_back(std::move(worker));
    stand_ins_.clear();
  }
  for (auto& worker : stopped) boost::asio::post(worker->strand(), [worker] { worker->OnStop(); });
}

void Router::ExplainAbsence(std::string prefix,
                            std::function<absl::Status(absl::string_view name)> explain) {
  veil::MutexLock lock(&mu_);
  absences_.emplace_back(std::move(prefix), std::move(explain));
}

void Router::StandIn(std::string prefix, std::shared_ptr<Worker> stand_in) {
  veil::MutexLock lock(&mu_);
  stand_ins_.emplace_back(std::move(prefix), std::move(stand_in));
}

std::shared_ptr<Worker> Router::StandInFor(absl::string_view name) const {
  veil::ReaderMutexLock lock(&mu_);
  for (const auto& [prefix, worker] : stand_ins_) {
    if (absl::StartsWith(name, prefix)) return worker;
  }
  return nullptr;
}

absl::Status Router::NoWorker(absl::string_view name, const Address& hop) const {
  {
    veil::ReaderMutexLock lock(&mu_);
    if (auto it = epitaphs_.find(name); it != epitaphs_.end()) return it->second;
    for (const auto& [prefix, explain] : absences_) {
      if (absl::StartsWith(name, prefix)) return explain(name);
    }
  }
  return ErrorWithReason(absl::StatusCode::kNotFound, absl::StrCat("no worker at ", hop.ToString()),
                         reason::kRouteNotFound);
}

Transport* Router::TransportFor(const Address& hop) const {
  const auto type = static_cast<size_t>(hop.type());
  return type < transports_.size() ? transports_[type].load(std::memory_order_acquire) : nullptr;
}

void Router::Send(Message msg) {
  routed_.fetch_add(1, std::memory_order_relaxed);
  if (msg.onward.empty()) {
    unroutable_.fetch_add(1, std::memory_order_relaxed);
    Refuse(std::move(msg),
           ErrorWithReason(absl::StatusCode::kInvalidArgument, "message has an empty onward route",
                           reason::kInvalidRoute));
    return;
  }
  const Address& next = msg.onward.front();
  if (next.type() != AddressType::kLocal) {
    Transport* transport = TransportFor(next);
    if (transport == nullptr) {
      unroutable_.fetch_add(1, std::memory_order_relaxed);
      // The status first: `next` lives in `msg`, and argument order is unspecified.
      absl::Status why = ErrorWithReason(
          absl::StatusCode::kUnavailable,
          absl::StrCat("no transport on this node for ", next.ToString()), reason::kRouteNotFound);
      Refuse(std::move(msg), std::move(why));
      return;
    }
    absl::Status admitted = transport->Admit(msg.sender, next);
    if (!admitted.ok()) {
      std::string to = next.ToString();
      Deny(std::move(msg), std::move(admitted), to);
      return;
    }
    transport->Send(std::move(msg));
    return;
  }
  std::shared_ptr<Worker> worker = Find(next.value());
  bool stand_in = false;
  if (worker == nullptr) {
    worker = StandInFor(next.value());
    stand_in = worker != nullptr;
  }
  if (worker == nullptr) {
    unroutable_.fetch_add(1, std::memory_order_relaxed);
    absl::Status why = NoWorker(next.value(), next);
    Refuse(std::move(msg), std::move(why));  // (`next` lives in `msg`)
    return;
  }
  if (absl::Status admitted = worker->Admit(msg.sender); !admitted.ok()) {
    Deny(std::move(msg), std::move(admitted), worker->address());
    return;
  }
  if (!msg.refusal.ok() && !worker->TakesRefusals()) {  // a notice nobody here reads
    msg.receipt.Settle(absl::OkStatus());
    return;
  }
  if (!stand_in) msg.onward.PopFront();
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
    std::shared_ptr<Worker> worker = end - i > 1 ? Find(first.onward.front().value()) : nullptr;
    if (worker == nullptr) {  // one message, or nobody there: Send settles each
      for (; i < end; ++i) Send(std::move(msgs[i]));
      continue;
    }
    // One provenance judged once per run: messages routed together mostly share theirs.
    bool all_admitted = true;
    for (size_t k = i; k < end && all_admitted; ++k) {
      all_admitted = (k > i && msgs[k].sender.origin == msgs[k - 1].sender.origin &&
                      msgs[k].sender.via == msgs[k - 1].sender.via &&
                      msgs[k].sender.relayed == msgs[k - 1].sender.relayed) ||
                     worker->Admit(msgs[k].sender).ok();
    }
    if (!all_admitted) {  // Send judges (and refuses) each
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
  // Only about a message from another node, whose sender cannot see this receipt — read from a
  // connection, or decrypted out of a secure channel (the notice then goes back through the
  // channel: authenticated) — that has a way back, and never about a notice.
  const bool from_afar = (msg.paced && msg.sender.origin == SenderInfo::Origin::kTransport) ||
                         msg.sender.origin == SenderInfo::Origin::kSecureChannel;
  const bool notify = from_afar && !msg.return_route.empty() && msg.refusal.ok() && !why.ok();
  Message notice;
  if (notify) {
    notice.onward = std::move(msg.return_route);
    notice.refusal = why;
    notice.path_tag = msg.path_tag;  // what the refused message's channel will check
  }
  msg.receipt.Settle(std::move(why));
  if (!notify) return;
  notices_sent_.fetch_add(1, std::memory_order_relaxed);
  Send(std::move(notice));
}

void Router::Deny(Message msg, absl::Status why, absl::string_view to) {
  const auto origin = static_cast<size_t>(msg.sender.origin);
  access_denied_[origin].fetch_add(1, std::memory_order_relaxed);
  if (uint64_t suppressed = 0; deny_log_.ShouldLog(&suppressed)) {
    const std::string reason = ReasonOf(why);
    Log(spdlog::level::warn,
        {{log_field::kRoute, to},
         {log_field::kOrigin, OriginName(msg.sender.origin)},
         {log_field::kIdentifier, msg.sender.identifier},
         {log_field::kReason, reason}},
        "refused a {} from {} to {}: {}{}", msg.refusal.ok() ? "message" : "refusal notice",
        OriginName(msg.sender.origin), to, why.message(),
        suppressed > 0 ? absl::StrCat(" (and ", suppressed, " more not logged)") : "");
  }
  Refuse(std::move(msg), std::move(why));
}

absl::Status Router::CheckAccess(const Route& route, const SenderInfo& from) const {
  if (route.empty()) return absl::OkStatus();
  const Address& next = route.front();
  if (!next.is_local()) {
    Transport* transport = TransportFor(next);
    return transport == nullptr ? absl::OkStatus() : transport->Admit(from, next);
  }
  std::shared_ptr<Worker> worker = Find(next.value());
  if (worker == nullptr) worker = StandInFor(next.value());
  return worker == nullptr ? absl::OkStatus() : worker->Admit(from);
}

absl::StatusOr<std::shared_ptr<Worker>> Router::CarrierWorker(const Route& route) {
  if (route.empty()) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument, "the route is empty",
                           reason::kInvalidRoute);
  }
  const Address& next = route.front();
  std::shared_ptr<Worker> worker;
  if (next.is_local()) {
    worker = Find(next.value());
    if (worker == nullptr) return NoWorker(next.value(), next);
  } else {
    Transport* transport = TransportFor(next);
    if (transport == nullptr) {
      return ErrorWithReason(absl::StatusCode::kUnavailable,
                             absl::StrCat("no transport on this node for ", next.ToString()),
                             reason::kRouteNotFound);
    }
    return transport->CarrierFor(next);
  }
  return worker;
}

Router::Stats Router::stats() const {
  Stats s{routed_.load(std::memory_order_relaxed), unroutable_.load(std::memory_order_relaxed),
          notices_sent_.load(std::memory_order_relaxed)};
  for (size_t i = 0; i < s.access_denied.size(); ++i) {
    s.access_denied[i] = access_denied_[i].load(std::memory_order_relaxed);
  }
  return s;
}

void Router::SetTransport(AddressType type, Transport* transport) {
  const auto index = static_cast<size_t>(type);
  if (type != AddressType::kLocal && index < transports_.size()) {
    transports_[index].store(transport, std::memory_order_release);
  }
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
    for (const auto& [name, worker] : workers_) names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace veil::core
