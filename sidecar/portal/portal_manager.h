// Portals: inlets and outlets (docs/portals.md).
//
// An outlet is a worker at a local address (its name) that secure channels reach: for each
// Open that comes out of a channel whose authenticated identity its trust policy admits, it
// starts a PortalSession connected to its fixed target. Nothing a peer sends names where the
// session connects. An inlet is a TCP listener (loopback unless allowed otherwise): for each
// connection it accepts it starts a PortalSession that opens a session with the far outlet
// through one secure channel the inlet keeps to the far node's listener (opened on the first
// connection, again after it closes; every session of the inlet shares it).
//
// Thread-safety: every method may be called from any thread.
#ifndef VEIL_SIDECAR_PORTAL_PORTAL_MANAGER_H_
#define VEIL_SIDECAR_PORTAL_PORTAL_MANAGER_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "sidecar/channel/secure_channel_manager.h"
#include "sidecar/common/mutex.h"
#include "sidecar/core/router.h"
#include "sidecar/portal/portal_session.h"

namespace veil::portal {

struct PortalLimits {
  // Sessions at once, per inlet and per outlet; beyond, a new one is reset at once.
  size_t max_sessions = 10000;
  SessionOptions session;
};

// A snapshot of PortalCounters.
struct CounterValues {
  uint64_t active = 0, total = 0, reset = 0, refused = 0, bytes_in = 0, bytes_out = 0;
};

struct OutletInfo {
  std::string name;
  std::string target;        // host:port
  std::string trust_policy;  // described
  uint32_t idle_timeout_ms = 0;
  CounterValues counters;
};

struct InletInfo {
  std::string listen_address;  // bound, host:port
  std::string route;           // to the far secure channel listener
  std::string outlet;
  std::string identity;
  std::string trust_policy;
  uint32_t idle_timeout_ms = 0;
  std::string channel;  // the channel its sessions use now, "" when none
  CounterValues counters;
};

class Outlet;
class Inlet;
class SessionSet;

class PortalManager {
 public:
  // `router`, `channels` and `io` must outlive the manager.
  PortalManager(core::Router& router, channel::SecureChannelManager& channels,
                boost::asio::io_context& io, PortalLimits limits);
  ~PortalManager();
  PortalManager(const PortalManager&) = delete;
  PortalManager& operator=(const PortalManager&) = delete;

  // An outlet at local address `name` connecting each session to `target` ("host:port").
  // INVALID_ARGUMENT for a bad name (or one starting with '_') or target; ALREADY_EXISTS
  // (ADDRESS_IN_USE) when the address is taken — unless `exist_ok` and it is an outlet with
  // this target and policy, which is then returned.
  absl::StatusOr<OutletInfo> CreateOutlet(const std::string& name, const std::string& target,
                                          std::shared_ptr<const channel::TrustPolicy> policy,
                                          uint32_t idle_timeout_ms, bool exist_ok = false);
  std::vector<OutletInfo> ListOutlets() const;
  // Stops the outlet and resets its sessions. NOT_FOUND (PORTAL_NOT_FOUND).
  absl::Status DeleteOutlet(const std::string& name);

  // An inlet listening on `listen` ("host:port"; loopback only unless `allow_public`) whose
  // sessions go to outlet `outlet` through a channel to the listener at `route`, as
  // `identity`, trusting the far end by `policy`. INVALID_ARGUMENT for bad arguments
  // (PUBLIC_BIND_REFUSED for a non-loopback address), UNAVAILABLE (LISTEN_FAILED) when the
  // address cannot be bound, ALREADY_EXISTS when an inlet listens there (unless `exist_ok` and
  // it goes to the same route and outlet).
  absl::StatusOr<InletInfo> CreateInlet(const std::string& listen, const core::Route& route,
                                        const std::string& outlet, const std::string& identity,
                                        std::shared_ptr<const channel::TrustPolicy> policy,
                                        bool allow_public, uint32_t idle_timeout_ms,
                                        bool exist_ok = false);
  std::vector<InletInfo> ListInlets() const;
  // Stops the inlet (by its bound listen address) and resets its sessions. NOT_FOUND.
  absl::Status DeleteInlet(const std::string& listen_address);

  // Stops every inlet and outlet, resetting their sessions.
  void Shutdown();

  // For inlets and outlets: sessions by the channel they run in, so that a closed channel
  // resets its sessions at once.
  void Track(const std::shared_ptr<PortalSession>& session);
  void Untrack(const PortalSession* session);
  // Starts `session` at a fresh address "<prefix>…", tracked by its channel and in `owner`
  // (its inlet's or outlet's) until it ends. False when the node is shutting down.
  bool StartSession(const std::shared_ptr<PortalSession>& session, absl::string_view prefix,
                    std::shared_ptr<SessionSet> owner);
  core::Router& router() { return router_; }
  channel::SecureChannelManager& channels() { return channels_; }
  boost::asio::io_context& io() { return io_; }
  const PortalLimits& limits() const { return limits_; }

 private:
  void OnChannelClosed(uint64_t via, absl::string_view why);

  core::Router& router_;
  channel::SecureChannelManager& channels_;
  boost::asio::io_context& io_;
  const PortalLimits limits_;
  mutable veil::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Outlet>> outlets_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<Inlet>> inlets_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  mutable veil::Mutex sessions_mu_;
  absl::flat_hash_map<uint64_t,
                      absl::flat_hash_map<const PortalSession*, std::weak_ptr<PortalSession>>>
      by_channel_ ABSL_GUARDED_BY(sessions_mu_);
};

CounterValues Snapshot(const PortalCounters& counters);

// The rules for an outlet's target and an inlet's address, for the API and the config alike.
// A target is "host:port" with a port: INVALID_ARGUMENT (INVALID_TARGET) otherwise.
absl::StatusOr<core::HostPort> ParseOutletTarget(absl::string_view target);
// An inlet listens on "ip:port" or "localhost:port" (port 0: any), loopback unless
// `allow_public`: INVALID_ARGUMENT (INVALID_ADDRESS, PUBLIC_BIND_REFUSED) otherwise.
absl::StatusOr<boost::asio::ip::tcp::endpoint> ParseInletAddress(absl::string_view listen,
                                                                 bool allow_public);

}  // namespace veil::portal

#endif  // VEIL_SIDECAR_PORTAL_PORTAL_MANAGER_H_
