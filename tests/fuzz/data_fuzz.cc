// The data-phase decryptor: an established pair, then arbitrary bytes as the peer's message.
// Never crashes; a forged message is never delivered (it fails to decrypt and is counted); the
// channel stays usable after. The same bytes as a BATCH plaintext (what a buggy peer with the
// key could send): never crashes, and whatever decodes has a valid onward route.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "sidecar/channel/channel_session.h"
#include "sidecar/channel/trust_policy.h"

namespace {

using veil::channel::ChannelSession;

struct Fixture {
  std::shared_ptr<const veil::identity::Identity> alice =
      veil::identity::Identity::Generate("alice", 0);
  std::shared_ptr<const veil::identity::Identity> bob =
      veil::identity::Identity::Generate("bob", 0);
  std::unique_ptr<veil::channel::TrustPolicy> everyone = veil::channel::TrustEveryone();
  ChannelSession initiator{ChannelSession::Role::kInitiator, alice, *everyone};
  ChannelSession responder{ChannelSession::Role::kResponder, bob, *everyone};
  Fixture() {
    auto s2 = responder.OnMessage(*initiator.Start());
    auto s3 = initiator.OnMessage(s2.reply);
    auto s4 = responder.OnMessage(s3.reply);
    if (!s4.reply.empty()) initiator.OnMessage(s4.reply);
    if (responder.state() != ChannelSession::State::kEstablished) std::abort();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture* f = new Fixture();
  std::string forged(reinterpret_cast<const char*>(data), size);
  auto step = f->responder.OnMessage(forged);
  if (!step.deliveries.empty()) std::abort();  // nobody without the key can make one
  if (f->responder.state() != ChannelSession::State::kEstablished) std::abort();
  // Opened in place (as the daemon does): refused alike, the buffer keeping its length.
  std::string in_place = forged;
  auto again = f->responder.OnMessageInPlace(in_place);
  if (!again.deliveries.empty() || in_place.size() != forged.size()) std::abort();
  if (f->responder.state() != ChannelSession::State::kEstablished) std::abort();
  std::vector<veil::core::Message> batch;
  if (veil::channel::DecodeChannelBatch(forged, batch).ok()) {
    if (batch.empty()) std::abort();
    for (const auto& m : batch) {
      if (m.onward.empty() || m.onward.size() > veil::core::kMaxRouteHops) std::abort();
    }
  }
  return 0;
}
