// Logging set-up: spdlog's default logger writes to stderr, as human text or as JSON lines
// ({"ts","level","logger","msg"} and the line's structured fields, common/log_fields.h). No log
// line ever carries key material or app payloads.
#ifndef VEIL_SIDECAR_DAEMON_LOGGING_H_
#define VEIL_SIDECAR_DAEMON_LOGGING_H_

#include <string>

namespace veil::daemon {

// `format`: "text" or "json"; `level`: trace, debug, info, warn or error.
void SetUpLogging(const std::string& format, const std::string& level);

}  // namespace veil::daemon

#endif  // VEIL_SIDECAR_DAEMON_LOGGING_H_
