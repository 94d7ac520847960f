// Frame channels over daemon-owned segments (docs/CHANNELS.md has the layout and the protocol).
//
// Ownership: ChannelShared holds the leases (control, data, writer token) and so the mappings;
// Channel, Writer, Reader and every Frame share it, so memory stays mapped while any of them lives.
// A ReaderState owns the reader's eventfd and helper thread (stopped and closed with the Reader).
#include "shmlease/channel.hpp"

#include <linux/futex.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "shmlease/format.hpp"

namespace shmlease {
namespace detail {
namespace {

constexpr uint64_t kMagic = 0x314E48434C4D4853ull;  // "SHMLCHN1"
constexpr uint32_t kLayoutVersion = 1;
constexpr size_t kHeaderBytes = 8192;
constexpr size_t kSlotHeaderBytes = 512;
constexpr uint32_t kMaxSlots = 64;
constexpr int kSpinIterations = 2000;
constexpr auto kSlice = std::chrono::milliseconds(20);  // longest sleep between death checks
constexpr uint64_t kNoEnd = UINT64_MAX;                 // ReaderState::end_reported before any end

enum SlotState : uint32_t { kSlotEmpty = 0, kSlotClaimed = 1, kSlotPublished = 2 };
enum WriterState : uint32_t { kWriterNone = 0, kWriterActive = 1, kWriterClosed = 2 };

// A process, identified across pid reuse by its start time (/proc/<pid>/stat field 22).
struct ProcessId {
  uint32_t pid = 0;
  uint64_t start_time = 0;
};

// Every field below is shared between processes; only atomics are written after creation.
struct alignas(64) ReaderRecord {
  std::atomic<uint64_t> owner;  // 0 = free, else (generation << 32) | pid
  std::atomic<uint64_t> start_time;
  char pad[48];
};

struct ControlHeader {
  // Written once by the creator before `ready` is set; read-only afterwards.
  uint64_t magic;
  uint32_t version;
  std::atomic<uint32_t> ready;  // 1 once the header is complete
  uint32_t slot_count;
  uint32_t policy;
  uint64_t frame_bytes;
  uint64_t slot_stride;  // bytes between slots in <name>.data
  uint32_t ndim;
  uint32_t reserved0;
  uint64_t shape[8];
  char format[16];
  alignas(64) std::atomic<uint64_t> published;  // last published sequence number
  std::atomic<uint32_t> notify;                 // futex word: bumped on publish and writer change
  std::atomic<uint32_t> reader_waiters;         // readers asleep (or about to be) on `notify`
  std::atomic<uint32_t> published_slot;         // hint: the slot of `published` (same line)
  alignas(64) std::atomic<uint32_t> freed;      // futex word: bumped when a slot comes back
  std::atomic<uint32_t> writer_waiting;         // the writer is asleep (or about to be) on `freed`
  alignas(64) std::atomic<uint32_t> writer_state;
  std::atomic<uint32_t> writer_pid;
  std::atomic<uint64_t> writer_start_time;
  std::atomic<uint64_t> writer_generation;
  alignas(64) std::atomic<uint64_t> reader_claimed;  // reader records in use
  std::atomic<uint64_t> reader_active;               // readers included in new frames
  std::atomic<uint64_t> reader_generation;
  alignas(64) ReaderRecord readers[kMaxChannelReaders];
};
static_assert(sizeof(ControlHeader) <= kHeaderBytes);

struct alignas(64) SlotHeader {
  std::atomic<uint32_t> state;
  std::atomic<uint32_t> meta_size;
  std::atomic<uint64_t> seq;
  std::atomic<uint64_t> pending;  // readers that must still take this frame
  std::atomic<uint64_t> held;     // readers holding it now
  std::atomic<int64_t> timestamp_ns;
  alignas(64) std::byte meta[kMaxFrameMeta];
};
static_assert(sizeof(SlotHeader) <= kSlotHeaderBytes);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

long Futex(std::atomic<uint32_t>* word, int op, uint32_t value, const timespec* timeout) {
  // No FUTEX_PRIVATE_FLAG: the word lives in a shared mapping and other processes wait on it.
  return ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, value, timeout, nullptr, 0);
}
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout) {
  timespec ts{static_cast<time_t>(timeout.count() / 1000000000),
              static_cast<long>(timeout.count() % 1000000000)};
  Futex(word, FUTEX_WAIT, expected, &ts);
}
void FutexWakeAll(std::atomic<uint32_t>* word) { Futex(word, FUTEX_WAKE, INT_MAX, nullptr); }

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

int64_t MonotonicNs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// Start time of `pid`, or 0 when it does not exist or is a zombie (dead but not yet reaped).
uint64_t StartTimeOf(uint32_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto paren = text.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(text.substr(paren + 2));
  std::string state;
  fields >> state;  // field 3
  if (state == "Z" || state == "X" || state == "x") return 0;
  std::string skip;
  for (int field = 4; field < 22; ++field) fields >> skip;
  uint64_t start = 0;
  fields >> start;
  return start;
}

ProcessId Self() {
  static const ProcessId self{static_cast<uint32_t>(::getpid()),
                              StartTimeOf(static_cast<uint32_t>(::getpid()))};
  // After fork() the cached value is the parent's: recompute then.
  if (self.pid != static_cast<uint32_t>(::getpid())) {
    return {static_cast<uint32_t>(::getpid()), StartTimeOf(static_cast<uint32_t>(::getpid()))};
  }
  return self;
}

bool Alive(uint32_t pid, uint64_t start_time) {
  if (pid == 0) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  return StartTimeOf(pid) == start_time;
}

[[noreturn]] void Fail(Errc code, const std::string& what) { throw Error(code, what); }

}  // namespace

// The channel's geometry, copied from the header once at open and validated there. Every
// participant can write the control block, so nothing that sizes or indexes memory is read from
// it again: a peer that rewrites the header cannot move this process's accesses out of bounds.
struct Geometry {
  uint32_t slot_count = 0;
  ChannelPolicy policy = ChannelPolicy::kBlock;
  uint64_t frame_bytes = 0;
  uint64_t slot_stride = 0;  // bytes between slots in <name>.data
  bool latest() const { return policy == ChannelPolicy::kLatest; }
  uint64_t control_bytes() const { return kHeaderBytes + uint64_t{slot_count} * kSlotHeaderBytes; }
  uint64_t data_bytes() const { return slot_stride * slot_count; }
};

// One read of a plain header field that other processes may write: the value checked is the value
// used (the compiler may not read it again).
template <typename T>
T ReadOnce(const T& field) {
  return *static_cast<const volatile T*>(&field);
}

// Bytes between slots in <name>.data: slots start on a page (frames of 4 KiB or more) or a
// cache line. 0 for a frame size whose ring of kMaxSlots slots would not fit in 64 bits.
uint64_t SlotStride(uint64_t frame_bytes) {
  if (frame_bytes > UINT64_MAX / kMaxSlots / 2) return 0;
  uint64_t align = frame_bytes >= 4096 ? 4096 : 64;
  return (frame_bytes + align - 1) / align * align;
}

// A peer wrote a value no honest participant writes (docs/CHANNELS.md, "Trust").
[[noreturn]] void PeerViolation(const std::string& channel, const std::string& what) {
  throw Error(Errc::kBadMessage, "channel '" + channel + "': " + what +
                                     " (a participant corrupted the control block)");
}

struct ChannelShared {
  std::string name;
  std::string format;
  std::vector<uint64_t> shape;
  Geometry geometry;  // set at open, never changed: the only source of sizes and indices
  Lease control;
  Lease data;
  Lease token;
  ControlHeader* header = nullptr;
  std::byte* slots_base = nullptr;
  bool busy_poll = false;

  uint32_t slot_count() const { return geometry.slot_count; }
  SlotHeader& slot(uint32_t i) const {
    auto* base = reinterpret_cast<std::byte*>(header) + kHeaderBytes;
    return *reinterpret_cast<SlotHeader*>(base + size_t{i} * kSlotHeaderBytes);
  }
  std::byte* slot_data(uint32_t i) const { return slots_base + size_t{i} * geometry.slot_stride; }

  void WakeWriter() {
    header->freed.fetch_add(1);
    if (header->writer_waiting.load() != 0) FutexWakeAll(&header->freed);
  }
  void WakeReaders() {
    header->notify.fetch_add(1);
    if (header->reader_waiters.load() != 0) FutexWakeAll(&header->notify);
  }

  // Frees reader record `index` if its owner is still `owner`: its bits leave every slot.
  // Only the caller whose CAS succeeds does the cleanup, so a record is never freed twice.
  bool FreeReader(uint32_t index, uint64_t owner) {
    ReaderRecord& rec = header->readers[index];
    if (!rec.owner.compare_exchange_strong(owner, 0)) return false;
    uint64_t bit = uint64_t{1} << index;
    header->reader_active.fetch_and(~bit);
    for (uint32_t i = 0; i < slot_count(); ++i) {
      slot(i).pending.fetch_and(~bit);
      slot(i).held.fetch_and(~bit);
    }
    header->reader_claimed.fetch_and(~bit);
    WakeWriter();
    return true;
  }

  // Frees the records of readers whose process is gone. Returns how many.
  int ReclaimDeadReaders() {
    int freed = 0;
    uint64_t claimed = header->reader_claimed.load();
    for (uint32_t i = 0; i < kMaxChannelReaders; ++i) {
      if (!(claimed & (uint64_t{1} << i))) continue;
      ReaderRecord& rec = header->readers[i];
      uint64_t owner = rec.owner.load();
      if (owner == 0) continue;
      uint32_t pid = static_cast<uint32_t>(owner);
      if (!Alive(pid, rec.start_time.load()) && FreeReader(i, owner)) ++freed;
    }
    return freed;
  }

  // True when the writer has closed, or its process is dead (checked only when `check_process`).
  bool WriterGone(bool check_process) const {
    uint32_t state = header->writer_state.load();
    if (state == kWriterClosed) return true;
    if (state == kWriterActive && check_process) {
      return !Alive(header->writer_pid.load(), header->writer_start_time.load());
    }
    return false;
  }

  // The writer generation whose stream has ended (closed, or the writer's process dead: checked
  // only when `check_process`), or kNoEnd while a writer is active or none ever came. The
  // generation is read before the state and Channel::writer() bumps it after setting the state
  // active, so an end is never attributed to a writer that has not ended.
  uint64_t EndedGeneration(bool check_process) const {
    uint64_t generation = header->writer_generation.load();
    return WriterGone(check_process) ? generation : kNoEnd;
  }
};

struct ReaderState {
  uint32_t index = 0;
  uint64_t bit = 0;
  uint64_t owner = 0;
  uint64_t last = 0;                         // the newest sequence number this reader is past
  std::atomic<uint64_t> last_for_helper{0};  // a copy of `last` for the fileno helper thread
  uint64_t missed_carry = 0;                 // kLatest: frames skipped and not yet reported
  // Adaptive spin before sleeping: doubled when a frame came while spinning, halved when the
  // reader had to sleep anyway. Spinning on PAUSE for nothing is not free: on a VM the
  // hypervisor may deschedule a pausing vCPU, and the wake-up that follows costs more
  // (docs/CHANNELS.md, "Waiting").
  int spin = kSpinIterations;
  int event_fd = -1;
  std::thread helper;
  std::atomic<bool> stop{false};
  // The writer generation whose end this reader has reported (Next() threw kEndOfStream or
  // AtEnd() returned true): the eventfd is not signalled for that end any more, so a poller
  // does not wake forever after the stream ended. `event_mutex` orders the helper's decision to
  // signal against ReportEnd's drain (otherwise a signal decided just before the report could
  // land just after its drain and leave the fd readable).
  std::atomic<uint64_t> end_reported{kNoEnd};
  std::mutex event_mutex;
  std::chrono::steady_clock::time_point next_process_check{};  // AtEnd's rate limit

  // An end of stream this reader has not reported yet.
  bool EndUnreported(const ChannelShared& sh, bool check_process) const {
    uint64_t generation = sh.EndedGeneration(check_process);
    return generation != kNoEnd && generation != end_reported.load();
  }
};

}  // namespace detail

using detail::ChannelShared;
using detail::ControlHeader;
using detail::Fail;
using detail::FutexWakeAll;
using detail::SlotHeader;

// ---------------------------------------------------------------------------------------- Frame

Frame::~Frame() { Release(); }
Frame::Frame(Frame&& o) noexcept { *this = std::move(o); }
Frame& Frame::operator=(Frame&& o) noexcept {
  if (this != &o) {
    Release();
    shared_ = std::move(o.shared_);
    data_ = o.data_;
    size_ = o.size_;
    slot_ = o.slot_;
    reader_bit_ = o.reader_bit_;
    writer_ = o.writer_;
    seq_ = o.seq_;
    timestamp_ns_ = o.timestamp_ns_;
    meta_ = o.meta_;
    meta_size_ = o.meta_size_;
    missed_ = o.missed_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void Frame::Release() noexcept {
  if (!shared_) return;
  SlotHeader& s = shared_->slot(slot_);
  if (writer_) {
    // Discarded unpublished frame: the slot goes back empty (readers never looked at it).
    s.seq.store(0);
    s.state.store(detail::kSlotEmpty);
  } else {
    s.held.fetch_and(~reader_bit_);
  }
  shared_->WakeWriter();
  shared_.reset();
  data_ = nullptr;
  size_ = 0;
}

std::span<std::byte> Frame::writable_data() const {
  if (!writer_) throw Error(Errc::kPermissionDenied, "a reader's frame is read-only");
  return {data_, size_};
}

std::shared_ptr<const void> Frame::mapping_owner() const noexcept { return shared_; }

bool Frame::held() const noexcept {
  if (!shared_ || !shared_->control.held() || !shared_->data.held()) return false;
  return !writer_ || shared_->token.held();
}

// --------------------------------------------------------------------------------------- Writer

Writer::~Writer() { Close(); }
Writer::Writer(Writer&& o) noexcept : shared_(std::move(o.shared_)), next_seq_(o.next_seq_) {}
Writer& Writer::operator=(Writer&& o) noexcept {
  if (this != &o) {
    Close();
    shared_ = std::move(o.shared_);
    next_seq_ = o.next_seq_;
  }
  return *this;
}

void Writer::Close() noexcept {
  if (!shared_) return;
  shared_->header->writer_state.store(detail::kWriterClosed);
  shared_->WakeReaders();
  shared_->token.Release();
  shared_.reset();
}

uint32_t Writer::reader_count() const noexcept {
  return shared_ ? static_cast<uint32_t>(std::popcount(shared_->header->reader_active.load())) : 0;
}

bool Writer::WaitForReaders(uint32_t n, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (reader_count() < n) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

Frame Writer::Claim(std::chrono::milliseconds timeout) {
  if (!shared_) throw Error(Errc::kInvalidArgument, "writer is closed");
  ChannelShared& sh = *shared_;
  ControlHeader& h = *sh.header;
  const bool latest = sh.geometry.latest();
  const bool forever = timeout.count() < 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;

  auto try_claim = [&]() -> int {
    // The free slot with the oldest frame, so readers keep the newest ones longest.
    int best = -1;
    uint64_t best_seq = UINT64_MAX;
    for (uint32_t i = 0; i < sh.slot_count(); ++i) {
      SlotHeader& s = sh.slot(i);
      if (s.state.load() == detail::kSlotClaimed || s.held.load() != 0) continue;
      if (!latest && s.pending.load() != 0) continue;
      uint64_t seq = s.seq.load();
      if (seq < best_seq) best = static_cast<int>(i), best_seq = seq;
    }
    if (best < 0) return -1;
    SlotHeader& s = sh.slot(static_cast<uint32_t>(best));
    if (latest) s.pending.exchange(0);  // readers that had not taken it skip it
    // A reader takes a frame by setting its held bit and then clearing its pending bit; with
    // pending empty first, a held of 0 now stays 0 (a reader racing us fails and backs off).
    if (s.held.load() != 0 || s.pending.load() != 0) return -1;
    uint32_t state = s.state.load();
    if (state == detail::kSlotClaimed ||
        !s.state.compare_exchange_strong(state, detail::kSlotClaimed)) {
      return -1;
    }
    return best;
  };

  int slot = -1;
  auto next_reclaim = std::chrono::steady_clock::now() + detail::kSlice;
  for (;;) {
    slot = try_claim();
    if (slot >= 0) break;
    for (int i = 0; i < detail::kSpinIterations && slot < 0; ++i) {
      detail::CpuRelax();
      if ((i & 63) == 63) slot = try_claim();
    }
    if (slot >= 0) break;
    auto now = std::chrono::steady_clock::now();
    if (now >= next_reclaim) {
      sh.ReclaimDeadReaders();
      next_reclaim = now + detail::kSlice;
      continue;
    }
    if (!forever && now >= deadline) {
      throw Error(Errc::kTimeout, "channel '" + sh.name + "': no free slot (readers hold all " +
                                      std::to_string(sh.slot_count()) + ")");
    }
    h.writer_waiting.store(1);
    uint32_t v = h.freed.load();
    slot = try_claim();
    if (slot < 0) {
      auto wait = next_reclaim - now;
      if (!forever) wait = std::min(wait, deadline - now);
      detail::FutexWait(&h.freed, v, std::chrono::duration_cast<std::chrono::nanoseconds>(wait));
    }
    h.writer_waiting.store(0);
    if (slot >= 0) break;
  }

  Frame f;
  f.shared_ = shared_;
  f.slot_ = static_cast<uint32_t>(slot);
  f.data_ = sh.slot_data(f.slot_);
  f.size_ = sh.geometry.frame_bytes;
  f.writer_ = true;
  return f;
}

uint64_t Writer::Publish(Frame& frame, std::span<const std::byte> meta) {
  if (!shared_ || frame.shared_ != shared_ || !frame.writer_) {
    throw Error(Errc::kInvalidArgument, "publish: not a frame claimed from this writer");
  }
  if (meta.size() > kMaxFrameMeta) {
    throw Error(Errc::kInvalidArgument,
                "publish: metadata longer than " + std::to_string(kMaxFrameMeta) + " bytes");
  }
  ChannelShared& sh = *shared_;
  ControlHeader& h = *sh.header;
  SlotHeader& s = sh.slot(frame.slot_);
  // Fields a reader reads only after it saw state == published: ordered by that release store.
  if (!meta.empty())
    std::memcpy(s.meta, meta.data(), meta.size());  // data() may be null when empty
  s.meta_size.store(static_cast<uint32_t>(meta.size()), std::memory_order_relaxed);
  s.timestamp_ns.store(detail::MonotonicNs(), std::memory_order_relaxed);
  const uint64_t seq = next_seq_++;
  s.seq.store(seq, std::memory_order_relaxed);
  uint64_t mask = h.reader_active.load();
  s.pending.store(mask);  // seq_cst: pairs with FreeReader (active cleared, then slots swept)
  s.state.store(detail::kSlotPublished, std::memory_order_release);
  // A reader freed while we read the mask has swept the slots already or sees our store: drop
  // bits that are no longer active so a gone reader never pins this slot.
  uint64_t active = h.reader_active.load();
  if (mask & ~active) s.pending.fetch_and(active);
  // Release; the seq_cst read-modify-write of `notify` in WakeReaders orders it before the
  // check of `reader_waiters` (a sleeping reader re-checks `published` after it bumped that).
  h.published_slot.store(frame.slot_, std::memory_order_relaxed);
  h.published.store(seq, std::memory_order_release);
  sh.WakeReaders();
  frame.shared_.reset();  // ownership of the slot passes to the readers
  frame.data_ = nullptr;
  frame.size_ = 0;
  return seq;
}

// --------------------------------------------------------------------------------------- Reader

Reader::~Reader() {
  if (!state_) return;
  if (state_->helper.joinable()) {
    state_->stop.store(true);
    FutexWakeAll(&shared_->header->notify);
    state_->helper.join();
  }
  if (state_->event_fd >= 0) ::close(state_->event_fd);
  shared_->FreeReader(state_->index, state_->owner);
}
Reader::Reader(Reader&& o) noexcept : shared_(std::move(o.shared_)), state_(std::move(o.state_)) {}
Reader& Reader::operator=(Reader&& o) noexcept {
  if (this != &o) {
    Reader gone(std::move(*this));
    shared_ = std::move(o.shared_);
    state_ = std::move(o.state_);
  }
  return *this;
}

// Takes the next frame if one is ready (docs/CHANNELS.md, "Taking a frame").
Frame Reader::TryNext() {
  Frame out;
  if (!shared_) throw Error(Errc::kInvalidArgument, "reader is closed");
  ChannelShared& sh = *shared_;
  detail::ReaderState& rs = *state_;
  ControlHeader& h = *sh.header;
  const bool latest = sh.geometry.latest();
  for (int attempt = 0; attempt < 64; ++attempt) {
    const uint64_t published = h.published.load();
    if (published <= rs.last) break;
    int pick = -1;
    uint64_t pick_seq = 0;
    // Fast path: exactly one new frame, in the slot the writer names next to `published` (same
    // cache line). Skips the scan; the take below validates it like any other pick.
    uint32_t hint = h.published_slot.load(std::memory_order_relaxed);
    if (attempt == 0 && published == rs.last + 1 && hint < sh.slot_count()) {
      pick = static_cast<int>(hint);
      pick_seq = published;
    }
    const bool fast = pick >= 0;
    for (uint32_t i = 0; !fast && i < sh.slot_count(); ++i) {
      SlotHeader& s = sh.slot(i);
      if (s.state.load() != detail::kSlotPublished || !(s.pending.load() & rs.bit)) continue;
      uint64_t seq = s.seq.load();
      if (seq <= rs.last) continue;
      if (pick < 0 || (latest ? seq > pick_seq : seq < pick_seq)) {
        pick = static_cast<int>(i);
        pick_seq = seq;
      }
    }
    if (pick < 0) {
      // Nothing for us up to `published`: frames published before we joined, or (kLatest)
      // taken back by the writer before we came.
      if (latest) rs.missed_carry += published - rs.last;
      rs.last = published;
      rs.last_for_helper.store(published, std::memory_order_relaxed);
      break;
    }
    SlotHeader& s = sh.slot(static_cast<uint32_t>(pick));
    s.held.fetch_or(rs.bit);
    uint64_t had = s.pending.fetch_and(~rs.bit);
    if (!(had & rs.bit) || s.seq.load() != pick_seq || s.state.load() != detail::kSlotPublished) {
      // Not the frame we meant (a fast-path hint newer than `published` as we read it): if it
      // was pending for us, it is ours later; give the pending bit back while our held bit
      // still keeps the writer off the slot.
      if (had & rs.bit) s.pending.fetch_or(rs.bit);
      s.held.fetch_and(~rs.bit);
      sh.WakeWriter();
      continue;  // taken back (kLatest), or another frame: look again
    }
    if (latest) {
      // Older frames still pending for us are skipped: let them go now.
      for (uint32_t i = 0; i < sh.slot_count(); ++i) {
        SlotHeader& o = sh.slot(i);
        if (static_cast<int>(i) != pick && (o.pending.load() & rs.bit) && o.seq.load() < pick_seq) {
          o.pending.fetch_and(~rs.bit);
        }
      }
      out.missed_ = rs.missed_carry + (pick_seq - rs.last - 1);
      rs.missed_carry = 0;
    }
    rs.last = pick_seq;
    rs.last_for_helper.store(pick_seq, std::memory_order_relaxed);
    // Read once: the bound checked is the size used.
    const uint32_t meta_size = s.meta_size.load(std::memory_order_relaxed);
    if (meta_size > kMaxFrameMeta) {
      // This frame is lost to us (we are past it); the stream goes on with the next one.
      s.held.fetch_and(~rs.bit);
      sh.WakeWriter();
      if (latest) rs.missed_carry = out.missed_ + 1;  // the next frame reports this one missed
      if (rs.event_fd >= 0) RearmEvent();
      detail::PeerViolation(sh.name, "frame " + std::to_string(pick_seq) + " has " +
                                         std::to_string(meta_size) + " bytes of metadata, above " +
                                         std::to_string(kMaxFrameMeta));
    }
    out.shared_ = shared_;
    out.slot_ = static_cast<uint32_t>(pick);
    out.data_ = sh.slot_data(out.slot_);
    out.size_ = sh.geometry.frame_bytes;
    out.reader_bit_ = rs.bit;
    out.seq_ = pick_seq;
    out.timestamp_ns_ = s.timestamp_ns.load();
    out.meta_ = s.meta;
    out.meta_size_ = meta_size;
    break;
  }
  if (rs.event_fd >= 0) RearmEvent();
  return out;
}

// The eventfd is readable while a frame is ready: drain it, then signal again if one still is
// (the helper may have signalled for a frame we have just taken, or be about to miss one).
void Reader::RearmEvent() noexcept {
  uint64_t value;
  (void)!::read(state_->event_fd, &value, sizeof(value));
  ControlHeader& h = *shared_->header;
  if (h.published.load() > state_->last || state_->EndUnreported(*shared_, false)) {
    uint64_t one = 1;
    (void)!::write(state_->event_fd, &one, sizeof(one));
  }
}

// Records that the end of `generation`'s stream was reported, and re-arms the eventfd under the
// helper's lock, so that once this returns the fd is readable only for a new frame or end.
void Reader::ReportEnd(uint64_t generation) noexcept {
  detail::ReaderState& rs = *state_;
  std::lock_guard<std::mutex> lock(rs.event_mutex);
  rs.end_reported.store(generation);
  if (rs.event_fd >= 0) RearmEvent();
}

bool Reader::AtEnd() {
  if (!shared_) throw Error(Errc::kInvalidArgument, "reader is closed");
  detail::ReaderState& rs = *state_;
  auto now = std::chrono::steady_clock::now();
  bool check_process = now >= rs.next_process_check;
  if (check_process) rs.next_process_check = now + detail::kSlice;
  uint64_t generation = shared_->EndedGeneration(check_process);
  if (generation == detail::kNoEnd) return false;
  // A frame published before the end (or by a writer that took over since) is still to be read.
  if (shared_->header->published.load() > rs.last) return false;
  ReportEnd(generation);
  return true;
}

bool Reader::ended() const noexcept {
  if (!shared_) return false;
  uint64_t reported = state_->end_reported.load();
  return reported != detail::kNoEnd && reported == shared_->header->writer_generation.load() &&
         shared_->header->published.load() <=
             state_->last_for_helper.load(std::memory_order_relaxed);
}

Frame Reader::Next(std::chrono::milliseconds timeout) {
  if (!shared_) throw Error(Errc::kInvalidArgument, "reader is closed");
  ChannelShared& sh = *shared_;
  ControlHeader& h = *sh.header;
  detail::ReaderState& rs = *state_;
  const bool forever = timeout.count() < 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool check_process = false;
  for (;;) {
    Frame f = TryNext();
    if (f) return f;
    if (uint64_t generation = sh.EndedGeneration(check_process); generation != detail::kNoEnd) {
      // The writer may have published between our look and its end: one more look.
      f = TryNext();
      if (f) return f;
      ReportEnd(generation);
      throw Error(Errc::kEndOfStream, "channel '" + sh.name + "': the writer is gone");
    }
    check_process = false;
    // Spin briefly: a publish that comes within a few microseconds costs no sleep.
    bool ready = false;
    for (int i = 0; i < rs.spin; ++i) {
      if (h.published.load(std::memory_order_acquire) > rs.last) {
        ready = true;
        break;
      }
      detail::CpuRelax();
    }
    if (ready) {
      rs.spin = std::min(detail::kSpinIterations, rs.spin * 2 + 16);
      continue;
    }
    rs.spin /= 2;
    auto now = std::chrono::steady_clock::now();
    if (!forever && now >= deadline) {
      throw Error(Errc::kTimeout, "channel '" + sh.name + "': no frame within the timeout");
    }
    auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(detail::kSlice);
    if (!forever)
      wait = std::min(wait, std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now));
    if (sh.busy_poll) {
      // Reads the clock only every 1024 looks: a clock read costs more than a look.
      auto until = now + wait;
      for (uint32_t i = 1; h.published.load(std::memory_order_acquire) <= rs.last; ++i) {
        if ((i & 1023) == 0 && (std::chrono::steady_clock::now() >= until ||
                                h.writer_state.load() == detail::kWriterClosed)) {
          break;
        }
      }
      if (h.published.load() <= rs.last) check_process = true;
      continue;
    }
    h.reader_waiters.fetch_add(1);
    uint32_t v = h.notify.load();
    if (h.published.load() <= rs.last && h.writer_state.load() != detail::kWriterClosed) {
      auto t0 = std::chrono::steady_clock::now();
      detail::FutexWait(&h.notify, v, wait);
      // A full slice without a publish: look whether the writer process is still there.
      if (std::chrono::steady_clock::now() - t0 >= wait) check_process = true;
    }
    h.reader_waiters.fetch_sub(1);
  }
}

int Reader::fileno() {
  if (!shared_) throw Error(Errc::kInvalidArgument, "reader is closed");
  detail::ReaderState& rs = *state_;
  if (rs.event_fd >= 0) return rs.event_fd;
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw Error(Errc::kInternal, std::string("eventfd: ") + std::strerror(errno));
  rs.event_fd = fd;
  // The helper sleeps on the channel's futex word and signals the eventfd when a frame may be
  // ready or the writer is gone; it never takes frames itself.
  std::shared_ptr<ChannelShared> sh = shared_;
  detail::ReaderState* state = state_.get();
  rs.helper = std::thread([sh, state] {
    ControlHeader& h = *sh->header;
    bool check_process = false;
    while (!state->stop.load()) {
      h.reader_waiters.fetch_add(1);
      uint32_t v = h.notify.load();
      {
        // `last` is the reader's; a stale read only makes us signal once too often. An end the
        // reader has reported is not signalled again (ReaderState::end_reported).
        std::lock_guard<std::mutex> lock(state->event_mutex);
        bool ready = h.published.load() > state->last_for_helper.load(std::memory_order_relaxed) ||
                     state->EndUnreported(*sh, check_process);
        if (ready) {
          uint64_t one = 1;
          (void)!::write(state->event_fd, &one, sizeof(one));
        }
      }
      auto t0 = std::chrono::steady_clock::now();
      detail::FutexWait(&h.notify, v, detail::kSlice);
      check_process = std::chrono::steady_clock::now() - t0 >= detail::kSlice;
      h.reader_waiters.fetch_sub(1);
    }
  });
  RearmEvent();
  return fd;
}

// -------------------------------------------------------------------------------------- Channel

namespace {

std::string Describe(const std::string& format, const std::vector<uint64_t>& shape, uint32_t slots,
                     uint32_t policy) {
  std::string s = "format '" + format + "', shape (";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  s += "), " + std::to_string(slots) + " slots, policy " +
       (policy == static_cast<uint32_t>(ChannelPolicy::kLatest) ? "latest" : "block");
  return s;
}

// The channel's control segment, leased for writing. Opening by name only, a missing channel is
// waited for as long as `options.wait` says, asking the daemon at a growing interval (1 ms to
// 50 ms). Creating, a creator racing us may still be inside its Create (the daemon answers
// not_found for a segment it is creating): that is retried for a moment.
Lease AcquireControl(Client& client, const std::string& name, bool create,
                     const ChannelOptions& options) {
  using std::chrono::milliseconds;
  using Clock = std::chrono::steady_clock;
  constexpr milliseconds kMaxPause{50};
  // Beyond this a wait means forever (and now() + wait would overflow).
  constexpr milliseconds kMaxWait{std::chrono::hours(24 * 365 * 100)};
  const milliseconds wait = create ? milliseconds(2000) : options.wait;
  const bool forever = wait == kWaitForever || wait > kMaxWait;
  const auto give_up = Clock::now() + (forever ? milliseconds(0) : wait);
  milliseconds pause{1};
  for (;;) {
    try {
      return client.Acquire(name, Mode::kWrite);
    } catch (const Error& e) {
      if (e.errc() != Errc::kNotFound) throw;
      const auto now = Clock::now();
      if (!forever && now >= give_up) {
        if (create) throw;
        // The daemon speaks of segments; what the caller asked for is a channel.
        if (wait.count() == 0) {
          Fail(Errc::kNotFound,
               "no channel named '" + name + "' (open by name only: pass a shape to create it)");
        }
        Fail(Errc::kTimeout, "no channel named '" + name + "' after waiting " +
                                 std::to_string(wait.count()) + " ms");
      }
      if (!create && options.interrupted && options.interrupted()) {
        Fail(Errc::kCancelled, "waiting for channel '" + name + "': interrupted() returned true");
      }
      auto sleep = pause;
      if (!forever) {
        sleep = std::min(sleep, std::chrono::ceil<milliseconds>(give_up - now));
      }
      std::this_thread::sleep_for(sleep);
      if (!create) pause = std::min(pause * 2, kMaxPause);
    }
  }
}

}  // namespace

Channel::Channel(Client& client, std::string_view name, const ChannelOptions& options)
    : client_(&client), shared_(std::make_shared<ChannelShared>()) {
  ChannelShared& sh = *shared_;
  sh.name = std::string(name);
  const std::string data_name = sh.name + ".data";
  const std::string token_name = sh.name + ".writer";
  const bool create = !options.shape.empty();
  const uint32_t slots = options.slots.value_or(kDefaultChannelSlots);
  const ChannelPolicy policy_wanted = options.policy.value_or(kDefaultChannelPolicy);
  if (options.wait.count() < 0 && options.wait != kWaitForever) {
    Fail(Errc::kInvalidArgument, "channel: wait must be >= 0 or kWaitForever");
  }
  uint64_t frame_bytes = 0;
  uint64_t stride = 0;
  if (create) {
    auto item = FormatItemSize(options.format);
    if (!item) Fail(Errc::kInvalidArgument, "channel: bad format '" + options.format + "'");
    if (options.shape.size() > kMaxDims) Fail(Errc::kInvalidArgument, "channel: too many dims");
    auto bytes = ShapeBytes(options.shape, *item);
    if (!bytes || *bytes == 0 || detail::SlotStride(*bytes) == 0) {
      Fail(Errc::kInvalidArgument, "channel: bad shape");
    }
    if (slots < 2 || slots > detail::kMaxSlots) {
      Fail(Errc::kInvalidArgument, "channel: slots must be 2..64");
    }
    if (policy_wanted != ChannelPolicy::kBlock && policy_wanted != ChannelPolicy::kLatest) {
      Fail(Errc::kInvalidArgument, "channel: unknown policy");
    }
    frame_bytes = *bytes;
    stride = detail::SlotStride(frame_bytes);
    bool creator = true;
    try {
      client.Create(sh.name,
                    {.size = detail::kHeaderBytes + uint64_t{slots} * detail::kSlotHeaderBytes});
    } catch (const Error& e) {
      if (e.errc() != Errc::kAlreadyExists) throw;
      creator = false;
    }
    if (creator) {
      // Data and token first, the header last: whoever sees `ready` finds all three. A segment
      // that already holds one of those names is somebody else's (a user's `model.data`, or one
      // planted by another user to read or rewrite the frames): never adopt it; undo and refuse.
      const std::pair<const std::string*, uint64_t> parts[] = {{&data_name, stride * slots},
                                                               {&token_name, 64}};
      std::vector<const std::string*> made = {&sh.name};
      for (const auto& [part, size] : parts) {
        try {
          client.Create(*part, {.size = size});
          made.push_back(part);
        } catch (const Error& e) {
          std::error_code ignored;
          for (const std::string* m : made) client.Remove(*m, ignored);
          if (e.errc() != Errc::kAlreadyExists) throw;
          Fail(Errc::kAlreadyExists,
               "cannot create channel '" + sh.name + "': a segment '" + *part +
                   "' exists and is not part of it (a channel needs the names '" + sh.name +
                   "', '" + data_name + "' and '" + token_name + "')");
        }
      }
      sh.control = client.Acquire(sh.name, Mode::kWrite);
      auto* h = reinterpret_cast<ControlHeader*>(sh.control.writable_data().data());
      h->magic = detail::kMagic;
      h->version = detail::kLayoutVersion;
      h->slot_count = slots;
      h->policy = static_cast<uint32_t>(policy_wanted);
      h->frame_bytes = frame_bytes;
      h->slot_stride = stride;
      h->ndim = static_cast<uint32_t>(options.shape.size());
      for (size_t i = 0; i < options.shape.size(); ++i) h->shape[i] = options.shape[i];
      std::memset(h->format, 0, sizeof(h->format));
      std::memcpy(h->format, options.format.data(), std::min(options.format.size(), size_t{15}));
      h->ready.store(1);
    }
  }
  if (!sh.control) sh.control = AcquireControl(client, sh.name, create, options);
  if (sh.control.size() < detail::kHeaderBytes) {
    Fail(Errc::kInvalidArgument, "'" + sh.name + "' is not a channel");
  }
  sh.header = reinterpret_cast<ControlHeader*>(sh.control.writable_data().data());
  ControlHeader& h = *sh.header;
  // A creator that is still writing the header: wait a little (it takes microseconds).
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (h.ready.load() != 1) {
    if (std::chrono::steady_clock::now() > until) {
      Fail(Errc::kTimeout, "channel '" + sh.name + "': header never completed (creator died?)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // One private copy of the header, validated as a whole: any participant can rewrite the
  // shared one at any time, so it is read once here and never for sizes or indices again.
  const uint64_t magic = detail::ReadOnce(h.magic);
  const uint32_t version = detail::ReadOnce(h.version);
  detail::Geometry& geo = sh.geometry;
  geo.slot_count = detail::ReadOnce(h.slot_count);
  const uint32_t policy = detail::ReadOnce(h.policy);
  geo.policy = static_cast<ChannelPolicy>(policy);
  geo.frame_bytes = detail::ReadOnce(h.frame_bytes);
  geo.slot_stride = detail::ReadOnce(h.slot_stride);
  const uint32_t ndim = detail::ReadOnce(h.ndim);
  char format[sizeof(h.format) + 1] = {};
  for (size_t i = 0; i < sizeof(h.format); ++i) format[i] = detail::ReadOnce(h.format[i]);
  sh.format = format;
  if (magic != detail::kMagic || version != detail::kLayoutVersion || geo.slot_count < 2 ||
      geo.slot_count > detail::kMaxSlots || ndim > kMaxDims ||
      (policy != static_cast<uint32_t>(ChannelPolicy::kBlock) &&
       policy != static_cast<uint32_t>(ChannelPolicy::kLatest)) ||
      sh.control.size() < geo.control_bytes()) {
    Fail(Errc::kInvalidArgument, "'" + sh.name + "' is not a channel of this version");
  }
  sh.shape.resize(ndim);
  for (uint32_t i = 0; i < ndim; ++i) sh.shape[i] = detail::ReadOnce(h.shape[i]);
  // The sizes must be the ones the creator derives from format and shape (Channel's create path
  // above), so a rewritten frame size or stride is refused here rather than used.
  auto item = FormatItemSize(sh.format);
  auto bytes = item ? ShapeBytes(sh.shape, *item) : std::nullopt;
  if (!bytes || *bytes == 0 || *bytes != geo.frame_bytes ||
      geo.slot_stride != detail::SlotStride(geo.frame_bytes) || geo.slot_stride == 0) {
    Fail(Errc::kInvalidArgument, "'" + sh.name + "' has an inconsistent channel header");
  }
  if (create) {
    // Slots and policy the caller left unset are whatever the channel has.
    const uint32_t slots_asked = options.slots.value_or(geo.slot_count);
    const ChannelPolicy policy_asked = options.policy.value_or(geo.policy);
    if (sh.format != options.format || sh.shape != options.shape || geo.slot_count != slots_asked ||
        geo.policy != policy_asked) {
      Fail(Errc::kInvalidArgument, "channel '" + sh.name + "' exists with " +
                                       Describe(sh.format, sh.shape, geo.slot_count, policy) +
                                       ", not " +
                                       Describe(options.format, options.shape, slots_asked,
                                                static_cast<uint32_t>(policy_asked)));
    }
  }
}

Channel::~Channel() = default;
Channel::Channel(Channel&&) noexcept = default;
Channel& Channel::operator=(Channel&&) noexcept = default;

const std::string& Channel::name() const noexcept { return shared_->name; }
const std::string& Channel::format() const noexcept { return shared_->format; }
const std::vector<uint64_t>& Channel::shape() const noexcept { return shared_->shape; }
size_t Channel::frame_bytes() const noexcept { return shared_->geometry.frame_bytes; }
uint32_t Channel::slots() const noexcept { return shared_->geometry.slot_count; }
ChannelPolicy Channel::policy() const noexcept { return shared_->geometry.policy; }
uint32_t Channel::reader_count() const noexcept {
  return static_cast<uint32_t>(std::popcount(shared_->header->reader_active.load()));
}

// A participant's own view: the control lease is shared, the data lease is its own (read-only
// for readers), so a Reader's frames are read-only by the kernel's enforcement.
static std::shared_ptr<ChannelShared> Participant(Client& client, const ChannelShared& base,
                                                  Mode data_mode) {
  auto sh = std::make_shared<ChannelShared>();
  sh->name = base.name;
  sh->format = base.format;
  sh->shape = base.shape;
  sh->geometry = base.geometry;
  sh->control = client.Acquire(base.name, Mode::kWrite);
  if (sh->control.size() < sh->geometry.control_bytes()) {
    Fail(Errc::kInvalidArgument, "channel '" + base.name + "': control segment too small");
  }
  sh->header = reinterpret_cast<ControlHeader*>(sh->control.writable_data().data());
  sh->data = client.Acquire(base.name + ".data", data_mode);
  if (sh->data.size() < sh->geometry.data_bytes()) {
    Fail(Errc::kInvalidArgument, "channel '" + base.name + "': data segment too small");
  }
  sh->slots_base = const_cast<std::byte*>(sh->data.data().data());
  return sh;
}

Writer Channel::writer(std::chrono::milliseconds timeout) {
  WriterOptions options;
  options.timeout = timeout;
  return writer(options);
}

Writer Channel::writer(const WriterOptions& options) {
  LeaseOptions token_options{.exclusive = true, .timeout = options.timeout};
  token_options.interrupted = options.interrupted;
  Lease token;
  try {
    token = client_->Acquire(shared_->name + ".writer", Mode::kWrite, token_options);
  } catch (const Error& e) {
    if (e.errc() != Errc::kTimeout) throw;
    throw Error(Errc::kTimeout, "channel '" + shared_->name + "' already has a writer");
  }
  Writer w;
  w.shared_ = Participant(*client_, *shared_, Mode::kWrite);
  w.shared_->token = std::move(token);
  ControlHeader& h = *w.shared_->header;
  // We hold the token, so no other writer runs: a slot left claimed was a dead writer's
  // half-written frame. It was never published, so no reader has seen it; it becomes free.
  for (uint32_t i = 0; i < w.shared_->slot_count(); ++i) {
    SlotHeader& s = w.shared_->slot(i);
    uint32_t claimed = detail::kSlotClaimed;
    if (s.state.compare_exchange_strong(claimed, detail::kSlotEmpty)) s.seq.store(0);
  }
  detail::ProcessId self = detail::Self();
  h.writer_pid.store(self.pid);
  h.writer_start_time.store(self.start_time);
  // Active before the new generation: ChannelShared::EndedGeneration reads them the other way.
  h.writer_state.store(detail::kWriterActive);
  h.writer_generation.fetch_add(1);
  w.next_seq_ = h.published.load() + 1;
  w.shared_->ReclaimDeadReaders();
  w.shared_->WakeReaders();
  return w;
}

Reader Channel::reader(const ReaderOptions& options) {
  Reader r;
  r.shared_ = Participant(*client_, *shared_, Mode::kRead);
  r.shared_->busy_poll = options.busy_poll;
  ChannelShared& sh = *r.shared_;
  ControlHeader& h = *sh.header;
  auto rs = std::make_shared<detail::ReaderState>();
  for (int round = 0;; ++round) {
    uint64_t claimed = h.reader_claimed.load();
    if (~claimed == 0) {
      if (round == 0 && sh.ReclaimDeadReaders() > 0) continue;
      Fail(Errc::kLimitLeases,
           "channel '" + sh.name + "': " + std::to_string(kMaxChannelReaders) + " readers already");
    }
    uint32_t index = static_cast<uint32_t>(std::countr_one(claimed));
    uint64_t bit = uint64_t{1} << index;
    if (!h.reader_claimed.compare_exchange_strong(claimed, claimed | bit)) continue;
    rs->index = index;
    rs->bit = bit;
    break;
  }
  detail::ProcessId self = detail::Self();
  detail::ReaderRecord& rec = h.readers[rs->index];
  rec.start_time.store(self.start_time);
  rs->owner = ((h.reader_generation.fetch_add(1) + 1) << 32) | self.pid;
  rec.owner.store(rs->owner);
  // Stale bits of an earlier owner of this record were cleared when it was freed.
  h.reader_active.fetch_or(rs->bit);
  // We receive the frames published after this point. A frame whose mask already has our bit
  // but that was published before we read `published` is ours too (delivered, not leaked).
  uint64_t last = h.published.load();
  for (uint32_t i = 0; i < sh.slot_count(); ++i) {
    SlotHeader& s = sh.slot(i);
    if (s.state.load() == detail::kSlotPublished && (s.pending.load() & rs->bit)) {
      last = std::min(last, s.seq.load() - 1);
    }
  }
  rs->last = last;
  rs->last_for_helper.store(last, std::memory_order_relaxed);
  r.state_ = std::move(rs);
  return r;
}

void Channel::Remove(Client& client, std::string_view name) {
  std::string base(name);
  // Only a channel's parts go: a plain segment of that name (and a user's `<name>.data` beside
  // it) is never deleted as if it were one. The magic is enough to tell; the rest of the header
  // may have been rewritten by a participant and must not keep the channel from going.
  {
    std::error_code ec;
    Lease control = client.Acquire(base, Mode::kRead, {.timeout = std::chrono::seconds(5)}, ec);
    if (ec == Errc::kNotFound) Fail(Errc::kNotFound, "no channel '" + base + "'");
    if (ec) throw Error(static_cast<Errc>(ec.value()), ec.message());
    uint64_t magic = 0;
    if (control.size() >= sizeof(magic)) std::memcpy(&magic, control.data().data(), sizeof(magic));
    if (magic != detail::kMagic) {
      Fail(Errc::kInvalidArgument, "'" + base + "' is a segment, not a channel: remove it as one");
    }
  }
  int removed = 0;
  for (const std::string& part : {base, base + ".data", base + ".writer"}) {
    std::error_code ec;
    client.Remove(part, ec);
    if (!ec)
      ++removed;
    else if (ec != Errc::kNotFound)
      throw Error(static_cast<Errc>(ec.value()), ec.message());
  }
  if (removed == 0) Fail(Errc::kNotFound, "no channel '" + base + "'");
}

}  // namespace shmlease
