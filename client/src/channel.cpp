// Frame channels over daemon-made memory (docs/CHANNELS.md has the layout and the protocol).
//
// Ownership: a ChannelShared is one participant's attachment (the writer's or one reader's): its
// mappings, its place in the roster and a share of the Client's connection. Writer or Reader and
// every Frame taken through it share it, so memory stays mapped and the attachment counted while
// any of them lives; the last one leaves the channel. A ReaderState owns the reader's eventfd and
// helper thread (stopped and closed with the Reader).
//
// Trust: the geometry comes from the daemon (ChannelInfo) and is kept privately; the frames part is
// read-only to readers and reader pages read-only to the writer (the kernel enforces both). Every
// value read from shared memory that could index or size memory is checked before use.
#include "shmlease/channel.hpp"

#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "connection.hpp"
#include "shmlease/channel_layout.hpp"
#include "shmlease/format.hpp"
#include "shmlease/protocol.hpp"
#include "wire_types.hpp"

namespace shmlease {
namespace detail {
namespace {

namespace layout = channel_layout;
using layout::FramesHeader;
using layout::ReaderPage;
using layout::SlotHeader;
using Clock = std::chrono::steady_clock;

constexpr int kSpinIterations = 2000;
// Longest sleep between looks at the roster; every wake-up that matters comes sooner (the daemon
// and the peers wake sleepers), this only bounds a missed one.
constexpr auto kSlice = std::chrono::milliseconds(50);
constexpr uint64_t kNoEnd = UINT64_MAX;

long Futex(const std::atomic<uint32_t>* word, int op, uint32_t value, const timespec* timeout) {
  // No FUTEX_PRIVATE_FLAG: the word lives in a shared mapping and other processes use it. Waiting
  // works on a read-only mapping too (the writer waits on a reader's page).
  return ::syscall(SYS_futex, const_cast<uint32_t*>(reinterpret_cast<const uint32_t*>(word)), op,
                   value, timeout, nullptr, 0);
}
void FutexWait(const std::atomic<uint32_t>* word, uint32_t expected,
               std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) return;
  timespec ts{static_cast<time_t>(timeout.count() / 1000000000),
              static_cast<long>(timeout.count() % 1000000000)};
  Futex(word, FUTEX_WAIT, expected, &ts);
}
void FutexWakeAll(const std::atomic<uint32_t>* word) { Futex(word, FUTEX_WAKE, INT_MAX, nullptr); }

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

[[noreturn]] void Fail(Errc code, const std::string& what) { throw Error(code, what); }

// The reply of type T, or throws the daemon's error.
template <typename T>
T Expect(const proto::Reply& reply) {
  if (auto* err = std::get_if<proto::ErrorReply>(&reply)) throw Error(err->code, err->message);
  if (auto* ok = std::get_if<T>(&reply)) return *ok;
  throw Error(Errc::kBadMessage, "shmleased answered with an unexpected message type");
}
template <typename T>
T Expect(const Response& response) {
  return Expect<T>(response.reply);
}

}  // namespace

// A mapping of a passed part, unmapped with its owner.
struct PartMapping {
  void* base = nullptr;
  size_t size = 0;
  PartMapping() = default;
  PartMapping(const PartMapping&) = delete;
  PartMapping& operator=(const PartMapping&) = delete;
  PartMapping(PartMapping&& o) noexcept : base(o.base), size(o.size) { o.base = nullptr; }
  PartMapping& operator=(PartMapping&& o) noexcept {
    std::swap(base, o.base);
    std::swap(size, o.size);
    return *this;
  }
  ~PartMapping() {
    if (base != nullptr) ::munmap(base, size);
  }
  // Maps `size` bytes of `fd`; the descriptor may be closed afterwards.
  static PartMapping Map(const Response& response, size_t size, bool writable,
                         const std::string& what) {
    if (response.fd.get() < 0) {
      Fail(Errc::kMapFailed,
           what + ": " +
               (response.map_message.empty() ? "no descriptor came" : response.map_message));
    }
    struct stat st {};
    if (::fstat(response.fd.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) < size) {
      Fail(Errc::kMapFailed, what + ": the daemon passed memory smaller than the channel's");
    }
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void* p = ::mmap(nullptr, size, prot, MAP_SHARED, response.fd.get(), 0);
    if (p == MAP_FAILED) {
      Fail(Errc::kMapFailed, what + ": mmap: " + std::strerror(errno));
    }
    PartMapping m;
    m.base = p;
    m.size = size;
    return m;
  }
};

// The writer's view of one reader: its page, read-only.
struct PeerPage {
  uint64_t generation = 0;
  PartMapping mapping;
  const ReaderPage* page = nullptr;
  Clock::time_point blocking_since{};  // when it started keeping the writer waiting; {} = not
};

struct ChannelShared {
  std::shared_ptr<Connection> connection;
  proto::ChannelInfo info;  // from the daemon: the only source of sizes and indices
  std::string name;
  std::string format;
  std::vector<uint64_t> shape;
  bool latest = false;

  // A participant's attachment (none for a Channel handle).
  bool attached = false;
  bool writer = false;
  uint32_t index = 0;       // a reader's place
  uint64_t generation = 0;  // of the attachment
  uint64_t reconnects = 0;  // of the connection when attached: another count means another one
  PartMapping frames;
  FramesHeader* header = nullptr;
  std::byte* data_base = nullptr;

  // Reader.
  PartMapping own_mapping;
  ReaderPage* own = nullptr;  // nobody else can write it (only the daemon, before we attach)
  bool busy_poll = false;

  // Holder (Channel::Hold): a reader place that takes no frames. How many Frames hold each slot
  // (several arrays of one frame may arrive); the slot's `held` bit goes with the last of them.
  // Frames are released from any thread: the count and the bit change under `hold_mutex`.
  bool holder = false;
  std::mutex hold_mutex;
  std::array<uint32_t, layout::kMaxSlots> hold_count{};

  // Writer (one thread at a time, as the Writer).
  std::array<std::optional<PeerPage>, layout::kMaxReaders> peers;
  // The places of `peers` that were mapped at the last roster change, in order: claim and publish
  // look only at these, not at all 64 places. An evicted one stays listed (its `peers` entry is
  // empty) until the daemon's roster change that follows the eviction.
  std::vector<uint32_t> live;
  uint32_t roster_seen = 0;
  uint64_t next_seq = 1;

  ~ChannelShared() { Leave(); }

  uint32_t slot_count() const { return info.slots; }
  uint64_t valid_slots() const {
    return info.slots >= 64 ? ~uint64_t{0} : (uint64_t{1} << info.slots) - 1;
  }
  SlotHeader& slot(uint32_t i) const {
    auto* base = reinterpret_cast<std::byte*>(header) + layout::kHeaderBytes;
    return *reinterpret_cast<SlotHeader*>(base + size_t{i} * layout::kSlotHeaderBytes);
  }
  std::byte* slot_data(uint32_t i) const { return data_base + size_t{i} * info.slot_stride; }

  // Maps the frames part from an attach reply.
  void MapFrames(const Response& response, bool writable) {
    frames = PartMapping::Map(response, info.frames_bytes, writable,
                              "channel '" + name + "': mapping its frames");
    header = static_cast<FramesHeader*>(frames.base);
    data_base = static_cast<std::byte*>(frames.base) + info.data_offset;
  }

  // Leaves the channel (once): the daemon frees the place or ends the writer's stream.
  void Leave() noexcept {
    if (!attached) return;
    attached = false;
    const proto::ChannelRole role = writer   ? proto::ChannelRole::kWriter
                                    : holder ? proto::ChannelRole::kHolder
                                             : proto::ChannelRole::kReader;
    proto::ChannelDetach detach{info.id, role, index, generation};
    if (!connection || !connection->alive()) return;
    if (writer) {
      // Answered, so that a writer() that follows on any connection finds the place free.
      try {
        connection->Call(detach);
      } catch (...) {
      }
    } else {
      connection->SendOneWay(detach);
    }
  }

  // --- Reader side ---

  // Throws kConnectionLost once the Client was closed: the daemon is about to drop this
  // attachment, so nothing may be taken or published through it (an atomic load).
  void CheckOpen() const {
    if (connection->alive()) return;
    Fail(Errc::kConnectionLost,
         "channel '" + name + "': the connection to shmleased is closed (Client::Close)");
  }
  // Throws unless this reader is still attached (kEvicted / kConnectionLost).
  void CheckAttached() const {
    CheckOpen();
    const layout::RosterEntry& e = header->entries[index];
    const uint32_t state = e.state.load(std::memory_order_acquire);
    if (state == layout::kEntryActive && e.generation.load() == generation) return;
    if (state == layout::kEntryEvicted && e.generation.load() == generation) {
      const bool timeout =
          e.reason.load() == static_cast<uint32_t>(proto::ChannelEvictReason::kTimeout);
      Fail(Errc::kEvicted,
           "channel '" + name + "': the writer evicted this reader: " +
               (timeout ? "it kept the writer waiting longer than the reader timeout (" +
                              std::to_string(info.reader_timeout_ms) + " ms)"
                        : std::string("its page held a state no honest reader writes")));
    }
    Fail(Errc::kConnectionLost, "channel '" + name +
                                    "': this reader is no longer attached (its connection to "
                                    "shmleased was lost)");
  }
  // Throws kConnectionLost when the connection the daemon knows this attachment by is gone (a
  // restarted daemon knows nothing of it, and nobody would tell us the writer's end). A poll:
  // called once per sleep slice, not per frame.
  void CheckConnection() const {
    if (connection->Unbroken(reconnects)) return;
    Fail(Errc::kConnectionLost,
         "channel '" + name +
             "': the connection to shmleased was lost, and with it this "
             "participant's place (channels do not survive a daemon restart)");
  }
  bool StillAttached() const {
    const layout::RosterEntry& e = header->entries[index];
    return e.state.load() == layout::kEntryActive && e.generation.load() == generation;
  }
  // Tells the writer that this reader moved on, if it waits on us.
  void NudgeWriter() {
    if (header->waiting_on.load() == index + 1) {
      own->released.fetch_add(1);
      FutexWakeAll(&own->released);
    }
  }
  // Frames may be released from any thread: atomic updates of the mask.
  void ReleaseSlot(uint32_t i) {
    if (holder) {
      std::lock_guard lock(hold_mutex);
      if (hold_count[i] == 0 || --hold_count[i] > 0) return;
      own->held.fetch_and(~(uint64_t{1} << i));
    } else {
      own->held.fetch_and(~(uint64_t{1} << i));
    }
    NudgeWriter();
  }
  // The writer generation whose stream has ended, or kNoEnd while a writer is active or none came.
  uint64_t EndedGeneration() const {
    const uint64_t g = header->writer_generation.load();
    const uint32_t state = header->writer_state.load();
    return state == layout::kWriterClosed || state == layout::kWriterGone ? g : kNoEnd;
  }

  // --- Writer side ---

  // Maps the pages of readers that joined and drops those of readers that left, when the roster
  // changed since we last looked.
  void RefreshReaders() {
    const uint32_t version = header->roster_version.load();
    if (version == roster_seen) return;
    roster_seen = version;
    // `live` follows `peers` however this ends (a failed mapping throws midway); reserved, so
    // that the destructor below never allocates.
    live.reserve(layout::kMaxReaders);
    struct Relist {
      ChannelShared& sh;
      ~Relist() {
        sh.live.clear();
        for (uint32_t i = 0; i < layout::kMaxReaders; ++i) {
          if (sh.peers[i]) sh.live.push_back(i);
        }
      }
    } relist{*this};
    for (uint32_t i = 0; i < layout::kMaxReaders; ++i) {
      const layout::RosterEntry& e = header->entries[i];
      const bool active = e.state.load() == layout::kEntryActive;
      const uint64_t g = e.generation.load();
      std::optional<PeerPage>& peer = peers[i];
      if (peer && (!active || peer->generation != g)) peer.reset();
      if (!active || peer) continue;
      Response r =
          connection->Call(proto::ChannelPart{info.id, proto::ChannelPartKind::kReaderPage, i, g});
      if (auto* err = std::get_if<proto::ErrorReply>(&r.reply)) {
        if (err->code == Errc::kNotFound) continue;  // left meanwhile
        throw Error(err->code, err->message);
      }
      Expect<proto::ChannelPartOk>(r);
      PeerPage p;
      p.generation = g;
      p.mapping = PartMapping::Map(r, layout::kReaderPageBytes, false,
                                   "channel '" + name + "': mapping a reader's page");
      p.page = static_cast<const ReaderPage*>(p.mapping.base);
      peer = std::move(p);
    }
  }
  void Evict(uint32_t i, proto::ChannelEvictReason reason) {
    if (!peers[i]) return;
    const uint64_t g = peers[i]->generation;
    peers[i].reset();
    Expect<proto::ChannelDone>(connection->Call(proto::ChannelEvict{info.id, i, g, reason}));
  }
  bool AnyHolds(uint32_t slot_index) const {
    const uint64_t bit = uint64_t{1} << slot_index;
    for (uint32_t r : live) {
      if (peers[r] && (peers[r]->page->held.load() & bit)) return true;
    }
    return false;
  }
};

struct ReaderState {
  uint64_t last = 0;                         // the newest sequence number this reader is past
  std::atomic<uint64_t> last_for_helper{0};  // a copy of `last` for the fileno helper thread
  uint64_t missed_carry = 0;                 // kLatest: frames skipped and not yet reported
  // Adaptive spin before sleeping: doubled when a frame came while spinning, halved when the
  // reader had to sleep anyway (docs/CHANNELS.md, "Waiting").
  int spin = kSpinIterations;
  int event_fd = -1;
  std::thread helper;
  std::atomic<bool> stop{false};
  // The writer generation whose end this reader has reported: the eventfd is not signalled for
  // it any more. `event_mutex` orders the helper's decision to signal against ReportEnd's drain.
  std::atomic<uint64_t> end_reported{kNoEnd};
  std::mutex event_mutex;

  bool EndUnreported(const ChannelShared& sh) const {
    uint64_t generation = sh.EndedGeneration();
    return generation != kNoEnd && generation != end_reported.load();
  }
};

}  // namespace detail

using detail::ChannelShared;
using detail::Fail;
using detail::FutexWakeAll;
namespace layout = channel_layout;
using layout::FramesHeader;
using layout::SlotHeader;

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
  ChannelShared& sh = *shared_;
  if (writer_) {
    // Discarded unpublished frame: the slot goes back empty (readers never looked at it).
    SlotHeader& s = sh.slot(slot_);
    s.seq.store(0);
    s.state.store(layout::kSlotEmpty);
    // Its bit in `claimed` stays: the slot may hold some of this frame's bytes now, and a reader
    // that held it late must not take it for the frame that was there (TryNext).
  } else {
    sh.ReleaseSlot(slot_);
  }
  shared_.reset();
  data_ = nullptr;
  size_ = 0;
}

std::span<std::byte> Frame::writable_data() const {
  if (!writer_) throw Error(Errc::kPermissionDenied, "a reader's frame is read-only");
  return {data_, size_};
}

std::shared_ptr<const void> Frame::mapping_owner() const noexcept { return shared_; }

FrameLocation Frame::location() const {
  if (!shared_) throw Error(Errc::kInvalidArgument, "an empty frame has no location");
  if (writer_) {
    throw Error(Errc::kInvalidArgument,
                "channel '" + shared_->name +
                    "': a claimed frame is the writer's alone until it is published; no other "
                    "process can hold it");
  }
  return {shared_->name, shared_->info.id, shared_->info.created_unix_ns, slot_, seq_};
}

bool Frame::held() const noexcept {
  if (!shared_ || !shared_->attached || !shared_->connection->alive()) return false;
  const ChannelShared& sh = *shared_;
  if (writer_) {
    return sh.header->writer_state.load() == layout::kWriterActive &&
           sh.header->writer_generation.load() == sh.generation;
  }
  return sh.StillAttached();
}

// --------------------------------------------------------------------------------------- Writer

Writer::~Writer() { Close(); }
Writer::Writer(Writer&& o) noexcept : shared_(std::move(o.shared_)) {}
Writer& Writer::operator=(Writer&& o) noexcept {
  if (this != &o) {
    Close();
    shared_ = std::move(o.shared_);
  }
  return *this;
}

void Writer::Close() noexcept {
  if (!shared_) return;
  shared_->Leave();
  shared_.reset();
}

uint32_t Writer::reader_count() const noexcept {
  return shared_ ? shared_->header->active_readers.load() : 0;
}

bool Writer::WaitForReaders(uint32_t n, std::chrono::milliseconds timeout) {
  if (!shared_) throw Error(Errc::kInvalidArgument, "writer is closed");
  FramesHeader& h = *shared_->header;
  const bool forever = timeout.count() < 0;
  const auto deadline = detail::Clock::now() + (forever ? std::chrono::milliseconds(0) : timeout);
  for (;;) {
    const uint32_t version = h.roster_version.load();
    if (h.active_readers.load() >= n) return true;
    auto now = detail::Clock::now();
    if (!forever && now >= deadline) return false;
    auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(detail::kSlice);
    if (!forever)
      wait = std::min(wait, std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now));
    detail::FutexWait(&h.roster_version, version, wait);
    shared_->CheckConnection();  // a lost daemon would never count a reader: say so
  }
}

Frame Writer::Claim(std::chrono::milliseconds timeout) {
  if (!shared_) throw Error(Errc::kInvalidArgument, "writer is closed");
  ChannelShared& sh = *shared_;
  FramesHeader& h = *sh.header;
  sh.CheckOpen();
  if (h.writer_state.load() != layout::kWriterActive ||
      h.writer_generation.load() != sh.generation) {
    throw Error(Errc::kConnectionLost, "channel '" + sh.name +
                                           "': no longer its writer (the connection to shmleased "
                                           "was lost, and with it the writer's place)");
  }
  const bool latest = sh.latest;
  const bool forever = timeout.count() < 0;
  const auto deadline = detail::Clock::now() + (forever ? std::chrono::milliseconds(0) : timeout);
  // Beyond a century a timeout means none (and the comparison below in nanoseconds would overflow).
  const auto reader_timeout =
      std::min(std::chrono::milliseconds(sh.info.reader_timeout_ms),
               std::chrono::milliseconds(std::chrono::hours(24 * 365 * 100)));

  // The free slot with the oldest frame; else -1 and `blocker` = a reader that keeps us waiting.
  int blocker = -1;
  auto pick = [&]() -> int {
    blocker = -1;
    int best = -1;
    uint64_t best_seq = UINT64_MAX;
    uint64_t held_any = 0;
    for (uint32_t r : sh.live) {
      auto& p = sh.peers[r];
      if (!p) continue;
      uint64_t held = p->page->held.load();
      if (held & ~sh.valid_slots()) {
        // No honest reader holds a slot the channel does not have.
        sh.Evict(r, proto::ChannelEvictReason::kBadState);
        continue;
      }
      held_any |= held;
    }
    for (uint32_t i = 0; i < sh.slot_count(); ++i) {
      SlotHeader& s = sh.slot(i);
      if (s.state.load() == layout::kSlotClaimed || (held_any & (uint64_t{1} << i))) continue;
      const uint64_t seq = s.seq.load();
      if (seq < best_seq) best = static_cast<int>(i), best_seq = seq;
    }
    if (best < 0) {
      for (uint32_t r : sh.live) {
        if (sh.peers[r] && sh.peers[r]->page->held.load() != 0) {
          blocker = static_cast<int>(r);
          break;
        }
      }
      return -1;
    }
    if (!latest && best_seq != 0) {
      // kBlock: every reader must be past the frame in it.
      for (uint32_t r : sh.live) {
        auto& p = sh.peers[r];
        if (p && p->page->last_taken.load() < best_seq) {
          blocker = static_cast<int>(r);
          return -1;
        }
      }
    }
    return best;
  };
  // Claims slot `i`, then looks again whether a reader took it meanwhile (it sets its held bit,
  // then checks the slot: one of the two sees the other).
  auto claim = [&](int i) -> bool {
    SlotHeader& s = sh.slot(static_cast<uint32_t>(i));
    const uint64_t bit = uint64_t{1} << i;
    // Both marks come before the look at the holders (seq_cst): a reader that holds the slot
    // after them sees one of them (TryNext).
    h.claimed.fetch_or(bit);
    const uint32_t before = s.state.exchange(layout::kSlotClaimed);
    sh.RefreshReaders();  // a reader that joined since is seen too
    if (sh.AnyHolds(static_cast<uint32_t>(i))) {
      s.state.store(before);
      h.claimed.fetch_and(~bit);
      return false;
    }
    return true;
  };

  int slot = -1;
  for (;;) {
    sh.RefreshReaders();
    int i = pick();
    if (i >= 0 && claim(i)) {
      slot = i;
      break;
    }
    if (i >= 0) continue;
    for (int spin = 0; spin < detail::kSpinIterations && slot < 0; ++spin) {
      detail::CpuRelax();
      if ((spin & 63) == 63) {
        i = pick();
        if (i >= 0 && claim(i)) slot = i;
      }
    }
    if (slot >= 0) break;
    sh.CheckConnection();  // (a poll; only while waiting)
    auto now = detail::Clock::now();
    // Who keeps us waiting, and since when; a reader past the reader timeout goes.
    for (uint32_t r : sh.live) {
      auto& p = sh.peers[r];
      if (!p) continue;
      if (static_cast<int>(r) != blocker) {
        p->blocking_since = {};
      } else if (p->blocking_since == detail::Clock::time_point{}) {
        p->blocking_since = now;
      } else if (reader_timeout.count() > 0 && now - p->blocking_since >= reader_timeout) {
        sh.Evict(r, proto::ChannelEvictReason::kTimeout);
        blocker = -1;
      }
    }
    if (!forever && now >= deadline) {
      throw Error(Errc::kTimeout,
                  "channel '" + sh.name + "': no free slot within the timeout (" +
                      (latest ? "readers hold all " : "readers hold or have not read all ") +
                      std::to_string(sh.slot_count()) + " slots)");
    }
    auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(detail::kSlice);
    if (!forever)
      wait = std::min(wait, std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now));
    if (reader_timeout.count() > 0 && reader_timeout < detail::kSlice) {
      wait = std::min(wait, std::chrono::duration_cast<std::chrono::nanoseconds>(reader_timeout));
    }
    if (blocker >= 0 && sh.peers[static_cast<uint32_t>(blocker)]) {
      const auto* page = sh.peers[static_cast<uint32_t>(blocker)]->page;
      h.waiting_on.store(static_cast<uint32_t>(blocker) + 1);
      const uint32_t v = page->released.load();
      i = pick();
      if (i < 0) detail::FutexWait(&page->released, v, wait);
      h.waiting_on.store(0);
    } else {
      // Nobody to wait on (the frames are ours, or the roster is changing): wait for the roster.
      const uint32_t v = h.roster_version.load();
      i = pick();
      if (i < 0)
        detail::FutexWait(&h.roster_version, v, std::min(wait, std::chrono::nanoseconds(1000000)));
    }
  }

  // The reader timeout counts one wait for a slot, across claims that timed out (a caller may wait
  // in short claims, as Python does to see Ctrl-C); a slot found ends it for everyone.
  for (uint32_t r : sh.live) {
    if (sh.peers[r]) sh.peers[r]->blocking_since = {};
  }
  Frame f;
  f.shared_ = shared_;
  f.slot_ = static_cast<uint32_t>(slot);
  f.data_ = sh.slot_data(f.slot_);
  f.size_ = sh.info.frame_bytes;
  f.writer_ = true;
  return f;
}

uint64_t Writer::Publish(Frame& frame, std::span<const std::byte> meta) {
  if (!shared_) throw Error(Errc::kInvalidArgument, "writer is closed");
  return Publish(frame, shared_->info.frame_bytes, meta);
}

uint64_t Writer::Publish(Frame& frame, size_t length, std::span<const std::byte> meta) {
  if (!shared_ || frame.shared_ != shared_ || !frame.writer_) {
    throw Error(Errc::kInvalidArgument, "publish: not a frame claimed from this writer");
  }
  ChannelShared& sh = *shared_;
  sh.CheckOpen();
  if (meta.size() > kMaxFrameMeta) {
    throw Error(Errc::kInvalidArgument,
                "publish: metadata longer than " + std::to_string(kMaxFrameMeta) + " bytes");
  }
  if (sh.info.variable ? length > sh.info.frame_bytes : length != sh.info.frame_bytes) {
    throw Error(Errc::kInvalidArgument,
                "publish: length " + std::to_string(length) +
                    (sh.info.variable ? " is above the channel's largest frame, "
                                      : " is not the channel's frame size, ") +
                    std::to_string(sh.info.frame_bytes));
  }
  FramesHeader& h = *sh.header;
  SlotHeader& s = sh.slot(frame.slot_);
  // Fields a reader reads only after it saw state == published: ordered by that release store.
  if (!meta.empty()) std::memcpy(s.meta, meta.data(), meta.size());
  const auto meta_size = static_cast<uint32_t>(meta.size());
  const int64_t now = detail::MonotonicNs();
  s.meta_size.store(meta_size, std::memory_order_relaxed);
  s.length.store(length, std::memory_order_relaxed);
  s.timestamp_ns.store(now, std::memory_order_relaxed);
  const uint64_t seq = sh.next_seq++;
  s.seq.store(seq, std::memory_order_relaxed);
  s.state.store(layout::kSlotPublished, std::memory_order_release);
  // The newest frame's record, beside `published` (a sequence lock: 0 while it changes).
  h.record_seq.store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  h.record_length.store(length, std::memory_order_relaxed);
  h.record_timestamp_ns.store(now, std::memory_order_relaxed);
  h.record_meta_size.store(meta_size, std::memory_order_relaxed);
  h.published_slot.store(frame.slot_, std::memory_order_relaxed);
  h.record_seq.store(seq, std::memory_order_release);
  h.published.store(seq, std::memory_order_release);
  // After `published`: a reader that sees the claim gone sees this frame's number too.
  h.claimed.fetch_and(~(uint64_t{1} << frame.slot_));
  // seq_cst read-modify-write: ordered before the looks at the readers' `sleeping` below (a
  // reader sets `sleeping` and then reads `published` before it sleeps).
  h.notify.fetch_add(1);
  bool wake = h.roster_version.load() != sh.roster_seen;  // a reader we do not know yet
  for (size_t k = 0; k < sh.live.size() && !wake; ++k) {
    const auto& p = sh.peers[sh.live[k]];
    if (p && p->page->sleeping.load() != 0) wake = true;
  }
  if (wake) FutexWakeAll(&h.notify);
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
    // A wake needs only read access to the word: wakes the helper (and, harmlessly, others).
    FutexWakeAll(&shared_->header->notify);
    state_->helper.join();
  }
  if (state_->event_fd >= 0) ::close(state_->event_fd);
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
  FramesHeader& h = *sh.header;
  sh.CheckAttached();
  const bool latest = sh.latest;
  const uint32_t slots = sh.slot_count();
  for (int attempt = 0; attempt < 64; ++attempt) {
    const uint64_t published = h.published.load(std::memory_order_acquire);
    if (published <= rs.last) break;
    int pick = -1;
    uint64_t pick_seq = 0;
    // Fast path: exactly one new frame, in the slot the writer names, and its record read
    // from the line of `published` (checked: both are hints).
    bool from_record = false;
    uint64_t record_length = 0;
    int64_t record_timestamp = 0;
    uint32_t record_meta_size = 0;
    if (attempt == 0 && published == rs.last + 1) {
      const uint64_t before = h.record_seq.load(std::memory_order_acquire);
      const uint32_t hint = h.published_slot.load(std::memory_order_relaxed);
      record_length = h.record_length.load(std::memory_order_relaxed);
      record_timestamp = h.record_timestamp_ns.load(std::memory_order_relaxed);
      record_meta_size = h.record_meta_size.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      const uint64_t after = h.record_seq.load(std::memory_order_relaxed);
      if (hint < slots) {
        pick = static_cast<int>(hint);
        pick_seq = published;
        from_record = before == published && after == published;
      }
    }
    if (pick < 0) {
      for (uint32_t i = 0; i < slots; ++i) {
        SlotHeader& s = sh.slot(i);
        if (s.state.load(std::memory_order_acquire) != layout::kSlotPublished) continue;
        const uint64_t seq = s.seq.load();
        if (seq <= rs.last || seq > published) continue;
        if (pick < 0 || (latest ? seq > pick_seq : seq < pick_seq)) {
          pick = static_cast<int>(i);
          pick_seq = seq;
        }
      }
    }
    if (pick < 0) {
      // Nothing for us up to `published`: reused before we came (kLatest), or published before
      // we attached.
      if (latest) rs.missed_carry += published - rs.last;
      rs.last = published;
      sh.own->last_taken.store(published);
      rs.last_for_helper.store(published, std::memory_order_relaxed);
      sh.NudgeWriter();
      break;
    }
    const uint32_t i = static_cast<uint32_t>(pick);
    SlotHeader& s = sh.slot(i);
    // Hold first, then check that the slot still has the frame: the writer claims first, then
    // checks the holders, so a frame we hold is never overwritten.
    const uint64_t bit = uint64_t{1} << i;
    sh.own->held.fetch_or(bit);  // seq_cst
    // The record's frame is still in the slot if the writer has not claimed it since (it marks
    // `claimed` before it looks at the holders, and unmarks it only after publishing the next
    // frame, so a newer `published` shows then) and nothing newer was published.
    if (from_record && ((h.claimed.load() & bit) != 0 || h.published.load() != pick_seq)) {
      from_record = false;  // let the slot itself say
    }
    if (!from_record &&
        (s.state.load() != layout::kSlotPublished || s.seq.load() != pick_seq)) {
      sh.ReleaseSlot(i);
      continue;  // reused meanwhile, or a stale hint: look again
    }
    if (latest) {
      out.missed_ = rs.missed_carry + (pick_seq - rs.last - 1);
      rs.missed_carry = 0;
    }
    rs.last = pick_seq;
    sh.own->last_taken.store(pick_seq);
    rs.last_for_helper.store(pick_seq, std::memory_order_relaxed);
    sh.NudgeWriter();
    // Read once: the bound checked is the size used.
    const uint32_t meta_size =
        from_record ? record_meta_size : s.meta_size.load(std::memory_order_relaxed);
    const uint64_t length = !sh.info.variable ? sh.info.frame_bytes
                            : from_record     ? record_length
                                              : s.length.load(std::memory_order_relaxed);
    if (meta_size > kMaxFrameMeta || length > sh.info.frame_bytes) {
      // This frame is lost to us (we are past it); the stream goes on with the next one.
      sh.ReleaseSlot(i);
      if (latest) rs.missed_carry = out.missed_ + 1;
      if (rs.event_fd >= 0) RearmEvent();
      Fail(Errc::kBadMessage,
           "channel '" + sh.name + "': frame " + std::to_string(pick_seq) + " has " +
               (meta_size > kMaxFrameMeta
                    ? std::to_string(meta_size) + " bytes of metadata, above " +
                          std::to_string(kMaxFrameMeta)
                    : "length " + std::to_string(length) + ", above the largest frame " +
                          std::to_string(sh.info.frame_bytes)) +
               " (the writer wrote a value no honest writer writes)");
    }
    out.shared_ = shared_;
    out.slot_ = i;
    out.data_ = sh.slot_data(i);
    out.size_ = static_cast<size_t>(length);
    out.seq_ = pick_seq;
    out.timestamp_ns_ = from_record ? record_timestamp : s.timestamp_ns.load();
    out.meta_ = s.meta;
    out.meta_size_ = meta_size;
    break;
  }
  if (rs.event_fd >= 0) RearmEvent();
  return out;
}

// The eventfd is readable while a frame is ready: drain it, then signal again if one still is.
void Reader::RearmEvent() noexcept {
  uint64_t value;
  (void)!::read(state_->event_fd, &value, sizeof(value));
  const ChannelShared& sh = *shared_;
  if (sh.header->published.load() > state_->last || state_->EndUnreported(sh) ||
      !sh.StillAttached()) {
    uint64_t one = 1;
    (void)!::write(state_->event_fd, &one, sizeof(one));
  }
}

void Reader::ReportEnd(uint64_t generation) noexcept {
  detail::ReaderState& rs = *state_;
  std::lock_guard<std::mutex> lock(rs.event_mutex);
  rs.end_reported.store(generation);
  if (rs.event_fd >= 0) RearmEvent();
}

bool Reader::AtEnd() {
  if (!shared_) throw Error(Errc::kInvalidArgument, "reader is closed");
  shared_->CheckAttached();
  uint64_t generation = shared_->EndedGeneration();
  if (generation == detail::kNoEnd) return false;
  // A frame published before the end (or by a writer that took over since) is still to be read.
  if (shared_->header->published.load() > state_->last) return false;
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
  FramesHeader& h = *sh.header;
  detail::ReaderState& rs = *state_;
  const bool forever = timeout.count() < 0;
  const auto deadline = detail::Clock::now() + (forever ? std::chrono::milliseconds(0) : timeout);
  for (;;) {
    Frame f = TryNext();
    if (f) return f;
    if (uint64_t generation = sh.EndedGeneration(); generation != detail::kNoEnd) {
      // The writer may have published between our look and its end: one more look.
      f = TryNext();
      if (f) return f;
      ReportEnd(generation);
      throw Error(Errc::kEndOfStream, "channel '" + sh.name + "': the writer is gone");
    }
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
    auto now = detail::Clock::now();
    if (!forever && now >= deadline) {
      throw Error(Errc::kTimeout, "channel '" + sh.name + "': no frame within the timeout");
    }
    auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(detail::kSlice);
    if (!forever) {
      wait = std::min(wait, std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now));
    }
    const uint32_t v = h.notify.load();
    if (sh.busy_poll) {
      // Reads the clock only every 1024 looks: a clock read costs more than a look.
      auto until = now + wait;
      for (uint32_t i = 1; h.published.load(std::memory_order_acquire) <= rs.last; ++i) {
        if ((i & 1023) != 0) continue;
        if (detail::Clock::now() >= until || h.notify.load() != v) break;
        // The writer's claim read our `held` and left the line shared: take it back for
        // writing now, so that holding the next frame does not wait for it.
        __builtin_prefetch(&sh.own->held, 1);
      }
      if (h.published.load() <= rs.last && h.notify.load() == v) sh.CheckConnection();
      continue;
    }
    sh.own->sleeping.fetch_add(1);  // seq_cst: before the look at `published`
    bool slept = false;
    if (h.published.load() <= rs.last && sh.EndedGeneration() == detail::kNoEnd &&
        sh.StillAttached()) {
      const auto t0 = detail::Clock::now();
      detail::FutexWait(&h.notify, v, wait);
      slept = detail::Clock::now() - t0 >= wait;
    }
    sh.own->sleeping.fetch_sub(1);
    // A whole slice without news: is the daemon that would tell us still there?
    if (slept) sh.CheckConnection();
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
  // ready, the writer is gone or this reader was removed; it never takes frames itself.
  std::shared_ptr<ChannelShared> sh = shared_;
  detail::ReaderState* state = state_.get();
  rs.helper = std::thread([sh, state] {
    FramesHeader& h = *sh->header;
    while (!state->stop.load()) {
      sh->own->sleeping.fetch_add(1);
      uint32_t v = h.notify.load();
      {
        std::lock_guard<std::mutex> lock(state->event_mutex);
        bool ready = h.published.load() > state->last_for_helper.load(std::memory_order_relaxed) ||
                     state->EndUnreported(*sh) || !sh->StillAttached();
        if (ready) {
          uint64_t one = 1;
          (void)!::write(state->event_fd, &one, sizeof(one));
        }
      }
      detail::FutexWait(&h.notify, v, detail::kSlice);
      sh->own->sleeping.fetch_sub(1);
    }
  });
  RearmEvent();
  return fd;
}

// -------------------------------------------------------------------------------------- Channel

namespace {

// The geometry the daemon sent must be the one its slot count and frame size give (a daemon of
// another layout version would differ): nothing is mapped or indexed by anything else.
void CheckGeometry(const proto::ChannelInfo& c) {
  layout::Geometry g;
  if (!layout::ComputeGeometry(c.slots, c.frame_bytes, g) || g.slot_stride != c.slot_stride ||
      g.data_offset != c.data_offset || g.frames_bytes != c.frames_bytes ||
      c.reader_page_bytes != layout::kReaderPageBytes) {
    Fail(Errc::kBadMessage, "channel '" + c.name +
                                "': shmleased describes a layout this library "
                                "does not use (different versions?)");
  }
}

std::shared_ptr<ChannelShared> MakeShared(const std::shared_ptr<detail::Connection>& connection,
                                          const proto::ChannelInfo& info) {
  CheckGeometry(info);
  auto sh = std::make_shared<ChannelShared>();
  sh->connection = connection;
  sh->info = info;
  sh->name = info.name;
  sh->format = info.format;
  sh->shape = info.shape;
  sh->latest = info.policy == proto::ChannelPolicy::kLatest;
  return sh;
}

}  // namespace

Channel::Channel(Client& client, std::string_view name, const ChannelOptions& options) {
  if (!client.connection_) throw Error(Errc::kConnectionLost, "this client was moved from");
  std::shared_ptr<detail::Connection> connection = client.connection_;
  const std::string channel_name(name);
  const bool create = !options.shape.empty() || options.max_frame_bytes != 0;
  if (options.wait.count() < 0 && options.wait != kWaitForever) {
    Fail(Errc::kInvalidArgument, "channel: wait must be >= 0 or kWaitForever");
  }
  if (options.reader_timeout.count() < 0) {
    Fail(Errc::kInvalidArgument, "channel: reader_timeout must be >= 0");
  }
  proto::ChannelInfo info;
  if (create) {
    if (options.slots && (*options.slots < 2 || *options.slots > layout::kMaxSlots)) {
      Fail(Errc::kInvalidArgument, "channel: slots must be 2..64");
    }
    if (options.policy && *options.policy != ChannelPolicy::kBlock &&
        *options.policy != ChannelPolicy::kLatest) {
      Fail(Errc::kInvalidArgument, "channel: unknown policy");
    }
    proto::ChannelCreate request;
    request.name = channel_name;
    request.format = options.format;
    request.shape = options.shape;
    request.max_frame_bytes = options.max_frame_bytes;
    request.slots = options.slots.value_or(0);
    request.policy = options.policy ? static_cast<uint8_t>(*options.policy) : 0;
    request.reader_timeout_ms = options.reader_timeout.count();
    request.flags = proto::kCreateExistOk;
    request.mode = options.mode;
    info = detail::Expect<proto::ChannelOk>(connection->Call(request)).info;
  } else {
    using std::chrono::milliseconds;
    constexpr milliseconds kMaxPause{50};
    constexpr milliseconds kMaxWait{std::chrono::hours(24 * 365 * 100)};
    const bool forever = options.wait == kWaitForever || options.wait > kMaxWait;
    const auto give_up = detail::Clock::now() + (forever ? milliseconds(0) : options.wait);
    milliseconds pause{1};
    for (;;) {
      detail::Response r = connection->Call(proto::ChannelStat{channel_name});
      auto* err = std::get_if<proto::ErrorReply>(&r.reply);
      if (err == nullptr || err->code != Errc::kNotFound) {
        info = detail::Expect<proto::ChannelOk>(std::move(r)).info;
        break;
      }
      const auto now = detail::Clock::now();
      if (!forever && now >= give_up) {
        if (options.wait.count() == 0) {
          Fail(Errc::kNotFound, err->message +
                                    " (open by name only: pass a shape, or a maximum "
                                    "frame size, to create it)");
        }
        Fail(Errc::kTimeout, "no channel named '" + channel_name + "' after waiting " +
                                 std::to_string(options.wait.count()) + " ms");
      }
      if (options.interrupted && options.interrupted()) {
        Fail(Errc::kCancelled,
             "waiting for channel '" + channel_name + "': interrupted() returned true");
      }
      auto sleep = pause;
      if (!forever) sleep = std::min(sleep, std::chrono::ceil<milliseconds>(give_up - now));
      std::this_thread::sleep_for(sleep);
      pause = std::min(pause * 2, kMaxPause);
    }
  }
  shared_ = MakeShared(connection, info);
}

Channel::~Channel() = default;
Channel::Channel(Channel&&) noexcept = default;
Channel& Channel::operator=(Channel&&) noexcept = default;

const std::string& Channel::name() const noexcept { return shared_->name; }
const std::string& Channel::format() const noexcept { return shared_->format; }
const std::vector<uint64_t>& Channel::shape() const noexcept { return shared_->shape; }
size_t Channel::frame_bytes() const noexcept { return shared_->info.frame_bytes; }
uint32_t Channel::slots() const noexcept { return shared_->info.slots; }
ChannelPolicy Channel::policy() const noexcept { return detail::FromWire(shared_->info.policy); }
bool Channel::variable() const noexcept { return shared_->info.variable != 0; }
std::chrono::milliseconds Channel::reader_timeout() const noexcept {
  return std::chrono::milliseconds(shared_->info.reader_timeout_ms);
}
ChannelInfo Channel::Stat() const {
  return detail::FromWire(
      detail::Expect<proto::ChannelOk>(shared_->connection->Call(proto::ChannelStat{shared_->name}))
          .info);
}
uint32_t Channel::reader_count() const { return Stat().readers; }

Writer Channel::writer(std::chrono::milliseconds timeout) {
  WriterOptions options;
  options.timeout = timeout;
  return writer(options);
}

Writer Channel::writer(const WriterOptions& options) {
  using std::chrono::milliseconds;
  const bool forever = options.timeout.count() < 0;
  const auto give_up = detail::Clock::now() + (forever ? milliseconds(0) : options.timeout);
  milliseconds pause{1};
  detail::Response r;
  for (;;) {
    r = shared_->connection->Call(proto::ChannelAttach{shared_->name, proto::ChannelRole::kWriter});
    auto* err = std::get_if<proto::ErrorReply>(&r.reply);
    if (err == nullptr || err->code != Errc::kTimeout) break;
    // Another writer holds it: ask again until ours runs out (it goes when its connection does).
    const auto now = detail::Clock::now();
    if (!forever && now >= give_up) break;
    if (options.interrupted && options.interrupted()) {
      Fail(Errc::kCancelled,
           "waiting to write channel '" + shared_->name + "': interrupted() returned true");
    }
    auto sleep = pause;
    if (!forever) sleep = std::min(sleep, std::chrono::ceil<milliseconds>(give_up - now));
    std::this_thread::sleep_for(sleep);
    pause = std::min(pause * 2, milliseconds(20));
  }
  proto::ChannelAttachOk ok = detail::Expect<proto::ChannelAttachOk>(r);
  Writer w;
  w.shared_ = MakeShared(shared_->connection, ok.info);
  ChannelShared& sh = *w.shared_;
  sh.attached = true;  // from here on, leaving tells the daemon
  sh.reconnects = sh.connection->reconnects();
  sh.writer = true;
  sh.generation = ok.generation;
  sh.MapFrames(r, true);
  // We are the only writer: a slot left claimed was a dead writer's half-written frame. It was
  // never published, so no reader has seen it; it becomes free.
  for (uint32_t i = 0; i < sh.slot_count(); ++i) {
    SlotHeader& s = sh.slot(i);
    uint32_t claimed = layout::kSlotClaimed;
    if (s.state.compare_exchange_strong(claimed, layout::kSlotEmpty)) s.seq.store(0);
  }
  // Bits in `claimed` of the dead writer stay, for the same reason as a discarded frame's.
  sh.next_seq = sh.header->published.load() + 1;
  sh.RefreshReaders();
  return w;
}

namespace {

// Attaches a reader place (`role` kReader or kHolder) and maps the frames read-only and the
// place's own page read-write.
std::shared_ptr<ChannelShared> AttachReaderPlace(const ChannelShared& handle,
                                                 proto::ChannelRole role) {
  detail::Response r = handle.connection->Call(proto::ChannelAttach{handle.name, role});
  proto::ChannelAttachOk ok = detail::Expect<proto::ChannelAttachOk>(r);
  std::shared_ptr<ChannelShared> out = MakeShared(handle.connection, ok.info);
  ChannelShared& sh = *out;
  sh.attached = true;
  sh.holder = role == proto::ChannelRole::kHolder;
  sh.reconnects = sh.connection->reconnects();
  sh.index = ok.index;
  sh.generation = ok.generation;
  if (sh.index >= layout::kMaxReaders) {
    Fail(Errc::kBadMessage,
         "channel '" + sh.name + "': the daemon gave a reader place out of range");
  }
  sh.MapFrames(r, false);
  detail::Response page = sh.connection->Call(
      proto::ChannelPart{sh.info.id, proto::ChannelPartKind::kOwnPage, sh.index, sh.generation});
  detail::Expect<proto::ChannelPartOk>(page);
  sh.own_mapping =
      detail::PartMapping::Map(page, layout::kReaderPageBytes, true,
                               "channel '" + sh.name + "': mapping this reader's page");
  sh.own = static_cast<layout::ReaderPage*>(sh.own_mapping.base);
  return out;
}

}  // namespace

Reader Channel::reader(const ReaderOptions& options) {
  Reader reader;
  reader.shared_ = AttachReaderPlace(*shared_, proto::ChannelRole::kReader);
  ChannelShared& sh = *reader.shared_;
  sh.busy_poll = options.busy_poll;
  auto rs = std::make_shared<detail::ReaderState>();
  // The daemon set where we start: the frames published from our attach on are ours.
  rs->last = sh.own->last_taken.load();
  rs->last_for_helper.store(rs->last, std::memory_order_relaxed);
  reader.state_ = std::move(rs);
  return reader;
}

Frame Channel::Hold(const FrameLocation& where) {
  const std::string& name = shared_->name;
  std::shared_ptr<ChannelShared> place = holder_.lock();
  if (place && (!place->StillAttached() || !place->connection->Unbroken(place->reconnects))) {
    place.reset();  // evicted, or the connection it was known by is gone: a fresh place
  }
  if (!place) {
    place = AttachReaderPlace(*shared_, proto::ChannelRole::kHolder);
    holder_ = place;
  }
  ChannelShared& sh = *place;
  if (sh.info.id != where.channel_id || sh.info.created_unix_ns != where.channel_created_unix_ns) {
    // `place` is given back when it goes out of scope (no frame holds it).
    Fail(Errc::kNotFound, "channel '" + name + "' was removed and created again since frame " +
                              std::to_string(where.seq) +
                              " was taken (channel id " + std::to_string(where.channel_id) +
                              " -> " + std::to_string(sh.info.id) +
                              "): refusing to view another channel's memory");
  }
  if (where.slot >= sh.slot_count()) {
    Fail(Errc::kInvalidArgument, "channel '" + name + "' has " + std::to_string(sh.slot_count()) +
                                     " slots: there is no slot " + std::to_string(where.slot));
  }
  const uint32_t i = where.slot;
  const uint64_t bit = uint64_t{1} << i;
  SlotHeader& s = sh.slot(i);
  {
    std::lock_guard lock(sh.hold_mutex);
    // Hold first, then check that the slot still has the frame (the writer claims first, then
    // looks at the holders: one of the two sees the other), as Reader::TryNext does.
    if (sh.hold_count[i] == 0) sh.own->held.fetch_or(bit);  // seq_cst
    ++sh.hold_count[i];
  }
  Frame out;
  out.shared_ = place;  // from here on, the slot goes back with `out` if anything below fails
  out.slot_ = i;
  if (s.state.load() != layout::kSlotPublished || s.seq.load() != where.seq) {
    Fail(Errc::kNotFound, "channel '" + name + "': frame " + std::to_string(where.seq) +
                              " is no longer in slot " + std::to_string(i) +
                              " (the writer reused the slot: no reader held the frame while it "
                              "was on its way to this process)");
  }
  // Read once: the bound checked is the size used.
  const uint32_t meta_size = s.meta_size.load(std::memory_order_relaxed);
  const uint64_t length =
      sh.info.variable ? s.length.load(std::memory_order_relaxed) : sh.info.frame_bytes;
  if (meta_size > kMaxFrameMeta || length > sh.info.frame_bytes) {
    Fail(Errc::kBadMessage, "channel '" + name + "': frame " + std::to_string(where.seq) +
                                " has a length or metadata size no honest writer writes");
  }
  out.data_ = sh.slot_data(i);
  out.size_ = static_cast<size_t>(length);
  out.seq_ = where.seq;
  out.timestamp_ns_ = s.timestamp_ns.load();
  out.meta_ = s.meta;
  out.meta_size_ = meta_size;
  return out;
}

void Channel::Remove(Client& client, std::string_view name) {
  if (!client.connection_) throw Error(Errc::kConnectionLost, "this client was moved from");
  detail::Expect<proto::ChannelOk>(
      client.connection_->Call(proto::ChannelRemove{std::string(name)}));
}

ChannelInfo Channel::Stat(Client& client, std::string_view name) {
  if (!client.connection_) throw Error(Errc::kConnectionLost, "this client was moved from");
  return detail::FromWire(detail::Expect<proto::ChannelOk>(
                              client.connection_->Call(proto::ChannelStat{std::string(name)}))
                              .info);
}

std::vector<ChannelInfo> Channel::List(Client& client) {
  if (!client.connection_) throw Error(Errc::kConnectionLost, "this client was moved from");
  std::vector<ChannelInfo> out;
  for (const proto::ChannelInfo& c :
       detail::Expect<proto::ChannelListOk>(client.connection_->Call(proto::ChannelList{}))
           .channels) {
    out.push_back(detail::FromWire(c));
  }
  return out;
}

}  // namespace shmlease
