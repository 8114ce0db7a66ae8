// A generic client that has no .proto file of veil or of grpc.health (this binary links
// neither): it lists the services through server reflection, describes every method, and calls
// Health/Check and NodeService/GetNode with messages built from the reflected descriptors.
#include <future>
#include <set>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/descriptor_database.h"
#include "google/protobuf/dynamic_message.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/reflection_client.h"
#include "tests/support/veild_process.h"

namespace veil::testing {
namespace {

using google::protobuf::DescriptorPool;

TEST(ReflectionTest, ListsDescribesAndCallsEveryServiceWithoutProtoFiles) {
  VeildProcess node;
  ASSERT_TRUE(node.Start()) << node.log();
  auto channel = grpc::CreateChannel(node.api_target(), grpc::InsecureChannelCredentials());
  ReflectionClient reflection(channel);

  std::vector<std::string> services = reflection.ListServices();
  std::set<std::string> names(services.begin(), services.end());
  for (const char* expected :
       {"veil.v1.MessagingService", "veil.v1.NodeService", "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection"}) {
    EXPECT_TRUE(names.count(expected)) << expected;
  }

  size_t methods = 0;
  for (const std::string& name : services) {
    ASSERT_TRUE(reflection.LoadSymbol(name)) << name;
    const auto* service = reflection.pool().FindServiceByName(name);
    ASSERT_NE(service, nullptr) << name;
    for (int i = 0; i < service->method_count(); ++i) {
      const auto* method = service->method(i);
      ASSERT_NE(method->input_type(), nullptr) << method->full_name();
      ASSERT_NE(method->output_type(), nullptr) << method->full_name();
      ++methods;
    }
  }
  EXPECT_GE(methods, 7u);  // Serve, Send, Request, GetNode, Check, Watch, ServerReflectionInfo

  // Health/Check, from reflected descriptors only.
  google::protobuf::DynamicMessageFactory factory(&reflection.pool());
  const auto* check = reflection.pool().FindMethodByName("grpc.health.v1.Health.Check");
  ASSERT_NE(check, nullptr);
  std::unique_ptr<google::protobuf::Message> request(
      factory.GetPrototype(check->input_type())->New());
  std::string reply;
  grpc::Status status =
      CallRaw(channel, "/grpc.health.v1.Health/Check", request->SerializeAsString(), &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::unique_ptr<google::protobuf::Message> response(
      factory.GetPrototype(check->output_type())->New());
  ASSERT_TRUE(response->ParseFromString(reply));
  const auto* field = check->output_type()->FindFieldByName("status");
  ASSERT_NE(field, nullptr);
  EXPECT_EQ(response->GetReflection()->GetEnum(*response, field)->name(), "SERVING");

  // NodeService/GetNode too: the version field is readable by name.
  const auto* get_node = reflection.pool().FindMethodByName("veil.v1.NodeService.GetNode");
  ASSERT_NE(get_node, nullptr);
  reply.clear();
  status = CallRaw(channel, "/veil.v1.NodeService/GetNode", "", &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::unique_ptr<google::protobuf::Message> node_info(
      factory.GetPrototype(get_node->output_type())->New());
  ASSERT_TRUE(node_info->ParseFromString(reply));
  const auto* version = get_node->output_type()->FindFieldByName("version");
  ASSERT_NE(version, nullptr);
  EXPECT_FALSE(node_info->GetReflection()->GetString(*node_info, version).empty());

  // Every field of the API is documented for humans in the .proto; reflection carries names.
  const auto* serve = reflection.pool().FindMethodByName("veil.v1.MessagingService.Serve");
  ASSERT_NE(serve, nullptr);
  EXPECT_TRUE(serve->client_streaming() && serve->server_streaming());
}

}  // namespace
}  // namespace veil::testing
