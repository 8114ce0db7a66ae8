#include "sidecar/transport/dial_policy.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "boost/asio/ip/address.hpp"
#include "sidecar/core/address.h"

namespace veil::transport {
namespace {

absl::Status Bad(absl::string_view entry, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("bad --allow-dial entry \"", entry.substr(0, 300), "\": ", why,
                   " (expected *, HOST:PORT, HOST:*, an IP network such as 10.0.0.0/8:*, or "
                   "unix:/PATH)"));
}

}  // namespace

absl::Status DialAllowList::Add(absl::string_view entry) {
  if (entry == "*") {
    any_ = true;
    texts_.emplace_back(entry);
    return absl::OkStatus();
  }
  if (absl::StartsWith(entry, "unix:")) {
    absl::string_view path = entry.substr(5);
    absl::Status valid = core::ValidateUnixPath(path);
    if (!valid.ok()) return Bad(entry, valid.message());
    unix_paths_.emplace_back(path);
    texts_.emplace_back(entry);
    return absl::OkStatus();
  }
  const size_t colon = entry.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return Bad(entry, "no port");
  absl::string_view host = entry.substr(0, colon);
  absl::string_view port_text = entry.substr(colon + 1);
  Entry e;
  if (port_text != "*") {
    uint32_t port = 0;
    if (!absl::SimpleAtoi(port_text, &port) || port == 0 || port > 65535) {
      return Bad(entry, "the port is not 1..65535 or *");
    }
    e.port = static_cast<uint16_t>(port);
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.find('/') != absl::string_view::npos) {
    boost::system::error_code ec;
    if (host.find(':') != absl::string_view::npos) {
      e.v6 = boost::asio::ip::make_network_v6(std::string(host), ec);
    } else {
      e.v4 = boost::asio::ip::make_network_v4(std::string(host), ec);
    }
    if (ec) return Bad(entry, "not an IP network");
  } else {
    // The same rules as a hop's host: check it by parsing it as one.
    auto parsed = core::ParseHostPort(host.find(':') != absl::string_view::npos
                                          ? absl::StrCat("[", host, "]:1")
                                          : absl::StrCat(host, ":1"));
    if (!parsed.ok()) return Bad(entry, parsed.status().message());
    e.host = absl::AsciiStrToLower(parsed->host);
  }
  entries_.push_back(std::move(e));
  texts_.emplace_back(entry);
  return absl::OkStatus();
}

bool DialAllowList::AllowsUnix(absl::string_view path) const {
  for (const std::string& allowed : unix_paths_) {
    if (allowed == path) return true;
  }
  return false;
}

bool DialAllowList::Allows(absl::string_view host, uint16_t port) const {
  if (any_) return true;
  if (entries_.empty()) return false;
  const std::string lower = absl::AsciiStrToLower(host);
  boost::system::error_code ec;
  const boost::asio::ip::address ip = boost::asio::ip::make_address(lower, ec);
  const bool is_ip = !ec;
  for (const Entry& e : entries_) {
    if (e.port != 0 && e.port != port) continue;
    if (!e.host.empty()) {
      if (e.host == lower) return true;
      // The same IP written another way ("::1" vs "0:0::1").
      if (is_ip) {
        boost::system::error_code ec2;
        boost::asio::ip::address entry_ip = boost::asio::ip::make_address(e.host, ec2);
        if (!ec2 && entry_ip == ip) return true;
      }
      continue;
    }
    if (!is_ip) continue;
    if (e.v4 && ip.is_v4()) {
      boost::asio::ip::network_v4 one(ip.to_v4(), 32);
      if (one.is_subnet_of(*e.v4) || one == *e.v4) return true;
    }
    if (e.v6 && ip.is_v6()) {
      boost::asio::ip::network_v6 one(ip.to_v6(), 128);
      if (one.is_subnet_of(*e.v6) || one == *e.v6) return true;
    }
  }
  return false;
}

}  // namespace veil::transport
