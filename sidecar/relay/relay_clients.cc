#include "sidecar/relay/relay_clients.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/common/fmt_absl.h"
#include "sidecar/common/log_fields.h"
#include "sidecar/relay/relay_registry.h"
#include "spdlog/spdlog.h"

namespace veil::relay {
namespace {

absl::Status NotFound(absl::string_view name) {
  return ErrorWithReason(absl::StatusCode::kNotFound, absl::StrCat("no relay named \"", name, "\""),
                         reason::kRelayNotFound);
}

}  // namespace

RelayClients::RelayClients(channel::SecureChannelManager& channels, RelayClientOptions options)
    : channels_(channels), options_(options) {
  {
    veil::MutexLock lock(&watch_->mu);
    watch_->self = this;
  }
  channels_.AddCarrierObserver([watch = watch_](uint64_t carrier, absl::string_view why) {
    veil::MutexLock lock(&watch->mu);
    if (watch->self != nullptr) watch->self->CarrierClosed(carrier, why);
  });
}

RelayClients::~RelayClients() {
  {
    veil::MutexLock lock(&watch_->mu);
    watch_->self = nullptr;
  }
  Shutdown();
}

void RelayClients::CarrierClosed(uint64_t carrier, absl::string_view why) {
  if (carrier == 0) return;
  std::vector<std::shared_ptr<RelayClient>> riding;
  {
    veil::MutexLock lock(&mu_);
    for (const auto& client : clients_) {
      if (client->hub_carrier() == carrier) riding.push_back(client);
    }
  }
  for (auto& client : riding) client->CarrierClosed(carrier, why);
}

std::shared_ptr<RelayClient> RelayClients::FindLocked(const std::string& name) const {
  for (const auto& client : clients_) {
    if (client->HasName(name)) return client;
  }
  return nullptr;
}

std::shared_ptr<RelayClient> RelayClients::Add(
    const core::Route& hub_route, const std::string& name, const std::string& identity,
    std::shared_ptr<const channel::TrustPolicy> hub_policy, absl::Status& error) {
  if (!name.empty()) {
    error = ValidateRelayName(name);
    if (!error.ok()) return nullptr;
  }
  auto client = std::make_shared<RelayClient>(channels_, hub_route, name, identity,
                                              std::move(hub_policy), options_, gate_);
  veil::MutexLock lock(&mu_);
  if (!name.empty() && FindLocked(name) != nullptr) {
    error = ErrorWithReason(absl::StatusCode::kAlreadyExists,
                            absl::StrCat("this sidecar already has a relay named \"", name, "\""),
                            reason::kRelayExists);
    return nullptr;
  }
  clients_.push_back(client);
  return client;
}

void RelayClients::Create(const core::Route& hub_route, const std::string& name,
                          const std::string& identity,
                          std::shared_ptr<const channel::TrustPolicy> hub_policy,
                          RelayClient::Outcome done, bool exist_ok) {
  if (exist_ok) {
    std::shared_ptr<RelayClient> existing;
    {
      veil::MutexLock lock(&mu_);
      for (const auto& client : clients_) {
        RelayStatus s = client->Status();
        if (s.hub_route == hub_route.ToString() && s.identity == identity &&
            (name.empty() || s.name == name) && s.state != RelayStatus::State::kFailed &&
            s.state != RelayStatus::State::kStopped) {
          existing = client;
          break;
        }
      }
    }
    if (existing != nullptr) {
      done(existing->Status());
      return;
    }
  }
  absl::Status error;
  auto client = Add(hub_route, name, identity, std::move(hub_policy), error);
  if (client == nullptr) {
    done(error);
    return;
  }
  client->Start([this, client, done = std::move(done)](absl::StatusOr<RelayStatus> status) {
    if (!status.ok()) {
      veil::MutexLock lock(&mu_);
      std::erase(clients_, client);
    }
    done(std::move(status));
  });
}

absl::Status RelayClients::Start(const core::Route& hub_route, const std::string& name,
                                 const std::string& identity,
                                 std::shared_ptr<const channel::TrustPolicy> hub_policy) {
  absl::Status error;
  auto client = Add(hub_route, name, identity, std::move(hub_policy), error);
  if (client == nullptr) return error;
  client->Start(
      // A refused relay stays listed, FAILED with the hub's reason, until deleted.
      [name, hub = hub_route.ToString()](absl::StatusOr<RelayStatus> status) {
        if (status.ok()) return;
        const std::string reason = ReasonOf(status.status());
        Log(spdlog::level::err,
            {{log_field::kRelay, name}, {log_field::kHub, hub}, {log_field::kReason, reason}},
            "relay {} on hub {} stopped: {}", name.empty() ? "(hub-assigned)" : name, hub,
            status.status().message());
      },
      /*retry_until_up=*/true);
  return absl::OkStatus();
}

std::vector<RelayStatus> RelayClients::List() const {
  std::vector<RelayStatus> out;
  {
    veil::MutexLock lock(&mu_);
    for (const auto& client : clients_) out.push_back(client->Status());
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<RelayStatus> RelayClients::Get(const std::string& name) const {
  veil::MutexLock lock(&mu_);
  auto client = FindLocked(name);
  if (client == nullptr) return NotFound(name);
  return client->Status();
}

absl::Status RelayClients::Delete(const std::string& name) {
  std::shared_ptr<RelayClient> client;
  {
    veil::MutexLock lock(&mu_);
    client = FindLocked(name);
    if (client == nullptr) return NotFound(name);
    std::erase(clients_, client);
  }
  client->Stop();
  return absl::OkStatus();
}

void RelayClients::Shutdown() {
  std::vector<std::shared_ptr<RelayClient>> clients;
  {
    veil::MutexLock lock(&mu_);
    clients.swap(clients_);
  }
  for (auto& client : clients) client->Stop();
}

bool RelayClients::RidesOn(uint64_t carrier) const {
  if (carrier == 0) return false;
  veil::MutexLock lock(&mu_);
  for (const auto& client : clients_) {
    if (client->hub_carrier() == carrier) return true;
  }
  return false;
}

}  // namespace veil::relay
