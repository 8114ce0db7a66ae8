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

std::string RandomWorkerName(absl::string_view prefix) {
  static constexpr char kAlphabet[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string name(prefix);
  name.reserve(prefix.size() + kWorkerSuffixChars);
  // 11 symbols of 62 from 96 random bits, by rejection: an unbiased draw each.
  while (name.size() < prefix.size() + kWorkerSuffixChars) {
    char raw[16];
    RandomBytes(raw, sizeof(raw));
    for (char c : raw) {
      const auto v = static_cast<uint8_t>(c) & 0x3f;  // 0..63; 62 and 63 are rejected
      if (v < 62 && name.size() < prefix.size() + kWorkerSuffixChars) name.push_back(kAlphabet[v]);
    }
  }
  return name;
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
