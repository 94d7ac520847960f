#include "shmlease/codec.hpp"

#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

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
  bool Bool(uint8_t& b) {
    if (!Int(b)) return false;
    if (b > 1) return ok_ = false;
    return true;
  }
  // Marks the input bad (a value out of its range) and returns false.
  bool Fail() { return ok_ = false; }
  // True when every byte was consumed and nothing overran: trailing garbage is a bad message.
  bool Done() const { return ok_ && pos_ == in_.size(); }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// One Put (encode) and one Get (decode) per field rule of wire_fields.hpp; every message and record
// is encoded by walking its Fields() with these, so no message has code of its own.
template <class T>
using WireInt = typename std::conditional_t<std::is_enum_v<T>, std::underlying_type<T>,
                                            std::type_identity<T>>::type;

template <class T>
void Put(Writer& w, wire::IntField<T> f) {
  w.Int(static_cast<WireInt<std::remove_const_t<T>>>(f.value));
}
template <class T>
bool Get(Reader& r, wire::IntField<T> f) {
  WireInt<T> value = 0;
  if (!r.Int(value)) return false;
  f.value = static_cast<T>(value);
  return true;
}
template <class T>
void Put(Writer& w, wire::FlagField<T> f) {
  w.Int(f.value);
}
template <class T>
bool Get(Reader& r, wire::FlagField<T> f) {
  return r.Bool(f.value);
}
template <class T, auto... kValid>
void Put(Writer& w, wire::OneOfField<T, kValid...> f) {
  w.Int(static_cast<WireInt<std::remove_const_t<T>>>(f.value));
}
template <class T, auto... kValid>
bool Get(Reader& r, wire::OneOfField<T, kValid...> f) {
  WireInt<T> value = 0;
  if (!r.Int(value)) return false;
  if (((value != static_cast<WireInt<T>>(kValid)) && ...)) return r.Fail();
  f.value = static_cast<T>(value);
  return true;
}
template <class T, size_t kMax>
void Put(Writer& w, wire::TextField<T, kMax> f) {
  w.String(f.value, kMax);
}
template <class T, size_t kMax>
bool Get(Reader& r, wire::TextField<T, kMax> f) {
  return r.String(f.value, kMax);
}
template <class T>
void Put(Writer& w, wire::ShapeField<T> f) {
  w.Shape(f.value);
}
template <class T>
bool Get(Reader& r, wire::ShapeField<T> f) {
  return r.Shape(f.value);
}

template <class M>
void PutFields(Writer& w, const M& m);
template <class M>
bool GetFields(Reader& r, M& m);

template <class T>
void Put(Writer& w, wire::NestedField<T> f) {
  PutFields(w, f.value);
}
template <class T>
bool Get(Reader& r, wire::NestedField<T> f) {
  return GetFields(r, f.value);
}
template <class T>
void Put(Writer& w, wire::ListField<T> f) {
  w.Int(static_cast<uint32_t>(f.value.size()));
  for (const auto& item : f.value) PutFields(w, item);
}
template <class T>
bool Get(Reader& r, wire::ListField<T> f) {
  constexpr size_t kItemBytes = wire::kMinBytesOf<typename T::value_type>;
  uint32_t n = 0;
  // A count beyond what the rest of the body can hold is a lie, refused before anything is
  // allocated for it.
  if (!r.Int(n) || n > r.remaining() / kItemBytes) return false;
  f.value.resize(n);
  for (auto& item : f.value) {
    if (!GetFields(r, item)) return false;
  }
  return true;
}

template <class M>
void PutFields(Writer& w, const M& m) {
  static_assert(wire::kFieldsCoverEveryMember<M>, "a member is missing from its Fields()");
  std::apply([&w](auto... field) { (Put(w, field), ...); }, M::Fields(m));
}
template <class M>
bool GetFields(Reader& r, M& m) {
  static_assert(wire::kFieldsCoverEveryMember<M>, "a member is missing from its Fields()");
  return std::apply([&r](auto... field) { return (Get(r, field) && ...); }, M::Fields(m));
}

// The message lists are sound: requests never carry the reply bit, replies always do, and no
// type is listed twice, so that a header's type names at most one message of each list.
template <class... Ms>
constexpr bool TypesAreDistinct(bool replies, std::variant<Ms...>* /*list*/) {
  const uint16_t types[] = {static_cast<uint16_t>(Ms::kType)...};
  for (size_t i = 0; i < sizeof...(Ms); ++i) {
    if (((types[i] & kReplyBit) != 0) != replies) return false;
    for (size_t j = 0; j < i; ++j) {
      if (types[i] == types[j]) return false;
    }
  }
  return true;
}
static_assert(TypesAreDistinct(false, static_cast<Request*>(nullptr)));
static_assert(TypesAreDistinct(true, static_cast<Reply*>(nullptr)));

// The type of a variant's alternative, by its index: no visit needed.
template <class... Ms>
MsgType TypeAt(const std::variant<Ms...>& message) noexcept {
  static constexpr MsgType kTypes[] = {Ms::kType...};
  return kTypes[message.index()];
}

// The kName of the alternative of `list` whose kType is `type`, or nullptr.
template <class... Ms>
constexpr const char* NameIn(MsgType type, std::variant<Ms...>* /*list*/) noexcept {
  const char* name = nullptr;
  (void)((type == Ms::kType && (name = Ms::kName, true)) || ...);
  return name;
}

void WriteHeader(std::vector<std::byte>& out, size_t at, MsgType type, uint16_t flags,
                 uint32_t request_id) {
  std::byte header[kHeaderSize];
  size_t n = 0;
  auto put = [&](auto value) {
    for (size_t i = 0; i < sizeof(value); ++i) {
      header[n++] = static_cast<std::byte>((value >> (8 * i)) & 0xFF);
    }
  };
  put(kMagic);
  put(static_cast<uint32_t>(out.size() - at - kHeaderSize));
  put(static_cast<uint16_t>(type));
  put(flags);
  put(request_id);
  std::memcpy(out.data() + at, header, kHeaderSize);
}

template <typename Variant>
void EncodeAny(const Variant& message, uint32_t request_id, uint16_t flags,
               std::vector<std::byte>& out) {
  size_t at = out.size();
  out.resize(at + kHeaderSize);
  Writer w(out);
  std::visit([&w](const auto& m) { PutFields(w, m); }, message);
  WriteHeader(out, at, TypeAt(message), flags, request_id);
}

template <typename Msg, typename Variant>
bool DecodeInto(std::span<const std::byte> body, Variant& out) {
  Msg m;
  Reader r(body);
  if (!GetFields(r, m) || !r.Done()) return false;
  out = std::move(m);
  return true;
}

// Decodes `body` as the message of `out`'s list whose type the header names. On failure sets
// `error` and `reason`: kUnknownType when no message of the list has that type, kBadMessage when
// the body does not decode exactly. `list` ("request", "reply") is for the reason.
template <class... Ms>
bool DecodeAny(const Header& header, std::span<const std::byte> body, std::variant<Ms...>& out,
               const char* list, Errc& error, std::string& reason) {
  bool known = false;
  bool ok = false;
  (void)((header.type == Ms::kType && (known = true, ok = DecodeInto<Ms>(body, out), true)) || ...);
  if (!known) {
    error = Errc::kUnknownType;
    reason = std::string("unknown ") + list + " type " +
             std::to_string(static_cast<unsigned>(header.type));
  } else if (!ok) {
    error = Errc::kBadMessage;
    reason = std::string("malformed ") + TypeName(header.type) + " body";
  }
  return ok;
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

bool DecodeRequest(const Header& header, std::span<const std::byte> body, Request& out, Errc& error,
                   std::string& reason) {
  return DecodeAny(header, body, out, "request", error, reason);
}

bool DecodeReply(const Header& header, std::span<const std::byte> body, Reply& out, Errc& error,
                 std::string& reason) {
  return DecodeAny(header, body, out, "reply", error, reason);
}

void EncodeRequest(const Request& request, uint32_t request_id, uint16_t flags,
                   std::vector<std::byte>& out) {
  EncodeAny(request, request_id, flags, out);
}

void EncodeReply(const Reply& reply, uint32_t request_id, uint16_t flags,
                 std::vector<std::byte>& out) {
  EncodeAny(reply, request_id, flags, out);
}

MsgType TypeOf(const Request& request) noexcept { return TypeAt(request); }
MsgType TypeOf(const Reply& reply) noexcept { return TypeAt(reply); }

const char* TypeName(MsgType type) noexcept {
  if (const char* name = NameIn(type, static_cast<Request*>(nullptr))) return name;
  if (const char* name = NameIn(type, static_cast<Reply*>(nullptr))) return name;
  return "unknown";
}

}  // namespace shmlease::proto
