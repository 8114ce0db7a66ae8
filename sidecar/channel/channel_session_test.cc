// The secure channel protocol end to end between two sessions in memory: identity binding,
// trust, every handshake failure on both sides, tampering, replay, rekey, close.
#include "sidecar/channel/channel_session.h"

#include <limits>

#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "veil/wire/v1/channel.pb.h"

namespace veil::channel {
namespace {

using State = ChannelSession::State;
using Role = ChannelSession::Role;

core::Route R(absl::string_view text) { return *core::Route::Parse(text); }

class ChannelSessionTest : public ::testing::Test {
 protected:
  std::shared_ptr<const identity::Identity> alice_ = identity::Identity::Generate("alice", 0);
  std::shared_ptr<const identity::Identity> bob_ = identity::Identity::Generate("bob", 0);
  std::unique_ptr<TrustPolicy> everyone_ = TrustEveryone();

  // Runs the handshake; returns the bytes of each message, in order (HS1, HS2, HS3, CONFIRM).
  std::vector<std::string> Handshake(ChannelSession& i, ChannelSession& r) {
    std::vector<std::string> wire;
    wire.push_back(*i.Start());
    auto s2 = r.OnMessage(wire.back());
    EXPECT_TRUE(s2.error.ok()) << s2.error;
    wire.push_back(s2.reply);
    auto s3 = i.OnMessage(wire.back());
    EXPECT_TRUE(s3.error.ok()) << s3.error;
    wire.push_back(s3.reply);
    auto s4 = r.OnMessage(wire.back());
    EXPECT_TRUE(s4.error.ok()) << s4.error;
    EXPECT_TRUE(s4.established);
    wire.push_back(s4.reply);
    auto s5 = i.OnMessage(wire.back());
    EXPECT_TRUE(s5.error.ok()) << s5.error;
    EXPECT_TRUE(s5.established);
    return wire;
  }

  // Runs the handshake between fresh `i` and `r` up to handshake message `position` (0: HS1,
  // 1: HS2, 2: HS3) and returns that message with the session that must read it.
  std::pair<std::string, ChannelSession*> MessageAt(int position, ChannelSession& i,
                                                    ChannelSession& r) {
    std::string m = *i.Start();
    ChannelSession* reader = &r;
    if (position >= 1) {
      m = r.OnMessage(m).reply;
      reader = &i;
    }
    if (position == 2) {
      m = i.OnMessage(m).reply;
      reader = &r;
    }
    return {m, reader};
  }

  std::string Data(ChannelSession& from, absl::string_view payload) {
    std::string out;
    EXPECT_TRUE(from.Encrypt(R("/service/echoer"), R("/service/app"), payload, out).ok());
    return out;
  }
};

TEST_F(ChannelSessionTest, HandshakeAuthenticatesBothIdentities) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  Handshake(i, r);
  EXPECT_EQ(i.state(), State::kEstablished);
  EXPECT_EQ(r.state(), State::kEstablished);
  EXPECT_EQ(i.remote_identifier(), bob_->identifier());
  EXPECT_EQ(r.remote_identifier(), alice_->identifier());
}

// CONFIRM is acknowledged: the responder waits for the initiator's ACK (or anything
// authenticated from it) to know the channel is held at both ends; with an initiator that does
// not offer "confirm-ack" (an older node) it does not wait.
TEST_F(ChannelSessionTest, TheInitiatorConfirmsTheConfirm) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  auto s2 = r.OnMessage(*i.Start());
  auto s3 = i.OnMessage(s2.reply);
  auto s4 = r.OnMessage(s3.reply);
  ASSERT_TRUE(s4.established);
  EXPECT_TRUE(r.awaiting_confirmation());
  auto s5 = i.OnMessage(s4.reply);
  ASSERT_TRUE(s5.established);
  ASSERT_FALSE(s5.reply.empty());
  EXPECT_EQ(static_cast<ChannelMessageType>(s5.reply[0]), ChannelMessageType::kConfirmAck);
  auto s6 = r.OnMessage(s5.reply);
  EXPECT_TRUE(s6.error.ok()) << s6.error;
  EXPECT_TRUE(s6.deliveries.empty());
  EXPECT_FALSE(r.awaiting_confirmation());
  // An ACK from the responder's side (it has no business sending one) is dropped.
  {
    ChannelSession i2(Role::kInitiator, alice_, *everyone_);
    ChannelSession r2(Role::kResponder, bob_, *everyone_);
    Handshake(i2, r2);
    EXPECT_TRUE(r2.awaiting_confirmation());  // the helper does not deliver the ACK
    i2.OnMessage(Data(r2, "data confirms too"));
    EXPECT_TRUE(r2.awaiting_confirmation());  // data *from* the responder does not
    r2.OnMessage(Data(i2, "from the initiator"));
    EXPECT_FALSE(r2.awaiting_confirmation());
  }
  SessionOptions older;
  older.offer_confirm_ack = false;
  ChannelSession old_i(Role::kInitiator, alice_, *everyone_, older);
  ChannelSession r3(Role::kResponder, bob_, *everyone_);
  auto t2 = r3.OnMessage(*old_i.Start());
  auto t3 = old_i.OnMessage(t2.reply);
  auto t4 = r3.OnMessage(t3.reply);
  ASSERT_TRUE(t4.established);
  EXPECT_FALSE(r3.awaiting_confirmation());
  auto t5 = old_i.OnMessage(t4.reply);
  EXPECT_TRUE(t5.established);
  EXPECT_TRUE(t5.reply.empty());  // an older initiator sends no ACK
}

TEST_F(ChannelSessionTest, DataBothWaysWithRoutes) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  Handshake(i, r);
  auto step = r.OnMessage(Data(i, "hello bob"));
  ASSERT_TRUE(step.error.ok());
  ASSERT_FALSE(step.deliveries.empty());
  EXPECT_EQ(step.deliveries.at(0).payload, "hello bob");
  EXPECT_EQ(step.deliveries.at(0).onward.ToString(), "/service/echoer");
  EXPECT_EQ(step.deliveries.at(0).return_route.ToString(), "/service/app");
  auto back = i.OnMessage(Data(r, "hello alice"));
  ASSERT_FALSE(back.deliveries.empty());
  EXPECT_EQ(back.deliveries.at(0).payload, "hello alice");
}

TEST_F(ChannelSessionTest, UntrustedResponderFailsBothSides) {
  auto only_carol = *TrustIdentifiers({identity::Identity::Generate("carol", 0)->identifier()});
  ChannelSession i(Role::kInitiator, alice_, *only_carol);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  auto s2 = r.OnMessage(*i.Start());
  auto s3 = i.OnMessage(s2.reply);
  EXPECT_EQ(s3.error.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(s3.error), "UNTRUSTED_IDENTITY");
  EXPECT_EQ(i.state(), State::kFailed);
  auto s4 = r.OnMessage(s3.reply);  // the ERR message tells the responder
  EXPECT_EQ(ReasonOf(s4.error), "PEER_REFUSED_HANDSHAKE");
  EXPECT_NE(s4.error.message().find("identity not trusted"), std::string::npos) << s4.error;
  EXPECT_EQ(r.state(), State::kFailed);
}

TEST_F(ChannelSessionTest, UntrustedInitiatorFailsBothSides) {
  auto only_carol = *TrustIdentifiers({identity::Identity::Generate("carol", 0)->identifier()});
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *only_carol);
  auto s2 = r.OnMessage(*i.Start());
  auto s3 = i.OnMessage(s2.reply);
  auto s4 = r.OnMessage(s3.reply);
  EXPECT_EQ(ReasonOf(s4.error), "UNTRUSTED_IDENTITY");
  EXPECT_EQ(r.state(), State::kFailed);
  auto s5 = i.OnMessage(s4.reply);
  EXPECT_EQ(ReasonOf(s5.error), "PEER_REFUSED_HANDSHAKE");
  EXPECT_EQ(i.state(), State::kFailed);
}

TEST_F(ChannelSessionTest, StolenIdentityProofIsRejected) {
  // Mallory has her own static key but presents Bob's identity and signature.
  RawStaticKey mallory_static(vault::GenerateX25519());
  HandshakeState mallory(HandshakeState::Role::kResponder, kPrologue, mallory_static);
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  std::string m1 = *i.Start();
  ASSERT_TRUE(mallory.ReadMessage(absl::string_view(m1).substr(1)).ok());
  wire::v1::IdentityProof proof;
  proof.set_identity_public_key(bob_->public_key());
  proof.set_static_key_signature(bob_->keys()->static_key_signature());
  std::string m2 = std::string(1, 0x02) + *mallory.WriteMessage(proof.SerializeAsString());
  auto step = i.OnMessage(m2);
  EXPECT_EQ(step.error.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ReasonOf(step.error), "BAD_IDENTITY_PROOF");
  EXPECT_EQ(i.state(), State::kFailed);
  EXPECT_FALSE(step.reply.empty());  // tells the peer
}

TEST_F(ChannelSessionTest, GarbledHandshakeAtEachPositionFailsWithAClearError) {
  for (int position = 0; position < 3; ++position) {
    for (size_t byte : {size_t{0}, size_t{1}, size_t{40}, size_t{90}}) {
      ChannelSession i(Role::kInitiator, alice_, *everyone_);
      ChannelSession r(Role::kResponder, bob_, *everyone_);
      auto [m, reader] = MessageAt(position, i, r);
      ChannelSession::Step step;
      if (byte >= m.size()) continue;
      m[byte] ^= 0x40;
      step = reader->OnMessage(m);
      if (position == 0 && byte > 0) {
        // Message 1's ephemeral key is not authenticated until message 2.
        ASSERT_TRUE(step.error.ok());
        step = i.OnMessage(step.reply);
        reader = &i;
      }
      EXPECT_FALSE(step.error.ok()) << position << "/" << byte;
      EXPECT_EQ(reader->state(), State::kFailed) << position << "/" << byte;
      EXPECT_FALSE(step.reply.empty()) << "the peer is told";
    }
  }
}

TEST_F(ChannelSessionTest, TruncatedHandshakeMessagesFail) {
  for (int position = 0; position < 3; ++position) {
    ChannelSession i(Role::kInitiator, alice_, *everyone_);
    ChannelSession r(Role::kResponder, bob_, *everyone_);
    auto [m, reader] = MessageAt(position, i, r);
    auto step = reader->OnMessage(m.substr(0, 20));
    EXPECT_FALSE(step.error.ok()) << position;
    EXPECT_EQ(reader->state(), State::kFailed);
  }
}

TEST_F(ChannelSessionTest, MessagesInTheWrongStateFail) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  std::string m1 = *i.Start();
  // HS1 to an initiator, HS3 first to a responder, DATA before the handshake.
  EXPECT_EQ(ReasonOf(i.OnMessage(m1).error), "HANDSHAKE_FAILED");
  ChannelSession r2(Role::kResponder, bob_, *everyone_);
  std::string fake3 = m1;
  fake3[0] = 0x03;
  EXPECT_FALSE(r2.OnMessage(fake3).error.ok());
  ChannelSession r3(Role::kResponder, bob_, *everyone_);
  EXPECT_FALSE(r3.OnMessage(std::string(1, 0x10) + std::string(40, 'x')).error.ok());
  EXPECT_EQ(r3.state(), State::kFailed);
  ChannelSession r4(Role::kResponder, bob_, *everyone_);
  EXPECT_FALSE(r4.OnMessage("").error.ok());
  ChannelSession r5(Role::kResponder, bob_, *everyone_);
  EXPECT_FALSE(r5.OnMessage(std::string(1, 0x7f)).error.ok());
  EXPECT_FALSE(i.Encrypt(R("/service/x"), core::Route(), "x", m1).ok());  // not established
}

TEST_F(ChannelSessionTest, EveryTamperedByteOfADataMessageIsRejectedAndTheChannelStaysUp) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  Handshake(i, r);
  std::string good = Data(i, "a message worth protecting");
  for (size_t b = 0; b < good.size(); ++b) {
    std::string bad = good;
    bad[b] ^= 0x01;
    auto step = r.OnMessage(bad);
    EXPECT_FALSE(step.error.ok()) << b;
    EXPECT_TRUE(step.deliveries.empty()) << b;
    EXPECT_EQ(r.state(), State::kEstablished) << b;
  }
  EXPECT_GE(r.decrypt_failures(), good.size() - 1);
  auto step = r.OnMessage(good);  // the genuine one still opens
  ASSERT_TRUE(step.error.ok()) << step.error;
  EXPECT_EQ(step.deliveries.at(0).payload, "a message worth protecting");
}

// Opening in place (as the daemon does, on the message it owns) gives what opening a copy
// gives, and refuses alike.
TEST_F(ChannelSessionTest, OpeningInPlaceMatchesAndRefusesAlike) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  Handshake(i, r);
  std::string good = Data(i, std::string(70000, 'd'));
  for (size_t b : {size_t{0}, size_t{5}, good.size() / 2, good.size() - 1}) {
    std::string bad = good;
    bad[b] ^= 0x01;
    auto step = r.OnMessageInPlace(bad);
    EXPECT_FALSE(step.error.ok()) << b;
    EXPECT_TRUE(step.deliveries.empty()) << b;
    EXPECT_EQ(bad.find(std::string(32, 'd')), std::string::npos) << b;  // no plaintext left
  }
  std::string copy = good;
  auto step = r.OnMessageInPlace(copy);
  ASSERT_TRUE(step.error.ok()) << step.error;
  ASSERT_EQ(step.deliveries.size(), 1u);
  EXPECT_EQ(step.deliveries[0].payload, std::string(70000, 'd'));
  EXPECT_EQ(step.deliveries[0].onward.ToString(), "/service/echoer");
  copy = good;
  EXPECT_EQ(ReasonOf(r.OnMessageInPlace(copy).error), "REPLAYED");

  std::vector<core::Message> msgs(3);
  for (size_t n = 0; n < msgs.size(); ++n) {
    msgs[n].onward = R("/service/a");
    msgs[n].return_route = R("/service/app");
    msgs[n].payload = std::string(100 * (n + 1), static_cast<char>('a' + n));
  }
  std::string record;
  ASSERT_TRUE(i.EncryptBatch(msgs, record).ok());
  auto batch = r.OnMessageInPlace(record);
  ASSERT_TRUE(batch.error.ok()) << batch.error;
  ASSERT_EQ(batch.deliveries.size(), 3u);
  for (size_t n = 0; n < 3; ++n) {
    EXPECT_EQ(batch.deliveries[n].payload, std::string(100 * (n + 1), static_cast<char>('a' + n)));
  }
  record.assign(record.size(), 'x');  // the deliveries do not refer to the buffer
  EXPECT_EQ(batch.deliveries[2].payload, std::string(300, 'c'));
}

TEST_F(ChannelSessionTest, ReplayIsRejected) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  Handshake(i, r);
  std::string m = Data(i, "once");
  ASSERT_FALSE(r.OnMessage(m).deliveries.empty());
  auto again = r.OnMessage(m);
  EXPECT_TRUE(again.deliveries.empty());
  EXPECT_EQ(ReasonOf(again.error), "REPLAYED");
  EXPECT_EQ(r.replays(), 1u);
  EXPECT_EQ(r.state(), State::kEstablished);
}

TEST_F(ChannelSessionTest, RekeyAcrossManyIntervalsWithReordering) {
  SessionOptions small;
  small.rekey_interval = 10;
  ChannelSession i(Role::kInitiator, alice_, *everyone_, small);
  ChannelSession r(Role::kResponder, bob_, *everyone_, small);
  Handshake(i, r);  // the responder's CONFIRM used its counter 0
  std::vector<std::string> sent;
  for (int n = 0; n < 95; ++n) sent.push_back(Data(i, std::to_string(n)));
  // Deliver in order, except swap pairs across each rekey boundary.
  for (size_t k = 9; k + 1 < sent.size(); k += 10) std::swap(sent[k], sent[k + 1]);
  std::vector<std::string> got;
  for (const auto& m : sent) {
    auto step = r.OnMessage(m);
    ASSERT_TRUE(step.error.ok()) << step.error;
    got.push_back(step.deliveries.at(0).payload);
  }
  EXPECT_EQ(got.size(), 95u);
  // The other direction still works after the responder's own rekeys (noise_test checks that
  // REKEY really changes the key).
  for (int n = 0; n < 25; ++n) ASSERT_FALSE(i.OnMessage(Data(r, "r")).deliveries.empty());
  auto back = i.OnMessage(Data(r, "still here"));
  EXPECT_EQ(back.deliveries.at(0).payload, "still here");
}

TEST_F(ChannelSessionTest, LargeMessagesAndTenThousandInOrder) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  Handshake(i, r);
  std::string big(1 << 20, '\0');
  for (size_t k = 0; k < big.size(); ++k) big[k] = static_cast<char>(k * 31);
  auto step = r.OnMessage(Data(i, big));
  ASSERT_FALSE(step.deliveries.empty());
  EXPECT_EQ(step.deliveries.at(0).payload, big);
  for (int n = 0; n < 10000; ++n) {
    auto s = r.OnMessage(Data(i, std::to_string(n)));
    ASSERT_FALSE(s.deliveries.empty()) << n;
    ASSERT_EQ(s.deliveries.at(0).payload, std::to_string(n));
  }
}

TEST_F(ChannelSessionTest, CloseIsAuthenticatedAndForgedErrorsCannotEndAChannel) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  Handshake(i, r);
  auto forged = r.OnMessage(ChannelSession::HandshakeError("go away"));
  EXPECT_FALSE(forged.error.ok());
  EXPECT_EQ(r.state(), State::kEstablished);
  std::string forged_close = std::string(1, 0x12) + std::string(8 + 16, '\0');
  EXPECT_FALSE(r.OnMessage(forged_close).closed);
  EXPECT_EQ(r.state(), State::kEstablished);
  std::string late = Data(i, "late");
  auto closed = r.OnMessage(i.Close());
  EXPECT_TRUE(closed.closed);
  EXPECT_EQ(r.state(), State::kClosed);
  EXPECT_EQ(i.state(), State::kClosed);
  EXPECT_TRUE(r.OnMessage(late).deliveries.empty());  // nothing after a close
  std::string after;
  EXPECT_FALSE(i.Encrypt(R("/service/x"), core::Route(), "x", after).ok());
}

// A BATCH carries several messages in one record, in order, each with its own routes (groups
// of consecutive messages share them); it is authenticated as a whole, its type byte included.
TEST_F(ChannelSessionTest, BatchCarriesMessagesInOrderWithTheirRoutes) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  Handshake(i, r);
  const uint64_t sent_before = i.messages_sent();
  std::vector<core::Message> msgs(5);
  const char* routes[] = {"/service/a", "/service/a", "/service/b/service/c", "/service/a",
                          "/service/a"};
  for (size_t n = 0; n < msgs.size(); ++n) {
    msgs[n].onward = R(routes[n]);
    msgs[n].return_route = R(n == 4 ? "/service/other" : "/service/app");
    msgs[n].payload = n == 1 ? "" : std::string(n * 1000, static_cast<char>('a' + n));
  }
  std::string record;
  ASSERT_TRUE(i.EncryptBatch(msgs, record).ok());
  EXPECT_EQ(i.messages_sent(), sent_before + 5);

  for (char type : {char(0x10), char(0x11), char(0x12)}) {  // the type is authenticated
    std::string retyped = record;
    retyped[0] = type;
    auto step = r.OnMessage(retyped);
    EXPECT_FALSE(step.error.ok());
    EXPECT_TRUE(step.deliveries.empty());
  }
  std::string tampered = record;
  tampered[tampered.size() / 2] ^= 1;
  EXPECT_EQ(ReasonOf(r.OnMessage(tampered).error), "DECRYPT_FAILED");

  auto step = r.OnMessage(record);
  ASSERT_TRUE(step.error.ok()) << step.error;
  ASSERT_EQ(step.deliveries.size(), 5u);
  for (size_t n = 0; n < 5; ++n) {
    EXPECT_EQ(step.deliveries[n].onward.ToString(), routes[n]) << n;
    EXPECT_EQ(step.deliveries[n].return_route.ToString(),
              n == 4 ? "/service/other" : "/service/app");
    EXPECT_EQ(step.deliveries[n].payload,
              n == 1 ? "" : std::string(n * 1000, static_cast<char>('a' + n)));
  }
  EXPECT_EQ(r.messages_received(), 5u);
  EXPECT_EQ(r.decrypt_failures(), 4u);
  EXPECT_EQ(ReasonOf(r.OnMessage(record).error), "REPLAYED");
  EXPECT_EQ(r.state(), State::kEstablished);

  // Single messages and batches share the counter.
  auto next = r.OnMessage(Data(i, "after the batch"));
  ASSERT_EQ(next.deliveries.size(), 1u);
  EXPECT_EQ(next.deliveries[0].payload, "after the batch");

  std::string after_close;
  (void)i.Close();
  EXPECT_FALSE(i.EncryptBatch(msgs, after_close).ok());
}

// A peer that does not list "batch" in its proof (an older node) is never sent a BATCH; both
// sides learn what the other takes from the authenticated handshake.
TEST_F(ChannelSessionTest, BatchesOnlyToPeersThatTakeThem) {
  SessionOptions old_node;
  old_node.offer_batch = false;
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_, old_node);
  Handshake(i, r);
  EXPECT_FALSE(i.peer_takes_batches());
  EXPECT_TRUE(r.peer_takes_batches());
  std::vector<core::Message> msgs(2);
  for (auto& m : msgs) m.onward = R("/service/a");
  std::string out;
  EXPECT_EQ(ReasonOf(i.EncryptBatch(msgs, out)), "BATCH_NOT_SUPPORTED");
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(r.EncryptBatch(msgs, out).ok());
}

// What a peer with the key could still get wrong inside a BATCH: each is refused as a whole,
// with MALFORMED_FRAME, never a crash or a partial delivery.
TEST(ChannelBatchTest, MalformedBatchesAreRefused) {
  auto group = [](wire::v1::ChannelBatch& b, uint32_t type, const std::string& value,
                  int payloads) {
    auto* g = b.add_groups();
    auto* a = g->add_onward_route();
    a->set_type(type);
    a->set_value(value);
    for (int n = 0; n < payloads; ++n) g->add_payloads("p" + std::to_string(n));
    return g;
  };
  std::vector<core::Message> out;
  wire::v1::ChannelBatch good;
  group(good, 0, "echoer", 2);
  group(good, 1, "127.0.0.1:4000", 1);
  ASSERT_TRUE(DecodeChannelBatch(good.SerializeAsString(), out).ok());
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[2].onward.ToString(), "/tcp/127.0.0.1:4000");
  EXPECT_EQ(out[1].payload, "p1");

  std::vector<std::pair<std::string, std::string>> cases;
  cases.emplace_back("not protobuf", std::string("\xff\xff\xff", 3));
  cases.emplace_back("no group", "");
  {
    wire::v1::ChannelBatch b;
    group(b, 0, "echoer", 0);
    cases.emplace_back("a group without payloads", b.SerializeAsString());
  }
  {
    wire::v1::ChannelBatch b;
    b.add_groups()->add_payloads("x");
    cases.emplace_back("empty onward route", b.SerializeAsString());
  }
  {
    wire::v1::ChannelBatch b;
    group(b, 7, "x", 1);
    cases.emplace_back("unknown address type", b.SerializeAsString());
  }
  {
    wire::v1::ChannelBatch b;
    group(b, 0, "bad name!", 1);
    cases.emplace_back("invalid local name", b.SerializeAsString());
  }
  {
    wire::v1::ChannelBatch b;
    auto* g = group(b, 0, "echoer", 1);
    for (int n = 0; n < 40; ++n) {
      auto* a = g->add_return_route();
      a->set_type(0);
      a->set_value("hop");
    }
    cases.emplace_back("33+ hops", b.SerializeAsString());
  }
  for (const auto& [name, bytes] : cases) {
    out.clear();
    absl::Status s = DecodeChannelBatch(bytes, out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(ReasonOf(s), "MALFORMED_FRAME") << name;
  }
}

// Flow control: each side announces its receive window in its proof; a sender may send while
// its record bytes are below the peer's limit (one record may overshoot), and the receiver's
// CREDIT raises that limit by what its deliveries freed.
TEST_F(ChannelSessionTest, FlowControlWindowAndCredit) {
  SessionOptions small;
  small.receive_window = 4096;
  ChannelSession i(Role::kInitiator, alice_, *everyone_);       // takes 2 MiB
  ChannelSession r(Role::kResponder, bob_, *everyone_, small);  // takes 4 KiB
  Handshake(i, r);
  ASSERT_TRUE(i.flow_controlled());
  ASSERT_TRUE(r.flow_controlled());
  EXPECT_EQ(i.send_limit(), 4096u);
  EXPECT_EQ(r.send_limit(), kDefaultReceiveWindow);
  const std::string payload(1000, 'x');
  uint64_t records = 0, bytes = 0;
  std::vector<std::string> sent;
  while (i.MaySend()) {
    sent.push_back(Data(i, payload));
    bytes += sent.back().size();
    ++records;
  }
  // ~1,055-byte records into a 4 KiB window: three fit, the fourth overshoots it.
  EXPECT_EQ(records, 4u);
  EXPECT_EQ(i.sent_bytes(), bytes);
  EXPECT_EQ(i.send_credit(), 0u);
  uint64_t received = 0;
  for (const std::string& m : sent) {
    auto step = r.OnMessage(m);
    ASSERT_TRUE(step.error.ok()) << step.error;
    ASSERT_EQ(step.deliveries.size(), 1u);
    EXPECT_EQ(step.record_bytes, m.size());
    received += step.record_bytes;
  }
  EXPECT_EQ(r.received_bytes(), received);
  // Nothing handed on yet: no credit to give. Two records handed on: their bytes come back.
  EXPECT_TRUE(r.CreditFor(0).empty());
  const uint64_t consumed = sent[0].size() + sent[1].size();
  std::string credit = r.CreditFor(consumed);
  ASSERT_FALSE(credit.empty());
  EXPECT_EQ(static_cast<ChannelMessageType>(credit[0]), ChannelMessageType::kCredit);
  EXPECT_EQ(r.receive_limit(), consumed + 4096);
  EXPECT_TRUE(r.CreditFor(consumed).empty()) << "the same grant twice";
  auto step = i.OnMessage(credit);
  ASSERT_TRUE(step.error.ok()) << step.error;
  EXPECT_TRUE(step.credited);
  EXPECT_TRUE(step.deliveries.empty());
  EXPECT_EQ(i.send_limit(), consumed + 4096);
  EXPECT_TRUE(i.MaySend());
  // A replayed CREDIT is dropped; an older (lower) one changes nothing.
  auto replayed = i.OnMessage(credit);
  EXPECT_EQ(ReasonOf(replayed.error), "REPLAYED");
  EXPECT_FALSE(replayed.credited);
  // Tampered: dropped, counted, the limit unchanged.
  std::string forged = r.CreditFor(consumed + 2000);
  forged.back() ^= 1;
  auto tampered = i.OnMessage(forged);
  EXPECT_EQ(ReasonOf(tampered.error), "DECRYPT_FAILED");
  EXPECT_EQ(i.send_limit(), consumed + 4096);
  EXPECT_EQ(i.state(), State::kEstablished);
}

// A peer that ignores its limit is cut off once it is a whole window past it: the session
// fails (terminal), with FLOW_CONTROL_VIOLATED.
TEST_F(ChannelSessionTest, APeerIgnoringTheWindowEndsTheChannel) {
  SessionOptions small;
  small.receive_window = 4096;
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_, small);
  Handshake(i, r);
  const std::string payload(1000, 'x');
  ChannelSession::Step step;
  int accepted = 0;
  for (int n = 0; n < 20; ++n) {  // Encrypt does not stop a sender: MaySend is its to ask
    step = r.OnMessage(Data(i, payload));
    if (!step.error.ok()) break;
    ++accepted;
  }
  // Up to a whole window past the limit is taken (overshoot, reordering): 7 records of ~1,055
  // bytes are within 8 KiB; the 8th is not.
  EXPECT_EQ(accepted, 7);
  EXPECT_EQ(ReasonOf(step.error), "FLOW_CONTROL_VIOLATED") << step.error;
  EXPECT_EQ(step.error.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(step.deliveries.empty());
  EXPECT_EQ(r.state(), State::kFailed);
}

// Without a window on either side (an older node, or --channel-window-bytes 0) there is no
// flow control either way, and a CREDIT is refused.
TEST_F(ChannelSessionTest, NoFlowControlWhenEitherSideHasNoWindow) {
  SessionOptions off;
  off.receive_window = 0;
  ChannelSession i(Role::kInitiator, alice_, *everyone_, off);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  Handshake(i, r);
  EXPECT_FALSE(i.flow_controlled());
  EXPECT_FALSE(r.flow_controlled());
  for (int n = 0; n < 3000; ++n) ASSERT_TRUE(i.MaySend());  // nothing counts against it
  const std::string payload(4096, 'x');
  for (int n = 0; n < 1000; ++n) {  // 4 MiB: past any default window
    auto step = r.OnMessage(Data(i, payload));
    ASSERT_TRUE(step.error.ok()) << step.error;
  }
  EXPECT_TRUE(r.CreditFor(1 << 30).empty());
  EXPECT_EQ(r.send_credit(), std::numeric_limits<uint64_t>::max());
}

// The window counts whole records: a BATCH record's bytes once, whatever it carries.
TEST_F(ChannelSessionTest, ABatchRecordCountsOnce) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  Handshake(i, r);
  std::vector<core::Message> msgs(10);
  for (auto& m : msgs) {
    m.onward = R("/service/echoer");
    m.return_route = R("/service/app");
    m.payload = std::string(100, 'y');
  }
  std::string out;
  ASSERT_TRUE(i.EncryptBatch(msgs, out).ok());
  EXPECT_EQ(i.sent_bytes(), out.size());
  auto step = r.OnMessage(out);
  ASSERT_TRUE(step.error.ok()) << step.error;
  EXPECT_EQ(step.deliveries.size(), 10u);
  EXPECT_EQ(step.record_bytes, out.size());
  EXPECT_EQ(r.received_bytes(), out.size());
}

// Delivery receipts: messages that want_delivery get consecutive receipt ids in a BATCH (even
// alone); the receiver learns them, and its RECEIPT tells the sender each outcome.
TEST_F(ChannelSessionTest, DeliveryReceiptIdsAndReceipts) {
  ChannelSession i(Role::kInitiator, alice_, *everyone_);
  ChannelSession r(Role::kResponder, bob_, *everyone_);
  Handshake(i, r);
  std::vector<core::Message> msgs(5);
  for (size_t n = 0; n < msgs.size(); ++n) {
    msgs[n].onward = R("/service/echoer");
    msgs[n].return_route = R("/service/app");
    msgs[n].payload = "m" + std::to_string(n);
    msgs[n].want_delivery = n != 2;  // the third wants none
  }
  std::string out;
  uint64_t first = 0;
  ASSERT_TRUE(i.EncryptBatch(msgs, out, &first).ok());
  EXPECT_EQ(first, 1u);
  auto step = r.OnMessage(out);
  ASSERT_TRUE(step.error.ok()) << step.error;
  ASSERT_EQ(step.deliveries.size(), 5u);
  EXPECT_EQ(step.receipt_ids, (std::vector<uint64_t>{1, 2, 0, 3, 4}));
  EXPECT_EQ(step.deliveries[2].payload, "m2");
  // Ids go on from there; a record of messages that want none carries none.
  std::vector<core::Message> plain(2);
  for (auto& m : plain) m.onward = R("/service/echoer");
  out.clear();
  ASSERT_TRUE(i.EncryptBatch(plain, out, &first).ok());
  EXPECT_EQ(first, 0u);
  EXPECT_TRUE(r.OnMessage(out).receipt_ids.empty());
  std::vector<core::Message> one(1);
  one[0].onward = R("/service/echoer");
  one[0].want_delivery = true;
  out.clear();
  ASSERT_TRUE(i.EncryptBatch(one, out, &first).ok());
  EXPECT_EQ(first, 5u);

  std::vector<std::pair<uint64_t, absl::Status>> outcomes = {
      {2, absl::OkStatus()},
      {1, absl::OkStatus()},
      {4,
       ErrorWithReason(absl::StatusCode::kUnavailable, std::string(1000, 'x'), "ROUTE_NOT_FOUND")},
      {3, absl::OkStatus()}};
  std::string receipt = r.Receipts(outcomes);
  ASSERT_FALSE(receipt.empty());
  EXPECT_EQ(static_cast<ChannelMessageType>(receipt[0]), ChannelMessageType::kReceipt);
  auto told = i.OnMessage(receipt);
  ASSERT_TRUE(told.error.ok()) << told.error;
  ASSERT_EQ(told.receipts.size(), 2u);
  EXPECT_EQ(told.receipts[0].first, 1u);  // 1..3 delivered, merged into one range
  EXPECT_EQ(told.receipts[0].count, 3u);
  EXPECT_TRUE(told.receipts[0].status.ok());
  EXPECT_EQ(told.receipts[1].first, 4u);
  EXPECT_EQ(told.receipts[1].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReasonOf(told.receipts[1].status), "ROUTE_NOT_FOUND");
  EXPECT_EQ(told.receipts[1].status.message().size(), 256u) << "the far end's words are cut";
  // Tampered: dropped and counted, nothing settled.
  receipt = r.Receipts(outcomes);
  receipt[receipt.size() / 2] ^= 1;
  auto tampered = i.OnMessage(receipt);
  EXPECT_EQ(ReasonOf(tampered.error), "DECRYPT_FAILED");
  EXPECT_TRUE(tampered.receipts.empty());
}

// A BATCH whose receipt ids would pass 2^64 is malformed.
TEST(ChannelBatchTest, ReceiptIdsPastTheEndAreRefused) {
  wire::v1::ChannelBatch b;
  auto* g = b.add_groups();
  auto* hop = g->add_onward_route();
  hop->set_type(0);
  hop->set_value("echoer");
  g->add_payloads("a");
  g->add_payloads("b");
  g->set_first_receipt_id(std::numeric_limits<uint64_t>::max());
  std::vector<core::Message> out;
  std::vector<uint64_t> ids;
  EXPECT_EQ(ReasonOf(DecodeChannelBatch(b.SerializeAsString(), out, &ids)), "MALFORMED_FRAME");
}

}  // namespace
}  // namespace veil::channel
