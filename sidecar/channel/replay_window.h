// ReplayWindow: which message counters a secure channel still accepts. A counter is accepted
// once, and only if it is newer than the highest seen or within kSize below it; this admits
// reordering within the window and rejects every replay.
//
// Use MayAccept before decrypting and Accept after the message authenticated, so that forged
// messages cannot move the window.
//
// Thread-safety: not synchronised.
#ifndef VEIL_SIDECAR_CHANNEL_REPLAY_WINDOW_H_
#define VEIL_SIDECAR_CHANNEL_REPLAY_WINDOW_H_

#include <array>
#include <cstdint>

namespace veil::channel {

class ReplayWindow {
 public:
  static constexpr uint64_t kSize = 1024;

  bool MayAccept(uint64_t n) const;
  // Records `n` as seen. Requires MayAccept(n).
  void Accept(uint64_t n);

 private:
  bool Seen(uint64_t n) const { return bits_[(n % kSize) / 64] >> (n % 64) & 1; }
  void Set(uint64_t n) { bits_[(n % kSize) / 64] |= uint64_t{1} << (n % 64); }
  void Clear(uint64_t n) { bits_[(n % kSize) / 64] &= ~(uint64_t{1} << (n % 64)); }

  bool any_ = false;
  uint64_t highest_ = 0;
  std::array<uint64_t, kSize / 64> bits_{};
};

}  // namespace veil::channel

#endif  // VEIL_SIDECAR_CHANNEL_REPLAY_WINDOW_H_
