#include "keeper.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "fd_store.hpp"

namespace shmlease::server {
namespace {

// What sd_notify sends: the keeper acts on what systemd would, and ignores the rest.
TEST(NotifyMessage, ParsesWhatTheDaemonSends) {
  NotifyMessage m;
  std::string error;
  ASSERT_TRUE(ParseNotifyMessage("FDSTORE=1\nFDNAME=seg-12", m, error)) << error;
  EXPECT_TRUE(m.fdstore);
  EXPECT_FALSE(m.fdstoreremove);
  EXPECT_EQ(m.fdname, "seg-12");
  ASSERT_TRUE(ParseNotifyMessage("FDSTOREREMOVE=1\nFDNAME=seg-3\n", m, error)) << error;
  EXPECT_TRUE(m.fdstoreremove);
  EXPECT_FALSE(m.fdstore);
  EXPECT_EQ(m.fdname, "seg-3");
  ASSERT_TRUE(ParseNotifyMessage("READY=1\nSTATUS=serving 2 clients\nMAINPID=7\nX-FOO=bar", m,
                                 error))
      << error;
  EXPECT_TRUE(m.ready);
  EXPECT_EQ(m.status, "serving 2 clients");
  EXPECT_TRUE(m.fdname.empty());
  ASSERT_TRUE(ParseNotifyMessage("STOPPING=1", m, error)) << error;
  EXPECT_TRUE(m.stopping);
  EXPECT_FALSE(m.ready) << "each message starts from nothing";
  ASSERT_TRUE(ParseNotifyMessage("FDSTORE=0\nREADY=0", m, error)) << error;
  EXPECT_FALSE(m.fdstore);
  EXPECT_FALSE(m.ready);
  ASSERT_TRUE(ParseNotifyMessage("", m, error)) << error;
}

TEST(NotifyMessage, RefusesWhatSystemdWouldRefuse) {
  NotifyMessage m;
  for (const std::string& text : std::vector<std::string>{
           "FDSTORE=1\nFDNAME=", "FDSTORE=1\nFDNAME=a:b", "FDSTORE=1\nFDNAME=a\x01" "b",
           "FDSTORE=1\nFDNAME=" + std::string(256, 'x'), "READY", "=1"}) {
    std::string error;
    EXPECT_FALSE(ParseNotifyMessage(text, m, error)) << text;
    EXPECT_FALSE(error.empty()) << text;
  }
  std::string error;
  EXPECT_TRUE(ParseNotifyMessage("FDSTORE=1\nFDNAME=" + std::string(255, 'x'), m, error)) << error;
}

TEST(SegmentFdName, RoundTripsAndHasOneSpellingPerId) {
  uint64_t id = 0;
  EXPECT_EQ(SegmentFdName(42), "seg-42");
  ASSERT_TRUE(ParseSegmentFdName("seg-42", id));
  EXPECT_EQ(id, 42u);
  for (const char* bad : {"seg-", "seg-0", "seg-042", "seg-4x", "seg--1", "SEG-1", "seg-1 ",
                          "shmleased.socket", "seg-99999999999999999999"}) {
    EXPECT_FALSE(ParseSegmentFdName(bad, id)) << bad;
  }
}

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

// The keeper's store: what FDSTORE adds, FDSTOREREMOVE closes; a duplicate is closed, not kept
// twice; past the limit nothing is kept and nothing leaks.
TEST(KeptFds, AddsRemovesAndClosesEverything) {
  int a = ::memfd_create("kept-a", MFD_CLOEXEC);
  int b = ::memfd_create("kept-b", MFD_CLOEXEC);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  int a_again = ::dup(a);
  int c = ::memfd_create("kept-c", MFD_CLOEXEC);
  {
    KeptFds kept;
    ASSERT_TRUE(kept.Add("seg-1", a, 2));
    ASSERT_TRUE(kept.Add("seg-2", b, 2));
    EXPECT_TRUE(kept.Add("seg-1", a_again, 2)) << "a duplicate is accepted";
    EXPECT_FALSE(IsOpen(a_again)) << "and closed, not kept twice";
    EXPECT_EQ(kept.size(), 2u);
    EXPECT_EQ(kept.Names(), "seg-1:seg-2");
    EXPECT_FALSE(kept.Add("seg-3", c, 2)) << "over the limit";
    EXPECT_FALSE(IsOpen(c)) << "refused descriptors are closed";
    EXPECT_EQ(kept.Remove("seg-1"), 1u);
    EXPECT_FALSE(IsOpen(a));
    EXPECT_EQ(kept.Remove("seg-1"), 0u);
    EXPECT_EQ(kept.Names(), "seg-2");
    EXPECT_TRUE(IsOpen(b));
    EXPECT_TRUE(::fcntl(b, F_GETFD) & FD_CLOEXEC) << "kept ones never leak into other children";
  }
  EXPECT_FALSE(IsOpen(b)) << "the keeper releases what it kept when it goes";
}

// The rule: only with a state dir, without a service manager, and unless keeper = "no".
TEST(Keeper, StartsOnlyWithAStateDirAndNoServiceManager) {
  const char* saved = std::getenv("NOTIFY_SOCKET");
  std::string saved_value = saved != nullptr ? saved : "";
  ::unsetenv("NOTIFY_SOCKET");
  Config config;
  EXPECT_FALSE(ShouldStartKeeper(config)) << "no state dir: nothing to keep";
  config.state_dir = "state";
  EXPECT_TRUE(ShouldStartKeeper(config));
  config.keeper = "no";
  EXPECT_FALSE(ShouldStartKeeper(config));
  config.keeper = "auto";
  ::setenv("NOTIFY_SOCKET", "@some-manager", 1);
  EXPECT_FALSE(ShouldStartKeeper(config)) << "systemd (or a keeper) is the manager already";
  if (saved != nullptr) {
    ::setenv("NOTIFY_SOCKET", saved_value.c_str(), 1);
  } else {
    ::unsetenv("NOTIFY_SOCKET");
  }
}

}  // namespace
}  // namespace shmlease::server
