// MessagingService: the veil.v1.MessagingService implementation (see proto/veil/v1/
// messaging.proto for the contract): Serve streams, Send and Request.
//
// Thread-safety: gRPC calls it from its own threads; shared state is under mu_.
#ifndef VEIL_SIDECAR_API_MESSAGING_SERVICE_H_
#define VEIL_SIDECAR_API_MESSAGING_SERVICE_H_

#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "sidecar/api/api_settings.h"
#include "sidecar/api/serve_stream.h"
#include "sidecar/common/mutex.h"
#include "sidecar/core/router.h"
#include "veil/v1/messaging.grpc.pb.h"

namespace veil::api {

class RequestCall;

class MessagingService final : public v1::MessagingService::CallbackService {
 public:
  // `router` and `settings` must outlive the service.
  MessagingService(core::Router& router, const ApiSettings& settings, ApiStats& stats)
      : router_(router), settings_(settings), stats_(stats) {}

  grpc::ServerBidiReactor<v1::ServeRequest, v1::ServeResponse>* Serve(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Send(grpc::CallbackServerContext* context,
                                 const v1::SendRequest* request,
                                 v1::SendResponse* response) override;
  grpc::ServerUnaryReactor* Request(grpc::CallbackServerContext* context,
                                    const v1::RequestRequest* request,
                                    v1::RequestResponse* response) override;

  // Counts `stream` (gRPC or serve socket) among the open streams, or ends it at once when the
  // sidecar is draining (UNAVAILABLE, NODE_SHUTTING_DOWN) or serves the most streams it may
  // (RESOURCE_EXHAUSTED, TOO_MANY_STREAMS).
  void Adopt(ServeStream& stream);

  // Ends every open Serve stream and pending Request with UNAVAILABLE (NODE_SHUTTING_DOWN) and
  // refuses new calls the same way.
  void Drain();

 private:
  bool draining() const;

  core::Router& router_;
  const ApiSettings& settings_;
  ApiStats& stats_;
  mutable veil::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::weak_ptr<ServeStream>> streams_ ABSL_GUARDED_BY(mu_);
  std::vector<std::weak_ptr<RequestCall>> requests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_MESSAGING_SERVICE_H_
