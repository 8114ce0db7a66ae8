// LogLimiter: lets through at most `per_second` log lines a second for one kind of event and
// counts the rest, so that a peer flooding a node with refused input cannot flood its log too.
//
//   if (uint64_t suppressed; limiter.ShouldLog(&suppressed)) spdlog::warn("... ({} more)", ...);
//
// Thread-safety: ShouldLog may be called from any thread.
#ifndef VEIL_SIDECAR_COMMON_LOG_LIMITER_H_
#define VEIL_SIDECAR_COMMON_LOG_LIMITER_H_

#include <atomic>
#include <chrono>
#include <cstdint>

namespace veil {

class LogLimiter {
 public:
  explicit LogLimiter(uint32_t per_second = 10) : per_second_(per_second) {}

  // True when this event may be logged; `*suppressed` is then how many were not since the
  // last one that was.
  bool ShouldLog(uint64_t* suppressed) {
    const int64_t second = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
    int64_t current = second_.load(std::memory_order_relaxed);
    if (current != second && second_.compare_exchange_strong(current, second)) {
      count_.store(0, std::memory_order_relaxed);
    }
    if (count_.fetch_add(1, std::memory_order_relaxed) >= per_second_) {
      suppressed_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    *suppressed = suppressed_.exchange(0, std::memory_order_relaxed);
    return true;
  }

 private:
  const uint32_t per_second_;
  std::atomic<int64_t> second_{0};
  std::atomic<uint32_t> count_{0};
  std::atomic<uint64_t> suppressed_{0};
};

}  // namespace veil

#endif  // VEIL_SIDECAR_COMMON_LOG_LIMITER_H_
