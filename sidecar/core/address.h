// Address: one hop of a route — a local worker name, a TCP "host:port" or a Unix socket path.
//
// Text form: "/service/<name>" for a local worker, "/tcp/<host>:<port>" for a TCP hop,
// "/uds/<escaped path>" for a Unix socket (each '%' and '/' of the path written %25 and %2F, so
// that a path never reads as further segments). See docs/routes.md. Values are validated on
// construction from untrusted input (Parse*, Make).
//
// Thread-safety: immutable value type; safe to share between threads.
#ifndef VEIL_SIDECAR_CORE_ADDRESS_H_
#define VEIL_SIDECAR_CORE_ADDRESS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace veil::core {

// Kinds of address. The numeric values are the wire encoding (veil.wire.v1.Address.type).
enum class AddressType : uint32_t {
  kLocal = 0,  // a worker on the node that reads the address; text "/service/NAME"
  kTcp = 1,    // a TCP endpoint "host:port"; text "/tcp/HOST:PORT"
  kUds = 2,    // a Unix stream socket, by absolute path; text "/uds/ESCAPED-PATH"
  kWs = 3,     // a WebSocket endpoint "host:port[/url-path]"; text "/ws/HOST:PORT[%2FPATH]"
  kWss = 4,    // the same over TLS; text "/wss/HOST:PORT[%2FPATH]"
};
// One more than the largest AddressType.
inline constexpr size_t kAddressTypes = 5;

inline constexpr size_t kMaxLocalNameLength = 128;
inline constexpr size_t kMaxHostLength = 253;

// A host and port, parsed from "host:port" or "[v6]:port".
struct HostPort {
  std::string host;  // without brackets
  uint16_t port = 0;
};

// Parses "host:port", "[ipv6]:port". Host: an IPv4 address, a bracketed IPv6 address or a DNS
// name of letters, digits, '-' and '.'. Port: 1..65535, or 0 too when `allow_port_zero`.
// Returns INVALID_ARGUMENT naming what is wrong.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view text, bool allow_port_zero = false);

// True for "localhost", "::1" and 127.x.y.z: a listener there is reachable from this host only.
bool IsLoopbackHost(absl::string_view host);

// Formats a host and port the way ParseHostPort reads them (IPv6 hosts in brackets).
std::string FormatHostPort(absl::string_view host, uint16_t port);

// Checks a Unix socket path for a "/uds" hop or listener: absolute, printable
// ASCII (space included), at most kMaxUnixSocketPath bytes, no "//", no "." or ".." component, not
// ending in '/'. INVALID_ARGUMENT (INVALID_ADDRESS) naming what is wrong.
absl::Status ValidateUnixPath(absl::string_view path);

// A WebSocket endpoint: "host:port" (as ParseHostPort reads it) and a URL path, "/" when none
// was given.
struct WebSocketTarget {
  HostPort host_port;
  std::string path = "/";
};
// Parses "host:port" or "host:port/path": the path is at most 256 bytes of URL characters
// ([A-Za-z0-9] and -._~!$&'()*+,;=:@%/?). INVALID_ARGUMENT (INVALID_ADDRESS) naming what is
// wrong. With `allow_port_zero`, port 0 (a listener's "any port").
absl::StatusOr<WebSocketTarget> ParseWebSocketTarget(absl::string_view text,
                                                     bool allow_port_zero = false);

// The text form's escaping of a hop value: '%' and '/' become %25 and %2F; everything else is
// itself. UnescapeHopValue reads %XX (either case) and refuses a '%' not followed by two hex
// digits (INVALID_ARGUMENT).
std::string EscapeHopValue(absl::string_view value);
absl::StatusOr<std::string> UnescapeHopValue(absl::string_view text);

// Checks a local worker name: 1..128 of [A-Za-z0-9._-]. INVALID_ARGUMENT otherwise.
absl::Status ValidateLocalName(absl::string_view name);

// Checks an address an app (or the API) may claim — to serve, or for a listener: a valid
// local name not starting with '_', which is the sidecar's own (INVALID_ARGUMENT,
// INVALID_ADDRESS).
absl::Status ValidateAppAddress(absl::string_view name);

class Address {
 public:
  // A local worker address. `name` must be valid (see ValidateLocalName); checked in debug.
  static Address Local(std::string name) { return Address(AddressType::kLocal, std::move(name)); }
  // A TCP address; `host_port` must be valid (see ParseHostPort).
  static Address Tcp(std::string host_port) {
    return Address(AddressType::kTcp, std::move(host_port));
  }
  // A Unix socket address; `path` must be valid (see ValidateUnixPath).
  static Address Uds(std::string path) { return Address(AddressType::kUds, std::move(path)); }
  // A WebSocket address (TLS when `tls`); `target` must be valid (see ParseWebSocketTarget).
  static Address WebSocket(std::string target, bool tls) {
    return Address(tls ? AddressType::kWss : AddressType::kWs, std::move(target));
  }
  // Validates `value` for `type` (as read from the wire or text); INVALID_ARGUMENT otherwise.
  static absl::StatusOr<Address> Make(uint32_t type, std::string value);

  AddressType type() const { return type_; }
  const std::string& value() const { return value_; }
  bool is_local() const { return type_ == AddressType::kLocal; }

  // The text form, e.g. "/service/echoer", "/uds/%2Frun%2Fveil%2Fbob.sock".
  std::string ToString() const;

  friend bool operator==(const Address& a, const Address& b) = default;
  template <typename H>
  friend H AbslHashValue(H h, const Address& a) {
    return H::combine(std::move(h), a.type_, a.value_);
  }

 private:
  Address(AddressType type, std::string value) : type_(type), value_(std::move(value)) {}

  AddressType type_;
  std::string value_;
};

}  // namespace veil::core

#endif  // VEIL_SIDECAR_CORE_ADDRESS_H_
