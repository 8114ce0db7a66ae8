// SecretBytes: key material in memory that libsodium guards — sodium_malloc'd (guard pages,
// mlock'd so it is never swapped; small secrets share locked slabs), wiped on destruction.
// Move-only: a secret is never copied by accident, never printed, never formatted into an error.
//
// Thread-safety: a value type; not synchronised.
#ifndef VEIL_SIDECAR_VAULT_SECRET_BYTES_H_
#define VEIL_SIDECAR_VAULT_SECRET_BYTES_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/strings/string_view.h"

namespace veil::vault {

class SecretBytes {
 public:
  SecretBytes() = default;
  // `size` zero bytes. Aborts if locked memory cannot be had (as for any allocation failure).
  explicit SecretBytes(size_t size);
  // A copy of `bytes` in guarded memory. The caller wipes its own copy.
  static SecretBytes CopyOf(std::span<const uint8_t> bytes);
  static SecretBytes CopyOf(absl::string_view bytes);
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes();

  // An explicit copy, for the rare place that must keep two (e.g. a Noise split).
  SecretBytes Clone() const;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  std::span<uint8_t> mutable_span() { return {data_, size_}; }

  // Constant-time comparison.
  bool Equals(const SecretBytes& other) const;

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace veil::vault

#endif  // VEIL_SIDECAR_VAULT_SECRET_BYTES_H_
