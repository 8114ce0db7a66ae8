#include "sidecar/channel/credential_book.h"

#include <algorithm>

namespace veil::channel {
namespace {

// What an identity presents: its credentials in authority order, at most a proof's worth.
std::shared_ptr<const CredentialBook::Credentials> Presented(
    const absl::flat_hash_map<std::string, std::string>& held) {
  std::vector<std::string> authorities;
  for (const auto& [authority, credential] : held) authorities.push_back(authority);
  std::sort(authorities.begin(), authorities.end());
  auto presented = std::make_shared<CredentialBook::Credentials>();
  for (const std::string& authority : authorities) {
    if (presented->size() == identity::kMaxPresentedCredentials) break;
    presented->push_back(held.at(authority));
  }
  return presented;
}

}  // namespace

std::shared_ptr<const CredentialBook::Authorities> CredentialBook::trusted() const {
  veil::MutexLock lock(&mu_);
  return trusted_;
}

void CredentialBook::Trust(const std::string& authority_identifier) {
  veil::MutexLock lock(&mu_);
  if (trusted_->contains(authority_identifier)) return;
  auto next = std::make_shared<Authorities>(*trusted_);
  next->insert(authority_identifier);
  trusted_ = std::move(next);
}

void CredentialBook::SetTrusted(Authorities authorities) {
  veil::MutexLock lock(&mu_);
  trusted_ = std::make_shared<const Authorities>(std::move(authorities));
}

std::shared_ptr<const CredentialBook::Credentials> CredentialBook::CredentialsOf(
    const std::string& identifier) const {
  veil::MutexLock lock(&mu_);
  auto it = presented_.find(identifier);
  return it == presented_.end() ? nullptr : it->second;
}

void CredentialBook::Put(const std::string& identifier, const std::string& authority,
                         std::string credential) {
  veil::MutexLock lock(&mu_);
  auto& held = held_[identifier];
  held[authority] = std::move(credential);
  presented_[identifier] = Presented(held);
}

void CredentialBook::Remove(const std::string& identifier, const std::string& authority) {
  veil::MutexLock lock(&mu_);
  auto it = held_.find(identifier);
  if (it == held_.end()) return;
  if (authority.empty()) {
    it->second.clear();
  } else {
    it->second.erase(authority);
  }
  if (it->second.empty()) {
    held_.erase(it);
    presented_.erase(identifier);
  } else {
    presented_[identifier] = Presented(it->second);
  }
}

}  // namespace veil::channel
