#include "sidecar/core/message.h"

#include <atomic>

#include "sidecar/common/error_reason.h"
#include "sidecar/common/mutex.h"

namespace veil::core {

namespace {

absl::Status Dropped() {
  return ErrorWithReason(absl::StatusCode::kAborted, "message was dropped before it was handed on",
                         reason::kMessageDropped);
}

// Settles the whole once every part has, with the first error.
class SplitTracker final : public SendTracker {
 public:
  SplitTracker(Receipt whole, size_t parts) : whole_(std::move(whole)), remaining_(parts) {}
  void Complete(uint32_t, absl::Status status) override {
    if (!status.ok()) {
      veil::MutexLock lock(&mu_);
      if (first_error_.ok()) first_error_ = std::move(status);
    }
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    absl::Status outcome;
    {
      veil::MutexLock lock(&mu_);
      outcome = std::move(first_error_);
    }
    whole_.Settle(std::move(outcome));
  }

 private:
  Receipt whole_;  // settled by the last part only
  std::atomic<size_t> remaining_;
  veil::Mutex mu_;
  absl::Status first_error_ ABSL_GUARDED_BY(mu_);
};

// Settles every part with the one status.
class JoinTracker final : public SendTracker {
 public:
  explicit JoinTracker(std::vector<Receipt> parts) : parts_(std::move(parts)) {}
  void Complete(uint32_t, absl::Status status) override {
    // Called exactly once (by the joined receipt), so no lock is needed.
    for (Receipt& part : parts_) part.Settle(status);
    parts_.clear();
  }

 private:
  std::vector<Receipt> parts_;
};

}  // namespace

std::vector<Receipt> SplitReceipt(Receipt whole, size_t n) {
  std::vector<Receipt> parts(n);
  if (n == 0) {
    whole.Settle(absl::OkStatus());
    return parts;
  }
  if (!whole.pending()) return parts;
  if (n == 1) {
    parts[0] = std::move(whole);
    return parts;
  }
  auto tracker = std::make_shared<SplitTracker>(std::move(whole), n);
  for (Receipt& part : parts) part = Receipt(tracker, 0);
  return parts;
}

Receipt JoinReceipts(std::vector<Receipt> parts) {
  std::erase_if(parts, [](const Receipt& r) { return !r.pending(); });
  if (parts.empty()) return Receipt();
  if (parts.size() == 1) return std::move(parts[0]);
  return Receipt(std::make_shared<JoinTracker>(std::move(parts)), 0);
}

// The error is only built for a receipt still pending: settled and empty receipts are the hot
// path (one per message), and an absl::Status with a payload costs several allocations.
Receipt& Receipt::operator=(Receipt&& other) noexcept {
  if (this != &other) {
    if (tracker_ != nullptr) Settle(Dropped());
    tracker_ = std::move(other.tracker_);
    index_ = other.index_;
  }
  return *this;
}

Receipt::~Receipt() {
  if (tracker_ != nullptr) Settle(Dropped());
}

void Receipt::Settle(absl::Status status) {
  if (tracker_ == nullptr) return;
  std::shared_ptr<SendTracker> tracker = std::move(tracker_);
  tracker_ = nullptr;
  tracker->Complete(index_, std::move(status));
}

const char* OriginName(SenderInfo::Origin origin) {
  switch (origin) {
    case SenderInfo::Origin::kLocal:
      return "a worker of this node";
    case SenderInfo::Origin::kApp:
      return "a local app";
    case SenderInfo::Origin::kTransport:
      return "the network";
    case SenderInfo::Origin::kSecureChannel:
      return "a secure channel";
  }
  return "?";
}

}  // namespace veil::core
