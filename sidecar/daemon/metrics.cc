#include "sidecar/daemon/metrics.h"

#include <exception>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"
#include "sidecar/common/version.h"
#include "sidecar/core/address.h"
#include "sidecar/relay/hub_mesh.h"

namespace veil::daemon {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void Add(MetricFamily& f, double value, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f.type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
}

MetricFamily Single(std::string name, std::string help, MetricType type, double value) {
  MetricFamily f = Family(std::move(name), std::move(help), type);
  Add(f, value);
  return f;
}

constexpr auto kCounter = MetricType::Counter;
constexpr auto kGauge = MetricType::Gauge;

}  // namespace

std::vector<MetricFamily> MetricsCollector::Collect() const {
  std::vector<MetricFamily> out;
  MetricFamily info = Family("veil_info", "veild build information", kGauge);
  Add(info, 1, {{"version", kVeilVersion}});
  out.push_back(std::move(info));

  core::Router::Stats routing = router_.stats();
  out.push_back(Single("veil_messages_routed_total", "Messages routed by this node", kCounter,
                       static_cast<double>(routing.routed)));
  out.push_back(Single("veil_messages_unroutable_total",
                       "Messages refused at once: unknown local address or no transport", kCounter,
                       static_cast<double>(routing.unroutable)));
  out.push_back(Single("veil_routing_refusal_notices_total",
                       "Refusal notices sent back to the node of a far sender whose message this "
                       "node could not hand on",
                       kCounter, static_cast<double>(routing.notices_sent)));

  auto& tcp = tcp_.stats();
  auto load = [](const std::atomic<uint64_t>& a) { return static_cast<double>(a.load()); };
  MetricFamily denied =
      Family("veil_access_denied_total",
             "Messages refused by access control (docs/security.md), by the provenance they had",
             kCounter);
  const char* const kOrigins[] = {"local", "app", "transport", "secure_channel"};
  for (size_t i = 0; i < routing.access_denied.size(); ++i) {
    Add(denied, static_cast<double>(routing.access_denied[i]), {{"origin", kOrigins[i]}});
  }
  out.push_back(std::move(denied));
  out.push_back(
      Single("veil_transport_dials_refused_total",
             "/tcp and /uds hops from other nodes this node did not dial (not in --allow-dial)",
             kCounter, load(tcp.dials_refused)));
  out.push_back(Single("veil_transport_connections_refused_total",
                       "Connections refused when accepted: too many in all or from one address",
                       kCounter, load(tcp.connections_refused)));
  out.push_back(Single("veil_transport_idle_closed_total",
                       "Connections closed for carrying nothing, with nothing of this node on them",
                       kCounter, load(tcp.idle_closed)));
  out.push_back(Single("veil_transport_notices_dropped_total",
                       "Refusal notices dropped for a peer that does not read them", kCounter,
                       load(tcp.notices_dropped)));
  out.push_back(Single("veil_transport_bytes_sent_total",
                       "Bytes written to node connections (every transport)", kCounter,
                       load(tcp.bytes_sent)));
  out.push_back(Single("veil_transport_bytes_received_total",
                       "Bytes read from node connections (every transport)", kCounter,
                       load(tcp.bytes_received)));
  out.push_back(Single("veil_transport_frames_sent_total", "Frames queued on node connections",
                       kCounter, load(tcp.frames_sent)));
  out.push_back(Single("veil_transport_frames_received_total", "Frames read from node connections",
                       kCounter, load(tcp.frames_received)));
  out.push_back(
      Single("veil_transport_received_refused_total",
             "Frames read from node connections that this node could not (wholly) hand on",
             kCounter, load(tcp.received_refused)));
  out.push_back(Single("veil_api_deliveries_dropped_total",
                       "Messages addressed to apps on this node that they did not take (refused: "
                       "queue full, app going away; or never acked before the stream ended)",
                       kCounter, load(api_.deliveries_dropped)));
  out.push_back(Single("veil_transport_reads_paused_total",
                       "Times a node connection stopped reading until what it read was handed on "
                       "(backpressure)",
                       kCounter, load(tcp.reads_paused)));
  out.push_back(Single("veil_transport_connections_opened_total",
                       "Node connections established (every transport)", kCounter,
                       load(tcp.connections_opened)));
  out.push_back(Single("veil_transport_connections_failed_total",
                       "Node connections that could not be established", kCounter,
                       load(tcp.connections_failed)));
  // Open connections by transport; both transports always present, so a dashboard sees zeros.
  std::map<std::string, double> open{{"tcp", 0}, {"uds", 0}, {"ws", 0}, {"wss", 0}};
  for (const auto& c : tcp_.Connections()) ++open[c.transport];
  MetricFamily connections =
      Family("veil_transport_connections", "Open node connections, by transport", kGauge);
  for (const auto& [transport, n] : open) Add(connections, n, {{"transport", transport}});
  out.push_back(std::move(connections));

  auto& cs = channels_.stats();
  double handshaking = 0, established = 0;
  double sent = load(cs.closed_sent), received = load(cs.closed_received);
  double failures = load(cs.closed_decrypt_failures), replays = load(cs.closed_replays);
  double queued = 0;
  for (const auto& ch : channels_.ListChannels()) {
    queued += static_cast<double>(ch.queued_bytes);
    (ch.state == channel::ChannelInfo::State::kEstablished ? established : handshaking) += 1;
    sent += static_cast<double>(ch.messages_sent);
    received += static_cast<double>(ch.messages_received);
    failures += static_cast<double>(ch.decrypt_failures);
    replays += static_cast<double>(ch.replays_rejected);
  }
  MetricFamily channels = Family("veil_secure_channels", "Secure channels by state", kGauge);
  Add(channels, handshaking, {{"state", "handshaking"}});
  Add(channels, established, {{"state", "established"}});
  out.push_back(std::move(channels));
  out.push_back(Single("veil_secure_channel_listeners", "Secure channel listeners", kGauge,
                       static_cast<double>(channels_.ListListeners().size())));
  out.push_back(Single("veil_secure_channel_messages_sent_total",
                       "Messages encrypted into secure channels", kCounter, sent));
  out.push_back(Single("veil_secure_channel_messages_received_total",
                       "Messages decrypted from secure channels", kCounter, received));
  out.push_back(Single("veil_secure_channel_decrypt_failures_total",
                       "Secure channel messages dropped because they failed to decrypt", kCounter,
                       failures));
  out.push_back(Single("veil_secure_channel_replays_rejected_total",
                       "Secure channel messages dropped as replayed or too old", kCounter,
                       replays));
  MetricFamily handshakes = Family("veil_secure_channel_handshakes_total",
                                   "Secure channel handshakes by result", kCounter);
  Add(handshakes, load(cs.handshakes_completed), {{"result", "ok"}});
  Add(handshakes, load(cs.handshakes_failed), {{"result", "failed"}});
  out.push_back(std::move(handshakes));

  out.push_back(Single("veil_secure_channel_forged_notices_total",
                       "Refusal notices and handshake errors dropped for not echoing the channel's "
                       "path tag",
                       kCounter, load(cs.forged_notices)));
  out.push_back(
      Single("veil_secure_channel_handshakes_refused_total",
             "Handshakes refused for a limit (busy, rate, too many channels, per identity)",
             kCounter, load(cs.handshakes_refused)));
  MetricFamily expired = Family("veil_secure_channels_expired_total",
                                "Secure channels closed by this node, by why", kCounter);
  Add(expired, load(cs.unconfirmed_expired), {{"reason", "unconfirmed"}});
  Add(expired, load(cs.idle_expired), {{"reason", "idle"}});
  Add(expired, load(cs.carrier_closed), {{"reason", "connection_closed"}});
  Add(expired, load(cs.credentials_expired), {{"reason", "credentials_expired"}});
  Add(expired, load(cs.credit_violations), {{"reason", "flow_control_violated"}});
  out.push_back(std::move(expired));
  out.push_back(Single("veil_secure_channel_queued_bytes",
                       "Bytes secure channels keep while their far ends have not granted more "
                       "(flow control)",
                       kGauge, queued));
  out.push_back(Single("veil_secure_channel_held_total",
                       "Messages a secure channel kept until its far end granted more", kCounter,
                       load(cs.credit_held)));
  out.push_back(Single("veil_secure_channel_queue_full_total",
                       "Local messages refused (QUEUE_FULL) because a secure channel's send queue "
                       "was full",
                       kCounter, load(cs.credit_refused)));
  out.push_back(Single("veil_secure_channel_receipts_sent_total",
                       "RECEIPT messages sent: delivery outcomes told to far senders", kCounter,
                       load(cs.receipts_sent)));
  out.push_back(Single("veil_secure_channel_delivery_unknown_total",
                       "Messages sent with delivery receipts whose channel closed before their "
                       "receipt came",
                       kCounter, load(cs.receipts_unknown)));
  out.push_back(Single("veil_secure_channel_credits_sent_total",
                       "CREDIT messages sent: more granted to far ends as apps took deliveries",
                       kCounter, load(cs.credits_sent)));
  MetricFamily latency =
      Family("veil_secure_channel_handshake_seconds",
             "Time from a channel's creation to its establishment", MetricType::Histogram);
  ClientMetric h;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < channel::ChannelStats::kLatencyBuckets.size(); ++i) {
    cumulative += cs.latency_counts[i].load();
    h.histogram.bucket.push_back({cumulative, channel::ChannelStats::kLatencyBuckets[i]});
  }
  cumulative += cs.latency_counts.back().load();
  h.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
  h.histogram.sample_count = cumulative;
  h.histogram.sample_sum = load(cs.latency_sum_micros) / 1e6;
  latency.metric.push_back(std::move(h));
  out.push_back(std::move(latency));

  MetricFamily relays =
      Family("veil_relays", "Relays this sidecar keeps on hubs, by state", kGauge);
  double up = 0, down = 0;
  for (const auto& r : relays_.List()) (r.state == relay::RelayStatus::State::kUp ? up : down) += 1;
  Add(relays, up, {{"state", "up"}});
  Add(relays, down, {{"state", "not_up"}});
  out.push_back(std::move(relays));
  if (hub_ != nullptr) {
    out.push_back(Single("veil_hub_relays", "Relays this hub hosts", kGauge,
                         static_cast<double>(hub_->List().size())));
    if (const relay::RelayDirectory* directory = hub_->directory(); directory != nullptr) {
      const relay::DirectoryStats ds = directory->Stats();
      out.push_back(Single("veil_hub_directory_reachable",
                           "1 when the last call to the hub directory (etcd) succeeded", kGauge,
                           ds.reachable ? 1 : 0));
      out.push_back(Single("veil_hub_directory_lease_held",
                           "1 while this replica holds its directory lease", kGauge,
                           ds.lease_held ? 1 : 0));
      out.push_back(Single("veil_hub_directory_relays",
                           "Relays in the directory, on every replica (this replica's view)",
                           kGauge, static_cast<double>(ds.known_relays)));
      if (const relay::HubMesh* mesh = hub_->mesh(); mesh != nullptr) {
        const relay::MeshStats ms = mesh->Stats();
        out.push_back(Single("veil_hub_mesh_forwarded_total",
                             "Messages this replica handed on to the replica with their relay",
                             kCounter, static_cast<double>(ms.forwarded)));
        out.push_back(Single("veil_hub_mesh_delivered_total",
                             "Messages from other replicas handed to a relay of this one", kCounter,
                             static_cast<double>(ms.delivered)));
        out.push_back(Single("veil_hub_mesh_answered_total",
                             "Answers the mesh carried back, either way", kCounter,
                             static_cast<double>(ms.answered)));
        out.push_back(Single("veil_hub_mesh_refused_total",
                             "Messages the mesh refused: no replica has the relay, the replica "
                             "cannot be reached, or not admitted",
                             kCounter, static_cast<double>(ms.refused)));
        out.push_back(Single("veil_hub_mesh_links", "Links to other replicas, open or opening",
                             kGauge, static_cast<double>(ms.links)));
      }
      out.push_back(Single("veil_hub_directory_bound_names",
                           "Relay names bound to an owner in the directory (this replica's view)",
                           kGauge, static_cast<double>(ds.bound_names)));
      out.push_back(Single("veil_hub_directory_claims",
                           "Relay names this replica holds in the directory", kGauge,
                           static_cast<double>(ds.claims)));
      out.push_back(Single("veil_hub_directory_pending_claims",
                           "Of those, names waiting for the directory to be reachable", kGauge,
                           static_cast<double>(ds.pending_claims)));
      out.push_back(Single("veil_hub_directory_claims_lost_total",
                           "Names this replica lost: taken to another replica or released",
                           kCounter, static_cast<double>(ds.claims_lost)));
      out.push_back(Single("veil_hub_directory_claims_refused_total",
                           "Registrations the directory refused: the name is another owner's, "
                           "or etcd was unreachable",
                           kCounter, static_cast<double>(ds.claims_refused)));
    }
  }

  // Portals, one series per inlet (portal="inlet:<listen address>") and outlet
  // (portal="outlet:<name>").
  MetricFamily sessions = Family("veil_portal_sessions", "Portal sessions open now", kGauge);
  MetricFamily opened = Family("veil_portal_sessions_total", "Portal sessions started", kCounter);
  MetricFamily reset = Family("veil_portal_sessions_reset_total",
                              "Portal sessions that ended with a reset", kCounter);
  MetricFamily refused = Family("veil_portal_sessions_refused_total",
                                "Portal sessions refused before they started", kCounter);
  MetricFamily bytes = Family("veil_portal_bytes_total",
                              "Bytes through portals: in = read from this side's TCP connections, "
                              "out = written to them",
                              kCounter);
  auto add_portal = [&](const std::string& label, const portal::CounterValues& c) {
    Add(sessions, static_cast<double>(c.active), {{"portal", label}});
    Add(opened, static_cast<double>(c.total), {{"portal", label}});
    Add(reset, static_cast<double>(c.reset), {{"portal", label}});
    Add(refused, static_cast<double>(c.refused), {{"portal", label}});
    Add(bytes, static_cast<double>(c.bytes_in), {{"portal", label}, {"direction", "in"}});
    Add(bytes, static_cast<double>(c.bytes_out), {{"portal", label}, {"direction", "out"}});
  };
  for (const auto& o : portals_.ListOutlets()) add_portal("outlet:" + o.name, o.counters);
  for (const auto& i : portals_.ListInlets()) add_portal("inlet:" + i.listen_address, i.counters);
  for (auto* f : {&sessions, &opened, &reset, &refused, &bytes}) out.push_back(std::move(*f));
  return out;
}

absl::StatusOr<std::unique_ptr<prometheus::Exposer>> ServeMetrics(
    const std::string& listen, const std::shared_ptr<MetricsCollector>& collector,
    std::string* bound) {
  auto hp = core::ParseHostPort(listen, /*allow_port_zero=*/true);
  if (!hp.ok()) return hp.status();
  std::unique_ptr<prometheus::Exposer> exposer;
  try {  // prometheus-cpp (civetweb) throws when it cannot listen
    exposer = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
  }
  exposer->RegisterCollectable(collector, "/metrics");
  auto ports = exposer->GetListeningPorts();
  *bound =
      core::FormatHostPort(hp->host, ports.empty() ? hp->port : static_cast<uint16_t>(ports[0]));
  return exposer;
}

}  // namespace veil::daemon
