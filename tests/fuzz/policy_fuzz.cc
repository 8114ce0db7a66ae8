// Policy expression parser: never crashes (deep nesting included); what parses prints a
// canonical form that parses to itself and means the same for a sample peer.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "sidecar/channel/policy_expression.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto parsed = veil::channel::PolicyExpression::Parse(text);
  if (!parsed.ok()) return 0;
  auto again = veil::channel::PolicyExpression::Parse(parsed->canonical());
  if (!again.ok() || again->canonical() != parsed->canonical()) std::abort();
  const veil::identity::Attributes attributes = {{"role", "db"}, {"env", "prod"}, {"a", ""}};
  for (const auto* attrs : {&attributes, static_cast<const veil::identity::Attributes*>(nullptr)}) {
    veil::channel::PeerView peer{"I0123456789abcdef0123456789abcdef", attrs};
    if (parsed->Evaluate(peer) != again->Evaluate(peer)) std::abort();
  }
  return 0;
}
