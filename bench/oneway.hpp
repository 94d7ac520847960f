// One-way latency, the same way for every contender of channel_bench (shmlease channels, the raw
// futex and spin baselines, iceoryx): the writer stamps CLOCK_MONOTONIC just before it hands a
// frame over, the reader in another process stamps once it holds the frame, frames 200 us apart.
// Owns nothing global: SampleSheet is an anonymous shared mapping its creator unmaps (Unmap);
// a forked reader writes its samples into it before it exits.
#pragma once

#include <dirent.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

namespace shmlease::bench {

inline int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// Between two frames: long enough that a reader that sleeps is asleep when the next one comes.
inline constexpr auto kFrameGap = std::chrono::microseconds(200);
inline constexpr int kMaxSamples = 100000;

// Shared between the writer and the reader of one measurement (an anonymous MAP_SHARED mapping
// made before the fork). The reader fills samples[0, count); word/stamp/ready are for the raw
// baselines and for start-up hand-shakes; sent counts the frames the writer handed over, done_*
// say that one side has finished.
struct SampleSheet {
  std::atomic<uint32_t> word{0};
  std::atomic<int64_t> stamp{0};
  std::atomic<uint32_t> ready{0};
  std::atomic<uint32_t> writer_done{0};
  std::atomic<uint32_t> reader_done{0};
  std::atomic<int> sent{0};
  int count = 0;
  int64_t samples[kMaxSamples];

  static SampleSheet* Map() {
    void* p = mmap(nullptr, sizeof(SampleSheet), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    return new (p) SampleSheet();
  }
  static void Unmap(SampleSheet* sheet) { munmap(sheet, sizeof(SampleSheet)); }
  void Add(int64_t ns) {
    if (count < kMaxSamples) samples[count++] = ns;
  }
};

struct OneWayStats {
  double p50_us = 0, p99_us = 0;
  int samples = 0;
};

// Samples of one contender, pooled over the rounds of a run.
inline OneWayStats Summarize(std::vector<int64_t> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return {v[n / 2] / 1e3, v[n * 99 / 100] / 1e3, static_cast<int>(n)};
}

// Every sample of one contender, and the frames its readers never saw (sent, not received).
struct OneWaySamples {
  std::vector<int64_t> ns;
  int64_t lost = 0;
};

inline void AppendSamples(OneWaySamples& to, const SampleSheet& sheet) {
  to.ns.insert(to.ns.end(), sheet.samples, sheet.samples + sheet.count);
  to.lost += std::max(0, sheet.sent.load() - sheet.count);
}

// The two CPUs every contender runs on: the writer on the first allowed CPU, the reader on the
// second (the same CPU for both when only one is allowed: then the busy-poll rows mean little).
struct CpuPair {
  int writer = -1, reader = -1;
};

inline CpuPair PickCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return {};
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  if (cpus.empty()) return {};
  return {cpus[0], cpus.size() > 1 ? cpus[1] : cpus[0]};
}

// Pins the calling process (its calling thread and the threads it creates afterwards) to `cpu`;
// -1 leaves it where it is.
inline void PinTo(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) std::perror("sched_setaffinity");
}

// Pins every thread process `pid` has now (and those it creates afterwards) to `cpu`; false if
// one could not be pinned. -1 leaves it where it is.
inline bool PinProcess(pid_t pid, int cpu) {
  if (cpu < 0) return true;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return false;
  bool ok = true;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const pid_t tid = static_cast<pid_t>(std::atoi(e->d_name));
    if (sched_setaffinity(tid, sizeof(set), &set) != 0) ok = false;
  }
  closedir(dir);
  return ok;
}

// Waits for a forked reader or writer; false (and a message naming `what`) unless it exited 0.
inline bool WaitChild(pid_t pid, const char* what) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) {
    std::perror("waitpid");
    return false;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "%s failed (wait status %d)\n", what, status);
    return false;
  }
  return true;
}

}  // namespace shmlease::bench
