#include "sidecar/core/route.h"

#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"

namespace veil::core {
namespace {

absl::Status BadRoute(absl::string_view text, absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                         absl::StrCat("invalid route ", QuoteInput(text), ": ", why),
                         reason::kInvalidRoute);
}

}  // namespace

absl::StatusOr<Route> Route::Parse(absl::string_view text) {
  if (text.empty()) return BadRoute(text, "it is empty");
  if (text.front() != '/') {
    return BadRoute(text, "it must start with '/' (e.g. \"/service/echoer\")");
  }
  Hops hops;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t n = hops.size() + 1;
    if (n > kMaxRouteHops) {
      return BadRoute(text, absl::StrCat("more than ", kMaxRouteHops, " hops"));
    }
    size_t type_end = text.find('/', pos + 1);
    absl::string_view type =
        text.substr(pos + 1, type_end == absl::string_view::npos ? absl::string_view::npos
                                                                 : type_end - pos - 1);
    if (type_end == absl::string_view::npos || type_end + 1 >= text.size() ||
        text[type_end + 1] == '/') {
      return BadRoute(text, absl::StrCat("segment ", n, " (", QuoteInput(absl::StrCat("/", type)),
                                         ") has no value"));
    }
    size_t value_end = text.find('/', type_end + 1);
    if (value_end == absl::string_view::npos) value_end = text.size();
    absl::string_view raw_value = text.substr(type_end + 1, value_end - type_end - 1);
    absl::string_view segment = text.substr(pos, value_end - pos);
    uint32_t wire_type;
    std::string value;
    if (type == "service") {
      wire_type = static_cast<uint32_t>(AddressType::kLocal);
      value = std::string(raw_value);
    } else if (type == "tcp") {
      wire_type = static_cast<uint32_t>(AddressType::kTcp);
      value = std::string(raw_value);
    } else if (type == "uds" || type == "ws" || type == "wss") {
      wire_type = static_cast<uint32_t>(type == "uds"  ? AddressType::kUds
                                        : type == "ws" ? AddressType::kWs
                                                       : AddressType::kWss);
      auto unescaped = UnescapeHopValue(raw_value);
      if (!unescaped.ok()) {
        return BadRoute(text, absl::StrCat("segment ", n, " (", QuoteInput(segment),
                                           "): ", unescaped.status().message()));
      }
      value = *std::move(unescaped);
    } else {
      return BadRoute(text,
                      absl::StrCat("segment ", n, " (", QuoteInput(segment), ") has unknown type ",
                                   QuoteInput(type),
                                   " (expected \"service\", \"tcp\", \"uds\", \"ws\" or \"wss\")"));
    }
    auto address = Address::Make(wire_type, std::move(value));
    if (!address.ok()) {
      return BadRoute(text, absl::StrCat("segment ", n, " (", QuoteInput(segment),
                                         "): ", address.status().message()));
    }
    hops.push_back(*std::move(address));
    pos = value_end;
  }
  return Route(std::move(hops));
}

std::string Route::ToString() const {
  std::string out;
  for (const Address& hop : hops_) absl::StrAppend(&out, hop.ToString());
  return out;
}

Address Route::PopFront() {
  Address first = std::move(hops_.front());
  hops_.erase(hops_.begin());
  return first;
}

void Route::PushFront(Address hop) { hops_.insert(hops_.begin(), std::move(hop)); }

}  // namespace veil::core
