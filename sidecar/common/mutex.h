// Mutex, its scoped locks and CondVar: std::mutex with the clang thread-safety annotations abseil's
// mutex carries (ABSL_GUARDED_BY, ABSL_EXCLUSIVE_LOCKS_REQUIRED, ... work unchanged).
//
// Why not absl::Mutex: Debian's abseil is a prebuilt library that ThreadSanitizer cannot see
// into, so every access guarded by an absl::Mutex shows as a race; std::mutex goes through
// pthread, which TSan intercepts. The reader lock is exclusive (no reader/writer split); our
// critical sections are short.
//
// Thread-safety: as std::mutex.
#ifndef VEIL_SIDECAR_COMMON_MUTEX_H_
#define VEIL_SIDECAR_COMMON_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace veil {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  void ReaderLock() ABSL_SHARED_LOCK_FUNCTION() { mu_.lock(); }
  void ReaderUnlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class ABSL_SCOPED_LOCKABLE ReaderMutexLock {
 public:
  explicit ReaderMutexLock(Mutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) { mu_->ReaderLock(); }
  ~ReaderMutexLock() ABSL_UNLOCK_FUNCTION() { mu_->ReaderUnlock(); }
  ReaderMutexLock(const ReaderMutexLock&) = delete;
  ReaderMutexLock& operator=(const ReaderMutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A condition variable for Mutex. Waiters check their condition themselves, with the mutex
// held, around each wait (so the lock analysis sees the guarded reads).
class CondVar {
 public:
  // Releases `mu` until signalled (or spuriously woken) or `deadline`, then holds it again;
  // false once the deadline has passed.
  bool WaitUntil(Mutex* mu, std::chrono::steady_clock::time_point deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool signalled = cv_.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();  // still held, by the caller's MutexLock
    return signalled;
  }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace veil

#endif  // VEIL_SIDECAR_COMMON_MUTEX_H_
