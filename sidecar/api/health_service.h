// HealthService: grpc.health.v1.Health, built from the health .proto (not gRPC's built-in
// service) so that a client with only server reflection can describe and call it.
//
// The overall status (service "") and each registered service name are SERVING until
// SetServing(false) (drain); unknown names get NOT_FOUND from Check and SERVICE_UNKNOWN from
// Watch.
//
// Thread-safety: all methods may be called from any thread.
#ifndef VEIL_SIDECAR_API_HEALTH_SERVICE_H_
#define VEIL_SIDECAR_API_HEALTH_SERVICE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "sidecar/common/mutex.h"

namespace veil::api {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  // `services`: the fully qualified names answered besides "".
  explicit HealthService(std::vector<std::string> services);

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request) override;

  // Switches every known service between SERVING and NOT_SERVING, telling watchers.
  void SetServing(bool serving);
  // Ends every Watch stream (for shutdown).
  void EndWatches();

  class Watcher;

 private:
  grpc::health::v1::HealthCheckResponse::ServingStatus StatusOf(const std::string& service) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const absl::flat_hash_set<std::string> services_;
  mutable veil::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = true;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::weak_ptr<Watcher>> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_HEALTH_SERVICE_H_
