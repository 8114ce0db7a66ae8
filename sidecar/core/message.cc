#include "sidecar/core/message.h"

#include "sidecar/common/error_reason.h"

namespace veil::core {

namespace {

absl::Status Dropped() {
  return ErrorWithReason(absl::StatusCode::kAborted, "message was dropped before it was handed on",
                         "MESSAGE_DROPPED");
}

}  // namespace

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

}  // namespace veil::core
