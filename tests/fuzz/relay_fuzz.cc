// Relay control messages: a sequence of (owner, connection, RelayRequest bytes, clock step)
// applied to the hub's registry as RelayHub does. Never crashes; a registered relay is owned by
// whoever registered it, nobody else can check or unregister it, and limits hold.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "sidecar/relay/relay_registry.h"
#include "veil/wire/v1/relay.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  veil::relay::RelayLimits limits;
  limits.per_connection = 3;
  limits.per_identity = 4;
  limits.total = 8;
  limits.reservation = std::chrono::seconds(5);
  int names = 0;
  veil::relay::RelayRegistry registry(limits, veil::relay::AllowList(),
                                      [&names] { return "r" + std::to_string(names++); });
  auto now = veil::relay::RelayRegistry::Clock::time_point{};
  while (in.remaining_bytes() > 0) {
    std::string owner = "I" + std::to_string(in.ConsumeIntegralInRange(0, 3));
    std::string connection = "_tcp_" + std::to_string(in.ConsumeIntegralInRange(0, 3));
    now += std::chrono::seconds(in.ConsumeIntegralInRange(0, 4));
    if (in.ConsumeBool()) {
      registry.DropConnection(connection, now);
      continue;
    }
    veil::wire::v1::RelayRequest request;
    if (!request.ParseFromString(in.ConsumeRandomLengthString(128))) continue;
    switch (request.kind_case()) {
      case veil::wire::v1::RelayRequest::kRegister: {
        auto entry = registry.Register(owner, request.register_().name(), connection, now);
        if (entry.ok()) {
          if (!registry.Check(owner, entry->name).ok()) std::abort();
          std::string other = owner == "I0" ? "I1" : "I0";
          if (registry.Check(other, entry->name).ok()) std::abort();
          if (registry.Unregister(other, entry->name).ok()) std::abort();
        }
        break;
      }
      case veil::wire::v1::RelayRequest::kHeartbeat:
        (void)registry.Check(owner, request.heartbeat().name());
        break;
      case veil::wire::v1::RelayRequest::kUnregister:
        (void)registry.Unregister(owner, request.unregister().name());
        break;
      default:
        break;
    }
    if (registry.List().size() > limits.total) std::abort();
  }
  return 0;
}
