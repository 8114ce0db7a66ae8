// Daemon: one running veild — the io_context and its threads, the router, the TCP transport,
// the API server — from start-up to a graceful stop.
//
// Thread-safety: Run blocks the calling thread; RequestStop may be called from any thread
// (signals arrive through the io_context).
#ifndef VEIL_SIDECAR_DAEMON_DAEMON_H_
#define VEIL_SIDECAR_DAEMON_DAEMON_H_

#include "absl/status/status.h"
#include "sidecar/daemon/options.h"

namespace veil::daemon {

// Starts the node with `options`, serves until SIGTERM or SIGINT, then drains: health
// NOT_SERVING, Serve streams closed with UNAVAILABLE, in-flight calls given the grace period,
// transports closed. Returns OK after a clean stop, or why start-up failed.
absl::Status RunDaemon(const Options& options);

}  // namespace veil::daemon

#endif  // VEIL_SIDECAR_DAEMON_DAEMON_H_
