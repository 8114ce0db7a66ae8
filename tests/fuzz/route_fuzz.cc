// Route text parser: never crashes; what parses prints back to text that parses to the same.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "sidecar/core/route.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto route = veil::core::Route::Parse(text);
  if (!route.ok()) return 0;
  std::string printed = route->ToString();
  auto again = veil::core::Route::Parse(printed);
  if (!again.ok() || again->ToString() != printed) std::abort();
  return 0;
}
