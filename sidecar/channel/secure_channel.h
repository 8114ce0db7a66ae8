// SecureChannel: one end of a secure channel as actors — its encryptor and decryptor workers
// (see secure_channel_manager.h) around a ChannelSession. Created by the manager.
//
// Thread-safety: everything but Info() runs on the channel's strand; Info() may be called from
// any thread.
#ifndef VEIL_SIDECAR_CHANNEL_SECURE_CHANNEL_H_
#define VEIL_SIDECAR_CHANNEL_SECURE_CHANNEL_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "sidecar/common/mutex.h"
#include "asio/steady_timer.hpp"
#include "sidecar/channel/channel_session.h"
#include "sidecar/channel/secure_channel_manager.h"

namespace veil::channel {

class SecureChannel final : public std::enable_shared_from_this<SecureChannel> {
 public:
  SecureChannel(SecureChannelManager& manager, core::Strand strand, bool initiator,
                identity::IdentityLease lease, std::shared_ptr<const TrustPolicy> policy,
                std::string listener);

  // Registers the encryptor and decryptor at "_sc_<id>" and "_scd_<id>".
  absl::Status Register(uint64_t id);

  // Initiator: sends HS1 along `route`; `done` is called once with the outcome.
  void StartInitiator(core::Route route, std::chrono::milliseconds timeout,
                      SecureChannelManager::CreateCallback done);
  // Responder: arms the half-open handshake timeout.
  void StartResponder(std::chrono::milliseconds timeout);

  // Closes the channel; tells the far end when `notify_peer` and established. Posts to the strand.
  void Close(absl::Status why, bool notify_peer);

  ChannelInfo Info() const;
  const std::string& address() const { return encryptor_address_; }
  const core::Strand& strand() const { return strand_; }

  // Worker entry points, on the strand.
  void OnPlaintext(core::Message msg);
  // Messages routed to the channel together: sealed into BATCH records of up to
  // ChannelOptions::max_batch_bytes each (one AEAD, one frame and one hop per record).
  void OnPlaintextBatch(std::vector<core::Message> msgs);
  void OnChannelMessage(core::Message msg);
  void OnSendFailed(absl::Status why);

 private:
  void Send(std::string bytes, const core::Route& to, core::Receipt receipt);
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
  asio::steady_timer timer_;
  core::Route remote_route_;
  std::string encryptor_address_, decryptor_address_;
  std::string listener_;
  SecureChannelManager::CreateCallback on_established_;
  bool closed_ = false;
  bool pending_counted_;  // a responder counted in its listener's pending handshakes
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  mutable veil::Mutex mu_;
  ChannelInfo info_ ABSL_GUARDED_BY(mu_);  // published snapshot, counters aside
  std::atomic<uint64_t> sent_{0}, received_{0}, decrypt_failures_{0}, replays_{0};
};

}  // namespace veil::channel

#endif  // VEIL_SIDECAR_CHANNEL_SECURE_CHANNEL_H_
