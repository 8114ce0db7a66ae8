// Secure channel layer vs raw libsodium ChaCha20-Poly1305, measured in the same run.
//
//   raw AEAD:      crypto_aead_chacha20poly1305_ietf encrypt + decrypt of the payload
//   channel layer: ChannelSession::Encrypt (inner routes + payload) + OnMessage (replay window,
//                  decrypt, decode) — everything a message costs between two sessions but I/O
//   handshakes:    full Noise XX with identity binding, both sides, one thread
//
// Prints one table: each figure beside its peer, with the ratio. Single-threaded.
#include <sodium.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "sidecar/channel/channel_session.h"

namespace {

using Clock = std::chrono::steady_clock;
using veil::channel::ChannelSession;

constexpr double kSecondsPerCase = 1.0;

// Runs `op` repeatedly for about kSecondsPerCase; returns operations per second.
template <typename Op>
double Rate(Op op) {
  for (int i = 0; i < 20; ++i) op();  // warm up
  uint64_t n = 0;
  auto start = Clock::now();
  auto deadline = start + std::chrono::duration<double>(kSecondsPerCase);
  Clock::time_point now;
  do {
    for (int i = 0; i < 16; ++i) op();
    n += 16;
    now = Clock::now();
  } while (now < deadline);
  return n / std::chrono::duration<double>(now - start).count();
}

struct Pair {
  std::shared_ptr<const veil::identity::Identity> a = veil::identity::Identity::Generate("a", 0);
  std::shared_ptr<const veil::identity::Identity> b = veil::identity::Identity::Generate("b", 0);
  std::unique_ptr<veil::channel::TrustPolicy> everyone = veil::channel::TrustEveryone();
  std::unique_ptr<ChannelSession> i, r;

  bool Handshake() {
    // A window nothing here reaches: flow control's accounting is measured, its waits are not
    // (there is no far app to grant credit).
    veil::channel::SessionOptions options;
    options.receive_window = uint64_t{1} << 60;
    i = std::make_unique<ChannelSession>(ChannelSession::Role::kInitiator, a, *everyone, options);
    r = std::make_unique<ChannelSession>(ChannelSession::Role::kResponder, b, *everyone, options);
    auto s2 = r->OnMessage(*i->Start());
    auto s3 = i->OnMessage(s2.reply);
    auto s4 = r->OnMessage(s3.reply);
    auto s5 = i->OnMessage(s4.reply);
    return s5.established;
  }
};

}  // namespace

int main() {
  if (sodium_init() < 0) return 1;
  std::printf("%-34s %16s %16s %8s\n", "case", "veil", "peer", "ratio");
  std::printf("%-34s %16s %16s %8s\n", "----", "----", "----", "-----");

  Pair pair;
  double handshakes = Rate([&] { pair.Handshake(); });
  std::printf("%-34s %13.0f /s %16s %8s\n", "Noise XX + identity handshakes", handshakes, "-", "-");

  pair.Handshake();
  auto onward = *veil::core::Route::Parse("/service/echoer");
  auto back = *veil::core::Route::Parse("/service/app");
  for (size_t size : {size_t{64}, size_t{1024}, size_t{64 * 1024}}) {
    std::string payload(size, 'p');
    // Raw AEAD: encrypt then decrypt, reusing buffers.
    unsigned char key[32], nonce[12] = {0};
    randombytes_buf(key, sizeof(key));
    std::vector<unsigned char> ct(size + 16), pt(size);
    uint64_t counter = 0;
    double raw = Rate([&] {
      ++counter;
      std::memcpy(nonce + 4, &counter, 8);
      unsigned long long clen, mlen;
      crypto_aead_chacha20poly1305_ietf_encrypt(
          ct.data(), &clen, reinterpret_cast<const unsigned char*>(payload.data()), size, nullptr,
          0, nullptr, nonce, key);
      if (crypto_aead_chacha20poly1305_ietf_decrypt(pt.data(), &mlen, nullptr, ct.data(), clen,
                                                    nullptr, 0, nonce, key) != 0) {
        std::abort();  // the peer measurement must really open what it sealed
      }
    });
    // Channel layer: one session encrypts, the other opens and decodes.
    std::string wire;
    double channel = Rate([&] {
      wire.clear();
      (void)pair.i->Encrypt(onward, back, payload, wire);
      auto step = pair.r->OnMessage(wire);
      if (step.deliveries.size() != 1 || step.deliveries[0].payload.size() != size) std::abort();
    });
    char label[64];
    std::snprintf(label, sizeof(label), "encrypt+decrypt %zu B (MB/s)", size);
    std::printf("%-34s %16.1f %16.1f %7.2fx\n", label, channel * size / 1e6, raw * size / 1e6,
                channel / raw);
    std::snprintf(label, sizeof(label), "encrypt+decrypt %zu B (msg/s)", size);
    std::printf("%-34s %16.0f %16.0f %7.2fx\n", label, channel, raw, channel / raw);
  }
  std::printf("\npeer = libsodium crypto_aead_chacha20poly1305_ietf, same machine, same run.\n");
  return 0;
}
