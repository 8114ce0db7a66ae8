#include "sidecar/common/error_reason.h"

#include "absl/strings/cord.h"

namespace veil {
namespace {
constexpr absl::string_view kReasonPayloadUrl = "type.veil.dev/reason";
}  // namespace

absl::Status WithReason(absl::Status status, absl::string_view reason) {
  if (!status.ok()) status.SetPayload(kReasonPayloadUrl, absl::Cord(reason));
  return status;
}

absl::Status ErrorWithReason(absl::StatusCode code, absl::string_view message,
                             absl::string_view reason) {
  return WithReason(absl::Status(code, message), reason);
}

std::string ReasonOf(const absl::Status& status) {
  auto payload = status.GetPayload(kReasonPayloadUrl);
  return payload ? std::string(*payload) : std::string();
}

std::string QuoteInput(absl::string_view text, size_t max) {
  if (text.size() <= max) return absl::StrCat("\"", text, "\"");
  return absl::StrCat("\"", text.substr(0, max), "\"… (", text.size(), " bytes)");
}

}  // namespace veil
