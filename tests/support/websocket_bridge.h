// Test support: a WebSocket client (Boost.Beast, written apart from veild's own) that carries a
// local socket's bytes as binary messages and back, so that a byte-level peer (RawPeer) can
// attack a node's /ws or /wss listener as it attacks a TCP one.
//
// Thread-safety: one thread of its own pumps both ways; the public calls from one thread.
#ifndef VEIL_TESTS_SUPPORT_WEBSOCKET_BRIDGE_H_
#define VEIL_TESTS_SUPPORT_WEBSOCKET_BRIDGE_H_

#include <memory>
#include <string>

#include "sidecar/core/address.h"

namespace veil::testing {

class WebSocketBridge {
 public:
  // Connects to the /ws or /wss `hop` (TLS verified against `ca_file`) and upgrades; null when
  // it cannot. `fd` gets the local end: what is written to it goes out in binary messages,
  // what arrives can be read from it; it reads end of stream when the WebSocket closes.
  static std::unique_ptr<WebSocketBridge> Open(const core::Address& hop, const std::string& ca_file,
                                               int* fd);
  virtual ~WebSocketBridge() = default;
};

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_WEBSOCKET_BRIDGE_H_
