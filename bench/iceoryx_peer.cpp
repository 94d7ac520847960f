#include "iceoryx_peer.hpp"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/mepoo/chunk_settings.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/popo/wait_set.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"
#include "iceoryx_versions.hpp"

namespace shmlease::bench {
namespace {

using namespace std::chrono_literals;

// iceoryx 2.0 fixes these names: one RouDi per machine. Ours serialises the bench runs that
// start one (two worktrees' smoke tests, a full report) instead of letting the second fail.
constexpr const char* kLockPath = "/tmp/shmlease-bench-iceoryx.lock";
constexpr const char* kRoudiLock = "/tmp/roudi.lock";
constexpr const char* kRoudiFiles[] = {"/dev/shm/iceoryx_mgmt", "/tmp/roudi", "/tmp/roudi.lock",
                                       "/tmp/iox-unique-roudi.lock"};
constexpr const char* kReadyLine = "RouDi is ready for clients";
constexpr auto kStepTimeout = 10s;
constexpr uint64_t kQueueCapacity = 4;

// The one peer whose RouDi an exit() or a fatal signal of this process must stop.
IceoryxPeer* g_active = nullptr;
volatile pid_t g_roudi_pid = -1;
volatile pid_t g_owner = -1;
// What a fatal signal's handler removes (unlink and rmdir are async-signal-safe): the running
// measurement's processes and their sockets in /tmp, the config and log, their directory.
volatile pid_t g_ends[2] = {-1, -1};
char g_files[6][256];
volatile int g_file_count = 0;
char g_dir[256];

void StopActiveAtExit() {
  if (g_active != nullptr) g_active->Stop();
}

void CopyPath(char* to, const std::string& from) {
  std::snprintf(to, 256, "%s", from.c_str());
}

// Async-signal-safe: stops the measurement and RouDi (which removes its shared memory on
// SIGTERM), removes our files, then dies of the signal as it would have.
void OnFatalSignal(int signo) {
  if (getpid() == g_owner) {
    for (pid_t end : g_ends) {
      if (end > 0) kill(end, SIGKILL);
    }
    if (g_roudi_pid > 0) {
      kill(g_roudi_pid, SIGTERM);
      const timespec tick{0, 10'000'000};
      for (int i = 0; i < 300 && waitpid(g_roudi_pid, nullptr, WNOHANG) == 0; ++i) {
        nanosleep(&tick, nullptr);
      }
    }
    for (int i = 0; i < g_file_count; ++i) unlink(g_files[i]);
    if (g_dir[0] != '\0') rmdir(g_dir);
  }
  signal(signo, SIG_DFL);
  raise(signo);
}

// The shm segment RouDi makes for its default mempools is named after the writer group, which is
// the group of the process that started it.
std::string SegmentFile() {
  const group* g = getgrgid(getegid());
  return g != nullptr ? std::string("/dev/shm/") + g->gr_name : "";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Before a run, under the lock: what runs killed by SIGKILL left, found by their dead pid (the
// runtimes' sockets in /tmp and our config directories).
void RemoveLeftovers() {
  namespace fs = std::filesystem;
  auto dead = [](const std::string& name, const std::string& prefix) {
    if (name.rfind(prefix, 0) != 0) return false;
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (pid <= 0) return false;
    if (kill(static_cast<pid_t>(pid), 0) != 0) return errno == ESRCH;
    // A zombie nobody has reaped yet is dead too.
    const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
    const size_t paren = stat.rfind(')');
    return paren != std::string::npos && stat.compare(paren, 3, ") Z") == 0;
  };
  std::error_code ec;
  for (const fs::path& dir : {fs::path("/tmp"), fs::temp_directory_path(ec)}) {
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (dead(name, "shmlease-bench-pub-") || dead(name, "shmlease-bench-sub-") ||
          dead(name, "shmlease-iceoryx-")) {
        fs::remove_all(entry.path(), ec);
      }
    }
  }
}

iox::capro::IdString_t Id(const std::string& s) {
  return iox::capro::IdString_t(iox::cxx::TruncateToCapacity, s.c_str());
}

// Both ends of one measurement. They exit through exit() so that the iceoryx runtime's destructor
// deregisters them from RouDi (RouDi would otherwise try to terminate them when it stops).
struct Ends {
  std::string service;
  int n;
  uint32_t payload;
  IceoryxWait wait;
  SampleSheet* sheet;
};

// The payload starts with the publisher's stamp and the frame's sequence number.
struct FrameHead {
  int64_t stamp_ns;
  int64_t seq;
};

// Receives until frame n-1, or until the publisher has finished and nothing more came for
// 100 ms. With the blocking queue below no frame is dropped; any that were would be counted
// (bench/oneway.hpp: sent - received), not waited for.
int RunSubscriber(const std::string& app, const Ends& e) {
  iox::runtime::PoshRuntime::initRuntime(iox::RuntimeName_t(iox::cxx::TruncateToCapacity, app.c_str()));
  // Like the shmlease channel it is compared with (4 slots, block policy): a full queue makes
  // the publisher wait. iceoryx's default (DISCARD_OLDEST_DATA) drops the oldest frames whenever
  // the subscriber is descheduled for longer than its queue covers, as on a busy 2-core VM.
  iox::popo::SubscriberOptions options;
  options.queueCapacity = kQueueCapacity;
  options.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
  iox::popo::UntypedSubscriber sub({Id("shmlease-bench"), Id("frames"), Id(e.service)}, options);
  iox::popo::WaitSet<1> waitset;
  if (e.wait == IceoryxWait::kWaitSet &&
      waitset.attachState(sub, iox::popo::SubscriberState::HAS_DATA).has_error()) {
    std::fprintf(stderr, "iceoryx subscriber: attaching to the WaitSet failed\n");
    return 1;
  }
  const int64_t setup_deadline = NowNs() + std::chrono::nanoseconds(kStepTimeout).count();
  while (sub.getSubscriptionState() != iox::SubscribeState::SUBSCRIBED) {
    if (NowNs() > setup_deadline) {
      std::fprintf(stderr, "iceoryx subscriber: not subscribed within 10 s\n");
      return 1;
    }
    std::this_thread::sleep_for(1ms);
  }
  e.sheet->ready.store(1);
  int64_t last_seq = -1;
  uint32_t misses = 0;
  int64_t last_frame = NowNs();
  while (last_seq < e.n - 1) {
    if (e.wait == IceoryxWait::kWaitSet) waitset.timedWait(iox::units::Duration::fromMilliseconds(20));
    bool any = false;
    for (auto taken = sub.take(); !taken.has_error(); taken = sub.take()) {
      const int64_t now = NowNs();
      const void* chunk = taken.value();
      const FrameHead head = *static_cast<const FrameHead*>(chunk);
      sub.release(chunk);
      e.sheet->Add(now - head.stamp_ns);
      last_seq = std::max(last_seq, head.seq);
      last_frame = now;
      any = true;
    }
    if (any || (e.wait == IceoryxWait::kBusyPoll && ++misses % 4096 != 0)) continue;
    const int64_t quiet = NowNs() - last_frame;
    if (e.sheet->writer_done.load() != 0 && quiet > 100'000'000) break;
    if (quiet > std::chrono::nanoseconds(kStepTimeout).count()) {
      std::fprintf(stderr, "iceoryx subscriber: no frame within 10 s (%d so far)\n",
                   e.sheet->count);
      return 1;
    }
  }
  e.sheet->reader_done.store(1);
  return 0;
}

int RunPublisher(const std::string& app, const Ends& e) {
  iox::runtime::PoshRuntime::initRuntime(iox::RuntimeName_t(iox::cxx::TruncateToCapacity, app.c_str()));
  iox::popo::PublisherOptions options;
  options.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
  iox::popo::UntypedPublisher pub({Id("shmlease-bench"), Id("frames"), Id(e.service)}, options);
  const int64_t setup_deadline = NowNs() + std::chrono::nanoseconds(kStepTimeout).count();
  while (!pub.hasSubscribers() || e.sheet->ready.load() == 0) {
    if (NowNs() > setup_deadline) {
      std::fprintf(stderr, "iceoryx publisher: no subscriber within 10 s\n");
      return 1;
    }
    std::this_thread::sleep_for(1ms);
  }
  for (int i = 0; i < e.n; ++i) {
    auto loaned = pub.loan(e.payload, alignof(FrameHead));
    if (loaned.has_error()) {
      std::fprintf(stderr, "iceoryx publisher: loan of %u bytes failed after %d frames (error %d)\n",
                   e.payload, i, static_cast<int>(loaned.get_error()));
      return 1;
    }
    void* chunk = loaned.value();
    std::this_thread::sleep_for(kFrameGap);
    static_cast<FrameHead*>(chunk)->seq = i;
    static_cast<FrameHead*>(chunk)->stamp_ns = NowNs();
    pub.publish(chunk);
    e.sheet->sent.fetch_add(1);
  }
  e.sheet->writer_done.store(1);
  const int64_t deadline = NowNs() + std::chrono::nanoseconds(kStepTimeout).count();
  while (e.sheet->reader_done.load() == 0) {
    if (NowNs() > deadline) {
      std::fprintf(stderr, "iceoryx publisher: the subscriber did not finish within 10 s\n");
      return 1;
    }
    std::this_thread::sleep_for(1ms);
  }
  return 0;
}

pid_t ForkEnd(int cpu, int (*run)(const std::string&, const Ends&), const std::string& app,
              const Ends& e) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  PinTo(cpu);
  // The runtime logs every registration at its default level (verbose): warnings and up only.
  iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn,
                                                         iox::log::LogLevelOutput::kHideLogLevel);
  std::exit(run(app, e));
}

}  // namespace

const char* IceoryxPeer::Version() { return ICEORYX_LATEST_RELEASE_VERSION; }

IceoryxPeer::IceoryxPeer(const std::vector<uint32_t>& payload_sizes, int lock_wait_s)
    : owner_(getpid()) {
  lock_fd_ = open(kLockPath, O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) {
    error_ = std::string("cannot open ") + kLockPath + ": " + std::strerror(errno);
    return;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(lock_wait_s);
  while (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      error_ = std::string("another benchmark held ") + kLockPath + " for " +
               std::to_string(lock_wait_s) + " s";
      return;
    }
    std::this_thread::sleep_for(50ms);
  }
  // A RouDi we did not start (its lock is held): leave it alone and measure nothing. One of a
  // bench killed a moment ago is still shutting down: give it 10 s.
  const auto roudi_deadline = std::chrono::steady_clock::now() + 10s;
  for (bool waited = false;; waited = true) {
    int roudi_lock = open(kRoudiLock, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (roudi_lock < 0) break;
    const bool busy = flock(roudi_lock, LOCK_EX | LOCK_NB) != 0;
    close(roudi_lock);
    if (!busy) {
      // A RouDi that has just let go of its lock may still be removing its shared memory.
      if (waited) std::this_thread::sleep_for(1s);
      break;
    }
    if (std::chrono::steady_clock::now() > roudi_deadline) {
      error_ = "another iox-roudi is running on this machine (it holds /tmp/roudi.lock)";
      return;
    }
    std::this_thread::sleep_for(50ms);
  }
  RemoveLeftovers();
  g_owner = owner_;
  if (WriteConfig(payload_sizes) && !StartRoudi()) {
    // Once more: a RouDi that was shutting down as ours started can make ours abort.
    std::fprintf(stderr, "iceoryx peer: %s\niceoryx peer: trying once more\n", error_.c_str());
    error_.clear();
    std::this_thread::sleep_for(1s);
    StartRoudi();
  }
}

IceoryxPeer::~IceoryxPeer() { Stop(); }

bool IceoryxPeer::WriteConfig(const std::vector<uint32_t>& payload_sizes) {
  std::string tmpl = std::filesystem::temp_directory_path().string() + "/shmlease-iceoryx-" +
                     std::to_string(owner_) + "-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    error_ = "mkdtemp failed";
    return false;
  }
  dir_ = tmpl;
  CopyPath(g_dir, dir_);
  CopyPath(g_files[0], dir_ + "/roudi.toml");
  CopyPath(g_files[1], dir_ + "/roudi.log");
  g_file_count = 2;
  // Chunk sizes ascending (RouDi refuses others), each holding its payload and the chunk header.
  std::vector<uint32_t> sizes;
  for (uint32_t payload : payload_sizes) {
    auto settings = iox::mepoo::ChunkSettings::create(payload, alignof(FrameHead));
    if (settings.has_error()) {
      error_ = "iceoryx cannot make chunks of " + std::to_string(payload) + " bytes";
      return false;
    }
    sizes.push_back(settings.value().requiredChunkSize());
  }
  std::sort(sizes.begin(), sizes.end());
  std::ofstream out(dir_ + "/roudi.toml");
  out << "# Written by channel_bench (bench/iceoryx_peer.cpp) for one run.\n"
         "[general]\nversion = 1\n\n[[segment]]\n";
  for (uint32_t size : sizes) {
    // Small chunks are cheap; the large ones only need to cover the subscriber's queue (4), the
    // chunk it holds and the one the publisher has loaned.
    out << "\n[[segment.mempool]]\nsize = " << size << "\ncount = "
        << (size <= (1u << 20) ? 1000 : 16) << "\n";
  }
  if (!out) {
    error_ = "cannot write " + dir_ + "/roudi.toml";
    return false;
  }
  return true;
}

bool IceoryxPeer::StartRoudi() {
  const std::string config = dir_ + "/roudi.toml";
  const std::string log_path = dir_ + "/roudi.log";
  const char* env_roudi = std::getenv("SHMLEASE_IOX_ROUDI");
  std::string roudi = env_roudi != nullptr && *env_roudi != '\0' ? env_roudi : SHMLEASE_IOX_ROUDI;
  // -m off: no liveness monitoring (no heartbeats during the measurement; every client here
  // deregisters on exit); -k 1: at shutdown, wait 1 s for clients, not 45.
  std::vector<std::string> args = {roudi, "-c", config, "-m", "off", "-k", "1", "-l", "warning"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = fork();
  if (pid < 0) {
    error_ = "fork failed";
    return false;
  }
  if (pid == 0) {
    // If the bench dies, RouDi goes too, and removes its shared memory on the way.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != owner_) _exit(1);
    int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log >= 0) {
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
    }
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, STDIN_FILENO);
    execv(argv[0], argv.data());
    std::perror("execv iox-roudi");
    _exit(127);
  }
  roudi_pid_ = pid;
  g_active = this;
  g_roudi_pid = pid;
  g_owner = owner_;
  static bool hooks_installed = false;
  if (!hooks_installed) {
    hooks_installed = true;
    std::atexit(StopActiveAtExit);
    for (int signo : {SIGINT, SIGTERM, SIGHUP}) signal(signo, OnFatalSignal);
  }
  // The log is appended to across starts: this start is ready at one more ready line.
  auto ready_lines = [this] {
    const std::string text = RoudiLog();
    int count = 0;
    for (size_t at = text.find(kReadyLine); at != std::string::npos; at = text.find(kReadyLine, at + 1)) {
      ++count;
    }
    return count;
  };
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (ready_lines() <= starts_) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      roudi_pid_ = -1;
      g_roudi_pid = -1;
      error_ = "iox-roudi exited during start-up (wait status " + std::to_string(status) +
               "):\n" + RoudiLog();
      StopRoudi();
      return false;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      error_ = "iox-roudi was not ready within 20 s:\n" + RoudiLog();
      StopRoudi();
      return false;
    }
    std::this_thread::sleep_for(5ms);
  }
  ++starts_;
  return true;
}

std::string IceoryxPeer::RoudiLog() const { return dir_.empty() ? "" : ReadFile(dir_ + "/roudi.log"); }

bool IceoryxPeer::OneWay(int n, uint32_t payload, IceoryxWait wait, CpuPair cpus,
                         OneWaySamples& samples) {
  if (!ok()) return false;
  n = std::clamp(n, 1, kMaxSamples);
  const int k = measurements_++;
  const std::string tag = std::to_string(owner_) + "-" + std::to_string(k);
  const std::string sub_app = "shmlease-bench-sub-" + tag;
  const std::string pub_app = "shmlease-bench-pub-" + tag;
  app_names_.push_back(sub_app);
  app_names_.push_back(pub_app);
  SampleSheet* sheet = SampleSheet::Map();
  Ends ends{"m" + tag, n, payload, wait, sheet};
  int files = 2;
  for (const std::string& app : {sub_app, pub_app}) {
    CopyPath(g_files[files++], "/tmp/" + app);
    CopyPath(g_files[files++], "/tmp/" + app + ".lock");
  }
  g_file_count = files;
  pid_t sub = ForkEnd(cpus.reader, RunSubscriber, sub_app, ends);
  g_ends[0] = sub;
  pid_t pub = sub > 0 ? ForkEnd(cpus.writer, RunPublisher, pub_app, ends) : -1;
  g_ends[1] = pub;
  bool good = sub > 0 && pub > 0;
  if (!good) {
    if (sub > 0) kill(sub, SIGKILL);
    error_ = "fork failed";
  }
  // A failed end leaves the other waiting for up to 10 s; then it fails too.
  if (sub > 0 && !WaitChild(sub, "iceoryx subscriber")) good = false;
  if (pub > 0 && !WaitChild(pub, "iceoryx publisher")) good = false;
  g_ends[0] = -1;
  g_ends[1] = -1;
  if (good) {
    AppendSamples(samples, *sheet);
  } else if (error_.empty()) {
    error_ = "an iceoryx measurement failed (" + std::to_string(payload) + " B); RouDi's log:\n" +
             RoudiLog();
  }
  SampleSheet::Unmap(sheet);
  return good;
}

void IceoryxPeer::StopRoudi() {
  if (getpid() != owner_ || roudi_pid_ <= 0) return;
  kill(roudi_pid_, SIGTERM);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (waitpid(roudi_pid_, &status, WNOHANG) != roudi_pid_) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(roudi_pid_, SIGKILL);
      waitpid(roudi_pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  roudi_pid_ = -1;
  g_roudi_pid = -1;
  // A clean RouDi has removed these already; one that had to be killed has not.
  for (const char* path : kRoudiFiles) unlink(path);
  if (std::string segment = SegmentFile(); !segment.empty()) unlink(segment.c_str());
  for (const auto& app : app_names_) {
    unlink(("/tmp/" + app).c_str());
    unlink(("/tmp/" + app + ".lock").c_str());
  }
}

void IceoryxPeer::Stop() {
  if (getpid() != owner_) return;
  StopRoudi();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    dir_.clear();
    g_dir[0] = '\0';
    g_file_count = 0;
  }
  if (lock_fd_ >= 0) {
    close(lock_fd_);  // releases the lock
    lock_fd_ = -1;
  }
  if (g_active == this) g_active = nullptr;
}

}  // namespace shmlease::bench
