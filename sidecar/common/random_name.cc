#include "sidecar/common/random_name.h"

#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace veil {

std::string RandomName(absl::string_view prefix) {
  thread_local std::random_device device;  // /dev/urandom (getrandom) on Linux
  char bytes[16];
  for (size_t i = 0; i < sizeof(bytes); i += 4) {
    uint32_t v = device();
    for (int j = 0; j < 4; ++j) bytes[i + j] = static_cast<char>(v >> (8 * j));
  }
  return absl::StrCat(prefix, absl::BytesToHexString(absl::string_view(bytes, sizeof(bytes))));
}

}  // namespace veil
