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

// `prefix` followed by kWorkerSuffixChars letters and digits (65 bits): the names of the
// sidecar's own workers ("_sc_…", "_tcp_…"). Short on purpose: with a prefix of up to 4 bytes
// the name fits in a std::string without a heap allocation (libstdc++ keeps 15 bytes inline),
// and a channel's name is copied into every message that comes out of it.
inline constexpr size_t kWorkerSuffixChars = 11;
std::string RandomWorkerName(absl::string_view prefix);

// 64 random bits, never 0.
uint64_t RandomNonZeroU64();

}  // namespace veil

#endif  // VEIL_SIDECAR_COMMON_RANDOM_NAME_H_
