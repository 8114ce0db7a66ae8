// Alice: opens a mutually authenticated, end-to-end encrypted secure channel to Bob's listener,
// then reads lines from standard input, sends each to Bob's echoer through the channel and
// prints the echo. Uses the C++ helper in sdk-stubs/cpp.
//
//   alice unix:/path/to/alice/api.sock /tcp/127.0.0.1:4000/service/forward_to_bob/service/listener
#include <pthread.h>

#include <csignal>
#include <iostream>
#include <string>

#include "veil_sdk.h"

namespace {
volatile std::sig_atomic_t interrupted = 0;
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: alice API_TARGET LISTENER_ROUTE < lines\n";
    return 2;
  }
  // Ctrl-C (or SIGTERM) interrupts the read: stop reading, then clean up. gRPC's threads (made
  // while the signals are blocked) keep them blocked, so they reach this thread's read.
  struct sigaction stop {};
  stop.sa_handler = [](int) { interrupted = 1; };  // no SA_RESTART: the read fails with EINTR
  sigaction(SIGINT, &stop, nullptr);
  sigaction(SIGTERM, &stop, nullptr);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  try {
    auto alice = veil::sdk::Sidecar::Connect(argv[1]);
    veil::v1::SecureChannel channel = alice.OpenChannel(argv[2]);
    std::cout << "[✓] End-to-end encrypted secure channel was established with "
              << channel.remote_identifier() << std::endl;
    pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
    std::string line;
    try {
      while (!interrupted && std::getline(std::cin, line)) {
        veil::v1::Delivery echo = alice.Request(channel.route() + "/service/echoer", line);
        std::cout << "Alice received an echo: " << echo.payload() << std::endl;
      }
    } catch (const veil::sdk::Error&) {
      alice.CloseChannel(channel.address());
      throw;
    }
    alice.CloseChannel(channel.address());  // done: the channel ends on both sidecars
  } catch (const veil::sdk::Error& e) {
    std::cerr << "alice: " << e.what() << (e.reason().empty() ? "" : " [" + e.reason() + "]")
              << "\n";
    return 1;
  }
  return 0;
}
