#include "sidecar/common/log_fields.h"

namespace veil {
namespace {
thread_local absl::Span<const LogField> current_fields;
}  // namespace

absl::Span<const LogField> CurrentLogFields() { return current_fields; }

namespace internal {
LogFieldsScope::LogFieldsScope(absl::Span<const LogField> fields) : previous_(current_fields) {
  current_fields = fields;
}
LogFieldsScope::~LogFieldsScope() { current_fields = previous_; }
}  // namespace internal

}  // namespace veil
