// Huge-page segments and pre-faulted leases (issue 7), against the real shmleased.
// Tests that need free huge pages reserve a few themselves through HugePageReservation (as root,
// restoring vm.nr_hugepages afterwards) and skip, saying why, where they cannot. CTest runs this
// binary's tests one at a time (RESOURCE_LOCK hugepages): they read and change a global pool.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon_process.hpp"
#include "daemon_test.hpp"
#include "huge_page_reservation.hpp"
#include "shmlease/client.hpp"

namespace shmlease {
namespace {

using testing::DaemonProcess;
using testing::HugePageReservation;
using testing::MappingResidency;
using testing::ReadHugePagePool;
using testing::ReadMappingResidency;

constexpr uint64_t kMiB = uint64_t{1} << 20;

uint64_t SystemPageSize() { return static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)); }

Error CaughtError(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  return Error(Errc::kOk, "no error");
}

CreateOptions Sized(uint64_t size, HugePages huge) {
  CreateOptions options;
  options.size = size;
  options.huge = huge;
  return options;
}

#define REQUIRE_HUGE_PAGES(reservation)                                             \
  if (!(reservation).ok()) {                                                        \
    GTEST_SKIP() << "cannot reserve huge pages: " << (reservation).reason();        \
  }

class HugePagesTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (daemon_ != nullptr) testing::ExpectCleanStop(*daemon_);
  }
  DaemonProcess& Start(std::vector<std::string> args = {}) {
    daemon_ = std::make_unique<DaemonProcess>(std::move(args));
    return *daemon_;
  }

  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(HugePagesTest, StartupLineDescribesTheHostsHugePages) {
  DaemonProcess& d = Start({"--huge-threshold", "64MiB"});
  std::string log = d.log();
  EXPECT_NE(log.find("huge pages: "), std::string::npos) << log;
  EXPECT_NE(log.find("reserved"), std::string::npos) << log;
  EXPECT_NE(log.find("huge-page mounts:"), std::string::npos) << log;
  EXPECT_NE(log.find("64.0 MiB or more get huge pages by default"), std::string::npos) << log;
}

TEST_F(HugePagesTest, HugeSegmentIsRoundedUpReservedAndReportsItsPageSize) {
  HugePageReservation reservation(4);
  REQUIRE_HUGE_PAGES(reservation);
  const uint64_t page = ReadHugePagePool().page_size;
  DaemonProcess& d = Start();
  Client c(d.socket_path());
  const uint64_t before = ReadHugePagePool().available;
  const uint64_t size = page + page / 2;  // 1.5 pages: not a multiple of the huge page size
  SegmentInfo info = c.Create("huge", Sized(size, HugePages::kYes));
  EXPECT_EQ(info.size, size);
  EXPECT_EQ(info.page_size, page);
  EXPECT_EQ(info.huge_fallback, 0);
  EXPECT_EQ(ReservedBytes(info), 2 * page);
  // Reserved at creation: both pages left the pool before anyone touched them.
  EXPECT_EQ(ReadHugePagePool().available, before - 2);
  EXPECT_EQ(c.Stat("huge").page_size, page);

  {
    Lease w = c.Acquire("huge", Mode::kWrite);
    ASSERT_EQ(w.size(), size);
    auto bytes = w.as_writable<uint8_t>();
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7);
    MappingResidency r = ReadMappingResidency(bytes.data());
    ASSERT_TRUE(r.found);
    EXPECT_EQ(r.kernel_page_size, page) << "the mapping is not backed by huge pages";
  }
  c.Remove("huge");
  EXPECT_EQ(ReadHugePagePool().available, before) << "huge pages not returned on free";
}

TEST_F(HugePagesTest, SecondProcessAttachesAndReadsTheSameHugePages) {
  HugePageReservation reservation(2);
  REQUIRE_HUGE_PAGES(reservation);
  const uint64_t page = ReadHugePagePool().page_size;
  DaemonProcess& d = Start();
  Client c(d.socket_path());
  c.Create("shared", Sized(2 * page, HugePages::kYes));
  {
    Lease w = c.Acquire("shared", Mode::kWrite);
    auto words = w.as_writable<uint8_t>();
    for (size_t i = 0; i < words.size(); ++i) words[i] = static_cast<uint8_t>(i ^ (i >> 8));
  }
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A fresh connection in the child; exit codes say what failed.
    try {
      Client other(d.socket_path());
      Lease r = other.Acquire("shared", Mode::kRead);
      if (r.info().page_size != page) ::_exit(2);
      auto bytes = r.as<uint8_t>();
      for (size_t i = 0; i < bytes.size(); ++i) {
        if (bytes[i] != static_cast<uint8_t>(i ^ (i >> 8))) ::_exit(3);
      }
      if (ReadMappingResidency(bytes.data()).kernel_page_size != page) ::_exit(4);
      ::_exit(0);
    } catch (...) {
      ::_exit(5);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "child: 2 wrong page size, 3 wrong bytes, 4 not huge-mapped, 5 exception";
  c.Remove("shared");
}

// A size the pool cannot hold right now: one page more than is free. nullopt (skip) when that
// would be large (a host with many free huge pages).
std::optional<uint64_t> MoreThanAvailable() {
  auto pool = ReadHugePagePool();
  if (pool.page_size == 0 || pool.available > 16) return std::nullopt;
  return (pool.available + 1) * pool.page_size;
}

TEST_F(HugePagesTest, RequiredHugePagesFailWithHowToEnableThem) {
  DaemonProcess& d = Start();
  auto size = MoreThanAvailable();
  if (!size) GTEST_SKIP() << "the host has more than 16 free huge pages: cannot exhaust them";
  Client c(d.socket_path());
  Error e = CaughtError([&] { c.Create("nohuge", Sized(*size, HugePages::kYes)); });
  EXPECT_EQ(e.errc(), Errc::kNoSpace) << e.what();
  EXPECT_NE(std::string(e.what()).find("sysctl vm.nr_hugepages="), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("hugetlbfs"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("best effort"), std::string::npos) << e.what();
  // The name was not taken and nothing was left anywhere.
  EXPECT_EQ(CaughtError([&] { c.Stat("nohuge"); }).errc(), Errc::kNotFound);
  EXPECT_TRUE(d.ShmObjects().empty());
  c.Create("nohuge", 4096);  // the daemon serves on
  c.Remove("nohuge");
}

TEST_F(HugePagesTest, BestEffortFallsBackToNormalPagesAndSaysSo) {
  DaemonProcess& d = Start({"--max-total-bytes", "64MiB"});
  auto size = MoreThanAvailable();
  if (!size) GTEST_SKIP() << "the host has more than 16 free huge pages: cannot exhaust them";
  Client c(d.socket_path());
  SegmentInfo info = c.Create("fallback", Sized(*size, HugePages::kBestEffort));
  EXPECT_EQ(info.huge_fallback, 1);
  EXPECT_EQ(info.page_size, SystemPageSize());
  EXPECT_EQ(c.Stat("fallback").huge_fallback, 1);
  EXPECT_NE(d.log().find("best effort: using normal pages"), std::string::npos) << d.log();
  // Counted as normal pages once it fell back: the rest of the 64 MiB is still there.
  c.Create("rest", 64 * kMiB - *size);
  Lease w = c.Acquire("fallback", Mode::kWrite);
  w.as_writable<uint8_t>()[*size - 1] = 42;
  w.Release();
  c.Remove("fallback");
  c.Remove("rest");
}

TEST_F(HugePagesTest, ThresholdMakesHugePagesTheDefaultAndNoHugeOptsOut) {
  HugePageReservation reservation(2);
  REQUIRE_HUGE_PAGES(reservation);
  const uint64_t page = ReadHugePagePool().page_size;
  DaemonProcess& d = Start({"--huge-threshold", std::to_string(page)});
  Client c(d.socket_path());
  EXPECT_EQ(c.Create("big", Sized(page, HugePages::kDefault)).page_size, page);
  EXPECT_EQ(c.Create("small", Sized(page - 4096, HugePages::kDefault)).page_size,
            SystemPageSize());
  EXPECT_EQ(c.Create("optout", Sized(2 * page, HugePages::kNo)).page_size, SystemPageSize());
  for (const char* name : {"big", "small", "optout"}) c.Remove(name);
}

TEST_F(HugePagesTest, SegmentSizeLimitCountsWholeHugePages) {
  HugePageReservation reservation(2);
  REQUIRE_HUGE_PAGES(reservation);
  const uint64_t page = ReadHugePagePool().page_size;
  DaemonProcess& d = Start({"--max-segment-size", std::to_string(page + page / 2)});
  Client c(d.socket_path());
  // 1.5 pages fit the limit in normal pages; in huge pages they hold 2.
  Error e = CaughtError([&] { c.Create("a", Sized(page + page / 2, HugePages::kYes)); });
  EXPECT_EQ(e.errc(), Errc::kLimitSegmentSize) << e.what();
  EXPECT_NE(std::string(e.what()).find("in whole huge pages"), std::string::npos) << e.what();
  c.Create("a", Sized(page + page / 2, HugePages::kNo));
  c.Remove("a");
}

TEST_F(HugePagesTest, TotalBytesLimitCountsWholeHugePages) {
  HugePageReservation reservation(4);
  REQUIRE_HUGE_PAGES(reservation);
  const uint64_t page = ReadHugePagePool().page_size;
  DaemonProcess& d = Start({"--max-total-bytes", std::to_string(3 * page)});
  Client c(d.socket_path());
  c.Create("a", Sized(page + page / 2, HugePages::kNo));  // 1.5 of 3 pages used
  // 1 page + 1 byte fits in normal pages (2.5 pages + 1 byte), not in huge pages (2 more pages).
  Error e = CaughtError([&] { c.Create("b", Sized(page + 1, HugePages::kYes)); });
  EXPECT_EQ(e.errc(), Errc::kLimitBytes) << e.what();
  c.Create("b", Sized(page + 1, HugePages::kNo));
  c.Remove("a");
  c.Remove("b");
  c.Create("h1", Sized(page / 2, HugePages::kYes));  // counts 1 page
  c.Create("h2", Sized(page + 1, HugePages::kYes));  // counts 2 pages: 3 of 3
  EXPECT_EQ(CaughtError([&] { c.Create("n", 1); }).errc(), Errc::kLimitBytes);
  c.Remove("h1");
  c.Create("n", page);  // h1's whole page came back
  c.Remove("h2");
  c.Remove("n");
}

// Populate: with it, every page of the mapping is in this process's page tables right after the
// lease (smaps Rss); without it, none is. The segment's pages exist already (written by another
// connection), so what is measured is this process's mapping, not the page cache.
TEST_F(HugePagesTest, PopulateFaultsInReadAndWriteLeases) {
  DaemonProcess& d = Start();
  const uint64_t size = 8 * kMiB;
  {
    Client writer(d.socket_path());
    writer.Create("frame", size);
    Lease w = writer.Acquire("frame", Mode::kWrite);
    auto bytes = w.as_writable<uint8_t>();
    for (size_t i = 0; i < bytes.size(); i += 4096) bytes[i] = static_cast<uint8_t>(i >> 12);
  }
  {
    Client cold(d.socket_path());
    Lease r = cold.Acquire("frame", Mode::kRead);
    MappingResidency m = ReadMappingResidency(r.data().data());
    ASSERT_TRUE(m.found);
    EXPECT_EQ(m.rss, 0u) << "a fresh mapping without populate should have no page mapped";
  }
  {
    Client reader(d.socket_path());
    LeaseOptions options;
    options.populate = true;
    Lease r = reader.Acquire("frame", Mode::kRead, options);
    MappingResidency m = ReadMappingResidency(r.data().data());
    ASSERT_TRUE(m.found);
    EXPECT_EQ(m.rss, size);
    Lease w = reader.Acquire("frame", Mode::kWrite, options);
    m = ReadMappingResidency(w.data().data());
    ASSERT_TRUE(m.found);
    EXPECT_EQ(m.rss, size);
    // Populating a write lease changes no byte.
    auto bytes = w.as<uint8_t>();
    for (size_t i = 0; i < bytes.size(); i += 4096) {
      ASSERT_EQ(bytes[i], static_cast<uint8_t>(i >> 12)) << "at " << i;
    }
    // A cached mapping: a second populated lease on it is granted and stays resident.
    w.Release();
    Lease again = reader.Acquire("frame", Mode::kWrite, options);
    EXPECT_EQ(ReadMappingResidency(again.data().data()).rss, size);
  }
  Client(d.socket_path()).Remove("frame");
}

TEST_F(HugePagesTest, PopulateMapsEveryHugePage) {
  HugePageReservation reservation(2);
  REQUIRE_HUGE_PAGES(reservation);
  const uint64_t page = ReadHugePagePool().page_size;
  DaemonProcess& d = Start();
  Client c(d.socket_path());
  c.Create("hp", Sized(page + 1, HugePages::kYes));
  Client reader(d.socket_path());
  LeaseOptions options;
  options.populate = true;
  Lease r = reader.Acquire("hp", Mode::kRead, options);
  MappingResidency m = ReadMappingResidency(r.data().data());
  ASSERT_TRUE(m.found);
  EXPECT_EQ(m.hugetlb, 2 * page);
  r.Release();
  c.Remove("hp");
}

TEST_F(HugePagesTest, HugeDirOnATmpfsWithHugePagesServesWhenNoHugetlbPageIsFree) {
  auto size = MoreThanAvailable();
  if (!size) GTEST_SKIP() << "the host has more than 16 free huge pages: cannot exhaust them";
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("shmlease-hugedir-" + std::to_string(::getpid())))
                        .string();
  std::filesystem::create_directories(dir);
  if (::mount("none", dir.c_str(), "tmpfs", 0, "huge=always,size=64m") != 0) {
    int err = errno;
    std::filesystem::remove(dir);
    GTEST_SKIP() << "cannot mount a tmpfs with huge=always on " << dir << ": "
                 << std::strerror(err) << " (needs root and a kernel with shmem THP)";
  }
  {
    DaemonProcess& d = Start({"--huge-dir", dir});
    Client c(d.socket_path());
    SegmentInfo info = c.Create("thp", Sized(*size, HugePages::kYes));
    EXPECT_EQ(info.huge_fallback, 0);
    EXPECT_GT(info.page_size, SystemPageSize());
    Lease w = c.Acquire("thp", Mode::kWrite);
    w.as_writable<uint8_t>()[*size - 1] = 1;
    EXPECT_NE(d.log().find("tmpfs huge=always file in " + dir), std::string::npos) << d.log();
    // Nameless like a memfd: the directory is empty while the segment lives.
    EXPECT_TRUE(std::filesystem::is_empty(dir));
    w.Release();
    c.Remove("thp");
    TearDown();
    daemon_.reset();
  }
  EXPECT_EQ(::umount2(dir.c_str(), MNT_DETACH), 0) << std::strerror(errno);
  std::filesystem::remove(dir);
}

TEST_F(HugePagesTest, DaemonRefusesAHugeDirWithoutHugePages) {
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("shmlease-nothuge-" + std::to_string(::getpid())))
                        .string();
  std::filesystem::create_directories(dir);
  std::string cmd = DaemonProcess::DaemonBinary() + " --socket " + dir + "/s --huge-dir " + dir +
                    " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  std::array<char, 512> buf;
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  int status = ::pclose(p);
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << out;
  EXPECT_NE(out.find("huge-dir"), std::string::npos) << out;
}

// The CLI: create --huge, stat shows the page size and what is reserved, best effort says so.
std::string RunCli(const DaemonProcess& d, const std::string& args, int& status) {
  std::string cmd = DaemonProcess::CliBinary() + " --socket " + d.socket_path() + " " + args +
                    " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  if (p == nullptr) return out;
  std::array<char, 512> buf;
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  status = ::pclose(p);
  status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

TEST_F(HugePagesTest, CliCreatesHugeSegmentsAndShowsTheirPages) {
  if (DaemonProcess::CliBinary().empty()) GTEST_SKIP() << "the CLI was not built";
  HugePageReservation reservation(2);
  REQUIRE_HUGE_PAGES(reservation);
  if (ReadHugePagePool().page_size != 2 * kMiB) GTEST_SKIP() << "expects 2 MiB huge pages";
  DaemonProcess& d = Start();
  int status = -1;
  std::string out = RunCli(d, "create big 3MiB --huge", status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("huge pages (4.0 MiB reserved)"), std::string::npos) << out;
  out = RunCli(d, "stat big", status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("page size: 2.0 MiB (huge pages)"), std::string::npos) << out;
  EXPECT_NE(out.find("reserved:  4.0 MiB"), std::string::npos) << out;
  out = RunCli(d, "--json stat big", status);
  EXPECT_NE(out.find("\"page_size\": 2097152"), std::string::npos) << out;
  EXPECT_NE(out.find("\"reserved_bytes\": 4194304"), std::string::npos) << out;
  out = RunCli(d, "create bad 1 --huge=sometimes", status);
  EXPECT_NE(status, 0) << out;
  EXPECT_NE(out.find("yes, best-effort or no"), std::string::npos) << out;
  RunCli(d, "rm big", status);
  EXPECT_EQ(status, 0);

  if (auto size = MoreThanAvailable()) {
    out = RunCli(d, "create fb " + std::to_string(*size) + " --huge=best-effort", status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("no huge pages available"), std::string::npos) << out;
    out = RunCli(d, "stat fb", status);
    EXPECT_NE(out.find("fallback:"), std::string::npos) << out;
    RunCli(d, "rm fb", status);
  }
}

}  // namespace
}  // namespace shmlease
