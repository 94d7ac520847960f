// Frame hand-off latency against frame size, for bench/report.py: a shmlease channel against a raw
// futex ping-pong and a Unix socket carrying the frame's bytes, all between two processes, in one
// run, the three interleaved size by size.
//
//   handoff_bench [--iterations N] [--rounds 5] [--sizes 64,4096,...] [--gap-us 200]
//
// N frames per size and transport (1000), taken in --rounds rounds that alternate the transports.
// Every number is one-way: the writer takes a CLOCK_MONOTONIC stamp just before it hands frame i
// over (Publish, FUTEX_WAKE, the first write) and stores it in shared memory; the reader takes its
// stamp once it holds the whole frame (Next returned, its futex wait returned, the last byte read).
// The reader then acknowledges through a futex, and the writer waits for that acknowledgement and
// sleeps --gap-us before the next frame, so every frame finds the reader asleep and no frame queues
// behind another. Neither side touches the frame's bytes inside the timed window except what the
// transport itself does (the socket copies them twice).
// Owns: a spawned shmleased (stopped before exit), one forked reader per measurement (reaped), one
// anonymous shared mapping per measurement (unmapped). Prints one JSON document on stdout.
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.hpp"
#include "shmlease/channel.hpp"
#include "shmlease/fd_io.hpp"

namespace {

using namespace std::chrono_literals;

constexpr int kMaxIterations = 100000;

int64_t Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected) {
  syscall(SYS_futex, word, FUTEX_WAIT, expected, nullptr, nullptr, 0);
}
void FutexWake(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

// Shared between the writer and the reader of one measurement (an anonymous shared mapping made
// before the fork).
struct Shared {
  std::atomic<uint32_t> ready{0};
  std::atomic<uint32_t> word{0};  // futex hand-off: frames sent
  std::atomic<uint32_t> acked{0};  // frames the reader has finished with
  int64_t sent_ns[kMaxIterations];
  int64_t latency_ns[kMaxIterations];
};

Shared* MapShared() {
  void* p = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  return new (p) Shared();
}

void Ack(Shared* sh) {
  sh->acked.fetch_add(1);
  FutexWake(&sh->acked);
}

void WaitAck(Shared* sh, uint32_t n) {
  uint32_t now;
  while ((now = sh->acked.load()) < n) FutexWait(&sh->acked, now);
}

void WaitReady(Shared* sh) {
  while (sh->ready.load() == 0) std::this_thread::sleep_for(100us);
}

using Samples = std::vector<int64_t>;  // one-way latencies, ns

// Runs `reader` in a forked child and `writer` here; returns the child's `n` samples.
Samples Measure(int n, const std::function<void(Shared*)>& reader,
                const std::function<void(Shared*)>& writer) {
  Shared* sh = MapShared();
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(1);
  }
  if (pid == 0) {
    int code = 0;
    try {
      reader(sh);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "handoff_bench reader: %s\n", e.what());
      code = 1;
    }
    _exit(code);
  }
  writer(sh);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "handoff_bench: reader failed (status %d)\n", status);
    std::exit(1);
  }
  Samples v(sh->latency_ns, sh->latency_ns + n);
  munmap(sh, sizeof(Shared));
  return v;
}

// The raw baseline: a counter in shared memory, FUTEX_WAKE after bumping it; the reader sleeps in
// FUTEX_WAIT. With the reader's acknowledgement it is a futex ping-pong; its first half is timed.
Samples FutexHandoff(int n, std::chrono::microseconds gap) {
  return Measure(
      n,
      [n](Shared* sh) {
        sh->ready.store(1);
        for (int i = 0; i < n; ++i) {
          uint32_t w;
          while ((w = sh->word.load()) == static_cast<uint32_t>(i)) FutexWait(&sh->word, w);
          sh->latency_ns[i] = Now() - sh->sent_ns[i];
          Ack(sh);
        }
      },
      [n, gap](Shared* sh) {
        WaitReady(sh);
        for (int i = 0; i < n; ++i) {
          std::this_thread::sleep_for(gap);
          sh->sent_ns[i] = Now();
          sh->word.fetch_add(1);
          FutexWake(&sh->word);
          WaitAck(sh, i + 1);
        }
      });
}

// A shmlease channel (kBlock, 4 slots) of `size`-byte frames; the reader blocks in Next.
Samples ChannelHandoff(const std::string& socket, int n, size_t size,
                       std::chrono::microseconds gap) {
  const std::string name = "handoff-" + std::to_string(size);
  shmlease::Client client(socket);
  shmlease::Channel channel(client, name, {.format = "B", .shape = {size}, .slots = 4});
  shmlease::Writer writer = channel.writer();
  Samples r = Measure(
      n,
      [&socket, &name, n](Shared* sh) {
        shmlease::Client reader_client(socket);  // a forked child connects anew
        shmlease::Channel reader_channel(reader_client, name);
        shmlease::Reader reader = reader_channel.reader();
        sh->ready.store(1);
        for (int i = 0; i < n; ++i) {
          shmlease::Frame frame = reader.Next(10s);
          int64_t now = Now();
          const uint64_t index = frame.seq() - 1;  // sequence numbers start at 1
          if (index >= static_cast<uint64_t>(n)) throw std::runtime_error("unexpected frame");
          sh->latency_ns[i] = now - sh->sent_ns[index];
          frame.Release();
          Ack(sh);
        }
      },
      [&writer, n, gap](Shared* sh) {
        WaitReady(sh);
        if (!writer.WaitForReaders(1, 10s)) throw std::runtime_error("no reader attached");
        for (int i = 0; i < n; ++i) {
          shmlease::Frame frame = writer.Claim(10s);
          // The frame's first and last bytes written, as a producer would; not timed.
          auto bytes = frame.writable_data();
          bytes.front() = bytes.back() = static_cast<std::byte>(i);
          std::this_thread::sleep_for(gap);
          sh->sent_ns[i] = Now();
          writer.Publish(frame);
          WaitAck(sh, i + 1);
        }
      });
  writer.Close();
  shmlease::Channel::Remove(client, name);
  return r;
}

using shmlease::ReadAll;
using shmlease::WriteAll;

// The frame's bytes through a SOCK_STREAM socketpair (default buffer sizes), blocking reads into a
// buffer that is already faulted in.
Samples SocketHandoff(int n, size_t size, std::chrono::microseconds gap) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    std::perror("socketpair");
    std::exit(1);
  }
  Samples r = Measure(
      n,
      [&fds, n, size](Shared* sh) {
        ::close(fds[0]);
        std::vector<char> buffer(size, 1);
        sh->ready.store(1);
        for (int i = 0; i < n; ++i) {
          if (!ReadAll(fds[1], buffer.data(), size)) throw std::runtime_error("socket read");
          sh->latency_ns[i] = Now() - sh->sent_ns[i];
          Ack(sh);
        }
      },
      [&fds, n, size, gap](Shared* sh) {
        ::close(fds[1]);
        std::vector<char> frame(size, 7);
        WaitReady(sh);
        for (int i = 0; i < n; ++i) {
          frame.front() = frame.back() = static_cast<char>(i);
          std::this_thread::sleep_for(gap);
          sh->sent_ns[i] = Now();
          if (!WriteAll(fds[0], frame.data(), size)) throw std::runtime_error("socket write");
          WaitAck(sh, i + 1);
        }
        ::close(fds[0]);
      });
  return r;
}

std::vector<size_t> ParseSizes(const std::string& text) {
  std::vector<size_t> sizes;
  size_t start = 0;
  while (start < text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    sizes.push_back(std::stoull(text.substr(start, comma - start)));
    start = comma + 1;
  }
  return sizes;
}

nlohmann::json Summarize(Samples v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  double sum = 0;
  for (int64_t x : v) sum += static_cast<double>(x);
  return {{"p50_us", v[n / 2] / 1e3},
          {"p99_us", v[std::min(n - 1, n * 99 / 100)] / 1e3},
          {"mean_us", sum / static_cast<double>(n) / 1e3},
          {"n", n}};
}

}  // namespace

int main(int argc, char** argv) {
  int n = 1000;
  int rounds = 5;
  long gap_us = 200;
  std::vector<size_t> sizes = {64,       256,       1 << 10,  4 << 10, 16 << 10,
                               64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 < argc && arg == "--iterations") {
      n = std::atoi(argv[++i]);
    } else if (i + 1 < argc && arg == "--sizes") {
      sizes = ParseSizes(argv[++i]);
    } else if (i + 1 < argc && arg == "--rounds") {
      rounds = std::max(1, std::atoi(argv[++i]));
    } else if (i + 1 < argc && arg == "--gap-us") {
      gap_us = std::atol(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: handoff_bench [--iterations N] [--rounds 5] [--sizes 64,4096,...] "
                   "[--gap-us 200]\n");
      return 2;
    }
  }
  n = std::clamp(n, 10, kMaxIterations);
  const std::chrono::microseconds gap(gap_us);

  try {
    shmlease::testing::DaemonProcess daemon({"--log-level", "info"});
    nlohmann::json rows = nlohmann::json::array();
    const int per_round = std::max(10, n / rounds);
    for (size_t size : sizes) {
      std::fprintf(stderr, "handoff_bench: %zu bytes\n", size);
      // The three interleaved in rounds, so a burst of load from elsewhere on the machine hits
      // all of them alike rather than one whole measurement.
      Samples futex, channel, sock;
      for (int round = 0; round < rounds; ++round) {
        Samples f = FutexHandoff(per_round, gap);
        Samples c = ChannelHandoff(daemon.socket_path(), per_round, size, gap);
        Samples k = SocketHandoff(per_round, size, gap);
        futex.insert(futex.end(), f.begin(), f.end());
        channel.insert(channel.end(), c.begin(), c.end());
        sock.insert(sock.end(), k.begin(), k.end());
      }
      rows.push_back({{"size", size}, {"transport", "futex"}, {"stats", Summarize(futex)}});
      rows.push_back({{"size", size}, {"transport", "shmlease"}, {"stats", Summarize(channel)}});
      rows.push_back({{"size", size}, {"transport", "unix_socket"}, {"stats", Summarize(sock)}});
    }
    daemon.Stop();
    nlohmann::json out = {{"program", "handoff_bench"},
                          {"latency", "one-way"},
                          {"iterations", per_round * rounds},
                          {"rounds", rounds},
                          {"gap_us", gap_us},
                          {"rows", rows}};
    std::printf("%s\n", out.dump(1).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "handoff_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
