// Alice: opens a mutually authenticated, end-to-end encrypted secure channel to Bob's listener,
// then reads lines from standard input, sends each to Bob's echoer through the channel and
// prints the echo. Uses the C++ helper in sdk-stubs/cpp.
//
//   alice unix:/path/to/alice/api.sock /tcp/127.0.0.1:4000/service/forward_to_bob/service/listener
#include <iostream>
#include <string>

#include "veil_sdk.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: alice API_TARGET LISTENER_ROUTE < lines\n";
    return 2;
  }
  try {
    auto alice = veil::sdk::Sidecar::Connect(argv[1]);
    veil::v1::SecureChannel channel = alice.OpenChannel(argv[2]);
    std::cout << "[✓] End-to-end encrypted secure channel was established with "
              << channel.remote_identifier() << std::endl;
    std::string line;
    while (std::getline(std::cin, line)) {
      veil::v1::Delivery echo = alice.Request(channel.route() + "/service/echoer", line);
      std::cout << "Alice received an echo: " << echo.payload() << std::endl;
    }
  } catch (const veil::sdk::Error& e) {
    std::cerr << "alice: " << e.what() << (e.reason().empty() ? "" : " [" + e.reason() + "]") << "\n";
    return 1;
  }
  return 0;
}
