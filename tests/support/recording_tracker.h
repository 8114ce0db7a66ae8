// Test support: a core::SendTracker that records every outcome and lets a test wait for them.
#ifndef VEIL_TESTS_SUPPORT_RECORDING_TRACKER_H_
#define VEIL_TESTS_SUPPORT_RECORDING_TRACKER_H_

#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "sidecar/core/message.h"

namespace veil::testing {

class RecordingTracker final : public core::SendTracker {
 public:
  void Complete(uint32_t index, absl::Status status) override {
    absl::MutexLock lock(&mu_);
    results_.emplace_back(index, std::move(status));
  }
  // Waits up to 10 s for `n` outcomes; returns those recorded (index, status), in arrival order.
  std::vector<std::pair<uint32_t, absl::Status>> Wait(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return results_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
    return results_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::pair<uint32_t, absl::Status>> results_ ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_RECORDING_TRACKER_H_
