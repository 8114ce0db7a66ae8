// echoer: an app that serves the address "echoer" on its sidecar and sends every message it
// receives back along its return route — Bob's echoer of the seed scenario.
//
//   echoer unix:/path/to/bob/api.sock [address]
//
// It needs no server and no inbound port: it opens one Serve stream to its sidecar.
#include <cstdio>
#include <iostream>
#include <string>

#include "grpcpp/grpcpp.h"
#include "veil/v1/messaging.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: echoer API_TARGET [ADDRESS]   e.g. echoer unix:/tmp/bob/api.sock\n";
    return 2;
  }
  const std::string address = argc > 2 ? argv[2] : "echoer";
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  auto stub = veil::v1::MessagingService::NewStub(channel);
  grpc::ClientContext context;
  auto stream = stub->Serve(&context);

  veil::v1::ServeRequest open;
  open.mutable_open()->set_address(address);
  stream->Write(open);

  veil::v1::ServeResponse response;
  uint64_t batch = 0;
  while (stream->Read(&response)) {
    if (response.has_opened()) {
      std::cout << "[✓] Serving address " << response.opened().route() << std::endl;
      continue;
    }
    if (!response.has_deliveries()) continue;  // results of our own sends
    veil::v1::ServeRequest reply;
    reply.mutable_send()->set_batch_id(++batch);
    uint64_t last = 0;
    for (auto& delivery : *response.mutable_deliveries()->mutable_deliveries()) {
      std::cout << "[✓] Address: " << address << ", Received: " << delivery.payload()
                << std::endl;
      auto* echo = reply.mutable_send()->add_messages();
      echo->set_route(delivery.return_route());
      echo->set_payload(std::move(*delivery.mutable_payload()));
      last = delivery.sequence();
    }
    veil::v1::ServeRequest ack;
    ack.mutable_ack()->set_sequence(last);
    if (!stream->Write(reply) || !stream->Write(ack)) break;
  }
  grpc::Status status = stream->Finish();
  if (!status.ok()) {
    std::cerr << "echoer: stream ended: " << status.error_message() << "\n";
    return 1;
  }
  return 0;
}
