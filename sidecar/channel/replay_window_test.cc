#include "sidecar/channel/replay_window.h"

#include "gtest/gtest.h"

namespace veil::channel {
namespace {

TEST(ReplayWindowTest, AcceptsEachCounterOnce) {
  ReplayWindow w;
  for (uint64_t n = 0; n < 5000; ++n) {
    ASSERT_TRUE(w.MayAccept(n)) << n;
    w.Accept(n);
    ASSERT_FALSE(w.MayAccept(n)) << n;
  }
  for (uint64_t n = 3900; n < 5000; ++n) EXPECT_FALSE(w.MayAccept(n)) << n;
}

TEST(ReplayWindowTest, ReorderingWithinTheWindow) {
  ReplayWindow w;
  w.Accept(100);
  EXPECT_TRUE(w.MayAccept(50));
  w.Accept(50);
  EXPECT_FALSE(w.MayAccept(50));
  EXPECT_TRUE(w.MayAccept(99));
  EXPECT_TRUE(w.MayAccept(101));
  w.Accept(2000);
  EXPECT_FALSE(w.MayAccept(100));  // now too old
  EXPECT_FALSE(w.MayAccept(2000 - ReplayWindow::kSize));
  EXPECT_TRUE(w.MayAccept(2000 - ReplayWindow::kSize + 1));
  EXPECT_TRUE(w.MayAccept(1500));  // skipped, still in the window
}

TEST(ReplayWindowTest, BigJumpClearsTheWindow) {
  ReplayWindow w;
  for (uint64_t n = 0; n < 10; ++n) w.Accept(n);
  w.Accept(1'000'000);
  for (uint64_t n = 1'000'000 - ReplayWindow::kSize + 1; n < 1'000'000; ++n) {
    ASSERT_TRUE(w.MayAccept(n)) << n;  // bits of the old range must not linger
  }
}

TEST(ReplayWindowTest, FirstCounterMayBeAnything) {
  ReplayWindow w;
  EXPECT_TRUE(w.MayAccept(0));
  EXPECT_TRUE(w.MayAccept(UINT64_MAX - 1));
  w.Accept(7);
  EXPECT_TRUE(w.MayAccept(0));
  EXPECT_FALSE(w.MayAccept(7));
}

}  // namespace
}  // namespace veil::channel
