// Backoff: capped exponential backoff with jitter, for reconnecting relay sessions. Pure: the
// randomness comes in as a function returning [0, 1).
//
// Delay of attempt k (from 0): d = min(max, initial * 2^k); the result is uniformly drawn from
// [d/2, d] ("equal jitter"), so that many sidecars reconnecting to a restarted hub spread out.
//
// Thread-safety: not synchronised.
#ifndef VEIL_SIDECAR_RELAY_BACKOFF_H_
#define VEIL_SIDECAR_RELAY_BACKOFF_H_

#include <chrono>
#include <functional>

namespace veil::relay {

class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max,
          std::function<double()> uniform01)
      : initial_(initial), max_(max), uniform01_(std::move(uniform01)) {}

  // The delay before the next attempt; each call counts as one more failed attempt.
  std::chrono::milliseconds Next();
  // After a success: start again from `initial`.
  void Reset() { attempt_ = 0; }
  int attempts() const { return attempt_; }

 private:
  std::chrono::milliseconds initial_, max_;
  std::function<double()> uniform01_;
  int attempt_ = 0;
};

}  // namespace veil::relay

#endif  // VEIL_SIDECAR_RELAY_BACKOFF_H_
