// request_lines: reads lines from standard input and sends each to ROUTE with a Request,
// printing the reply — Alice's loop of the seed scenario.
//
//   request_lines unix:/path/to/alice/api.sock /tcp/127.0.0.1:4000/service/echoer
#include <iostream>
#include <string>

#include "grpcpp/grpcpp.h"
#include "veil/v1/messaging.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: request_lines API_TARGET ROUTE < lines\n";
    return 2;
  }
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  auto stub = veil::v1::MessagingService::NewStub(channel);
  std::string line;
  while (std::getline(std::cin, line)) {
    veil::v1::RequestRequest request;
    request.mutable_message()->set_route(argv[2]);
    request.mutable_message()->set_payload(line);
    veil::v1::RequestResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status status = stub->Request(&context, request, &response);
    if (!status.ok()) {
      std::cerr << "request failed: " << status.error_message() << "\n";
      return 1;
    }
    std::cout << "Alice received an echo: " << response.reply().payload() << std::endl;
  }
  return 0;
}
