// RelayClients: the relays this sidecar keeps on hubs (one RelayClient each), by name.
//
// Thread-safety: all methods may be called from any thread.
#ifndef VEIL_SIDECAR_RELAY_RELAY_CLIENTS_H_
#define VEIL_SIDECAR_RELAY_RELAY_CLIENTS_H_

#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "sidecar/common/mutex.h"
#include "sidecar/relay/relay_client.h"

namespace veil::relay {

class RelayClients {
 public:
  // `channels` must outlive this.
  // Watches `channels`' carriers: a relay whose hub connection closes reconnects at once,
  // without waiting for its next heartbeat to go unanswered.
  RelayClients(channel::SecureChannelManager& channels, RelayClientOptions options);
  ~RelayClients();

  // Creates a relay on the hub at `hub_route` and calls `done` with its first registration's
  // outcome. ALREADY_EXISTS (RELAY_EXISTS) when this sidecar already has a relay `name` —
  // unless `exist_ok` and that relay is on this hub for this identity (or, with no name, this
  // sidecar has any relay on this hub for this identity), whose status `done` then gets.
  void Create(const core::Route& hub_route, const std::string& name, const std::string& identity,
              std::shared_ptr<const channel::TrustPolicy> hub_policy, RelayClient::Outcome done,
              bool exist_ok = false);
  // For relays a sidecar is configured to have: checks the name now (INVALID_ARGUMENT,
  // ALREADY_EXISTS) and starts the relay, which keeps retrying while the hub cannot be reached
  // and is dropped (with an error in the log) only when the hub refuses it.
  absl::Status Start(const core::Route& hub_route, const std::string& name,
                     const std::string& identity,
                     std::shared_ptr<const channel::TrustPolicy> hub_policy);
  std::vector<RelayStatus> List() const;
  // NOT_FOUND (RELAY_NOT_FOUND) when absent.
  absl::StatusOr<RelayStatus> Get(const std::string& name) const;
  // Unregisters from the hub and forgets it. NOT_FOUND when absent.
  absl::Status Delete(const std::string& name);
  // Whether a relay's channel to its hub runs over the connection with worker id `carrier`.
  bool RidesOn(uint64_t carrier) const;
  void Shutdown();

 private:
  // Validates and records a new client; nullptr and `error` set when refused.
  std::shared_ptr<RelayClient> Add(const core::Route& hub_route, const std::string& name,
                                   const std::string& identity,
                                   std::shared_ptr<const channel::TrustPolicy> hub_policy,
                                   absl::Status& error);
  std::shared_ptr<RelayClient> FindLocked(const std::string& name) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  // Outlives this (the carrier observer holds it): `self` is null once this is destroyed.
  struct Watch {
    veil::Mutex mu;
    RelayClients* self ABSL_GUARDED_BY(mu) = nullptr;
  };
  void CarrierClosed(uint64_t carrier, absl::string_view why);

  channel::SecureChannelManager& channels_;
  const RelayClientOptions options_;
  const std::shared_ptr<Watch> watch_ = std::make_shared<Watch>();
  const std::shared_ptr<ConnectGate> gate_ = std::make_shared<ConnectGate>(options_.max_connecting);
  mutable veil::Mutex mu_;
  std::vector<std::shared_ptr<RelayClient>> clients_ ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::relay

#endif  // VEIL_SIDECAR_RELAY_RELAY_CLIENTS_H_
