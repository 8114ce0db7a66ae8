// Settings the API services share, fixed at start-up.
#ifndef VEIL_SIDECAR_API_API_SETTINGS_H_
#define VEIL_SIDECAR_API_API_SETTINGS_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace veil::api {

// Counters the API services keep, for metrics. Thread-safe.
struct ApiStats {
  // Messages addressed to an app on this node that it did not take: refused (its queue full,
  // the app going away) or delivered but never acked before its stream ended.
  std::atomic<uint64_t> deliveries_dropped{0};
};

struct ApiSettings {
  // Where the API listens ("unix:/path" or "host:port"), as reported by GetNode.
  std::string endpoint;
  // The serve socket's path (Serve streams without gRPC; docs/api.md), "" for none. Its mode is
  // socket_mode too.
  std::string serve_socket;
  // The serve socket writes a delivery from the thread that routes it (serve_socket.h), rather
  // than handing it to the connection's strand (--serve-socket-direct-write).
  bool serve_direct_write = true;
  // The Unix socket's mode: 0600 (this user only) or 0660 (also its group, e.g. the app
  // containers of a Kubernetes pod that share its fsGroup).
  uint32_t socket_mode = 0600;
  // This node runs the relay service.
  bool hub = false;
  // Allow app payloads to leave the host outside a secure channel (--insecure-plaintext).
  bool insecure_plaintext = false;
  // The transports' maximum frame size, reported by GetNode.
  size_t max_frame_bytes = 0;
  // Deliveries outstanding on a Serve stream when the app asks for no particular window.
  uint32_t default_window = 1024;
  uint32_t max_window = 65536;
  // Deliveries queued for a Serve stream beyond its window before new ones are refused
  // (RESOURCE_EXHAUSTED, reason QUEUE_FULL), in messages and in payload bytes.
  size_t max_queued_deliveries = 65536;
  size_t max_queued_bytes = 64 * 1024 * 1024;
  // The most messages in one Send or SendBatch.
  size_t max_batch_messages = 65536;
  // Where the health-only listener binds ("host:port", may be a pod IP; empty: none). It serves
  // grpc.health.v1 alone, for probes; set by Start to the bound address.
  std::string health_listen;
  // The largest API request accepted, in bytes (larger: RESOURCE_EXHAUSTED from gRPC).
  size_t max_request_bytes = 64 * 1024 * 1024;
  // Serve streams open at once; more are ended with RESOURCE_EXHAUSTED (TOO_MANY_STREAMS).
  size_t max_serve_streams = 4096;
  // SendBatches on one Serve stream whose results the app has not yet been sent; past this the
  // stream reads no more requests until results drain (the app's writes then block).
  size_t max_pending_batches = 1024;
  // Concurrent calls on one API connection (HTTP/2 MAX_CONCURRENT_STREAMS).
  int max_calls_per_connection = 1024;
  // How long a Serve stream (gRPC or serve socket) may go without `open` before it is ended
  // (DEADLINE_EXCEEDED, OPEN_TIMEOUT): it holds one of max_serve_streams meanwhile.
  std::chrono::milliseconds open_timeout{5000};
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_API_SETTINGS_H_
