// veild: the veil daemon. See `veild --help`, README.md and docs/operations.md.
#include <cstdio>
#include <variant>

#include "sidecar/common/fmt_absl.h"
#include "sidecar/daemon/config.h"
#include "sidecar/daemon/daemon.h"
#include "sidecar/daemon/logging.h"
#include "sidecar/daemon/options.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  auto parsed = veil::daemon::ParseOptions(argc, argv);
  if (auto* early = std::get_if<veil::daemon::EarlyExit>(&parsed)) {
    std::fputs(early->text.c_str(), early->code == 0 ? stdout : stderr);
    return early->code;
  }
  const auto& options = std::get<veil::daemon::Options>(parsed);
  veil::daemon::SetUpLogging(options.log_format, options.log_level);
  if (options.check_config) {
    auto config = veil::daemon::LoadConfigFile(options.config_file);
    if (!config.ok()) {
      std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
      return 1;
    }
    std::printf("%s: valid: %d identities, %d trusted identities, %d listeners, %d relays\n",
                options.config_file.c_str(), config->identities_size(),
                config->trusted_identities_size(), config->listeners_size(), config->relays_size());
    return 0;
  }
  absl::Status status = veil::daemon::RunDaemon(options);
  if (!status.ok()) {
    spdlog::error("veild cannot start: {}", status.message());
    return 1;
  }
  return 0;
}
