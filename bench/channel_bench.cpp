// Issues 4 and 13: frame channel hand-off latency, against raw baselines and iceoryx, all measured
// in the same run.
//
//   channel_bench [iterations [rounds]]
//
// One-way latency, publish -> the reader has the frame, between two processes (fork), frames
// 200 us apart (bench/oneway.hpp), 64 B and 8 MiB frames, in two modes:
//  - blocked reader: asleep when the frame comes. shmlease's Reader, iceoryx's subscriber in a
//    WaitSet; baseline: a raw FUTEX_WAKE -> FUTEX_WAIT hand-off on a shared word;
//  - busy-poll reader: shmlease's Reader with busy_poll, iceoryx's subscriber spinning on take();
//    baseline: a raw spin on a shared word.
// A frame is not copied by either system, so sizes should not matter. The writer runs on the first
// allowed CPU and the reader on the second, for every contender. `iterations` frames per contender
// (default 2000), taken in `rounds` (default 3) that alternate the contenders, so a burst of load
// from elsewhere hits them alike. iceoryx (bench/iceoryx_peer.hpp) is measured when channel_bench
// was built with it (CMake found iceoryx_posh and iox-roudi). Prints a Markdown table and, last,
// one JSON line.
#include <linux/futex.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon_process.hpp"
#include "oneway.hpp"
#include "shmlease/channel.hpp"
#ifdef SHMLEASE_WITH_ICEORYX
#include "iceoryx_peer.hpp"
#endif

namespace {

using namespace std::chrono_literals;
using shmlease::bench::CpuPair;
using shmlease::bench::kFrameGap;
using shmlease::bench::NowNs;
using shmlease::bench::OneWaySamples;
using shmlease::bench::OneWayStats;
using shmlease::bench::SampleSheet;

constexpr uint32_t kSmall = 64;
constexpr uint32_t kLarge = 8u << 20;

// Raw baseline: the writer stamps, bumps the word and FUTEX_WAKEs (spin == false), or only
// stores (spin == true, the reader spins on the word).
bool RawHandoff(int n, bool spin, CpuPair cpus, OneWaySamples& out) {
  SampleSheet* sh = SampleSheet::Map();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    shmlease::bench::PinTo(cpus.reader);
    // Counts by the word's value, so a hand-off missed while descheduled is skipped, not waited
    // for forever.
    uint32_t seen = 0;
    sh->ready.store(1);
    while (seen < static_cast<uint32_t>(n)) {
      uint32_t now_word;
      if (spin) {
        while ((now_word = sh->word.load(std::memory_order_acquire)) == seen) {
        }
      } else {
        while ((now_word = sh->word.load()) == seen) {
          syscall(SYS_futex, &sh->word, FUTEX_WAIT, seen, nullptr, nullptr, 0);
        }
      }
      int64_t t = NowNs();
      if (now_word == seen + 1) sh->Add(t - sh->stamp.load());
      seen = now_word;
    }
    _exit(0);
  }
  while (sh->ready.load() == 0) std::this_thread::yield();
  for (int i = 0; i < n; ++i) {
    std::this_thread::sleep_for(kFrameGap);
    sh->stamp.store(NowNs());
    sh->word.fetch_add(1, std::memory_order_release);
    if (!spin) syscall(SYS_futex, &sh->word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  }
  sh->sent.store(n);
  bool ok = shmlease::bench::WaitChild(pid, spin ? "raw spin reader" : "raw futex reader");
  if (ok) shmlease::bench::AppendSamples(out, *sh);
  SampleSheet::Unmap(sh);
  return ok;
}

// Channel hand-off: the child reads (the frame's timestamp is the writer's publish stamp).
bool ChannelHandoff(const std::string& socket, int n, uint32_t bytes, bool busy_poll,
                    const std::string& name, CpuPair cpus, OneWaySamples& out) {
  SampleSheet* sh = SampleSheet::Map();
  shmlease::Client c(socket);
  shmlease::Channel ch(c, name, {.format = "B", .shape = {bytes}, .slots = 4});
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    shmlease::bench::PinTo(cpus.reader);
    shmlease::Client cc(socket);
    shmlease::Channel cch(cc, name);
    shmlease::Reader r = cch.reader({.busy_poll = busy_poll});
    sh->ready.store(1);
    for (int i = 0; i < n; ++i) {
      shmlease::Frame f = r.Next(10s);
      sh->Add(NowNs() - f.timestamp_ns());
    }
    _exit(0);
  }
  shmlease::Writer w = ch.writer();
  while (sh->ready.load() == 0) std::this_thread::yield();
  for (int i = 0; i < n; ++i) {
    shmlease::Frame f = w.Claim(10s);
    std::this_thread::sleep_for(kFrameGap);
    w.Publish(f);
  }
  sh->sent.store(n);
  bool ok = shmlease::bench::WaitChild(pid, "channel reader");
  w.Close();
  shmlease::Channel::Remove(c, name);
  if (ok) shmlease::bench::AppendSamples(out, *sh);
  SampleSheet::Unmap(sh);
  return ok;
}

std::vector<double> LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::vector<double> v(3, NAN);
  in >> v[0] >> v[1] >> v[2];
  return v;
}

// One row of the table: what ran, and which ratio the issue asks about.
struct Contender {
  std::string key;    // in the JSON
  std::string label;  // in the table
  OneWaySamples samples;
  OneWayStats stats;
  bool failed = false;
};

struct Ratio {
  std::string key, text;  // "shmlease_blocked_vs_raw_futex", "x raw futex"
  std::string over, under;
  std::string target;  // as written in issue 13
  double limit;        // ratio <= limit (or >= limit when at_least)
  bool at_least;
};

// "-" for NaN: a ratio with a row that failed or was not built.
std::string Fmt(double v, const char* f) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 2000;
  n = std::clamp(n, 20, shmlease::bench::kMaxSamples);
  int rounds = argc > 2 ? std::atoi(argv[2]) : 3;
  rounds = std::clamp(rounds, 1, n / 10);
  const std::vector<double> load_start = LoadAverage();

  shmlease::testing::DaemonProcess daemon;
  const std::string& sock = daemon.socket_path();
  std::string iceoryx_error;
  bool iceoryx_built = false;
#ifdef SHMLEASE_WITH_ICEORYX
  iceoryx_built = true;
  // Started before the pinning below, like shmleased: neither is on the hand-off path.
  auto iceoryx = std::make_unique<shmlease::bench::IceoryxPeer>(std::vector<uint32_t>{kSmall, kLarge});
  if (!iceoryx->ok()) iceoryx_error = iceoryx->error();
#else
  iceoryx_error = "not built: CMake found no iceoryx_posh (Debian libiceoryx-posh-dev) or iox-roudi";
#endif
  const CpuPair cpus = shmlease::bench::PickCpus();
  shmlease::bench::PinTo(cpus.writer);

  std::vector<Contender> all = {
      {"raw_futex", "raw futex wake -> blocked waiter (baseline)"},
      {"shmlease_blocked_64B", "shmlease, 64 B -> blocked reader"},
      {"shmlease_blocked_8MiB", "shmlease, 8 MiB -> blocked reader"},
      {"iceoryx_waitset_64B", "iceoryx, 64 B -> subscriber in a WaitSet"},
      {"iceoryx_waitset_8MiB", "iceoryx, 8 MiB -> subscriber in a WaitSet"},
      {"raw_spin", "raw spin on a shared word (baseline)"},
      {"shmlease_poll_64B", "shmlease, 64 B -> busy-poll reader"},
      {"shmlease_poll_8MiB", "shmlease, 8 MiB -> busy-poll reader"},
      {"iceoryx_poll_64B", "iceoryx, 64 B -> subscriber spinning on take()"},
      {"iceoryx_poll_8MiB", "iceoryx, 8 MiB -> subscriber spinning on take()"},
  };
  auto find = [&](const std::string& key) -> Contender& {
    return *std::find_if(all.begin(), all.end(), [&](const Contender& c) { return c.key == key; });
  };

  for (int round = 0; round < rounds; ++round) {
    const int per = n / rounds + (round < n % rounds ? 1 : 0);
    const std::string r = "-r" + std::to_string(round);
    for (Contender& c : all) {
      if (c.failed) continue;
      const bool poll = c.key.find("_poll_") != std::string::npos || c.key == "raw_spin";
      const uint32_t bytes = c.key.find("8MiB") != std::string::npos ? kLarge : kSmall;
      bool ok = true;
      if (c.key.rfind("raw_", 0) == 0) {
        ok = RawHandoff(per, poll, cpus, c.samples);
      } else if (c.key.rfind("shmlease_", 0) == 0) {
        ok = ChannelHandoff(sock, per, bytes, poll, "bench-" + c.key + r, cpus, c.samples);
      } else {
#ifdef SHMLEASE_WITH_ICEORYX
        ok = iceoryx->ok() &&
             iceoryx->OneWay(per, bytes,
                             poll ? shmlease::bench::IceoryxWait::kBusyPoll
                                  : shmlease::bench::IceoryxWait::kWaitSet,
                             cpus, c.samples);
        if (!ok && iceoryx_error.empty()) iceoryx_error = iceoryx->error();
#else
        ok = false;
#endif
      }
      if (!ok) c.failed = true;
    }
  }
#ifdef SHMLEASE_WITH_ICEORYX
  iceoryx->Stop();
#endif
  daemon.Stop();
  for (Contender& c : all) c.stats = shmlease::bench::Summarize(c.samples.ns);
  const std::vector<double> load_end = LoadAverage();

  // The ratios issue 13 names, with its targets (after the channel redesign).
  const std::vector<Ratio> ratios = {
      {"shmlease_blocked_vs_raw_futex", "x raw futex", "shmlease_blocked_64B", "raw_futex",
       "<= 1.3x", 1.3, false},
      {"shmlease_blocked_8MiB_vs_64B", "x 64 B", "shmlease_blocked_8MiB", "shmlease_blocked_64B",
       "within 10%", 1.1, false},
      {"iceoryx_vs_shmlease_blocked_64B", "x shmlease", "iceoryx_waitset_64B",
       "shmlease_blocked_64B", ">= 2.5x", 2.5, true},
      {"iceoryx_vs_shmlease_blocked_8MiB", "x shmlease", "iceoryx_waitset_8MiB",
       "shmlease_blocked_8MiB", ">= 2.5x", 2.5, true},
      {"shmlease_poll_vs_raw_spin", "x raw spin", "shmlease_poll_64B", "raw_spin", "<= 1.5x", 1.5,
       false},
      {"shmlease_poll_8MiB_vs_64B", "x 64 B", "shmlease_poll_8MiB", "shmlease_poll_64B",
       "within 10%", 1.1, false},
      {"iceoryx_vs_shmlease_poll_64B", "x shmlease", "iceoryx_poll_64B", "shmlease_poll_64B",
       ">= 2.5x", 2.5, true},
      {"iceoryx_vs_shmlease_poll_8MiB", "x shmlease", "iceoryx_poll_8MiB", "shmlease_poll_8MiB",
       ">= 2.5x", 2.5, true},
  };
  // For context, no target: each contender against the raw baseline of its mode.
  auto baseline_of = [](const std::string& key) {
    return key.find("_poll_") != std::string::npos ? "raw_spin" : "raw_futex";
  };
  auto value = [&](const std::string& over, const std::string& under) {
    const Contender &a = find(over), &b = find(under);
    return a.stats.samples > 0 && b.stats.samples > 0 ? a.stats.p50_us / b.stats.p50_us : NAN;
  };

  std::printf("| measurement (one-way, %d hand-offs in %d rounds, %lld us apart; writer on CPU %d, "
              "reader on CPU %d) | p50 us | p99 us | frames lost | x raw baseline (p50) | "
              "ratio (p50) | target | met |\n",
              n, rounds, static_cast<long long>(kFrameGap.count()), cpus.writer, cpus.reader);
  std::printf("|---|---:|---:|---:|---:|---:|---|---|\n");
  std::map<std::string, double> ratio_values;
  for (const Contender& c : all) {
    std::string p50 = "-", p99 = "-", base = "1.00", ratio, target, met;
    if (c.stats.samples > 0) {
      p50 = Fmt(c.stats.p50_us, c.stats.p50_us < 10 ? "%.2f" : "%.1f");
      p99 = Fmt(c.stats.p99_us, c.stats.p99_us < 10 ? "%.2f" : "%.1f");
    } else if (c.key.rfind("iceoryx_", 0) == 0) {
      p50 = iceoryx_built ? "failed" : "not built";
    } else {
      p50 = "failed";
    }
    if (c.key.rfind("raw_", 0) != 0) base = Fmt(value(c.key, baseline_of(c.key)), "%.2f");
    for (const Ratio& q : ratios) {
      if (q.over != c.key) continue;
      const double v = value(q.over, q.under);
      ratio_values[q.key] = v;
      ratio = Fmt(v, "%.2f") + " " + q.text;
      target = q.target;
      met = std::isnan(v) ? "-" : (q.at_least ? v >= q.limit : v <= q.limit) ? "yes" : "NO";
    }
    const std::string lost = c.stats.samples > 0 ? std::to_string(c.samples.lost) : "-";
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", c.label.c_str(), p50.c_str(),
                p99.c_str(), lost.c_str(), base.c_str(), ratio.c_str(), target.c_str(), met.c_str());
  }
  if (!iceoryx_error.empty()) std::fprintf(stderr, "channel_bench: iceoryx: %s\n", iceoryx_error.c_str());

  // The JSON line: NaN (a failed or missing contender) becomes null.
  auto num = [](double v, const char* f) { return std::isnan(v) ? std::string("null") : Fmt(v, f); };
  std::string json = "{\"iterations\": " + std::to_string(n) + ", \"rounds\": " +
                     std::to_string(rounds) + ", \"gap_us\": " + std::to_string(kFrameGap.count()) +
                     ", \"cpus\": {\"writer\": " + std::to_string(cpus.writer) +
                     ", \"reader\": " + std::to_string(cpus.reader) + "}";
  auto load_json = [&](const std::vector<double>& l) {
    return "[" + num(l[0], "%.2f") + ", " + num(l[1], "%.2f") + ", " + num(l[2], "%.2f") + "]";
  };
  json += ", \"load_start\": " + load_json(load_start) + ", \"load_end\": " + load_json(load_end);
  std::string escaped;
  for (char ch : iceoryx_error.substr(0, 2000)) {
    if (ch == '"' || ch == '\\') escaped += '\\';
    if (ch == '\n') {
      escaped += "\\n";
    } else if (static_cast<unsigned char>(ch) >= 0x20) {
      escaped += ch;
    }
  }
#ifdef SHMLEASE_WITH_ICEORYX
  const std::string version = std::string("\"") + shmlease::bench::IceoryxPeer::Version() + "\"";
#else
  const std::string version = "null";
#endif
  json += ", \"iceoryx\": {\"built\": " + std::string(iceoryx_built ? "true" : "false") +
          ", \"version\": " + version + ", \"error\": " +
          (iceoryx_error.empty() ? std::string("null") : "\"" + escaped + "\"") + "}";
  json += ", \"results\": {";
  for (size_t i = 0; i < all.size(); ++i) {
    const Contender& c = all[i];
    json += (i ? ", \"" : "\"") + c.key + "\": ";
    json += c.stats.samples > 0 ? "{\"p50_us\": " + Fmt(c.stats.p50_us, "%.3f") + ", \"p99_us\": " +
                                      Fmt(c.stats.p99_us, "%.3f") +
                                      ", \"samples\": " + std::to_string(c.stats.samples) +
                                      ", \"lost\": " + std::to_string(c.samples.lost) + "}"
                                : std::string("null");
  }
  json += "}, \"ratios\": {";
  for (size_t i = 0; i < ratios.size(); ++i) {
    json += (i ? ", \"" : "\"") + ratios[i].key + "\": " + num(ratio_values[ratios[i].key], "%.3f");
  }
  json += "}}";
  std::printf("%s\n", json.c_str());
  const bool shmlease_failed = std::any_of(all.begin(), all.end(), [](const Contender& c) {
    return c.failed && c.key.rfind("iceoryx_", 0) != 0;
  });
  return shmlease_failed ? 1 : 0;
}
