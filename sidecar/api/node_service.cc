#include "sidecar/api/node_service.h"

#include "sidecar/api/grpc_status.h"
#include "sidecar/common/version.h"

namespace veil::api {

grpc::ServerUnaryReactor* NodeService::GetNode(grpc::CallbackServerContext* context,
                                               const v1::GetNodeRequest* request,
                                               v1::Node* response) {
  response->set_version(kVeilVersion);
  response->set_api_endpoint(settings_.endpoint);
  response->set_insecure_plaintext(settings_.insecure_plaintext);
  response->set_max_frame_bytes(settings_.max_frame_bytes);
  response->set_max_message_bytes(settings_.max_request_bytes);
  response->set_health_endpoint(settings_.health_listen);
  response->set_hub(settings_.hub);
  response->set_serve_socket(settings_.serve_socket);
  for (const std::string& address : tcp_.ListenAddresses()) {
    response->add_tcp_listeners()->set_address(address);
  }
  for (const auto& info : tcp_.Listeners()) {
    v1::NodeListener* l = response->add_listeners();
    l->set_transport(info.transport);
    l->set_address(info.address);
    l->set_route(info.hop);
  }
  for (const auto& info : tcp_.Connections()) {
    if (info.transport == "tcp") {
      v1::TcpConnection* c = response->add_tcp_connections();
      c->set_worker(info.worker);
      c->set_peer(info.peer);
      c->set_outgoing(info.outgoing);
    }
    v1::NodeConnection* c = response->add_connections();
    c->set_worker(info.worker);
    c->set_transport(info.transport);
    c->set_peer(info.peer);
    c->set_outgoing(info.outgoing);
  }
  return FinishUnary(context, absl::OkStatus());
}

}  // namespace veil::api
