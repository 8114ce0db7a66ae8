// Prometheus metrics: a prometheus-cpp Collectable that reads, at scrape time, the counters and
// snapshots the components keep (router, TCP transport, secure channels, relays), and the HTTP
// exposer that serves them at /metrics. Components know nothing of Prometheus.
//
// Thread-safety: Collect may run on the exposer's threads at any time; everything it reads is
// thread-safe.
#ifndef VEIL_SIDECAR_DAEMON_METRICS_H_
#define VEIL_SIDECAR_DAEMON_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "sidecar/api/api_settings.h"
#include "sidecar/channel/secure_channel_manager.h"
#include "sidecar/core/router.h"
#include "sidecar/portal/portal_manager.h"
#include "sidecar/relay/relay_clients.h"
#include "sidecar/relay/relay_hub.h"
#include "sidecar/transport/node_transport.h"

namespace veil::daemon {

class MetricsCollector final : public prometheus::Collectable {
 public:
  // All must outlive the collector's registration; `hub` may be null.
  MetricsCollector(core::Router& router, transport::NodeTransport& tcp,
                   channel::SecureChannelManager& channels, relay::RelayClients& relays,
                   const relay::RelayHub* hub, const portal::PortalManager& portals,
                   const api::ApiStats& api)
      : router_(router),
        tcp_(tcp),
        channels_(channels),
        relays_(relays),
        hub_(hub),
        portals_(portals),
        api_(api) {}

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  core::Router& router_;
  transport::NodeTransport& tcp_;
  channel::SecureChannelManager& channels_;
  relay::RelayClients& relays_;
  const relay::RelayHub* hub_;
  const portal::PortalManager& portals_;
  const api::ApiStats& api_;
};

// Serves `collector` at http://<listen>/metrics. Returns the exposer (stop by destroying it) and
// sets `bound` to the bound "host:port". UNAVAILABLE when it cannot listen.
absl::StatusOr<std::unique_ptr<prometheus::Exposer>> ServeMetrics(
    const std::string& listen, const std::shared_ptr<MetricsCollector>& collector,
    std::string* bound);

}  // namespace veil::daemon

#endif  // VEIL_SIDECAR_DAEMON_METRICS_H_
