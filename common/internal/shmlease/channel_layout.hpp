// The shared-memory layout of a channel (docs/CHANNELS.md), used by the daemon that makes the
// parts and by the participants that map them. Little-endian, native atomics.
//
// A channel is two kinds of sealed memory (memfd: its size cannot change, no name to open), made by
// the daemon and passed as descriptors:
// - the frames part: FramesHeader, one SlotHeader per slot, then the slots' data. The writer maps
//   it read-write, readers read-only (the kernel enforces it: their descriptor is read-only). The
//   daemon writes the roster fields in the header (who is attached), nobody else should.
// - one reader page per reader attachment (ReaderPage): that reader maps it read-write, the
//   writer read-only. A fresh page for every attachment, so a reader that left cannot write into
//   its successor's.
// Nothing read from shared memory is trusted as a size, index or offset: ChannelInfo from the
// daemon gives the geometry, and each participant keeps it privately.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace shmlease::channel_layout {

inline constexpr uint64_t kMagic = 0x324E48434C4D4853ull;  // "SHMLCHN2"
inline constexpr uint32_t kLayoutVersion = 3;
inline constexpr size_t kHeaderBytes = 4096;
inline constexpr size_t kSlotHeaderBytes = 512;
inline constexpr size_t kReaderPageBytes = 4096;
inline constexpr uint32_t kMaxSlots = 64;
inline constexpr uint32_t kMaxReaders = 64;
inline constexpr size_t kMaxMeta = 256;

enum SlotState : uint32_t { kSlotEmpty = 0, kSlotClaimed = 1, kSlotPublished = 2 };
// Written by the daemon: kWriterNone until a first writer attaches; kWriterClosed after Close();
// kWriterGone after the writer's connection closed without it (its process died).
enum WriterState : uint32_t {
  kWriterNone = 0,
  kWriterActive = 1,
  kWriterClosed = 2,
  kWriterGone = 3
};
enum EntryState : uint32_t { kEntryFree = 0, kEntryActive = 1, kEntryEvicted = 2 };

// One reader place, written by the daemon only.
struct RosterEntry {
  std::atomic<uint32_t> state;       // EntryState
  std::atomic<uint32_t> reason;      // ChannelEvictReason when evicted
  std::atomic<uint64_t> generation;  // of the attachment that holds (or held) the place
};

struct FramesHeader {
  // Written once by the daemon before any participant maps it; informational (ChannelInfo rules).
  uint64_t magic;
  uint32_t version;
  uint32_t slot_count;
  uint64_t frame_bytes;
  uint64_t slot_stride;
  uint64_t data_offset;
  // The writer's: the newest published sequence number and its slot (a hint), and the futex word
  // readers sleep on (bumped on every publish; the daemon bumps it too, on every roster change).
  alignas(64) std::atomic<uint64_t> published;
  std::atomic<uint32_t> notify;
  std::atomic<uint32_t> published_slot;
  // On the same cache line, so that a reader taking the newest frame reads one line the writer
  // wrote, not two: a copy of the newest frame's slot fields, under a sequence lock (`record_seq`
  // is 0 while the writer rewrites them, then that frame's sequence number), and the writer's
  // claims (bit i: slot i is claimed). A hint like `published_slot`: a reader checks it against
  // `published` and falls back to the slot headers, and bounds-checks what it reads.
  std::atomic<uint64_t> record_seq;
  std::atomic<uint64_t> record_length;
  std::atomic<int64_t> record_timestamp_ns;
  std::atomic<uint32_t> record_meta_size;
  std::atomic<uint64_t> claimed;
  // The writer's: index + 1 of the reader whose page it sleeps on (0: not sleeping).
  alignas(64) std::atomic<uint32_t> waiting_on;
  // The daemon's: the roster. `roster_version` (a futex word) is bumped after every change.
  alignas(64) std::atomic<uint32_t> roster_version;
  std::atomic<uint32_t> writer_state;
  std::atomic<uint64_t> writer_generation;
  std::atomic<uint32_t> active_readers;
  alignas(64) RosterEntry entries[kMaxReaders];
};
static_assert(sizeof(FramesHeader) <= kHeaderBytes);
static_assert(offsetof(FramesHeader, claimed) + sizeof(uint64_t) - offsetof(FramesHeader, published) <=
              64, "the newest frame's record shares the cache line of `published`");

struct alignas(64) SlotHeader {
  std::atomic<uint32_t> state;  // SlotState
  std::atomic<uint32_t> meta_size;
  std::atomic<uint64_t> seq;
  std::atomic<uint64_t> length;  // bytes of this frame (<= frame_bytes)
  std::atomic<int64_t> timestamp_ns;
  alignas(64) std::byte meta[kMaxMeta];
};
static_assert(sizeof(SlotHeader) <= kSlotHeaderBytes);

// A reader's own state, read by the writer.
struct ReaderPage {
  // The newest sequence number this reader has taken or let go; kBlock: the writer reuses a slot
  // only once every reader is past its frame.
  alignas(64) std::atomic<uint64_t> last_taken;
  // Bit i: the reader holds slot i. The writer never reuses a held slot.
  std::atomic<uint64_t> held;
  // Futex word the writer sleeps on while this reader keeps it waiting: bumped on every take and
  // release (and by the daemon when the reader leaves).
  alignas(64) std::atomic<uint32_t> released;
  // 1 while the reader sleeps (or is about to) on FramesHeader::notify: publish then wakes it.
  std::atomic<uint32_t> sleeping;
};
static_assert(sizeof(ReaderPage) <= kReaderPageBytes);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// Where things are in the frames part, from slot count and largest frame alone.
struct Geometry {
  uint32_t slots = 0;
  uint64_t frame_bytes = 0;
  uint64_t slot_stride = 0;
  uint64_t data_offset = 0;
  uint64_t frames_bytes = 0;
};
// False when the ring would not fit in 64 bits (or with fewer than 2 or more than kMaxSlots slots).
inline bool ComputeGeometry(uint32_t slots, uint64_t frame_bytes, Geometry& g) {
  if (slots < 2 || slots > kMaxSlots || frame_bytes == 0) return false;
  if (frame_bytes > (uint64_t{1} << 40)) return false;
  const uint64_t align = frame_bytes >= 4096 ? 4096 : 64;
  g.slots = slots;
  g.frame_bytes = frame_bytes;
  g.slot_stride = (frame_bytes + align - 1) / align * align;
  g.data_offset = (kHeaderBytes + uint64_t{slots} * kSlotHeaderBytes + 4095) / 4096 * 4096;
  g.frames_bytes = g.data_offset + g.slot_stride * slots;
  return true;
}

}  // namespace shmlease::channel_layout
