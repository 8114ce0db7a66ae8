#include "sidecar/vault/secret_bytes.h"

#include <sodium.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace veil::vault {
namespace {

// Small secrets (keys, DH outputs, HMACs: at most kSlotBytes) come from slabs of locked,
// guarded memory (one sodium_malloc each) instead of a sodium_malloc of their own: a
// sodium_malloc costs about ten system calls (mmap, mprotect, mlock and their undoing), which a
// handshake would pay dozens of times. Slots are wiped when released; slabs are kept for reuse.
class SlotPool {
 public:
  static constexpr size_t kSlotBytes = 64;
  static constexpr size_t kSlotsPerSlab = 1024;

  static SlotPool& Get() {
    static SlotPool* pool = new SlotPool();  // never destroyed: secrets may outlive statics
    return *pool;
  }
  uint8_t* Allocate() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) {
      auto* slab = static_cast<uint8_t*>(sodium_malloc(kSlotBytes * kSlotsPerSlab));
      if (slab == nullptr) std::abort();
      for (size_t i = kSlotsPerSlab; i-- > 0;) free_.push_back(slab + i * kSlotBytes);
    }
    uint8_t* slot = free_.back();
    free_.pop_back();
    return slot;
  }
  void Release(uint8_t* slot) {
    sodium_memzero(slot, kSlotBytes);
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(slot);
  }

 private:
  std::mutex mu_;
  std::vector<uint8_t*> free_;
};

uint8_t* AllocateSecret(size_t size) {
  if (sodium_init() < 0) std::abort();
  if (size <= SlotPool::kSlotBytes) return SlotPool::Get().Allocate();
  auto* data = static_cast<uint8_t*>(sodium_malloc(size));
  if (data == nullptr) std::abort();
  return data;
}

void FreeSecret(uint8_t* data, size_t size) {
  if (size <= SlotPool::kSlotBytes) {
    SlotPool::Get().Release(data);
  } else {
    sodium_free(data);  // wipes before freeing
  }
}

}  // namespace

SecretBytes::SecretBytes(size_t size) : size_(size) {
  if (size == 0) return;
  data_ = AllocateSecret(size);
  std::memset(data_, 0, size);
}

SecretBytes SecretBytes::CopyOf(std::span<const uint8_t> bytes) {
  SecretBytes out(bytes.size());
  if (!bytes.empty()) std::memcpy(out.data_, bytes.data(), bytes.size());
  return out;
}

SecretBytes SecretBytes::CopyOf(absl::string_view bytes) {
  return CopyOf(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

SecretBytes::SecretBytes(SecretBytes&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) FreeSecret(data_, size_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

SecretBytes::~SecretBytes() {
  if (data_ != nullptr) FreeSecret(data_, size_);
}

SecretBytes SecretBytes::Clone() const { return CopyOf(span()); }

bool SecretBytes::Equals(const SecretBytes& other) const {
  return size_ == other.size_ && (size_ == 0 || sodium_memcmp(data_, other.data_, size_) == 0);
}

}  // namespace veil::vault
