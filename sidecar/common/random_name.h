// Unguessable names for private, short-lived addresses (e.g. a Request's reply address), so
// that another local app cannot inject a reply by guessing one.
#ifndef VEIL_SIDECAR_COMMON_RANDOM_NAME_H_
#define VEIL_SIDECAR_COMMON_RANDOM_NAME_H_

#include <string>

#include "absl/strings/string_view.h"

namespace veil {

// `prefix` followed by 32 hex digits (128 bits from the OS's random source). Thread-safe.
std::string RandomName(absl::string_view prefix);

}  // namespace veil

#endif  // VEIL_SIDECAR_COMMON_RANDOM_NAME_H_
