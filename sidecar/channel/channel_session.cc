#include "sidecar/channel/channel_session.h"

#include <algorithm>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/core/message_codec.h"
#include "sidecar/identity/identifier.h"
#include "veil/wire/v1/channel.pb.h"
#include "veil/wire/v1/credential.pb.h"

namespace veil::channel {
namespace {

constexpr size_t kCounterBytes = 8;
constexpr size_t kMaxErrorReason = 200;
constexpr uint64_t kMaxEpochJump = 16;

absl::Status Dropped(absl::StatusCode code, absl::string_view why, absl::string_view reason) {
  return ErrorWithReason(code, why, reason);
}

void PutCounter(uint64_t n, std::string& out) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(n >> shift));
}

uint64_t GetCounter(absl::string_view b) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n = (n << 8) | static_cast<uint8_t>(b[i]);
  return n;
}

}  // namespace

absl::Status DecodeChannelBatch(absl::string_view plaintext, std::vector<core::Message>& out,
                                std::vector<uint64_t>* receipt_ids) {
  auto malformed = [](absl::string_view why) {
    return ErrorWithReason(absl::StatusCode::kInvalidArgument,
                           absl::StrCat("malformed batch: ", why), reason::kMalformedFrame);
  };
  wire::v1::ChannelBatch batch;
  if (!batch.ParseFromArray(plaintext.data(), static_cast<int>(plaintext.size()))) {
    return malformed("not a ChannelBatch");
  }
  if (batch.groups_size() == 0) return malformed("no messages");
  size_t total = 0;
  bool receipts = false;
  for (const auto& group : batch.groups()) {
    total += group.payloads_size();
    if (group.first_receipt_id() != 0) {
      receipts = true;
      if (group.first_receipt_id() >
          std::numeric_limits<uint64_t>::max() - static_cast<uint64_t>(group.payloads_size())) {
        return malformed("receipt ids past 2^64");
      }
    }
  }
  const size_t first = out.size();
  out.reserve(out.size() + total);
  if (receipts && receipt_ids != nullptr) {
    receipt_ids->resize(first, 0);
    receipt_ids->reserve(first + total);
  }
  for (auto& group : *batch.mutable_groups()) {
    if (group.payloads_size() == 0) return malformed("a group without messages");
    if (group.onward_route_size() == 0) return malformed("onward route is empty");
    auto onward = core::RouteFromWire(group.onward_route(), "onward");
    if (!onward.ok()) return onward.status();
    auto back = core::RouteFromWire(group.return_route(), "return");
    if (!back.ok()) return back.status();
    uint64_t id = group.first_receipt_id();
    for (std::string& payload : *group.mutable_payloads()) {
      core::Message& msg = out.emplace_back();
      msg.onward = *onward;
      msg.return_route = *back;
      msg.payload = std::move(payload);
      msg.path_tag = group.path_tag();
      if (receipts && receipt_ids != nullptr) receipt_ids->push_back(id == 0 ? 0 : id++);
    }
  }
  return absl::OkStatus();
}

// The local identity's static key, as the handshake needs it.
// One snapshot of the identity's keys for the whole handshake (a rotation meanwhile does not
// mix keys: the proof is signed by the key whose static key is in use).
class ChannelSession::IdentityKey final : public StaticKey {
 public:
  explicit IdentityKey(std::shared_ptr<const identity::IdentityKeys> keys)
      : keys_(std::move(keys)) {}
  const std::string& public_key() const override { return keys_->static_public_key(); }
  absl::StatusOr<vault::SecretBytes> Dh(absl::string_view peer) const override {
    return keys_->StaticDh(peer);
  }
  const identity::IdentityKeys& keys() const { return *keys_; }

 private:
  const std::shared_ptr<const identity::IdentityKeys> keys_;
};

ChannelSession::ChannelSession(Role role, std::shared_ptr<const identity::Identity> local,
                               const TrustPolicy& policy, SessionOptions options,
                               std::optional<vault::X25519KeyPair> fixed_ephemeral_for_testing_only)
    : role_(role),
      local_(std::move(local)),
      policy_(policy),
      options_{.rekey_interval = options.rekey_interval == 0 ? 1 : options.rekey_interval,
               .offer_batch = options.offer_batch,
               .offer_confirm_ack = options.offer_confirm_ack,
               .receive_window = options.receive_window,
               .credentials = std::move(options.credentials),
               .trusted_authorities = std::move(options.trusted_authorities),
               .unix_now = std::move(options.unix_now),
               .clock_skew = options.clock_skew,
               .key_histories = options.key_histories},
      static_key_(std::make_unique<IdentityKey>(local_->keys())),
      handshake_(std::make_unique<HandshakeState>(
          role == Role::kInitiator ? HandshakeState::Role::kInitiator
                                   : HandshakeState::Role::kResponder,
          kPrologue, *static_key_, std::move(fixed_ephemeral_for_testing_only))),
      expected_(role == Role::kInitiator ? ChannelMessageType::kHandshake2
                                         : ChannelMessageType::kHandshake1) {}

ChannelSession::~ChannelSession() = default;

std::string ChannelSession::Proof() const {
  wire::v1::IdentityProof proof;
  const identity::IdentityKeys& keys = static_key_->keys();
  proof.set_identity_public_key(keys.public_key());
  proof.set_static_key_signature(keys.static_key_signature());
  proof.set_key_history(keys.history().encoded);
  if (options_.offer_batch) proof.add_features(std::string(kFeatureBatch));
  if (options_.offer_confirm_ack) proof.add_features(std::string(kFeatureConfirmAck));
  proof.set_receive_window(options_.receive_window);
  if (options_.credentials != nullptr) {
    for (const std::string& credential : *options_.credentials) proof.add_credentials(credential);
  }
  return proof.SerializeAsString();
}

int64_t ChannelSession::Now() const {
  if (options_.unix_now) return options_.unix_now();
  return absl::ToUnixSeconds(absl::Now());
}

absl::Status ChannelSession::AdmitCredentials(std::span<const std::string> credentials) {
  const bool checks =
      options_.trusted_authorities != nullptr && !options_.trusted_authorities->empty();
  std::shared_ptr<const identity::Attributes> attributes;
  int64_t expire_at = 0;
  if (checks && !credentials.empty()) {
    auto claims = identity::VerifyCredentials(
        credentials, {.trusted_issuers = options_.trusted_authorities.get(),
                      .subject = remote_identifier_,
                      .now = Now(),
                      .clock_skew = options_.clock_skew,
                      .key_histories = options_.key_histories});
    if (!claims.ok()) return claims.status();
    attributes = std::make_shared<const identity::Attributes>(std::move(claims->attributes));
    expire_at = claims->expires_at;
  }
  if (absl::Status trusted = policy_.CheckPeer({remote_identifier_, attributes.get()});
      !trusted.ok()) {
    return trusted;
  }
  remote_attributes_ = std::move(attributes);
  remote_expire_at_ = expire_at;
  return absl::OkStatus();
}

absl::Status ChannelSession::CheckExpiry() {
  if (remote_expire_at_ == 0 || state_ != State::kEstablished ||
      Now() < remote_expire_at_ + options_.clock_skew) {
    return absl::OkStatus();
  }
  remote_attributes_ = nullptr;
  remote_expire_at_ = 0;
  if (policy_.CheckPeer({remote_identifier_, nullptr}).ok()) return absl::OkStatus();
  return ErrorWithReason(absl::StatusCode::kPermissionDenied,
                         absl::StrCat("the credentials of ", remote_identifier_,
                                      " expired and were not refreshed in time"),
                         reason::kCredentialExpired);
}

std::string ChannelSession::PresentCredentials(std::span<const std::string> credentials) {
  std::string out;
  if (state_ != State::kEstablished) return out;
  wire::v1::CredentialSet set;
  for (const std::string& c :
       credentials.first(std::min(credentials.size(), identity::kMaxPresentedCredentials))) {
    set.add_credentials(c);
  }
  Seal(ChannelMessageType::kCredentials, set.SerializeAsString(), out);
  return out;
}

absl::Status ChannelSession::VerifyProof(absl::string_view payload) {
  wire::v1::IdentityProof proof;
  auto bad = [](absl::string_view why) {
    return ErrorWithReason(absl::StatusCode::kUnauthenticated,
                           absl::StrCat("the peer's identity proof is invalid: ", why),
                           reason::kBadIdentityProof);
  };
  if (!proof.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return bad("not an IdentityProof");
  }
  if (proof.identity_public_key().size() != vault::kEd25519PublicBytes) {
    return bad("the identity key is not 32 bytes");
  }
  // The signature must cover the static key this very handshake authenticated.
  if (!vault::Ed25519Verify(proof.identity_public_key(),
                            identity::StaticKeyBindingMessage(handshake_->remote_static()),
                            proof.static_key_signature())
           .ok()) {
    return bad("the signature over its static key does not verify");
  }
  // Who the key speaks for: its own identifier or, after rotations, its history's.
  auto history = identity::KeyHistoryOf(proof.identity_public_key(), proof.key_history());
  if (!history.ok()) return history.status();
  if (options_.key_histories != nullptr) {
    if (absl::Status known = options_.key_histories->Check(*history); !known.ok()) return known;
  }
  remote_public_key_ = proof.identity_public_key();
  remote_identifier_ = history->identifier;
  for (const std::string& feature : proof.features()) {
    if (feature == kFeatureBatch) peer_takes_batches_ = true;
    if (feature == kFeatureConfirmAck) peer_confirm_acks_ = options_.offer_confirm_ack;
  }
  peer_window_ = proof.receive_window();
  send_limit_ = peer_window_;
  receive_limit_ = options_.receive_window;
  std::vector<std::string> credentials(proof.credentials().begin(), proof.credentials().end());
  if (absl::Status admitted = AdmitCredentials(credentials); !admitted.ok()) return admitted;
  // Remembered only once admitted: a refused stranger's made-up identities leave nothing here.
  if (options_.key_histories != nullptr) return options_.key_histories->Remember(*history, Now());
  return absl::OkStatus();
}

absl::StatusOr<std::string> ChannelSession::Start() {
  if (role_ != Role::kInitiator || handshake_ == nullptr ||
      handshake_->next() != HandshakeState::Next::kWrite) {
    return absl::FailedPreconditionError("Start() is for a fresh initiator");
  }
  auto m1 = handshake_->WriteMessage("");
  if (!m1.ok()) return m1.status();
  return std::string(1, static_cast<char>(ChannelMessageType::kHandshake1)) + *m1;
}

ChannelSession::Step ChannelSession::OnMessage(absl::string_view bytes) {
  return OnMessage(bytes, nullptr);
}

ChannelSession::Step ChannelSession::OnMessageInPlace(std::string& bytes) {
  return OnMessage(bytes, &bytes);
}

ChannelSession::Step ChannelSession::OnMessage(absl::string_view bytes, std::string* in_place) {
  Step step;
  if (state_ == State::kClosed || state_ == State::kFailed) {
    step.error = Dropped(absl::StatusCode::kFailedPrecondition, "the channel is closed",
                         reason::kChannelClosed);
    return step;
  }
  if (bytes.empty()) {
    if (state_ == State::kHandshaking) {
      return Failed(ErrorWithReason(absl::StatusCode::kInvalidArgument, "empty channel message",
                                    reason::kHandshakeFailed),
                    true);
    }
    ++decrypt_failures_;
    step.error = Dropped(absl::StatusCode::kInvalidArgument, "empty channel message",
                         reason::kDecryptFailed);
    return step;
  }
  auto type = static_cast<ChannelMessageType>(bytes[0]);
  absl::string_view body = bytes.substr(1);
  switch (type) {
    case ChannelMessageType::kHandshake1:
    case ChannelMessageType::kHandshake2:
    case ChannelMessageType::kHandshake3:
    case ChannelMessageType::kHandshakeError:
      return OnHandshake(type, body);
    case ChannelMessageType::kData:
    case ChannelMessageType::kBatch:
    case ChannelMessageType::kConfirm:
    case ChannelMessageType::kClose:
    case ChannelMessageType::kConfirmAck:
    case ChannelMessageType::kCredit:
    case ChannelMessageType::kReceipt:
    case ChannelMessageType::kCredentials:
      return OnProtected(type, body, in_place);
  }
  if (state_ == State::kHandshaking) {
    return Failed(
        ErrorWithReason(absl::StatusCode::kInvalidArgument,
                        absl::StrCat("unknown channel message type ", static_cast<int>(type)),
                        reason::kHandshakeFailed),
        true);
  }
  ++decrypt_failures_;
  step.error = Dropped(absl::StatusCode::kInvalidArgument, "unknown channel message type",
                       reason::kDecryptFailed);
  return step;
}

ChannelSession::Step ChannelSession::Failed(absl::Status why, bool tell_peer) {
  state_ = State::kFailed;
  handshake_.reset();
  Step step;
  // The peer learns that it was refused, not this side's trust policy (which identities, which
  // file): that stays in the local error.
  if (tell_peer) {
    const std::string why_reason = ReasonOf(why);
    std::string told;
    if (why_reason == reason::kUntrustedIdentity) {
      told = "identity not trusted";
    } else if (why_reason == reason::kCredentialRequired) {
      told = absl::StrCat("a credential from a trusted authority is required (", why_reason, ")");
    } else if (absl::StartsWith(why_reason, "CREDENTIAL_")) {  // about the peer's own credential
      told = absl::StrCat(why.message(), " (", why_reason, ")");
    } else {
      told = std::string(why.message());
    }
    step.reply = HandshakeError(told);
  }
  step.error = std::move(why);
  return step;
}

std::string ChannelSession::HandshakeError(absl::string_view reason) {
  std::string out(1, static_cast<char>(ChannelMessageType::kHandshakeError));
  absl::string_view clipped = reason.substr(0, kMaxErrorReason);
  out.append(clipped.data(), clipped.size());
  return out;
}

void ChannelSession::Established() {
  auto keys = handshake_->Split();  // called only once the handshake is done
  send_ = std::move(keys->send);
  recv_ = std::move(keys->receive);
  handshake_.reset();
}

ChannelSession::Step ChannelSession::OnHandshake(ChannelMessageType type, absl::string_view body) {
  Step step;
  if (type == ChannelMessageType::kHandshakeError) {
    if (state_ != State::kHandshaking) {  // unauthenticated: cannot end a channel
      step.error = Dropped(absl::StatusCode::kInvalidArgument,
                           "handshake error on an established channel", reason::kDecryptFailed);
      return step;
    }
    std::string reason(body.substr(0, kMaxErrorReason));
    return Failed(ErrorWithReason(absl::StatusCode::kPermissionDenied,
                                  absl::StrCat("the peer refused the handshake: ", reason),
                                  reason::kPeerRefusedHandshake),
                  false);
  }
  if (state_ != State::kHandshaking || handshake_ == nullptr) {
    step.error = Dropped(absl::StatusCode::kFailedPrecondition,
                         "handshake message on an established channel", reason::kHandshakeFailed);
    return step;
  }
  if (type != expected_ || handshake_->next() != HandshakeState::Next::kRead) {
    return Failed(ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                                  absl::StrCat("handshake message ", static_cast<int>(type),
                                               " received in the wrong state"),
                                  reason::kHandshakeFailed),
                  true);
  }
  auto payload = handshake_->ReadMessage(body);
  if (!payload.ok()) return Failed(payload.status(), true);
  switch (type) {
    case ChannelMessageType::kHandshake1: {  // responder: answer with HS2 and our proof
      auto m2 = handshake_->WriteMessage(Proof());
      if (!m2.ok()) return Failed(m2.status(), true);
      step.reply = std::string(1, static_cast<char>(ChannelMessageType::kHandshake2)) + *m2;
      expected_ = ChannelMessageType::kHandshake3;
      return step;
    }
    case ChannelMessageType::kHandshake2: {  // initiator: check the responder, send HS3
      absl::Status trusted = VerifyProof(*payload);
      if (!trusted.ok()) return Failed(trusted, true);
      auto m3 = handshake_->WriteMessage(Proof());
      if (!m3.ok()) return Failed(m3.status(), true);
      step.reply = std::string(1, static_cast<char>(ChannelMessageType::kHandshake3)) + *m3;
      Established();  // keys are ready; established for the app once CONFIRM arrives
      return step;
    }
    case ChannelMessageType::kHandshake3: {  // responder: check the initiator, confirm
      absl::Status trusted = VerifyProof(*payload);
      if (!trusted.ok()) return Failed(trusted, true);
      Established();
      state_ = State::kEstablished;
      Seal(ChannelMessageType::kConfirm, "", step.reply);
      step.established = true;
      return step;
    }
    default:
      return Failed(absl::InternalError("unreachable"), true);
  }
}

void ChannelSession::Seal(ChannelMessageType type, absl::string_view plaintext, std::string& out) {
  uint64_t n = BeginSeal(type, plaintext.size(), out);
  size_t at = out.size();
  out.append(plaintext.data(), plaintext.size());
  FinishSeal(type, n, out, at);
}

uint64_t ChannelSession::BeginSeal(ChannelMessageType type, size_t plaintext_size,
                                   std::string& out) {
  ++sent_;
  uint64_t n = send_n_++;
  if (n > 0 && n % options_.rekey_interval == 0) send_.Rekey();
  out.reserve(out.size() + kDataOverhead + plaintext_size);
  out.push_back(static_cast<char>(type));
  PutCounter(n, out);
  return n;
}

void ChannelSession::FinishSeal(ChannelMessageType type, uint64_t n, std::string& out,
                                size_t plaintext_at) {
  char ad = static_cast<char>(type);
  send_.EncryptInPlace(n, absl::string_view(&ad, 1), out, plaintext_at);
}

absl::Status ChannelSession::Open(ChannelMessageType type, absl::string_view body,
                                  std::string* in_place, std::string& storage,
                                  absl::string_view& plaintext) {
  auto fail = [this](absl::string_view why) {
    ++decrypt_failures_;
    return Dropped(absl::StatusCode::kDataLoss, why, reason::kDecryptFailed);
  };
  if (!recv_.has_key()) return fail("no keys yet");
  if (body.size() < kCounterBytes + vault::kAeadTagBytes) return fail("message too short");
  uint64_t n = GetCounter(body);
  if (!window_.MayAccept(n)) {
    ++replays_;
    return Dropped(absl::StatusCode::kDataLoss, absl::StrCat("message ", n, " replayed or too old"),
                   reason::kReplayed);
  }
  char ad = static_cast<char>(type);
  absl::string_view ciphertext = body.substr(kCounterBytes);
  auto decrypt = [&](const CipherState& key) {
    if (in_place != nullptr) {  // `ciphertext` is the tail of `*in_place`
      const size_t offset = in_place->size() - ciphertext.size();
      if (!key.DecryptInPlace(n, absl::string_view(&ad, 1), *in_place, offset).ok()) return false;
      plaintext = absl::string_view(*in_place).substr(offset);
      return true;
    }
    if (!key.Decrypt(n, absl::string_view(&ad, 1), ciphertext, storage).ok()) return false;
    plaintext = storage;
    return true;
  };
  uint64_t epoch = n / options_.rekey_interval;
  if (epoch == recv_epoch_ || (epoch + 1 == recv_epoch_ && recv_previous_.has_key())) {
    const CipherState& key = epoch == recv_epoch_ ? recv_ : recv_previous_;
    if (!decrypt(key)) {
      return fail("decryption failed: tampered, forged or misdirected message");
    }
  } else if (epoch > recv_epoch_ && epoch - recv_epoch_ <= kMaxEpochJump) {
    CipherState next = recv_.Clone();
    for (uint64_t e = recv_epoch_; e < epoch; ++e) next.Rekey();
    if (!decrypt(next)) {
      return fail("decryption failed: tampered, forged or misdirected message");
    }
    recv_previous_ = epoch - recv_epoch_ == 1 ? std::move(recv_) : CipherState();
    recv_ = std::move(next);
    recv_epoch_ = epoch;
  } else {
    return fail("message from an expired or impossible key epoch");
  }
  window_.Accept(n);
  return absl::OkStatus();
}

ChannelSession::Step ChannelSession::OnProtected(ChannelMessageType type, absl::string_view body,
                                                 std::string* in_place) {
  Step step;
  bool confirm_pending =
      state_ == State::kHandshaking && role_ == Role::kInitiator && recv_.has_key();
  if (state_ != State::kEstablished && !confirm_pending) {
    if (state_ == State::kHandshaking) {
      return Failed(ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                                    "protected message before the handshake finished",
                                    reason::kHandshakeFailed),
                    true);
    }
    step.error = Dropped(absl::StatusCode::kFailedPrecondition, "channel not established",
                         reason::kDecryptFailed);
    return step;
  }
  std::string storage;
  absl::string_view plaintext;
  absl::Status opened = Open(type, body, in_place, storage, plaintext);
  if (!opened.ok()) {
    step.error = std::move(opened);
    return step;
  }
  // Anything authenticated from the initiator confirms it has the channel.
  if (role_ == Role::kResponder) confirmed_ = true;
  ++authenticated_;
  switch (type) {
    case ChannelMessageType::kConfirm:
      if (role_ != Role::kInitiator) {  // the responder's own: reflected back at it
        ++decrypt_failures_;
        step.error = Dropped(absl::StatusCode::kInvalidArgument, "CONFIRM from the initiator",
                             reason::kDecryptFailed);
        return step;
      }
      if (state_ == State::kHandshaking) {
        state_ = State::kEstablished;
        step.established = true;
        if (peer_confirm_acks_) Seal(ChannelMessageType::kConfirmAck, "", step.reply);
      }
      return step;
    case ChannelMessageType::kConfirmAck:
      if (role_ != Role::kResponder) {
        ++decrypt_failures_;
        step.error = Dropped(absl::StatusCode::kInvalidArgument, "ACK from the responder",
                             reason::kDecryptFailed);
      }
      return step;
    case ChannelMessageType::kClose:
      state_ = State::kClosed;
      step.closed = true;
      return step;
    default:
      break;
  }
  if (state_ != State::kEstablished) {  // DATA before CONFIRM: the responder cannot send it
    step.error = Dropped(absl::StatusCode::kFailedPrecondition, "data before confirmation",
                         reason::kDecryptFailed);
    return step;
  }
  if (type == ChannelMessageType::kCredit) {
    if (!flow_controlled() || plaintext.size() != kCounterBytes) {
      ++decrypt_failures_;
      step.error = Dropped(absl::StatusCode::kInvalidArgument,
                           flow_controlled() ? "CREDIT of the wrong size"
                                             : "CREDIT on a channel without flow control",
                           reason::kDecryptFailed);
      return step;
    }
    uint64_t limit = GetCounter(plaintext);
    if (limit > send_limit_) {
      send_limit_ = limit;
      step.credited = true;
    }
    return step;
  }
  if (type == ChannelMessageType::kCredentials) {
    wire::v1::CredentialSet set;
    if (!set.ParseFromArray(plaintext.data(), static_cast<int>(plaintext.size()))) {
      ++decrypt_failures_;
      step.error = Dropped(absl::StatusCode::kInvalidArgument, "CREDENTIALS that do not decode",
                           reason::kDecryptFailed);
      return step;
    }
    std::vector<std::string> credentials(set.credentials().begin(), set.credentials().end());
    // From the authenticated peer itself: a bad credential, or one the policy no longer
    // admits, ends the channel (its far end is told why in the CLOSE that follows).
    if (absl::Status admitted = AdmitCredentials(credentials); !admitted.ok()) {
      Seal(ChannelMessageType::kClose, "", step.reply);  // the far end hears it closed
      state_ = State::kFailed;
      step.error = absl::Status(
          admitted.code(), absl::StrCat("refreshed credentials refused: ", admitted.message()));
      step.error = WithReason(std::move(step.error), ReasonOf(admitted));
      return step;
    }
    step.credentials_refreshed = true;
    return step;
  }
  if (type == ChannelMessageType::kReceipt) {
    wire::v1::ChannelReceipts receipts;
    if (!receipts.ParseFromArray(plaintext.data(), static_cast<int>(plaintext.size()))) {
      ++decrypt_failures_;
      step.error = Dropped(absl::StatusCode::kInvalidArgument, "RECEIPT that does not decode",
                           reason::kDecryptFailed);
      return step;
    }
    for (const auto& range : receipts.delivered()) {
      if (range.count() == 0 || range.first() == 0 ||
          range.first() > std::numeric_limits<uint64_t>::max() - range.count()) {
        continue;  // (names no message this side sent)
      }
      step.receipts.push_back({range.first(), range.count(), absl::OkStatus()});
    }
    for (const auto& failed : receipts.failed()) {
      if (failed.id() == 0) continue;
      const auto code = failed.code() >= 1 && failed.code() <= 16
                            ? static_cast<absl::StatusCode>(failed.code())
                            : absl::StatusCode::kUnknown;
      step.receipts.push_back(
          {failed.id(), 1,
           ErrorWithReason(code, absl::string_view(failed.message()).substr(0, 256),
                           absl::string_view(failed.reason()).substr(0, 64))});
    }
    step.probed = receipts.probe();
    return step;
  }
  // A DATA or BATCH record: within the limit this side granted. The peer may overshoot it by
  // one record, and records may arrive out of order; a whole window past it is no accident.
  const uint64_t record_bytes = 1 + body.size();
  if (flow_controlled()) {
    received_bytes_ += record_bytes;
    if (received_bytes_ > receive_limit_ + options_.receive_window) {
      return Failed(ErrorWithReason(absl::StatusCode::kResourceExhausted,
                                    absl::StrCat("the peer sent ", received_bytes_,
                                                 " bytes where this side granted ", receive_limit_,
                                                 ": it ignores flow control"),
                                    reason::kFlowControlViolated),
                    false);
    }
  }
  step.record_bytes = record_bytes;
  if (type == ChannelMessageType::kBatch) {
    absl::Status decoded = DecodeChannelBatch(plaintext, step.deliveries, &step.receipt_ids);
    if (!decoded.ok()) {
      ++decrypt_failures_;
      step.deliveries.clear();
      step.receipt_ids.clear();
      step.error = std::move(decoded);
      return step;
    }
    received_ += step.deliveries.size();
    return step;
  }
  auto inner = core::DecodeMessage(plaintext);
  if (!inner.ok()) {
    ++decrypt_failures_;
    step.error = inner.status();
    return step;
  }
  ++received_;
  step.deliveries.push_back(*std::move(inner));
  return step;
}

absl::Status ChannelSession::Encrypt(const core::Route& onward, const core::Route& return_route,
                                     absl::string_view payload, std::string& out,
                                     const absl::Status& refusal, uint64_t path_tag) {
  if (state_ != State::kEstablished) {
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                           "the secure channel is not established", reason::kChannelNotEstablished);
  }
  // The plaintext is the encoded inner message, written into `out` and encrypted there.
  // Routes are small: reserve for the payload and some, rather than encode them twice.
  const size_t before = out.size();
  uint64_t n = BeginSeal(ChannelMessageType::kData, payload.size() + 256, out);
  size_t at = out.size();
  core::AppendEncodedMessage(onward, return_route, payload, out, refusal, path_tag);
  FinishSeal(ChannelMessageType::kData, n, out, at);
  sent_bytes_ += out.size() - before;
  return absl::OkStatus();
}

size_t ChannelSession::BatchEntrySize(const core::Message& msg) {
  // The payload with its tag and length, plus the routes; a new group costs at most this much
  // more (the group's own tag and length are within the 16 bytes; its path tag, 11 at most).
  size_t routes = msg.path_tag != 0 ? 11 : 0;
  for (const core::Route* r : {&msg.onward, &msg.return_route}) {
    for (const core::Address& hop : r->hops()) routes += hop.value().size() + 8;
  }
  return msg.payload.size() + 16 + routes;
}

absl::Status ChannelSession::EncryptBatch(std::span<core::Message> msgs, std::string& out,
                                          uint64_t* first_receipt_id) {
  if (state_ != State::kEstablished) {
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                           "the secure channel is not established", reason::kChannelNotEstablished);
  }
  if (!peer_takes_batches_) {
    return ErrorWithReason(absl::StatusCode::kFailedPrecondition,
                           "the peer does not take BATCH messages", reason::kBatchNotSupported);
  }
  wire::v1::ChannelBatch batch;
  wire::v1::ChannelBatchGroup* group = nullptr;
  const core::Message* group_first = nullptr;
  if (first_receipt_id != nullptr) *first_receipt_id = 0;
  for (core::Message& msg : msgs) {
    if (group == nullptr || msg.onward != group_first->onward ||
        msg.return_route != group_first->return_route ||
        msg.want_delivery != group_first->want_delivery || msg.path_tag != group_first->path_tag) {
      group = batch.add_groups();
      group->set_path_tag(msg.path_tag);
      core::RouteToWire(msg.onward, group->mutable_onward_route());
      core::RouteToWire(msg.return_route, group->mutable_return_route());
      group_first = &msg;
      if (msg.want_delivery) group->set_first_receipt_id(next_receipt_id_);
    }
    if (msg.want_delivery) {
      if (first_receipt_id != nullptr && *first_receipt_id == 0) {
        *first_receipt_id = next_receipt_id_;
      }
      ++next_receipt_id_;
    }
    group->add_payloads(std::move(msg.payload));
  }
  const size_t size = batch.ByteSizeLong();
  const size_t before = out.size();
  uint64_t n = BeginSeal(ChannelMessageType::kBatch, size, out);
  size_t at = out.size();
  out.resize(at + size);
  batch.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out.data() + at));
  FinishSeal(ChannelMessageType::kBatch, n, out, at);
  sent_bytes_ += out.size() - before;
  sent_ += msgs.size() - 1;
  return absl::OkStatus();
}

std::string ChannelSession::Receipts(std::span<const std::pair<uint64_t, absl::Status>> outcomes,
                                     bool probe) {
  std::string out;
  if (state_ != State::kEstablished) return out;
  wire::v1::ChannelReceipts receipts;
  receipts.set_probe(probe);
  std::vector<uint64_t> delivered;
  for (const auto& [id, status] : outcomes) {
    if (status.ok()) {
      delivered.push_back(id);
      continue;
    }
    auto* failed = receipts.add_failed();
    failed->set_id(id);
    failed->set_code(static_cast<uint32_t>(status.code()));
    failed->set_reason(std::string(absl::string_view(ReasonOf(status)).substr(0, 64)));
    failed->set_message(std::string(status.message().substr(0, 256)));
  }
  std::sort(delivered.begin(), delivered.end());
  for (uint64_t id : delivered) {
    const int n = receipts.delivered_size();
    if (n > 0) {
      auto* last = receipts.mutable_delivered(n - 1);
      if (last->first() + last->count() == id) {
        last->set_count(last->count() + 1);
        continue;
      }
    }
    auto* range = receipts.add_delivered();
    range->set_first(id);
    range->set_count(1);
  }
  Seal(ChannelMessageType::kReceipt, receipts.SerializeAsString(), out);
  return out;
}

uint64_t ChannelSession::send_credit() const {
  if (!flow_controlled()) return std::numeric_limits<uint64_t>::max();
  return sent_bytes_ < send_limit_ ? send_limit_ - sent_bytes_ : 0;
}

std::string ChannelSession::CreditFor(uint64_t consumed) {
  std::string out;
  if (!flow_controlled() || state_ != State::kEstablished) return out;
  const uint64_t limit = consumed + options_.receive_window;
  if (limit <= receive_limit_) return out;
  receive_limit_ = limit;
  std::string value;
  PutCounter(limit, value);
  Seal(ChannelMessageType::kCredit, value, out);
  return out;
}

std::string ChannelSession::Close() {
  std::string out;
  if (state_ == State::kEstablished) Seal(ChannelMessageType::kClose, "", out);
  state_ = State::kClosed;
  return out;
}

}  // namespace veil::channel
