// Unguessable names and tags, from the OS's random source: for private, short-lived addresses
// (a Request's reply address), for the sidecar's own workers (channels, connections), so that
// another local app or a peer cannot reach one by guessing its name, and for the per-channel
// path tags that refusal notices echo.
//
// Thread-safety: thread-safe.
#ifndef VEIL_SIDECAR_COMMON_RANDOM_NAME_H_
#define VEIL_SIDECAR_COMMON_RANDOM_NAME_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace veil {

// `prefix` followed by 2 * `bytes` hex digits (default 128 bits).
std::string RandomName(absl::string_view prefix, size_t bytes = 16);

// 64 random bits, never 0.
uint64_t RandomNonZeroU64();

}  // namespace veil

#endif  // VEIL_SIDECAR_COMMON_RANDOM_NAME_H_
