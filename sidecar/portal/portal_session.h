// A portal session: one TCP connection on this node joined to one on the far node, through a
// secure channel (docs/protocol.md, "Portals"; proto/veil/wire/v1/portal.proto).
//
// The same worker serves both ends: an inlet's session (its TCP connection accepted from a
// local app) and an outlet's (connected to the outlet's fixed target). Bytes read from the
// socket go to the peer session as Data frames, at most the peer's window ahead of what it
// acknowledged; Data from the peer is written to the socket and acknowledged once written. So
// a slow reader on either side backs up to the writer on the other through the windows, the
// memory a session holds is bounded by its window, and one stalled session never holds up
// another on the same channel. A shut-down writing side travels as Fin (TCP half-close); any
// failure (a TCP reset, the channel lost, a refusal on the way, a protocol error, the idle
// timeout) resets both ends.
//
// Thread-safety: everything runs on the worker's strand; Reset() may be called from any thread.
#ifndef VEIL_SIDECAR_PORTAL_PORTAL_SESSION_H_
#define VEIL_SIDECAR_PORTAL_PORTAL_SESSION_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/steady_timer.hpp"
#include "sidecar/core/router.h"
#include "sidecar/core/worker.h"
#include "veil/wire/v1/portal.pb.h"

namespace veil::portal {

inline constexpr uint32_t kPortalProtocolVersion = 1;
// The largest read from a session's socket (SessionOptions::read_chunk is capped to it).
inline constexpr size_t kMaxReadChunk = 256 * 1024;

// The payload of a Reset frame (reason: an error reason; message: for people).
std::string ResetFramePayload(absl::string_view reason, absl::string_view message);

// Counters of one inlet's or outlet's sessions; shared by its sessions. Any thread.
struct PortalCounters {
  std::atomic<uint64_t> active{0}, total{0}, reset{0}, refused{0}, bytes_in{0}, bytes_out{0};
};

struct SessionOptions {
  // Bytes this end takes from its peer before acknowledging (its receive window).
  uint32_t window = 1024 * 1024;
  // The largest read from the socket, and so the largest Data frame (at most kMaxReadChunk).
  size_t read_chunk = 256 * 1024;
  // No byte either way for this long resets the session; zero: never.
  std::chrono::milliseconds idle_timeout{0};
  // How long an inlet's session waits for the outlet's Opened.
  std::chrono::milliseconds open_timeout{10000};
};

class PortalSession final : public core::Worker,
                            public std::enable_shared_from_this<PortalSession> {
 public:
  enum class Role { kInlet, kOutlet };

  // `socket` is connected (an inlet's accepted connection) or not yet (an outlet's, which
  // ConnectAndOpen connects). `name` is the inlet's or outlet's, for logs.
  // `channel_via` is the encryptor id of the secure channel the session runs in: the only
  // provenance it admits.
  PortalSession(core::Strand strand, Role role, std::string name,
                boost::asio::ip::tcp::socket socket, uint64_t channel_via, SessionOptions options,
                std::shared_ptr<PortalCounters> counters);
  ~PortalSession() override;

  // Inlet, once started at its address: `outlet_route` is the route to the outlet through the
  // channel. Sends Open and waits for Opened before it reads its socket.
  void StartInlet(core::Route outlet_route);
  // Outlet, once started at its address: the Open came from `peer` (its return route), whose
  // window is `peer_window`. Resolves and connects to `host`:`port` (the outlet's fixed
  // target) and answers Opened, or resets.
  void StartOutlet(core::Route peer, uint32_t peer_window, std::string host, uint16_t port);

  // Resets the session (both ends) with `why`; any thread. Idempotent.
  void Reset(absl::Status why);
  // The channel it runs in (its encryptor id).
  uint64_t channel_via() const { return channel_via_; }
  // Called once when the session has ended, cleanly or not (on the strand): the owner forgets
  // it. `clean` is false for a reset.
  void OnEnded(std::function<void(bool clean)> ended) { ended_ = std::move(ended); }

  // Worker.
  void HandleMessage(core::Message msg) override;
  void OnStop() override;
  absl::Status Admit(const core::SenderInfo& from) const override;
  bool TakesRefusals() const override { return true; }

 private:
  void HandleFrame(wire::v1::PortalFrame frame, const core::Message& msg);
  void SendFrame(const wire::v1::PortalFrame& frame);
  void SendReset(const absl::Status& why);
  void ResetNow(absl::Status why, bool tell_peer);
  void Opened();
  void Connect(const boost::asio::ip::tcp::resolver::results_type& endpoints, std::string target);
  void ConnectFailed(const std::string& target, const std::string& why);
  void MaybeRead();
  void OnReadable(const boost::system::error_code& ec);
  void OnRead(const boost::system::error_code& ec, size_t n, const char* data);
  void MaybeWrite();
  void OnWritten(const boost::system::error_code& ec, size_t n);
  void MaybeAck();
  void MaybeFinish();
  void Touch();
  void ArmIdle();
  // Stops the worker and closes the socket (abortively when `reset`).
  void End(bool reset);

  const Role role_;
  const std::string name_;
  boost::asio::ip::tcp::socket socket_;
  const SessionOptions options_;
  std::shared_ptr<PortalCounters> counters_;
  std::shared_ptr<core::SendTracker> tracker_;
  boost::asio::steady_timer timer_;
  boost::asio::ip::tcp::resolver resolver_;
  std::function<void(bool)> ended_;

  const uint64_t channel_via_;
  core::Route peer_;   // where frames go: the peer session (through the channel)
  bool open_ = false;  // Opened sent or received: the peer session exists
  bool ended_flag_ = false;

  // Sending: bytes read from the socket and sent, and the peer's credit.
  bool reading_ = false;
  bool read_closed_ = false;  // EOF read and Fin sent
  uint64_t sent_ = 0;
  uint64_t peer_consumed_ = 0;
  uint32_t peer_window_ = 0;

  // Receiving: what the peer sent, queued for the socket.
  std::deque<std::string> writes_;
  bool writing_ = false;
  uint64_t received_ = 0;  // next expected offset
  uint64_t written_ = 0;
  uint64_t acked_ = 0;  // the consumed count last sent
  bool peer_fin_ = false;
  bool write_shut_ = false;

  std::chrono::steady_clock::time_point last_activity_;
};

}  // namespace veil::portal

#endif  // VEIL_SIDECAR_PORTAL_PORTAL_SESSION_H_
