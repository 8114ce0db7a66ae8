// SecureChannelManager: secure channel listeners and channels on a node, as workers.
//
// A channel has two local addresses on one strand: the *encryptor* ("_sc_<n>", the address
// apps put first in a route: [channel, "echoer"]) takes plaintext messages, encrypts them with
// the rest of their route, and sends them along the channel's remote route; the *decryptor*
// ("_scd_<n>") takes channel messages from the far end, decrypts them, and routes the inner
// message on — with the encryptor prepended to its return route (so replies go back through
// the channel) and the authenticated remote identifier as its sender.
//
// A listener is a worker at an app-chosen address that answers HS1 messages by creating a
// responder channel. An initiator sends HS1 to a listener's route and completes when the
// responder confirms; closing either end sends an authenticated CLOSE to the other.
//
// Access control (docs/security.md): listeners take handshakes from anyone; an encryptor takes
// only this node's apps and workers; a decryptor only what arrives through its channel's
// carrier (the connection it runs over); decrypted messages go on with provenance
// kSecureChannel, which the next worker judges (a connection refuses them in plaintext).
// Refusal notices and handshake errors are believed only when they echo the channel's path tag.
//
// Limits, each refused visibly: half-open handshakes per sender, per remote address and in
// all (a quarter of the total kept for handshakes arriving over privileged carriers — the
// connections this node's relays run over, or a hub's relay owners'); a handshake rate; channels
// in all (TOO_MANY_CHANNELS: a handshake error, not silence) and per remote identity; a
// responder whose initiator never confirms, and (optionally) an idle channel, expire.
//
// Thread-safety: all public methods may be called from any thread; a channel's state is only
// touched on its strand.
#ifndef VEIL_SIDECAR_CHANNEL_SECURE_CHANNEL_MANAGER_H_
#define VEIL_SIDECAR_CHANNEL_SECURE_CHANNEL_MANAGER_H_

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "sidecar/channel/channel_session.h"
#include "sidecar/channel/credential_book.h"
#include "sidecar/channel/trust_policy.h"
#include "sidecar/common/log_limiter.h"
#include "sidecar/common/mutex.h"
#include "sidecar/core/router.h"
#include "sidecar/identity/identity_store.h"

namespace veil::channel {

struct ChannelOptions {
  SessionOptions session;
  // Trusted authorities and this node's credentials (null: none). Each channel presents its
  // identity's credentials and checks the far end's against the trusted authorities.
  std::shared_ptr<CredentialBook> credentials;
  // How long a responder waits for HS3 before dropping a half-open handshake, and for the
  // initiator's confirmation after CONFIRM.
  std::chrono::milliseconds responder_timeout{30000};
  // An established channel with no message either way for this long closes (telling the far
  // end). 0: never.
  std::chrono::milliseconds idle_timeout{0};
  size_t max_channels = 100000;
  // Responder channels one remote identity may hold.
  size_t max_channels_per_identity = 1024;
  // Half-open (responder) handshakes in all, per sender (the connection they arrive over; for
  // a relay's connection, the hub's connection of the sender) and per remote IP address.
  size_t max_pending_handshakes = 1024;
  size_t max_pending_handshakes_per_sender = 64;
  size_t max_pending_handshakes_per_address = 256;
  // New responder handshakes per second (a token bucket holding a second's worth).
  double handshake_rate = 1000;
  // True for a carrier (Carrier::via of a connection) of this node's relays or, on a hub, of a
  // relay owner: its handshakes may use the quarter of max_pending_handshakes others may not,
  // and their per-sender key includes the hub's connection. Any thread; may be empty.
  std::function<bool(uint64_t)> privileged_carrier;
  // Messages routed to a channel together (an app's SendBatch) are sealed into BATCH records of
  // up to about this many bytes; a larger message goes alone. Keep it well under the transport's
  // maximum frame size.
  size_t max_batch_bytes = 1024 * 1024;
  // Flow control (session.receive_window): what a channel keeps for the far end to grant more
  // before it refuses local senders with QUEUE_FULL (messages from afar are kept, paced).
  size_t send_queue_bytes = 16 * 1024 * 1024;
};

struct ListenerInfo {
  std::string address;
  std::string identity;
  std::string identifier;
  std::string trust_policy;  // described
};

struct ChannelInfo {
  enum class State { kHandshaking, kEstablished, kClosed };
  std::string address;            // encryptor: put it first in routes
  std::string decryptor_address;  // where the far end sends
  bool initiator = false;
  std::string listener;  // for responders: the listener that accepted it
  std::string identity;  // local identity name
  std::string local_identifier;
  std::string remote_identifier;
  std::string remote_route;
  std::string trust_policy;
  State state = State::kHandshaking;
  // What the far end's verified credentials give (null: it presented none, or this node trusts
  // no authority), and when the first of them expires (Unix seconds; 0: none).
  std::shared_ptr<const identity::Attributes> remote_attributes;
  int64_t remote_credentials_expire_at = 0;
  uint64_t messages_sent = 0, messages_received = 0, decrypt_failures = 0, replays_rejected = 0;
  // Flow control: bytes waiting for the far end to grant more, and the bytes that may still go
  // before its limit (the largest uint64 when the channel has no flow control).
  uint64_t queued_bytes = 0, send_credit = 0;
  // This node's own: the worker id of the carrier the channel runs over (0: this node), and of
  // its encryptor (the `via` of what comes out of it).
  uint64_t carrier = 0;
  uint64_t encryptor_id = 0;
};

class SecureChannel;

// Counters since start, for metrics. Per-channel counters of closed channels are folded into
// the closed_* totals so that sums over time stay monotonic.
struct ChannelStats {
  static constexpr std::array<double, 12> kLatencyBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0};
  std::atomic<uint64_t> handshakes_completed{0}, handshakes_failed{0};
  std::array<std::atomic<uint64_t>, kLatencyBuckets.size() + 1> latency_counts{};  // last: +Inf
  std::atomic<uint64_t> latency_sum_micros{0};
  std::atomic<uint64_t> closed_sent{0}, closed_received{0}, closed_decrypt_failures{0},
      closed_replays{0};
  // Refusal notices and handshake errors dropped for not echoing the channel's path tag;
  // handshakes refused for a limit (busy, rate, too many channels, per identity); responders
  // whose initiator never confirmed; channels closed for idleness; channels closed because the
  // connection (or outer channel) they ran over closed.
  std::atomic<uint64_t> forged_notices{0}, handshakes_refused{0}, unconfirmed_expired{0},
      idle_expired{0}, carrier_closed{0};
  // Flow control: messages kept for the far end to grant more, local messages refused because
  // a channel's send queue was full, CREDIT messages sent, and channels closed because the far
  // end ignored its limit.
  std::atomic<uint64_t> credit_held{0}, credit_refused{0}, credits_sent{0}, credit_violations{0};
  // Delivery receipts: RECEIPT messages sent, and messages whose channel closed before their
  // receipt came (reported DELIVERY_UNKNOWN).
  std::atomic<uint64_t> receipts_sent{0}, receipts_unknown{0};
  // Channels closed because the far end's credentials expired and the policy needed them.
  std::atomic<uint64_t> credentials_expired{0};
  void RecordHandshake(bool ok, std::chrono::steady_clock::duration latency);
};

class SecureChannelManager {
 public:
  using CreateCallback = std::function<void(absl::StatusOr<ChannelInfo>)>;

  // `router` and `identities` must outlive the manager.
  SecureChannelManager(core::Router& router, identity::IdentityStore& identities,
                       ChannelOptions options);
  ~SecureChannelManager();

  // Starts a listener at `address` for `identity_name`. INVALID_ARGUMENT for a bad address (or
  // one starting with '_'), NOT_FOUND for an unknown identity, ALREADY_EXISTS when the address
  // is taken — unless `exist_ok` and it is taken by a listener with this identity and policy,
  // which is then returned.
  absl::StatusOr<ListenerInfo> CreateListener(const std::string& address,
                                              const std::string& identity_name,
                                              std::shared_ptr<const TrustPolicy> policy,
                                              bool exist_ok = false);
  std::vector<ListenerInfo> ListListeners() const;
  // NOT_FOUND when absent. Channels it accepted stay up.
  absl::Status DeleteListener(const std::string& address);

  // Opens a channel to the listener at `route`; calls `done` once (from any thread) with the
  // established channel, or with why not: NOT_FOUND for an unknown identity, the send error
  // when HS1 cannot be handed on, PERMISSION_DENIED when either side does not trust the other,
  // UNAUTHENTICATED for a bad identity proof, DEADLINE_EXCEEDED (HANDSHAKE_TIMEOUT) when no
  // answer came within `timeout`.
  void CreateChannel(const core::Route& route, const std::string& identity_name,
                     std::shared_ptr<const TrustPolicy> policy, std::chrono::milliseconds timeout,
                     CreateCallback done);
  std::vector<ChannelInfo> ListChannels() const;
  // By encryptor address. NOT_FOUND (CHANNEL_NOT_FOUND) when absent.
  absl::StatusOr<ChannelInfo> GetChannel(const std::string& address) const;
  // Closes a channel (telling the far end). NOT_FOUND when absent.
  absl::Status DeleteChannel(const std::string& address);

  // Closes every channel and listener (telling far ends) and refuses new ones.
  void Shutdown();

  ChannelStats& stats() { return stats_; }

  // The session options of a channel of `local`: options().session with its credentials and
  // the trusted authorities. Any thread.
  SessionOptions SessionOptionsFor(const identity::Identity& local) const;
  // The credentials of the local identity `identifier` changed (in options().credentials):
  // every established channel of it presents the new ones. Any thread.
  void CredentialsChanged(const std::string& identifier);

  // The connection (or channel) with worker id `carrier` closed: so do the channels that ran
  // over it. Any thread.
  void OnCarrierClosed(uint64_t carrier, absl::string_view why);
  // Whether a channel of this node runs over `carrier`. Any thread.
  bool Carries(uint64_t carrier) const;
  // Calls `observer` (from any thread, without locks held) whenever a carrier closes — a
  // connection, or a channel (its encryptor's id): for what runs over a channel, e.g. portal
  // sessions. Observers are added at start-up and never removed.
  void AddCarrierObserver(std::function<void(uint64_t carrier, absl::string_view why)> observer);

  // For channels and listeners.
  core::Router& router() { return router_; }
  const ChannelOptions& options() const { return options_; }
  LogLimiter& forged_log() { return forged_log_; }
  void Forget(const std::string& address, const SecureChannel* channel);
  // A responder's half-open slot (what Accept counted it under).
  struct PendingSlot {
    std::string sender;
    std::string host;
  };
  // A responder left the handshaking state (established or closed).
  void HandshakeSettled(const PendingSlot& slot);
  // A responder is about to confirm a channel to `identifier`: counts it, or false when that
  // identity has its limit. UncountRemote when it closes.
  bool CountRemote(const std::string& identifier);
  void UncountRemote(const std::string& identifier);
  // A listener received `msg`: start a responder channel for it.
  void Accept(const std::string& listener_address, core::Message msg);

 private:
  struct Listener;
  absl::StatusOr<std::shared_ptr<SecureChannel>> NewChannel(
      bool initiator, const std::string& identity_name, std::shared_ptr<const TrustPolicy> policy,
      const std::string& listener, core::Carrier carrier);
  // Why a new handshake from `msg` must be refused now, or OK (and `slot` counted).
  absl::Status TakePendingSlot(const core::Message& msg, PendingSlot& slot);
  // Sends a handshake error answering `msg` (echoing its path tag).
  void RefuseHandshake(const core::Message& msg, absl::string_view why);

  core::Router& router_;
  identity::IdentityStore& identities_;
  const ChannelOptions options_;
  ChannelStats stats_;
  mutable veil::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, std::shared_ptr<Listener>> listeners_ ABSL_GUARDED_BY(mu_);
  // Keyed by each channel's own address (a view of SecureChannel::address(), fixed from
  // Register on): the entry holds the channel, so the key lives as long as the entry.
  absl::flat_hash_map<absl::string_view, std::shared_ptr<SecureChannel>> channels_
      ABSL_GUARDED_BY(mu_);
  // Responders still handshaking: in all, by sender, by remote address.
  size_t pending_total_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, size_t> pending_by_sender_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, size_t> pending_by_host_ ABSL_GUARDED_BY(mu_);
  // The handshake rate's token bucket.
  double tokens_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point refilled_ ABSL_GUARDED_BY(mu_) =
      std::chrono::steady_clock::now();
  // Established responder channels by remote identifier.
  absl::flat_hash_map<std::string, size_t> by_remote_ ABSL_GUARDED_BY(mu_);
  // Channels by the worker id of their carrier (connections and outer channels only): views of
  // their addresses, as channels_ keys them (an entry goes with the channel's in channels_).
  absl::flat_hash_map<uint64_t, absl::flat_hash_set<absl::string_view>> by_carrier_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void(uint64_t, absl::string_view)>> carrier_observers_
      ABSL_GUARDED_BY(mu_);
  LogLimiter forged_log_, refused_log_;
};

}  // namespace veil::channel

#endif  // VEIL_SIDECAR_CHANNEL_SECURE_CHANNEL_MANAGER_H_
