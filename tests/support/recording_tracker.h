// Test support: a core::SendTracker that records every outcome and lets a test wait for them.
#ifndef VEIL_TESTS_SUPPORT_RECORDING_TRACKER_H_
#define VEIL_TESTS_SUPPORT_RECORDING_TRACKER_H_

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>

#include "sidecar/core/message.h"

namespace veil::testing {

class RecordingTracker final : public core::SendTracker {
 public:
  void Complete(uint32_t index, absl::Status status) override {
    std::lock_guard lock(mu_);
    results_.emplace_back(index, std::move(status));
    cv_.notify_all();
  }
  // Waits up to 10 s for `n` outcomes; returns those recorded (index, status), in arrival order.
  std::vector<std::pair<uint32_t, absl::Status>> Wait(size_t n) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [&] { return results_.size() >= n; });
    return results_;
  }

 private:
  // std, not absl: ThreadSanitizer sees through it (sidecar/common/mutex.h).
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<uint32_t, absl::Status>> results_;
};

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_RECORDING_TRACKER_H_
