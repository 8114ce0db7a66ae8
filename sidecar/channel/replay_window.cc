#include "sidecar/channel/replay_window.h"

namespace veil::channel {

bool ReplayWindow::MayAccept(uint64_t n) const {
  if (!any_ || n > highest_) return true;
  if (highest_ - n >= kSize) return false;  // too old to tell
  return !Seen(n);
}

void ReplayWindow::Accept(uint64_t n) {
  if (!any_ || n > highest_) {
    if (any_ && n - highest_ >= kSize) {
      bits_.fill(0);
    } else if (any_) {
      for (uint64_t i = highest_ + 1; i < n; ++i) Clear(i);
    }
    if (!any_) bits_.fill(0);
    Clear(n);
    highest_ = n;
    any_ = true;
  }
  Set(n);
}

}  // namespace veil::channel
