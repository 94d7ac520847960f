// Sealed segments (issue 14, points 1-3): no client can change a segment's size, a read lease's
// descriptor cannot be reopened writable by another uid, huge-page memfds are as private as the
// others, nothing of the daemon is in /dev/shm, and --backing named cannot be squatted. The last
// test plays systemd: a notify socket of its own that receives the descriptors the daemon stores
// and passes them back to the next start.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_test.hpp"
#include "errc_of.hpp"
#include "huge_page_reservation.hpp"
#include "wait_for.hpp"

namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;
using testing::WaitFor;

constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

// The descriptor behind this process's mapping of `data` (through /proc/self/map_files, which
// needs CAP_SYS_ADMIN: these tests run as root), opened with `flags`; -1 if none.
int OpenMapping(const void* data, int flags) {
  std::ifstream maps("/proc/self/maps");
  const auto address = reinterpret_cast<uintptr_t>(data);
  for (std::string line; std::getline(maps, line);) {
    std::string range = line.substr(0, line.find(' '));
    uintptr_t start = std::stoull(range.substr(0, range.find('-')), nullptr, 16);
    uintptr_t end = std::stoull(range.substr(range.find('-') + 1), nullptr, 16);
    if (address < start || address >= end) continue;
    return ::open(("/proc/self/map_files/" + range).c_str(), flags | O_CLOEXEC);
  }
  return -1;
}

// Runs `body` in a child process as uid/gid 65534 (nobody) and returns its exit code. The child
// stays dumpable so that /proc/self/fd is its own to open: what is checked is the memory's inode.
int AsNobody(const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(90);
    ::prctl(PR_SET_DUMPABLE, 1);
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

class SealedSegmentTest : public testing::DaemonTest {};

// (1) A write lease holder's ftruncate, on its mapping's file and on a reopen of it, fails: the
// segment keeps its size, and another process's mapping of it never SIGBUSes.
TEST_F(SealedSegmentTest, AWriteLeaseCannotShrinkNorGrowItsSegment) {
  Client c = Connect();
  c.Create("s", 1 << 20);
  Lease w = c.Acquire("s", Mode::kWrite);
  std::memset(w.writable_data().data(), 0x5A, w.writable_data().size());
  int fd = OpenMapping(w.writable_data().data(), O_RDWR);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  EXPECT_EQ(::fcntl(fd, F_GET_SEALS) & kSeals, kSeals);
  EXPECT_EQ(::ftruncate(fd, 0), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(fd, 4096), -1);
  EXPECT_EQ(::ftruncate(fd, 1ll << 34), -1) << "grown past every limit";
  EXPECT_EQ(errno, EPERM);
  EXPECT_NE(::fallocate(fd, 0, 0, 1ll << 34), 0) << "grown by fallocate";
  EXPECT_NE(::fcntl(fd, F_ADD_SEALS, 0), 0) << "the seals themselves are sealed";
  EXPECT_EQ(::lseek(fd, 0, SEEK_END), 1 << 20);
  // A reopen through /proc/self/fd is the same inode: the same seals.
  int again = ::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(again, 0);
  EXPECT_EQ(::ftruncate(again, 0), -1);
  ::close(again);
  ::close(fd);
  // Another process maps and reads every byte: no SIGBUS, nothing changed.
  pid_t reader = ::fork();
  if (reader == 0) {
    try {
      Client other(daemon_.socket_path());
      Lease r = other.Acquire("s", Mode::kRead);
      for (std::byte b : r.data()) {
        if (b != std::byte{0x5A}) ::_exit(2);
      }
      ::_exit(r.data().size() == (1u << 20) ? 0 : 3);
    } catch (...) {
      ::_exit(4);
    }
  }
  int status = 0;
  ::waitpid(reader, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
  EXPECT_EQ(c.Stat("s").size, 1u << 20);
}

// (3) A read lease's descriptor cannot be reopened writable through /proc/self/fd by a process of
// another uid: the inode is the daemon's, mode 0600. (Reasoning: the daemon runs as root here;
// root, the daemon's own uid, passes every permission check and may reopen it read-write, as it
// may ptrace the daemon; even so it cannot resize the segment, the seals hold for everyone.)
TEST_F(SealedSegmentTest, AReadLeaseCannotBeReopenedWritable) {
  if (::geteuid() != 0) GTEST_SKIP() << "switching to uid 65534 needs root";
  Client c = Connect();
  c.Create("r", {.size = 4096, .mode = 0644});
  Lease r = c.Acquire("r", Mode::kRead);
  int fd = OpenMapping(r.data().data(), O_RDONLY);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, 0u);
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  ::fcntl(fd, F_SETFD, 0);  // the child keeps it, as a client of uid 65534 holds what it was sent
  int code = AsNobody([&] {
    if (::open(self.c_str(), O_RDWR) >= 0) return 1;
    return errno == EACCES ? 0 : 2;  // (its mapping and descriptor still read: they are open)
  });
  EXPECT_EQ(code, 0) << "1: reopened writable; 2: another error than EACCES";
  // The control: a memfd left at its default mode would have been reopened writable.
  int loose = ::memfd_create("shmlease-test-loose", MFD_ALLOW_SEALING);
  ASSERT_GE(loose, 0);
  ::fchmod(loose, 0666);
  const std::string loose_self = "/proc/self/fd/" + std::to_string(loose);
  EXPECT_EQ(AsNobody([&] { return ::open(loose_self.c_str(), O_RDWR) >= 0 ? 0 : 1; }), 0)
      << "the test cannot tell: uid 65534 could not reopen even a 0666 memfd";
  ::close(loose);
  // Root (the daemon's uid) may reopen it writable, and still cannot resize it.
  int rw = ::open(self.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(rw, 0);
  EXPECT_EQ(::ftruncate(rw, 0), -1);
  EXPECT_EQ(::ftruncate(rw, 1 << 30), -1);
  ::close(rw);
  ::close(fd);
}

// (3) The huge-page memfd is mode 0600 (a hugetlb memfd's inode is 0777 by default) and sealed.
TEST_F(SealedSegmentTest, AHugePageMemfdIsPrivateAndSealed) {
  testing::HugePageReservation reservation(2);
  if (::geteuid() == 0) {
    ASSERT_TRUE(reservation.ok()) << reservation.reason();
  }
  if (!reservation.ok()) GTEST_SKIP() << "no huge pages: " << reservation.reason();
  Client c = Connect();
  SegmentInfo info = c.Create("h", {.size = 4096, .huge = HugePages::kYes});
  ASSERT_GT(info.page_size, 4096u);
  Lease w = c.Acquire("h", Mode::kWrite);
  int fd = OpenMapping(w.writable_data().data(), O_RDWR);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(::fcntl(fd, F_GET_SEALS) & kSeals, kSeals);
  EXPECT_EQ(::ftruncate(fd, 0), -1);
  ::close(fd);
  w.Release();
  c.Remove("h");
}

// Nothing of the daemon is in /dev/shm with the default backing: its segments are memfds that
// only it (and the clients it passed them to) hold.
TEST_F(SealedSegmentTest, NothingOfTheDaemonIsInDevShm) {
  Client c = Connect();
  c.Create("a", 4096);
  c.Create("b", {.format = "f", .shape = {16, 16}});
  Lease l = c.Acquire("a", Mode::kWrite);
  EXPECT_EQ(daemon_.ShmObjects().size(), 2u) << "the daemon holds two memfds";
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    EXPECT_EQ(entry.path().filename().string().find(daemon_.shm_prefix()), std::string::npos)
        << entry.path();
  }
  l.Release();
  c.Remove("a");
  c.Remove("b");
  EXPECT_TRUE(WaitFor([&] { return daemon_.ShmObjects().empty(); }));
}

// (2) --backing named: the names carry a random suffix and are created exclusively, so names
// guessed and made beforehand by someone else do not make creates fail, and are never used.
class NamedBackingTest : public testing::DaemonTest {
 protected:
  NamedBackingTest() : DaemonTest({"--backing", "named"}) {}
};

TEST_F(NamedBackingTest, PrecreatedGuessesOfTheNextNamesDoNotMakeCreatesFail) {
  std::vector<std::string> squatted;
  for (int id = 1; id <= 4; ++id) {
    for (std::string name : {daemon_.shm_prefix() + "." + std::to_string(id),
                             daemon_.shm_prefix() + "." + std::to_string(id) + ".0000000000000000"}) {
      int fd = ::open(("/dev/shm/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR, 0666);
      ASSERT_GE(fd, 0) << name;
      ::close(fd);
      squatted.push_back(name);
    }
  }
  Client c = Connect();
  for (int i = 0; i < 4; ++i) {
    EXPECT_NO_THROW(c.Create("s" + std::to_string(i), 4096)) << i;
  }
  auto objects = daemon_.ShmObjects();
  EXPECT_EQ(objects.size(), squatted.size() + 4);
  for (const std::string& name : objects) {
    if (std::find(squatted.begin(), squatted.end(), name) != squatted.end()) continue;
    EXPECT_EQ(name.size(), daemon_.shm_prefix().size() + 3 + 16) << name;  // ".<id>.<16 hex>"
    struct stat st {};
    ASSERT_EQ(::stat(("/dev/shm/" + name).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << name;
  }
  for (const std::string& name : squatted) {
    struct stat st {};
    ASSERT_EQ(::stat(("/dev/shm/" + name).c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 0) << name << " was used";
    ::unlink(("/dev/shm/" + name).c_str());
  }
  testing::RemoveAllSegments(daemon_);
  EXPECT_TRUE(WaitFor([&] { return daemon_.ShmObjects().empty(); }));
}

// --- The daemon under a service manager of the test's own ---

// A notify socket that keeps what FDSTORE=1 sends, like systemd with FileDescriptorStoreMax=.
class TestServiceManager {
 public:
  TestServiceManager() {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    name_ = "shmlease-test-notify/" + std::to_string(::getpid()) + "/" +
            std::to_string(reinterpret_cast<uintptr_t>(this));
    std::memcpy(addr.sun_path + 1, name_.data(), name_.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name_.size());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len), 0) << std::strerror(errno);
  }
  ~TestServiceManager() {
    for (auto& [name, fd] : store_) ::close(fd);
    ::close(fd_);
  }
  std::string address() const { return "@" + name_; }

  // Reads every datagram that arrived; FDSTORE adds, FDSTOREREMOVE drops (by name).
  void Drain() {
    for (;;) {
      char buf[4096];
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
      iovec iov{buf, sizeof(buf) - 1};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n < 0) return;
      std::string text(buf, static_cast<size_t>(n));
      messages_.push_back(text);
      std::vector<int> fds;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_type != SCM_RIGHTS) continue;
        const int* data = reinterpret_cast<const int*>(CMSG_DATA(c));
        fds.insert(fds.end(), data, data + (c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      }
      std::string name;
      if (size_t at = text.find("FDNAME="); at != std::string::npos) {
        name = text.substr(at + 7, text.find('\n', at) - at - 7);
      }
      if (text.find("FDSTORE=1") != std::string::npos) {
        for (int fd : fds) store_.emplace(name, fd);
        fds.clear();
      }
      if (text.find("FDSTOREREMOVE=1") != std::string::npos) {
        auto range = store_.equal_range(name);
        for (auto it = range.first; it != range.second; ++it) ::close(it->second);
        store_.erase(name);
      }
      for (int fd : fds) ::close(fd);
    }
  }
  std::multimap<std::string, int>& store() { return store_; }
  const std::vector<std::string>& messages() const { return messages_; }

  // Starts shmleased with `args`, NOTIFY_SOCKET set and `passed` at fd 3.. (LISTEN_*), its output
  // appended to `log`; returns its pid.
  pid_t Start(std::vector<std::string> args, const std::vector<std::pair<std::string, int>>& passed,
              const std::string& log) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(out, 1);
      ::dup2(out, 2);
      std::vector<int> moved;
      for (const auto& p : passed) moved.push_back(::fcntl(p.second, F_DUPFD_CLOEXEC, 100));
      std::string names;
      for (size_t i = 0; i < passed.size(); ++i) {
        ::dup2(moved[i], 3 + static_cast<int>(i));
        names += (i ? ":" : "") + passed[i].first;
      }
      ::setenv("NOTIFY_SOCKET", address().c_str(), 1);
      if (!passed.empty()) {
        ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
        ::setenv("LISTEN_FDS", std::to_string(passed.size()).c_str(), 1);
        ::setenv("LISTEN_FDNAMES", names.c_str(), 1);
      }
      std::vector<char*> argv;
      std::string binary = DaemonProcess::DaemonBinary();
      argv.push_back(binary.data());
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    return pid;
  }

 private:
  int fd_ = -1;
  std::string name_;
  std::multimap<std::string, int> store_;
  std::vector<std::string> messages_;
};

bool CanConnect(const std::string& path) {
  try {
    Client(path).Ping();
    return true;
  } catch (const Error&) {
    return false;
  }
}

TEST(FdStoreTest, TheDaemonStoresSegmentsWithTheServiceManagerAndAdoptsWhatComesBack) {
  std::string tmpl = std::filesystem::temp_directory_path().string() + "/shmlease-fdstore-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const std::string dir = tmpl;
  const std::string socket = dir + "/s.sock", log = dir + "/log";
  const std::string prefix = "shmlease-test-fdstore-" + std::to_string(::getpid());
  std::vector<std::string> args = {"--socket", socket, "--shm-prefix", prefix, "--state-dir",
                                   dir + "/state", "--log-level", "debug"};
  auto log_text = [&] {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  TestServiceManager manager;
  pid_t pid = manager.Start(args, {}, log);
  ASSERT_TRUE(WaitFor([&] { return CanConnect(socket); }, 20s)) << log_text();
  {
    Client c(socket);
    c.Create("kept", 8192);
    c.Create("spoilt", 8192);
    c.Create("freed", 4096);
    Lease w = c.Acquire("kept", Mode::kWrite);
    w.writable_data()[100] = std::byte{77};
    c.Remove("freed");
  }
  manager.Drain();
  auto& store = manager.store();
  EXPECT_EQ(store.count("seg-1"), 1u);
  EXPECT_EQ(store.count("seg-2"), 1u);
  EXPECT_EQ(store.count("seg-3"), 0u) << "FDSTOREREMOVE when freed";
  EXPECT_EQ(store.count("shmleased-listen"), 1u) << "the socket it bound, for its backlog";
  for (const char* name : {"seg-1", "seg-2"}) {
    int fd = store.find(name)->second;
    struct stat st {};
    ASSERT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u) << name;
    EXPECT_EQ(st.st_size, 8192) << name;
    EXPECT_EQ(::fcntl(fd, F_GET_SEALS) & kSeals, kSeals) << name;
    EXPECT_EQ(::fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR) << name;
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);

  // Passed back: seg-1 as stored; under seg-2 a memfd of the wrong size (refused); a seg-99 the
  // state does not list (dropped); and the socket.
  int wrong = ::memfd_create("wrong", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(::fchmod(wrong, 0600), 0);
  ASSERT_EQ(::ftruncate(wrong, 4096), 0);
  int stray = ::memfd_create("stray", MFD_CLOEXEC);
  std::vector<std::pair<std::string, int>> passed = {
      {"shmleased-listen", store.find("shmleased-listen")->second},
      {"seg-1", store.find("seg-1")->second},
      {"seg-2", wrong},
      {"seg-99", stray}};
  const size_t messages_before = manager.messages().size();
  pid = manager.Start(args, passed, log);
  ::close(wrong);
  ::close(stray);
  ASSERT_TRUE(WaitFor([&] { return log_text().find("start 2") != std::string::npos; }, 20s))
      << log_text();
  {
    Client c(socket);
    auto list = c.List();
    ASSERT_EQ(list.size(), 1u) << log_text();
    EXPECT_EQ(list[0].name, "kept");
    Lease r = c.Acquire("kept", Mode::kRead);
    EXPECT_EQ(r.data()[100], std::byte{77}) << "the same memory";
  }
  const std::string text = log_text();
  EXPECT_NE(text.find("segment 'spoilt' (id 2) of the state file is dropped: the stored descriptor "
                      "holds 4096 bytes, the state says 8192"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("dropping stored descriptor seg-99"), std::string::npos) << text;
  manager.Drain();
  std::string later;
  for (size_t i = messages_before; i < manager.messages().size(); ++i) {
    later += manager.messages()[i] + "|";
  }
  EXPECT_NE(later.find("FDSTOREREMOVE=1\nFDNAME=seg-2"), std::string::npos) << later;
  EXPECT_NE(later.find("FDSTOREREMOVE=1\nFDNAME=seg-99"), std::string::npos) << later;
  EXPECT_EQ(later.find("FDNAME=seg-1"), std::string::npos) << "seg-1 is stored already";
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log_text();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace shmlease
