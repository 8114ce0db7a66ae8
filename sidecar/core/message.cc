#include "sidecar/core/message.h"

#include "sidecar/common/error_reason.h"

namespace veil::core {

Receipt& Receipt::operator=(Receipt&& other) noexcept {
  if (this != &other) {
    Settle(ErrorWithReason(absl::StatusCode::kAborted,
                           "message was dropped before it was handed on", "MESSAGE_DROPPED"));
    tracker_ = std::move(other.tracker_);
    index_ = other.index_;
  }
  return *this;
}

Receipt::~Receipt() {
  Settle(ErrorWithReason(absl::StatusCode::kAborted, "message was dropped before it was handed on",
                         "MESSAGE_DROPPED"));
}

void Receipt::Settle(absl::Status status) {
  if (tracker_ == nullptr) return;
  std::shared_ptr<SendTracker> tracker = std::move(tracker_);
  tracker_ = nullptr;
  tracker->Complete(index_, std::move(status));
}

}  // namespace veil::core
