#include "sidecar/core/address.h"

#include <charconv>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/unix_socket.h"

namespace veil::core {
namespace {

absl::Status Invalid(absl::string_view what) {
  return ErrorWithReason(absl::StatusCode::kInvalidArgument, what, reason::kInvalidAddress);
}

bool IsNameChar(char c) { return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-'; }

bool IsIpv4(absl::string_view host) {
  int parts = 0;
  size_t i = 0;
  while (i <= host.size()) {
    size_t j = host.find('.', i);
    if (j == absl::string_view::npos) j = host.size();
    absl::string_view part = host.substr(i, j - i);
    if (part.empty() || part.size() > 3) return false;
    int value = 0;
    for (char c : part) {
      if (!absl::ascii_isdigit(c)) return false;
      value = value * 10 + (c - '0');
    }
    if (value > 255) return false;
    ++parts;
    i = j + 1;
  }
  return parts == 4;
}

bool IsDnsName(absl::string_view host) {
  if (host.empty() || host.size() > kMaxHostLength) return false;
  bool all_digits_and_dots = true;
  size_t label = 0;
  for (char c : host) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    if (!absl::ascii_isalnum(c) && c != '-') return false;
    if (!absl::ascii_isdigit(c)) all_digits_and_dots = false;
    if (++label > 63) return false;
  }
  // Something like "1.2.3" or "999.1.1.1" is a malformed IPv4 address, not a name.
  return label != 0 && !all_digits_and_dots;
}

bool IsIpv6(absl::string_view host) {
  if (host.size() < 2 || host.size() > 45) return false;
  int colons = 0;
  for (char c : host) {
    if (c == ':') {
      ++colons;
    } else if (!absl::ascii_isxdigit(c) && c != '.') {
      return false;
    }
  }
  return colons >= 2;
}

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(absl::string_view text, bool allow_port_zero) {
  size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos) {
    return Invalid(absl::StrCat(QuoteInput(text), " is not host:port (no port)"));
  }
  absl::string_view host = text.substr(0, colon);
  absl::string_view port_text = text.substr(colon + 1);
  HostPort out;
  if (!host.empty() && host.front() == '[') {
    if (host.size() < 2 || host.back() != ']' || !IsIpv6(host.substr(1, host.size() - 2))) {
      return Invalid(absl::StrCat(QuoteInput(host), " is not a bracketed IPv6 address"));
    }
    out.host = std::string(host.substr(1, host.size() - 2));
  } else if (IsIpv4(host) || IsDnsName(host)) {
    out.host = std::string(host);
  } else {
    return Invalid(absl::StrCat(QuoteInput(host),
                                " is not a host (IPv4 address, [IPv6] address or DNS name)"));
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      port > 65535 || (port == 0 && !allow_port_zero) || port_text.size() > 5) {
    return Invalid(absl::StrCat(QuoteInput(port_text), " is not a port (",
                                allow_port_zero ? "0" : "1", "..65535)"));
  }
  out.port = static_cast<uint16_t>(port);
  return out;
}

bool IsLoopbackHost(absl::string_view host) {
  if (host == "localhost" || host == "::1") return true;
  return absl::StartsWith(host, "127.") &&
         host.find_first_not_of("0123456789.") == absl::string_view::npos;
}

std::string FormatHostPort(absl::string_view host, uint16_t port) {
  if (host.find(':') != absl::string_view::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::Status ValidateUnixPath(absl::string_view path) {
  if (path.empty() || path.front() != '/') {
    return Invalid(absl::StrCat("Unix socket path ", QuoteInput(path), " is not absolute"));
  }
  if (path.size() > kMaxUnixSocketPath) {
    return Invalid(absl::StrCat("Unix socket path ", QuoteInput(path), " is longer than ",
                                kMaxUnixSocketPath, " bytes"));
  }
  for (char c : path) {
    if (c < 0x20 || c > 0x7e) {
      return Invalid(absl::StrCat("Unix socket path ", QuoteInput(path),
                                  " has a character outside printable ASCII"));
    }
  }
  if (path.back() == '/') {
    return Invalid(absl::StrCat("Unix socket path ", QuoteInput(path), " ends in '/'"));
  }
  for (absl::string_view part : absl::StrSplit(path.substr(1), '/')) {
    if (part.empty() || part == "." || part == "..") {
      return Invalid(absl::StrCat("Unix socket path ", QuoteInput(path),
                                  " is not in its plain form (an empty, \".\" or \"..\" part)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<WebSocketTarget> ParseWebSocketTarget(absl::string_view text, bool allow_port_zero) {
  const size_t slash = text.find('/');
  WebSocketTarget out;
  auto host_port = ParseHostPort(text.substr(0, slash), allow_port_zero);
  if (!host_port.ok()) return host_port.status();
  out.host_port = *std::move(host_port);
  if (slash == absl::string_view::npos) return out;
  absl::string_view path = text.substr(slash);
  if (path.size() > 256) {
    return Invalid(absl::StrCat("URL path ", QuoteInput(path), " is longer than 256 bytes"));
  }
  for (char c : path) {
    if (!absl::ascii_isalnum(c) &&
        absl::string_view("-._~!$&'()*+,;=:@%/?").find(c) == absl::string_view::npos) {
      return Invalid(
          absl::StrCat("URL path ", QuoteInput(path), " has a character not allowed in a URL"));
    }
  }
  out.path = std::string(path);
  return out;
}

std::string EscapeHopValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size() + 8);
  for (char c : value) {
    if (c == '%') {
      out += "%25";
    } else if (c == '/') {
      out += "%2F";
    } else {
      out += c;
    }
  }
  return out;
}

absl::StatusOr<std::string> UnescapeHopValue(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size() || !absl::ascii_isxdigit(text[i + 1]) ||
        !absl::ascii_isxdigit(text[i + 2])) {
      return Invalid(absl::StrCat(QuoteInput(text), " has a '%' not followed by two hex digits"));
    }
    auto hex = [](char c) {
      return absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10;
    };
    out += static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2]));
    i += 2;
  }
  return out;
}

absl::Status ValidateLocalName(absl::string_view name) {
  if (name.empty()) return Invalid("a worker name is empty");
  if (name.size() > kMaxLocalNameLength) {
    return Invalid(
        absl::StrCat("a worker name is longer than ", kMaxLocalNameLength, " characters"));
  }
  for (char c : name) {
    if (!IsNameChar(c)) {
      return Invalid(absl::StrCat("worker name ", QuoteInput(name),
                                  " has a character outside [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAppAddress(absl::string_view name) {
  if (absl::Status valid = ValidateLocalName(name); !valid.ok()) return valid;
  if (name.front() == '_') {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           "addresses starting with '_' are reserved for the sidecar",
                           reason::kInvalidAddress);
  }
  return absl::OkStatus();
}

absl::StatusOr<Address> Address::Make(uint32_t type, std::string value) {
  switch (static_cast<AddressType>(type)) {
    case AddressType::kLocal: {
      absl::Status s = ValidateLocalName(value);
      if (!s.ok()) return s;
      return Local(std::move(value));
    }
    case AddressType::kTcp: {
      auto hp = ParseHostPort(value);
      if (!hp.ok()) return hp.status();
      return Tcp(std::move(value));
    }
    case AddressType::kUds: {
      absl::Status s = ValidateUnixPath(value);
      if (!s.ok()) return s;
      return Uds(std::move(value));
    }
    case AddressType::kWs:
    case AddressType::kWss: {
      auto target = ParseWebSocketTarget(value);
      if (!target.ok()) return target.status();
      return WebSocket(std::move(value), static_cast<AddressType>(type) == AddressType::kWss);
    }
  }
  return Invalid(absl::StrCat("unknown address type ", type));
}

std::string Address::ToString() const {
  switch (type_) {
    case AddressType::kLocal:
      return absl::StrCat("/service/", value_);
    case AddressType::kTcp:
      return absl::StrCat("/tcp/", value_);
    case AddressType::kUds:
      return absl::StrCat("/uds/", EscapeHopValue(value_));
    case AddressType::kWs:
      return absl::StrCat("/ws/", EscapeHopValue(value_));
    case AddressType::kWss:
      return absl::StrCat("/wss/", EscapeHopValue(value_));
  }
  return absl::StrCat("/", static_cast<uint32_t>(type_), "/", value_);
}

}  // namespace veil::core
