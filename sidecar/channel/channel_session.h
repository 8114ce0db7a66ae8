// ChannelSession: one end of a secure channel as a pure protocol — bytes in, bytes out, no
// I/O, no clock. It runs the Noise XX handshake with identity binding, then protects messages.
// docs/protocol.md ("Secure channels") specifies the messages:
//
//   HS1 0x01 | noise message 1          initiator -> responder
//   HS2 0x02 | noise message 2          carries the responder's IdentityProof
//   HS3 0x03 | noise message 3          carries the initiator's IdentityProof
//   ERR 0x04 | reason (UTF-8)           a refused handshake; unauthenticated, so it only ever
//                                       ends a handshake in progress, never a channel
//   DATA 0x10 | counter:u64 BE | AEAD   an app message (an encoded TransportMessage)
//   CONFIRM 0x11 | counter | AEAD("")   responder -> initiator: identity accepted
//   CLOSE 0x12 | counter | AEAD("")     either way: the channel is closed
//   BATCH 0x13 | counter | AEAD         several app messages (an encoded ChannelBatch)
//   ACK 0x14 | counter | AEAD("")       initiator -> responder: CONFIRM arrived (only to a
//                                       responder whose proof lists "confirm-ack")
//   CREDIT 0x15 | counter | AEAD(u64 BE) either way: the receiver's new limit on the bytes of
//                                       DATA and BATCH records it takes (flow control)
//   RECEIPT 0x16 | counter | AEAD       either way: the outcome of messages the peer sent with
//                                       receipt ids (an encoded ChannelReceipts)
//   CREDENTIALS 0x17 | counter | AEAD   either way: the sender's refreshed credentials (an
//                                       encoded CredentialSet), replacing those of its proof
//
// Credentials: each proof may carry the sender's credentials. A side that trusts authorities
// verifies them (a bad one fails the handshake with its reason) and checks its trust policy on
// the identifier and their attributes; CREDENTIALS later replaces them and the policy is
// checked again (a refusal ends the channel), as it is when they expire (CheckExpiry).
//
// Flow control (when both proofs give a receive_window): a side sends DATA/BATCH records while
// the bytes it has sent are below the peer's limit (the window at first, then what CREDIT
// says); a record may overshoot it. The receiver grants more as its deliveries are handed on
// (CreditFor), and ends a channel whose peer goes a whole window past its limit.
//
// AEAD is ChaCha20-Poly1305 under the direction's key with nonce = counter and the type byte as
// associated data. Counters start at 0 per direction and never repeat; the receiver keeps a
// sliding ReplayWindow. Every `rekey_interval` messages both sides apply Noise REKEY, deriving
// the key of epoch counter / rekey_interval; the receiver also keeps the previous epoch's key
// so reordered messages across a boundary still open.
//
// Thread-safety: not synchronised; the owning worker drives it from its strand.
#ifndef VEIL_SIDECAR_CHANNEL_CHANNEL_SESSION_H_
#define VEIL_SIDECAR_CHANNEL_CHANNEL_SESSION_H_

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "sidecar/channel/noise.h"
#include "sidecar/channel/replay_window.h"
#include "sidecar/channel/trust_policy.h"
#include "sidecar/core/message.h"
#include "sidecar/identity/credential.h"
#include "sidecar/identity/identity.h"

namespace veil::channel {

// The project-specific Noise prologue.
inline constexpr char kPrologue[] = "veil/v1 secure channel";

enum class ChannelMessageType : uint8_t {
  kHandshake1 = 0x01,
  kHandshake2 = 0x02,
  kHandshake3 = 0x03,
  kHandshakeError = 0x04,
  kData = 0x10,
  kConfirm = 0x11,
  kClose = 0x12,
  kBatch = 0x13,
  kConfirmAck = 0x14,
  kCredit = 0x15,
  kReceipt = 0x16,
  kCredentials = 0x17,
};

// The outcome of messages `first` .. `first + count - 1` sent with receipt ids, as the peer
// reports it: OK when handed on (for an app: acked), else the far node's status.
struct ReceiptOutcome {
  uint64_t first = 0;
  uint64_t count = 1;
  absl::Status status;
};

// The feature a peer lists in its IdentityProof when it takes BATCH messages.
inline constexpr absl::string_view kFeatureBatch = "batch";
// The feature a peer lists when it answers CONFIRM with ACK (initiator) and expects that
// answer (responder): a responder then ends a channel whose initiator never confirms.
inline constexpr absl::string_view kFeatureConfirmAck = "confirm-ack";

// Bytes a DATA message adds to the encoded inner message.
inline constexpr size_t kDataOverhead = 1 + 8 + vault::kAeadTagBytes;

// The default per-channel receive window: enough to keep a hub path full (less costs
// throughput: measured in docs/performance.md), and well under a connection's limit on
// unsettled bytes (64 MiB), so one stalled channel does not stop a node reading the connection
// it shares.
inline constexpr uint64_t kDefaultReceiveWindow = 16 * 1024 * 1024;

struct SessionOptions {
  uint64_t rekey_interval = uint64_t{1} << 16;
  // List "batch" in this side's IdentityProof (off only to act as an older node, in tests).
  bool offer_batch = true;
  // List "confirm-ack" (off only to act as an older node, in tests).
  bool offer_confirm_ack = true;
  // The bytes of DATA and BATCH records this side takes before it grants more (its proof's
  // receive_window). 0: no flow control, either way (as an older node).
  uint64_t receive_window = kDefaultReceiveWindow;
  // The credentials this side presents (encoded wire Credentials about its identity).
  std::shared_ptr<const std::vector<std::string>> credentials;
  // The authorities whose credentials this side takes. Null or empty: the peer's credentials
  // are neither checked nor used (the policy sees no attributes).
  std::shared_ptr<const absl::flat_hash_set<std::string>> trusted_authorities;
  // Unix seconds now, for credential validity; null: the system clock.
  std::function<int64_t()> unix_now;
  int64_t clock_skew = identity::kDefaultClockSkewSeconds;
  // What this node saw of peers' key rotations: a peer presenting a key it rotated away from,
  // or a history that forks from the one seen, is refused. Null: not checked.
  identity::KnownKeyHistories* key_histories = nullptr;
};

// Decodes the plaintext of a BATCH (a ChannelBatch) and appends its messages to `out`, in order
// (routes and payloads; no sender, no receipt). With `receipt_ids`, appends each message's
// receipt id there (0: none wanted) when any message has one. INVALID_ARGUMENT
// (MALFORMED_FRAME) for bytes that are not a ChannelBatch, no group, a group without payloads
// or with an empty onward route, a route over kMaxRouteHops hops, an invalid address, or
// receipt ids past 2^64; `out` may then hold part.
absl::Status DecodeChannelBatch(absl::string_view plaintext, std::vector<core::Message>& out,
                                std::vector<uint64_t>* receipt_ids = nullptr);

class ChannelSession {
 public:
  enum class Role { kInitiator, kResponder };
  enum class State { kHandshaking, kEstablished, kClosed, kFailed };

  // What the caller does after OnMessage.
  struct Step {
    std::string reply;  // send these bytes to the peer, if not empty
    // Decrypted app messages to route on, in order: one from DATA, several from BATCH.
    std::vector<core::Message> deliveries;
    bool established = false;  // the channel became established now
    bool closed = false;       // the peer closed the channel now
    bool credited = false;     // the peer raised its limit (CREDIT): MaySend() may have changed
    // The bytes of the DATA or BATCH record the deliveries came in: grant them back with
    // CreditFor once the deliveries were handed on. 0 for anything else.
    uint64_t record_bytes = 0;
    // Each delivery's receipt id (0: none wanted), when any has one: tell the peer its outcome
    // with Receipts().
    std::vector<uint64_t> receipt_ids;
    // From a RECEIPT: the outcome of messages this side sent with receipt ids.
    std::vector<ReceiptOutcome> receipts;
    bool probed = false;  // the RECEIPT asks for an answer: send Receipts({}) back
    // CREDENTIALS arrived, verified and admitted: remote_attributes() changed. (Refused, the
    // session fails and `reply` holds a CLOSE for the far end.)
    bool credentials_refreshed = false;
    // Not OK: the message was refused. If state() is kFailed the channel failed (terminal: the
    // handshake failed, or the peer sent a window past its limit); otherwise the message was
    // dropped (counted) and the channel stays up.
    absl::Status error;
  };

  // `policy` must outlive the session.
  ChannelSession(
      Role role, std::shared_ptr<const identity::Identity> local, const TrustPolicy& policy,
      SessionOptions options = {},
      std::optional<vault::X25519KeyPair> fixed_ephemeral_for_testing_only = std::nullopt);

  ~ChannelSession();
  ChannelSession(const ChannelSession&) = delete;
  ChannelSession& operator=(const ChannelSession&) = delete;

  // Initiator only, once: the HS1 message.
  absl::StatusOr<std::string> Start();
  Step OnMessage(absl::string_view bytes);
  // The same, but a protected message is decrypted where it is: `bytes` is the caller's to
  // give up (afterwards it holds plaintext, or, when the message was refused, what it held or
  // zeroes). The deliveries are copies; nothing refers to `bytes` once this returns.
  Step OnMessageInPlace(std::string& bytes);

  // Appends a DATA message carrying the app message (routes for the far side, payload), or a
  // refusal notice (`refusal` not OK, payload empty): the far side's node refusing what came
  // out of this channel, told back through it. FAILED_PRECONDITION unless established.
  absl::Status Encrypt(const core::Route& onward, const core::Route& return_route,
                       absl::string_view payload, std::string& out,
                       const absl::Status& refusal = absl::OkStatus(), uint64_t path_tag = 0);
  // Appends one BATCH message carrying all of `msgs` in order (their routes for the far side
  // and payloads; the payloads are moved out, the rest is left). FAILED_PRECONDITION unless
  // established, or when the peer did not say it takes batches (peer_takes_batches()). `msgs`
  // must not be empty. The messages that want_delivery get receipt ids, consecutive in their
  // order; the first is stored in `*first_receipt_id` (when given; 0 when none wants one).
  absl::Status EncryptBatch(std::span<core::Message> msgs, std::string& out,
                            uint64_t* first_receipt_id = nullptr);
  // A RECEIPT message telling the peer the outcome of messages it sent with receipt ids (a
  // status's message is cut to 256 bytes, its reason to 64). Empty unless established.
  // With `probe`, asks the peer to answer with a RECEIPT (the sender awaits receipts and has
  // heard nothing for a while).
  std::string Receipts(std::span<const std::pair<uint64_t, absl::Status>> outcomes,
                       bool probe = false);
  // At most what `msg` adds to a BATCH plaintext (payload, routes, framing), to size records.
  static size_t BatchEntrySize(const core::Message& msg);
  // A CLOSE message; the session is closed afterwards. Empty unless established.
  std::string Close();
  // A CREDENTIALS message presenting `credentials` (this side's, refreshed; at most
  // kMaxPresentedCredentials). Empty unless established.
  std::string PresentCredentials(std::span<const std::string> credentials);
  // When the peer's credentials (from its proof or a later CREDENTIALS) have expired — past
  // remote_credentials_expire_at() plus the skew — drops their attributes and checks the trust
  // policy again. Not OK (CREDENTIAL_EXPIRED): the policy now refuses the peer; close the
  // channel. OK otherwise (nothing expired, or the policy still admits it).
  absl::Status CheckExpiry();

  // Flow control is on: both proofs gave a receive window.
  bool flow_controlled() const { return options_.receive_window > 0 && peer_window_ > 0; }
  // A DATA or BATCH record may go now: flow control is off, or the bytes sent are below the
  // peer's limit.
  bool MaySend() const { return !flow_controlled() || sent_bytes_ < send_limit_; }
  // The bytes that may still go before the peer's limit (0 when at or past it; the largest
  // uint64 without flow control).
  uint64_t send_credit() const;
  // Bytes of DATA and BATCH records sent, and the peer's limit on them.
  uint64_t sent_bytes() const { return sent_bytes_; }
  uint64_t send_limit() const { return send_limit_; }
  // A CREDIT message raising this side's limit to `consumed` (the record bytes of all the
  // deliveries handed on so far) plus the window; empty when flow control is off, the channel
  // is not established, or the limit would not rise.
  std::string CreditFor(uint64_t consumed);
  // The record bytes received, and the limit this side last granted.
  uint64_t received_bytes() const { return received_bytes_; }
  uint64_t receive_limit() const { return receive_limit_; }
  // This side's window (its proof's receive_window).
  uint64_t receive_window() const { return options_.receive_window; }
  // An ERR message carrying `reason` (truncated to 200 bytes).
  static std::string HandshakeError(absl::string_view reason);

  State state() const { return state_; }
  Role role() const { return role_; }
  // The authenticated remote identity, once its proof verified.
  const std::string& remote_identifier() const { return remote_identifier_; }
  const std::string& remote_public_key() const { return remote_public_key_; }
  // The attributes the peer's verified credentials give (null when it presented none, or this
  // side trusts no authority), and when the first of them expires (0: none).
  const std::shared_ptr<const identity::Attributes>& remote_attributes() const {
    return remote_attributes_;
  }
  int64_t remote_credentials_expire_at() const { return remote_expire_at_; }
  // The moment CheckExpiry would act: remote_credentials_expire_at() plus the skew (0: none).
  int64_t credentials_deadline() const {
    return remote_expire_at_ == 0 ? 0 : remote_expire_at_ + options_.clock_skew;
  }
  // The peer's proof said it takes BATCH messages (older nodes do not).
  bool peer_takes_batches() const { return peer_takes_batches_; }
  // Responder: established, and the initiator (which said it would) has not yet sent anything
  // authenticated since CONFIRM.
  bool awaiting_confirmation() const {
    return role_ == Role::kResponder && state_ == State::kEstablished && peer_confirm_acks_ &&
           !confirmed_;
  }
  uint64_t decrypt_failures() const { return decrypt_failures_; }
  uint64_t replays() const { return replays_; }
  // Channel messages sealed, counting each app message of a BATCH (and CONFIRM/CLOSE).
  uint64_t messages_sent() const { return sent_; }
  uint64_t messages_received() const { return received_; }
  // Protected messages of every kind that authenticated (DATA, BATCH, CREDIT, RECEIPT, ...).
  uint64_t authenticated_messages() const { return authenticated_; }

 private:
  std::string Proof() const;
  absl::Status VerifyProof(absl::string_view payload);
  // Verifies presented credentials and checks the policy with their attributes; on success
  // they become the remote's.
  absl::Status AdmitCredentials(std::span<const std::string> credentials);
  int64_t Now() const;
  Step OnHandshake(ChannelMessageType type, absl::string_view body);
  Step OnMessage(absl::string_view bytes, std::string* in_place);
  // `in_place`, when set, is the whole message that `body` is the tail of.
  Step OnProtected(ChannelMessageType type, absl::string_view body, std::string* in_place);
  Step Failed(absl::Status why, bool tell_peer);
  void Established();
  void Seal(ChannelMessageType type, absl::string_view plaintext, std::string& out);
  // Seal in two steps, for a plaintext written straight into `out` and encrypted there:
  // BeginSeal appends the type and counter (and reserves room for about `plaintext_size` bytes)
  // and returns the counter; the caller appends the plaintext; FinishSeal encrypts it in place.
  uint64_t BeginSeal(ChannelMessageType type, size_t plaintext_size, std::string& out);
  void FinishSeal(ChannelMessageType type, uint64_t n, std::string& out, size_t plaintext_at);
  // Checks the counter and opens `body`; `plaintext` views the result, which lives in
  // `storage` or, with `in_place` set, in `*in_place` (decrypted there).
  absl::Status Open(ChannelMessageType type, absl::string_view body, std::string* in_place,
                    std::string& storage, absl::string_view& plaintext);

  const Role role_;
  const std::shared_ptr<const identity::Identity> local_;
  const TrustPolicy& policy_;
  const SessionOptions options_;
  class IdentityKey;
  std::unique_ptr<IdentityKey> static_key_;
  std::unique_ptr<HandshakeState> handshake_;
  State state_ = State::kHandshaking;
  // The handshake message expected next.
  ChannelMessageType expected_;
  std::string remote_identifier_, remote_public_key_;
  std::shared_ptr<const identity::Attributes> remote_attributes_;
  int64_t remote_expire_at_ = 0;
  bool peer_takes_batches_ = false;
  bool peer_confirm_acks_ = false;
  uint64_t peer_window_ = 0;  // the peer's proof's receive_window
  // Flow control: record bytes sent and the peer's limit; received and this side's limit.
  uint64_t sent_bytes_ = 0, send_limit_ = 0;
  uint64_t received_bytes_ = 0, receive_limit_ = 0;
  uint64_t next_receipt_id_ = 1;
  uint64_t authenticated_ = 0;
  bool confirmed_ = false;  // responder: something authenticated came after CONFIRM

  CipherState send_;
  uint64_t send_n_ = 0;
  uint64_t sent_ = 0;
  CipherState recv_, recv_previous_;
  uint64_t recv_epoch_ = 0;
  ReplayWindow window_;
  uint64_t decrypt_failures_ = 0, replays_ = 0, received_ = 0;
};

}  // namespace veil::channel

#endif  // VEIL_SIDECAR_CHANNEL_CHANNEL_SESSION_H_
