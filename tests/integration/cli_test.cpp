// The shmlease CLI as scripts use it: the real binary, run as a child process against the real
// daemon, judged by its exit status, stdout and stderr.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "daemon_process.hpp"
#include "shmlease/channel.hpp"
#include "daemon_test.hpp"
#include "raw_socket.hpp"

namespace shmlease {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;
using testing::DaemonProcess;

// --- Running a child ---------------------------------------------------------------------------

struct CliResult {
  int exit_code = -1;  // -N when killed by signal N
  std::string out;
  std::string err;
};

std::ostream& operator<<(std::ostream& os, const CliResult& r) {
  return os << "exit " << r.exit_code << "\n--- stdout ---\n"
            << r.out.substr(0, 2000) << "\n--- stderr ---\n"
            << r.err.substr(0, 2000);
}

// A child process with pipes on its stdin, stdout and stderr.
class Child {
 public:
  // Starts `argv[0]` with `argv`. The child gets default SIGPIPE handling whatever ours is.
  explicit Child(const std::vector<std::string>& argv) {
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 ||
        ::pipe2(err, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    std::vector<char*> args;
    std::vector<std::string> copy = argv;
    for (auto& a : copy) args.push_back(a.data());
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::signal(SIGPIPE, SIG_DFL);
      ::dup2(in[0], STDIN_FILENO);
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
      ::execv(args[0], args.data());
      std::perror("execv");
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    in_ = in[1];
    out_ = out[0];
    err_ = err[0];
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    for (int fd : {in_, out_, err_}) {
      if (fd >= 0) ::close(fd);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Feeds `input` to stdin (then closes it), collects stdout and stderr until both close, and
  // waits for the exit. Kills the child if it takes longer than `limit`.
  CliResult Communicate(std::string_view input = {}, std::chrono::seconds limit = 30s) {
    CliResult result;
    // The child may exit before reading all its input: that must be EPIPE here, not our death.
    struct sigaction ignore {
    }, previous{};
    ignore.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ignore, &previous);
    ::fcntl(in_, F_SETFL, O_NONBLOCK);
    size_t written = 0;
    if (input.empty()) CloseFd(in_);
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (out_ >= 0 || err_ >= 0) {
      std::vector<pollfd> fds;
      if (in_ >= 0) fds.push_back({in_, POLLOUT, 0});
      if (out_ >= 0) fds.push_back({out_, POLLIN, 0});
      if (err_ >= 0) fds.push_back({err_, POLLIN, 0});
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left <= 0ms) {
        ADD_FAILURE() << "the CLI did not finish within " << limit.count() << " s";
        ::kill(pid_, SIGKILL);
        break;
      }
      int n = ::poll(fds.data(), fds.size(), static_cast<int>(left.count()));
      if (n < 0 && errno != EINTR) break;
      for (const pollfd& p : fds) {
        if (p.revents == 0) continue;
        if (p.fd == in_) {
          ssize_t w = ::write(in_, input.data() + written, input.size() - written);
          if (w > 0) written += static_cast<size_t>(w);
          if (w < 0 && errno != EAGAIN && errno != EINTR) CloseFd(in_);  // EPIPE: child is done
          if (written == input.size()) CloseFd(in_);
        } else {
          std::string& sink = p.fd == out_ ? result.out : result.err;
          char buffer[65536];
          ssize_t r = ::read(p.fd, buffer, sizeof(buffer));
          if (r > 0) {
            sink.append(buffer, static_cast<size_t>(r));
          } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
            CloseFd(p.fd == out_ ? out_ : err_);
          }
        }
      }
    }
    CloseFd(in_);
    ::sigaction(SIGPIPE, &previous, nullptr);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    return result;
  }

  int out_fd() const { return out_; }
  pid_t pid() const { return pid_; }
  // Closes our end of the child's stdout, as a reader that stops early (`| head`) does.
  void CloseStdout() { CloseFd(out_); }

 private:
  static void CloseFd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  int err_ = -1;
};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string bytes(n, '\0');
  for (auto& b : bytes) b = static_cast<char>(rng());
  return bytes;
}

// --- Fixture -----------------------------------------------------------------------------------

class CliTest : public testing::DaemonTest {
 protected:
  void SetUp() override { ASSERT_FALSE(DaemonProcess::CliBinary().empty()); }

  std::vector<std::string> Argv(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {DaemonProcess::CliBinary(), "--socket", daemon_.socket_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  // Runs the CLI on this test's daemon.
  CliResult Cli(const std::vector<std::string>& args, std::string_view input = {}) {
    Child child(Argv(args));
    return child.Communicate(input);
  }
  // Runs the CLI with exactly `args` (no --socket added).
  static CliResult RawCli(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {DaemonProcess::CliBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    Child child(argv);
    return child.Communicate();
  }
  Json StatJson(const std::string& name) {
    CliResult r = Cli({"--json", "stat", name});
    EXPECT_EQ(r.exit_code, 0) << r;
    return Json::parse(r.out);
  }
};

// Checks the shape of an error reported with --json, and the human line on stderr.
void ExpectJsonError(const CliResult& r, int code, const std::string& error) {
  EXPECT_EQ(r.exit_code, code) << r;
  Json j = Json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r;
  EXPECT_EQ(j.at("error"), error) << r;
  EXPECT_EQ(j.at("code"), code) << r;
  EXPECT_TRUE(j.at("message").is_string()) << r;
  EXPECT_FALSE(j.at("message").get<std::string>().empty()) << r;
  EXPECT_EQ(r.err.rfind("shmlease: ", 0), 0u) << r;
}

// --- Commands ----------------------------------------------------------------------------------

TEST_F(CliTest, PingAnswersWithTheDaemonsPid) {
  CliResult r = Cli({"ping"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("pong"), std::string::npos) << r;
  EXPECT_NE(r.out.find(std::to_string(daemon_.pid())), std::string::npos) << r;

  r = Cli({"ping", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j.at("ok"), true);
  EXPECT_EQ(j.at("server_pid"), daemon_.pid());
  EXPECT_EQ(j.at("socket"), daemon_.socket_path());
}

TEST_F(CliTest, CreateListStatRemove) {
  CliResult r = Cli({"create", "frames", "64MiB"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("frames"), std::string::npos) << r;
  EXPECT_NE(r.out.find("67108864"), std::string::npos) << r;

  r = Cli({"ls"});
  ASSERT_EQ(r.exit_code, 0) << r;
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r;
  EXPECT_EQ(lines[0].rfind("NAME", 0), 0u) << r;
  EXPECT_EQ(lines[1].rfind("frames ", 0), 0u) << r;
  EXPECT_NE(lines[1].find("64.0 MiB"), std::string::npos) << r;

  r = Cli({"stat", "frames"});
  ASSERT_EQ(r.exit_code, 0) << r;
  std::vector<std::string> stat = Lines(r.out);
  auto value_of = [&](const std::string& key) -> std::string {
    for (const auto& line : stat) {
      if (line.rfind(key + ":", 0) == 0) {
        std::string value = line.substr(key.size() + 1);
        return value.substr(value.find_first_not_of(' '));
      }
    }
    return "<missing " + key + ">";
  };
  EXPECT_EQ(value_of("name"), "frames") << r;
  EXPECT_EQ(value_of("size"), "64.0 MiB (67108864 bytes)") << r;
  EXPECT_EQ(value_of("readers"), "0") << r;
  EXPECT_EQ(value_of("writers"), "0") << r;
  EXPECT_EQ(value_of("removed"), "no") << r;
  // Key: value lines, values aligned in one column.
  size_t column = stat[0].find("frames");
  for (const auto& line : stat) {
    ASSERT_NE(line.find(": "), std::string::npos) << line;
    EXPECT_NE(line[column], ' ') << line;
    EXPECT_EQ(line[column - 1], ' ') << line;
  }

  r = Cli({"rm", "frames"});
  ASSERT_EQ(r.exit_code, 0) << r;
  r = Cli({"ls"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(Lines(r.out).size(), 1u) << r;  // the header only
  r = Cli({"stat", "frames"});
  EXPECT_EQ(r.exit_code, 3) << r;
  EXPECT_TRUE(daemon_.ShmObjects().empty());
}

// Channels are shown as channels: ls lists them after the segments, stat describes one, rm removes
// one; a segment of the same name cannot exist.
TEST_F(CliTest, ChannelsAreListedDescribedAndRemovedAsChannels) {
  Client c(daemon_.socket_path());
  Channel cam(c, "cam", {.format = "B", .shape = {480, 640, 3}, .slots = 4});
  Writer w = cam.writer();
  Reader r1 = cam.reader();
  ASSERT_EQ(Cli({"create", "plain", "4KiB"}).exit_code, 0);
  CliResult r = Cli({"ls"});
  ASSERT_EQ(r.exit_code, 0) << r;
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 5u) << r;  // segments: header, plain; blank; channels: header, cam
  EXPECT_EQ(lines[1].rfind("plain ", 0), 0u) << r;
  EXPECT_EQ(lines[3].rfind("CHANNEL", 0), 0u) << r;
  EXPECT_EQ(lines[4].rfind("cam ", 0), 0u) << r;
  EXPECT_NE(lines[4].find("B 480x640x3"), std::string::npos) << r;
  EXPECT_NE(lines[4].find(std::to_string(::getpid())), std::string::npos) << r;

  r = Cli({"ls", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r;
  nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["channels"].size(), 1u) << r;
  EXPECT_EQ(j["channels"][0]["name"], "cam");
  EXPECT_EQ(j["channels"][0]["readers"], 1);
  EXPECT_EQ(j["channels"][0]["slots"], 4);
  EXPECT_EQ(j["segments"].size(), 1u);

  r = Cli({"stat", "cam"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("channel:"), std::string::npos) << r;
  EXPECT_NE(r.out.find("readers:   1"), std::string::npos) << r;
  EXPECT_NE(r.out.find("writer:    pid " + std::to_string(::getpid())), std::string::npos) << r;

  r = Cli({"create", "cam", "4KiB"});
  EXPECT_EQ(r.exit_code, 4) << r;
  EXPECT_NE(r.err.find("a channel named 'cam' exists"), std::string::npos) << r;

  r = Cli({"rm", "cam"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Channel::List(c).empty());
  r = Cli({"stat", "cam"});
  EXPECT_EQ(r.exit_code, 3) << r;
  ASSERT_EQ(Cli({"rm", "plain"}).exit_code, 0);
}

TEST_F(CliTest, ListIsAnAlignedTable) {
  ASSERT_EQ(Cli({"create", "a", "10"}).exit_code, 0);
  ASSERT_EQ(Cli({"create", "a-much-longer-name", "1GiB"}).exit_code, 0);
  ASSERT_EQ(Cli({"create", "img", "--shape", "1080,1920,3", "--dtype", "f"}).exit_code, 0);
  CliResult r = Cli({"ls"});
  ASSERT_EQ(r.exit_code, 0) << r;
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 4u) << r;
  const std::string& header = lines[0];
  for (const char* column : {"NAME", "SIZE", "FORMAT", "SHAPE", "READERS", "WRITERS", "FLAGS"}) {
    EXPECT_NE(header.find(column), std::string::npos) << column;
  }
  // Text columns start where their heading starts; number columns end where it ends.
  size_t format_at = header.find("FORMAT");
  size_t shape_at = header.find("SHAPE");
  size_t size_end = header.find("SIZE") + 4;
  size_t readers_end = header.find("READERS") + 7;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    ASSERT_GT(line.size(), readers_end) << line;
    EXPECT_EQ(line[format_at - 1], ' ') << line;
    EXPECT_NE(line[format_at], ' ') << line;
    EXPECT_NE(line[shape_at], ' ') << line;
    EXPECT_NE(line[size_end - 1], ' ') << line;
    EXPECT_EQ(line[size_end], ' ') << line;
    EXPECT_EQ(line[readers_end - 1], '0') << line;
  }
  EXPECT_EQ(lines[1].rfind("a ", 0), 0u);  // sorted by name
  EXPECT_NE(lines[2].find("1.0 GiB"), std::string::npos) << lines[2];
  EXPECT_NE(lines[3].find("1080x1920x3"), std::string::npos) << lines[3];
  for (const char* name : {"a", "a-much-longer-name", "img"}) {
    EXPECT_EQ(Cli({"rm", name}).exit_code, 0);
  }
}

TEST_F(CliTest, JsonOutputHasEveryField) {
  CliResult r = Cli({"--json", "create", "img", "--shape", "1080x1920x3", "--dtype", "f"});
  ASSERT_EQ(r.exit_code, 0) << r;
  Json created = Json::parse(r.out);
  EXPECT_EQ(created.at("name"), "img");
  EXPECT_EQ(created.at("size"), 1080ull * 1920 * 3 * 4);
  EXPECT_EQ(created.at("format"), "f");
  EXPECT_EQ(created.at("shape"), Json::array({1080, 1920, 3}));
  EXPECT_EQ(created.at("readers"), 0);
  EXPECT_EQ(created.at("writers"), 0);
  EXPECT_EQ(created.at("exclusive"), false);
  EXPECT_EQ(created.at("removed"), false);
  EXPECT_EQ(created.at("waiting"), 0);
  EXPECT_EQ(created.at("creator_uid"), ::getuid());
  EXPECT_GT(created.at("creator_pid").get<int64_t>(), 0);
  EXPECT_GT(created.at("page_size").get<int64_t>(), 0);
  EXPECT_TRUE(created.at("id").is_number_unsigned());
  EXPECT_TRUE(created.at("created").is_string());
  auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  EXPECT_NEAR(static_cast<double>(created.at("created_unix_ns").get<int64_t>()),
              static_cast<double>(now_ns), 60e9);

  // --json may also come after the subcommand.
  r = Cli({"create", "raw", "4096", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r;
  Json raw = Json::parse(r.out);
  EXPECT_EQ(raw.at("size"), 4096);
  EXPECT_EQ(raw.at("format"), "");
  EXPECT_EQ(raw.at("shape"), Json::array());

  r = Cli({"--json", "ls"});
  ASSERT_EQ(r.exit_code, 0) << r;
  Json list = Json::parse(r.out).at("segments");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].at("name"), "img");
  EXPECT_EQ(list[1].at("name"), "raw");
  EXPECT_EQ(list[0], StatJson("img"));
  EXPECT_EQ(StatJson("img").at("id"), created.at("id"));

  r = Cli({"--json", "rm", "img"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(Json::parse(r.out).at("removed"), "img");
  ASSERT_EQ(Cli({"rm", "raw"}).exit_code, 0);
  r = Cli({"--json", "ls"});
  EXPECT_EQ(Json::parse(r.out).at("segments"), Json::array());
}

TEST_F(CliTest, PutThenCatRoundTripsBinaryBytes) {
  const size_t size = 1 << 20;
  ASSERT_EQ(Cli({"create", "blob", "1MiB"}).exit_code, 0);
  std::string data = RandomBytes(size, 42);
  data[0] = '\0';
  data[1] = '\n';
  data[size - 1] = '\0';

  CliResult r = Cli({"put", "blob"}, data);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(r.out.empty()) << r;
  EXPECT_NE(r.err.find("wrote 1048576 bytes"), std::string::npos) << r;

  r = Cli({"cat", "blob"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.out.size(), size);
  EXPECT_TRUE(r.out == data) << "bytes differ";

  // A shorter input overwrites the start and leaves the rest.
  r = Cli({"--json", "put", "blob"}, "hello");
  ASSERT_EQ(r.exit_code, 0) << r;
  Json put = Json::parse(r.out);
  EXPECT_EQ(put.at("bytes_written"), 5);
  EXPECT_EQ(put.at("segment_size"), size);
  EXPECT_EQ(put.at("name"), "blob");
  r = Cli({"cat", "blob"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out == "hello" + data.substr(5)) << "bytes differ";

  // The CLI's leases were released when it exited.
  Json stat = StatJson("blob");
  EXPECT_EQ(stat.at("readers"), 0);
  EXPECT_EQ(stat.at("writers"), 0);
  ASSERT_EQ(Cli({"rm", "blob"}).exit_code, 0);
}

TEST_F(CliTest, PutLargerThanTheSegmentIsRefusedAndWritesNothing) {
  ASSERT_EQ(Cli({"create", "small", "16"}).exit_code, 0);
  ASSERT_EQ(Cli({"put", "small"}, std::string(16, 'a')).exit_code, 0);

  CliResult r = Cli({"put", "small"}, std::string(17, 'b'));
  EXPECT_EQ(r.exit_code, 8) << r;
  EXPECT_EQ(r.err.rfind("shmlease: ", 0), 0u) << r;
  EXPECT_NE(r.err.find("longer than"), std::string::npos) << r;

  // Much larger, so the CLI stops reading long before the end.
  r = Cli({"--json", "put", "small"}, std::string(4 << 20, 'c'));
  ExpectJsonError(r, 8, "input_too_large");

  r = Cli({"cat", "small"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, std::string(16, 'a'));
  ASSERT_EQ(Cli({"rm", "small"}).exit_code, 0);
}

TEST_F(CliTest, CatAndPutOfAMissingSegment) {
  EXPECT_EQ(Cli({"cat", "nope"}).exit_code, 3);
  EXPECT_EQ(Cli({"put", "nope"}, "x").exit_code, 3);
  EXPECT_EQ(Cli({"rm", "nope"}).exit_code, 3);
  ExpectJsonError(Cli({"--json", "stat", "nope"}), 3, "not_found");
}

TEST_F(CliTest, ExistsIsFourAndExistOkSucceeds) {
  ASSERT_EQ(Cli({"create", "once", "4096"}).exit_code, 0);
  CliResult r = Cli({"create", "once", "4096"});
  EXPECT_EQ(r.exit_code, 4) << r;
  ExpectJsonError(Cli({"--json", "create", "once", "8192"}), 4, "already_exists");
  r = Cli({"--json", "create", "once", "4096", "--exist-ok"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(Json::parse(r.out).at("size"), 4096);
  ASSERT_EQ(Cli({"rm", "once"}).exit_code, 0);
}

// --exist-ok returns the segment only when it has the size, dtype and shape asked for (issue 11).
TEST_F(CliTest, ExistOkOfAnotherShapeIsFourAndNamesBoth) {
  ASSERT_EQ(Cli({"create", "w", "--shape", "1024,1024", "--dtype", "float32"}).exit_code, 0);
  CliResult r = Cli({"--json", "create", "w", "--shape", "1024x1024", "--dtype", "f4", "--exist-ok"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(Json::parse(r.out).at("size"), 4194304);
  EXPECT_EQ(Cli({"create", "w", "4MiB", "--shape", "1024,1024", "--dtype", "f", "--exist-ok"})
                .exit_code,
            0);
  r = Cli({"create", "w", "--shape", "4096", "--dtype", "uint8", "--exist-ok"});
  EXPECT_EQ(r.exit_code, 4) << r;
  EXPECT_NE(r.err.find("segment 'w' exists as float32 (1024, 1024), 4194304 bytes; asked for "
                       "uint8 (4096,), 4096 bytes"),
            std::string::npos)
      << r;
  ExpectJsonError(Cli({"--json", "create", "w", "4MiB", "--exist-ok"}), 4, "already_exists");
  EXPECT_EQ(Cli({"create", "w", "--shape", "1024,1024", "--dtype", "int32", "--exist-ok"}).exit_code,
            4);
  // Without --exist-ok: said once, with the way to open it instead.
  r = Cli({"create", "w", "4MiB"});
  EXPECT_EQ(r.exit_code, 4) << r;
  EXPECT_NE(r.err.find("--exist-ok"), std::string::npos) << r;
  EXPECT_EQ(r.err.find("already exists"), r.err.rfind("already exists")) << r;
  ASSERT_EQ(Cli({"rm", "w"}).exit_code, 0);
}

// --dtype takes numpy's names and codes as Python does, in native order (issue 11).
TEST_F(CliTest, DtypeTakesNumpyNames) {
  const std::pair<const char*, const char*> kNames[] = {
      {"float32", "f"}, {"f4", "f"}, {"uint8", "B"}, {"u1", "B"}, {"int64", "l"},
      {"i8", "l"},      {"float16", "e"}, {"bool", "?"}, {"=f8", "d"}, {"H", "H"}};
  for (const auto& [name, format] : kNames) {
    CliResult r = Cli({"--json", "create", "t", "--shape", "4,4", "--dtype", name});
    ASSERT_EQ(r.exit_code, 0) << name << "\n" << r;
    EXPECT_EQ(Json::parse(r.out).at("format"), format) << name;
    ASSERT_EQ(Cli({"rm", "t"}).exit_code, 0);
  }
  for (const char* name : {"complex64", "float", "Float32", ">f4", "f3", "int128"}) {
    CliResult r = Cli({"create", "t", "--shape", "4,4", "--dtype", name});
    EXPECT_EQ(r.exit_code, 9) << name << "\n" << r;
    EXPECT_NE(r.err.find("float32"), std::string::npos) << r;  // the message lists the names
  }
  EXPECT_EQ(Cli({"stat", "t"}).exit_code, 3);
}

TEST_F(CliTest, BadNamesAreNine) {
  for (const std::string& name :
       {std::string(".hidden"), std::string("a/b"), std::string("a b"), std::string(129, 'n'),
        std::string("caf\xC3\xA9"), std::string("_x")}) {
    EXPECT_EQ(Cli({"create", name, "4096"}).exit_code, 9) << name;
    EXPECT_EQ(Cli({"stat", name}).exit_code, 9) << name;
    EXPECT_EQ(Cli({"cat", name}).exit_code, 9) << name;
  }
  // A leading '-' reads as an option (usage error) unless after "--", where it is a bad name.
  EXPECT_EQ(Cli({"stat", "-x"}).exit_code, 2);
  EXPECT_EQ(Cli({"stat", "--", "-x"}).exit_code, 9);
  ExpectJsonError(Cli({"--json", "stat", "../etc"}), 9, "invalid_name");
  // 128 characters is still a name.
  std::string longest(128, 'n');
  EXPECT_EQ(Cli({"create", longest, "4096"}).exit_code, 0);
  EXPECT_EQ(Cli({"rm", longest}).exit_code, 0);
}

TEST_F(CliTest, BadSizesShapesAndFormatsAreNine) {
  for (const char* size : {"12QB", "-5", "0", "abc", "1.5", "99999999999TiB", "64 MiBs"}) {
    CliResult r = Cli({"create", "x", size});
    EXPECT_EQ(r.exit_code, 9) << size << "\n" << r;
  }
  ExpectJsonError(Cli({"--json", "create", "x", "12QB"}), 9, "invalid_argument");
  EXPECT_EQ(Cli({"create", "x", "--shape", "1,0"}).exit_code, 9);
  EXPECT_EQ(Cli({"create", "x", "--shape", "1,2,3,4,5,6,7,8,9"}).exit_code, 9);
  EXPECT_EQ(Cli({"create", "x", "--shape", "two"}).exit_code, 9);
  EXPECT_EQ(Cli({"create", "x", "--shape", "4", "--dtype", "<f"}).exit_code, 9);
  EXPECT_EQ(Cli({"create", "x", "--shape", "4", "--dtype", "x"}).exit_code, 9);
  EXPECT_EQ(Cli({"create", "x", "15", "--shape", "4", "--dtype", "f"}).exit_code, 9);
  EXPECT_EQ(Cli({"cat", "x", "--timeout", "-7"}).exit_code, 9);
  // Nothing was created by any of them.
  EXPECT_EQ(Cli({"stat", "x"}).exit_code, 3);
  // Size and shape that agree are fine.
  EXPECT_EQ(Cli({"create", "x", "16", "--shape", "4", "--dtype", "f"}).exit_code, 0);
  EXPECT_EQ(Cli({"rm", "x"}).exit_code, 0);
}

TEST_F(CliTest, UsageErrorsAreTwo) {
  CliResult r = Cli({});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_EQ(r.err.rfind("shmlease: ", 0), 0u) << r;
  EXPECT_EQ(Cli({"stat"}).exit_code, 2);
  EXPECT_EQ(Cli({"create"}).exit_code, 2);
  EXPECT_EQ(Cli({"create", "x"}).exit_code, 2);  // neither SIZE nor --shape
  EXPECT_EQ(Cli({"ls", "--no-such-option"}).exit_code, 2);
  EXPECT_EQ(Cli({"cat", "x", "--timeout", "soon"}).exit_code, 2);
  EXPECT_EQ(Cli({"no-such-command"}).exit_code, 2);
  ExpectJsonError(Cli({"--json", "stat"}), 2, "usage");
}

TEST_F(CliTest, HelpAndVersion) {
  CliResult r = RawCli({"--help"});
  ASSERT_EQ(r.exit_code, 0) << r;
  for (const char* text : {"ping", "ls", "stat", "create", "rm", "cat", "put", "--json", "--socket",
                           "Exit status", "not found", "already exists"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text;
  }
  r = RawCli({"create", "--help"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("--shape"), std::string::npos) << r;
  r = RawCli({"--version"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out.rfind("shmlease", 0), 0u) << r;
}

TEST_F(CliTest, DaemonNotRunningIsSeven) {
  // A path nobody listens on, and a socket file whose owner is gone.
  std::string nobody = daemon_.dir() + "/nobody.sock";
  std::string stale = daemon_.dir() + "/stale.sock";
  ASSERT_NO_FATAL_FAILURE(testing::BindStaleSocket(stale));

  for (const std::string& path : {nobody, stale}) {
    CliResult r = RawCli({"--socket", path, "ping"});
    EXPECT_EQ(r.exit_code, 7) << r;
    EXPECT_NE(r.err.find(path), std::string::npos) << r;
    r = RawCli({"--socket", path, "--json", "ls"});
    ExpectJsonError(r, 7, "daemon_unavailable");
    EXPECT_EQ(RawCli({"--socket", path, "create", "x", "1MiB"}).exit_code, 7);
  }
  // $SHMLEASE_SOCKET is used when --socket is not given.
  ::setenv("SHMLEASE_SOCKET", nobody.c_str(), 1);
  CliResult r = RawCli({"ping"});
  ::unsetenv("SHMLEASE_SOCKET");
  EXPECT_EQ(r.exit_code, 7) << r;
  EXPECT_NE(r.err.find(nobody), std::string::npos) << r;
}

TEST_F(CliTest, ExclusiveLeaseTimesOutWhileAReaderHoldsTheSegment) {
  ASSERT_EQ(Cli({"create", "held", "1MiB"}).exit_code, 0);
  // A `cat` whose stdout nobody reads blocks writing a 1 MiB segment into a pipe, holding its read
  // lease all the while.
  auto cat = std::make_unique<Child>(Argv({"cat", "held"}));
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (StatJson("held").at("readers") != 1) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "cat never took its lease";
    std::this_thread::sleep_for(10ms);
  }

  auto start = std::chrono::steady_clock::now();
  CliResult r = Cli({"put", "held", "--exclusive", "--timeout", "300"}, "x");
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.exit_code, 6) << r;
  EXPECT_GE(waited, 250ms);
  // The message names the segment, the mode, the wait and who holds it (the cat, reading).
  EXPECT_NE(r.err.find("timed out after 300 ms waiting for a write exclusive lease on segment "
                       "'held': held by pid " + std::to_string(cat->pid()) + " ("),
            std::string::npos)
      << r;
  EXPECT_NE(r.err.find(") r; 0 waiting"), std::string::npos) << r;
  ExpectJsonError(Cli({"--json", "put", "held", "--exclusive", "--timeout", "0"}, "x"), 6,
                  "timeout");
  // A shared write lease is granted next to the reader.
  EXPECT_EQ(Cli({"put", "held", "--timeout", "0"}, "y").exit_code, 0);

  // Let the cat finish: its lease goes, and the exclusive lease is granted.
  CliResult cat_result = cat->Communicate();
  EXPECT_EQ(cat_result.exit_code, 0) << cat_result.err;
  EXPECT_EQ(cat_result.out.size(), 1u << 20);
  EXPECT_EQ(StatJson("held").at("readers"), 0);
  EXPECT_EQ(Cli({"put", "held", "--exclusive", "--timeout", "0"}, "z").exit_code, 0);
  ASSERT_EQ(Cli({"rm", "held"}).exit_code, 0);
}

TEST_F(CliTest, RemoveWhileCatHoldsALeaseDefersTheFree) {
  ASSERT_EQ(Cli({"create", "busy", "1MiB"}).exit_code, 0);
  std::string data = RandomBytes(1 << 20, 7);
  ASSERT_EQ(Cli({"put", "busy"}, data).exit_code, 0);
  auto cat = std::make_unique<Child>(Argv({"cat", "busy"}));
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (StatJson("busy").at("readers") != 1) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "cat never took its lease";
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(Cli({"rm", "busy"}).exit_code, 0);
  EXPECT_EQ(Cli({"stat", "busy"}).exit_code, 3);
  // The name is free again at once.
  ASSERT_EQ(Cli({"create", "busy", "4096"}).exit_code, 0);
  // The reader still gets every byte of the removed segment.
  CliResult r = cat->Communicate();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out == data) << "bytes differ";
  ASSERT_EQ(Cli({"rm", "busy"}).exit_code, 0);
}

TEST_F(CliTest, CatIntoAClosedPipeIsNotAnError) {
  ASSERT_EQ(Cli({"create", "pipe", "1MiB"}).exit_code, 0);
  Child cat(Argv({"cat", "pipe"}));
  // Read a little, then close our end like `| head -c 10` does.
  char buffer[10];
  ASSERT_GT(::read(cat.out_fd(), buffer, sizeof(buffer)), 0);
  cat.CloseStdout();
  CliResult r = cat.Communicate();
  EXPECT_EQ(r.exit_code, 0) << r;  // neither killed by SIGPIPE nor an error
  EXPECT_TRUE(r.err.empty()) << r;
  EXPECT_EQ(StatJson("pipe").at("readers"), 0);
  ASSERT_EQ(Cli({"rm", "pipe"}).exit_code, 0);
}

}  // namespace
}  // namespace shmlease
