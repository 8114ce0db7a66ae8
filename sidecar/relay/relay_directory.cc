#include "sidecar/relay/relay_directory.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/common/status_macros.h"
#include "sidecar/relay/backoff.h"
#include "spdlog/spdlog.h"
#include "veil/state/v1/directory.pb.h"

namespace veil::relay {
namespace {

namespace pb = etcdserverpb;

constexpr absl::string_view kRelays = "relays/";
constexpr absl::string_view kOwners = "owners/";
constexpr absl::string_view kHubs = "hubs/";

absl::Status Unavailable(absl::string_view what, const grpc::Status& status) {
  return ErrorWithReason(
      absl::StatusCode::kUnavailable,
      absl::StrCat("the hub directory (etcd) is unreachable: ", what, ": ", status.error_message()),
      reason::kDirectoryUnavailable);
}

// The smallest key after every key that starts with `prefix` (etcd's range_end for a prefix).
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    if (static_cast<unsigned char>(prefix.back()) < 0xff) {
      prefix.back() = static_cast<char>(prefix.back() + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out);
  return out;
}

pb::Compare* AddCompare(pb::TxnRequest& txn, std::string key, pb::Compare::CompareTarget target,
                        pb::Compare::CompareResult result = pb::Compare::EQUAL) {
  pb::Compare* c = txn.add_compare();
  c->set_key(std::move(key));
  c->set_target(target);
  c->set_result(result);
  return c;
}

void AddPut(google::protobuf::RepeatedPtrField<pb::RequestOp>* ops, std::string key,
            std::string value, int64_t lease) {
  pb::PutRequest* put = ops->Add()->mutable_request_put();
  put->set_key(std::move(key));
  put->set_value(std::move(value));
  put->set_lease(lease);
}

void AddRange(google::protobuf::RepeatedPtrField<pb::RequestOp>* ops, std::string key) {
  ops->Add()->mutable_request_range()->set_key(std::move(key));
}

void AddDelete(google::protobuf::RepeatedPtrField<pb::RequestOp>* ops, std::string key) {
  ops->Add()->mutable_request_delete_range()->set_key(std::move(key));
}

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view what) {
  if (path.empty()) return std::string();
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the hub directory's ", what, " file ", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ParseDirectoryEndpoints(absl::string_view text) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    part = absl::StripAsciiWhitespace(part);
    absl::string_view rest = part;
    if (!absl::ConsumePrefix(&rest, "http://") && !absl::ConsumePrefix(&rest, "https://")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--hub-directory: ", QuoteInput(part),
                       " is not an etcd client URL (http://HOST:PORT or https://HOST:PORT)"));
    }
    rest = absl::StripSuffix(rest, "/");
    size_t colon = rest.rfind(':');
    if (rest.empty() || colon == absl::string_view::npos || colon == 0 ||
        colon + 1 == rest.size() || rest.find('/') != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--hub-directory: ", QuoteInput(part), " needs a host and a port (http://HOST:PORT)"));
    }
    out.emplace_back(part);
  }
  if (out.empty()) return absl::InvalidArgumentError("--hub-directory: no etcd endpoint given");
  return out;
}

// The endpoints' channels and stubs; calls go to the current one and move on to the next when
// it does not answer.
class RelayDirectory::Etcd {
 public:
  struct Endpoint {
    std::string url;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<pb::KV::Stub> kv;
    std::unique_ptr<pb::Lease::Stub> lease;
    std::unique_ptr<pb::Watch::Stub> watch;
  };

  static absl::StatusOr<std::unique_ptr<Etcd>> Create(const DirectoryOptions& options) {
    auto etcd = std::make_unique<Etcd>();
    etcd->timeout_ = options.call_timeout;
    for (const std::string& url : options.endpoints) {
      absl::string_view target = url;
      std::shared_ptr<grpc::ChannelCredentials> credentials;
      if (absl::ConsumePrefix(&target, "https://")) {
        grpc::SslCredentialsOptions ssl;
        ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(options.ca_file, "CA"));
        ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPem(options.cert_file, "certificate"));
        ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem(options.key_file, "key"));
        credentials = grpc::SslCredentials(ssl);
      } else {
        absl::ConsumePrefix(&target, "http://");
        credentials = grpc::InsecureChannelCredentials();
      }
      Endpoint e;
      e.url = url;
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
      // A watch response carries every event of one revision batch; the view loads in pages.
      args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
      e.channel =
          grpc::CreateCustomChannel(std::string(absl::StripSuffix(target, "/")), credentials, args);
      e.kv = pb::KV::NewStub(e.channel);
      e.lease = pb::Lease::NewStub(e.channel);
      e.watch = pb::Watch::NewStub(e.channel);
      etcd->endpoints_.push_back(std::move(e));
    }
    return etcd;
  }

  size_t size() const { return endpoints_.size(); }
  Endpoint& at(size_t i) { return endpoints_[i % endpoints_.size()]; }
  size_t current() const { return current_.load(std::memory_order_relaxed); }
  // `failed` did not answer: the next calls go to the one after it.
  void Failed(size_t failed) {
    size_t expected = failed;
    current_.compare_exchange_strong(expected, (failed + 1) % endpoints_.size());
  }
  void SetDeadline(grpc::ClientContext& ctx) const {
    ctx.set_deadline(std::chrono::system_clock::now() + timeout_);
  }

  // A unary call tried on each endpoint in turn until one answers.
  template <typename Call>
  grpc::Status Unary(Call call) {
    grpc::Status status;
    for (size_t attempt = 0; attempt < endpoints_.size(); ++attempt) {
      size_t i = current();
      grpc::ClientContext ctx;
      SetDeadline(ctx);
      status = call(at(i), ctx);
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE &&
          status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        return status;
      }
      Failed(i);
    }
    return status;
  }

  grpc::Status Txn(const pb::TxnRequest& request, pb::TxnResponse* response) {
    return Unary([&](Endpoint& e, grpc::ClientContext& ctx) {
      response->Clear();
      return e.kv->Txn(&ctx, request, response);
    });
  }

  // Txn without blocking: `done` runs on a gRPC thread. Each endpoint is tried once.
  void TxnAsync(pb::TxnRequest request, std::function<void(grpc::Status, pb::TxnResponse&)> done) {
    struct Call {
      pb::TxnRequest request;
      pb::TxnResponse response;
      grpc::ClientContext ctx;
      std::function<void(grpc::Status, pb::TxnResponse&)> done;
      size_t endpoint = 0, attempt = 0;
    };
    auto call = std::make_shared<Call>();
    call->request = std::move(request);
    call->done = std::move(done);
    inflight_.fetch_add(1);
    Issue(std::move(call));
  }
  // Waits (at most `limit`) for the calls TxnAsync started to finish.
  void Drain(std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (inflight_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling a counter at exit
    }
  }

 private:
  template <typename Call>
  void Issue(std::shared_ptr<Call> call) {
    call->endpoint = current();
    SetDeadline(call->ctx);
    Endpoint& e = at(call->endpoint);
    e.kv->async()->Txn(
        &call->ctx, &call->request, &call->response, [this, call](grpc::Status status) {
          const bool retry = (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                              status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) &&
                             ++call->attempt < endpoints_.size();
          if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
              status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
            Failed(call->endpoint);
          }
          if (!retry) {
            call->done(std::move(status), call->response);
            inflight_.fetch_sub(1);
            return;
          }
          // A ClientContext is good for one call: the retry gets a fresh Call.
          auto next = std::make_shared<Call>();
          next->request = std::move(call->request);
          next->done = std::move(call->done);
          next->attempt = call->attempt;
          Issue(std::move(next));
        });
  }

  std::vector<Endpoint> endpoints_;
  std::atomic<size_t> current_{0};
  std::atomic<int> inflight_{0};
  std::chrono::milliseconds timeout_{3000};
};

RelayDirectory::RelayDirectory(DirectoryOptions options, Lost on_lost)
    : options_(std::move(options)), on_lost_(std::move(on_lost)) {}

RelayDirectory::~RelayDirectory() { Shutdown(); }

absl::StatusOr<std::unique_ptr<RelayDirectory>> RelayDirectory::Start(DirectoryOptions options,
                                                                      Lost on_lost) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("--hub-directory: no etcd endpoint given");
  }
  if (options.replica.empty()) {
    return absl::InvalidArgumentError("the hub directory needs this replica's name");
  }
  if (options.lease_ttl < std::chrono::seconds(2)) {
    return absl::InvalidArgumentError("--hub-directory-lease-ttl must be at least 2 seconds");
  }
  std::unique_ptr<RelayDirectory> directory(
      new RelayDirectory(std::move(options), std::move(on_lost)));
  ASSIGN_OR_RETURN(directory->etcd_, Etcd::Create(directory->options_));
  absl::Status renewed = directory->Renew();
  if (!renewed.ok()) {  // not fatal: the replica serves, and keeps trying
    spdlog::warn("hub directory: {}; new relay names are refused until etcd answers",
                 renewed.message());
  }
  directory->keepalive_ = std::thread([d = directory.get()] { d->KeepAliveLoop(); });
  directory->watch_ = std::thread([d = directory.get()] { d->WatchLoop(); });
  return directory;
}

std::string RelayDirectory::Key(absl::string_view kind, absl::string_view name) const {
  return absl::StrCat(options_.prefix, kind, name);
}

absl::Status RelayDirectory::Renew() {
  pb::LeaseGrantResponse granted;
  grpc::Status status = etcd_->Unary([&](Etcd::Endpoint& e, grpc::ClientContext& ctx) {
    pb::LeaseGrantRequest request;
    request.set_ttl(options_.lease_ttl.count());
    return e.lease->LeaseGrant(&ctx, request, &granted);
  });
  if (!status.ok()) {
    reachable_ = false;
    return Unavailable(absl::StrCat("granting a lease at ", absl::StrJoin(options_.endpoints, ",")),
                       status);
  }
  if (!granted.error().empty()) {
    return ErrorWithReason(absl::StatusCode::kUnavailable,
                           absl::StrCat("the hub directory refused a lease: ", granted.error()),
                           reason::kDirectoryUnavailable);
  }
  reachable_ = true;
  const int64_t lease = granted.id();
  state::v1::DirectoryHubRecord hub;
  hub.set_identifier(options_.identifier);
  hub.set_route(options_.route);
  pb::TxnRequest txn;
  AddPut(txn.mutable_success(), Key(kHubs, options_.replica), ToJson(hub), lease);
  pb::TxnResponse response;
  status = etcd_->Txn(txn, &response);
  if (!status.ok()) {
    reachable_ = false;
    return Unavailable("writing this replica's record", status);
  }
  {
    veil::MutexLock lock(&mu_);
    lease_ = lease;
  }
  spdlog::info("hub directory: replica {} holds lease {:x} ({} s) at {}", options_.replica, lease,
               options_.lease_ttl.count(), etcd_->at(etcd_->current()).url);
  Reclaim(lease);
  return absl::OkStatus();
}

// Claims again, under `lease`, each name that waits: only if the name is still its owner's and
// no other replica holds it (relays/NAME absent, or already under this lease).
void RelayDirectory::Reclaim(int64_t lease) {
  std::vector<std::pair<std::string, std::string>> pending;  // name, owner
  {
    veil::MutexLock lock(&mu_);
    for (const auto& [name, claim] : claims_) {
      if (claim.epoch == 0) pending.emplace_back(name, claim.owner);
    }
  }
  for (const auto& [name, owner] : pending) {
    state::v1::DirectoryRelayRecord record;
    record.set_owner(owner);
    record.set_replica(options_.replica);
    const std::string value = ToJson(record);
    pb::TxnRequest txn;
    AddCompare(txn, Key(kOwners, name), pb::Compare::VALUE)->set_value(owner);
    AddCompare(txn, Key(kRelays, name), pb::Compare::CREATE)->set_create_revision(0);
    AddPut(txn.mutable_success(), Key(kRelays, name), value, lease);
    pb::TxnRequest* mine = txn.add_failure()->mutable_request_txn();
    AddCompare(*mine, Key(kOwners, name), pb::Compare::VALUE)->set_value(owner);
    AddCompare(*mine, Key(kRelays, name), pb::Compare::LEASE)->set_lease(lease);
    AddPut(mine->mutable_success(), Key(kRelays, name), value, lease);
    pb::TxnResponse response;
    grpc::Status status = etcd_->Txn(txn, &response);
    if (!status.ok()) {
      reachable_ = false;
      return;  // the next renewal tries again
    }
    const bool claimed = response.succeeded() || (response.responses_size() == 1 &&
                                                  response.responses(0).response_txn().succeeded());
    std::optional<DirectoryRelay> now;
    {
      veil::MutexLock lock(&mu_);
      auto it = claims_.find(name);
      if (it == claims_.end() || it->second.epoch != 0) continue;  // dropped meanwhile
      if (claimed) {
        it->second.epoch = response.header().revision();
        it->second.lease = lease;
        continue;
      }
      claims_.erase(it);
      auto known = view_.find(name);
      if (known != view_.end()) now = known->second;
    }
    Log(spdlog::level::warn, {{log_field::kRelay, name}},
        "hub directory: relay {} is no longer this replica's: {}", name,
        now ? absl::StrCat("replica ", now->replica, " has it") : std::string("released"));
    ReportLost(name, now);
  }
}

void RelayDirectory::ReportLost(const std::string& name, const std::optional<DirectoryRelay>& now) {
  claims_lost_.fetch_add(1, std::memory_order_relaxed);
  if (on_lost_) on_lost_(name, now);
}

void RelayDirectory::KeepAliveLoop() {
  auto renewed = std::chrono::steady_clock::now();
  const auto interval = options_.lease_ttl / 3;
  Backoff backoff(std::chrono::milliseconds(200), std::chrono::milliseconds(2000),
                  [] { return 0.5; });
  while (!stopping_) {
    {
      veil::MutexLock lock(&mu_);
      auto until = std::chrono::steady_clock::now() + (lease_ == 0 ? backoff.Next() : interval);
      while (!stopping_ && std::chrono::steady_clock::now() < until) wake_.WaitUntil(&mu_, until);
    }
    if (stopping_) break;
    int64_t lease;
    {
      veil::MutexLock lock(&mu_);
      lease = lease_;
    }
    if (lease == 0) {
      if (Renew().ok()) {
        renewed = std::chrono::steady_clock::now();
        backoff.Reset();
      }
      continue;
    }
    pb::LeaseKeepAliveResponse answer;
    grpc::Status status = etcd_->Unary([&](Etcd::Endpoint& e, grpc::ClientContext& ctx) {
      auto stream = e.lease->LeaseKeepAlive(&ctx);
      pb::LeaseKeepAliveRequest request;
      request.set_id(lease);
      if (!stream->Write(request) || !stream->Read(&answer)) {
        stream->WritesDone();
        grpc::Status finished = stream->Finish();
        return finished.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "keepalive stream ended")
                             : finished;
      }
      stream->WritesDone();
      ctx.TryCancel();  // one answer is all it needs
      (void)stream->Finish();
      return grpc::Status::OK;
    });
    const auto now = std::chrono::steady_clock::now();
    bool lost = false;
    if (status.ok()) {
      reachable_ = true;
      if (answer.ttl() > 0) {
        renewed = now;
      } else {
        lost = true;  // etcd let it expire
      }
    } else {
      reachable_ = false;
      lost = now - renewed >= options_.lease_ttl;
    }
    if (!lost) continue;
    size_t voided = 0;
    {
      veil::MutexLock lock(&mu_);
      if (lease_ != lease) continue;
      lease_ = 0;
      for (auto& [name, claim] : claims_) {
        if (claim.epoch != 0) ++voided;
        claim.epoch = 0;
      }
    }
    spdlog::warn(
        "hub directory: lease {:x} of replica {} is lost ({}); its {} claims wait for a new one, "
        "new relay names are refused meanwhile",
        lease, options_.replica, status.ok() ? "expired in etcd" : status.error_message(), voided);
  }
}

void RelayDirectory::WatchLoop() {
  const std::string prefix = options_.prefix;
  Backoff backoff(std::chrono::milliseconds(200), std::chrono::milliseconds(2000),
                  [] { return 0.5; });
  int64_t revision = 0;  // the view's: the watch starts after it
  bool loaded = false;
  while (!stopping_) {
    if (!loaded) {
      // (Re)load the hubs/, owners/ and relays/ views, replacing what was there, in pages read at
      // one revision.
      const std::string first = Key(kHubs, ""), end = PrefixEnd(Key(kRelays, ""));
      std::vector<mvccpb::KeyValue> kvs;
      int64_t at = 0;
      grpc::Status status;
      int pages = 0;
      for (std::string from = first;;) {
        pb::RangeResponse range;
        status = etcd_->Unary([&](Etcd::Endpoint& e, grpc::ClientContext& ctx) {
          pb::RangeRequest request;
          request.set_key(from);
          request.set_range_end(end);
          request.set_revision(at);
          request.set_limit(options_.load_page);
          range.Clear();
          return e.kv->Range(&ctx, request, &range);
        });
        if (!status.ok()) break;
        if (at == 0) at = range.header().revision();
        ++pages;
        for (auto& kv : *range.mutable_kvs()) kvs.push_back(std::move(kv));
        if (!range.more() || range.kvs_size() == 0) break;
        from = kvs.back().key() + '\0';  // the next key after the last one read
      }
      if (!status.ok()) {
        reachable_ = false;
        veil::MutexLock lock(&mu_);
        auto until = std::chrono::steady_clock::now() + backoff.Next();
        while (!stopping_ && std::chrono::steady_clock::now() < until) wake_.WaitUntil(&mu_, until);
        continue;
      }
      absl::flat_hash_map<std::string, DirectoryRelay> before;
      {
        veil::MutexLock lock(&mu_);
        before = std::move(view_);
        view_.clear();
        bindings_.clear();
        bound_per_owner_.clear();
        hubs_.clear();
      }
      const std::string relays = Key(kRelays, "");
      for (const auto& kv : kvs) {
        Apply(kv.key(), kv.value(), kv.mod_revision(), 0, false);
        if (absl::StartsWith(kv.key(), relays)) before.erase(kv.key().substr(relays.size()));
      }
      for (const auto& [name, gone] : before) {  // deleted while the watch was down
        Apply(Key(kRelays, name), "", at, 0, true);
      }
      revision = at;
      loaded = true;
      spdlog::info("hub directory: loaded {} keys at revision {} in {} page(s)", kvs.size(), at,
                   pages);
    }
    grpc::ClientContext ctx;
    std::shared_ptr<grpc::ClientReaderWriter<pb::WatchRequest, pb::WatchResponse>> stream =
        etcd_->at(etcd_->current()).watch->Watch(&ctx);
    {
      veil::MutexLock lock(&mu_);
      watch_ctx_ = &ctx;
      if (stopping_) ctx.TryCancel();  // Shutdown came before the context was there to cancel
    }
    pb::WatchRequest request;
    auto* create = request.mutable_create_request();
    create->set_key(Key(kHubs, ""));
    create->set_range_end(PrefixEnd(Key(kRelays, "")));
    create->set_start_revision(revision + 1);
    create->set_prev_kv(true);
    create->set_progress_notify(true);
    pb::WatchResponse response;
    if (stream->Write(request)) {
      while (!stopping_ && stream->Read(&response)) {
        reachable_ = true;
        backoff.Reset();
        if (response.compact_revision() > 0 || response.canceled()) {
          loaded = false;  // compacted past the view: load it again
          ctx.TryCancel();
          break;
        }
        for (const auto& event : response.events()) {
          const bool deleted = event.type() == mvccpb::Event::DELETE;
          Apply(event.kv().key(), event.kv().value(), event.kv().mod_revision(),
                event.has_prev_kv() ? event.prev_kv().lease() : 0, deleted);
          revision = std::max(revision, event.kv().mod_revision());
        }
        revision = std::max(revision, response.header().revision());
      }
    }
    stream->WritesDone();
    grpc::Status finished = stream->Finish();
    {
      veil::MutexLock lock(&mu_);
      watch_ctx_ = nullptr;
    }
    if (stopping_) break;
    if (!finished.ok()) {
      reachable_ = false;
      etcd_->Failed(etcd_->current());
    }
    veil::MutexLock lock(&mu_);
    auto until = std::chrono::steady_clock::now() + backoff.Next();
    while (!stopping_ && std::chrono::steady_clock::now() < until) wake_.WaitUntil(&mu_, until);
  }
}

void RelayDirectory::Apply(const std::string& key, const std::string& value, int64_t mod_revision,
                           int64_t prev_lease, bool deleted) {
  absl::string_view name = key;
  if (absl::ConsumePrefix(&name, Key(kOwners, ""))) {
    veil::MutexLock lock(&mu_);
    ApplyBinding(name, value, deleted);
    return;
  }
  if (absl::ConsumePrefix(&name, Key(kHubs, ""))) {
    state::v1::DirectoryHubRecord record;
    if (!deleted && !google::protobuf::util::JsonStringToMessage(value, &record).ok()) {
      spdlog::warn("hub directory: ignoring {}: not a hub record", QuoteInput(key));
      return;
    }
    veil::MutexLock lock(&mu_);
    if (deleted) {
      hubs_.erase(name);
    } else {
      hubs_[name] = DirectoryHub{std::string(name), record.identifier(), record.route()};
    }
    return;
  }
  if (!absl::ConsumePrefix(&name, Key(kRelays, ""))) return;
  std::optional<DirectoryRelay> lost_to;
  bool lost = false;
  {
    veil::MutexLock lock(&mu_);
    auto claim = claims_.find(name);
    if (deleted) {
      view_.erase(name);
      // Deleted under this replica's live lease, not by this replica: an admin released it.
      if (claim != claims_.end() && claim->second.epoch != 0 && prev_lease != 0 &&
          prev_lease == claim->second.lease && claim->second.lease == lease_) {
        claims_.erase(claim);
        lost = true;
      }
    } else {
      state::v1::DirectoryRelayRecord record;
      if (!google::protobuf::util::JsonStringToMessage(value, &record).ok()) {
        spdlog::warn("hub directory: ignoring {}: not a relay record", QuoteInput(key));
        return;
      }
      DirectoryRelay& entry = view_[name];
      entry.name = std::string(name);
      entry.owner = record.owner();
      entry.replica = record.replica();
      entry.epoch = mod_revision;
      if (claim != claims_.end() && claim->second.epoch != 0 &&
          record.replica() != options_.replica && mod_revision > claim->second.epoch) {
        claims_.erase(claim);
        lost = true;
        lost_to = entry;
      }
    }
  }
  if (lost) {
    Log(spdlog::level::info, {{log_field::kRelay, std::string(name)}},
        "hub directory: relay {} moved {}", name,
        lost_to ? absl::StrCat("to replica ", lost_to->replica) : std::string("out: released"));
    ReportLost(std::string(name), lost_to);
  }
}

void RelayDirectory::ApplyBinding(absl::string_view name, const std::string& owner, bool deleted) {
  auto it = bindings_.find(name);
  if (it != bindings_.end()) {
    if (!deleted && it->second == owner) return;
    auto count = bound_per_owner_.find(it->second);
    if (count != bound_per_owner_.end() && --count->second == 0) bound_per_owner_.erase(count);
    if (deleted) {
      bindings_.erase(it);
      return;
    }
    it->second = owner;
  } else {
    if (deleted) return;
    bindings_.emplace(name, owner);
  }
  ++bound_per_owner_[owner];
}

absl::Status RelayDirectory::CheckBindingRoom(const std::string& name,
                                              const std::string& owner) const {
  if (bindings_.contains(name)) return absl::OkStatus();
  auto count = bound_per_owner_.find(owner);
  if (count != bound_per_owner_.end() && count->second >= options_.max_names_per_owner) {
    return ErrorWithReason(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("identity ", owner, " already holds ", count->second,
                     " relay names in the hub directory (--hub-directory-max-names-per-owner): "
                     "delete one it no longer uses (veil relay delete) before taking ",
                     QuoteInput(name)),
        reason::kRelayLimit);
  }
  if (bindings_.size() >= options_.max_names) {
    return ErrorWithReason(absl::StatusCode::kResourceExhausted,
                           absl::StrCat("the hub directory holds ", bindings_.size(),
                                        " relay names, its limit (--hub-directory-max-names)"),
                           reason::kRelayLimit);
  }
  return absl::OkStatus();
}

bool RelayDirectory::TakePending(const std::string& name, const std::string& owner,
                                 const std::optional<DirectoryRelay>& known) {
  if (!known || known->owner != owner) return false;
  veil::MutexLock lock(&mu_);
  claims_[name] = Claimed{owner, 0, 0};
  return true;
}

void RelayDirectory::Claim(const std::string& name, const std::string& owner, Done done) {
  if (stopping_) {
    done(ErrorWithReason(absl::StatusCode::kUnavailable, "the hub is stopping",
                         reason::kNodeShuttingDown));
    return;
  }
  int64_t lease;
  std::optional<DirectoryRelay> known;
  absl::Status room;
  {
    veil::MutexLock lock(&mu_);
    room = CheckBindingRoom(name, owner);
    lease = lease_;
    auto it = view_.find(name);
    if (it != view_.end()) known = it->second;
  }
  if (!room.ok()) {  // (`done` runs without the lock: it may take the hub's)
    claims_refused_.fetch_add(1, std::memory_order_relaxed);
    return done(room);
  }
  if (lease == 0) {
    if (TakePending(name, owner, known)) return done(absl::OkStatus());
    claims_refused_.fetch_add(1, std::memory_order_relaxed);
    done(ErrorWithReason(absl::StatusCode::kUnavailable,
                         absl::StrCat("the hub directory (etcd) is unreachable: new relay names "
                                      "are refused until it is back (relay ",
                                      QuoteInput(name), ")"),
                         reason::kDirectoryUnavailable));
    return;
  }
  state::v1::DirectoryRelayRecord record;
  record.set_owner(owner);
  record.set_replica(options_.replica);
  const std::string value = ToJson(record);
  pb::TxnRequest txn;
  AddCompare(txn, Key(kOwners, name), pb::Compare::CREATE)->set_create_revision(0);
  AddPut(txn.mutable_success(), Key(kOwners, name), owner, 0);
  AddPut(txn.mutable_success(), Key(kRelays, name), value, lease);
  pb::TxnRequest* bound = txn.add_failure()->mutable_request_txn();
  AddCompare(*bound, Key(kOwners, name), pb::Compare::VALUE)->set_value(owner);
  AddPut(bound->mutable_success(), Key(kRelays, name), value, lease);
  AddRange(bound->mutable_failure(), Key(kOwners, name));
  etcd_->TxnAsync(std::move(txn), [this, name, owner, lease, known, done = std::move(done)](
                                      grpc::Status status, pb::TxnResponse& response) {
    if (!status.ok()) {
      reachable_ = false;
      if (TakePending(name, owner, known)) return done(absl::OkStatus());
      claims_refused_.fetch_add(1, std::memory_order_relaxed);
      done(Unavailable(absl::StrCat("claiming relay ", QuoteInput(name)), status));
      return;
    }
    reachable_ = true;
    const bool claimed = response.succeeded() || (response.responses_size() == 1 &&
                                                  response.responses(0).response_txn().succeeded());
    if (!claimed) {
      claims_refused_.fetch_add(1, std::memory_order_relaxed);
      done(ErrorWithReason(absl::StatusCode::kPermissionDenied,
                           absl::StrCat("relay name ", QuoteInput(name),
                                        " belongs to another identity (in the hub directory)"),
                           reason::kRelayNameTaken));
      return;
    }
    {
      veil::MutexLock lock(&mu_);
      claims_[name] = Claimed{owner, response.header().revision(), lease};
    }
    done(absl::OkStatus());
  });
}

void RelayDirectory::Drop(const std::string& name) {
  int64_t epoch;
  {
    veil::MutexLock lock(&mu_);
    auto it = claims_.find(name);
    if (it == claims_.end()) return;
    epoch = it->second.epoch;
    claims_.erase(it);
  }
  if (epoch == 0 || stopping_) return;  // nothing of it in etcd under this lease; or revoked
  pb::TxnRequest txn;
  AddCompare(txn, Key(kRelays, name), pb::Compare::MOD)->set_mod_revision(epoch);
  AddDelete(txn.mutable_success(), Key(kRelays, name));
  etcd_->TxnAsync(std::move(txn), [this](grpc::Status status, pb::TxnResponse&) {
    if (!status.ok()) reachable_ = false;  // the lease takes it with it in the end
  });
}

void RelayDirectory::Release(const std::string& name, const std::string& owner, Done done) {
  {
    veil::MutexLock lock(&mu_);
    claims_.erase(name);
  }
  if (stopping_) {
    done(ErrorWithReason(absl::StatusCode::kUnavailable, "the hub is stopping",
                         reason::kNodeShuttingDown));
    return;
  }
  pb::TxnRequest txn;
  AddCompare(txn, Key(kOwners, name), pb::Compare::VALUE)->set_value(owner);
  AddDelete(txn.mutable_success(), Key(kOwners, name));
  AddDelete(txn.mutable_success(), Key(kRelays, name));
  etcd_->TxnAsync(
      std::move(txn), [this, name, done = std::move(done)](grpc::Status status, pb::TxnResponse&) {
        if (!status.ok()) {
          reachable_ = false;
          done(Unavailable(absl::StrCat("releasing relay ", QuoteInput(name)), status));
          return;
        }
        done(absl::OkStatus());  // not its owner's (any more): nothing of the owner's to release
      });
}

void RelayDirectory::ForceRelease(const std::string& name, Done done) {
  if (stopping_) {
    done(ErrorWithReason(absl::StatusCode::kUnavailable, "the hub is stopping",
                         reason::kNodeShuttingDown));
    return;
  }
  pb::TxnRequest txn;
  AddCompare(txn, Key(kOwners, name), pb::Compare::CREATE, pb::Compare::GREATER)
      ->set_create_revision(0);
  AddDelete(txn.mutable_success(), Key(kOwners, name));
  AddDelete(txn.mutable_success(), Key(kRelays, name));
  etcd_->TxnAsync(std::move(txn), [this, name, done = std::move(done)](grpc::Status status,
                                                                       pb::TxnResponse& response) {
    if (!status.ok()) {
      reachable_ = false;
      return done(Unavailable(absl::StrCat("releasing relay ", QuoteInput(name)), status));
    }
    reachable_ = true;
    if (!response.succeeded()) {
      return done(ErrorWithReason(
          absl::StatusCode::kNotFound,
          absl::StrCat("no owner holds relay name ", QuoteInput(name), " in the hub directory"),
          reason::kRelayNotFound));
    }
    spdlog::warn("hub directory: relay name {} released by an admin", QuoteInput(name));
    done(absl::OkStatus());
  });
}

std::optional<DirectoryRelay> RelayDirectory::Lookup(const std::string& name) const {
  veil::MutexLock lock(&mu_);
  auto it = view_.find(name);
  if (it == view_.end()) return std::nullopt;
  return it->second;
}

std::optional<DirectoryHub> RelayDirectory::Hub(const std::string& replica) const {
  veil::MutexLock lock(&mu_);
  auto it = hubs_.find(replica);
  if (it == hubs_.end()) return std::nullopt;
  return it->second;
}

bool RelayDirectory::IsHub(absl::string_view identifier) const {
  veil::MutexLock lock(&mu_);
  for (const auto& [replica, hub] : hubs_) {
    if (hub.identifier == identifier) return true;
  }
  return false;
}

DirectoryStats RelayDirectory::Stats() const {
  DirectoryStats stats;
  stats.reachable = reachable_;
  stats.claims_lost = claims_lost_.load(std::memory_order_relaxed);
  stats.claims_refused = claims_refused_.load(std::memory_order_relaxed);
  veil::MutexLock lock(&mu_);
  stats.lease_held = lease_ != 0;
  stats.known_relays = view_.size();
  stats.bound_names = bindings_.size();
  stats.claims = claims_.size();
  for (const auto& [name, claim] : claims_) stats.pending_claims += claim.epoch == 0;
  return stats;
}

void RelayDirectory::Shutdown() {
  if (stopping_.exchange(true)) return;
  {
    veil::MutexLock lock(&mu_);
    if (watch_ctx_ != nullptr) watch_ctx_->TryCancel();
    wake_.SignalAll();
  }
  if (keepalive_.joinable()) keepalive_.join();
  if (watch_.joinable()) watch_.join();
  int64_t lease;
  {
    veil::MutexLock lock(&mu_);
    lease = lease_;
    lease_ = 0;
  }
  if (etcd_ != nullptr) etcd_->Drain(options_.call_timeout * (etcd_->size() + 1));
  if (lease != 0 && etcd_ != nullptr) {  // the replica's relays and record go now, not at expiry
    pb::LeaseRevokeResponse revoked;
    (void)etcd_->Unary([&](Etcd::Endpoint& e, grpc::ClientContext& ctx) {
      pb::LeaseRevokeRequest request;
      request.set_id(lease);
      return e.lease->LeaseRevoke(&ctx, request, &revoked);
    });
  }
}

}  // namespace veil::relay
