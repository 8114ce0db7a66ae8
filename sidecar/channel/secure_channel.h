// SecureChannel: one end of a secure channel as actors — its encryptor and decryptor workers
// (see secure_channel_manager.h) around a ChannelSession. Created by the manager.
//
// Thread-safety: everything but Info() runs on the channel's strand; Info() may be called from
// any thread.
#ifndef VEIL_SIDECAR_CHANNEL_SECURE_CHANNEL_H_
#define VEIL_SIDECAR_CHANNEL_SECURE_CHANNEL_H_

#include <atomic>
#include <memory>
#include <span>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "boost/asio/steady_timer.hpp"
#include "sidecar/channel/channel_session.h"
#include "sidecar/channel/secure_channel_manager.h"
#include "sidecar/common/mutex.h"

namespace veil::channel {

class SecureChannel final : public std::enable_shared_from_this<SecureChannel> {
 public:
  // `carrier`: what the channel's traffic from the far end arrives through (Worker::CarrierOf
  // of its remote route's first hop): its decryptor admits nothing else.
  SecureChannel(SecureChannelManager& manager, core::Strand strand, bool initiator,
                identity::IdentityLease lease, std::shared_ptr<const TrustPolicy> policy,
                std::string listener, core::Carrier carrier);
  // Responder, before StartResponder: the half-open slot it holds until established or closed.
  void set_pending_slot(SecureChannelManager::PendingSlot slot) { pending_slot_ = std::move(slot); }

  // Registers the encryptor and decryptor at "_sc_<n>" and "_scd_<n>", with `suffix` as <n>
  // (random: unguessable).
  absl::Status Register(const std::string& suffix);

  // Initiator: sends HS1 along `route`; `done` is called once with the outcome.
  void StartInitiator(core::Route route, std::chrono::milliseconds timeout,
                      SecureChannelManager::CreateCallback done);
  // Responder: arms the half-open handshake timeout.
  void StartResponder(std::chrono::milliseconds timeout);

  // Closes the channel; tells the far end when `notify_peer` and established. Posts to the strand.
  void Close(absl::Status why, bool notify_peer);
  // DeleteSecureChannel: Close that first takes the app-facing address away, at once (any
  // thread), so later sends are refused as CHANNEL_CLOSED; tells the far end.
  void Delete(absl::Status why);

  ChannelInfo Info() const;
  const std::string& address() const { return encryptor_address_; }
  const core::Carrier& carrier() const { return carrier_; }
  // The encryptor's worker id: the `via` of what comes out of this channel. 0 before Register.
  uint64_t encryptor_id() const { return encryptor_id_; }
  const core::Strand& strand() const { return strand_; }

  // Worker entry points, on the strand.
  void OnPlaintext(core::Message msg);
  // Messages routed to the channel together: sealed into BATCH records of up to
  // ChannelOptions::max_batch_bytes each (one AEAD, one frame and one hop per record).
  void OnPlaintextBatch(std::vector<core::Message> msgs);
  void OnChannelMessage(core::Message msg);
  void OnSendFailed(absl::Status why);
  // This side's credentials changed: presents them to the far end (CREDENTIALS). Any thread.
  void PresentCredentials(std::shared_ptr<const std::vector<std::string>> credentials);
  // The local identity's identifier.
  const std::string& local_identifier() const { return lease_.identity()->identifier(); }

 private:
  class CreditTracker;
  class ReceiptCollector;
  class RecordSendTracker;
  class RecordDeliveries;

  // Refuses (settles) `msg` when the channel cannot take it: closed, not established, or a
  // route that ends here. True when refused.
  bool Refused(core::Message& msg);
  // Seals `msgs` into one record (DATA for one, BATCH for several) and sends it; their
  // receipts go with it.
  void SealRecord(std::span<core::Message> msgs);
  // Flow control: keeps `msg` until the far end grants more, or refuses it (QUEUE_FULL) when
  // the send queue is full. A paced message is always kept (its sender waits on its receipt).
  void Hold(core::Message msg);
  // Seals what Hold kept while the far end's limit allows.
  void Drain();
  // On the strand, when deliveries out of this channel were handed on: grants the far end more.
  void OnConsumed();
  // The receiver's credit counter, made on first use; null without flow control.
  CreditTracker* Credit();
  // Delivery receipts. Sender: the far end's RECEIPT, or a record that could not be sent,
  // settles the app's receipts kept for those ids. Receiver: tells the far end the outcome of
  // what the collector gathered.
  void OnReceipts(const std::vector<ReceiptOutcome>& outcomes);
  void FailAwaiting(const std::vector<uint64_t>& ids, const absl::Status& why);
  // `answering_probe`: send a RECEIPT even when no outcome is ready (the far end asked).
  void FlushReceipts(bool answering_probe = false);
  // While receipts are awaited: every second without a word from the far end, a probe (a
  // RECEIPT asking for an answer; a node on the way that lost the route answers with a refusal
  // notice instead); ten such seconds close the channel (DELIVERY_UNKNOWN for what awaits).
  void ArmProbe();
  void OnProbeTimer();
  // Sends `bytes` along `to` with this channel's path tag, or with `echo_tag` when it answers
  // a message (a handshake error echoes the tag of what it refuses).
  void Send(std::string bytes, const core::Route& to, core::Receipt receipt, uint64_t echo_tag = 0);
  // Arms timer_ for the established channel's checks: the initiator's confirmation, idleness.
  void ArmEstablishedTimer();
  // When the far end's credentials expire (plus the skew): check the policy again then, and
  // close the channel if it no longer admits the far end.
  void ArmCredentialTimer();
  void OnEstablishedTimer();
  // True (and counted) for a notice or handshake error that does not echo this channel's tag.
  bool Forged(const core::Message& msg);
  // A refusal notice about something this channel sent.
  void OnRefusal(const absl::Status& refusal);
  void CloseNow(absl::Status why, bool notify_peer);
  // Publishes the snapshot that Info() returns (identities, route, state).
  void Publish() ABSL_LOCKS_EXCLUDED(mu_);
  // Publishes the counters only: cheap, after every message.
  void PublishCounters();

  SecureChannelManager& manager_;
  core::Strand strand_;
  const bool initiator_;
  identity::IdentityLease lease_;
  std::shared_ptr<const TrustPolicy> policy_;
  ChannelSession session_;
  boost::asio::steady_timer timer_;
  std::unique_ptr<boost::asio::steady_timer> credential_timer_;  // made when first needed
  core::Route remote_route_;
  std::string encryptor_address_, decryptor_address_;
  std::string listener_;
  SecureChannelManager::CreateCallback on_established_;
  bool closed_ = false;
  bool established_ = false;  // it became established (it may be closed since)
  bool pending_counted_;      // a responder counted in the pending handshakes, under pending_slot_
  SecureChannelManager::PendingSlot pending_slot_;
  bool remote_counted_ = false;  // a responder counted in its remote identity's channels
  const core::Carrier carrier_;
  const uint64_t path_tag_;
  uint64_t encryptor_id_ = 0;
  uint64_t activity_at_last_check_ = 0;  // messages both ways at the last idle check
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  // Flow control: what waits for the far end to grant more (sender), and what counts the bytes
  // of deliveries handed on (receiver; made at establishment when flow control is on).
  // (A vector read from held_next_ on: std::deque allocates even when empty, and most channels
  // never hold anything.)
  std::vector<core::Message> held_;
  size_t held_next_ = 0;
  size_t held_bytes_ = 0;
  bool holding() const { return held_next_ < held_.size(); }
  std::shared_ptr<CreditTracker> credit_;
  // Delivery receipts: the app receipts of messages sent with receipt ids, by id (sender), and
  // the outcomes of deliveries that want receipts, to be told (receiver; made when first used).
  absl::flat_hash_map<uint64_t, core::Receipt> awaiting_;
  std::shared_ptr<ReceiptCollector> receipts_;
  std::unique_ptr<boost::asio::steady_timer> probe_timer_;  // made when first needed
  bool probe_armed_ = false;
  uint64_t heard_at_last_probe_ = 0;
  int silent_probes_ = 0;

  // What Info() reports that changes after Register (the rest is fixed by then, before the
  // manager lists the channel, so Info() reads it directly): published on the strand. Kept
  // small: it is per channel, and a full ChannelInfo would copy every address and identifier.
  struct Published {
    // The local identity, as the lease holds it; at close (when the lease goes, and with it
    // this node's hold on the keys) its name and identifier are kept instead.
    std::shared_ptr<const identity::Identity> identity;
    std::string identity_name, local_identifier;
    std::string remote_route;  // (remote_route_ follows the far end, on the strand)
    ChannelInfo::State state = ChannelInfo::State::kHandshaking;
    std::shared_ptr<const identity::Attributes> remote_attributes;
    int64_t remote_credentials_expire_at = 0;
  };
  mutable veil::Mutex mu_;
  Published published_ ABSL_GUARDED_BY(mu_);
  // Set (release) at establishment: the session's remote identifier is final from then on, and
  // Info() reads it in place instead of from a copy.
  std::atomic<bool> remote_identified_{false};
  std::atomic<uint64_t> sent_{0}, received_{0}, decrypt_failures_{0}, replays_{0};
  std::atomic<uint64_t> queued_bytes_{0}, send_credit_{0};
};

}  // namespace veil::channel

#endif  // VEIL_SIDECAR_CHANNEL_SECURE_CHANNEL_H_
