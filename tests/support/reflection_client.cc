#include "tests/support/reflection_client.h"

#include <future>

#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/util/json_util.h"

namespace veil::testing {

namespace refl = grpc::reflection::v1alpha;

ReflectionClient::ReflectionClient(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)), stub_(refl::ServerReflection::NewStub(channel_)) {
  stream_ = stub_->ServerReflectionInfo(&context_);
}

ReflectionClient::~ReflectionClient() {
  stream_->WritesDone();
  stream_->Finish();
}

std::vector<std::string> ReflectionClient::ListServices() {
  refl::ServerReflectionRequest request;
  request.set_list_services("");
  auto response = Ask(request);
  std::vector<std::string> names;
  for (const auto& s : response.list_services_response().service()) names.push_back(s.name());
  return names;
}

bool ReflectionClient::LoadSymbol(const std::string& symbol) {
  refl::ServerReflectionRequest request;
  request.set_file_containing_symbol(symbol);
  auto response = Ask(request);
  return !response.has_error_response() && AddFiles(response);
}

refl::ServerReflectionResponse ReflectionClient::Ask(const refl::ServerReflectionRequest& request) {
  refl::ServerReflectionResponse response;
  if (!stream_->Write(request) || !stream_->Read(&response)) {
    response.mutable_error_response()->set_error_message("the reflection stream broke");
  }
  return response;
}

bool ReflectionClient::AddFiles(const refl::ServerReflectionResponse& response) {
  for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    if (!file.ParseFromString(bytes)) return false;
    if (!loaded_.insert(file.name()).second) continue;
    for (const std::string& dep : file.dependency()) {
      if (loaded_.count(dep)) continue;
      refl::ServerReflectionRequest request;
      request.set_file_by_filename(dep);
      if (!AddFiles(Ask(request))) return false;
    }
    if (!db_.Add(file)) return false;
  }
  return true;
}

std::unique_ptr<google::protobuf::Message> ReflectionClient::FromJson(
    const google::protobuf::Descriptor* type, const std::string& json, std::string* error) {
  std::unique_ptr<google::protobuf::Message> message(factory_.GetPrototype(type)->New());
  auto parsed = google::protobuf::util::JsonStringToMessage(json, message.get());
  if (!parsed.ok()) {
    *error = std::string(parsed.message());
    return nullptr;
  }
  return message;
}

std::string ReflectionClient::ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

grpc::Status ReflectionClient::CallJson(const std::string& method, const std::string& request_json,
                                        std::string* reply_json,
                                        std::chrono::milliseconds deadline) {
  std::string dotted = method;
  dotted[dotted.rfind('/')] = '.';
  const auto* found = pool_.FindMethodByName(dotted);
  if (found == nullptr) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "no method " + method + " (reflection)");
  }
  std::string error;
  auto request = FromJson(found->input_type(), request_json, &error);
  if (request == nullptr) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error);
  std::string reply;
  grpc::Status status =
      CallRaw(channel_, "/" + method, request->SerializeAsString(), &reply, deadline);
  if (!status.ok()) return status;
  std::unique_ptr<google::protobuf::Message> response(
      factory_.GetPrototype(found->output_type())->New());
  if (!response->ParseFromString(reply)) {
    return grpc::Status(grpc::StatusCode::DATA_LOSS, "the reply does not parse");
  }
  *reply_json = ToJson(*response);
  return status;
}

grpc::Status CallRaw(std::shared_ptr<grpc::Channel> channel, const std::string& method,
                     const std::string& request, std::string* reply,
                     std::chrono::milliseconds deadline) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + deadline);
  grpc::Slice slice(request);
  grpc::ByteBuffer in(&slice, 1), out;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &in, &out,
                 [&done](grpc::Status s) { done.set_value(s); });
  grpc::Status status = done.get_future().get();
  std::vector<grpc::Slice> slices;
  if (status.ok()) {
    out.Dump(&slices);
    for (const auto& s : slices) reply->append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return status;
}

namespace {

std::string Flatten(grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  buffer.Dump(&slices);
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

}  // namespace

BidiCall::BidiCall(grpc::Channel& channel, const std::string& method)
    : stub_(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {})) {
  stub_.PrepareBidiStreamingCall(&context_, method, grpc::StubOptions(), this);
  StartRead(&read_buffer_);
  StartCall();
}

BidiCall::~BidiCall() {
  context_.TryCancel();
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return done_; });
}

bool BidiCall::Write(const std::string& message) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !writing_ || ended_; });
  if (ended_ || !write_ok_) return false;
  writing_ = true;
  grpc::Slice slice(message);
  write_buffer_ = grpc::ByteBuffer(&slice, 1);
  lock.unlock();
  StartWrite(&write_buffer_);
  lock.lock();
  cv_.wait(lock, [&] { return !writing_ || ended_; });
  return write_ok_ && !ended_;
}

std::optional<std::string> BidiCall::Read(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !received_.empty() || ended_; });
  if (received_.empty()) return std::nullopt;
  std::string out = std::move(received_.front());
  received_.pop_front();
  return out;
}

grpc::Status BidiCall::Finish() {
  StartWritesDone();
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return done_; });
  return status_;
}

void BidiCall::OnWriteDone(bool ok) {
  std::lock_guard lock(mu_);
  writing_ = false;
  write_ok_ = ok;
  cv_.notify_all();
}

void BidiCall::OnReadDone(bool ok) {
  if (!ok) {
    std::lock_guard lock(mu_);
    ended_ = true;
    cv_.notify_all();
    return;
  }
  {
    std::lock_guard lock(mu_);
    received_.push_back(Flatten(read_buffer_));
    cv_.notify_all();
  }
  StartRead(&read_buffer_);
}

void BidiCall::OnDone(const grpc::Status& status) {
  std::lock_guard lock(mu_);
  status_ = status;
  ended_ = true;
  done_ = true;
  cv_.notify_all();
}

}  // namespace veil::testing
