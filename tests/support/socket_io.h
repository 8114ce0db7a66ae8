// Test and benchmark support: blocking reads and writes of whole buffers on a socket.
#ifndef VEIL_TESTS_SUPPORT_SOCKET_IO_H_
#define VEIL_TESTS_SUPPORT_SOCKET_IO_H_

#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>

namespace veil::testing {

// Reads exactly `n` bytes; false on EOF or error.
inline bool ReadFull(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Writes all `n` bytes (no SIGPIPE); false on error.
inline bool WriteFull(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace veil::testing

#endif  // VEIL_TESTS_SUPPORT_SOCKET_IO_H_
