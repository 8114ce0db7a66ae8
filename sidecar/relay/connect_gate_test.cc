#include <vector>

#include "gtest/gtest.h"
#include "sidecar/relay/relay_client.h"

namespace veil::relay {
namespace {

TEST(ConnectGateTest, AtMostItsSlotsAtOnceTheRestInOrder) {
  ConnectGate gate(2);
  std::vector<int> ran;
  for (int i = 0; i < 5; ++i) {
    gate.Enter([&ran, i] {
      ran.push_back(i);
      return true;
    });
  }
  EXPECT_EQ(ran, (std::vector<int>{0, 1}));
  gate.Leave();
  EXPECT_EQ(ran, (std::vector<int>{0, 1, 2}));
  gate.Leave();
  gate.Leave();
  EXPECT_EQ(ran, (std::vector<int>{0, 1, 2, 3, 4}));
  gate.Leave();
  gate.Leave();  // both slots free again
  gate.Enter([&ran] {
    ran.push_back(5);
    return true;
  });
  EXPECT_EQ(ran.back(), 5);
}

// A waiter whose session is gone passes the slot on at once, however many there are (no
// nesting: 100,000 of them would otherwise overflow the stack).
TEST(ConnectGateTest, GoneWaitersPassTheSlotOn) {
  ConnectGate gate(1);
  int taken = 0;
  gate.Enter([&] { return ++taken, true; });
  for (int i = 0; i < 100000; ++i) {
    gate.Enter([] { return false; });
  }
  gate.Enter([&] { return ++taken, true; });
  EXPECT_EQ(taken, 1);
  gate.Leave();
  EXPECT_EQ(taken, 2);
  // A first waiter that is gone hands its slot back too.
  gate.Leave();
  gate.Enter([] { return false; });
  gate.Enter([&] { return ++taken, true; });
  EXPECT_EQ(taken, 3);
}

}  // namespace
}  // namespace veil::relay
