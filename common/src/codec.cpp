#include "shmlease/codec.hpp"

#include <cstring>
#include <type_traits>

#include "shmlease/format.hpp"

namespace shmlease::proto {
namespace {

// Appends little-endian fields to a byte vector.
class Writer {
 public:
  explicit Writer(std::vector<std::byte>& out) : out_(out) {}

  template <typename T>
  void Int(T value) {
    static_assert(std::is_integral_v<T>);
    using U = std::make_unsigned_t<T>;
    U bits = static_cast<U>(value);
    for (size_t i = 0; i < sizeof(T); ++i) {
      out_.push_back(static_cast<std::byte>((bits >> (8 * i)) & 0xFF));
    }
  }
  void String(const std::string& s, size_t max) {
    size_t n = s.size() < max ? s.size() : max;
    Int<uint16_t>(static_cast<uint16_t>(n));
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out_.insert(out_.end(), p, p + n);
  }
  void Shape(const std::vector<uint64_t>& shape) {
    size_t n = shape.size() < 255 ? shape.size() : 255;
    Int<uint8_t>(static_cast<uint8_t>(n));
    for (size_t i = 0; i < n; ++i) Int<uint64_t>(shape[i]);
  }
  size_t size() const { return out_.size(); }
  std::vector<std::byte>& bytes() { return out_; }

 private:
  std::vector<std::byte>& out_;
};

// Reads little-endian fields, failing (sticky) on any overrun or out-of-bound length.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}

  template <typename T>
  bool Int(T& value) {
    static_assert(std::is_integral_v<T>);
    if (!ok_ || in_.size() - pos_ < sizeof(T)) return ok_ = false;
    using U = std::make_unsigned_t<T>;
    U bits = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      bits |= static_cast<U>(static_cast<U>(in_[pos_ + i]) << (8 * i));
    }
    pos_ += sizeof(T);
    value = static_cast<T>(bits);
    return true;
  }
  bool String(std::string& s, size_t max) {
    uint16_t n = 0;
    if (!Int(n)) return false;
    if (n > max || in_.size() - pos_ < n) return ok_ = false;
    s.assign(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  bool Shape(std::vector<uint64_t>& shape) {
    uint8_t n = 0;
    if (!Int(n)) return false;
    if (n > kMaxDims || in_.size() - pos_ < size_t{n} * 8) return ok_ = false;
    shape.resize(n);
    for (auto& d : shape) Int(d);
    return ok_;
  }
  bool Mode(LeaseMode& mode) {
    uint8_t m = 0;
    if (!Int(m)) return false;
    if (m != static_cast<uint8_t>(LeaseMode::kRead) && m != static_cast<uint8_t>(LeaseMode::kWrite)) {
      return ok_ = false;
    }
    mode = static_cast<LeaseMode>(m);
    return true;
  }
  bool Bool(uint8_t& b) {
    if (!Int(b)) return false;
    if (b > 1) return ok_ = false;
    return true;
  }
  // True when every byte was consumed and nothing overran: trailing garbage is a bad message.
  bool Done() const { return ok_ && pos_ == in_.size(); }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// The smallest encoded SegmentInfo: empty name and format, no dimensions.
// id 8, name 2, size 8, format 2, dims 1, created 8, pid 4, uid 4, readers 4, writers 4,
// exclusive 1, waiting 4, removed 1, page_size 4, huge_fallback 1, owner_uid 4, owner_gid 4,
// mode 4.
constexpr size_t kMinSegmentInfoBytes = 68;

void Put(Writer& w, const SegmentInfo& s) {
  w.Int(s.id);
  w.String(s.name, kMaxString);
  w.Int(s.size);
  w.String(s.format, kMaxString);
  w.Shape(s.shape);
  w.Int(s.created_unix_ns);
  w.Int(s.creator_pid);
  w.Int(s.creator_uid);
  w.Int(s.readers);
  w.Int(s.writers);
  w.Int(s.exclusive);
  w.Int(s.waiting);
  w.Int(s.removed);
  w.Int(s.page_size);
  w.Int(s.huge_fallback);
  w.Int(s.owner_uid);
  w.Int(s.owner_gid);
  w.Int(s.mode);
}
bool Get(Reader& r, SegmentInfo& s) {
  r.Int(s.id);
  r.String(s.name, kMaxString);
  r.Int(s.size);
  r.String(s.format, kMaxString);
  r.Shape(s.shape);
  r.Int(s.created_unix_ns);
  r.Int(s.creator_pid);
  r.Int(s.creator_uid);
  r.Int(s.readers);
  r.Int(s.writers);
  r.Bool(s.exclusive);
  r.Int(s.waiting);
  r.Bool(s.removed);
  r.Int(s.page_size);
  r.Bool(s.huge_fallback);
  r.Int(s.owner_uid);
  r.Int(s.owner_gid);
  return r.Int(s.mode);
}

void Put(Writer& w, const Hello& m) {
  w.Int(m.version);
  w.String(m.client_name, kMaxString);
}
bool Get(Reader& r, Hello& m) { return r.Int(m.version) && r.String(m.client_name, kMaxString); }
void Put(Writer&, const Ping&) {}
bool Get(Reader&, Ping&) { return true; }
void Put(Writer& w, const Create& m) {
  w.String(m.name, kMaxString);
  w.Int(m.size);
  w.String(m.format, kMaxString);
  w.Shape(m.shape);
  w.Int(m.flags);
  w.Int(m.mode);
}
bool Get(Reader& r, Create& m) {
  r.String(m.name, kMaxString);
  r.Int(m.size);
  r.String(m.format, kMaxString);
  r.Shape(m.shape);
  r.Int(m.flags);
  return r.Int(m.mode);
}
void Put(Writer& w, const Acquire& m) {
  w.String(m.name, kMaxString);
  w.Int(static_cast<uint8_t>(m.mode));
  w.Int(m.exclusive);
  w.Int(m.timeout_ms);
}
bool Get(Reader& r, Acquire& m) {
  r.String(m.name, kMaxString);
  r.Mode(m.mode);
  r.Bool(m.exclusive);
  return r.Int(m.timeout_ms);
}
void Put(Writer& w, const Release& m) { w.Int(m.lease_id); }
bool Get(Reader& r, Release& m) { return r.Int(m.lease_id); }
void Put(Writer& w, const Cancel& m) { w.Int(m.request_id); }
bool Get(Reader& r, Cancel& m) { return r.Int(m.request_id); }
void Put(Writer& w, const Remove& m) { w.String(m.name, kMaxString); }
bool Get(Reader& r, Remove& m) { return r.String(m.name, kMaxString); }
void Put(Writer& w, const Stat& m) { w.String(m.name, kMaxString); }
bool Get(Reader& r, Stat& m) { return r.String(m.name, kMaxString); }
void Put(Writer&, const List&) {}
bool Get(Reader&, List&) { return true; }

void Put(Writer& w, const HelloOk& m) {
  w.Int(m.version);
  w.Int(m.server_pid);
  w.Int(m.max_message);
  w.String(m.server_version, kMaxString);
}
bool Get(Reader& r, HelloOk& m) {
  r.Int(m.version);
  r.Int(m.server_pid);
  r.Int(m.max_message);
  return r.String(m.server_version, kMaxString);
}
void Put(Writer&, const Pong&) {}
bool Get(Reader&, Pong&) { return true; }
void Put(Writer& w, const CreateOk& m) { Put(w, m.info); }
bool Get(Reader& r, CreateOk& m) { return Get(r, m.info); }
void Put(Writer& w, const AcquireOk& m) {
  w.Int(m.lease_id);
  w.Int(static_cast<uint8_t>(m.mode));
  w.Int(m.exclusive);
  Put(w, m.info);
}
bool Get(Reader& r, AcquireOk& m) {
  r.Int(m.lease_id);
  r.Mode(m.mode);
  r.Bool(m.exclusive);
  return Get(r, m.info);
}
void Put(Writer&, const ReleaseOk&) {}
bool Get(Reader&, ReleaseOk&) { return true; }
void Put(Writer&, const RemoveOk&) {}
bool Get(Reader&, RemoveOk&) { return true; }
void Put(Writer& w, const StatOk& m) { Put(w, m.info); }
bool Get(Reader& r, StatOk& m) { return Get(r, m.info); }
void Put(Writer& w, const ListOk& m) {
  w.Int(static_cast<uint32_t>(m.segments.size()));
  for (const auto& s : m.segments) Put(w, s);
}
bool Get(Reader& r, ListOk& m) {
  uint32_t n = 0;
  if (!r.Int(n)) return false;
  // Each SegmentInfo takes at least kMinSegmentInfoBytes: a count beyond what the body can hold
  // is a lie, refused before anything is allocated for it.
  if (n > r.remaining() / kMinSegmentInfoBytes) return false;
  m.segments.resize(n);
  for (auto& s : m.segments) {
    if (!Get(r, s)) return false;
  }
  return true;
}
void Put(Writer& w, const Chmod& m) {
  w.String(m.name, kMaxString);
  w.Int(m.mode);
}
bool Get(Reader& r, Chmod& m) {
  r.String(m.name, kMaxString);
  return r.Int(m.mode);
}
void Put(Writer&, const Stats&) {}
bool Get(Reader&, Stats&) { return true; }
void Put(Writer& w, const ChmodOk& m) { Put(w, m.info); }
bool Get(Reader& r, ChmodOk& m) { return Get(r, m.info); }
void Put(Writer& w, const StatsOk& m) {
  w.Int(m.segments);
  w.Int(m.bytes);
  w.Int(m.max_bytes);
  w.Int(m.leases);
  w.Int(m.connections);
  w.Int(m.uptime_ms);
  w.Int(static_cast<uint32_t>(m.clients.size()));
  for (const ClientInfo& c : m.clients) {
    w.Int(c.conn_id);
    w.Int(c.pid);
    w.Int(c.uid);
    w.Int(c.gid);
    w.String(c.process, kMaxString);
    w.Int(c.waiting);
    w.Int(static_cast<uint32_t>(c.leases.size()));
    for (const HeldLease& l : c.leases) {
      w.String(l.segment, kMaxString);
      w.Int(static_cast<uint8_t>(l.mode));
      w.Int(l.exclusive);
    }
  }
}
bool Get(Reader& r, StatsOk& m) {
  r.Int(m.segments);
  r.Int(m.bytes);
  r.Int(m.max_bytes);
  r.Int(m.leases);
  r.Int(m.connections);
  r.Int(m.uptime_ms);
  uint32_t n = 0;
  // A client takes at least 34 bytes, a lease 4: counts beyond the body are refused unallocated.
  if (!r.Int(n) || n > r.remaining() / 34) return false;
  m.clients.resize(n);
  for (ClientInfo& c : m.clients) {
    r.Int(c.conn_id);
    r.Int(c.pid);
    r.Int(c.uid);
    r.Int(c.gid);
    r.String(c.process, kMaxString);
    r.Int(c.waiting);
    uint32_t leases = 0;
    if (!r.Int(leases) || leases > r.remaining() / 4) return false;
    c.leases.resize(leases);
    for (HeldLease& l : c.leases) {
      r.String(l.segment, kMaxString);
      r.Mode(l.mode);
      if (!r.Bool(l.exclusive)) return false;
    }
  }
  return true;
}
void Put(Writer& w, const SegmentGone& m) { w.Int(m.segment_id); }
bool Get(Reader& r, SegmentGone& m) { return r.Int(m.segment_id); }
void Put(Writer& w, const ErrorReply& m) {
  w.Int(static_cast<uint32_t>(m.code));
  w.String(m.message, kMaxErrorText);
}
bool Get(Reader& r, ErrorReply& m) {
  uint32_t code = 0;
  r.Int(code);
  // Codes unknown to this build still travel: a newer daemon may know more.
  m.code = static_cast<Errc>(code);
  return r.String(m.message, kMaxErrorText);
}

void Put(Writer& w, const ReclaimMapping& m) {
  w.Int(m.segment_id);
  w.Int(m.created_unix_ns);
  w.Int(m.writable);
}
bool Get(Reader& r, ReclaimMapping& m) {
  r.Int(m.segment_id);
  r.Int(m.created_unix_ns);
  return r.Bool(m.writable);
}
// A u32 count, then the items; a count beyond what the body can still hold is refused before
// anything is allocated for it.
template <typename T>
void PutList(Writer& w, const std::vector<T>& items) {
  w.Int(static_cast<uint32_t>(items.size()));
  for (const auto& item : items) Put(w, item);
}
template <typename T>
bool GetList(Reader& r, std::vector<T>& items, size_t item_bytes) {
  uint32_t n = 0;
  if (!r.Int(n) || n > r.remaining() / item_bytes) return false;
  items.resize(n);
  for (auto& item : items) {
    if (!Get(r, item)) return false;
  }
  return true;
}
void Put(Writer& w, const ReclaimLease& m) {
  w.Int(m.lease_id);
  w.Int(m.segment_id);
  w.Int(m.created_unix_ns);
  w.Int(static_cast<uint8_t>(m.mode));
  w.Int(m.exclusive);
}
bool Get(Reader& r, ReclaimLease& m) {
  r.Int(m.lease_id);
  r.Int(m.segment_id);
  r.Int(m.created_unix_ns);
  r.Mode(m.mode);
  return r.Bool(m.exclusive);
}
void Put(Writer& w, const Reclaim& m) {
  PutList(w, m.leases);
  PutList(w, m.mappings);
}
bool Get(Reader& r, Reclaim& m) {
  return GetList(r, m.leases, kReclaimLeaseBytes) &&
         GetList(r, m.mappings, kReclaimMappingBytes);
}
void Put(Writer& w, const ReclaimResult& m) {
  w.Int(m.old_lease_id);
  w.Int(m.new_lease_id);
  w.Int(static_cast<uint32_t>(m.status));
}
bool Get(Reader& r, ReclaimResult& m) {
  uint32_t status = 0;
  r.Int(m.old_lease_id);
  r.Int(m.new_lease_id);
  bool ok = r.Int(status);
  m.status = static_cast<Errc>(status);
  return ok;
}
void Put(Writer& w, const ReclaimOk& m) {
  PutList(w, m.leases);
  PutList(w, m.mappings);
}
bool Get(Reader& r, ReclaimOk& m) {
  return GetList(r, m.leases, kReclaimResultBytes) &&
         GetList(r, m.mappings, kReclaimMappingBytes);
}

struct TypeVisitor {
  MsgType operator()(const Hello&) const { return MsgType::kHello; }
  MsgType operator()(const Ping&) const { return MsgType::kPing; }
  MsgType operator()(const Create&) const { return MsgType::kCreate; }
  MsgType operator()(const Acquire&) const { return MsgType::kAcquire; }
  MsgType operator()(const Release&) const { return MsgType::kRelease; }
  MsgType operator()(const Remove&) const { return MsgType::kRemove; }
  MsgType operator()(const Stat&) const { return MsgType::kStat; }
  MsgType operator()(const List&) const { return MsgType::kList; }
  MsgType operator()(const HelloOk&) const { return MsgType::kHelloOk; }
  MsgType operator()(const Pong&) const { return MsgType::kPong; }
  MsgType operator()(const CreateOk&) const { return MsgType::kCreateOk; }
  MsgType operator()(const AcquireOk&) const { return MsgType::kAcquireOk; }
  MsgType operator()(const ReleaseOk&) const { return MsgType::kReleaseOk; }
  MsgType operator()(const RemoveOk&) const { return MsgType::kRemoveOk; }
  MsgType operator()(const StatOk&) const { return MsgType::kStatOk; }
  MsgType operator()(const ListOk&) const { return MsgType::kListOk; }
  MsgType operator()(const Chmod&) const { return MsgType::kChmod; }
  MsgType operator()(const Stats&) const { return MsgType::kStats; }
  MsgType operator()(const ChmodOk&) const { return MsgType::kChmodOk; }
  MsgType operator()(const StatsOk&) const { return MsgType::kStatsOk; }
  MsgType operator()(const SegmentGone&) const { return MsgType::kSegmentGone; }
  MsgType operator()(const ErrorReply&) const { return MsgType::kError; }
  MsgType operator()(const Reclaim&) const { return MsgType::kReclaim; }
  MsgType operator()(const Cancel&) const { return MsgType::kCancel; }
  MsgType operator()(const ReclaimOk&) const { return MsgType::kReclaimOk; }
};

void WriteHeader(std::vector<std::byte>& out, size_t at, MsgType type, uint16_t flags,
                 uint32_t request_id) {
  std::vector<std::byte> header;
  header.reserve(kHeaderSize);
  Writer w(header);
  w.Int(kMagic);
  w.Int(static_cast<uint32_t>(out.size() - at - kHeaderSize));
  w.Int(static_cast<uint16_t>(type));
  w.Int(flags);
  w.Int(request_id);
  std::memcpy(out.data() + at, header.data(), kHeaderSize);
}

template <typename Variant>
void EncodeAny(const Variant& message, uint32_t request_id, uint16_t flags,
               std::vector<std::byte>& out) {
  size_t at = out.size();
  out.resize(at + kHeaderSize);
  Writer w(out);
  std::visit([&](const auto& m) { Put(w, m); }, message);
  WriteHeader(out, at, std::visit(TypeVisitor{}, message), flags, request_id);
}

template <typename Msg, typename Variant>
bool DecodeInto(std::span<const std::byte> body, Variant& out) {
  Msg m;
  Reader r(body);
  if (!Get(r, m) || !r.Done()) return false;
  out = std::move(m);
  return true;
}

}  // namespace

FrameResult DecodeFrame(std::span<const std::byte> input, uint32_t max_body) noexcept {
  FrameResult result;
  if (input.size() < kHeaderSize) {
    // Refuse garbage as early as its first bytes show it: a wrong magic prefix is bad at once.
    uint8_t magic[4];
    for (size_t i = 0; i < 4; ++i) magic[i] = static_cast<uint8_t>((kMagic >> (8 * i)) & 0xFF);
    for (size_t i = 0; i < input.size() && i < 4; ++i) {
      if (static_cast<uint8_t>(input[i]) != magic[i]) {
        result.status = DecodeStatus::kBad;
        result.error = Errc::kBadMessage;
        result.reason = "bad magic";
        return result;
      }
    }
    return result;
  }
  Reader r(input.first(kHeaderSize));
  uint32_t magic = 0;
  uint16_t type = 0;
  r.Int(magic);
  r.Int(result.header.body_length);
  r.Int(type);
  r.Int(result.header.flags);
  r.Int(result.header.request_id);
  result.header.type = static_cast<MsgType>(type);
  if (magic != kMagic) {
    result.status = DecodeStatus::kBad;
    result.error = Errc::kBadMessage;
    result.reason = "bad magic";
    return result;
  }
  if ((result.header.flags & ~kKnownFlags) != 0) {
    result.status = DecodeStatus::kBad;
    result.error = Errc::kBadMessage;
    result.reason = "unknown header flags";
    return result;
  }
  if (result.header.body_length > max_body) {
    result.status = DecodeStatus::kBad;
    result.error = Errc::kMessageTooLarge;
    result.reason = "body length " + std::to_string(result.header.body_length) +
                    " above the limit of " + std::to_string(max_body);
    return result;
  }
  size_t total = kHeaderSize + size_t{result.header.body_length};
  if (input.size() < total) return result;  // kNeedMore
  result.status = DecodeStatus::kOk;
  result.body = input.subspan(kHeaderSize, result.header.body_length);
  result.consumed = total;
  return result;
}

bool DecodeRequest(const Header& header, std::span<const std::byte> body, Request& out,
                   Errc& error, std::string& reason) {
  bool ok = false;
  switch (header.type) {
    case MsgType::kHello: ok = DecodeInto<Hello>(body, out); break;
    case MsgType::kPing: ok = DecodeInto<Ping>(body, out); break;
    case MsgType::kCreate: ok = DecodeInto<Create>(body, out); break;
    case MsgType::kAcquire: ok = DecodeInto<Acquire>(body, out); break;
    case MsgType::kRelease: ok = DecodeInto<Release>(body, out); break;
    case MsgType::kRemove: ok = DecodeInto<Remove>(body, out); break;
    case MsgType::kStat: ok = DecodeInto<Stat>(body, out); break;
    case MsgType::kList: ok = DecodeInto<List>(body, out); break;
    case MsgType::kChmod: ok = DecodeInto<Chmod>(body, out); break;
    case MsgType::kStats: ok = DecodeInto<Stats>(body, out); break;
    case MsgType::kReclaim: ok = DecodeInto<Reclaim>(body, out); break;
    case MsgType::kCancel: ok = DecodeInto<Cancel>(body, out); break;
    default:
      error = Errc::kUnknownType;
      reason = "unknown request type " + std::to_string(static_cast<unsigned>(header.type));
      return false;
  }
  if (!ok) {
    error = Errc::kBadMessage;
    reason = std::string("malformed ") + TypeName(header.type) + " body";
  }
  return ok;
}

bool DecodeReply(const Header& header, std::span<const std::byte> body, Reply& out, Errc& error,
                 std::string& reason) {
  bool ok = false;
  switch (header.type) {
    case MsgType::kHelloOk: ok = DecodeInto<HelloOk>(body, out); break;
    case MsgType::kPong: ok = DecodeInto<Pong>(body, out); break;
    case MsgType::kCreateOk: ok = DecodeInto<CreateOk>(body, out); break;
    case MsgType::kAcquireOk: ok = DecodeInto<AcquireOk>(body, out); break;
    case MsgType::kReleaseOk: ok = DecodeInto<ReleaseOk>(body, out); break;
    case MsgType::kRemoveOk: ok = DecodeInto<RemoveOk>(body, out); break;
    case MsgType::kStatOk: ok = DecodeInto<StatOk>(body, out); break;
    case MsgType::kListOk: ok = DecodeInto<ListOk>(body, out); break;
    case MsgType::kChmodOk: ok = DecodeInto<ChmodOk>(body, out); break;
    case MsgType::kStatsOk: ok = DecodeInto<StatsOk>(body, out); break;
    case MsgType::kSegmentGone: ok = DecodeInto<SegmentGone>(body, out); break;
    case MsgType::kError: ok = DecodeInto<ErrorReply>(body, out); break;
    case MsgType::kReclaimOk: ok = DecodeInto<ReclaimOk>(body, out); break;
    default:
      error = Errc::kUnknownType;
      reason = "unknown reply type " + std::to_string(static_cast<unsigned>(header.type));
      return false;
  }
  if (!ok) {
    error = Errc::kBadMessage;
    reason = std::string("malformed ") + TypeName(header.type) + " body";
  }
  return ok;
}

void EncodeRequest(const Request& request, uint32_t request_id, uint16_t flags,
                   std::vector<std::byte>& out) {
  EncodeAny(request, request_id, flags, out);
}

void EncodeReply(const Reply& reply, uint32_t request_id, uint16_t flags,
                 std::vector<std::byte>& out) {
  EncodeAny(reply, request_id, flags, out);
}

MsgType TypeOf(const Request& request) noexcept { return std::visit(TypeVisitor{}, request); }
MsgType TypeOf(const Reply& reply) noexcept { return std::visit(TypeVisitor{}, reply); }

const char* TypeName(MsgType type) noexcept {
  switch (type) {
    case MsgType::kHello: return "hello";
    case MsgType::kHelloOk: return "hello_ok";
    case MsgType::kPing: return "ping";
    case MsgType::kPong: return "pong";
    case MsgType::kCreate: return "create";
    case MsgType::kCreateOk: return "create_ok";
    case MsgType::kAcquire: return "acquire";
    case MsgType::kAcquireOk: return "acquire_ok";
    case MsgType::kRelease: return "release";
    case MsgType::kReleaseOk: return "release_ok";
    case MsgType::kRemove: return "remove";
    case MsgType::kRemoveOk: return "remove_ok";
    case MsgType::kStat: return "stat";
    case MsgType::kStatOk: return "stat_ok";
    case MsgType::kList: return "list";
    case MsgType::kListOk: return "list_ok";
    case MsgType::kChmod: return "chmod";
    case MsgType::kChmodOk: return "chmod_ok";
    case MsgType::kStats: return "stats";
    case MsgType::kStatsOk: return "stats_ok";
    case MsgType::kSegmentGone: return "segment_gone";
    case MsgType::kError: return "error";
    case MsgType::kReclaim: return "reclaim";
    case MsgType::kReclaimOk: return "reclaim_ok";
    case MsgType::kCancel: return "cancel";
  }
  return "unknown";
}

}  // namespace shmlease::proto
