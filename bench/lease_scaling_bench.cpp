// Lease operations per second against the number of clients, for bench/report.py: N client threads,
// each with its own connection, loop acquire + release of one segment (read leases) against one
// shmleased; the ceiling, in the same run with the same client counts, is a raw epoll server (one
// thread, in a process of its own) that answers the same message pattern: a request of an acquire's
// size, a reply of an acquire reply's size, then a one-way message of a release's size, one request
// in flight per client.
//
//   lease_scaling_bench [--clients 1,2,4,...] [--seconds 1.0] [--repeats 3]
//
// Owns: a spawned shmleased and its segment (removed, daemon stopped, before exit), the forked echo
// server and its socket (killed, reaped and unlinked before exit), the client threads of each step
// (joined). Prints one JSON document on stdout.
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "daemon_process.hpp"
#include "shmlease/client.hpp"
#include "shmlease/codec.hpp"
#include "shmlease/fd_io.hpp"
#include "shmlease/protocol.hpp"
#include "wire_sizes.hpp"

namespace shmlease {
namespace {

using bench::MeasureWireSizes;
using bench::WireSizes;
using Clock = std::chrono::steady_clock;
constexpr char kSegmentName[] = "bench-scaling";
// The same segment as lease_bench's: a format and shape make the reply as large as a typical one.
const CreateOptions kSegmentOptions{.size = 0, .format = "f", .shape = {512, 512}};

// The echo server's loop (in the forked child): level-triggered epoll, non-blocking sockets; each
// connection alternates between collecting a request (then replying) and collecting a one-way
// message. Replies are small and one at a time per connection, so a write never blocks.
[[noreturn]] void EchoServe(int listener, WireSizes sizes) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listener;
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  struct Conn {
    size_t have = 0;
    bool oneway = false;  // collecting the one-way message
  };
  std::unordered_map<int, Conn> conns;
  std::vector<char> reply(sizes.acquire_reply, 0x5A), buffer(64 * 1024);
  std::vector<epoll_event> events(256);
  for (;;) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) _exit(1);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        int c = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) continue;
        epoll_event cev{};
        cev.events = EPOLLIN;
        cev.data.fd = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        conns[c] = Conn{};
        continue;
      }
      ssize_t got = ::read(fd, buffer.data(), buffer.size());
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (got <= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
        conns.erase(fd);
        continue;
      }
      Conn& conn = conns[fd];
      size_t left = static_cast<size_t>(got);
      while (left > 0) {
        const size_t want = conn.oneway ? sizes.release_request : sizes.acquire_request;
        const size_t take = std::min(left, want - conn.have);
        conn.have += take;
        left -= take;
        if (conn.have < want) break;
        conn.have = 0;
        if (conn.oneway) {
          conn.oneway = false;
        } else {
          if (!WriteAll(fd, reply.data(), reply.size())) break;  // the peer went away
          conn.oneway = sizes.release_request > 0;
        }
      }
    }
  }
}

// The raw server in a process of its own, listening on `path`; killed and reaped on destruction.
class EchoServer {
 public:
  EchoServer(const std::string& path, WireSizes sizes) : path_(path) {
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (listener < 0 || path.size() >= sizeof(addr.sun_path)) throw std::runtime_error("socket");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(listener, 256) != 0) {
      throw std::runtime_error("cannot listen on " + path + ": " + std::strerror(errno));
    }
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) EchoServe(listener, sizes);
    ::close(listener);
  }
  ~EchoServer() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    ::unlink(path_.c_str());
  }
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;

  int Connect() const {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      throw std::runtime_error("cannot connect to the echo server");
    }
    return fd;
  }

 private:
  std::string path_;
  pid_t pid_ = -1;
};

// Runs `n` threads; each gets its index, prepares (not timed), waits for the start, then calls
// `op(index)` until stopped. Returns the operations per second of all threads together.
double RunThreads(int n, double seconds, const std::function<void(int)>& prepare,
                  const std::function<bool(int)>& op) {
  std::atomic<int> prepared{0};
  std::atomic<bool> go{false}, stop{false}, failed{false};
  std::vector<uint64_t> counts(static_cast<size_t>(n), 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      try {
        prepare(t);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "lease_scaling_bench: %s\n", e.what());
        failed = true;
      }
      prepared.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      uint64_t done = 0;
      try {
        while (!failed.load() && !stop.load(std::memory_order_relaxed) && op(t)) ++done;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "lease_scaling_bench: %s\n", e.what());
        failed = true;
      }
      counts[static_cast<size_t>(t)] = done;
    });
  }
  while (prepared.load() < n) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto start = Clock::now();
  go = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : threads) th.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (failed) throw std::runtime_error("a client thread failed");
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  return static_cast<double>(total) / elapsed;
}

double LeaseOps(const std::string& socket, int n, double seconds) {
  std::vector<std::optional<Client>> clients(static_cast<size_t>(n));
  return RunThreads(
      n, seconds,
      [&](int t) {
        auto& c = clients[static_cast<size_t>(t)];
        c.emplace(socket);
        c->Acquire(kSegmentName, Mode::kRead).Release();  // maps the segment once
      },
      [&](int t) {
        Lease lease = clients[static_cast<size_t>(t)]->Acquire(kSegmentName, Mode::kRead);
        lease.Release();
        return true;
      });
}

double EchoOps(const EchoServer& server, WireSizes sizes, int n, double seconds) {
  std::vector<int> fds(static_cast<size_t>(n), -1);
  std::vector<char> request(sizes.acquire_request, 0x11), oneway(sizes.release_request, 0x22);
  // The replies' bytes are never looked at; one buffer per thread all the same.
  std::vector<std::vector<char>> replies(static_cast<size_t>(n), std::vector<char>(sizes.acquire_reply));
  double ops = RunThreads(
      n, seconds, [&](int t) { fds[static_cast<size_t>(t)] = server.Connect(); },
      [&](int t) {
        int fd = fds[static_cast<size_t>(t)];
        std::vector<char>& in = replies[static_cast<size_t>(t)];
        return WriteAll(fd, request.data(), request.size()) &&
               ReadAll(fd, in.data(), in.size()) &&
               WriteAll(fd, oneway.data(), oneway.size());
      });
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
  return ops;
}

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    out.push_back(std::stoi(text.substr(start, comma - start)));
    start = comma + 1;
  }
  return out;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace
}  // namespace shmlease

int main(int argc, char** argv) {
  using namespace shmlease;
  std::vector<int> counts = {1, 2, 4, 8, 16, 32, 64};
  double seconds = 1.0;
  int repeats = 3;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 < argc && arg == "--clients") {
      counts = ParseList(argv[++i]);
    } else if (i + 1 < argc && arg == "--seconds") {
      seconds = std::atof(argv[++i]);
    } else if (i + 1 < argc && arg == "--repeats") {
      repeats = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr,
                   "usage: lease_scaling_bench [--clients 1,2,4,...] [--seconds 1.0] "
                   "[--repeats 3]\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  try {
    testing::DaemonProcess daemon({"--log-level", "info"});
    WireSizes sizes;
    {
      Client admin(daemon.socket_path());
      admin.Create(kSegmentName, kSegmentOptions);
      sizes = MeasureWireSizes(admin.Stat(kSegmentName));
    }
    EchoServer echo(daemon.dir() + "/echo.sock", sizes);
    nlohmann::json rows = nlohmann::json::array();
    for (int n : counts) {
      std::fprintf(stderr, "lease_scaling_bench: %d clients\n", n);
      std::vector<double> lease, raw;
      // Alternated, so a change in the machine's load hits both alike.
      for (int r = 0; r < repeats; ++r) {
        raw.push_back(EchoOps(echo, sizes, n, seconds));
        lease.push_back(LeaseOps(daemon.socket_path(), n, seconds));
      }
      rows.push_back({{"clients", n},
                      {"shmlease_ops_per_s", Median(lease)},
                      {"epoll_echo_ops_per_s", Median(raw)},
                      {"shmlease_runs", lease},
                      {"epoll_echo_runs", raw}});
    }
    {
      Client admin(daemon.socket_path());
      admin.Remove(kSegmentName);
    }
    daemon.Stop();
    nlohmann::json out = {{"program", "lease_scaling_bench"},
                          {"seconds_per_run", seconds},
                          {"repeats", repeats},
                          {"request_bytes", sizes.acquire_request},
                          {"reply_bytes", sizes.acquire_reply},
                          {"oneway_bytes", sizes.release_request},
                          {"rows", rows}};
    std::printf("%s\n", out.dump(1).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lease_scaling_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
