#include "sidecar/channel/secure_channel.h"

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "asio/bind_executor.hpp"
#include "asio/post.hpp"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "spdlog/spdlog.h"

namespace veil::channel {
namespace {

// For a message that reached a channel's worker after it stopped: the router found the worker
// just before it was removed, and its message was queued behind OnStop on the strand.
absl::Status StoppedChannel(const std::string& address) {
  return ErrorWithReason(absl::StatusCode::kUnavailable,
                         absl::StrCat("secure channel ", address, " is closed"), "CHANNEL_CLOSED");
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

 private:
  std::shared_ptr<SecureChannel> channel_;
};

// The network-facing worker: channel messages in, decrypted messages routed on.
class Decryptor final : public core::Worker {
 public:
  Decryptor(core::Strand strand, std::shared_ptr<SecureChannel> channel)
      : Worker(std::move(strand)), channel_(std::move(channel)) {}
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
};

// Reports a failed handshake send back to the channel's strand.
class HandshakeSendTracker final : public core::SendTracker {
 public:
  explicit HandshakeSendTracker(std::weak_ptr<SecureChannel> channel) : channel_(std::move(channel)) {}
  void Complete(uint32_t, absl::Status status) override {
    if (status.ok()) return;
    if (auto channel = channel_.lock()) {
      asio::post(channel->strand(), [channel, status] { channel->OnSendFailed(status); });
    }
  }

 private:
  std::weak_ptr<SecureChannel> channel_;
};

}  // namespace

SecureChannel::SecureChannel(SecureChannelManager& manager, core::Strand strand, bool initiator,
                             identity::IdentityLease lease,
                             std::shared_ptr<const TrustPolicy> policy, std::string listener)
    : manager_(manager),
      strand_(strand),
      initiator_(initiator),
      lease_(std::move(lease)),
      policy_(std::move(policy)),
      session_(initiator ? ChannelSession::Role::kInitiator : ChannelSession::Role::kResponder,
               lease_.identity(), *policy_, manager.options().session),
      timer_(strand),
      listener_(std::move(listener)),
      pending_counted_(!initiator) {}

absl::Status SecureChannel::Register(uint64_t id) {
  encryptor_address_ = absl::StrCat("_sc_", id);
  decryptor_address_ = absl::StrCat("_scd_", id);
  absl::Status s = manager_.router().StartWorker(
      encryptor_address_, std::make_shared<Encryptor>(strand_, shared_from_this()));
  if (!s.ok()) return s;
  s = manager_.router().StartWorker(decryptor_address_,
                                    std::make_shared<Decryptor>(strand_, shared_from_this()));
  if (!s.ok()) manager_.router().StopWorker(encryptor_address_);
  Publish();
  return s;
}

void SecureChannel::StartInitiator(core::Route route, std::chrono::milliseconds timeout,
                                   SecureChannelManager::CreateCallback done) {
  asio::post(strand_, [self = shared_from_this(), route = std::move(route), timeout,
                       done = std::move(done)]() mutable {
    self->on_established_ = std::move(done);
    self->remote_route_ = route;
    auto hs1 = self->session_.Start();
    if (!hs1.ok()) {
      self->CloseNow(hs1.status(), false);
      return;
    }
    self->timer_.expires_after(timeout);
    self->timer_.async_wait([self, timeout](asio::error_code ec) {
      if (ec || self->closed_ || self->session_.state() != ChannelSession::State::kHandshaking) {
        return;
      }
      self->CloseNow(ErrorWithReason(absl::StatusCode::kDeadlineExceeded,
                                     absl::StrCat("no handshake answer from the listener within ",
                                                  timeout.count(), " ms"),
                                     "HANDSHAKE_TIMEOUT"),
                     false);
    });
    self->Send(*std::move(hs1), route,
               core::Receipt(std::make_shared<HandshakeSendTracker>(self), 0));
  });
}

void SecureChannel::StartResponder(std::chrono::milliseconds timeout) {
  asio::post(strand_, [self = shared_from_this(), timeout] {
    self->timer_.expires_after(timeout);
    self->timer_.async_wait([self](asio::error_code ec) {
      if (ec || self->closed_ || self->session_.state() != ChannelSession::State::kHandshaking) {
        return;
      }
      self->CloseNow(ErrorWithReason(absl::StatusCode::kDeadlineExceeded,
                                     "the initiator did not finish the handshake",
                                     "HANDSHAKE_TIMEOUT"),
                     false);
    });
  });
}

void SecureChannel::Send(std::string bytes, const core::Route& to, core::Receipt receipt) {
  core::Message out;
  out.onward = to;
  out.return_route.Append(core::Address::Local(decryptor_address_));
  out.payload = std::move(bytes);
  out.receipt = std::move(receipt);
  manager_.router().Send(std::move(out));
}

void SecureChannel::OnSendFailed(absl::Status why) {
  if (closed_ || session_.state() != ChannelSession::State::kHandshaking) return;
  CloseNow(std::move(why), false);
}

void SecureChannel::OnPlaintext(core::Message msg) {
  if (closed_ || session_.state() != ChannelSession::State::kEstablished) {
    msg.receipt.Settle(ErrorWithReason(absl::StatusCode::kUnavailable,
                                       absl::StrCat("secure channel ", encryptor_address_,
                                                    closed_ ? " is closed" : " is not established"),
                                       "CHANNEL_CLOSED"));
    return;
  }
  std::string ciphertext;
  absl::Status s = session_.Encrypt(msg.onward, msg.return_route, msg.payload, ciphertext);
  if (!s.ok()) {
    msg.receipt.Settle(std::move(s));
    return;
  }
  Send(std::move(ciphertext), remote_route_, std::move(msg.receipt));
  PublishCounters();
}

void SecureChannel::OnPlaintextBatch(std::vector<core::Message> msgs) {
  if (msgs.size() == 1 || closed_ || session_.state() != ChannelSession::State::kEstablished ||
      !session_.peer_takes_batches()) {
    for (core::Message& msg : msgs) OnPlaintext(std::move(msg));
    return;
  }
  const size_t limit = manager_.options().max_batch_bytes;
  size_t begin = 0;
  while (begin < msgs.size()) {
    size_t end = begin;
    size_t bytes = 0;
    while (end < msgs.size()) {
      size_t entry = ChannelSession::BatchEntrySize(msgs[end]);
      if (end > begin && bytes + entry > limit) break;
      bytes += entry;
      ++end;
    }
    if (end - begin == 1) {  // alone: too large to share a record, or the last one
      OnPlaintext(std::move(msgs[begin]));
      begin = end;
      continue;
    }
    std::span<core::Message> record(msgs.data() + begin, end - begin);
    std::string ciphertext;
    absl::Status s = session_.EncryptBatch(record, ciphertext);
    std::vector<core::Receipt> receipts;
    receipts.reserve(record.size());
    for (core::Message& msg : record) receipts.push_back(std::move(msg.receipt));
    if (!s.ok()) {
      for (core::Receipt& r : receipts) r.Settle(s);
    } else {
      Send(std::move(ciphertext), remote_route_, core::JoinReceipts(std::move(receipts)));
    }
    begin = end;
  }
  PublishCounters();
}

void SecureChannel::OnChannelMessage(core::Message msg) {
  if (closed_) {
    msg.receipt.Settle(ErrorWithReason(absl::StatusCode::kUnavailable,
                                       absl::StrCat("secure channel ", encryptor_address_,
                                                    " is closed"),
                                       "CHANNEL_CLOSED"));
    return;
  }
  if (!msg.refusal.ok()) {
    msg.receipt.Settle(absl::OkStatus());
    OnRefusal(msg.refusal);
    return;
  }
  // The receipt goes on with the decrypted message, so that a paced sender (a connection)
  // waits until the app's queue took it; anything else this message does is done here.
  core::Receipt receipt = std::move(msg.receipt);
  absl::Cleanup settle = [&receipt] { receipt.Settle(absl::OkStatus()); };
  ChannelSession::Step step = session_.OnMessageInPlace(msg.payload);  // (msg is ours)
  bool authenticated = step.error.ok();
  if (authenticated && !msg.return_route.empty()) {
    remote_route_ = msg.return_route;  // follow the far end (e.g. after its connection changed)
  }
  if (!step.reply.empty()) Send(std::move(step.reply), msg.return_route, core::Receipt());
  if (!step.error.ok()) {
    if (session_.state() == ChannelSession::State::kFailed) {
      CloseNow(std::move(step.error), false);
    } else {
      spdlog::debug("secure channel {}: dropped a message: {}", encryptor_address_,
                    step.error.message());
      PublishCounters();
    }
    return;
  }
  PublishCounters();
  if (step.established) {
    timer_.cancel();
    manager_.stats().RecordHandshake(true, std::chrono::steady_clock::now() - started_);
    if (pending_counted_) {
      pending_counted_ = false;
      manager_.HandshakeSettled(listener_);
    }
    spdlog::info("secure channel {} established with {} ({})", encryptor_address_,
                 session_.remote_identifier(), initiator_ ? "initiator" : "responder");
    Publish();
    if (on_established_) {
      auto done = std::move(on_established_);
      on_established_ = nullptr;
      done(Info());
    }
  }
  if (step.closed) {
    CloseNow(ErrorWithReason(absl::StatusCode::kUnavailable, "closed by the other end",
                             "CHANNEL_CLOSED"),
             false);
    return;
  }
  if (step.deliveries.empty()) return;
  std::move(settle).Cancel();
  // One receipt per message: the record's settles once all of them have.
  std::vector<core::Receipt> parts =
      core::SplitReceipt(std::move(receipt), step.deliveries.size());
  const core::Address* checked_hop = nullptr;  // consecutive messages mostly share their hop
  bool checked_leaves = false;
  for (size_t i = 0; i < step.deliveries.size(); ++i) {
    core::Message& inner = step.deliveries[i];
    if (!manager_.options().insecure_plaintext) {
      if (checked_hop == nullptr || !(inner.onward.front() == *checked_hop)) {
        checked_leaves = manager_.router().LeavesHost(inner.onward);
        checked_hop = &inner.onward.front();
      }
      if (checked_leaves) {
        spdlog::warn("secure channel {}: dropped a decrypted message whose next hop {} leaves "
                     "the host in plaintext",
                     encryptor_address_, inner.onward.front().ToString());
        parts[i].Settle(ErrorWithReason(absl::StatusCode::kPermissionDenied,
                                        "a decrypted message may not leave the host in plaintext",
                                        "PLAINTEXT_REFUSED"));
        inner.onward = core::Route();  // skipped below
        checked_hop = nullptr;
        continue;
      }
    }
    inner.return_route.PushFront(core::Address::Local(encryptor_address_));
    inner.sender.origin = core::SenderInfo::Origin::kSecureChannel;
    inner.sender.identifier = session_.remote_identifier();
    inner.sender.channel = encryptor_address_;
    inner.receipt = std::move(parts[i]);
    inner.paced = msg.paced;
  }
  std::erase_if(step.deliveries, [](const core::Message& m) { return m.onward.empty(); });
  if (step.deliveries.size() == 1) {
    manager_.router().Send(std::move(step.deliveries.front()));
  } else if (!step.deliveries.empty()) {
    manager_.router().SendBatch(std::move(step.deliveries));
  }
}

void SecureChannel::OnRefusal(const absl::Status& refusal) {
  // A node on the way could not hand on what this channel sent. The notice is not
  // authenticated, but a node on the path could as well drop everything: it may end the
  // channel early, never inject data. A route that is gone (relay dropped, connection lost)
  // ends the channel, so that the app's next sends are refused here instead of vanishing;
  // anything else (e.g. a message too large for a hop) is only logged.
  const std::string why = ReasonOf(refusal);
  if (why != reason::kRouteNotFound && why != reason::kConnectionLost &&
      why != reason::kConnectionFailed) {
    spdlog::warn("secure channel {}: a node on the way refused a message: {}", encryptor_address_,
                 refusal.message());
    return;
  }
  CloseNow(ErrorWithReason(absl::StatusCode::kUnavailable,
                           absl::StrCat("the far end became unreachable: a node on the way says: ",
                                        refusal.message()),
                           "CHANNEL_CLOSED"),
           false);
}

void SecureChannel::Close(absl::Status why, bool notify_peer) {
  asio::post(strand_, [self = shared_from_this(), why = std::move(why), notify_peer]() mutable {
    self->CloseNow(std::move(why), notify_peer);
  });
}

void SecureChannel::CloseNow(absl::Status why, bool notify_peer) {
  if (closed_) return;
  bool was_established = session_.state() == ChannelSession::State::kEstablished;
  if (notify_peer && was_established) {
    Send(session_.Close(), remote_route_, core::Receipt());
  }
  closed_ = true;
  timer_.cancel();
  if (pending_counted_) {
    pending_counted_ = false;
    manager_.HandshakeSettled(listener_);
  }
  ChannelStats& stats = manager_.stats();
  stats.closed_sent.fetch_add(session_.messages_sent(), std::memory_order_relaxed);
  stats.closed_received.fetch_add(session_.messages_received(), std::memory_order_relaxed);
  stats.closed_decrypt_failures.fetch_add(session_.decrypt_failures(), std::memory_order_relaxed);
  stats.closed_replays.fetch_add(session_.replays(), std::memory_order_relaxed);
  if (was_established) {
    spdlog::info("secure channel {} with {} closed: {}", encryptor_address_,
                 session_.remote_identifier(), why.message());
  } else {
    stats.RecordHandshake(false, {});
    spdlog::warn("secure channel {} handshake failed ({}): {}", encryptor_address_,
                 initiator_ ? "initiator" : "responder", why.message());
  }
  if (on_established_) {
    auto done = std::move(on_established_);
    on_established_ = nullptr;
    done(why);
  }
  {
    veil::MutexLock lock(&mu_);
    info_.state = ChannelInfo::State::kClosed;
  }
  manager_.router().StopWorker(encryptor_address_);
  manager_.router().StopWorker(decryptor_address_);
  lease_ = identity::IdentityLease();
  manager_.Forget(encryptor_address_, this);
}

void SecureChannel::Publish() {
  veil::MutexLock lock(&mu_);
  info_.address = encryptor_address_;
  info_.decryptor_address = decryptor_address_;
  info_.initiator = initiator_;
  info_.listener = listener_;
  info_.identity = lease_.identity() ? lease_.identity()->name() : info_.identity;
  info_.local_identifier = lease_.identity() ? lease_.identity()->identifier() : info_.local_identifier;
  info_.remote_identifier = session_.remote_identifier();
  info_.remote_route = remote_route_.ToString();
  info_.trust_policy = policy_->Describe();
  if (info_.state != ChannelInfo::State::kClosed) {
    info_.state = session_.state() == ChannelSession::State::kEstablished
                      ? ChannelInfo::State::kEstablished
                      : ChannelInfo::State::kHandshaking;
  }
}

void SecureChannel::PublishCounters() {
  sent_.store(session_.messages_sent(), std::memory_order_relaxed);
  received_.store(session_.messages_received(), std::memory_order_relaxed);
  decrypt_failures_.store(session_.decrypt_failures(), std::memory_order_relaxed);
  replays_.store(session_.replays(), std::memory_order_relaxed);
}

ChannelInfo SecureChannel::Info() const {
  ChannelInfo info;
  {
    veil::MutexLock lock(&mu_);
    info = info_;
  }
  info.messages_sent = sent_.load(std::memory_order_relaxed);
  info.messages_received = received_.load(std::memory_order_relaxed);
  info.decrypt_failures = decrypt_failures_.load(std::memory_order_relaxed);
  info.replays_rejected = replays_.load(std::memory_order_relaxed);
  return info;
}

}  // namespace veil::channel
