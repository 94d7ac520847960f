// Issue 2's benchmark: lease acquire + release of an already-mapped segment against a real
// shmleased, and, in the same binary and run, the baseline it is judged by: a raw blocking
// Unix-socket round trip of the same request and reply sizes with an echo peer in another process.
// Placement is controlled (issue 15): this process runs on the first allowed CPU, and every row
// runs twice, its peer (shmleased's threads, or the echo peer) on the second CPU (same_core:0)
// and on the first (same_core:1), so that a row is compared with a baseline placed alike.
// Owns: the spawned daemon and its one segment (removed, and the daemon stopped, before main
// returns, or on SIGINT/SIGTERM), and one forked echo peer per raw benchmark run (reaped at its
// end). bench/run_benchmarks.sh runs this and writes the figures to docs/BENCHMARKS.md.
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon_process.hpp"
#include "oneway.hpp"
#include "shmlease/client.hpp"
#include "shmlease/codec.hpp"
#include "shmlease/fd_io.hpp"
#include "shmlease/protocol.hpp"
#include "wire_sizes.hpp"

namespace shmlease {
namespace {

using bench::MeasureWireSizes;
using bench::WireSizes;
using testing::DaemonProcess;

// The CPUs of this process (first) and of the peer when it runs apart (second): PickCpus().
bench::CpuPair g_cpus;
// The CPU a benchmark's peer runs on, by its same_core argument.
int PeerCpu(int64_t same_core) { return same_core != 0 ? g_cpus.writer : g_cpus.reader; }

constexpr char kSegmentName[] = "bench-frames";
// A float32 512x512 frame: a format and shape make the reply as large as a typical one.
const CreateOptions kSegmentOptions{.size = 0, .format = "f", .shape = {512, 512}};

// What to stop and remove if the run is interrupted; read by the signal handler.
volatile sig_atomic_t g_daemon_pid = -1;
volatile sig_atomic_t g_echo_pid = -1;
char g_daemon_dir[256];  // DaemonProcess's temporary directory
char g_daemon_log[300];  // and the log file in it

void OnFatalSignal(int signo) {
  // SIGTERM lets the daemon unlink its segments and socket itself; wait for it so /dev/shm is
  // clean, then remove what DaemonProcess's destructor would have.
  if (g_echo_pid > 0) ::kill(g_echo_pid, SIGKILL);
  if (g_daemon_pid > 0) {
    ::kill(g_daemon_pid, SIGTERM);
    ::waitpid(g_daemon_pid, nullptr, 0);
    ::unlink(g_daemon_log);
    ::rmdir(g_daemon_dir);
  }
  ::_exit(128 + signo);
}

// A forked process on the other end of a socketpair that answers every `request`-byte message
// with a `reply`-byte one, then (if `oneway` > 0) reads a `oneway`-byte message it does not answer,
// all with blocking reads and writes; it exits when the socket closes.
class EchoPeer {
 public:
  EchoPeer(size_t request, size_t reply, size_t oneway, int cpu) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return;
    pid_t pid = ::fork();
    if (pid < 0) {
      ::close(fds[0]);
      ::close(fds[1]);
      return;
    }
    if (pid == 0) {
      // The parent cleans up on these; the peer just dies (it also sees end-of-file).
      for (int signo : {SIGINT, SIGTERM, SIGHUP}) ::signal(signo, SIG_DFL);
      bench::PinTo(cpu);
      ::close(fds[0]);
      std::vector<std::byte> in(request), out(reply, std::byte{0x5A}), last(oneway);
      while (ReadAll(fds[1], in.data(), in.size()) && WriteAll(fds[1], out.data(), out.size()) &&
             (oneway == 0 || ReadAll(fds[1], last.data(), last.size()))) {
      }
      ::_exit(0);
    }
    ::close(fds[1]);
    fd_ = fds[0];
    pid_ = pid;
    g_echo_pid = pid;
  }
  ~EchoPeer() {
    if (fd_ >= 0) ::close(fd_);  // the peer sees end-of-file and exits
    if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
    g_echo_pid = -1;
  }
  EchoPeer(const EchoPeer&) = delete;
  EchoPeer& operator=(const EchoPeer&) = delete;

  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  pid_t pid_ = -1;
};

void BM_RawUnixRoundTrip(benchmark::State& state) {
  const auto request_bytes = static_cast<size_t>(state.range(0));
  const auto reply_bytes = static_cast<size_t>(state.range(1));
  EchoPeer peer(request_bytes, reply_bytes, 0, PeerCpu(state.range(2)));
  if (peer.fd() < 0) {
    state.SkipWithError("cannot start the echo peer");
    return;
  }
  std::vector<std::byte> request(request_bytes, std::byte{0xA5}), reply(reply_bytes);
  for (auto _ : state) {
    if (!WriteAll(peer.fd(), request.data(), request.size()) ||
        !ReadAll(peer.fd(), reply.data(), reply.size())) {
      state.SkipWithError("echo peer went away");
      break;
    }
  }
  state.counters["request_bytes"] = static_cast<double>(request_bytes);
  state.counters["reply_bytes"] = static_cast<double>(reply_bytes);
}

// The message pattern of acquire + release with nothing behind it: a round trip, then a one-way
// message of `send` bytes. The floor for a protocol whose release is a second message.
void BM_RawUnixRoundTripThenSend(benchmark::State& state) {
  const auto request_bytes = static_cast<size_t>(state.range(0));
  const auto reply_bytes = static_cast<size_t>(state.range(1));
  const auto send_bytes = static_cast<size_t>(state.range(2));
  EchoPeer peer(request_bytes, reply_bytes, send_bytes, PeerCpu(state.range(3)));
  if (peer.fd() < 0) {
    state.SkipWithError("cannot start the echo peer");
    return;
  }
  std::vector<std::byte> request(request_bytes, std::byte{0xA5}), reply(reply_bytes),
      oneway(send_bytes, std::byte{0xC3});
  for (auto _ : state) {
    if (!WriteAll(peer.fd(), request.data(), request.size()) ||
        !ReadAll(peer.fd(), reply.data(), reply.size()) ||
        !WriteAll(peer.fd(), oneway.data(), oneway.size())) {
      state.SkipWithError("echo peer went away");
      break;
    }
  }
}

// One daemon and one connected client for all lease benchmarks, with a segment already mapped in
// both modes.
class LeaseFixture {
 public:
  LeaseFixture()
      // The daemon's default log level (info); DaemonProcess alone would log every request.
      : daemon_({"--log-level", "info"}) {
    std::snprintf(g_daemon_dir, sizeof(g_daemon_dir), "%s", daemon_.dir().c_str());
    std::snprintf(g_daemon_log, sizeof(g_daemon_log), "%s/shmleased.log", daemon_.dir().c_str());
    g_daemon_pid = daemon_.pid();
    client_.emplace(daemon_.socket_path());
    client_->Create(kSegmentName, kSegmentOptions);
    // Warm-up leases: the descriptor of each mode is passed and mapped once, then cached.
    client_->Acquire(kSegmentName, Mode::kRead).Release();
    client_->Acquire(kSegmentName, Mode::kWrite).Release();
    info_ = client_->Stat(kSegmentName);
  }

  // Removes the segment and stops the daemon; false (with a message) if anything was left behind.
  bool TearDown() {
    bool ok = true;
    try {
      client_->Remove(kSegmentName);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "lease_bench: cannot remove the segment: %s\n", e.what());
      ok = false;
    }
    client_.reset();
    int status = daemon_.Stop();
    g_daemon_pid = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "lease_bench: shmleased did not exit cleanly:\n%s\n",
                   daemon_.log().c_str());
      ok = false;
    }
    if (!daemon_.ShmObjects().empty()) {
      std::fprintf(stderr, "lease_bench: shared-memory objects were left in /dev/shm\n");
      ok = false;  // DaemonProcess's destructor unlinks them
    }
    return ok;
  }

  Client& client() { return *client_; }
  const SegmentInfo& info() const { return info_; }
  // Moves every thread of shmleased to the CPU of `same_core`; false if it could not.
  bool PlaceDaemon(int64_t same_core) { return bench::PinProcess(daemon_.pid(), PeerCpu(same_core)); }

 private:
  DaemonProcess daemon_;
  std::optional<Client> client_;
  SegmentInfo info_;
};

LeaseFixture* g_fixture = nullptr;

// Places shmleased for a lease benchmark (its only argument, same_core); false after
// SkipWithError.
bool PlaceDaemon(benchmark::State& state) {
  if (g_fixture->PlaceDaemon(state.range(0))) return true;
  state.SkipWithError("cannot pin shmleased's threads");
  return false;
}

// Acquire + Release in `mode`: one round trip plus one one-way send.
void LeaseAcquireRelease(benchmark::State& state, Mode mode) {
  try {
    if (!PlaceDaemon(state)) return;
    Client& client = g_fixture->client();
    client.Acquire(kSegmentName, mode).Release();  // the mapping is cached: no descriptor below
    for (auto _ : state) {
      Lease lease = client.Acquire(kSegmentName, mode);
      benchmark::DoNotOptimize(lease.data().data());
      lease.Release();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void BM_LeaseAcquireRelease(benchmark::State& state) { LeaseAcquireRelease(state, Mode::kRead); }
void BM_LeaseAcquireReleaseWrite(benchmark::State& state) {
  LeaseAcquireRelease(state, Mode::kWrite);
}

// One request and its reply, with a reply as large as an acquire's: the daemon's bare round trip.
void BM_Stat(benchmark::State& state) {
  try {
    if (!PlaceDaemon(state)) return;
    Client& client = g_fixture->client();
    for (auto _ : state) {
      SegmentInfo info = client.Stat(kSegmentName);
      benchmark::DoNotOptimize(info.size);
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace
}  // namespace shmlease

int main(int argc, char** argv) {
  using namespace shmlease;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  struct sigaction action {};
  action.sa_handler = OnFatalSignal;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGHUP, &action, nullptr);

  std::unique_ptr<LeaseFixture> fixture;
  try {
    fixture = std::make_unique<LeaseFixture>();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lease_bench: cannot set up shmleased: %s\n", e.what());
    return 1;
  }
  g_fixture = fixture.get();

  const WireSizes sizes = MeasureWireSizes(fixture->info());
  // This process (its client threads too) on the first CPU; the peers where each row says.
  g_cpus = bench::PickCpus();
  if (!bench::PinProcess(::getpid(), g_cpus.writer)) {
    std::fprintf(stderr, "lease_bench: cannot pin this process to CPU %d\n", g_cpus.writer);
    return 1;
  }
  // With one CPU allowed both placements are the same: the same-core rows only.
  std::vector<int64_t> placements = {0, 1};
  if (g_cpus.writer == g_cpus.reader) placements = {1};
  const auto request = static_cast<int64_t>(sizes.acquire_request);
  const auto reply = static_cast<int64_t>(sizes.acquire_reply);
  const auto release = static_cast<int64_t>(sizes.release_request);
  // The benchmark thread sleeps in recv: wall time, not its CPU time, is the latency.
  auto wall_time = [](benchmark::internal::Benchmark* b) { b->UseRealTime(); };
  // The baseline: the acquire's request and reply sizes. A symmetric 64-byte trip for comparison
  // with other measurements of these machines.
  auto* raw = benchmark::RegisterBenchmark("BM_RawUnixRoundTrip", BM_RawUnixRoundTrip);
  auto* then_send =
      benchmark::RegisterBenchmark("BM_RawUnixRoundTripThenSend", BM_RawUnixRoundTripThenSend);
  std::vector<benchmark::internal::Benchmark*> lease_rows = {
      benchmark::RegisterBenchmark("BM_LeaseAcquireRelease", BM_LeaseAcquireRelease),
      benchmark::RegisterBenchmark("BM_LeaseAcquireReleaseWrite", BM_LeaseAcquireReleaseWrite),
      benchmark::RegisterBenchmark("BM_Stat", BM_Stat)};
  for (int64_t same_core : placements) {
    raw->Args({request, reply, same_core});
    if (same_core == placements.front()) raw->Args({64, 64, same_core});
    then_send->Args({request, reply, release, same_core});
    for (auto* row : lease_rows) row->Arg(same_core);
  }
  wall_time(raw->ArgNames({"request", "reply", "same_core"}));
  wall_time(then_send->ArgNames({"request", "reply", "send", "same_core"}));
  for (auto* row : lease_rows) wall_time(row->ArgName("same_core"));
  benchmark::AddCustomContext("client_cpu", std::to_string(g_cpus.writer));
  benchmark::AddCustomContext("peer_cpu", std::to_string(g_cpus.reader));
  benchmark::AddCustomContext("acquire_request_bytes", std::to_string(sizes.acquire_request));
  benchmark::AddCustomContext("acquire_reply_bytes", std::to_string(sizes.acquire_reply));
  benchmark::AddCustomContext("release_request_bytes", std::to_string(sizes.release_request));

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  g_fixture = nullptr;
  bool clean = fixture->TearDown();
  fixture.reset();
  return clean ? 0 : 1;
}
