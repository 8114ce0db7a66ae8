// Route: the ordered hops a message travels, first hop first.
//
// Text form (docs/routes.md): the concatenation of each hop's text form, e.g.
// "/tcp/127.0.0.1:4000/service/echoer". Parse(ToString(r)) == r for every valid route, and a
// parse error names the bad segment by position.
//
// Thread-safety: value type; not synchronised.
#ifndef VEIL_SIDECAR_CORE_ROUTE_H_
#define VEIL_SIDECAR_CORE_ROUTE_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "sidecar/core/address.h"

namespace veil::core {

// The most hops a route may have; longer routes are refused when parsed or decoded.
inline constexpr size_t kMaxRouteHops = 32;

class Route {
 public:
  // Most routes have one or two hops: those live inside the Route, without an allocation
  // (several Routes are copied per message on the hot path).
  using Hops = absl::InlinedVector<Address, 2>;

  Route() = default;
  explicit Route(Hops hops) : hops_(std::move(hops)) {}

  // Parses the text form. Returns INVALID_ARGUMENT (reason INVALID_ROUTE) naming the bad
  // segment for: empty text, text not starting with '/', an unknown type, a missing or invalid
  // value, or more than kMaxRouteHops hops.
  static absl::StatusOr<Route> Parse(absl::string_view text);

  // The text form; "" for the empty route.
  std::string ToString() const;

  bool empty() const { return hops_.empty(); }
  size_t size() const { return hops_.size(); }
  const Address& front() const { return hops_.front(); }
  const Hops& hops() const { return hops_; }

  // Removes and returns the first hop. The route must not be empty.
  Address PopFront();
  // Adds a hop before the first one.
  void PushFront(Address hop);
  // Adds a hop after the last one.
  void Append(Address hop) { hops_.push_back(std::move(hop)); }

  friend bool operator==(const Route& a, const Route& b) = default;

 private:
  Hops hops_;
};

}  // namespace veil::core

#endif  // VEIL_SIDECAR_CORE_ROUTE_H_
