// Soak (docs/RELIABILITY.md, "Soak"): 64 clients loop create / acquire / write / release / remove /
// stat / list against one daemon while the test samples the daemon's resident memory (VmRSS) and
// open descriptors every second. After a warm-up both must stay flat, and once the clients are
// gone the descriptor count is back where it started.
//   SHMLEASE_SOAK_SECONDS (45)  how long the clients loop (by hand: 600, 3600, ...)
//   SHMLEASE_SOAK_CLIENTS (64)  client threads, one connection each
//   SHMLEASE_SOAK_CSV           where the samples go (default soak_samples.csv, in the working
//                               directory: the build directory under CTest)
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.hpp"
#include "env_or.hpp"
#include "shmlease/client.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

namespace shmlease {
namespace {

using namespace std::chrono_literals;
using testing::DaemonProcess;
using testing::EnvOr;
using Clock = std::chrono::steady_clock;

uint64_t RssKiB(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

struct Sample {
  double t_s;
  uint64_t rss_kib;
  size_t fds;
  uint64_t ops;
};

constexpr int kShared = 8;

// One client's loop: every round leases a shared segment to read and its own to write; every
// 8th round also creates, leases, writes and removes a fresh segment (every other one removed
// while still leased), and asks for stats or the list now and then.
void ClientLoop(const std::string& socket, int t, const std::atomic<bool>& stop,
                std::atomic<uint64_t>& ops, std::atomic<uint64_t>& failures, std::string& error) {
  try {
    Client c(socket);
    const std::string slot = "slot-" + std::to_string(t);
    c.Create(slot, {.format = "I", .shape = {1024}});
    for (uint64_t round = 0; !stop.load(std::memory_order_relaxed); ++round) {
      {
        Lease r = c.Acquire("shared-" + std::to_string(round % kShared), Mode::kRead);
        Lease w = c.Acquire(slot, Mode::kWrite);
        auto out = w.as_writable<uint32_t>();
        out[round % out.size()] = static_cast<uint32_t>(r.data()[round % r.size()]) + 1;
      }
      ops += 3;
      if (round % 8 == 0) {
        std::string name = "churn-" + std::to_string(t) + "-" + std::to_string(round);
        c.Create(name, 64 << 10);
        Lease w = c.Acquire(name, Mode::kWrite);
        std::fill(w.writable_data().begin(), w.writable_data().end(), std::byte{0x3C});
        if (round % 16 == 0) {
          c.Remove(name);
          w.Release();
        } else {
          w.Release();
          c.Remove(name);
        }
        ops += 4;
      }
      if (round % 32 == 0) {
        c.Stat(slot);
        ops += 1;
      }
      if (round % 256 == 0) {
        c.List();
        c.Stats();
        ops += 2;
      }
      std::this_thread::sleep_for(200us);  // leaves the machine usable; still thousands of ops/s
    }
    c.Remove(slot);
  } catch (const std::exception& e) {
    if (failures++ == 0) error = e.what();
  }
}

TEST(Soak, DaemonMemoryAndDescriptorsStayFlatUnderLoopingClients) {
  const uint64_t seconds = std::max<uint64_t>(8, EnvOr("SHMLEASE_SOAK_SECONDS", 45));
  const int clients = static_cast<int>(EnvOr("SHMLEASE_SOAK_CLIENTS", 64));
  std::string csv_path = std::getenv("SHMLEASE_SOAK_CSV") != nullptr
                             ? std::getenv("SHMLEASE_SOAK_CSV")
                             : "soak_samples.csv";
  DaemonProcess daemon({"--log-level", "info"});
  Client checker(daemon.socket_path());
  for (int s = 0; s < kShared; ++s) checker.Create("shared-" + std::to_string(s), 16 << 10);
  const size_t fds_before = daemon.OpenDescriptors();
  const uint64_t rss_before = RssKiB(daemon.pid());

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0}, failures{0};
  std::vector<std::string> errors(static_cast<size_t>(clients));
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back(ClientLoop, daemon.socket_path(), t, std::cref(stop), std::ref(ops),
                         std::ref(failures), std::ref(errors[static_cast<size_t>(t)]));
  }

  std::vector<Sample> samples;
  const std::string log_path = daemon.dir() + "/shmleased.log";
  auto t0 = Clock::now();
  for (uint64_t second = 1; second <= seconds && failures.load() == 0; ++second) {
    std::this_thread::sleep_until(t0 + std::chrono::seconds(second));
    double t = std::chrono::duration<double>(Clock::now() - t0).count();
    samples.push_back({t, RssKiB(daemon.pid()), daemon.OpenDescriptors(), ops.load()});
    // An hours-long run logs gigabytes of creates and removes: keep the file small (the daemon
    // appends, so it writes on at the new end).
    std::error_code ec;
    if (std::filesystem::file_size(log_path, ec) > (256u << 20)) {
      std::filesystem::resize_file(log_path, 0, ec);
    }
  }
  stop = true;
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0u) << "a client failed: "
                                 << *std::find_if(errors.begin(), errors.end(),
                                                  [](const std::string& e) { return !e.empty(); });
  ASSERT_GE(samples.size(), 8u);

  // Once the clients are gone, the daemon holds the descriptors it held before them.
  size_t fds_after = 0;
  auto deadline = Clock::now() + 10s;
  while ((fds_after = daemon.OpenDescriptors()) != fds_before && Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(fds_after, fds_before) << "descriptors leaked";
  DaemonStats stats = checker.Stats();
  EXPECT_EQ(stats.leases, 0u);
  EXPECT_EQ(stats.segments, static_cast<uint32_t>(kShared));

  {
    std::ofstream csv(csv_path);
    csv << "seconds,rss_kib,fds,ops\n";
    for (const Sample& s : samples)
      csv << s.t_s << ',' << s.rss_kib << ',' << s.fds << ',' << s.ops << '\n';
  }
  // Flat: after a warm-up (the first fifth, at least 5 s), the last quarter of the samples peaks
  // no higher than the first quarter did, give or take a small slack.
  size_t warm = std::max<size_t>(5, samples.size() / 5);
  std::vector<Sample> steady(
      samples.begin() + static_cast<long>(std::min(warm, samples.size() - 4)), samples.end());
  size_t quarter = std::max<size_t>(1, steady.size() / 4);
  auto peak = [](auto from, auto to, auto field) {
    uint64_t m = 0;
    for (auto it = from; it != to; ++it) m = std::max<uint64_t>(m, field(*it));
    return m;
  };
  auto rss = [](const Sample& s) { return s.rss_kib; };
  auto fds = [](const Sample& s) { return static_cast<uint64_t>(s.fds); };
  uint64_t rss_first = peak(steady.begin(), steady.begin() + static_cast<long>(quarter), rss);
  uint64_t rss_last = peak(steady.end() - static_cast<long>(quarter), steady.end(), rss);
  uint64_t fds_first = peak(steady.begin(), steady.begin() + static_cast<long>(quarter), fds);
  uint64_t fds_last = peak(steady.end() - static_cast<long>(quarter), steady.end(), fds);
  uint64_t rss_slack = std::max<uint64_t>(1024, rss_first / 20);  // 1 MiB or 5 %
  uint64_t fds_max = peak(samples.begin(), samples.end(), fds);
  double total_s = samples.back().t_s;
  std::printf("soak: %d clients for %.0f s, %llu requests (%.0f/s), 0 failures\n", clients, total_s,
              static_cast<unsigned long long>(samples.back().ops), samples.back().ops / total_s);
  std::printf(
      "soak: daemon VmRSS %llu KiB before the clients, steady first quarter peak %llu KiB, "
      "last quarter peak %llu KiB (slack %llu KiB)\n",
      static_cast<unsigned long long>(rss_before), static_cast<unsigned long long>(rss_first),
      static_cast<unsigned long long>(rss_last), static_cast<unsigned long long>(rss_slack));
  std::printf(
      "soak: daemon fds %zu before, peak %llu during (first quarter %llu, last quarter "
      "%llu), %zu after the clients left\n",
      fds_before, static_cast<unsigned long long>(fds_max),
      static_cast<unsigned long long>(fds_first), static_cast<unsigned long long>(fds_last),
      fds_after);
  std::printf("soak: samples in %s\n", std::filesystem::absolute(csv_path).c_str());
  // Between samples a client holds one or no fresh segment (two descriptors): that much wobble.
  EXPECT_LE(fds_last, fds_first + static_cast<uint64_t>(clients) * 2) << "descriptors grow";
  if (kSanitized) {
    // The sanitizers' quarantine and shadow memory grow the RSS on their own: not the daemon's.
    std::printf("soak: sanitizer build: the RSS is reported, not checked\n");
  } else {
    EXPECT_LE(rss_last, rss_first + rss_slack) << "the daemon's memory grows; see " << csv_path;
  }
  for (int s = 0; s < kShared; ++s) checker.Remove("shared-" + std::to_string(s));
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_TRUE(daemon.ShmObjects().empty());
}

}  // namespace
}  // namespace shmlease
