// The daemon as a service: access control by kernel-given identity, per-uid quotas, stats and
// metrics, the config file and SIGHUP reload, sd_notify and socket activation.
#include "shmlease/client.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>

#include "daemon_process.hpp"
#include "daemon_test.hpp"
#include "errc_of.hpp"

namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::CodeOf;
using testing::DaemonProcess;

struct Result {
  int status = -1;
  std::string output;
};

// Runs a shell command line, capturing stdout and stderr together.
Result RunShell(const std::string& command) {
  Result r;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
  int status = ::pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}


// The CLI as user nobody (uid 65534), optionally with extra supplementary groups.
class AccessTest : public testing::DaemonTest {
 protected:
  AccessTest() : DaemonTest({"--socket-mode", "0666"}) {}
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "switching to a second uid needs root";
    // nobody must reach the socket: its directory is private to the test by default.
    ASSERT_EQ(::chmod(daemon_.dir().c_str(), 0755), 0);
    // nobody runs its own copy of the CLI, in a directory only it may enter: the build tree can be
    // out of its reach (a clone under a mode-0700 home directory).
    std::string tmpl = std::filesystem::temp_directory_path().string() + "/shmlease-nobody-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);  // mode 0700
    stage_ = tmpl;
    cli_ = stage_ + "/shmlease";
    std::filesystem::copy_file(DaemonProcess::CliBinary(), cli_);
    ASSERT_EQ(::chmod(cli_.c_str(), 0755), 0);
    ASSERT_EQ(::chown(cli_.c_str(), 65534, 65534), 0);
    ASSERT_EQ(::chown(stage_.c_str(), 65534, 65534), 0);
    Result r = RunShell("setpriv --reuid=65534 --regid=65534 --clear-groups test -x " + cli_ +
                        " -a -w " + daemon_.socket_path());
    ASSERT_EQ(r.status, 0) << "nobody cannot run " << cli_ << " or cannot write "
                           << daemon_.socket_path() << ": " << r.output;
  }
  void TearDown() override {
    if (::geteuid() != 0) return;
    DaemonTest::TearDown();
    std::error_code ec;
    if (!stage_.empty()) std::filesystem::remove_all(stage_, ec);
  }
  Result AsNobody(const std::string& args, const std::string& groups = "") {
    std::string who = groups.empty() ? "--clear-groups" : "--groups " + groups;
    return RunShell("setpriv --reuid=65534 --regid=65534 " + who + " " + cli_ + " --socket " +
                    daemon_.socket_path() + " " + args);
  }

  std::string stage_;  // nobody's copy of the CLI lives here
  std::string cli_;
};

TEST_F(AccessTest, PrivateSegmentsRefuseOthersAndSharedOnesAdmitThem) {
  Client root(daemon_.socket_path());
  root.Create("private", 4096);  // default mode 0600
  root.Create("world-read", {.size = 4096, .mode = 0644});
  root.Create("group-rw", {.size = 4096, .mode = 0660});  // owner gid 0
  Lease w = root.Acquire("world-read", Mode::kWrite);
  std::memcpy(w.writable_data().data(), "shared", 6);
  w.Release();

  // Refused on a private segment, for every kind of access.
  Result r = AsNobody("stat private");
  EXPECT_EQ(r.status, 5) << r.output;
  EXPECT_NE(r.output.find("uid 65534 may not read"), std::string::npos) << r.output;
  EXPECT_EQ(AsNobody("cat private").status, 5);
  EXPECT_EQ(AsNobody("rm private").status, 5);
  EXPECT_EQ(AsNobody("chmod private 0666").status, 5);

  // Admitted read-only on a world-readable one.
  r = AsNobody("cat world-read");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.substr(0, 6), "shared");
  r = RunShell("echo x | setpriv --reuid=65534 --regid=65534 --clear-groups " +
          DaemonProcess::CliBinary() + " --socket " + daemon_.socket_path() + " put world-read");
  EXPECT_EQ(r.status, 5) << r.output;
  EXPECT_NE(r.output.find("may not write"), std::string::npos) << r.output;

  // Group bits through a supplementary group (the kernel's SO_PEERGROUPS, not the client's word).
  EXPECT_EQ(AsNobody("cat group-rw").status, 5);
  EXPECT_EQ(AsNobody("cat group-rw", "0").status, 0);
  r = RunShell("echo group | setpriv --reuid=65534 --regid=65534 --groups 0 " +
          DaemonProcess::CliBinary() + " --socket " + daemon_.socket_path() + " put group-rw");
  EXPECT_EQ(r.status, 0) << r.output;
  Lease check = root.Acquire("group-rw", Mode::kRead);
  EXPECT_EQ(std::memcmp(check.data().data(), "group", 5), 0);
  check.Release();

  // ls shows only what the caller may read.
  r = AsNobody("ls --json");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("world-read"), std::string::npos);
  EXPECT_EQ(r.output.find("\"private\""), std::string::npos) << r.output;

  // The owner opens it up; then nobody may read it but still not write.
  EXPECT_EQ(root.Chmod("private", 0604).mode, 0604u);
  EXPECT_EQ(AsNobody("cat private").status, 0);
  EXPECT_EQ(AsNobody("rm private").status, 5);
  EXPECT_EQ(CodeOf([&] { root.Chmod("private", 01000); }), Errc::kInvalidArgument);

  root.Remove("private");
  root.Remove("world-read");
  root.Remove("group-rw");
}

TEST_F(AccessTest, SegmentsCreatedByOthersBelongToThemAndTheShmObjectsStayPrivate) {
  Result r = AsNobody("create mine 4096");
  ASSERT_EQ(r.status, 0) << r.output;
  Client root(daemon_.socket_path());
  SegmentInfo info = root.Stat("mine");  // root is an administrator by default
  EXPECT_EQ(info.owner_uid, 65534u);
  EXPECT_EQ(info.owner_gid, 65534u);
  EXPECT_EQ(info.mode, 0600u);
  // The memory is a sealed memfd of the daemon's, mode 0600, with no name in /dev/shm: no way in
  // by name, and no writable reopen through /proc by anyone but the daemon's user.
  auto objects = daemon_.ShmObjects();
  ASSERT_EQ(objects.size(), 1u);
  struct stat st {};
  EXPECT_NE(::lstat(("/dev/shm/" + objects[0]).c_str(), &st), 0) << "a name in /dev/shm";
  const std::string fds = "/proc/" + std::to_string(daemon_.pid()) + "/fd";
  size_t seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(fds)) {
    std::error_code ec;
    std::string target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (ec || target.find("/memfd:" + objects[0] + " ") == std::string::npos) continue;
    ASSERT_EQ(::stat(entry.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << target;
    EXPECT_EQ(st.st_uid, ::geteuid()) << target;
    ++seen;
  }
  EXPECT_GE(seen, 1u) << "no descriptor of the daemon names the segment's memfd";
  EXPECT_EQ(AsNobody("rm mine").status, 0);
}

TEST(Quotas, PerUidBytesAndSegments) {
  DaemonProcess daemon({"--quota-bytes", "64KiB", "--quota-segments", "2"});
  Client c(daemon.socket_path());
  c.Create("q1", 32 << 10);
  EXPECT_EQ(CodeOf([&] { c.Create("q2", 40 << 10); }), Errc::kQuotaBytes);
  c.Create("q2", 32 << 10);
  EXPECT_EQ(CodeOf([&] { c.Create("q3", 1); }), Errc::kQuotaSegments);
  c.Remove("q1");
  c.Create("q3", 4096);
  c.Remove("q2");
  c.Remove("q3");
  daemon.Stop();
  EXPECT_TRUE(daemon.ShmObjects().empty());
}

TEST(Observability, StatsShowEachClientAndWhatItHolds) {
  DaemonProcess daemon;
  Client a(daemon.socket_path());
  Client b(daemon.socket_path());
  a.Create("seen", 4096);
  Lease r = b.Acquire("seen", Mode::kRead);
  Lease w = b.Acquire("seen", Mode::kWrite, {.exclusive = false});
  DaemonStats st = a.Stats();
  EXPECT_EQ(st.segments, 1u);
  EXPECT_EQ(st.bytes, 4096u);
  EXPECT_EQ(st.leases, 2u);
  EXPECT_EQ(st.connections, 2u);
  ASSERT_EQ(st.clients.size(), 2u);
  size_t with_leases = 0;
  for (const auto& client : st.clients) {
    EXPECT_EQ(client.pid, static_cast<uint32_t>(::getpid()));
    EXPECT_EQ(client.uid, ::geteuid());
    EXPECT_FALSE(client.process.empty());
    if (client.leases.size() == 2) {
      ++with_leases;
      EXPECT_EQ(client.leases[0].segment, "seen");
    }
  }
  EXPECT_EQ(with_leases, 1u);

  Result m = RunShell(DaemonProcess::CliBinary() + " --socket " + daemon.socket_path() + " metrics");
  EXPECT_EQ(m.status, 0) << m.output;
  EXPECT_NE(m.output.find("# TYPE shmlease_leases gauge\nshmlease_leases 2\n"), std::string::npos)
      << m.output;
  EXPECT_NE(m.output.find("shmlease_segment_leases{segment=\"seen\",mode=\"write\"} 1"),
            std::string::npos);
  Result s = RunShell(DaemonProcess::CliBinary() + " --socket " + daemon.socket_path() + " stats --json");
  EXPECT_EQ(s.status, 0);
  EXPECT_NE(s.output.find("\"connections\": 3"), std::string::npos) << s.output;  // + the CLI
  Result t = RunShell(DaemonProcess::CliBinary() + " --socket " + daemon.socket_path() +
                 " top --count 2 --interval 0.05");
  EXPECT_EQ(t.status, 0);
  EXPECT_NE(t.output.find("seen"), std::string::npos) << t.output;
  r.Release();
  w.Release();
  a.Remove("seen");
}

std::string WriteFile(const std::string& dir, const std::string& name, const std::string& text) {
  std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(ConfigFile, BadFilesAreRefusedWithFileLineAndReason) {
  std::string dir = std::filesystem::temp_directory_path().string() + "/shmlease-cfg-" +
                    std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::string daemon = DaemonProcess::DaemonBinary() + " --socket " + dir + "/s.sock --config ";
  struct Case {
    std::string text;
    std::string expect;
  } cases[] = {
      {"log-level = \"info\"\nmax-segments = \"ten\"\n", ":2: max-segments: 'ten' is not a whole number"},
      {"bogus = 1\n", ":1: unknown setting 'bogus'"},
      {"max-segments = \n", ":1: "},
      {"log-level = 7\n", ":1: "},
      {"max-total-bytes = \"12 parsecs\"\n", "is not a size"},
      {"admins = [0, -3]\n", "wrong type"},
  };
  int i = 0;
  for (const Case& c : cases) {
    std::string path = WriteFile(dir, "bad" + std::to_string(i++) + ".toml", c.text);
    Result r = RunShell(daemon + path);
    EXPECT_EQ(r.status, 2) << c.text << r.output;
    EXPECT_NE(r.output.find(path), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << r.output;
  }
  Result missing = RunShell(daemon + dir + "/missing.toml");
  EXPECT_EQ(missing.status, 2);
  std::filesystem::remove_all(dir);
}

// Every SIGHUP reloads, not only the first two (the signal wait used to re-arm only once).
TEST(ConfigFile, EverySighupReloads) {
  std::string dir = std::filesystem::temp_directory_path().string() + "/shmlease-cfg-n-" +
                    std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::string path = WriteFile(dir, "d.toml", "max-segments = 10\n");
  DaemonProcess daemon({"--config", path});
  Client c(daemon.socket_path());
  for (int limit = 1; limit <= 5; ++limit) {
    WriteFile(dir, "d.toml", "max-segments = " + std::to_string(limit) + "\n");
    ::kill(daemon.pid(), SIGHUP);
    const std::string want = "reload: max-segments = " + std::to_string(limit);
    std::string log;
    for (int i = 0; i < 400 && log.find(want) == std::string::npos; ++i) {
      std::this_thread::sleep_for(5ms);
      log = daemon.log();
    }
    EXPECT_NE(log.find(want), std::string::npos) << "reload " << limit << ":\n" << log;
    // The limit applies: `limit` segments fit, one more does not.
    for (int i = 0; i < limit; ++i) c.Create("s" + std::to_string(i), 4096);
    EXPECT_EQ(CodeOf([&] { c.Create("over", 4096); }), Errc::kLimitSegments) << limit;
    for (int i = 0; i < limit; ++i) c.Remove("s" + std::to_string(i));
  }
  daemon.Stop();
  std::filesystem::remove_all(dir);
}

TEST(ConfigFile, FlagsWinAndSighupReloadsWithoutDroppingClients) {
  std::string dir = std::filesystem::temp_directory_path().string() + "/shmlease-cfg-r-" +
                    std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::string path = WriteFile(dir, "d.toml",
                               "# a comment\nmax-segments = 5\nlog-level = \"debug\"\n"
                               "max-leases-per-connection = 1\nsocket-mode = 0o600\n");
  DaemonProcess daemon({"--config", path, "--max-leases-per-connection", "2"});
  Client c(daemon.socket_path());
  c.Create("a", 4096);
  Lease l1 = c.Acquire("a", Mode::kRead);
  Lease l2 = c.Acquire("a", Mode::kRead);  // the flag (2) wins over the file (1)
  EXPECT_EQ(CodeOf([&] { c.Acquire("a", Mode::kRead); }), Errc::kLimitLeases);
  EXPECT_EQ(std::filesystem::status(daemon.socket_path()).permissions() &
                std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);

  // Lower the segment limit in the file and reload: applies at once, the client stays connected.
  WriteFile(dir, "d.toml", "max-segments = 1\nlog-level = \"info\"\nmax-leases-per-connection = 1\n");
  ::kill(daemon.pid(), SIGHUP);
  std::string log;
  for (int i = 0; i < 400 && log.find("configuration reloaded") == std::string::npos; ++i) {
    std::this_thread::sleep_for(5ms);
    log = daemon.log();
  }
  EXPECT_NE(log.find("reload: max-segments = 1 (was 5)"), std::string::npos) << log;
  EXPECT_EQ(CodeOf([&] { c.Create("b", 4096); }), Errc::kLimitSegments);
  EXPECT_EQ(l1.data().size(), 4096u);
  c.Ping();  // same connection

  // A broken file on reload keeps the running settings.
  WriteFile(dir, "d.toml", "max-segments = \"many\"\n");
  ::kill(daemon.pid(), SIGHUP);
  for (int i = 0; i < 400 && log.find("reload failed") == std::string::npos; ++i) {
    std::this_thread::sleep_for(5ms);
    log = daemon.log();
  }
  EXPECT_NE(log.find("reload failed, keeping the running settings"), std::string::npos) << log;
  EXPECT_EQ(CodeOf([&] { c.Create("b", 4096); }), Errc::kLimitSegments);
  l1.Release();
  l2.Release();
  c.Remove("a");
  daemon.Stop();
  std::filesystem::remove_all(dir);
}

// A datagram socket standing in for systemd's NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~NotifySocket() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  // Datagrams until one contains `what` (or a 5 s silence).
  std::string WaitFor(const std::string& what) {
    std::string all;
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return all;
      all.append(buf, static_cast<size_t>(n));
      all += '\n';
      if (all.find(what) != std::string::npos) return all;
    }
  }

 private:
  std::string path_;
  int fd_;
};

TEST(Systemd, NotifiesReadyAndStoppingAndAcceptsAnInheritedSocket) {
  std::string dir = std::filesystem::temp_directory_path().string() + "/shmlease-sd-" +
                    std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  NotifySocket notify(dir + "/notify");
  std::string socket_path = dir + "/activated.sock";

  // Bind and listen here, as systemd's .socket unit does, then pass the socket as fd 3.
  int listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 16), 0);

  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(listener, 3);
    std::string listen_pid = std::to_string(::getpid());
    ::setenv("LISTEN_PID", listen_pid.c_str(), 1);
    ::setenv("LISTEN_FDS", "1", 1);
    ::setenv("NOTIFY_SOCKET", (dir + "/notify").c_str(), 1);
    std::string prefix = "shmlease-test-sd-" + listen_pid;
    ::execl(DaemonProcess::DaemonBinary().c_str(), "shmleased", "--shm-prefix", prefix.c_str(),
            "--log-level", "debug", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(listener);
  std::string ready = notify.WaitFor("READY=1");
  EXPECT_NE(ready.find("READY=1"), std::string::npos) << ready;
  EXPECT_NE(ready.find("STATUS=listening on " + socket_path), std::string::npos) << ready;
  {
    Client c(socket_path);  // served on the inherited socket
    c.Create("activated", 4096);
    c.Remove("activated");
  }
  ::kill(pid, SIGHUP);
  EXPECT_NE(notify.WaitFor("RELOADING=1").find("RELOADING=1"), std::string::npos);
  ::kill(pid, SIGTERM);
  EXPECT_NE(notify.WaitFor("STOPPING=1").find("STOPPING=1"), std::string::npos);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // The socket file is systemd's: the daemon leaves it in place.
  EXPECT_TRUE(std::filesystem::exists(socket_path));
  std::filesystem::remove_all(dir);
}

// shmleased in a mount namespace of its own whose /dev/shm is a small tmpfs: the container case.
TEST(SmallShm, WarnsAtStartupAndAFullShmIsNoSpaceNotSigbus) {
  if (::geteuid() != 0) GTEST_SKIP() << "a private mount namespace with its own /dev/shm needs root";
  std::string dir = std::filesystem::temp_directory_path().string() + "/shmlease-small-" +
                    std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::string socket_path = dir + "/s.sock";
  std::string log_path = dir + "/log";
  pid_t pid = ::fork();
  if (pid == 0) {
    // Private propagation first, so the small tmpfs never shows on the host's /dev/shm.
    if (::unshare(CLONE_NEWNS) != 0 || ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=32m") != 0) {
      ::_exit(90);
    }
    int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(log, STDERR_FILENO);
    ::execl(DaemonProcess::DaemonBinary().c_str(), "shmleased", "--socket", socket_path.c_str(),
            "--shm-prefix", "shmlease-test-small", "--max-total-bytes", "1GiB",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::optional<Client> c;
  for (int i = 0; i < 400 && !c; ++i) {
    std::error_code ec;
    c = Client::Connect(socket_path, ec);
    if (!c) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(c.has_value()) << "daemon did not start in its namespace";
  std::ifstream log_in(log_path);
  std::string log((std::istreambuf_iterator<char>(log_in)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("/dev/shm holds only 32.0 MiB"), std::string::npos) << log;

  c->Create("fits", 20 << 20);
  try {
    c->Create("too-much", 20 << 20);  // within the configured limits, beyond the tmpfs
    ADD_FAILURE() << "a segment larger than the free space of /dev/shm was created";
  } catch (const Error& e) {
    EXPECT_EQ(e.errc(), Errc::kNoSpace) << e.what();
    EXPECT_NE(std::string(e.what()).find("/dev/shm"), std::string::npos) << e.what();
  }
  // The first segment is whole and usable: its pages were reserved at creation.
  Lease lease = c->Acquire("fits", Mode::kWrite);
  std::memset(lease.writable_data().data(), 0xAB, lease.size());
  EXPECT_EQ(lease.data()[lease.size() - 1], std::byte{0xAB});
  lease.Release();
  // /dev/shm is full now: every further create is no_space, the daemon serves on, and what the
  // existing segment holds is untouched.
  EXPECT_EQ(CodeOf([&] { c->Create("too-much", 20 << 20); }), Errc::kNoSpace);
  Client other(socket_path);
  other.Ping();
  {
    Lease check = other.Acquire("fits", Mode::kRead);
    auto bytes = check.data();
    EXPECT_EQ(std::count(bytes.begin(), bytes.end(), std::byte{0xAB}),
              static_cast<std::ptrdiff_t>(bytes.size()))
        << "bytes of an existing segment changed while /dev/shm was full";
  }
  // Freeing space makes creates work again, with every page usable. The pages go once no
  // process maps them: each client that mapped "fits" drops its mapping when it next reads from
  // the daemon and finds the freed notice (a client idle since keeps them: docs/RELIABILITY.md).
  c->Remove("fits");
  other.Ping();
  c->Ping();
  c->Create("too-much", 20 << 20);
  Lease big = other.Acquire("too-much", Mode::kWrite);
  std::memset(big.writable_data().data(), 0xCD, big.size());
  big.Release();
  c->Remove("too-much");
  c->Ping();
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace shmlease
