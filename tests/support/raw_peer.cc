#include "tests/support/raw_peer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "sidecar/core/address.h"
#include "sidecar/core/message_codec.h"
#include "tests/support/socket_io.h"

namespace veil::testing {

RawPeer::~RawPeer() { Close(); }

void RawPeer::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  bridge_.reset();
}

bool RawPeer::Connect(const std::string& host_port, const std::string& source) {
  auto hp = core::ParseHostPort(host_port);
  if (!hp.ok()) return false;
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return false;
  if (!source.empty()) {
    sockaddr_in local{};
    local.sin_family = AF_INET;
    if (::inet_pton(AF_INET, source.c_str(), &local.sin_addr) != 1 ||
        ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
      Close();
      return false;
    }
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(hp->port);
  if (::inet_pton(AF_INET, hp->host.c_str(), &to.sin_addr) != 1 ||
      ::connect(fd_, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    Close();
    return false;
  }
  const char version = static_cast<char>(transport::kWireVersion);
  return WriteFull(fd_, &version, 1);
}

bool RawPeer::ConnectHop(const std::string& hop, const std::string& ca_file) {
  auto route = core::Route::Parse(hop);
  if (!route.ok() || route->size() != 1) return false;
  const core::Address& address = route->front();
  if (address.type() == core::AddressType::kTcp) return Connect(address.value());
  if (address.type() == core::AddressType::kWs || address.type() == core::AddressType::kWss) {
    bridge_ = WebSocketBridge::Open(address, ca_file, &fd_);
    if (bridge_ == nullptr) return false;
    const char version = static_cast<char>(transport::kWireVersion);
    return WriteFull(fd_, &version, 1);
  }
  if (address.type() != core::AddressType::kUds) return false;
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return false;
  sockaddr_un to{};
  to.sun_family = AF_UNIX;
  if (address.value().size() >= sizeof(to.sun_path)) return false;
  std::memcpy(to.sun_path, address.value().data(), address.value().size());
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    Close();
    return false;
  }
  const char version = static_cast<char>(transport::kWireVersion);
  return WriteFull(fd_, &version, 1);
}

bool RawPeer::Send(const std::string& onward, const std::string& back, const std::string& payload,
                   const absl::Status& refusal, uint64_t path_tag) {
  core::Route to, from;
  if (!onward.empty()) {
    auto parsed = core::Route::Parse(onward);
    if (!parsed.ok()) return false;
    to = *std::move(parsed);
  }
  if (!back.empty()) {
    auto parsed = core::Route::Parse(back);
    if (!parsed.ok()) return false;
    from = *std::move(parsed);
  }
  std::string frame;
  if (!transport::AppendFrame(to, from, payload, transport::kDefaultMaxFrameBytes, frame, refusal,
                              path_tag)
           .ok()) {
    return false;
  }
  return SendBytes(frame);
}

bool RawPeer::SendBytes(const std::string& bytes) {
  return fd_ >= 0 && WriteFull(fd_, bytes.data(), bytes.size());
}

bool RawPeer::Fill(std::chrono::steady_clock::time_point deadline) {
  if (fd_ < 0 || closed_) return false;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
  std::span<char> space = decoder_.WritableSpace(64 * 1024);
  ssize_t n = ::read(fd_, space.data(), space.size());
  if (n <= 0) {
    closed_ = true;
    return false;
  }
  decoder_.Commit(static_cast<size_t>(n));
  return true;
}

std::optional<core::Message> RawPeer::Read(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto frame = decoder_.Next();
    if (!frame.ok()) return std::nullopt;
    if (frame->has_value()) {
      auto msg = core::DecodeMessage(**frame);
      if (!msg.ok()) return std::nullopt;
      if (core::IsConnectionRefusal(*msg)) connection_refusal_ = msg->refusal;
      return *std::move(msg);
    }
    if (!Fill(deadline)) return std::nullopt;
  }
}

std::optional<core::Message> RawPeer::ReadRefusal(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto msg = Read(left);
    if (!msg.has_value()) return std::nullopt;
    if (!msg->refusal.ok()) return msg;
  }
}

bool RawPeer::WaitClosed(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!closed_) {
    auto frame = decoder_.Next();
    if (frame.ok() && frame->has_value()) {
      auto msg = core::DecodeMessage(**frame);
      if (msg.ok() && core::IsConnectionRefusal(*msg)) connection_refusal_ = msg->refusal;
      continue;
    }
    if (!frame.ok()) return false;
    if (!Fill(deadline) && !closed_) return false;
  }
  return true;
}

}  // namespace veil::testing
