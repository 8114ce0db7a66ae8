#include "sidecar/channel/secure_channel.h"

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "boost/asio/bind_executor.hpp"
#include "boost/asio/post.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/common/random_name.h"
#include "spdlog/spdlog.h"

namespace veil::channel {
namespace {

// For a message that reached a channel's worker after it stopped: the router found the worker
// just before it was removed, and its message was queued behind OnStop on the strand.
absl::Status StoppedChannel(const std::string& address) {
  return ErrorWithReason(absl::StatusCode::kUnavailable,
                         absl::StrCat("secure channel ", address, " is closed"),
                         reason::kChannelClosed);
}

// The app-facing worker: plaintext in, ciphertext out along the channel.
class Encryptor final : public core::Worker {
 public:
  Encryptor(core::Strand strand, std::shared_ptr<SecureChannel> channel)
      : Worker(std::move(strand)), channel_(std::move(channel)) {}
  void HandleMessage(core::Message msg) override {
    if (channel_ == nullptr) {
      msg.receipt.Settle(StoppedChannel(address()));
      return;
    }
    channel_->OnPlaintext(std::move(msg));
  }
  void HandleBatch(std::vector<core::Message> msgs) override {
    if (channel_ == nullptr) {
      for (core::Message& msg : msgs) msg.receipt.Settle(StoppedChannel(address()));
      return;
    }
    channel_->OnPlaintextBatch(std::move(msgs));
  }
  void OnStop() override { channel_.reset(); }
  // Replies to what goes through a channel come out of it.
  core::Carrier CarrierOf() const override {
    return {core::SenderInfo::Origin::kSecureChannel, id()};
  }
  // This node refusing a message that came out of the channel tells the far end, through it.
  bool TakesRefusals() const override { return true; }

 private:
  std::shared_ptr<SecureChannel> channel_;
};

// The network-facing worker: channel messages in, decrypted messages routed on.
class Decryptor final : public core::Worker {
 public:
  Decryptor(core::Strand strand, std::shared_ptr<SecureChannel> channel, core::Carrier carrier)
      : Worker(std::move(strand)), channel_(std::move(channel)), carrier_(carrier) {}
  // Only what arrives through the channel's carrier: the connection it runs over (or the
  // outer channel, or this node for a channel between two of its own workers).
  absl::Status Admit(const core::SenderInfo& from) const override {
    if (from.origin == carrier_.origin && from.via == carrier_.via) return absl::OkStatus();
    return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                           absl::StrCat("secure channel ", address(),
                                        " takes messages only from the connection it runs over"),
                           reason::kAccessDenied);
  }
  void HandleMessage(core::Message msg) override {
    if (channel_ == nullptr) {
      msg.receipt.Settle(StoppedChannel(address()));
      return;
    }
    channel_->OnChannelMessage(std::move(msg));
  }
  void OnStop() override { channel_.reset(); }
  bool TakesRefusals() const override { return true; }

 private:
  std::shared_ptr<SecureChannel> channel_;
  const core::Carrier carrier_;
};

// Reports a failed handshake send back to the channel's strand.
class HandshakeSendTracker final : public core::SendTracker {
 public:
  explicit HandshakeSendTracker(std::weak_ptr<SecureChannel> channel)
      : channel_(std::move(channel)) {}
  void Complete(uint32_t, absl::Status status) override {
    if (status.ok()) return;
    if (auto channel = channel_.lock()) {
      boost::asio::post(channel->strand(), [channel, status] { channel->OnSendFailed(status); });
    }
  }

 private:
  std::weak_ptr<SecureChannel> channel_;
};

// The epitaph of a closed channel's app-facing address: why it closed.
absl::Status ClosedChannel(const std::string& address, absl::string_view why) {
  return ErrorWithReason(absl::StatusCode::kUnavailable,
                         absl::StrCat("secure channel ", address, " is closed: ", why),
                         reason::kChannelClosed);
}

}  // namespace

// Counts the record bytes of deliveries handed on (each receipt's index is its record's size),
// from any thread, and wakes the channel's strand to grant them back once an eighth of the window
// has built up since the last grant: one atomic add per record, one post per grant.
class SecureChannel::CreditTracker final : public core::SendTracker {
 public:
  CreditTracker(std::weak_ptr<SecureChannel> channel, core::Strand strand, uint64_t threshold)
      : channel_(std::move(channel)), strand_(std::move(strand)), threshold_(threshold) {}

  void Complete(uint32_t record_bytes, absl::Status) override { Add(record_bytes); }

  void Add(uint64_t bytes) {
    const uint64_t consumed = consumed_.fetch_add(bytes, std::memory_order_acq_rel) + bytes;
    if (consumed - granted_.load(std::memory_order_acquire) < threshold_) return;
    if (posted_.exchange(true, std::memory_order_acq_rel)) return;
    if (auto channel = channel_.lock()) {
      boost::asio::post(strand_, [channel] { channel->OnConsumed(); });
    }
  }
  // On the strand: what was consumed, now to be granted.
  uint64_t Take() {
    posted_.store(false, std::memory_order_release);
    const uint64_t consumed = consumed_.load(std::memory_order_acquire);
    granted_.store(consumed, std::memory_order_release);
    return consumed;
  }

 private:
  const std::weak_ptr<SecureChannel> channel_;
  const core::Strand strand_;
  const uint64_t threshold_;
  std::atomic<uint64_t> consumed_{0}, granted_{0};
  std::atomic<bool> posted_{false};
};

// Receiver: gathers the outcome of deliveries whose sender wants receipts, from any thread,
// and wakes the strand once to tell them all (FlushReceipts).
class SecureChannel::ReceiptCollector {
 public:
  ReceiptCollector(std::weak_ptr<SecureChannel> channel, core::Strand strand)
      : channel_(std::move(channel)), strand_(std::move(strand)) {}
  void Settled(uint64_t id, absl::Status status) {
    {
      veil::MutexLock lock(&mu_);
      outcomes_.emplace_back(id, std::move(status));
      if (posted_) return;
      posted_ = true;
    }
    if (auto channel = channel_.lock()) {
      boost::asio::post(strand_, [channel] { channel->FlushReceipts(); });
    }
  }
  std::vector<std::pair<uint64_t, absl::Status>> Take() {
    veil::MutexLock lock(&mu_);
    posted_ = false;
    return std::exchange(outcomes_, {});
  }

 private:
  const std::weak_ptr<SecureChannel> channel_;
  const core::Strand strand_;
  veil::Mutex mu_;
  std::vector<std::pair<uint64_t, absl::Status>> outcomes_ ABSL_GUARDED_BY(mu_);
  bool posted_ ABSL_GUARDED_BY(mu_) = false;
};

// Receiver: the receipt ids of one record's deliveries, by their index among those that want
// one.
class SecureChannel::RecordDeliveries final : public core::SendTracker {
 public:
  RecordDeliveries(std::shared_ptr<ReceiptCollector> collector, std::vector<uint64_t> ids)
      : collector_(std::move(collector)), ids_(std::move(ids)) {}
  void Complete(uint32_t index, absl::Status status) override {
    collector_->Settled(ids_[index], std::move(status));
  }

 private:
  const std::shared_ptr<ReceiptCollector> collector_;
  const std::vector<uint64_t> ids_;
};

// Sender: a record carrying messages with receipt ids that could not be sent (its connection's
// queue was full, the connection was lost): those messages are known not to be delivered.
class SecureChannel::RecordSendTracker final : public core::SendTracker {
 public:
  RecordSendTracker(std::weak_ptr<SecureChannel> channel, core::Strand strand,
                    std::vector<uint64_t> ids)
      : channel_(std::move(channel)), strand_(std::move(strand)), ids_(std::move(ids)) {}
  void Complete(uint32_t, absl::Status status) override {
    if (status.ok()) return;
    if (auto channel = channel_.lock()) {
      boost::asio::post(strand_, [channel, ids = ids_, status = std::move(status)] {
        channel->FailAwaiting(ids, status);
      });
    }
  }

 private:
  const std::weak_ptr<SecureChannel> channel_;
  const core::Strand strand_;
  const std::vector<uint64_t> ids_;
};

SecureChannel::SecureChannel(SecureChannelManager& manager, core::Strand strand, bool initiator,
                             identity::IdentityLease lease,
                             std::shared_ptr<const TrustPolicy> policy, std::string listener,
                             core::Carrier carrier)
    : manager_(manager),
      strand_(strand),
      initiator_(initiator),
      lease_(std::move(lease)),
      policy_(std::move(policy)),
      session_(initiator ? ChannelSession::Role::kInitiator : ChannelSession::Role::kResponder,
               lease_.identity(), *policy_, manager.SessionOptionsFor(*lease_.identity())),
      timer_(strand),
      listener_(std::move(listener)),
      pending_counted_(!initiator),
      carrier_(carrier),
      path_tag_(RandomNonZeroU64()) {}

absl::Status SecureChannel::Register(const std::string& suffix) {
  encryptor_address_ = absl::StrCat("_sc_", suffix);
  decryptor_address_ = absl::StrCat("_scd_", suffix);
  auto encryptor = std::make_shared<Encryptor>(strand_, shared_from_this());
  absl::Status s = manager_.router().StartWorker(encryptor_address_, encryptor);
  if (!s.ok()) return s;
  encryptor_id_ = encryptor->id();
  s = manager_.router().StartWorker(
      decryptor_address_, std::make_shared<Decryptor>(strand_, shared_from_this(), carrier_));
  if (!s.ok()) manager_.router().StopWorker(encryptor_address_);
  Publish();
  return s;
}

void SecureChannel::StartInitiator(core::Route route, std::chrono::milliseconds timeout,
                                   SecureChannelManager::CreateCallback done) {
  boost::asio::post(strand_, [self = shared_from_this(), route = std::move(route), timeout,
                              done = std::move(done)]() mutable {
    self->on_established_ = std::move(done);
    self->remote_route_ = route;
    auto hs1 = self->session_.Start();
    if (!hs1.ok()) {
      self->CloseNow(hs1.status(), false);
      return;
    }
    self->timer_.expires_after(timeout);
    self->timer_.async_wait([self, timeout](boost::system::error_code ec) {
      if (ec || self->closed_ || self->session_.state() != ChannelSession::State::kHandshaking) {
        return;
      }
      self->CloseNow(ErrorWithReason(absl::StatusCode::kDeadlineExceeded,
                                     absl::StrCat("no handshake answer from the listener within ",
                                                  timeout.count(), " ms"),
                                     reason::kHandshakeTimeout),
                     false);
    });
    self->Send(*std::move(hs1), route,
               core::Receipt(std::make_shared<HandshakeSendTracker>(self), 0));
  });
}

void SecureChannel::StartResponder(std::chrono::milliseconds timeout) {
  boost::asio::post(strand_, [self = shared_from_this(), timeout] {
    self->timer_.expires_after(timeout);
    self->timer_.async_wait([self](boost::system::error_code ec) {
      if (ec || self->closed_ || self->session_.state() != ChannelSession::State::kHandshaking) {
        return;
      }
      self->CloseNow(
          ErrorWithReason(absl::StatusCode::kDeadlineExceeded,
                          "the initiator did not finish the handshake", reason::kHandshakeTimeout),
          false);
    });
  });
}

void SecureChannel::Send(std::string bytes, const core::Route& to, core::Receipt receipt,
                         uint64_t echo_tag) {
  core::Message out;
  out.onward = to;
  out.return_route.Append(core::Address::Local(decryptor_address_));
  out.payload = std::move(bytes);
  out.receipt = std::move(receipt);
  out.path_tag = echo_tag != 0 ? echo_tag : path_tag_;
  manager_.router().Send(std::move(out));
}

bool SecureChannel::Forged(const core::Message& msg) {
  if (msg.path_tag == path_tag_) return false;
  manager_.stats().forged_notices.fetch_add(1, std::memory_order_relaxed);
  if (uint64_t suppressed = 0; manager_.forged_log().ShouldLog(&suppressed)) {
    spdlog::warn(
        "secure channel {}: dropped a {} that does not echo the channel's path tag "
        "(forged by someone not on the path){}",
        encryptor_address_, msg.refusal.ok() ? "handshake error" : "refusal notice",
        suppressed > 0 ? absl::StrCat(" (and ", suppressed, " more not logged)") : "");
  }
  return true;
}

void SecureChannel::ArmEstablishedTimer() {
  std::chrono::milliseconds after = session_.awaiting_confirmation()
                                        ? manager_.options().responder_timeout
                                        : manager_.options().idle_timeout;
  if (after.count() <= 0) return;
  timer_.expires_after(after);
  timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec) self->OnEstablishedTimer();
  });
}

void SecureChannel::OnEstablishedTimer() {
  if (closed_) return;
  if (session_.awaiting_confirmation()) {
    manager_.stats().unconfirmed_expired.fetch_add(1, std::memory_order_relaxed);
    CloseNow(ErrorWithReason(absl::StatusCode::kDeadlineExceeded,
                             "the initiator never confirmed the channel (its CONFIRM was lost?)",
                             reason::kHandshakeTimeout),
             false);
    return;
  }
  if (manager_.options().idle_timeout.count() <= 0) return;
  const uint64_t activity = session_.messages_sent() + session_.messages_received();
  if (activity != activity_at_last_check_) {
    activity_at_last_check_ = activity;
    ArmEstablishedTimer();
    return;
  }
  manager_.stats().idle_expired.fetch_add(1, std::memory_order_relaxed);
  CloseNow(ErrorWithReason(absl::StatusCode::kDeadlineExceeded,
                           absl::StrCat("no message either way for ",
                                        manager_.options().idle_timeout.count(), " ms"),
                           reason::kIdleTimeout),
           true);
}

void SecureChannel::ArmCredentialTimer() {
  const int64_t deadline = session_.credentials_deadline();
  if (deadline == 0 || closed_) {
    if (credential_timer_ != nullptr) credential_timer_->cancel();
    return;
  }
  if (credential_timer_ == nullptr) {
    credential_timer_ = std::make_unique<boost::asio::steady_timer>(strand_);
  }
  // The deadline is wall-clock (credentials say Unix seconds); wake then, and check again
  // against the wall clock (CheckExpiry), so a clock step only moves the check.
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  credential_timer_->expires_after(std::chrono::seconds(std::max<int64_t>(0, deadline - now)) +
                                   std::chrono::milliseconds(100));
  credential_timer_->async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->closed_) return;
    if (absl::Status expired = self->session_.CheckExpiry(); !expired.ok()) {
      self->manager_.stats().credentials_expired.fetch_add(1, std::memory_order_relaxed);
      self->CloseNow(std::move(expired), true);
      return;
    }
    self->Publish();
    self->ArmCredentialTimer();
  });
}

void SecureChannel::PresentCredentials(
    std::shared_ptr<const std::vector<std::string>> credentials) {
  boost::asio::post(strand_, [self = shared_from_this(), credentials = std::move(credentials)] {
    if (self->closed_ || self->session_.state() != ChannelSession::State::kEstablished) return;
    static const std::vector<std::string> kNone;
    std::string message = self->session_.PresentCredentials(credentials ? *credentials : kNone);
    self->Send(std::move(message), self->remote_route_, core::Receipt());
  });
}

void SecureChannel::OnSendFailed(absl::Status why) {
  if (closed_ || session_.state() != ChannelSession::State::kHandshaking) return;
  CloseNow(std::move(why), false);
}

bool SecureChannel::Refused(core::Message& msg) {
  if (closed_ || session_.state() != ChannelSession::State::kEstablished) {
    msg.receipt.Settle(ErrorWithReason(absl::StatusCode::kUnavailable,
                                       absl::StrCat("secure channel ", encryptor_address_,
                                                    closed_ ? " is closed" : " is not established"),
                                       reason::kChannelClosed));
    return true;
  }
  if (msg.want_delivery && !session_.peer_takes_batches()) {
    msg.receipt.Settle(ErrorWithReason(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat("secure channel ", encryptor_address_,
                     ": the far end is an older node that gives no delivery receipts"),
        reason::kDeliveryReceiptsUnsupported));
    return true;
  }
  if (msg.onward.empty()) {  // nothing for the far end to deliver it to
    msg.receipt.Settle(
        ErrorWithReason(absl::StatusCode::kInvalidArgument,
                        absl::StrCat("the route ends at secure channel ", encryptor_address_,
                                     ": name what it goes to on the far side, e.g. /service/",
                                     encryptor_address_, "/service/echoer"),
                        reason::kInvalidRoute));
    return true;
  }
  return false;
}

void SecureChannel::OnPlaintext(core::Message msg) {
  if (Refused(msg)) return;
  if (holding() || !session_.MaySend()) {
    Hold(std::move(msg));
  } else {
    SealRecord(std::span<core::Message>(&msg, 1));
  }
  PublishCounters();
}

void SecureChannel::OnPlaintextBatch(std::vector<core::Message> msgs) {
  const bool one_by_one = msgs.size() == 1 || closed_ ||
                          session_.state() != ChannelSession::State::kEstablished ||
                          !session_.peer_takes_batches() ||
                          std::any_of(msgs.begin(), msgs.end(),
                                      [](const core::Message& m) { return m.onward.empty(); });
  if (one_by_one) {
    for (core::Message& msg : msgs) OnPlaintext(std::move(msg));
    return;
  }
  const size_t limit = manager_.options().max_batch_bytes;
  size_t begin = 0;
  while (begin < msgs.size()) {
    if (holding() || !session_.MaySend()) {  // the rest waits for the far end
      for (size_t i = begin; i < msgs.size(); ++i) Hold(std::move(msgs[i]));
      break;
    }
    size_t end = begin;
    size_t bytes = 0;
    while (end < msgs.size()) {
      size_t entry = ChannelSession::BatchEntrySize(msgs[end]);
      if (end > begin && bytes + entry > limit) break;
      bytes += entry;
      ++end;
    }
    SealRecord(std::span<core::Message>(msgs.data() + begin, end - begin));
    begin = end;
  }
  PublishCounters();
}

void SecureChannel::SealRecord(std::span<core::Message> msgs) {
  std::string ciphertext;
  const bool receipted =
      std::any_of(msgs.begin(), msgs.end(), [](const core::Message& m) { return m.want_delivery; });
  if (msgs.size() == 1 && !receipted) {  // alone: too large to share a record, or the last one
    core::Message& msg = msgs.front();
    absl::Status s = session_.Encrypt(msg.onward, msg.return_route, msg.payload, ciphertext,
                                      msg.refusal, msg.path_tag);
    if (!s.ok()) {
      msg.receipt.Settle(std::move(s));
      return;
    }
    Send(std::move(ciphertext), remote_route_, std::move(msg.receipt));
    return;
  }
  uint64_t id = 0;
  absl::Status s = session_.EncryptBatch(msgs, ciphertext, &id);
  std::vector<core::Receipt> receipts;
  receipts.reserve(msgs.size() + 1);
  std::vector<uint64_t> ids;
  for (core::Message& msg : msgs) {
    if (s.ok() && msg.want_delivery) {  // settled by the far end's RECEIPT
      ids.push_back(id);
      awaiting_.emplace(id++, std::move(msg.receipt));
      continue;
    }
    receipts.push_back(std::move(msg.receipt));
  }
  if (!s.ok()) {
    for (core::Receipt& r : receipts) r.Settle(s);
    return;
  }
  if (!ids.empty()) {
    ArmProbe();
    receipts.emplace_back(
        std::make_shared<RecordSendTracker>(weak_from_this(), strand_, std::move(ids)), 0);
  }
  Send(std::move(ciphertext), remote_route_, core::JoinReceipts(std::move(receipts)));
}

void SecureChannel::Hold(core::Message msg) {
  const size_t bytes = msg.payload.size();
  const size_t limit = manager_.options().send_queue_bytes;
  ChannelStats& stats = manager_.stats();
  // One message always fits an empty queue, whatever its size.
  if (!msg.paced && held_bytes_ > 0 && held_bytes_ + bytes > limit) {
    stats.credit_refused.fetch_add(1, std::memory_order_relaxed);
    msg.receipt.Settle(ErrorWithReason(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("secure channel ", encryptor_address_,
                     ": the far end is not keeping up (it has not granted more than the ",
                     session_.sent_bytes(), " bytes sent) and the channel's send queue (", limit,
                     " bytes) is full"),
        reason::kQueueFull));
    return;
  }
  stats.credit_held.fetch_add(1, std::memory_order_relaxed);
  held_bytes_ += bytes;
  held_.push_back(std::move(msg));
}

void SecureChannel::Drain() {
  const size_t limit = manager_.options().max_batch_bytes;
  const bool batches = session_.peer_takes_batches();
  std::vector<core::Message> record;
  while (holding() && !closed_ && session_.MaySend()) {
    record.clear();
    size_t bytes = 0;
    while (holding()) {
      core::Message& next = held_[held_next_];
      const size_t entry = ChannelSession::BatchEntrySize(next);
      if (!record.empty() && (!batches || bytes + entry > limit)) break;
      bytes += entry;
      held_bytes_ -= next.payload.size();
      record.push_back(std::move(next));
      ++held_next_;
    }
    SealRecord(record);
  }
  if (!holding()) {  // all sent: start again at the front, and give a large buffer back
    held_.clear();
    held_next_ = 0;
    if (held_.capacity() > 1024) held_.shrink_to_fit();
  }
  PublishCounters();
}

void SecureChannel::OnReceipts(const std::vector<ReceiptOutcome>& outcomes) {
  for (const ReceiptOutcome& o : outcomes) {
    auto settle = [&](absl::flat_hash_map<uint64_t, core::Receipt>::iterator it) {
      if (o.status.ok()) {
        it->second.Settle(absl::OkStatus());
      } else {
        it->second.Settle(ErrorWithReason(
            o.status.code(),
            absl::StrCat("not delivered: the far end (", session_.remote_identifier(),
                         ") says: ", o.status.message()),
            ReasonOf(o.status)));
      }
      awaiting_.erase(it);
    };
    if (o.count <= awaiting_.size()) {
      for (uint64_t id = o.first; id - o.first < o.count; ++id) {
        if (auto it = awaiting_.find(id); it != awaiting_.end()) settle(it);
      }
    } else {  // (a range larger than what is awaited: walk what is)
      std::vector<uint64_t> hit;
      for (const auto& [id, receipt] : awaiting_) {
        if (id >= o.first && id - o.first < o.count) hit.push_back(id);
      }
      for (uint64_t id : hit) settle(awaiting_.find(id));
    }
  }
}

void SecureChannel::FailAwaiting(const std::vector<uint64_t>& ids, const absl::Status& why) {
  for (uint64_t id : ids) {
    auto it = awaiting_.find(id);
    if (it == awaiting_.end()) continue;
    it->second.Settle(why);
    awaiting_.erase(it);
  }
}

void SecureChannel::ArmProbe() {
  if (probe_armed_ || closed_) return;
  if (probe_timer_ == nullptr) probe_timer_ = std::make_unique<boost::asio::steady_timer>(strand_);
  probe_armed_ = true;
  heard_at_last_probe_ = session_.authenticated_messages();
  probe_timer_->expires_after(std::chrono::seconds(1));
  probe_timer_->async_wait([self = shared_from_this()](boost::system::error_code ec) {
    self->probe_armed_ = false;
    if (!ec) self->OnProbeTimer();
  });
}

void SecureChannel::OnProbeTimer() {
  if (closed_ || awaiting_.empty()) {
    silent_probes_ = 0;
    return;
  }
  if (session_.authenticated_messages() != heard_at_last_probe_) {
    silent_probes_ = 0;
  } else if (++silent_probes_ >= 10) {
    CloseNow(
        ErrorWithReason(absl::StatusCode::kDeadlineExceeded,
                        absl::StrCat("the far end did not answer for ", silent_probes_, " s while ",
                                     awaiting_.size(), " messages awaited their delivery receipts"),
                        reason::kDeliveryUnknown),
        true);
    return;
  }
  if (silent_probes_ > 0) {
    std::string probe = session_.Receipts({}, /*probe=*/true);
    if (!probe.empty()) Send(std::move(probe), remote_route_, core::Receipt());
  }
  ArmProbe();
}

void SecureChannel::FlushReceipts(bool answering_probe) {
  auto outcomes =
      receipts_ != nullptr ? receipts_->Take() : std::vector<std::pair<uint64_t, absl::Status>>();
  if (closed_) return;  // (the far end learns the rest from the channel closing)
  if (outcomes.empty() && !answering_probe) return;  // (a probe's answer took them)
  constexpr size_t kPerMessage = 4096;
  size_t at = 0;
  do {  // (at least one RECEIPT: a probe's answer may have nothing to tell)
    std::span<const std::pair<uint64_t, absl::Status>> part(
        outcomes.data() + at, std::min(kPerMessage, outcomes.size() - at));
    std::string bytes = session_.Receipts(part);
    if (bytes.empty()) return;
    manager_.stats().receipts_sent.fetch_add(1, std::memory_order_relaxed);
    Send(std::move(bytes), remote_route_, core::Receipt());
    at += kPerMessage;
  } while (at < outcomes.size());
}

SecureChannel::CreditTracker* SecureChannel::Credit() {
  if (credit_ == nullptr && session_.flow_controlled()) {  // (an idle channel never needs one)
    credit_ = std::make_shared<CreditTracker>(weak_from_this(), strand_,
                                              std::max<uint64_t>(1, session_.receive_window() / 8));
  }
  return credit_.get();
}

void SecureChannel::OnConsumed() {
  if (closed_ || credit_ == nullptr) return;
  std::string credit = session_.CreditFor(credit_->Take());
  if (credit.empty()) return;
  manager_.stats().credits_sent.fetch_add(1, std::memory_order_relaxed);
  Send(std::move(credit), remote_route_, core::Receipt());
}

void SecureChannel::OnChannelMessage(core::Message msg) {
  if (closed_) {
    msg.receipt.Settle(ErrorWithReason(
        absl::StatusCode::kUnavailable,
        absl::StrCat("secure channel ", encryptor_address_, " is closed"), reason::kChannelClosed));
    return;
  }
  if (!msg.refusal.ok()) {
    msg.receipt.Settle(absl::OkStatus());
    if (!Forged(msg)) OnRefusal(msg.refusal);
    return;
  }
  if (!msg.payload.empty() &&
      static_cast<ChannelMessageType>(msg.payload[0]) == ChannelMessageType::kHandshakeError &&
      Forged(msg)) {  // unauthenticated: believed only from the path
    msg.receipt.Settle(absl::OkStatus());
    return;
  }
  // The receipt goes on with the decrypted message, so that a paced sender (a connection)
  // waits until the app's queue took it; anything else this message does is done here.
  core::Receipt receipt = std::move(msg.receipt);
  absl::Cleanup settle = [&receipt] { receipt.Settle(absl::OkStatus()); };
  const bool awaiting_confirmation = session_.awaiting_confirmation();
  ChannelSession::Step step = session_.OnMessageInPlace(msg.payload);  // (msg is ours)
  if (awaiting_confirmation && !session_.awaiting_confirmation() &&
      session_.state() == ChannelSession::State::kEstablished) {
    ArmEstablishedTimer();  // confirmed: from now on the timer watches for idleness
  }
  bool authenticated = step.error.ok();
  if (authenticated && !msg.return_route.empty()) {
    // Follow the far end's return route (e.g. the hops behind a relay); its first hop is always
    // the carrier, which is all the decryptor admits.
    remote_route_ = msg.return_route;
  }
  if (step.established && !initiator_) {
    // A responder's last check before it confirms: the far identity's share of the channels.
    if (!manager_.CountRemote(session_.remote_identifier())) {
      manager_.stats().handshakes_refused.fetch_add(1, std::memory_order_relaxed);
      Send(ChannelSession::HandshakeError("too many channels from this identity"), msg.return_route,
           core::Receipt(), msg.path_tag);
      CloseNow(ErrorWithReason(absl::StatusCode::kResourceExhausted,
                               absl::StrCat(session_.remote_identifier(),
                                            " already has its limit of channels to this node "
                                            "(--max-channels-per-identity)"),
                               reason::kTooManyChannels),
               false);
      return;
    }
    remote_counted_ = true;
  }
  if (!step.reply.empty()) {
    const bool refusal =
        static_cast<ChannelMessageType>(step.reply[0]) == ChannelMessageType::kHandshakeError;
    Send(std::move(step.reply), msg.return_route, core::Receipt(), refusal ? msg.path_tag : 0);
  }
  if (!step.error.ok()) {
    if (session_.state() == ChannelSession::State::kFailed) {
      if (ReasonOf(step.error) == reason::kFlowControlViolated) {
        manager_.stats().credit_violations.fetch_add(1, std::memory_order_relaxed);
      }
      CloseNow(std::move(step.error), false);
    } else {
      spdlog::debug("secure channel {}: dropped a message: {}", encryptor_address_,
                    step.error.message());
      // A record that decrypted but did not decode: nothing to deliver, its bytes are free.
      if (step.record_bytes > 0 && Credit() != nullptr) credit_->Add(step.record_bytes);
      PublishCounters();
    }
    return;
  }
  PublishCounters();
  if (step.established) {
    established_ = true;
    timer_.cancel();
    ArmEstablishedTimer();
    manager_.stats().RecordHandshake(true, std::chrono::steady_clock::now() - started_);
    if (pending_counted_) {
      pending_counted_ = false;
      manager_.HandshakeSettled(pending_slot_);
    }
    const std::string route = remote_route_.ToString();
    Log(spdlog::level::info,
        {{log_field::kChannel, encryptor_address_},
         {log_field::kIdentifier, session_.remote_identifier()},
         {log_field::kRoute, route}},
        "secure channel {} established with {} ({})", encryptor_address_,
        session_.remote_identifier(), initiator_ ? "initiator" : "responder");
    ArmCredentialTimer();
    Publish();
    if (on_established_) {
      auto done = std::move(on_established_);
      on_established_ = nullptr;
      done(Info());
    }
  }
  if (step.closed) {
    CloseNow(ErrorWithReason(absl::StatusCode::kUnavailable, "closed by the other end",
                             reason::kChannelClosed),
             false);
    return;
  }
  if (step.credentials_refreshed) {
    ArmCredentialTimer();
    Publish();
  }
  if (step.credited) Drain();
  if (!step.receipts.empty()) OnReceipts(step.receipts);
  if (step.probed) FlushReceipts(/*answering_probe=*/true);
  if (step.deliveries.empty()) return;
  std::move(settle).Cancel();
  // Under flow control the record's bytes are granted back once all its messages were handed
  // on (and until then the far end's limit bounds what this node holds for the channel: its
  // messages are paced, so queues keep them instead of refusing).
  const bool credited = step.record_bytes > 0 && Credit() != nullptr;
  if (credited) {
    std::vector<core::Receipt> both;
    both.reserve(2);
    both.push_back(std::move(receipt));
    both.push_back(core::Receipt(credit_, static_cast<uint32_t>(step.record_bytes)));
    receipt = core::JoinReceipts(std::move(both));
  }
  // One receipt per message: the record's settles once all of them have.
  std::vector<core::Receipt> parts = core::SplitReceipt(std::move(receipt), step.deliveries.size());
  if (!step.receipt_ids.empty()) {
    // Each delivery whose sender wants a receipt is reported back once it settles.
    if (receipts_ == nullptr)
      receipts_ = std::make_shared<ReceiptCollector>(weak_from_this(), strand_);
    std::vector<uint64_t> ids;
    std::vector<size_t> which;
    for (size_t i = 0; i < step.receipt_ids.size(); ++i) {
      if (step.receipt_ids[i] == 0) continue;
      ids.push_back(step.receipt_ids[i]);
      which.push_back(i);
    }
    auto tracker = std::make_shared<RecordDeliveries>(receipts_, std::move(ids));
    for (size_t k = 0; k < which.size(); ++k) {
      std::vector<core::Receipt> both;
      both.reserve(2);
      both.push_back(std::move(parts[which[k]]));
      both.push_back(core::Receipt(tracker, static_cast<uint32_t>(k)));
      parts[which[k]] = core::JoinReceipts(std::move(both));
      step.deliveries[which[k]].want_delivery = true;
    }
  }
  for (size_t i = 0; i < step.deliveries.size(); ++i) {
    core::Message& inner = step.deliveries[i];
    // (Whether a decrypted message may go on, e.g. leave the host, is the router's call:
    // provenance kSecureChannel, judged by the next worker or transport.)
    // A message sent without a return route cannot be answered: it gets none here either.
    if (!inner.return_route.empty()) {
      inner.return_route.PushFront(core::Address::Local(encryptor_address_));
    }
    inner.sender.origin = core::SenderInfo::Origin::kSecureChannel;
    inner.sender.via = encryptor_id_;
    inner.sender.identifier = session_.remote_identifier();
    inner.sender.channel = encryptor_address_;
    inner.sender.attributes = session_.remote_attributes();
    inner.receipt = std::move(parts[i]);
    inner.paced = msg.paced || credited;
  }
  if (step.deliveries.size() == 1) {
    manager_.router().Send(std::move(step.deliveries.front()));
  } else if (!step.deliveries.empty()) {
    manager_.router().SendBatch(std::move(step.deliveries));
  }
}

void SecureChannel::OnRefusal(const absl::Status& refusal) {
  // A node on the way could not hand on what this channel sent. The notice is not
  // authenticated, but a node on the path could as well drop everything: it may end the
  // channel early, never inject data. A route that is gone (relay dropped, connection lost, the
  // far end closed) ends the channel, so that the app's next sends are refused here instead of
  // vanishing; anything else (e.g. a message too large for a hop) is only logged.
  const std::string why = ReasonOf(refusal);
  if (session_.state() == ChannelSession::State::kHandshaking) {
    // The handshake itself was refused on the way (no listener there, not one the network may
    // reach, no such relay): fail now, with the node's reason, instead of at the timeout.
    CloseNow(ErrorWithReason(refusal.code(),
                             absl::StrCat("the handshake did not reach a listener: a node on the "
                                          "way says: ",
                                          refusal.message()),
                             why),
             false);
    return;
  }
  // (A relay that went, or the far end of this channel that closed: the far node's epitaphs.)
  if (why != reason::kRouteNotFound && why != reason::kRelayNotFound &&
      why != reason::kChannelClosed && why != reason::kConnectionLost &&
      why != reason::kConnectionFailed) {
    Log(spdlog::level::warn, {{log_field::kChannel, encryptor_address_}, {log_field::kReason, why}},
        "secure channel {}: a node on the way refused a message: {}", encryptor_address_,
        refusal.message());
    return;
  }
  CloseNow(ErrorWithReason(absl::StatusCode::kUnavailable,
                           absl::StrCat("the far end became unreachable: a node on the way says: ",
                                        refusal.message()),
                           reason::kChannelClosed),
           false);
}

void SecureChannel::Delete(absl::Status why) {
  // Unreachable before this returns, so that whatever the app sends after DeleteSecureChannel
  // is refused with CHANNEL_CLOSED, every time; what it sent before is still handled.
  manager_.router().StopWorker(encryptor_address_, nullptr,
                               ClosedChannel(encryptor_address_, why.message()));
  Close(std::move(why), /*notify_peer=*/true);
}

void SecureChannel::Close(absl::Status why, bool notify_peer) {
  boost::asio::post(strand_,
                    [self = shared_from_this(), why = std::move(why), notify_peer]() mutable {
                      self->CloseNow(std::move(why), notify_peer);
                    });
}

void SecureChannel::CloseNow(absl::Status why, bool notify_peer) {
  if (closed_) return;
  // (The session is already kClosed when the far end's CLOSE ended it: what counts is that it
  // was established, not how it stands now.)
  const bool was_established =
      established_ || session_.state() == ChannelSession::State::kEstablished;
  if (notify_peer && was_established) {
    Send(session_.Close(), remote_route_, core::Receipt());
  }
  closed_ = true;
  timer_.cancel();
  if (probe_timer_ != nullptr) probe_timer_->cancel();
  if (credential_timer_ != nullptr) credential_timer_->cancel();
  if (!awaiting_.empty()) {
    const absl::Status unknown = ErrorWithReason(
        absl::StatusCode::kUnavailable,
        absl::StrCat("secure channel ", encryptor_address_,
                     " closed before the far end confirmed delivery (it may or may not have "
                     "been delivered): ",
                     why.message()),
        reason::kDeliveryUnknown);
    manager_.stats().receipts_unknown.fetch_add(awaiting_.size(), std::memory_order_relaxed);
    for (auto& [id, receipt] : awaiting_) receipt.Settle(unknown);
    awaiting_.clear();
  }
  if (holding()) {
    const absl::Status unsent = ErrorWithReason(
        absl::StatusCode::kUnavailable,
        absl::StrCat("secure channel ", encryptor_address_,
                     " closed before the far end granted room for this message: ", why.message()),
        reason::kChannelClosed);
    for (size_t i = held_next_; i < held_.size(); ++i) held_[i].receipt.Settle(unsent);
    held_.clear();
    held_next_ = 0;
    held_bytes_ = 0;
  }
  if (pending_counted_) {
    pending_counted_ = false;
    manager_.HandshakeSettled(pending_slot_);
  }
  if (remote_counted_) {
    remote_counted_ = false;
    manager_.UncountRemote(session_.remote_identifier());
  }
  ChannelStats& stats = manager_.stats();
  stats.closed_sent.fetch_add(session_.messages_sent(), std::memory_order_relaxed);
  stats.closed_received.fetch_add(session_.messages_received(), std::memory_order_relaxed);
  stats.closed_decrypt_failures.fetch_add(session_.decrypt_failures(), std::memory_order_relaxed);
  stats.closed_replays.fetch_add(session_.replays(), std::memory_order_relaxed);
  const std::string reason = ReasonOf(why);
  if (was_established) {
    Log(spdlog::level::info,
        {{log_field::kChannel, encryptor_address_},
         {log_field::kIdentifier, session_.remote_identifier()},
         {log_field::kReason, reason}},
        "secure channel {} with {} closed: {}", encryptor_address_, session_.remote_identifier(),
        why.message());
  } else {
    stats.RecordHandshake(false, {});
    const std::string route = remote_route_.ToString();
    Log(spdlog::level::warn,
        {{log_field::kChannel, encryptor_address_},
         {log_field::kRoute, route},
         {log_field::kReason, reason}},
        "secure channel {} handshake failed ({}): {}", encryptor_address_,
        initiator_ ? "initiator" : "responder", why.message());
  }
  if (on_established_) {
    auto done = std::move(on_established_);
    on_established_ = nullptr;
    done(why);
  }
  {
    veil::MutexLock lock(&mu_);
    published_.state = ChannelInfo::State::kClosed;
    if (published_.identity) {
      published_.identity_name = published_.identity->name();
      published_.local_identifier = published_.identity->identifier();
      published_.identity = nullptr;
    }
  }
  // Messages sent to either address from now on are refused as CHANNEL_CLOSED, not as an
  // unknown address (and the app, on this node, is told why).
  manager_.router().StopWorker(encryptor_address_, nullptr,
                               ClosedChannel(encryptor_address_, why.message()));
  manager_.router().StopWorker(decryptor_address_, nullptr, StoppedChannel(decryptor_address_));
  lease_ = identity::IdentityLease();
  manager_.Forget(encryptor_address_, this);
  // Channels that ran inside this one lost their carrier.
  manager_.OnCarrierClosed(encryptor_id_, "the secure channel it ran in closed");
}

void SecureChannel::Publish() {
  const bool established = session_.state() == ChannelSession::State::kEstablished;
  if (established) remote_identified_.store(true, std::memory_order_release);
  veil::MutexLock lock(&mu_);
  published_.remote_route = remote_route_.ToString();
  if (published_.state == ChannelInfo::State::kClosed) return;  // (identity put down at close)
  if (lease_.identity()) published_.identity = lease_.identity();
  published_.state =
      established ? ChannelInfo::State::kEstablished : ChannelInfo::State::kHandshaking;
  published_.remote_attributes = session_.remote_attributes();
  published_.remote_credentials_expire_at = session_.remote_credentials_expire_at();
}

void SecureChannel::PublishCounters() {
  sent_.store(session_.messages_sent(), std::memory_order_relaxed);
  received_.store(session_.messages_received(), std::memory_order_relaxed);
  decrypt_failures_.store(session_.decrypt_failures(), std::memory_order_relaxed);
  replays_.store(session_.replays(), std::memory_order_relaxed);
  queued_bytes_.store(held_bytes_, std::memory_order_relaxed);
  send_credit_.store(session_.send_credit(), std::memory_order_relaxed);
}

ChannelInfo SecureChannel::Info() const {
  ChannelInfo info;
  {
    veil::MutexLock lock(&mu_);
    if (published_.identity) {
      info.identity = published_.identity->name();
      info.local_identifier = published_.identity->identifier();
    } else {
      info.identity = published_.identity_name;
      info.local_identifier = published_.local_identifier;
    }
    info.remote_route = published_.remote_route;
    info.state = published_.state;
    info.remote_attributes = published_.remote_attributes;
    info.remote_credentials_expire_at = published_.remote_credentials_expire_at;
  }
  if (remote_identified_.load(std::memory_order_acquire)) {
    info.remote_identifier = session_.remote_identifier();
  }
  // Fixed once Register returned, which happens before the manager lists the channel.
  info.address = encryptor_address_;
  info.decryptor_address = decryptor_address_;
  info.initiator = initiator_;
  info.listener = listener_;
  info.trust_policy = policy_->Describe();
  info.carrier = carrier_.via;
  info.encryptor_id = encryptor_id_;
  info.messages_sent = sent_.load(std::memory_order_relaxed);
  info.messages_received = received_.load(std::memory_order_relaxed);
  info.decrypt_failures = decrypt_failures_.load(std::memory_order_relaxed);
  info.replays_rejected = replays_.load(std::memory_order_relaxed);
  info.queued_bytes = queued_bytes_.load(std::memory_order_relaxed);
  info.send_credit = send_credit_.load(std::memory_order_relaxed);
  return info;
}

}  // namespace veil::channel
