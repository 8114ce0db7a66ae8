// Structured fields on log lines: what a JSON log line carries beside its text — the channel,
// route, identifier, reason and so on — so that a log pipeline can select and count without
// parsing prose. The text format prints the message alone (it says the same in words).
//
//   veil::Log(spdlog::level::info, {{log_field::kChannel, address}, {log_field::kReason, why}},
//             "secure channel {} closed: {}", address, message);
//
// Fields are never secrets or payloads: identifiers, addresses, routes, reasons.
// Thread-safety: the fields live on the logging thread's stack for the one call; spdlog's
// synchronous logger formats on that thread (the JSON formatter reads CurrentLogFields()).
#ifndef VEIL_SIDECAR_COMMON_LOG_FIELDS_H_
#define VEIL_SIDECAR_COMMON_LOG_FIELDS_H_

#include <initializer_list>
#include <utility>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "spdlog/spdlog.h"

namespace veil {

namespace log_field {
// The keys in use (docs/operations.md lists them), one spelling each.
inline constexpr absl::string_view kChannel = "channel";        // a secure channel's address
inline constexpr absl::string_view kIdentifier = "identifier";  // the peer's identifier
inline constexpr absl::string_view kRoute = "route";            // a route or hop, as text
inline constexpr absl::string_view kReason = "reason";          // an error reason (error_reason.h)
inline constexpr absl::string_view kListener = "listener";      // a listener's address
inline constexpr absl::string_view kRelay = "relay";            // a relay's name or address
inline constexpr absl::string_view kHub = "hub";                // a hub's route
inline constexpr absl::string_view kConnection = "connection";  // a TCP connection's worker
inline constexpr absl::string_view kPeer = "peer";              // the far end's HOST:PORT
inline constexpr absl::string_view kOrigin = "origin";          // a message's provenance
inline constexpr absl::string_view kAddress = "address";        // an app's served address
inline constexpr absl::string_view kPortal = "portal";          // an inlet's or outlet's name
}  // namespace log_field

struct LogField {
  absl::string_view key;
  absl::string_view value;  // empty: left out
};

// The fields of the log line being formatted on this thread; empty outside Log().
absl::Span<const LogField> CurrentLogFields();

namespace internal {
class LogFieldsScope {
 public:
  explicit LogFieldsScope(absl::Span<const LogField> fields);
  ~LogFieldsScope();
  LogFieldsScope(const LogFieldsScope&) = delete;
  LogFieldsScope& operator=(const LogFieldsScope&) = delete;

 private:
  absl::Span<const LogField> previous_;
};
}  // namespace internal

// spdlog::log(level, format, args...) with `fields` on the line.
template <typename... Args>
void Log(spdlog::level::level_enum level, std::initializer_list<LogField> fields,
         spdlog::format_string_t<Args...> format, Args&&... args) {
  if (!spdlog::should_log(level)) return;
  internal::LogFieldsScope scope(absl::MakeConstSpan(fields.begin(), fields.size()));
  spdlog::log(level, format, std::forward<Args>(args)...);
}

}  // namespace veil

#endif  // VEIL_SIDECAR_COMMON_LOG_FIELDS_H_
