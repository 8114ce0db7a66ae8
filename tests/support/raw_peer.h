// Test support: an attacker with nothing but a connection (TCP or Unix socket). It speaks the
// documented wire format (a version byte, then u32-length frames of TransportMessage) through the
// project's own frame codec, holds no identity and may send anything: forged routes, refusal
// notices, path tags, handshakes, garbage. Optionally from another loopback address (127.0.0.2,
// ...) to stand for a different remote host.
//
// Thread-safety: not synchronised; use from one thread.
#ifndef VEIL_TESTS_SUPPORT_RAW_PEER_H_
#define VEIL_TESTS_SUPPORT_RAW_PEER_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "sidecar/core/message.h"
#include "sidecar/core/route.h"
#include "sidecar/transport/frame_codec.h"
#include "tests/support/websocket_bridge.h"

namespace veil::testing {

class RawPeer {
 public:
  RawPeer() : decoder_(transport::kDefaultMaxFrameBytes) {}
  ~RawPeer();
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  // Connects to "host:port" from `source` (an address of this host, "" for any) and sends the
  // version byte. False when it cannot.
  bool Connect(const std::string& host_port, const std::string& source = "");
  // The same to a route hop: "/tcp/HOST:PORT", "/uds/ESCAPED-PATH", or "/ws/…", "/wss/…"
  // (through a WebSocketBridge; `ca_file` verifies a /wss node).
  bool ConnectHop(const std::string& hop, const std::string& ca_file = "");
  // Sends one frame. `onward`/`back` are route text ("" for none).
  bool Send(const std::string& onward, const std::string& back, const std::string& payload,
            const absl::Status& refusal = absl::OkStatus(), uint64_t path_tag = 0);
  bool SendBytes(const std::string& bytes);
  // The next message the node sent, within `timeout`; nullopt on timeout, close or a frame
  // that does not decode.
  std::optional<core::Message> Read(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // The next refusal notice (a message with a refusal; others are skipped), within `timeout`.
  std::optional<core::Message> ReadRefusal(
      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // True when the node closes the connection within `timeout` (what it sent first is read
  // and dropped; a connection refusal is kept: last_connection_refusal()).
  bool WaitClosed(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  const absl::Status& last_connection_refusal() const { return connection_refusal_; }
  void Close();
  bool connected() const { return fd_ >= 0; }

 private:
  // Reads more bytes into the decoder, waiting until `deadline`; false on timeout or close.
  bool Fill(std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  std::unique_ptr<WebSocketBridge> bridge_;  // for /ws and /wss
  bool closed_ = false;
  transport::FrameDecoder decoder_;
  absl::Status connection_refusal_;
};

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_RAW_PEER_H_
