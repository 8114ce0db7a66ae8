// RelayClient: a sidecar's session with a hub for one relay. It opens a secure channel to the
// hub's listener ("<hub route>/service/hub"), registers the relay through it, then sends a
// heartbeat every `heartbeat_interval`. When the hub or the connection dies (a heartbeat gets
// no answer within `heartbeat_timeout`, or cannot be sent), it closes the channel and starts
// over after a capped exponential backoff with jitter — re-registering the same name, which
// the hub keeps reserved for this identity. A refusal (name taken, not allowed, limits) stops it
// with the error.
//
// Thread-safety: public methods may be called from any thread; the session runs on its strand.
#ifndef VEIL_SIDECAR_RELAY_RELAY_CLIENT_H_
#define VEIL_SIDECAR_RELAY_RELAY_CLIENT_H_

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>

#include "absl/base/thread_annotations.h"
#include "boost/asio/steady_timer.hpp"
#include "sidecar/channel/secure_channel_manager.h"
#include "sidecar/common/mutex.h"
#include "sidecar/relay/backoff.h"
#include "veil/wire/v1/relay.pb.h"

namespace veil::relay {

// Bounds how many of one sidecar's relay sessions (re)connect at once. After a hub dies,
// thousands of sessions reconnect together; handshakes beyond what the next hub answers in time
// would time out and back off, again and again (a thundering herd). The rest wait their turn,
// in order. Thread-safety: any thread.
class ConnectGate {
 public:
  explicit ConnectGate(size_t slots) : free_(slots) {}
  // Runs `go` (on this thread, or later on the one that frees a slot) once a slot is free. It
  // returns whether it took the slot (then the caller's until Leave) or not (its session is
  // gone: the slot passes on at once, without a call of Leave that could nest).
  void Enter(std::function<bool()> go);
  void Leave();

 private:
  veil::Mutex mu_;
  size_t free_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<bool()>> waiting_ ABSL_GUARDED_BY(mu_);
};

struct RelayClientOptions {
  std::chrono::milliseconds heartbeat_interval{5000};
  std::chrono::milliseconds heartbeat_timeout{5000};
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{30000};
  // Sessions of one sidecar connecting (handshake and registration) at once.
  size_t max_connecting = 32;
};

// What the API shows of a relay.
struct RelayStatus {
  enum class State { kConnecting, kUp, kReconnecting, kFailed, kStopped };
  std::string name;     // registered name ("" until the hub assigned one)
  std::string address;  // on the hub: "forward_to_<name>"
  std::string hub_route;
  std::string identity;
  std::string hub_identifier;
  State state = State::kConnecting;
  std::string last_error;
  uint64_t registrations = 0;  // successful (re-)registrations
  std::string channel;         // local address of the channel to the hub
};

class RelayClient : public std::enable_shared_from_this<RelayClient> {
 public:
  using Outcome = std::function<void(absl::StatusOr<RelayStatus>)>;

  // `gate`: shared by the sidecar's sessions (null: none).
  RelayClient(channel::SecureChannelManager& channels, core::Route hub_route, std::string name,
              std::string identity, std::shared_ptr<const channel::TrustPolicy> hub_policy,
              RelayClientOptions options, std::shared_ptr<ConnectGate> gate = nullptr);
  ~RelayClient();

  // Starts; `first` is called once with the first registration's outcome. A relay whose first
  // attempt fails is stopped (no retries): the caller hears why at once — unless
  // `retry_until_up`, when an unreachable or silent hub is retried with the usual backoff and
  // `first` hears only of success or a refusal.
  void Start(Outcome first, bool retry_until_up = false);
  // Unregisters (best effort), closes the channel, stops retrying.
  void Stop();
  RelayStatus Status() const;
  // Whether its (registered or requested) name is `name`, without copying its status.
  bool HasName(const std::string& name) const;
  // The worker id of the connection under the channel to the hub (0: none). Any thread.
  uint64_t hub_carrier() const { return hub_carrier_.load(std::memory_order_acquire); }

  // The connection with worker id `carrier` closed: if the channel to the hub ran over it, the
  // session is lost now (and reconnects), not at its next unanswered heartbeat. Any thread.
  void CarrierClosed(uint64_t carrier, absl::string_view why);

  // On the strand: a response from the hub's relay service.
  void OnResponse(core::Message msg);
  const core::Strand& strand() const { return strand_; }

 private:
  class ResponseWorker;
  void Connect();  // through the gate
  void Dial(uint64_t generation);
  void LeaveGate();  // the slot goes back, if this session holds one
  void OnChannel(uint64_t generation, absl::StatusOr<channel::ChannelInfo> info);
  // Fails the session if the pending request is not answered in time, unless this node is
  // holding back the hub's connection (backpressure) or bytes keep arriving on it.
  void ArmReplyTimer(uint64_t generation);
  std::shared_ptr<core::Worker> HubConnection() const;  // the connection under the channel
  bool HubConnectionHeldBack() const;
  uint64_t HubBytesReceived() const;
  void SendRequest(wire::v1::RelayRequest request);
  void ScheduleHeartbeat();
  void Lost(absl::Status why);
  void Finish(absl::Status why, RelayStatus::State state);
  void Update(std::function<void(RelayStatus&)> change);
  void CloseChannel();

  channel::SecureChannelManager& channels_;
  core::Router& router_;
  core::Strand strand_;
  const core::Route hub_route_;
  const std::string identity_;
  const std::shared_ptr<const channel::TrustPolicy> hub_policy_;
  const RelayClientOptions options_;
  std::mt19937_64 rng_;
  Backoff backoff_;
  boost::asio::steady_timer timer_;        // heartbeats and reconnects
  boost::asio::steady_timer reply_timer_;  // the outstanding request's deadline
  std::shared_ptr<ResponseWorker> response_worker_;
  std::string worker_address_;  // where the hub answers
  std::atomic<uint64_t> hub_carrier_{0};
  const std::shared_ptr<ConnectGate> gate_;
  bool in_gate_ = false;         // holds a slot of gate_
  std::string channel_;          // current channel to the hub, "" when none
  std::string requested_name_;   // what to (re-)register
  uint64_t hub_bytes_seen_ = 0;  // the hub connection's bytes when the request went out
  uint64_t generation_ = 0;      // bumps on every (re)connect; stale callbacks are ignored
  uint64_t next_request_ = 1;
  uint64_t pending_request_ = 0;
  bool stopped_ = false;
  bool retry_until_up_ = false;
  Outcome first_;

  mutable veil::Mutex mu_;
  RelayStatus status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::relay

#endif  // VEIL_SIDECAR_RELAY_RELAY_CLIENT_H_
