#include "segment_registry.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>

#include "shmlease/format.hpp"

namespace shmlease::server {
namespace {

bool Fail(Errc code, std::string text, Errc& error, std::string& message) {
  error = code;
  message = std::move(text);
  return false;
}

// Fills `size` from format and shape when it is 0 and checks that they agree.
bool CheckGeometry(proto::Create& c, Errc& error, std::string& message) {
  auto itemsize = FormatItemSize(c.format);
  if (!itemsize) {
    return Fail(Errc::kInvalidArgument,
                "format '" + c.format + "' is not one native item of bBhHiIlLqQefd?", error,
                message);
  }
  if (c.shape.empty()) {
    if (c.size == 0) return Fail(Errc::kInvalidArgument, "size must be at least 1 byte", error, message);
    if (c.size % *itemsize != 0) {
      return Fail(Errc::kInvalidArgument,
                  "size " + std::to_string(c.size) + " is not a multiple of the item size " +
                      std::to_string(*itemsize),
                  error, message);
    }
    return true;
  }
  auto bytes = ShapeBytes(c.shape, *itemsize);
  if (!bytes) {
    return Fail(Errc::kInvalidArgument,
                "shape must have 1 to 8 non-zero dimensions whose product fits in 64 bits", error,
                message);
  }
  if (c.size != 0 && c.size != *bytes) {
    return Fail(Errc::kInvalidArgument,
                "size " + std::to_string(c.size) + " does not match shape x itemsize = " +
                    std::to_string(*bytes),
                error, message);
  }
  c.size = *bytes;
  return true;
}

// The shape a segment presents: its own, or the 1-D default of size / itemsize items.
std::vector<uint64_t> EffectiveShape(uint64_t size, const std::string& format,
                                     const std::vector<uint64_t>& shape) {
  if (!shape.empty()) return shape;
  return {size / FormatItemSize(format).value_or(1)};
}

// "float32 (1024, 1024), 4194304 bytes"
std::string DescribeGeometry(uint64_t size, const std::string& format,
                             const std::vector<uint64_t>& shape) {
  std::vector<uint64_t> dims = EffectiveShape(size, format, shape);
  std::string text = FormatTypeName(format) + " (";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  text += dims.size() == 1 ? ",)" : ")";
  return text + ", " + std::to_string(size) + " bytes";
}

}  // namespace

bool SegmentRegistry::MatchesExisting(const Segment& existing, const proto::Create& request,
                                      Errc& error, std::string& message) {
  proto::Create asked = request;
  if (!CheckGeometry(asked, error, message)) return false;
  const std::string& have_format = existing.format.empty() ? std::string("B") : existing.format;
  const std::string& want_format = asked.format.empty() ? std::string("B") : asked.format;
  if (existing.size == asked.size && have_format == want_format &&
      EffectiveShape(existing.size, existing.format, existing.shape) ==
          EffectiveShape(asked.size, asked.format, asked.shape)) {
    return true;
  }
  return Fail(Errc::kAlreadyExists,
              "segment '" + existing.name + "' exists as " +
                  DescribeGeometry(existing.size, existing.format, existing.shape) +
                  "; asked for " + DescribeGeometry(asked.size, asked.format, asked.shape),
              error, message);
}

bool SegmentRegistry::Charged(const Segment& segment, uint32_t uid) const {
  if (!segment.removed || !lease_holders_) return segment.owner_uid == uid;
  std::vector<uint32_t> holders = lease_holders_(segment.id);
  if (holders.empty()) return segment.owner_uid == uid;
  return std::find(holders.begin(), holders.end(), uid) != holders.end();
}

bool SegmentRegistry::CheckRoom(uint64_t bytes, Errc& error, std::string& message) const {
  const Holdings channels = channel_holdings_ ? channel_holdings_(std::nullopt) : Holdings{};
  if (by_id_.size() + channels.objects >= config_.max_segments) {
    return Fail(Errc::kLimitSegments,
                "the daemon already holds its limit of " + std::to_string(config_.max_segments) +
                    " segments and channels (max-segments; removed ones still in use counted)",
                error, message);
  }
  const uint64_t used = total_bytes_ + channels.bytes;
  if (bytes > config_.max_total_bytes - std::min(used, config_.max_total_bytes)) {
    return Fail(Errc::kLimitBytes,
                "creating " + FormatSize(bytes) + " would pass the total limit of " +
                    FormatSize(config_.max_total_bytes) + " (" + FormatSize(used) +
                    " in use by segments and channels)",
                error, message);
  }
  return true;
}

bool SegmentRegistry::CheckQuota(uint32_t uid, uint64_t bytes, Errc& error,
                                 std::string& message) const {
  if (config_.quota_bytes == 0 && config_.quota_segments == 0) return true;
  Holdings owned = channel_holdings_ ? channel_holdings_(uid) : Holdings{};
  for (const auto& [id, segment] : by_id_) {
    if (!Charged(*segment, uid)) continue;
    owned.bytes += segment->size;
    ++owned.objects;
  }
  if (config_.quota_segments != 0 && owned.objects >= config_.quota_segments) {
    return Fail(Errc::kQuotaSegments,
                "uid " + std::to_string(uid) + " already owns its quota of " +
                    std::to_string(config_.quota_segments) +
                    " segments and channels (removed segments it still holds leases on counted)",
                error, message);
  }
  if (config_.quota_bytes != 0 &&
      bytes > config_.quota_bytes - std::min(owned.bytes, config_.quota_bytes)) {
    return Fail(Errc::kQuotaBytes,
                "creating " + FormatSize(bytes) + " would pass uid " + std::to_string(uid) +
                    "'s quota of " + FormatSize(config_.quota_bytes) + " (" +
                    FormatSize(owned.bytes) +
                    " owned in segments and channels, removed segments it still holds leases "
                    "on counted)",
                error, message);
  }
  return true;
}

Segment* SegmentRegistry::Reserve(const proto::Create& request, Creator creator, Errc& error,
                                  std::string& message) {
  proto::Create c = request;
  if (!IsValidName(c.name)) {
    Fail(Errc::kInvalidName,
         "segment name must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}", error, message);
    return nullptr;
  }
  if ((c.flags & ~proto::kCreateKnownFlags) != 0) {
    Fail(Errc::kInvalidArgument, "unknown create flags", error, message);
    return nullptr;
  }
  const uint8_t huge_flags =
      c.flags & (proto::kCreateHuge | proto::kCreateHugeBestEffort | proto::kCreateNoHuge);
  if (huge_flags != 0 && (huge_flags & (huge_flags - 1)) != 0) {
    Fail(Errc::kInvalidArgument,
         "create flags: huge, huge best effort and no huge exclude one another", error, message);
    return nullptr;
  }
  if (c.mode > 0777) {
    Fail(Errc::kInvalidArgument, "mode must be permission bits between 0 and 0777", error, message);
    return nullptr;
  }
  if (by_name_.count(c.name) != 0) {
    Fail(Errc::kAlreadyExists,
         "segment '" + c.name + "' already exists (to open it instead, pass exist_ok=True in "
         "Python, --exist-ok to the shmlease CLI, or CreateOptions::exist_ok in C++)",
         error, message);
    return nullptr;
  }
  if (!CheckGeometry(c, error, message)) return nullptr;
  PagePolicy pages = PagePolicy::kNormal;
  if ((c.flags & proto::kCreateHuge) != 0) {
    pages = PagePolicy::kHuge;
  } else if ((c.flags & proto::kCreateHugeBestEffort) != 0) {
    pages = PagePolicy::kHugeBestEffort;
  } else if ((c.flags & proto::kCreateNoHuge) == 0 && config_.huge_threshold != 0 &&
             c.size >= config_.huge_threshold) {
    pages = PagePolicy::kHugeBestEffort;
  }
  // Huge pages are counted whole: a 3 MiB segment in 2 MiB pages holds 4 MiB.
  uint64_t counted = c.size;
  if (pages != PagePolicy::kNormal) {
    uint64_t page = HugeRoundingSize(config_.huge_dir);
    if (page != 0 && c.size % page != 0) {
      if (c.size > UINT64_MAX - page) {
        Fail(Errc::kInvalidArgument, "size " + std::to_string(c.size) + " is too large", error,
             message);
        return nullptr;
      }
      counted = (c.size / page + 1) * page;
    }
  }
  if (counted > config_.max_segment_size) {
    Fail(Errc::kLimitSegmentSize,
         "size " + FormatSize(c.size) +
             (counted != c.size ? " (" + FormatSize(counted) + " in whole huge pages)" : "") +
             " is above the segment size limit of " + FormatSize(config_.max_segment_size),
         error, message);
    return nullptr;
  }
  if (!CheckRoom(counted, error, message) || !CheckQuota(creator.uid, c.size, error, message)) {
    return nullptr;
  }
  uint64_t id = next_id_++;
  auto segment = std::make_unique<Segment>();
  segment->id = id;
  segment->name = c.name;
  segment->size = c.size;
  segment->format = c.format;
  segment->shape = c.shape;
  segment->created_unix_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
  segment->creator_pid = creator.pid;
  segment->creator_uid = creator.uid;
  segment->owner_uid = creator.uid;
  segment->owner_gid = creator.gid;
  segment->mode = c.mode;
  segment->creating = true;
  segment->shm_name = config_.shm_prefix + "." + std::to_string(id);
  segment->pages = pages;
  segment->counted_bytes = counted;
  Segment* raw = segment.get();
  by_id_.emplace(id, std::move(segment));
  by_name_.emplace(raw->name, raw);
  total_bytes_ += raw->counted_bytes;
  return raw;
}

void SegmentRegistry::Complete(uint64_t id, std::unique_ptr<ShmObject> shm) {
  Segment* segment = FindById(id);
  if (segment == nullptr) return;
  // The backing may hold less than counted (smaller huge pages, or a fallback to normal pages);
  // never more: Reserve() rounded to the largest page size on offer.
  uint64_t real = shm->reserved_bytes();
  if (real > segment->counted_bytes) {
    spdlog::warn("segment '{}' holds {}, more than the {} counted when it was reserved",
                 segment->name, FormatSize(real), FormatSize(segment->counted_bytes));
  }
  total_bytes_ = total_bytes_ - segment->counted_bytes + real;
  segment->counted_bytes = real;
  segment->page_size = shm->page_size();
  segment->huge_fallback = shm->huge_fallback();
  // What a restart needs to find the memory again: a named object's real (random) name, and the
  // backing with its geometry for a descriptor out of the fd store.
  segment->shm_name = shm->name();
  segment->backing = BackingName(shm->backing());
  segment->backing_bytes = real;
  segment->backing_page = shm->page_size();
  segment->shm = std::move(shm);
  segment->creating = false;
  // Stored before the state lists it: a crash in between leaves a stored descriptor the next
  // start does not know, which it drops; never a listed segment whose memory is gone.
  if (on_backing_ && IsNameless(segment->shm->backing())) on_backing_(*segment, true);
  Changed();
}

void SegmentRegistry::Abandon(uint64_t id) { Destroy(id); }

Segment* SegmentRegistry::FindByName(const std::string& name) {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

Segment* SegmentRegistry::FindById(uint64_t id) {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second.get();
}

Segment* SegmentRegistry::Unname(const std::string& name) {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return nullptr;
  Segment* segment = it->second;
  segment->removed = true;
  by_name_.erase(it);
  Changed();
  return segment;
}

void SegmentRegistry::Destroy(uint64_t id) {
  if (preserved_) return;
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  Segment* segment = it->second.get();
  bool recorded = !segment->creating;
  if (!segment->removed) by_name_.erase(segment->name);
  total_bytes_ -= segment->counted_bytes;
  if (recorded && on_backing_ && segment->shm && IsNameless(segment->shm->backing())) {
    on_backing_(*segment, false);
  }
  by_id_.erase(it);
  if (recorded) Changed();
}

bool SegmentRegistry::Adopt(std::unique_ptr<Segment> segment) {
  if (by_id_.count(segment->id) != 0) return false;
  if (!segment->removed && by_name_.count(segment->name) != 0) return false;
  segment->creating = false;
  Segment* raw = segment.get();
  next_id_ = std::max(next_id_, raw->id + 1);
  raw->counted_bytes = raw->shm ? raw->shm->reserved_bytes() : raw->size;
  raw->page_size = raw->shm ? raw->shm->page_size() : 0;
  total_bytes_ += raw->counted_bytes;
  if (!raw->removed) by_name_.emplace(raw->name, raw);
  by_id_.emplace(raw->id, std::move(segment));
  return true;
}

std::vector<const Segment*> SegmentRegistry::All() const {
  std::vector<const Segment*> out;
  for (const auto& [id, segment] : by_id_) {
    if (!segment->creating) out.push_back(segment.get());
  }
  std::sort(out.begin(), out.end(), [](const Segment* a, const Segment* b) { return a->id < b->id; });
  return out;
}

void SegmentRegistry::Preserve() {
  preserved_ = true;
  for (auto& [id, segment] : by_id_) {
    if (segment->shm) segment->shm->KeepOnDestroy();
  }
}

std::vector<const Segment*> SegmentRegistry::Named() const {
  std::vector<const Segment*> out;
  out.reserve(by_name_.size());
  for (const auto& [name, segment] : by_name_) {
    if (!segment->creating) out.push_back(segment);
  }
  return out;
}

}  // namespace shmlease::server
