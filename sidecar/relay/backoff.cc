#include "sidecar/relay/backoff.h"

#include <algorithm>

namespace veil::relay {

std::chrono::milliseconds Backoff::Next() {
  double base = static_cast<double>(initial_.count());
  for (int i = 0; i < attempt_ && base < max_.count(); ++i) base *= 2;
  base = std::min(base, static_cast<double>(max_.count()));
  ++attempt_;
  double jittered = base / 2 + uniform01_() * base / 2;
  return std::chrono::milliseconds(static_cast<int64_t>(jittered));
}

}  // namespace veil::relay
