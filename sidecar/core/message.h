// Message: what workers exchange — onward and return routes, a payload, what this node knows of
// the sender, and a Receipt that tells the original sender whether the message was handed on.
//
// A Receipt must be settled exactly once. Whoever hands the message on for good (an app's
// mailbox that queued it, a connection that wrote it to its socket) settles it OK; whoever
// cannot hand it on settles it with the error. A Receipt destroyed unsettled reports ABORTED
// (reason MESSAGE_DROPPED), so no path can lose a message silently.
//
// Thread-safety: Message is a move-only value; a Receipt may be settled from any thread.
#ifndef VEIL_SIDECAR_CORE_MESSAGE_H_
#define VEIL_SIDECAR_CORE_MESSAGE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "sidecar/core/route.h"

namespace veil::core {

// Told the outcome of each message it tracks. Implementations must be thread-safe.
class SendTracker {
 public:
  virtual ~SendTracker() = default;
  // Called exactly once per tracked message (by `index`), from any thread: OK when the message
  // was handed on, otherwise why not.
  virtual void Complete(uint32_t index, absl::Status status) = 0;
};

// The obligation to report one message's outcome to its tracker (if any).
class Receipt {
 public:
  Receipt() = default;
  Receipt(std::shared_ptr<SendTracker> tracker, uint32_t index)
      : tracker_(std::move(tracker)), index_(index) {}
  Receipt(Receipt&& other) noexcept = default;
  Receipt& operator=(Receipt&& other) noexcept;
  Receipt(const Receipt&) = delete;
  Receipt& operator=(const Receipt&) = delete;
  ~Receipt();

  // Reports `status` to the tracker, once; later calls do nothing.
  void Settle(absl::Status status);
  // True when there is a tracker still waiting for the outcome.
  bool pending() const { return tracker_ != nullptr; }

 private:
  std::shared_ptr<SendTracker> tracker_;
  uint32_t index_ = 0;
};

// Receipts for `n` parts of what `whole` stands for (e.g. the messages that came in one channel
// record): `whole` settles once every part has — OK when all were, otherwise with the first
// error. When `whole` is not pending the parts are empty receipts.
std::vector<Receipt> SplitReceipt(Receipt whole, size_t n);

// One receipt standing for all of `parts` (e.g. the messages sealed into one channel record):
// settling it settles each part with the same status. Empty when no part is pending.
Receipt JoinReceipts(std::vector<Receipt> parts);

// A message's provenance: what this node knows of where it came from. Set by this node only
// (the app API, the connection that read it, the secure channel that decrypted it, a relay
// forwarder); never crosses the wire. The router checks it against the next worker's
// Worker::Admit before handing the message on (docs/security.md, "Access control").
struct SenderInfo {
  enum class Origin {
    kLocal,          // a worker of this node (a channel's encryptor, a listener's reply, ...)
    kApp,            // a local app, through the API
    kTransport,      // read from a transport connection: unauthenticated
    kSecureChannel,  // decrypted out of a secure channel: `identifier` is authenticated
  };
  Origin origin = Origin::kLocal;
  // The id (Worker::id) of the worker the message arrived through: for kTransport the
  // connection it was read from, for kSecureChannel the channel's encryptor; 0 otherwise.
  uint64_t via = 0;
  // kTransport: a relay forwarder of this node handed it to its owner's connection.
  bool relayed = false;
  std::string identifier;  // authenticated remote identifier, for kSecureChannel
  std::string channel;     // local address of the secure channel, for kSecureChannel
  // kSecureChannel: the attributes the remote's verified credentials give (null: none), shared
  // by everything out of the channel until the credentials change.
  std::shared_ptr<const std::map<std::string, std::string, std::less<>>> attributes;
};

// For logs and errors: "a local app", "the network (connection _tcp_…)", ...
const char* OriginName(SenderInfo::Origin origin);

struct Message {
  Route onward;         // remaining hops; the next hop first
  Route return_route;   // the way back to the sender
  std::string payload;  // opaque bytes
  SenderInfo sender;
  Receipt receipt;
  // Set by a sender that bounds what it has on the way itself: a connection's reader (it paces
  // itself by this message's receipt, and stops reading its source while too many of its
  // messages are unsettled), a secure channel under flow control for what it decrypted (the
  // far end's limit), a portal session (its window). Queues take a paced message even over
  // their limit instead of refusing it, and settle it only once they hand it on, so
  // backpressure reaches the original sender and nothing is dropped in between; memory stays
  // bounded by the senders' limits.
  bool paced = false;
  // Not OK on a refusal notice (payload empty): a node on the way could not hand on a message
  // this node sent, and says why. Routed only to workers that TakeRefusals().
  absl::Status refusal;
  // The sender wants to learn when the message was delivered (for an app: acked), not only
  // handed on: a secure channel it goes into asks its far end for a delivery receipt, and a
  // local app's queue settles it only when the app acks. Never crosses the wire as such.
  bool want_delivery = false;
  // The sending secure channel's random path tag (0: none). Crosses the wire and every hop
  // unchanged; a refusal notice echoes the tag of the message it is about, and a channel
  // believes only notices that echo its own (docs/protocol.md, "Refusal notices").
  uint64_t path_tag = 0;
};

}  // namespace veil::core

#endif  // VEIL_SIDECAR_CORE_MESSAGE_H_
