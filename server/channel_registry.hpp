// The daemon's channels (docs/CHANNELS.md): each one's parts (sealed memfds the daemon made and
// maps read-write), its writer and readers by connection, and the roster it publishes to them in
// the frames part. Only the daemon writes the roster; it never reads a value from shared memory
// to decide anything.
// Owns: every channel, named or removed-but-attached, and their parts. A part's memory goes when
// the last descriptor or mapping of it goes (the kernel counts those, here and in participants).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "shmlease/channel_layout.hpp"
#include "shmlease/errc.hpp"
#include "shmlease/protocol.hpp"
#include "segment_registry.hpp"

namespace shmlease::server {

// A memfd of a fixed size: sealed against shrinking and growing, mode 0600, no name anyone can
// open. One descriptor is kept (the read-write one); a read-only one is made when one is passed
// (a reopen of the memfd), so a channel costs the daemon one descriptor per part.
class SealedPart {
 public:
  // nullptr with `code` and `error` set when the memory cannot be made.
  static std::unique_ptr<SealedPart> Make(const std::string& label, uint64_t size, Errc& code,
                                          std::string& error);
  ~SealedPart();
  SealedPart(const SealedPart&) = delete;
  SealedPart& operator=(const SealedPart&) = delete;

  int rw_fd() const { return rw_fd_; }
  // A new read-only descriptor of the same memory (the caller closes it), or -1.
  int OpenReadOnly() const;
  void* data() const { return map_; }
  uint64_t size() const { return size_; }

 private:
  SealedPart() = default;
  int rw_fd_ = -1;
  void* map_ = nullptr;
  uint64_t size_ = 0;
};

struct ChannelReader {
  uint64_t session = 0;  // 0: the place is free
  uint64_t generation = 0;
  uint32_t pid = 0;
  bool holder = false;  // ChannelRole::kHolder: counted in info.holders, not among the readers
  std::unique_ptr<SealedPart> page;
};

struct ChannelObject {
  proto::ChannelInfo info;  // geometry and owner; writer_pid, readers, holders kept current
  std::unique_ptr<SealedPart> frames;
  uint64_t writer_session = 0;  // 0: none
  uint64_t writer_generation = 0;
  ChannelReader readers[channel_layout::kMaxReaders];
  uint64_t next_generation = 1;
  bool removed = false;

  channel_layout::FramesHeader& header() const {
    return *static_cast<channel_layout::FramesHeader*>(frames->data());
  }
  uint64_t bytes() const;
  bool attached() const;
  // Roster changes, each published to the participants (roster_version bumped, sleepers woken).
  uint64_t AttachWriter(uint64_t session, uint32_t pid);
  void DetachWriter(channel_layout::WriterState end);
  // The place index, or nullopt when all kMaxReaders are taken. A holder's page starts with
  // `last_taken` at its maximum: it is past every frame, so the writer never waits for it to read.
  std::optional<uint32_t> AttachReader(uint64_t session, uint32_t pid, bool holder, Errc& code,
                                       std::string& error);
  // Frees place `index` (kEntryFree) or marks it evicted with `reason`.
  void DetachReader(uint32_t index, channel_layout::EntryState state, uint32_t reason);
  void PublishRoster();
};

class ChannelRegistry {
 public:
  ChannelObject* FindByName(const std::string& name);
  ChannelObject* FindById(uint64_t id);
  // Makes the parts and names the channel. nullptr with `code` and `error` set on failure.
  ChannelObject* Create(proto::ChannelInfo info, Errc& code, std::string& error);
  // Takes the name away; the channel is freed now if nobody is attached, else with the last one.
  void Unname(const std::string& name);
  // Every attachment of a closing connection: a writer's stream ends (kWriterGone), its readers'
  // places are freed.
  void OnClose(uint64_t session);
  // Frees a removed channel once nobody is attached.
  void FreeIfUnused(uint64_t id);
  std::vector<const ChannelObject*> Named() const;
  size_t count() const { return by_name_.size(); }
  uint64_t total_bytes() const { return total_bytes_; }
  // Channels that exist (removed ones still attached too) and their frames' bytes: all of them,
  // or those `uid` created. What they count against the limits and quotas.
  Holdings HoldingsOf(std::optional<uint32_t> uid) const;

 private:
  std::map<std::string, uint64_t> by_name_;
  std::unordered_map<uint64_t, std::unique_ptr<ChannelObject>> by_id_;
  uint64_t next_id_ = 1;
  uint64_t total_bytes_ = 0;
};

}  // namespace shmlease::server
