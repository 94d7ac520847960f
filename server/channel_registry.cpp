#include "channel_registry.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <string>

#include "shm_backend.hpp"

namespace shmlease::server {
namespace layout = channel_layout;

namespace {

void WakeAll(std::atomic<uint32_t>& word) {
  // No FUTEX_PRIVATE_FLAG: participants wait on the word through their own mappings.
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr,
            0);
}

Errc CodeOfErrno(int e) {
  return e == ENOMEM || e == ENOSPC || e == EFBIG ? Errc::kNoSpace : Errc::kInternal;
}

}  // namespace

std::unique_ptr<SealedPart> SealedPart::Make(const std::string& label, uint64_t size, Errc& code,
                                             std::string& error) {
  std::unique_ptr<SealedPart> part(new SealedPart());
  auto fail = [&](const char* what) {
    int e = errno;
    code = CodeOfErrno(e);
    error = std::string(what) + " for " + label + " (" + std::to_string(size) +
            " bytes): " + std::strerror(e);
    return nullptr;
  };
  // Sealed, mode 0600 and reserved, exactly like a segment's memfd (shm_backend).
  std::string step;
  part->rw_fd_ = CreateSealedMemfd(label, size, false, step);
  if (part->rw_fd_ < 0) return fail(step.c_str());
  if (int ro = part->OpenReadOnly(); ro >= 0) {
    ::close(ro);
  } else {
    return fail("reopening read-only");
  }
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, part->rw_fd_, 0);
  if (map == MAP_FAILED) return fail("mmap");
  part->map_ = map;
  part->size_ = size;
  return part;
}

int SealedPart::OpenReadOnly() const {
  return ReopenReadOnly(rw_fd_);
}

SealedPart::~SealedPart() {
  if (map_ != nullptr) ::munmap(map_, size_);
  if (rw_fd_ >= 0) ::close(rw_fd_);
}

uint64_t ChannelObject::bytes() const {
  uint64_t n = frames ? frames->size() : 0;
  for (const ChannelReader& r : readers) {
    if (r.page) n += r.page->size();
  }
  return n;
}

bool ChannelObject::attached() const {
  if (writer_session != 0) return true;
  for (const ChannelReader& r : readers) {
    if (r.session != 0) return true;
  }
  return false;
}

void ChannelObject::PublishRoster() {
  layout::FramesHeader& h = header();
  h.roster_version.fetch_add(1);
  WakeAll(h.roster_version);
  h.notify.fetch_add(1);
  WakeAll(h.notify);
}

uint64_t ChannelObject::AttachWriter(uint64_t session, uint32_t pid) {
  layout::FramesHeader& h = header();
  writer_session = session;
  info.writer_pid = pid;
  // Active before the new generation: a reader reads the generation first, then the state, so an
  // end it sees is never attributed to a writer that has not ended.
  h.writer_state.store(layout::kWriterActive);
  uint64_t generation = h.writer_generation.fetch_add(1) + 1;
  PublishRoster();
  return generation;
}

void ChannelObject::DetachWriter(layout::WriterState end) {
  writer_session = 0;
  info.writer_pid = 0;
  header().writer_state.store(end);
  PublishRoster();
}

std::optional<uint32_t> ChannelObject::AttachReader(uint64_t session, uint32_t pid, bool holder,
                                                    Errc& code, std::string& error) {
  for (uint32_t i = 0; i < layout::kMaxReaders; ++i) {
    ChannelReader& r = readers[i];
    if (r.session != 0) continue;
    auto page = SealedPart::Make("shmlease-reader", layout::kReaderPageBytes, code, error);
    if (!page) return std::nullopt;
    layout::FramesHeader& h = header();
    auto* state = static_cast<layout::ReaderPage*>(page->data());
    // The reader receives the frames published from now on; a holder takes none.
    state->last_taken.store(holder ? UINT64_MAX : h.published.load());
    r.session = session;
    r.pid = pid;
    r.holder = holder;
    r.generation = next_generation++;
    r.page = std::move(page);
    h.entries[i].generation.store(r.generation);
    h.entries[i].reason.store(0);
    h.entries[i].state.store(layout::kEntryActive);
    if (holder) {
      ++info.holders;
    } else {
      h.active_readers.fetch_add(1);
      ++info.readers;
    }
    PublishRoster();
    return i;
  }
  code = Errc::kLimitLeases;
  error = "channel '" + info.name + "' has all " + std::to_string(layout::kMaxReaders) +
          " reader places taken: " + std::to_string(info.readers) + " by readers, " +
          std::to_string(info.holders) + " by holders of frames passed from other processes";
  return std::nullopt;
}

void ChannelObject::DetachReader(uint32_t index, layout::EntryState state, uint32_t reason) {
  ChannelReader& r = readers[index];
  if (r.session == 0) return;
  layout::FramesHeader& h = header();
  h.entries[index].reason.store(reason);
  h.entries[index].state.store(state);
  if (r.holder) {
    --info.holders;
  } else {
    h.active_readers.fetch_sub(1);
    --info.readers;
  }
  // The writer may sleep on this reader's page: wake it to look at the roster again.
  auto* page = static_cast<layout::ReaderPage*>(r.page->data());
  page->released.fetch_add(1);
  WakeAll(page->released);
  r.session = 0;
  r.pid = 0;
  r.holder = false;
  r.page.reset();
  PublishRoster();
}

ChannelObject* ChannelRegistry::FindByName(const std::string& name) {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : FindById(it->second);
}

ChannelObject* ChannelRegistry::FindById(uint64_t id) {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second.get();
}

Holdings ChannelRegistry::HoldingsOf(std::optional<uint32_t> uid) const {
  if (!uid) return {by_id_.size(), total_bytes_};
  Holdings owned;
  for (const auto& [id, ch] : by_id_) {
    if (ch->info.owner_uid != *uid) continue;
    ++owned.objects;
    owned.bytes += ch->frames->size();
  }
  return owned;
}

ChannelObject* ChannelRegistry::Create(proto::ChannelInfo info, Errc& code, std::string& error) {
  auto ch = std::make_unique<ChannelObject>();
  ch->frames = SealedPart::Make("shmlease-channel", info.frames_bytes, code, error);
  if (!ch->frames) return nullptr;
  info.id = next_id_++;
  ch->info = std::move(info);
  layout::FramesHeader& h = ch->header();
  h.magic = layout::kMagic;
  h.version = layout::kLayoutVersion;
  h.slot_count = ch->info.slots;
  h.frame_bytes = ch->info.frame_bytes;
  h.slot_stride = ch->info.slot_stride;
  h.data_offset = ch->info.data_offset;
  total_bytes_ += ch->frames->size();
  by_name_[ch->info.name] = ch->info.id;
  ChannelObject* raw = ch.get();
  by_id_[raw->info.id] = std::move(ch);
  return raw;
}

void ChannelRegistry::Unname(const std::string& name) {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return;
  uint64_t id = it->second;
  by_name_.erase(it);
  if (ChannelObject* ch = FindById(id)) ch->removed = true;
  FreeIfUnused(id);
}

void ChannelRegistry::OnClose(uint64_t session) {
  std::vector<uint64_t> touched;
  for (auto& [id, ch] : by_id_) {
    bool any = false;
    if (ch->writer_session == session) {
      spdlog::info("channel '{}': the writer's connection closed; end of its stream",
                   ch->info.name);
      ch->DetachWriter(layout::kWriterGone);
      any = true;
    }
    for (uint32_t i = 0; i < layout::kMaxReaders; ++i) {
      if (ch->readers[i].session == session) {
        ch->DetachReader(i, layout::kEntryFree, 0);
        any = true;
      }
    }
    if (any) touched.push_back(id);
  }
  for (uint64_t id : touched) FreeIfUnused(id);
}

void ChannelRegistry::FreeIfUnused(uint64_t id) {
  ChannelObject* ch = FindById(id);
  if (ch == nullptr || !ch->removed || ch->attached()) return;
  spdlog::info("freed removed channel '{}'", ch->info.name);
  total_bytes_ -= ch->frames->size();
  by_id_.erase(id);
}

std::vector<const ChannelObject*> ChannelRegistry::Named() const {
  std::vector<const ChannelObject*> out;
  for (const auto& [name, id] : by_name_) out.push_back(by_id_.at(id).get());
  return out;
}

}  // namespace shmlease::server
