// Bob: creates a secure channel listener on his sidecar, optionally a relay on a hub (for a
// sidecar with no open port, as in the seed scenario), and serves "echoer", which prints each
// message with the authenticated identity that sent it and echoes it back along its return
// route — through the secure channel it came from. Uses the C++ helper in sdk-stubs/cpp.
//
//   bob unix:/path/to/bob/api.sock [HUB_ROUTE]     e.g. HUB_ROUTE = /tcp/127.0.0.1:4000
#include <iostream>
#include <string>

#include "veil_sdk.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr
        << "usage: bob API_TARGET [HUB_ROUTE]   e.g. bob unix:/tmp/bob/api.sock /tcp/hub:4000\n";
    return 2;
  }
  try {
    auto bob = veil::sdk::Sidecar::Connect(argv[1]);  // waits while the sidecar starts
    // A listener at "listener", trusting everyone (each delivery still says who sent it); on a
    // rerun, the one the last run made.
    try {
      auto listener = bob.EnsureListener("listener");
      std::cout << "[✓] Secure channel listener at /service/" << listener.address() << " as "
                << listener.identifier() << std::endl;
    } catch (const veil::sdk::Error& e) {
      if (e.code() != grpc::StatusCode::ALREADY_EXISTS) throw;
      // The sidecar's declarative config made one with its own trust policy (as the Helm
      // chart's example does).
      std::cout << "[✓] Secure channel listener at /service/listener (from the sidecar's config)"
                << std::endl;
    }
    if (argc > 2) {  // a relay on the hub: others reach this sidecar with no open port here
      veil::v1::Relay relay = bob.EnsureRelay(argv[2]);  // the hub picks the name; kept on rerun
      std::cout << "[✓] Relay was created on the hub at " << argv[2] << "\n"
                << "Forwarding address for Bob is:\n"
                << relay.address() << std::endl;
    }
    bob.Serve(
        "echoer",
        [](veil::sdk::Message& m) {
          std::cout << "[✓] Address: echoer, Received: " << m.payload() << " (from "
                    << m.sender().identifier() << ")" << std::endl;
          m.Reply(m.payload());
        },
        [](const std::string& route) { std::cout << "[✓] Echoer serving " << route << std::endl; });
  } catch (const veil::sdk::Error& e) {
    std::cerr << "bob: " << e.what() << (e.reason().empty() ? "" : " [" + e.reason() + "]") << "\n";
    return 1;
  }
  return 0;
}
