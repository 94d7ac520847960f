// Issue 14, points 4 and 5: the state and socket directories of a root daemon cannot be turned
// against it. A directory another user owns or may write is refused with an error that names the
// fix, a symbolic link planted in one is never followed (its target stays unchanged), a state file
// that shmleased did not write is not loaded, and the socket gets its mode at bind, never by a
// chmod by path that a swapped-in symbolic link could redirect.
#include "shmlease/client.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.hpp"
#include "daemon_test.hpp"
#include "wait_for.hpp"

namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;
namespace fs = std::filesystem;

bool Root() { return ::geteuid() == 0; }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

class DirectorySafetyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = fs::temp_directory_path().string() + "/shmlease-dirs-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    // What a planted link points at: a file of root's (the test's) that must stay as it is.
    victim_ = base_ + "/victim";
    std::ofstream(victim_) << "precious";
    ASSERT_EQ(::chmod(victim_.c_str(), 0600), 0);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  // The start-up error of a daemon given `args`, or "" when it started (it is then stopped).
  static std::string StartError(std::vector<std::string> args) {
    try {
      DaemonProcess daemon(std::move(args));
      testing::ExpectCleanStop(daemon);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  }
  std::string StateDirError(const std::string& dir) { return StartError({"--state-dir", dir}); }

  void ExpectVictimUnchanged() {
    EXPECT_EQ(ReadAll(victim_), "precious");
    EXPECT_EQ(ModeOf(victim_), 0600u);
    struct stat st {};
    ASSERT_EQ(::stat(victim_.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, ::geteuid());
  }

  // A directory under base_ owned by another user: uid 65534 as root; as another user, one that
  // root owns stands in (the test's user cannot give a directory away).
  std::string OtherUsersDir(const std::string& name, uid_t& owner) {
    if (!Root()) {
      owner = 0;
      return "/";
    }
    std::string dir = base_ + "/" + name;
    EXPECT_EQ(::mkdir(dir.c_str(), 0700), 0);
    EXPECT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
    owner = 65534;
    return dir;
  }

  std::string base_;
  std::string victim_;
};

TEST_F(DirectorySafetyTest, StateDirOwnedByAnotherUserIsRefused) {
  uid_t owner = 0;
  std::string dir = OtherUsersDir("theirs", owner);
  if (Root()) {
    // What the attacker prepares: links in their own directory to files root may write.
    ASSERT_EQ(::symlink(victim_.c_str(), (dir + "/shmleased.state.tmp").c_str()), 0);
    ASSERT_EQ(::symlink(victim_.c_str(), (dir + "/lock").c_str()), 0);
  }
  std::string error = StateDirError(dir);
  EXPECT_NE(error.find("the state directory " + dir + " is owned by uid " + std::to_string(owner) +
                       ", not by shmleased's uid " + std::to_string(::geteuid()) + ": chown it"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("--state-dir"), std::string::npos) << error;
  ExpectVictimUnchanged();
}

TEST_F(DirectorySafetyTest, StateDirWritableByOthersIsRefused) {
  for (mode_t mode : {0777, 0770, 0702, 01777}) {
    std::string dir = base_ + "/open";
    ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(dir.c_str(), mode), 0);
    std::string error = StateDirError(dir);
    char expected[64];
    std::snprintf(expected, sizeof(expected), "has mode %04o", static_cast<unsigned>(mode));
    EXPECT_NE(error.find(std::string("the state directory ") + dir + " " + expected),
              std::string::npos)
        << error;
    EXPECT_NE(error.find("chmod go-w"), std::string::npos) << error;
    EXPECT_FALSE(fs::exists(dir + "/lock")) << "the daemon wrote into a refused directory";
    ASSERT_EQ(::rmdir(dir.c_str()), 0);
  }
}

TEST_F(DirectorySafetyTest, StateDirUnderADirectoryOthersCanWriteIsRefused) {
  // Whoever may write the parent may rename our directory away and put their own in its place.
  std::string parent = base_ + "/shared";
  ASSERT_EQ(::mkdir(parent.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(parent.c_str(), 0777), 0);
  std::string error = StateDirError(parent + "/state");
  EXPECT_NE(error.find("lies under " + parent + " (mode 0777), which its group or others can "
                       "write to"),
            std::string::npos)
      << error;
  // Sticky, like /tmp: others cannot rename or remove what is ours in it, so that is fine.
  ASSERT_EQ(::chmod(parent.c_str(), 01777), 0);
  EXPECT_EQ(StateDirError(parent + "/state"), "");
  EXPECT_EQ(ModeOf(parent + "/state"), 0700u) << "the state directory is made private";
}

TEST_F(DirectorySafetyTest, StateDirThatIsASymbolicLinkIsRefused) {
  std::string real = base_ + "/real";
  ASSERT_EQ(::mkdir(real.c_str(), 0700), 0);
  ASSERT_EQ(::symlink(real.c_str(), (base_ + "/link").c_str()), 0);
  std::string error = StateDirError(base_ + "/link");
  EXPECT_NE(error.find("is a symbolic link; shmleased follows none there"), std::string::npos)
      << error;
  EXPECT_FALSE(fs::exists(real + "/lock"));
}

// Even in a directory of our own (say root planted them by mistake), links are never followed.
TEST_F(DirectorySafetyTest, PlantedLinksInTheStateDirAreNeverFollowed) {
  std::string dir = base_ + "/state";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(::symlink(victim_.c_str(), (dir + "/lock").c_str()), 0);
  std::string error = StateDirError(dir);
  EXPECT_NE(error.find(dir + "/lock: a symbolic link, which shmleased never follows"),
            std::string::npos)
      << error;
  ExpectVictimUnchanged();
  ASSERT_EQ(::unlink((dir + "/lock").c_str()), 0);

  // A link at the temporary file is removed, never written through: the state is saved.
  ASSERT_EQ(::symlink(victim_.c_str(), (dir + "/shmleased.state.tmp").c_str()), 0);
  {
    DaemonProcess daemon({"--state-dir", dir});
    Client c(daemon.socket_path());
    c.Create("saved", 4096);
    ExpectVictimUnchanged();
    struct stat st {};
    ASSERT_EQ(::lstat((dir + "/shmleased.state").c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_NE(ReadAll(dir + "/shmleased.state").find("name=saved"), std::string::npos);
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir + "/shmleased.state.tmp")));
    c.Remove("saved");
    testing::ExpectCleanStop(daemon);
  }

  // A link at the state file itself is refused, not read.
  ASSERT_EQ(::unlink((dir + "/shmleased.state").c_str()), 0);
  ASSERT_EQ(::symlink(victim_.c_str(), (dir + "/shmleased.state").c_str()), 0);
  error = StateDirError(dir);
  EXPECT_NE(error.find("it is a symbolic link, which shmleased never follows"), std::string::npos)
      << error;
  ExpectVictimUnchanged();
}

// Issue point 4: the checksum is no secret, so a state file is trusted only if we wrote it.
TEST_F(DirectorySafetyTest, StateFileNotWrittenByTheDaemonIsRefused) {
  std::string dir = base_ + "/state";
  std::string file = dir + "/shmleased.state";
  // One prefix for every start: the state file belongs to it.
  const std::vector<std::string> args = {"--state-dir", dir, "--shm-prefix",
                                         "shmlease-test-dirs-" + std::to_string(::getpid())};
  {
    DaemonProcess daemon(args);
    testing::ExpectCleanStop(daemon);
  }
  ASSERT_TRUE(fs::exists(file));
  const std::string saved = ReadAll(file);
  ASSERT_EQ(::chmod(file.c_str(), 0666), 0);
  std::string error = StartError(args);
  EXPECT_NE(error.find("the state file " + file + " has mode 0666: its group or others could "
                       "have written it"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("move it away"), std::string::npos) << error;
  ASSERT_EQ(::chmod(file.c_str(), 0600), 0);
  if (Root()) {
    ASSERT_EQ(::chown(file.c_str(), 65534, 65534), 0);
    error = StartError(args);
    EXPECT_NE(error.find("the state file " + file + " is owned by uid 65534, not by shmleased's "
                         "uid 0"),
              std::string::npos)
        << error;
    ASSERT_EQ(::chown(file.c_str(), 0, 0), 0);
  }
  EXPECT_EQ(ReadAll(file), saved) << "a refused state file was rewritten";
  EXPECT_EQ(StartError(args), "") << "the daemon's own state file is loaded again";
}

TEST_F(DirectorySafetyTest, SocketDirOwnedByAnotherUserOrOpenToOthersIsRefused) {
  uid_t owner = 0;
  std::string dir = OtherUsersDir("their-run", owner);
  const std::string sock = (dir == "/" ? "" : dir) + "/s.sock";
  std::string error = StartError({"--socket", sock});
  EXPECT_NE(error.find("the socket directory " + dir + " is owned by uid " +
                       std::to_string(owner) + ", not by shmleased's uid"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("--socket"), std::string::npos) << error;
  if (Root()) {
    EXPECT_FALSE(fs::exists(fs::symlink_status(sock)));
  }

  // A directory others may write, sticky or not (/tmp itself): refused too.
  for (mode_t mode : {0777, 01777}) {
    std::string open = base_ + "/open-run";
    ASSERT_EQ(::mkdir(open.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(open.c_str(), mode), 0);
    error = StartError({"--socket", open + "/s.sock"});
    EXPECT_NE(error.find("the socket directory " + open + " has mode"), std::string::npos)
        << error;
    EXPECT_FALSE(fs::exists(fs::symlink_status(open + "/s.sock")));
    ASSERT_EQ(::rmdir(open.c_str()), 0);
  }

  // A missing socket directory is made private, and the socket gets its mode at bind.
  std::string made = base_ + "/made/run";
  DaemonProcess daemon({"--socket", made + "/s.sock", "--socket-mode", "0640"});
  EXPECT_EQ(ModeOf(made), 0700u);
  EXPECT_EQ(ModeOf(made + "/s.sock"), 0640u);
  testing::ExpectCleanStop(daemon);
  EXPECT_FALSE(fs::exists(fs::symlink_status(made + "/s.sock"))) << "the socket is removed";
}

TEST_F(DirectorySafetyTest, SymbolicLinkAtTheSocketPathIsNotFollowed) {
  std::string dir = base_ + "/run";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(::symlink(victim_.c_str(), (dir + "/s.sock").c_str()), 0);
  std::string error = StartError({"--socket", dir + "/s.sock", "--socket-mode", "0666"});
  EXPECT_NE(error.find("exists and is not a socket; refusing to replace it"), std::string::npos)
      << error;
  ExpectVictimUnchanged();
}

// Issue point 5: a link swapped in for the socket right after its bind once made root chmod the
// link's target to 0666. Here another thread keeps renaming a link over the socket path while
// daemons start; however the race falls, the target keeps its mode (no chmod by path remains).
TEST_F(DirectorySafetyTest, SocketPathSwappedForALinkDuringStartUpChmodsNothing) {
  std::string dir = base_ + "/run";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  const std::string socket = dir + "/s.sock";
  const std::string staged = dir + "/staged";
  const std::string log = base_ + "/race.log";
  constexpr int kRounds = 15;
  int bound = 0;
  std::atomic<int> swaps{0};
  for (int round = 0; round < kRounds; ++round) {
    const std::string prefix =
        "shmlease-test-race-" + std::to_string(::getpid()) + "-" + std::to_string(round);
    std::vector<std::string> args = {DaemonProcess::DaemonBinary(),
                                     "--socket",
                                     socket,
                                     "--shm-prefix",
                                     prefix,
                                     "--state-dir",
                                     "none",
                                     "--socket-mode",
                                     "0666",
                                     "--log-level",
                                     "debug"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int swaps_before = swaps.load();
    std::atomic<bool> stop{false};
    std::thread swapper([&] {
      // Wait until the daemon's socket appears, then replace it (what the old chmod followed).
      while (!stop.load()) {
        struct stat st {};
        if (::lstat(socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
          ::unlink(staged.c_str());
          if (::symlink(victim_.c_str(), staged.c_str()) == 0 &&
              ::rename(staged.c_str(), socket.c_str()) == 0) {
            ++swaps;
          }
        }
      }
    });
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    // The daemon either refuses (it saw the link where its socket should be) or serves on with
    // its socket file replaced; stop it after a moment either way.
    int status = 0;
    bool exited = testing::WaitFor([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 300ms);
    stop = true;
    swapper.join();
    if (!exited) {
      ++bound;
      ::kill(pid, SIGTERM);
      ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    }
    ExpectVictimUnchanged();
    if (swaps.load() > swaps_before) {
      // The daemon removes only the socket it bound, never what took its name.
      struct stat st {};
      EXPECT_EQ(::lstat(socket.c_str(), &st), 0);
      EXPECT_TRUE(S_ISLNK(st.st_mode)) << "round " << round;
    }
    ::unlink(socket.c_str());
    ::unlink(staged.c_str());
  }
  // The attack was carried out (the socket replaced by a link while the daemon started up).
  EXPECT_GT(swaps.load(), 0) << ReadAll(log);
  ::testing::Test::RecordProperty("daemons_serving_when_stopped", bound);
}

}  // namespace
}  // namespace shmlease
