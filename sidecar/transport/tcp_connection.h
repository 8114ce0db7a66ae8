// TcpConnection: one TCP connection to another node, as a worker at a local address
// ("_tcp_<n>"). Messages routed to it are framed and written to the socket; frames read from
// it are decoded, get the connection's address prepended to their return route (so replies
// come back through it), and are handed to the router.
//
// Outcomes: a message's receipt is settled OK once its frame was written to the socket, or
// with an error when it cannot be (UNAVAILABLE: CONNECTION_FAILED before the connection was
// up, CONNECTION_LOST after; INVALID_ARGUMENT MESSAGE_TOO_LARGE; RESOURCE_EXHAUSTED QUEUE_FULL
// when more than the write-queue limit is waiting — except for paced messages, which a queue
// takes over its limit). A connection that fails or closes never reopens: the transport opens a
// new one on the next send.
//
// Backpressure: every message read from the socket is paced by its receipt. While more than
// `max_unsettled_read_bytes` of them are still on their way on this node (queued for an app,
// a relay or another connection), the connection stops reading; the peer's writes then back
// up and its own senders are refused with QUEUE_FULL. Reading resumes below half the limit.
// Frames read that could not (wholly) be handed on are counted (Stats::received_refused).
//
// Thread-safety: everything but the constructor, peer() and outgoing() runs on strand().
#ifndef VEIL_SIDECAR_TRANSPORT_TCP_CONNECTION_H_
#define VEIL_SIDECAR_TRANSPORT_TCP_CONNECTION_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "asio/ip/tcp.hpp"
#include "asio/steady_timer.hpp"
#include "sidecar/core/worker.h"
#include "sidecar/transport/frame_codec.h"

namespace veil::transport {

class TcpTransport;

struct TcpOptions {
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  // Bytes of frames waiting to be written before new messages are refused.
  size_t max_write_queue_bytes = 64 * 1024 * 1024;
  // Bytes read from the socket and not yet handed on before the connection stops reading.
  size_t max_unsettled_read_bytes = 8 * 1024 * 1024;
  std::chrono::milliseconds connect_timeout{10000};
};

class TcpConnection final : public core::Worker,
                            public std::enable_shared_from_this<TcpConnection> {
 public:
  // An outgoing connection to `peer` ("host:port"), not yet connected: Start() connects.
  TcpConnection(core::Strand strand, TcpTransport& transport, const TcpOptions& options,
                std::string peer);
  // An accepted connection; `socket` must be open and use `strand` as its executor.
  TcpConnection(core::Strand strand, TcpTransport& transport, const TcpOptions& options,
                asio::ip::tcp::socket socket);

  // Starts connecting (outgoing) or reading (accepted). Call once, after the worker started.
  void Start();
  // Closes the connection, failing queued messages with `why`. Idempotent; posts to the strand.
  void Close(absl::Status why);

  void HandleMessage(core::Message msg) override;
  void OnStop() override;
  bool LeavesHost() const override { return true; }
  bool TakesRefusals() const override { return true; }  // carries them back to their node
  bool HoldingBack() const override { return read_paused_.load(std::memory_order_relaxed); }
  uint64_t BytesReceived() const override { return bytes_received_.load(std::memory_order_relaxed); }

  const std::string& peer() const { return peer_; }
  bool outgoing() const { return outgoing_; }

 private:
  enum class State { kConnecting, kOpen, kClosed };
  class ReadTracker;

  void Connect();
  void OnConnected();
  void ReadMore();
  void OnRead(size_t n);
  void ResumeReading();
  void Flush();
  void CloseNow(absl::Status why);

  TcpTransport& transport_;
  const TcpOptions options_;
  const std::string peer_;
  const bool outgoing_;
  asio::ip::tcp::socket socket_;
  asio::ip::tcp::resolver resolver_;
  asio::steady_timer connect_timer_;
  State state_ = State::kConnecting;
  bool was_open_ = false;  // it was open when it closed (a dialled peer worth dialling again)
  absl::Status close_status_;
  FrameDecoder decoder_;
  // Paces what the reader hands to the router; created when reading starts.
  std::shared_ptr<ReadTracker> read_tracker_;
  std::atomic<bool> read_paused_{false};
  std::atomic<uint64_t> bytes_received_{0};
  // Frames waiting to be written, and their receipts; `writing_` is in flight. Large
  // payloads are not copied: they wait as pieces of their own, written with one gathering
  // write, and the queue is `pending_pieces_` then `pending_`.
  std::string pending_;
  std::vector<std::string> pending_pieces_;
  size_t pending_pieces_bytes_ = 0;
  std::vector<core::Receipt> pending_receipts_;
  std::string writing_;
  std::vector<std::string> writing_pieces_;
  std::vector<asio::const_buffer> write_buffers_;
  std::vector<core::Receipt> writing_receipts_;
  bool write_in_flight_ = false;
};

}  // namespace veil::transport

#endif  // VEIL_SIDECAR_TRANSPORT_TCP_CONNECTION_H_
