// The secure channel's handshake reader at each message position: the first input byte picks
// the position (responder reading HS1; initiator reading HS2; responder reading HS3), the rest
// replaces the honest message there. Never crashes; a forged message never establishes.
#include <cstdint>
#include <cstdlib>
#include <string>

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
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture* f = new Fixture();
  if (size == 0) return 0;
  int position = data[0] % 3;
  std::string forged(reinterpret_cast<const char*>(data + 1), size - 1);
  ChannelSession initiator(ChannelSession::Role::kInitiator, f->alice, *f->everyone);
  ChannelSession responder(ChannelSession::Role::kResponder, f->bob, *f->everyone);
  auto hs1 = initiator.Start();
  if (!hs1.ok()) std::abort();
  if (position == 0) {
    auto step = responder.OnMessage(forged);
    if (step.established) std::abort();
    return 0;
  }
  auto s2 = responder.OnMessage(*hs1);
  if (position == 1) {
    auto step = initiator.OnMessage(forged);
    if (step.established && forged != s2.reply) std::abort();
    return 0;
  }
  auto s3 = initiator.OnMessage(s2.reply);
  auto step = responder.OnMessage(forged);
  if (step.established && forged != s3.reply) std::abort();
  return 0;
}
