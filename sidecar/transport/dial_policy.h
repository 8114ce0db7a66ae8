// DialAllowList: which "/tcp/HOST:PORT" and "/uds/PATH" hops this node dials for messages that
// did not start on it (that came from the network or out of a secure channel). A node always dials
// for its own apps and workers; for anyone else only what an entry allows (--allow-dial, config
// `allow_dial`), so that no stranger can make it connect somewhere and write there (SSRF).
// Default: empty, nothing. Pure; no I/O, no name resolution.
//
// Entries:
//   *                   any TCP hop (an open relay: only on a network you control)
//   HOST:PORT, HOST:*   a host as written in the hop: a DNS name (compared case-insensitively)
//                       or an IP address, IPv6 in brackets ("[::1]:*")
//   CIDR:PORT, CIDR:*   an IP network, e.g. "10.0.0.0/8:5432", "[fd00::/8]:*": matches hops
//                       written as IP addresses in it (a DNS name never matches a network)
//   unix:PATH           the Unix socket at that absolute path, exactly ("*" never covers a
//                       Unix socket: a stranger must not pick a local socket to write to)
//
// Thread-safety: immutable once built; Allows() may be called from any thread.
#ifndef VEIL_SIDECAR_TRANSPORT_DIAL_POLICY_H_
#define VEIL_SIDECAR_TRANSPORT_DIAL_POLICY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "boost/asio/ip/network_v4.hpp"
#include "boost/asio/ip/network_v6.hpp"

namespace veil::transport {

class DialAllowList {
 public:
  // Adds one entry; INVALID_ARGUMENT naming what is wrong.
  absl::Status Add(absl::string_view entry);
  // Whether the hop "host:port" (as ParseHostPort reads it) may be dialled.
  bool Allows(absl::string_view host, uint16_t port) const;
  // Whether the hop "/uds/`path`" may be dialled.
  bool AllowsUnix(absl::string_view path) const;
  bool empty() const { return !any_ && entries_.empty() && unix_paths_.empty(); }
  // The entries as given, for logs and GetNode.
  const std::vector<std::string>& entries() const { return texts_; }

 private:
  struct Entry {
    std::string host;  // lower-case name or IP text; empty for a network
    std::optional<boost::asio::ip::network_v4> v4;
    std::optional<boost::asio::ip::network_v6> v6;
    uint16_t port = 0;  // 0: any
  };
  bool any_ = false;
  std::vector<Entry> entries_;
  std::vector<std::string> unix_paths_;
  std::vector<std::string> texts_;
};

}  // namespace veil::transport

#endif  // VEIL_SIDECAR_TRANSPORT_DIAL_POLICY_H_
