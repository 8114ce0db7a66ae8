// fmt formatters for abseil types, so log lines can print them directly: absl::string_view
// (Debian's abseil does not alias std::string_view) and absl::Status.
#ifndef VEIL_SIDECAR_COMMON_FMT_ABSL_H_
#define VEIL_SIDECAR_COMMON_FMT_ABSL_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "fmt/format.h"

template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename Context>
  auto format(absl::string_view s, Context& ctx) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), ctx);
  }
};

template <>
struct fmt::formatter<absl::Status> : fmt::formatter<fmt::string_view> {
  template <typename Context>
  auto format(const absl::Status& s, Context& ctx) const {
    std::string text = s.ToString(absl::StatusToStringMode::kWithNoExtraData);
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(text), ctx);
  }
};

#endif  // VEIL_SIDECAR_COMMON_FMT_ABSL_H_
