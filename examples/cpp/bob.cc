// Bob: creates a secure channel listener on his sidecar, optionally a relay on a hub (for a
// sidecar with no open port, as in the seed scenario), and serves "echoer", which prints each
// message with the authenticated identity that sent it and echoes it back along its return
// route — through the secure channel it came from.
//
//   bob unix:/path/to/bob/api.sock [HUB_ROUTE]     e.g. HUB_ROUTE = /tcp/127.0.0.1:4000
#include <malloc.h>

#include <iostream>
#include <string>

#include "grpcpp/grpcpp.h"
#include "veil/v1/messaging.grpc.pb.h"
#include "veil/v1/relay.grpc.pb.h"
#include "veil/v1/secure_channel.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bob API_TARGET [HUB_ROUTE]   e.g. bob unix:/tmp/bob/api.sock /tcp/hub:4000\n";
    return 2;
  }
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);  // keep gRPC's receive buffers warm
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  // The sidecar may still be starting (in a pod, both containers start together).
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(60))) {
    std::cerr << "bob: no veil sidecar answers at " << argv[1] << "\n";
    return 1;
  }

  // A secure channel listener at "listener", trusting everyone (each delivery still says who).
  auto channels = veil::v1::SecureChannelService::NewStub(channel);
  veil::v1::CreateSecureChannelListenerRequest listen;
  listen.set_address("listener");
  listen.mutable_trust_policy()->set_trust_everyone(true);
  veil::v1::SecureChannelListener listener;
  grpc::ClientContext listen_context;
  grpc::Status status = channels->CreateSecureChannelListener(&listen_context, listen, &listener);
  if (status.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
    // The sidecar's declarative config made it (as the Helm chart's example does).
    std::cout << "[✓] Secure channel listener at /service/listener (from the sidecar's config)"
              << std::endl;
  } else if (!status.ok()) {
    std::cerr << "bob: cannot create the listener: " << status.error_message() << "\n";
    return 1;
  } else {
    std::cout << "[✓] Secure channel listener at /service/" << listener.address() << " as "
              << listener.identifier() << std::endl;
  }

  // A relay on the hub: others reach this sidecar through it, with no open port here.
  if (argc > 2) {
    auto relays = veil::v1::RelayService::NewStub(channel);
    veil::v1::CreateRelayRequest create;
    create.set_hub_route(argv[2]);  // no name: the hub picks one, as in the seed
    veil::v1::Relay relay;
    grpc::ClientContext relay_context;
    status = relays->CreateRelay(&relay_context, create, &relay);
    if (!status.ok()) {
      std::cerr << "bob: cannot create a relay on " << argv[2] << ": " << status.error_message() << "\n";
      return 1;
    }
    std::cout << "[✓] Relay was created on the hub at " << argv[2] << "\n"
              << "Forwarding address for Bob is:\n" << relay.address() << std::endl;
  }

  // The echoer: one Serve stream, no server and no inbound port.
  auto messaging = veil::v1::MessagingService::NewStub(channel);
  grpc::ClientContext context;
  auto stream = messaging->Serve(&context);
  veil::v1::ServeRequest open;
  open.mutable_open()->set_address("echoer");
  stream->Write(open);
  veil::v1::ServeResponse response;
  uint64_t batch = 0;
  while (stream->Read(&response)) {
    if (response.has_opened()) {
      std::cout << "[✓] Echoer serving " << response.opened().route() << std::endl;
      continue;
    }
    if (!response.has_deliveries()) continue;
    veil::v1::ServeRequest reply;
    reply.mutable_send()->set_batch_id(++batch);
    uint64_t last = 0;
    for (auto& delivery : *response.mutable_deliveries()->mutable_deliveries()) {
      std::cout << "[✓] Address: echoer, Received: " << delivery.payload() << " (from "
                << delivery.sender().identifier() << ")" << std::endl;
      auto* echo = reply.mutable_send()->add_messages();
      echo->set_route(delivery.return_route());
      echo->set_payload(std::move(*delivery.mutable_payload()));
      last = delivery.sequence();
    }
    veil::v1::ServeRequest ack;
    ack.mutable_ack()->set_sequence(last);
    if (!stream->Write(reply) || !stream->Write(ack)) break;
  }
  status = stream->Finish();
  if (!status.ok()) {
    std::cerr << "bob: stream ended: " << status.error_message() << "\n";
    return 1;
  }
  return 0;
}
