// veild: the veil daemon. See `veild --help`, README.md and docs/operations.md.
#include <cstdio>
#include <filesystem>
#include <set>
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
    auto loaded = veil::daemon::LoadConfigFile(options.config_file);
    absl::Status status = loaded.status();
    if (loaded.ok()) {
      // Identities the file names must exist somewhere: in it, by --identity, or in the state
      // directory (whose file names say which it has; nothing is decrypted).
      std::set<std::string> known(options.identities.begin(), options.identities.end());
      std::error_code ec;
      for (const auto& file : std::filesystem::directory_iterator(
               std::filesystem::path(options.state_dir) / "identities", ec)) {
        if (file.path().extension() == ".identity") known.insert(file.path().stem().string());
      }
      status = veil::daemon::CheckIdentitiesKnown(
          *loaded, known, "not given with --identity, not in " + options.state_dir);
    }
    if (!status.ok()) {
      std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
      return 1;
    }
    const auto& config = loaded->config;
    std::printf("%s: valid: %d identities, %d trusted identities, %d listeners, %d relays\n",
                options.config_file.c_str(), config.identities_size(),
                config.trusted_identities_size(), config.listeners_size(), config.relays_size());
    return 0;
  }
  absl::Status status = veil::daemon::RunDaemon(options);
  if (!status.ok()) {
    spdlog::error("veild cannot start: {}", status.message());
    return 1;
  }
  return 0;
}
