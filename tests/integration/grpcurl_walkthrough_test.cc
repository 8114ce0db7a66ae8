// examples/grpcurl/README.md, run as written against real daemons (a hub, Bob, Alice), with a
// client that, like grpcurl, knows no .proto file: every command's method, request and reply
// go through server reflection alone (this binary links no veil proto). The page's paths and
// port are mapped to the test's; the sample names it prints (a channel's, a reply address) are
// replaced by the real ones as a reader would copy them. (tests/examples/grpcurl_test.py checks
// the command lines as grpcurl's flag parser reads them.)
#include <fstream>
#include <future>
#include <regex>
#include <sstream>

#include "gtest/gtest.h"
#include "tests/support/reflection_client.h"
#include "tests/support/veild_process.h"

namespace veil::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// One grpcurl command of the page: its -d body ("" for none, "@" for stdin), its -max-time,
// and its positional arguments (socket, then method or list/describe [symbol]).
struct Command {
  std::string line;
  std::string body;
  double max_time = 10;
  std::vector<std::string> positional;
};

// Splits on blanks, keeping '...' quoted text whole (all the page uses).
std::vector<std::string> Words(const std::string& line) {
  std::vector<std::string> out;
  std::string word;
  bool quoted = false, any = false;
  for (char c : line) {
    if (c == '\'') {
      quoted = !quoted;
      any = true;
    } else if (c == ' ' && !quoted) {
      if (any) out.push_back(word);
      word.clear();
      any = false;
    } else {
      word.push_back(c);
      any = true;
    }
  }
  if (any) out.push_back(word);
  return out;
}

Command Parse(const std::string& line) {
  Command c;
  c.line = line;
  std::vector<std::string> words = Words(line);
  size_t i = 1;
  for (; i < words.size() && words[i].rfind("-", 0) == 0; ++i) {
    if (words[i] == "-d") c.body = words[++i];
    if (words[i] == "-max-time") c.max_time = std::stod(words[++i]);
  }
  c.positional.assign(words.begin() + i, words.end());
  return c;
}

// The page's grpcurl commands, in order, and its ```json veil.v1.ServeRequest blocks.
struct Page {
  std::vector<Command> commands;
  std::vector<std::vector<std::string>> serve_blocks;
};

Page ReadPage(const std::string& text) {
  Page page;
  std::istringstream in(text);
  std::string line, block;
  bool in_serve_block = false;
  while (std::getline(in, line)) {
    if (line.rfind("```json veil.v1.ServeRequest", 0) == 0) {
      in_serve_block = true;
      page.serve_blocks.emplace_back();
      continue;
    }
    if (in_serve_block && line.rfind("```", 0) == 0) {
      in_serve_block = false;
      continue;
    }
    if (in_serve_block && !line.empty()) page.serve_blocks.back().push_back(line);
    if (line.rfind("grpcurl ", 0) == 0) page.commands.push_back(Parse(line));
  }
  return page;
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

std::string JsonField(const std::string& json, const std::string& field) {
  std::smatch m;
  std::regex re("\"" + field + "\":\\s*\"([^\"]*)\"");
  return std::regex_search(json, m, re) ? m[1].str() : "";
}

class GrpcurlWalkthroughTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (auto* node : {&hub_, &bob_, &alice_}) ASSERT_TRUE(node->Start()) << node->log();
    sockets_ = {{"/tmp/hub/api.sock", hub_.socket_path()},
                {"/tmp/bob/api.sock", bob_.socket_path()},
                {"/tmp/alice/api.sock", alice_.socket_path()}};
    for (auto& [page_path, real] : sockets_) {
      clients_[page_path] = std::make_unique<ReflectionClient>(
          grpc::CreateChannel("unix:" + real, grpc::InsecureChannelCredentials()));
    }
    // The hub's port, as the page's 127.0.0.1:4000.
    std::string node_json;
    ASSERT_TRUE(clients_["/tmp/hub/api.sock"]->LoadSymbol("veil.v1.NodeService"));
    ASSERT_TRUE(
        clients_["/tmp/hub/api.sock"]
            ->CallJson("veil.v1.NodeService/GetNode", "{}", &node_json, std::chrono::seconds(5))
            .ok());
    std::smatch m;
    ASSERT_TRUE(std::regex_search(node_json, m, std::regex("(127\\.0\\.0\\.1:[0-9]+)")))
        << node_json;
    hub_tcp_ = m[1].str();
  }

  // What a reader types: the page's text with the test's port and the names copied so far.
  std::string Localize(std::string text) {
    text = Replace(text, "127.0.0.1:4000", hub_tcp_);
    for (const auto& [sample, real] : copied_) text = Replace(text, sample, real);
    return text;
  }

  // Runs a unary command (or list / describe) and returns its JSON reply.
  std::string RunUnary(const Command& c) {
    ReflectionClient& client = *clients_.at(c.positional.at(0));
    const std::string& what = c.positional.at(1);
    if (what == "list") {
      auto services = client.ListServices();
      EXPECT_NE(std::find(services.begin(), services.end(), "veil.v1.MessagingService"),
                services.end());
      return "";
    }
    if (what == "describe") {
      std::string symbol = c.positional.at(2);
      if (symbol[0] == '.') symbol = symbol.substr(1);
      EXPECT_TRUE(client.LoadSymbol(symbol)) << c.line;
      EXPECT_TRUE(client.pool().FindServiceByName(symbol) != nullptr ||
                  client.pool().FindMessageTypeByName(symbol) != nullptr)
          << c.line;
      return "";
    }
    const std::string service = what.substr(0, what.find('/'));
    EXPECT_TRUE(client.LoadSymbol(service)) << c.line;
    std::string reply;
    grpc::Status s =
        client.CallJson(what, Localize(c.body.empty() ? "{}" : c.body), &reply,
                        std::chrono::milliseconds(static_cast<int>(c.max_time * 1000)));
    EXPECT_TRUE(s.ok()) << c.line << "\n" << s.error_message();
    return reply;
  }

  VeildProcess hub_{{"--hub", "--tcp-listen", "127.0.0.1:0"}};
  VeildProcess bob_;
  VeildProcess alice_;
  std::map<std::string, std::string> sockets_;
  std::map<std::string, std::unique_ptr<ReflectionClient>> clients_;
  std::string hub_tcp_;
  std::vector<std::pair<std::string, std::string>> copied_;  // sample name -> real one
};

TEST_F(GrpcurlWalkthroughTest, EveryCommandOnThePageRunsAsWritten) {
  const Page page =
      ReadPage(ReadFile(std::string(VEIL_DEFAULT_SOURCE_DIR) + "/examples/grpcurl/README.md"));
  ASSERT_GE(page.commands.size(), 14u);
  ASSERT_EQ(page.serve_blocks.size(), 2u);
  std::unique_ptr<BidiCall> serve;
  const google::protobuf::Descriptor* serve_request = nullptr;
  ReflectionClient* bob = clients_.at("/tmp/bob/api.sock").get();
  auto write_serve = [&](const std::string& json) {
    std::string error;
    auto message = bob->FromJson(serve_request, Localize(json), &error);
    ASSERT_NE(message, nullptr) << json << ": " << error;
    ASSERT_TRUE(serve->Write(message->SerializeAsString())) << json;
  };
  auto read_serve = [&](std::chrono::milliseconds timeout) -> std::string {
    auto bytes = serve->Read(timeout);
    if (!bytes.has_value()) return "";
    const auto* type = bob->pool().FindMessageTypeByName("veil.v1.ServeResponse");
    std::string error;
    auto message = bob->FromJson(type, "{}", &error);
    EXPECT_TRUE(message->ParseFromString(*bytes));
    return ReflectionClient::ToJson(*message);
  };
  int ran = 0;
  for (const Command& c : page.commands) {
    SCOPED_TRACE(c.line);
    ASSERT_GE(c.positional.size(), 2u);
    ASSERT_TRUE(clients_.count(c.positional[0])) << "an unknown socket";
    const std::string& method = c.positional[1];
    if (method == "veil.v1.MessagingService/Serve") {
      // Bob's echoer: the first block's messages go in at once.
      ASSERT_EQ(c.body, "@");
      ASSERT_TRUE(bob->LoadSymbol("veil.v1.MessagingService"));
      serve_request = bob->pool().FindMessageTypeByName("veil.v1.ServeRequest");
      serve = std::make_unique<BidiCall>(bob->channel(), "/" + method);
      for (const std::string& json : page.serve_blocks[0]) write_serve(json);
      std::string opened = read_serve(std::chrono::seconds(10));
      EXPECT_NE(opened.find("\"opened\""), std::string::npos) << opened;
    } else if (method == "veil.v1.MessagingService/Request") {
      // Alice's request waits for Bob's echo: Bob answers from the second block meanwhile.
      ASSERT_NE(serve, nullptr) << "the page sends before Bob serves";
      auto reply = std::async(std::launch::async, [&] { return RunUnary(c); });
      std::string delivery = read_serve(std::chrono::seconds(20));
      ASSERT_NE(delivery.find("\"deliveries\""), std::string::npos) << delivery;
      EXPECT_NE(delivery.find("ORIGIN_SECURE_CHANNEL"), std::string::npos) << delivery;
      EXPECT_NE(delivery.find("SGVsbG8gT2NrYW0h"), std::string::npos) << delivery;
      // The reader copies the return route the delivery printed.
      const std::string back = JsonField(delivery, "return_route");
      ASSERT_EQ(back.rfind("/service/_sc_", 0), 0u) << delivery;
      copied_.emplace_back("/service/_sc_Q7h2Lk9pX0a/service/_req_5f0e…", back);
      for (const std::string& json : page.serve_blocks[1]) write_serve(json);
      std::string echoed = reply.get();
      EXPECT_EQ(JsonField(echoed, "payload"), "SGVsbG8gT2NrYW0h") << echoed;
    } else {
      std::string reply = RunUnary(c);
      if (method == "veil.v1.RelayService/CreateRelay") {
        EXPECT_NE(reply.find("/service/forward_to_bob"), std::string::npos) << reply;
      }
      if (method == "veil.v1.SecureChannelService/CreateSecureChannel") {
        const std::string address = JsonField(reply, "address");
        ASSERT_EQ(address.rfind("_sc_", 0), 0u) << reply;
        EXPECT_NE(reply.find("remote_identifier"), std::string::npos) << reply;
        copied_.emplace_back("_sc_5d1cE7a9b3F", address);  // what the page names it
      }
    }
    ++ran;
  }
  EXPECT_EQ(ran, static_cast<int>(page.commands.size()));
  if (serve != nullptr) serve->Cancel();
}

}  // namespace
}  // namespace veil::testing
