// Alice: opens a mutually authenticated, end-to-end encrypted secure channel to Bob's listener,
// then reads lines from standard input, sends each to Bob's echoer through the channel and
// prints the echo.
//
//   alice unix:/path/to/alice/api.sock /tcp/127.0.0.1:4000/service/listener
#include <malloc.h>

#include <iostream>
#include <string>

#include "grpcpp/grpcpp.h"
#include "veil/v1/messaging.grpc.pb.h"
#include "veil/v1/secure_channel.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: alice API_TARGET LISTENER_ROUTE < lines\n";
    return 2;
  }
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());

  auto channels = veil::v1::SecureChannelService::NewStub(channel);
  veil::v1::CreateSecureChannelRequest create;
  create.set_route(argv[2]);
  create.mutable_trust_policy()->set_trust_everyone(true);
  veil::v1::SecureChannel secure_channel;
  grpc::ClientContext create_context;
  grpc::Status status = channels->CreateSecureChannel(&create_context, create, &secure_channel);
  if (!status.ok()) {
    std::cerr << "alice: no secure channel: " << status.error_message() << "\n";
    return 1;
  }
  std::cout << "[✓] End-to-end encrypted secure channel was established with "
            << secure_channel.remote_identifier() << std::endl;

  auto messaging = veil::v1::MessagingService::NewStub(channel);
  const std::string route = secure_channel.route() + "/service/echoer";
  std::string line;
  while (std::getline(std::cin, line)) {
    veil::v1::RequestRequest request;
    request.mutable_message()->set_route(route);
    request.mutable_message()->set_payload(line);
    veil::v1::RequestResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    status = messaging->Request(&context, request, &response);
    if (!status.ok()) {
      std::cerr << "alice: request failed: " << status.error_message() << "\n";
      return 1;
    }
    std::cout << "Alice received an echo: " << response.reply().payload() << std::endl;
  }
  return 0;
}
