#include "sidecar/transport/frame_codec.h"

#include <cstring>

#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "veil/wire/v1/transport.pb.h"

namespace veil::transport {
namespace {

core::Route R(absl::string_view text) { return *core::Route::Parse(text); }

std::string Stream(std::initializer_list<std::string> frames) {
  std::string out(1, static_cast<char>(kWireVersion));
  for (const auto& f : frames) out += f;
  return out;
}

std::string Frame(absl::string_view onward, absl::string_view back, absl::string_view payload) {
  std::string out;
  EXPECT_TRUE(AppendFrame(R(onward), back.empty() ? core::Route() : R(back), payload,
                          kDefaultMaxFrameBytes, out)
                  .ok());
  return out;
}

std::string Header(uint32_t n) {
  return {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
          static_cast<char>(n)};
}

TEST(FrameCodecTest, RoundTrip) {
  FrameDecoder decoder(kDefaultMaxFrameBytes);
  decoder.Append(Stream({Frame("/service/echoer", "/service/_tcp_1/service/app", "hello"),
                         Frame("/service/b", "", "")}));
  auto first = decoder.Next();
  ASSERT_TRUE(first.ok() && first->has_value());
  auto msg = core::DecodeMessage(**first);
  ASSERT_TRUE(msg.ok()) << msg.status();
  EXPECT_EQ(msg->onward.ToString(), "/service/echoer");
  EXPECT_EQ(msg->return_route.ToString(), "/service/_tcp_1/service/app");
  EXPECT_EQ(msg->payload, "hello");
  auto second = decoder.Next();
  ASSERT_TRUE(second.ok() && second->has_value());
  auto empty = core::DecodeMessage(**second);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->payload, "");
  EXPECT_TRUE(empty->return_route.empty());
  auto none = decoder.Next();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST(FrameCodecTest, MatchesGeneratedProtobufEncoding) {
  std::string payload(100000, 'x');
  std::string frame = Frame("/tcp/1.2.3.4:5/service/e", "/service/a", payload);
  wire::v1::TransportMessage parsed;
  ASSERT_TRUE(parsed.ParseFromString(frame.substr(kFrameHeaderBytes)));
  EXPECT_EQ(parsed.payload(), payload);
  EXPECT_EQ(parsed.onward_route(0).type(), 1u);
  EXPECT_EQ(parsed.onward_route(0).value(), "1.2.3.4:5");
}

// The head of a frame followed by its payload is the whole frame, whatever the payload's size
// (a connection writes large payloads from where they are); the size limit applies the same.
TEST(FrameCodecTest, HeadThenPayloadIsTheFrame) {
  for (size_t size :
       {size_t{0}, size_t{1}, size_t{127}, size_t{128}, size_t{40000}, size_t{1 << 20}}) {
    const std::string payload(size, 'z');
    std::string whole, head;
    ASSERT_TRUE(
        AppendFrame(R("/service/a/tcp/h:1"), R("/service/b"), payload, 16 << 20, whole).ok());
    ASSERT_TRUE(
        AppendFrameHead(R("/service/a/tcp/h:1"), R("/service/b"), size, 16 << 20, head).ok());
    EXPECT_EQ(head + payload, whole) << size;
  }
  std::string out = "kept";
  EXPECT_EQ(ReasonOf(AppendFrameHead(R("/service/a"), core::Route(), 2000, 1000, out)),
            "MESSAGE_TOO_LARGE");
  EXPECT_EQ(out, "kept");
}

TEST(FrameCodecTest, TruncatedInputWaitsForMore) {
  std::string stream = Stream({Frame("/service/e", "", "payload")});
  FrameDecoder decoder(kDefaultMaxFrameBytes);
  for (size_t i = 0; i + 1 < stream.size(); ++i) {
    decoder.Append(stream.substr(i, 1));
    auto next = decoder.Next();
    ASSERT_TRUE(next.ok());
    EXPECT_FALSE(next->has_value()) << "frame complete after " << i + 1 << " bytes";
  }
  decoder.Append(stream.substr(stream.size() - 1));
  auto next = decoder.Next();
  ASSERT_TRUE(next.ok() && next->has_value());
}

void ExpectMalformed(FrameDecoder& decoder, absl::string_view fragment) {
  auto next = decoder.Next();
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(next.status()), "MALFORMED_FRAME");
  EXPECT_NE(next.status().message().find(fragment), std::string::npos) << next.status();
  // Errors are terminal.
  decoder.Append(Frame("/service/e", "", "x"));
  EXPECT_FALSE(decoder.Next().ok());
}

TEST(FrameCodecTest, BadVersionIsTerminal) {
  FrameDecoder decoder(kDefaultMaxFrameBytes);
  decoder.Append(std::string(1, 2) + Frame("/service/e", "", "x"));
  ExpectMalformed(decoder, "unsupported wire version 2 (expected 1)");
}

TEST(FrameCodecTest, ZeroLengthFrameIsTerminal) {
  FrameDecoder decoder(kDefaultMaxFrameBytes);
  decoder.Append(Stream({Header(0)}));
  ExpectMalformed(decoder, "zero-length frame");
}

TEST(FrameCodecTest, OversizedFrameIsRefusedBeforeItsBody) {
  FrameDecoder decoder(1024);
  decoder.Append(Stream({Header(1025)}));  // only the header: refused without buffering 1 KiB
  ExpectMalformed(decoder, "frame of 1025 bytes exceeds the maximum of 1024");
}

TEST(FrameCodecTest, EncoderRefusesOversizedMessage) {
  std::string out = "prefix";
  absl::Status s = AppendFrame(R("/service/e"), core::Route(), std::string(2000, 'x'), 1024, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(s), "MESSAGE_TOO_LARGE");
  EXPECT_EQ(out, "prefix");  // nothing appended, nothing truncated
}

TEST(FrameCodecTest, GarbageBodyIsMalformed) {
  for (std::string garbage :
       {std::string("\xff\xff\xff\xff", 4), std::string("\x0a\x05zz", 4), std::string("\x12", 1)}) {
    auto msg = core::DecodeMessage(garbage);
    ASSERT_FALSE(msg.ok());
    EXPECT_EQ(ReasonOf(msg.status()), "MALFORMED_FRAME");
  }
}

TEST(FrameCodecTest, EmptyOnwardRouteIsMalformed) {
  wire::v1::TransportMessage m;
  m.set_payload("x");
  auto msg = core::DecodeMessage(m.SerializeAsString());
  ASSERT_FALSE(msg.ok());
  EXPECT_NE(msg.status().message().find("onward route is empty"), std::string::npos);
}

TEST(FrameCodecTest, RefusalNoticeRoundTrip) {
  std::string out;
  absl::Status why = ErrorWithReason(absl::StatusCode::kNotFound, "no worker at /service/x",
                                     reason::kRouteNotFound);
  ASSERT_TRUE(
      AppendFrame(R("/service/ch"), core::Route(), "", kDefaultMaxFrameBytes, out, why).ok());
  auto msg = core::DecodeMessage(absl::string_view(out).substr(kFrameHeaderBytes));
  ASSERT_TRUE(msg.ok()) << msg.status();
  EXPECT_EQ(msg->refusal.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(msg->refusal.message(), "no worker at /service/x");
  EXPECT_EQ(ReasonOf(msg->refusal), "ROUTE_NOT_FOUND");
  EXPECT_TRUE(msg->payload.empty());
  // A notice carries at most 1 KiB of message.
  out.clear();
  ASSERT_TRUE(AppendFrame(R("/service/ch"), core::Route(), "", kDefaultMaxFrameBytes, out,
                          absl::UnavailableError(std::string(5000, 'x')))
                  .ok());
  msg = core::DecodeMessage(absl::string_view(out).substr(kFrameHeaderBytes));
  ASSERT_TRUE(msg.ok()) << msg.status();
  EXPECT_EQ(msg->refusal.message().size(), 1024u);
}

TEST(FrameCodecTest, PathTagsCrossUnchanged) {
  std::string out;
  ASSERT_TRUE(AppendFrame(R("/service/a"), R("/service/b"), "data", kDefaultMaxFrameBytes, out,
                          absl::OkStatus(), 0xfedcba9876543210)
                  .ok());
  auto msg = core::DecodeMessage(absl::string_view(out).substr(kFrameHeaderBytes));
  ASSERT_TRUE(msg.ok()) << msg.status();
  EXPECT_EQ(msg->path_tag, 0xfedcba9876543210u);
  EXPECT_EQ(msg->payload, "data");
  out.clear();  // no tag: none on the wire (an older node's frames decode as before)
  ASSERT_TRUE(AppendFrame(R("/service/a"), core::Route(), "data", kDefaultMaxFrameBytes, out).ok());
  wire::v1::TransportMessage wire;
  ASSERT_TRUE(wire.ParseFromString(out.substr(kFrameHeaderBytes)));
  EXPECT_EQ(wire.path_tag(), 0u);
}

// A frame with only a refusal refuses the connection; with anything beside it, it is malformed.
TEST(FrameCodecTest, ConnectionRefusals) {
  std::string out;
  AppendConnectionRefusalFrame(
      ErrorWithReason(absl::StatusCode::kResourceExhausted, "too many connections from 10.0.0.1",
                      reason::kTooManyConnections),
      out);
  auto msg = core::DecodeMessage(absl::string_view(out).substr(kFrameHeaderBytes));
  ASSERT_TRUE(msg.ok()) << msg.status();
  EXPECT_TRUE(core::IsConnectionRefusal(*msg));
  EXPECT_EQ(msg->refusal.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReasonOf(msg->refusal), "TOO_MANY_CONNECTIONS");
  wire::v1::TransportMessage m;
  ASSERT_TRUE(m.ParseFromString(out.substr(kFrameHeaderBytes)));
  for (int extra = 0; extra < 3; ++extra) {
    wire::v1::TransportMessage bad = m;
    if (extra == 0) bad.set_payload("x");
    if (extra == 1) bad.set_path_tag(7);
    if (extra == 2) bad.add_return_route()->set_value("back");
    EXPECT_EQ(ReasonOf(core::DecodeMessage(bad.SerializeAsString()).status()), "MALFORMED_FRAME")
        << extra;
  }
}

TEST(FrameCodecTest, BadRefusalsAreMalformed) {
  auto decode = [](const wire::v1::TransportMessage& m) {
    return core::DecodeMessage(m.SerializeAsString()).status();
  };
  wire::v1::TransportMessage m;
  auto* hop = m.add_onward_route();
  hop->set_type(0);
  hop->set_value("ch");
  m.mutable_refusal()->set_code(0);
  EXPECT_EQ(ReasonOf(decode(m)), "MALFORMED_FRAME");
  m.mutable_refusal()->set_code(99);
  EXPECT_EQ(ReasonOf(decode(m)), "MALFORMED_FRAME");
  m.mutable_refusal()->set_code(5);
  m.set_payload("data beside a refusal");
  EXPECT_EQ(ReasonOf(decode(m)), "MALFORMED_FRAME");
  m.clear_payload();
  m.mutable_refusal()->set_message(std::string(1025, 'x'));
  EXPECT_EQ(ReasonOf(decode(m)), "MALFORMED_FRAME");
  m.mutable_refusal()->set_message("ok");
  EXPECT_TRUE(decode(m).ok());
}

TEST(FrameCodecTest, BadAddressesAreMalformed) {
  auto check = [](uint32_t type, const std::string& value, absl::string_view fragment) {
    wire::v1::TransportMessage m;
    auto* a = m.add_onward_route();
    a->set_type(type);
    a->set_value(value);
    auto msg = core::DecodeMessage(m.SerializeAsString());
    ASSERT_FALSE(msg.ok());
    EXPECT_NE(msg.status().message().find(fragment), std::string::npos) << msg.status();
  };
  check(9, "x", "unknown address type 9");
  check(0, "", "empty");
  check(0, "a/b", "outside");
  check(1, "host", "no port");
}

TEST(FrameCodecTest, TooManyHopsIsMalformed) {
  wire::v1::TransportMessage m;
  for (size_t i = 0; i <= core::kMaxRouteHops; ++i) {
    auto* a = m.add_onward_route();
    a->set_value("a");
  }
  auto msg = core::DecodeMessage(m.SerializeAsString());
  ASSERT_FALSE(msg.ok());
  EXPECT_NE(msg.status().message().find("more than 32 hops"), std::string::npos);
}

TEST(FrameCodecTest, ManyFramesInOneRead) {
  std::string stream(1, static_cast<char>(kWireVersion));
  for (int i = 0; i < 1000; ++i) stream += Frame("/service/e", "", std::to_string(i));
  FrameDecoder decoder(kDefaultMaxFrameBytes);
  decoder.Append(stream);
  for (int i = 0; i < 1000; ++i) {
    auto next = decoder.Next();
    ASSERT_TRUE(next.ok() && next->has_value());
    EXPECT_EQ(core::DecodeMessage(**next)->payload, std::to_string(i));
  }
  EXPECT_EQ(decoder.buffered(), 0u);
}

// The serve socket's format: its own version byte, its limit, empty bodies allowed.
TEST(FrameCodecTest, AnotherFormatHasItsOwnVersionLimitAndEmptyBodies) {
  const FrameFormat format{7, 16, /*allow_empty=*/true};
  FrameDecoder decoder(format);
  decoder.Append(std::string(1, 7) + Header(0) + Header(3) + "abc");
  auto empty = decoder.Next();
  ASSERT_TRUE(empty.ok() && empty->has_value());
  EXPECT_EQ(**empty, "");
  auto abc = decoder.Next();
  ASSERT_TRUE(abc.ok() && abc->has_value());
  EXPECT_EQ(**abc, "abc");
  EXPECT_EQ(decoder.failure(), FrameDecoder::Failure::kNone);

  FrameDecoder wrong(format);
  wrong.Append(std::string(1, kWireVersion));
  EXPECT_FALSE(wrong.Next().ok());
  EXPECT_EQ(wrong.failure(), FrameDecoder::Failure::kVersion);
  EXPECT_EQ(wrong.failed_value(), kWireVersion);

  FrameDecoder too_long(format);
  too_long.Append(std::string(1, 7) + Header(17));
  EXPECT_FALSE(too_long.Next().ok());
  EXPECT_EQ(too_long.failure(), FrameDecoder::Failure::kTooLong);
  EXPECT_EQ(too_long.failed_value(), 17u);

  FrameDecoder node(kDefaultMaxFrameBytes);  // the node's format forbids empty bodies
  node.Append(Stream({Header(0)}));
  EXPECT_FALSE(node.Next().ok());
  EXPECT_EQ(node.failure(), FrameDecoder::Failure::kEmpty);
}

// A reader sizes its reads by what the frame in progress still lacks.
TEST(FrameCodecTest, MissingSaysWhatTheFrameInProgressLacks) {
  FrameDecoder decoder(kDefaultMaxFrameBytes);
  EXPECT_EQ(decoder.missing(), 1u + kFrameHeaderBytes);  // the version byte and a header
  decoder.Append(std::string(1, static_cast<char>(kWireVersion)) + Header(100000).substr(0, 2));
  EXPECT_EQ(decoder.missing(), 2u);
  decoder.Append(Header(100000).substr(2));
  EXPECT_EQ(decoder.missing(), 100000u);
  ASSERT_TRUE(decoder.Next().ok());  // takes the version byte; the frame still lacks as much
  EXPECT_EQ(decoder.missing(), 100000u);
  decoder.Append(std::string(99999, 'x'));
  EXPECT_EQ(decoder.missing(), 1u);
  std::span<char> space = decoder.WritableSpace(decoder.missing());
  ASSERT_GE(space.size(), 1u);
}

// A stream that carried one large frame does not keep its buffer once it is through.
TEST(FrameCodecTest, ALargeFramesBufferIsGivenBack) {
  const FrameFormat format{kWireVersion, 8 * 1024 * 1024, /*allow_empty=*/true};
  FrameDecoder decoder(format);
  const std::string big(4 * 1024 * 1024, 'b');
  decoder.Append(std::string(1, static_cast<char>(kWireVersion)) + Header(big.size()) + big);
  auto frame = decoder.Next();
  ASSERT_TRUE(frame.ok() && frame->has_value());
  EXPECT_EQ((*frame)->size(), big.size());
  EXPECT_GE(decoder.WritableSpace(kFrameHeaderBytes).size(), kFrameHeaderBytes);
  EXPECT_LE(decoder.WritableSpace(kFrameHeaderBytes).size(), UnzeroedBuffer::kKeptBytes);
}

// The serve socket's write buffer: grows keeping what it is asked to keep, and gives back a
// large buffer only when nothing is to be kept.
TEST(FrameCodecTest, AnUnzeroedBufferKeepsWhatItIsToldAndGivesBackALargeOne) {
  UnzeroedBuffer buffer;
  buffer.Reserve(3, 0);
  std::memcpy(buffer.data(), "abc", 3);
  buffer.Reserve(2 * UnzeroedBuffer::kKeptBytes, 3);
  EXPECT_EQ(std::string(buffer.data(), 3), "abc");
  EXPECT_GE(buffer.capacity(), 2 * UnzeroedBuffer::kKeptBytes);
  buffer.Reserve(16, 3);  // something to keep: the large buffer stays
  EXPECT_EQ(std::string(buffer.data(), 3), "abc");
  EXPECT_GE(buffer.capacity(), 2 * UnzeroedBuffer::kKeptBytes);
  buffer.Reserve(16, 0);  // nothing to keep: given back
  EXPECT_GE(buffer.capacity(), 16u);
  EXPECT_LE(buffer.capacity(), UnzeroedBuffer::kKeptBytes);
}

}  // namespace
}  // namespace veil::transport
