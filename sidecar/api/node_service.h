// NodeService: veil.v1.NodeService — what this node is and how it is connected.
//
// Thread-safety: gRPC calls it from its own threads; it only reads thread-safe sources.
#ifndef VEIL_SIDECAR_API_NODE_SERVICE_H_
#define VEIL_SIDECAR_API_NODE_SERVICE_H_

#include "sidecar/api/api_settings.h"
#include "sidecar/transport/node_transport.h"
#include "veil/v1/node.grpc.pb.h"

namespace veil::api {

class NodeService final : public v1::NodeService::CallbackService {
 public:
  // `settings` and `tcp` must outlive the service.
  NodeService(const ApiSettings& settings, transport::NodeTransport& tcp)
      : settings_(settings), tcp_(tcp) {}

  grpc::ServerUnaryReactor* GetNode(grpc::CallbackServerContext* context,
                                    const v1::GetNodeRequest* request, v1::Node* response) override;

 private:
  const ApiSettings& settings_;
  transport::NodeTransport& tcp_;
};

}  // namespace veil::api

#endif  // VEIL_SIDECAR_API_NODE_SERVICE_H_
