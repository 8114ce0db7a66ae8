#include "sidecar/common/random_name.h"

#include <random>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace veil {
namespace {

void RandomBytes(char* out, size_t n) {
  thread_local std::random_device device;  // /dev/urandom (getrandom) on Linux
  for (size_t i = 0; i < n; i += 4) {
    uint32_t v = device();
    for (size_t j = 0; j < 4 && i + j < n; ++j) out[i + j] = static_cast<char>(v >> (8 * j));
  }
}

}  // namespace

std::string RandomName(absl::string_view prefix, size_t bytes) {
  std::vector<char> raw(bytes);
  RandomBytes(raw.data(), raw.size());
  return absl::StrCat(prefix, absl::BytesToHexString(absl::string_view(raw.data(), raw.size())));
}

uint64_t RandomNonZeroU64() {
  for (;;) {
    char raw[8];
    RandomBytes(raw, sizeof(raw));
    uint64_t v = 0;
    for (char c : raw) v = (v << 8) | static_cast<uint8_t>(c);
    if (v != 0) return v;
  }
}

}  // namespace veil
