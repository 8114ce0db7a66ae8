// The declarative config parser (YAML -> veil.config.v1.Config): never crashes, never hangs.
#include <cstdint>
#include <string>

#include "sidecar/daemon/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;
  veil::config::v1::Config config;
  (void)veil::daemon::YamlToMessage(absl::string_view(reinterpret_cast<const char*>(data), size),
                                    "fuzz.yaml", config);
  return 0;
}
