// The channel requests (docs/CHANNELS.md, "Protocol"): RequestHandler's members for ChannelCreate,
// ChannelStat, ChannelAttach, ChannelPart, ChannelDetach, ChannelEvict, ChannelRemove and
// ChannelList. Channels share the segments' namespace: a name is a segment or a channel, never
// both. Permission bits mean read = may read frames, write = may be the writer (and remove).
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "request_handler.hpp"
#include "shmlease/format.hpp"

namespace shmlease::server {
namespace layout = channel_layout;

namespace {

std::string Describe(const proto::ChannelInfo& c) {
  std::string s;
  if (c.variable) {
    s = "frames of up to " + std::to_string(c.frame_bytes) + " bytes";
  } else {
    s = "format '" + c.format + "', shape (";
    for (size_t i = 0; i < c.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(c.shape[i]);
    s += c.shape.size() == 1 ? ",)" : ")";
  }
  return s + ", " + std::to_string(c.slots) + " slots, policy " +
         (c.policy == proto::ChannelPolicy::kLatest ? "latest" : "block");
}

int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

bool RequestHandler::CheckChannelAccess(Session& s, uint32_t id, const ChannelObject& ch,
                                        Access access) {
  const proto::ChannelInfo& c = ch.info;
  if (Allowed(s.peer(), c.owner_uid, c.owner_gid, c.mode, access)) return true;
  const char* what = access == Access::kWrite ? "write to" : "read from";
  spdlog::info("uid {} (pid {}) refused: may not {} channel '{}'", s.peer().uid, s.peer().pid, what,
               c.name);
  // Owner and mode only to those who may read the channel, as for segments (CheckAccess).
  std::string text = fmt::format("uid {} may not {} channel '{}'", s.peer().uid, what, c.name);
  text += Allowed(s.peer(), c.owner_uid, c.owner_gid, c.mode, Access::kRead)
              ? fmt::format(" (owner {}:{}, mode {:04o})", c.owner_uid, c.owner_gid, c.mode)
              : " (ask its owner for access)";
  s.Send(proto::ErrorReply{Errc::kPermissionDenied, text}, id);
  return false;
}

ChannelObject* RequestHandler::FindChannel(Session& s, uint32_t id, const std::string& name) {
  if (ChannelObject* ch = channels_.FindByName(name)) return ch;
  std::string message = "no channel named '" + name + "'";
  if (registry_.FindByName(name) != nullptr) message += " ('" + name + "' is a segment)";
  s.Send(proto::ErrorReply{Errc::kNotFound, message}, id);
  return nullptr;
}

void RequestHandler::OnChannelCreate(const SessionPtr& s, uint32_t id,
                                     const proto::ChannelCreate& m) {
  auto refuse = [&](Errc code, const std::string& message) {
    spdlog::info("channel create '{}' by pid {} refused: {}", m.name, s->peer().pid, message);
    s->Send(proto::ErrorReply{code, message}, id);
  };
  if (!IsValidName(m.name)) {
    return refuse(Errc::kInvalidName, "invalid channel name '" + m.name + "'");
  }
  // What the asker wants, in the form the daemon keeps.
  proto::ChannelInfo want;
  want.name = m.name;
  want.variable = m.max_frame_bytes != 0 ? 1 : 0;
  want.slots = m.slots == 0 ? 8 : m.slots;
  want.policy =
      m.policy == 0 ? proto::ChannelPolicy::kBlock : static_cast<proto::ChannelPolicy>(m.policy);
  if (want.variable) {
    if (!m.shape.empty()) {
      return refuse(Errc::kInvalidArgument,
                    "a channel has either a frame shape or a maximum frame size, not both");
    }
    want.format = "B";
    want.frame_bytes = m.max_frame_bytes;
  } else {
    auto item = FormatItemSize(m.format);
    if (!item) return refuse(Errc::kInvalidArgument, "bad format '" + m.format + "'");
    auto bytes = m.shape.empty() ? std::nullopt : ShapeBytes(m.shape, *item);
    if (!bytes || *bytes == 0) {
      return refuse(Errc::kInvalidArgument,
                    "a channel needs a frame shape of at least one item (or a maximum frame size)");
    }
    want.format = m.format;
    want.shape = m.shape;
    want.frame_bytes = *bytes;
  }
  if (m.policy > 2) return refuse(Errc::kInvalidArgument, "unknown channel policy");
  if (m.reader_timeout_ms < 0) {
    return refuse(Errc::kInvalidArgument, "reader timeout must be >= 0");
  }
  if (m.mode > 0777) return refuse(Errc::kInvalidArgument, "mode must be at most 0777");
  layout::Geometry g;
  if (!layout::ComputeGeometry(want.slots, want.frame_bytes, g)) {
    return refuse(Errc::kInvalidArgument,
                  want.slots < 2 || want.slots > layout::kMaxSlots
                      ? "slots must be 2.." + std::to_string(layout::kMaxSlots)
                      : "frame size " + std::to_string(want.frame_bytes) + " is too large");
  }
  if (ChannelObject* existing = channels_.FindByName(m.name)) {
    if ((m.flags & proto::kCreateExistOk) == 0) {
      return refuse(Errc::kAlreadyExists, "channel '" + m.name + "' already exists");
    }
    if (!CheckChannelAccess(*s, id, *existing, Access::kRead)) return;
    const proto::ChannelInfo& have = existing->info;
    proto::ChannelInfo asked = want;
    if (m.slots == 0) asked.slots = have.slots;
    if (m.policy == 0) asked.policy = have.policy;
    if (have.variable != asked.variable || have.format != asked.format ||
        have.shape != asked.shape || have.frame_bytes != asked.frame_bytes ||
        have.slots != asked.slots || have.policy != asked.policy) {
      return refuse(Errc::kInvalidArgument, "channel '" + m.name + "' exists with " +
                                                Describe(have) + ", not " + Describe(asked));
    }
    s->Send(proto::ChannelOk{existing->info, 0}, id);
    return;
  }
  if (registry_.FindByName(m.name) != nullptr) {
    return refuse(Errc::kAlreadyExists, "a segment named '" + m.name +
                                            "' exists; a channel cannot take a segment's name");
  }
  if (g.frames_bytes > config_.max_segment_size) {
    return refuse(Errc::kLimitSegmentSize,
                  "channel '" + m.name + "' needs " + FormatSize(g.frames_bytes) +
                      ", above max-segment-size " + FormatSize(config_.max_segment_size));
  }
  Errc code = Errc::kOk;
  std::string error;
  if (!registry_.CheckRoom(g.frames_bytes, code, error) ||
      !registry_.CheckQuota(s->peer().uid, g.frames_bytes, code, error)) {
    return refuse(code, "channel '" + m.name + "': " + error);
  }
  want.slot_stride = g.slot_stride;
  want.data_offset = g.data_offset;
  want.frames_bytes = g.frames_bytes;
  want.reader_page_bytes = layout::kReaderPageBytes;
  want.reader_timeout_ms = m.reader_timeout_ms;
  want.created_unix_ns = NowUnixNs();
  want.owner_uid = s->peer().uid;
  want.owner_gid = s->peer().gid;
  want.mode = m.mode;
  ChannelObject* ch = channels_.Create(std::move(want), code, error);
  if (ch == nullptr) return refuse(code, error);
  spdlog::info("created channel '{}' ({}, {}) for pid {}", m.name, Describe(ch->info),
               FormatSize(ch->info.frames_bytes), s->peer().pid);
  s->Send(proto::ChannelOk{ch->info, 1}, id);
}

void RequestHandler::OnChannelStat(const SessionPtr& s, uint32_t id, const proto::ChannelStat& m) {
  ChannelObject* ch = FindChannel(*s, id, m.name);
  if (ch == nullptr || !CheckChannelAccess(*s, id, *ch, Access::kRead)) return;
  s->Send(proto::ChannelOk{ch->info, 0}, id);
}

void RequestHandler::OnChannelAttach(const SessionPtr& s, uint32_t id,
                                     const proto::ChannelAttach& m) {
  ChannelObject* ch = FindChannel(*s, id, m.name);
  const bool writer = m.role == proto::ChannelRole::kWriter;
  if (ch == nullptr || !CheckChannelAccess(*s, id, *ch, writer ? Access::kWrite : Access::kRead)) {
    return;
  }
  const uint32_t pid = static_cast<uint32_t>(s->peer().pid);
  if (writer) {
    if (ch->writer_session != 0) {
      s->Send(proto::ErrorReply{Errc::kTimeout,
                                fmt::format("channel '{}' already has a writer (pid {})", m.name,
                                            ch->info.writer_pid)},
              id);
      return;
    }
    uint64_t generation = ch->AttachWriter(s->id(), pid);
    ch->writer_generation = generation;
    if (!s->Send(proto::ChannelAttachOk{ch->info, 0, generation}, id, ch->frames->rw_fd())) {
      ch->DetachWriter(layout::kWriterGone);
      return;
    }
    spdlog::info("channel '{}': pid {} is the writer", m.name, pid);
    return;
  }
  Errc code = Errc::kOk;
  std::string error;
  const bool holder = m.role == proto::ChannelRole::kHolder;
  std::optional<uint32_t> index = ch->AttachReader(s->id(), pid, holder, code, error);
  if (!index) {
    s->Send(proto::ErrorReply{code, error}, id);
    return;
  }
  const uint64_t generation = ch->readers[*index].generation;
  const int ro = ch->frames->OpenReadOnly();
  const bool sent =
      ro >= 0 && s->Send(proto::ChannelAttachOk{ch->info, *index, generation}, id, ro);
  if (ro >= 0) ::close(ro);
  if (!sent) {
    if (ro < 0) {
      s->Send(proto::ErrorReply{Errc::kInternal,
                                std::string("cannot pass the frames: ") + std::strerror(errno)},
              id);
    }
    ch->DetachReader(*index, layout::kEntryFree, 0);
    return;
  }
  spdlog::debug("channel '{}': pid {} {} as reader {}", m.name, pid, holder ? "holds" : "reads",
                *index);
}

void RequestHandler::OnChannelPart(const SessionPtr& s, uint32_t id, const proto::ChannelPart& m) {
  ChannelObject* ch = channels_.FindById(m.channel_id);
  auto gone = [&](const std::string& why) { s->Send(proto::ErrorReply{Errc::kNotFound, why}, id); };
  if (ch == nullptr) return gone("no channel of id " + std::to_string(m.channel_id));
  if (m.index >= layout::kMaxReaders) {
    s->Send(proto::ErrorReply{Errc::kInvalidArgument, "reader index out of range"}, id);
    return;
  }
  ChannelReader& r = ch->readers[m.index];
  const bool current = r.session != 0 && r.generation == m.generation;
  if (m.kind == proto::ChannelPartKind::kOwnPage) {
    if (!current || r.session != s->id()) return gone("not this connection's reader");
    s->Send(proto::ChannelPartOk{m.index, m.generation}, id, r.page->rw_fd());
    return;
  }
  if (ch->writer_session != s->id()) {
    s->Send(proto::ErrorReply{Errc::kPermissionDenied,
                              "only the channel's writer may see its readers' pages"},
            id);
    return;
  }
  if (!current) return gone("reader " + std::to_string(m.index) + " has left");
  const int ro = r.page->OpenReadOnly();
  if (ro < 0) {
    s->Send(proto::ErrorReply{Errc::kInternal,
                              std::string("cannot pass the page: ") + std::strerror(errno)},
            id);
    return;
  }
  s->Send(proto::ChannelPartOk{m.index, m.generation}, id, ro);
  ::close(ro);
}

// One-way (kFlagNoReply) from a reader's destructor: answered only by ChannelDone when asked.
void RequestHandler::OnChannelDetach(const SessionPtr& s, const proto::Header& h,
                                     const proto::ChannelDetach& m) {
  ChannelObject* ch = channels_.FindById(m.channel_id);
  if (ch != nullptr && m.role == proto::ChannelRole::kWriter) {
    if (ch->writer_session == s->id() && ch->writer_generation == m.generation) {
      ch->DetachWriter(layout::kWriterClosed);
      spdlog::info("channel '{}': the writer closed its stream", ch->info.name);
    }
  } else if (ch != nullptr && m.index < layout::kMaxReaders) {
    ChannelReader& r = ch->readers[m.index];
    if (r.session == s->id() && r.generation == m.generation) {
      ch->DetachReader(m.index, layout::kEntryFree, 0);
    }
  }
  if (ch != nullptr) channels_.FreeIfUnused(m.channel_id);
  if ((h.flags & proto::kFlagNoReply) == 0) s->Send(proto::ChannelDone{}, h.request_id);
}

void RequestHandler::OnChannelEvict(const SessionPtr& s, uint32_t id,
                                    const proto::ChannelEvict& m) {
  ChannelObject* ch = channels_.FindById(m.channel_id);
  if (ch == nullptr || ch->writer_session != s->id()) {
    s->Send(
        proto::ErrorReply{Errc::kPermissionDenied, "only the channel's writer may evict readers"},
        id);
    return;
  }
  if (m.index < layout::kMaxReaders) {
    ChannelReader& r = ch->readers[m.index];
    if (r.session != 0 && r.generation == m.generation) {
      spdlog::warn("channel '{}': the writer evicted reader {} (pid {}): {}", ch->info.name,
                   m.index, r.pid,
                   m.reason == proto::ChannelEvictReason::kTimeout
                       ? fmt::format("it kept the writer waiting longer than {} ms",
                                     ch->info.reader_timeout_ms)
                       : std::string("its page held a state no honest reader writes"));
      ch->DetachReader(m.index, layout::kEntryEvicted, static_cast<uint32_t>(m.reason));
    }
  }
  s->Send(proto::ChannelDone{}, id);
}

void RequestHandler::OnChannelRemove(const SessionPtr& s, uint32_t id,
                                     const proto::ChannelRemove& m) {
  ChannelObject* ch = FindChannel(*s, id, m.name);
  if (ch == nullptr || !CheckChannelAccess(*s, id, *ch, Access::kWrite)) return;
  proto::ChannelInfo info = ch->info;
  spdlog::info("removed channel '{}' for pid {}{}", m.name, s->peer().pid,
               ch->attached() ? " (freed when its participants leave)" : "");
  channels_.Unname(m.name);
  s->Send(proto::ChannelOk{info, 0}, id);
}

void RequestHandler::OnChannelList(const SessionPtr& s, uint32_t id) {
  proto::ChannelListOk list;
  for (const ChannelObject* ch : channels_.Named()) {
    const proto::ChannelInfo& c = ch->info;
    if (Allowed(s->peer(), c.owner_uid, c.owner_gid, c.mode, Access::kRead)) {
      list.channels.push_back(c);
    }
  }
  s->Send(list, id);
}

}  // namespace shmlease::server
