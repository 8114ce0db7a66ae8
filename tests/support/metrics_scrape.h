// Reading a daemon's Prometheus /metrics endpoint in tests.
#ifndef VEIL_TESTS_SUPPORT_METRICS_SCRAPE_H_
#define VEIL_TESTS_SUPPORT_METRICS_SCRAPE_H_

#include <string>

#include "tests/support/veild_process.h"

namespace veil::testing {

// GET http://<host_port><path> over a plain socket; the whole response, or "" on failure.
std::string HttpGet(const std::string& host_port, const std::string& path);

// The value of the first sample line starting with `series` (name and labels), or -1.
double Sample(const std::string& metrics, const std::string& series);

// The metrics address a daemon started with --metrics-listen logged, or "".
std::string MetricsAddress(const VeildProcess& process);

// One sample scraped from a running daemon's /metrics, or -1.
double Scrape(const VeildProcess& process, const std::string& series);

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_METRICS_SCRAPE_H_
