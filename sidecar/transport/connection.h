// Connection: one connection to another node, as a worker at a local address ("_tcp_<n>",
// "_uds_<n>", "_ws_<n>", "_wss_<n>"), over any Stream (stream.h): the one implementation of node
// framing, write queueing, read pacing, limits and access control for every transport. Messages
// routed to it are framed and written to the stream; frames read from it are decoded, get the
// connection's address prepended to their return route (so replies come back through it), and are
// handed to the router.
//
// Outcomes: a message's receipt is settled OK once its frame was written to the stream, or
// with an error when it cannot be (UNAVAILABLE: CONNECTION_FAILED before the connection was
// up, CONNECTION_LOST after; INVALID_ARGUMENT MESSAGE_TOO_LARGE; RESOURCE_EXHAUSTED QUEUE_FULL
// when more than the write-queue limit is waiting). A connection that fails or closes never
// reopens: the transport opens a new one on the next send.
//
// Backpressure: every message read from the stream is paced by its receipt. While more than
// `max_unsettled_read_bytes` of them are still on their way on this node (queued for an app,
// a relay or another connection), the connection stops reading; the peer's writes then back
// up and its own senders are refused with QUEUE_FULL. Reading resumes below half the limit.
// Frames read that could not (wholly) be handed on are counted (Stats::received_refused).
//
// Access control (Admit): a connection carries off this host what this node's workers send
// (channels' ciphertext, handshakes, replies); an app's or a decrypted message only with
// --insecure-plaintext (PLAINTEXT_EGRESS_REFUSED otherwise); and a message read from another
// connection only when this node decided to forward it — a relay forwarder handing it to its
// owner's connection (SenderInfo::relayed), or a reply coming back the way a forwarded
// message went (AdmitRepliesFrom). Nothing else from the network may make it write. A Unix
// socket's peer is another node like a TCP one: the same rules hold.
//
// Limits: a connection with no frame either way for `idle_timeout`, on which nothing of this
// node rides (NodeTransport::SetInUse), is closed with a connection refusal (IDLE_TIMEOUT).
// Refusal notices wait in the write queue only up to kMaxQueuedNoticeBytes; past that a peer
// that does not read loses them (counted), instead of growing this node's memory.
//
// Thread-safety: everything but the constructor, peer(), hop(), outgoing(), Admit(),
// CarrierOf(), AdmitRepliesFrom() and remote_host() runs on strand().
#ifndef VEIL_SIDECAR_TRANSPORT_CONNECTION_H_
#define VEIL_SIDECAR_TRANSPORT_CONNECTION_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "boost/asio/steady_timer.hpp"
#include "sidecar/common/mutex.h"
#include "sidecar/core/worker.h"
#include "sidecar/transport/dial_policy.h"
#include "sidecar/transport/frame_codec.h"
#include "sidecar/transport/stream.h"

namespace veil::transport {

class NodeTransport;

struct ConnectionOptions {
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  // Bytes of frames waiting to be written before new messages are refused.
  size_t max_write_queue_bytes = 64 * 1024 * 1024;
  // Bytes read from the stream and not yet handed on before the connection stops reading.
  size_t max_unsettled_read_bytes = 64 * 1024 * 1024;
  std::chrono::milliseconds connect_timeout{10000};
  // Lets app payloads and decrypted messages leave in plaintext (testing only).
  bool insecure_plaintext = false;
  // Hops dialled for messages that did not start on this node (dial_policy.h).
  DialAllowList allow_dial;
  // Accepted connections in all and per remote address (IP address; a Unix socket peer's
  // user); beyond them a connection is refused (TOO_MANY_CONNECTIONS) as soon as it is accepted.
  size_t max_connections = 4096;
  size_t max_connections_per_address = 32;
  // A connection with no frame either way for this long, that nothing of this node uses, is
  // closed. 0: never.
  std::chrono::milliseconds idle_timeout{300000};
};

// Bytes of refusal notices a connection's write queue takes; beyond, notices are dropped.
inline constexpr size_t kMaxQueuedNoticeBytes = 64 * 1024;

// The bytes a connection has to write and the receipts they settle, in order: small frames
// are copied together into one piece, a large payload waits as a piece of its own (moved, not
// copied) and all go out in one gathering write. Two batches: the one being written and the
// one filling up meanwhile.
class WriteQueue {
 public:
  // Payloads from this size on are written from where they are rather than copied.
  static constexpr size_t kGatherPayloadBytes = 32 * 1024;

  // Frames `msg` (taking its payload and receipt); MESSAGE_TOO_LARGE leaves `msg` as it was.
  absl::Status Append(core::Message& msg, size_t max_frame_bytes);
  // Appends bytes that settle nothing (the version byte, a connection refusal frame).
  void AppendRaw(absl::string_view bytes);

  // Bytes waiting (not counting the batch being written).
  size_t queued_bytes() const { return queued_bytes_; }
  bool has_queued() const { return queued_bytes_ > 0; }
  bool writing() const { return writing_; }

  // Moves what waits into the batch being written and returns its buffers (valid until
  // FinishWrite or FailAll). Only when !writing() and has_queued().
  const std::vector<boost::asio::const_buffer>& StartWrite();
  // The batch was written (OK: its receipts settle OK) or not (they settle with `status`).
  void FinishWrite(const absl::Status& status);
  // Settles every receipt, written or waiting, with `why`, and frees the memory.
  void FailAll(const absl::Status& why);

 private:
  struct Batch {
    std::vector<std::string> pieces;
    std::vector<core::Receipt> receipts;
    bool last_open = false;  // the last piece takes more small frames
  };
  std::string& OpenPiece();

  Batch queued_;
  Batch written_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  std::vector<boost::asio::const_buffer> buffers_;
};

class Connection final : public core::Worker,
                         public StreamEvents,
                         public std::enable_shared_from_this<Connection> {
 public:
  // An outgoing connection to `hop` (kTcp, kUds, kWs, kWss), not yet connected: Start()
  // connects.
  Connection(core::Strand strand, NodeTransport& transport, const ConnectionOptions& options,
             core::Address hop);
  // An accepted connection; `stream`'s socket must be open and use `strand` as its executor.
  Connection(core::Strand strand, NodeTransport& transport, const ConnectionOptions& options,
             std::unique_ptr<Stream> stream);

  // Starts connecting (outgoing) or opening (accepted: a WebSocket's upgrade), then reading.
  // Both are bounded by the connect timeout. Call once, after the worker started.
  void Start();
  // Closes the connection, failing queued messages with `why`. Idempotent; posts to the strand.
  void Close(absl::Status why);

  // Refuses the connection: writes a connection refusal with `why`, then closes; nothing read
  // from it afterwards is handed on. Posts; may be called before Start (then nothing it sends
  // is ever handed on).
  void Refuse(absl::Status why);

  void HandleMessage(core::Message msg) override;
  void OnStop() override;
  absl::Status Admit(const core::SenderInfo& from) const override;
  core::Carrier CarrierOf() const override { return {core::SenderInfo::Origin::kTransport, id()}; }
  bool LeavesHost() const override { return true; }
  bool TakesRefusals() const override { return true; }  // carries them back to their node
  bool HoldingBack() const override { return read_paused_.load(std::memory_order_relaxed); }
  uint64_t BytesReceived() const override {
    return bytes_received_.load(std::memory_order_relaxed);
  }
  absl::string_view RemoteHost() const override { return stream_->remote_host(); }

  // "tcp", "uds", "ws" or "wss".
  absl::string_view transport_name() const { return stream_->transport(); }
  // "host:port" or the socket path (outgoing), the remote end as known (accepted).
  const std::string& peer() const { return stream_->peer(); }
  // The hop this connection was opened for (outgoing only; empty for accepted ones).
  const std::optional<core::Address>& hop() const { return hop_; }
  // The peer's IP address or user (accepted connections), host or path (outgoing).
  const std::string& remote_host() const { return stream_->remote_host(); }
  bool outgoing() const { return hop_.has_value(); }

  // Lets replies read from the connection `connection` (its id) be written here: this node
  // forwarded a message read here out over that one. Any thread.
  void AdmitRepliesFrom(uint64_t connection);

  // StreamEvents (on the strand).
  void OnOpened(absl::Status status) override;
  void OnRead(const boost::system::error_code& ec, size_t n) override;
  void OnWritten(const boost::system::error_code& ec, size_t n) override;

 private:
  enum class State { kConnecting, kOpen, kClosed };
  class ReadTracker;

  void Connect();
  void OnConnected();
  void ReadMore();
  void HandleRead(size_t n);
  void ResumeReading();
  void Flush();
  void CloseNow(absl::Status why);
  void ArmIdleTimer(std::chrono::milliseconds after);
  void OnIdleTimer();

  NodeTransport& transport_;
  const ConnectionOptions options_;
  const std::optional<core::Address> hop_;
  const std::unique_ptr<Stream> stream_;
  boost::asio::steady_timer connect_timer_;
  boost::asio::steady_timer idle_timer_;
  std::chrono::steady_clock::time_point last_frame_ = std::chrono::steady_clock::now();
  size_t read_chunk_;     // grows while reads fill it (an idle connection keeps a small buffer)
  size_t read_size_ = 0;  // the space the read in flight was given
  State state_ = State::kConnecting;
  // Set by Refuse: close once the queue (ending with the refusal frame) is written.
  std::optional<absl::Status> close_after_flush_;
  bool was_open_ = false;  // it was open when it closed (a dialled peer worth dialling again)
  bool refused_by_peer_ = false;  // closed on the peer's connection refusal: not worth it
  absl::Status close_status_;
  FrameDecoder decoder_;
  // Paces what the reader hands to the router; created when reading starts.
  std::shared_ptr<ReadTracker> read_tracker_;
  std::atomic<bool> read_paused_{false};
  std::atomic<uint64_t> bytes_received_{0};
  WriteQueue writes_;

  mutable veil::Mutex replies_mu_;
  absl::flat_hash_set<uint64_t> reply_connections_ ABSL_GUARDED_BY(replies_mu_);
};

}  // namespace veil::transport

#endif  // VEIL_SIDECAR_TRANSPORT_CONNECTION_H_
