#include "shmlease/codec.hpp"

#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include "shmlease/format.hpp"

namespace shmlease::proto {
namespace {

// An integer's wire type: itself, or an enum's underlying integer.
template <class T>
using WireInt = typename std::conditional_t<std::is_enum_v<T>, std::underlying_type<T>,
                                            std::type_identity<T>>::type;

// Stores `value` as sizeof(T) little-endian bytes from `at` on.
template <class T>
void StoreLittleEndian(T value, std::byte* at) {
  static_assert(std::is_unsigned_v<T>);
  for (size_t i = 0; i < sizeof(T); ++i) {
    at[i] = static_cast<std::byte>((value >> (8 * i)) & 0xFF);
  }
}

// Writer and Reader have the same operations, one per kind of field, so that one walk over a
// message's Fields() (Walk below) encodes with a Writer and decodes with a Reader. The Writer's
// always succeed.

// Appends little-endian fields to a byte vector.
class Writer {
 public:
  explicit Writer(std::vector<std::byte>& out) : out_(out) {}

  template <typename T>
  bool Int(T value) {
    using U = std::make_unsigned_t<WireInt<T>>;
    std::byte bytes[sizeof(U)];
    StoreLittleEndian(static_cast<U>(value), bytes);
    out_.insert(out_.end(), bytes, bytes + sizeof(U));
    return true;
  }
  bool Flag(uint8_t value) { return Int(value); }
  template <auto... kValid, typename T>
  bool OneOf(T value) {
    return Int(value);
  }
  bool String(const std::string& s, size_t max) {
    size_t n = s.size() < max ? s.size() : max;
    Int<uint16_t>(static_cast<uint16_t>(n));
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out_.insert(out_.end(), p, p + n);
    return true;
  }
  bool Shape(const std::vector<uint64_t>& shape) {
    size_t n = shape.size() < 255 ? shape.size() : 255;
    Int<uint8_t>(static_cast<uint8_t>(n));
    for (size_t i = 0; i < n; ++i) Int<uint64_t>(shape[i]);
    return true;
  }
  // A list's item count.
  bool Count(uint32_t n, size_t /*min_item_bytes*/) { return Int(n); }

 private:
  std::vector<std::byte>& out_;
};

// Reads little-endian fields, failing (sticky) on any overrun or out-of-bound length.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}

  template <typename T>
  bool Int(T& value) {
    using U = std::make_unsigned_t<WireInt<T>>;
    if (!ok_ || in_.size() - pos_ < sizeof(U)) return ok_ = false;
    U bits = 0;
    for (size_t i = 0; i < sizeof(U); ++i) {
      bits |= static_cast<U>(static_cast<U>(in_[pos_ + i]) << (8 * i));
    }
    pos_ += sizeof(U);
    value = static_cast<T>(bits);
    return true;
  }
  // A u8 that must be 0 or 1.
  bool Flag(uint8_t& b) {
    if (!Int(b)) return false;
    if (b > 1) return ok_ = false;
    return true;
  }
  // An enum that must be one of kValid.
  template <auto... kValid, typename T>
  bool OneOf(T& value) {
    WireInt<T> raw = 0;
    if (!Int(raw)) return false;
    if (((raw != static_cast<WireInt<T>>(kValid)) && ...)) return ok_ = false;
    value = static_cast<T>(raw);
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
  // A list's item count: one beyond what the rest of the body can hold (each item takes at least
  // min_item_bytes) is a lie, refused before anything is allocated for it.
  bool Count(uint32_t& n, size_t min_item_bytes) {
    if (!Int(n)) return false;
    if (n > (in_.size() - pos_) / min_item_bytes) return ok_ = false;
    return true;
  }
  // True when every byte was consumed and nothing overran: trailing garbage is a bad message.
  bool Done() const { return ok_ && pos_ == in_.size(); }

 private:
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// One Walk per field rule of wire_fields.hpp, for a Writer (the message is const) or a Reader:
// every message and record is encoded and decoded by walking its Fields(), so no message has code
// of its own.
template <class Io, class M>
bool WalkFields(Io& io, M& m);

template <class Io, class T>
bool Walk(Io& io, wire::IntField<T> f) {
  return io.Int(f.value);
}
template <class Io, class T>
bool Walk(Io& io, wire::FlagField<T> f) {
  return io.Flag(f.value);
}
template <class Io, class T, auto... kValid>
bool Walk(Io& io, wire::OneOfField<T, kValid...> f) {
  return io.template OneOf<kValid...>(f.value);
}
template <class Io, class T, size_t kMax>
bool Walk(Io& io, wire::TextField<T, kMax> f) {
  return io.String(f.value, kMax);
}
template <class Io, class T>
bool Walk(Io& io, wire::ShapeField<T> f) {
  return io.Shape(f.value);
}
template <class Io, class T>
bool Walk(Io& io, wire::NestedField<T> f) {
  return WalkFields(io, f.value);
}
template <class Io, class T>
bool Walk(Io& io, wire::ListField<T> f) {
  uint32_t n = static_cast<uint32_t>(f.value.size());
  if (!io.Count(n, wire::kMinBytesOf<typename std::remove_const_t<T>::value_type>)) return false;
  if constexpr (!std::is_const_v<T>) f.value.resize(n);  // decoding: n is read and checked
  for (auto& item : f.value) {
    if (!WalkFields(io, item)) return false;
  }
  return true;
}

template <class Io, class M>
bool WalkFields(Io& io, M& m) {
  using Message = std::remove_const_t<M>;
  static_assert(wire::kFieldsCoverEveryMember<Message>, "a member is missing from its Fields()");
  return std::apply([&io](auto... field) { return (Walk(io, field) && ...); }, Message::Fields(m));
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

// The header's fields in wire order, for a Writer (the header is const) or a Reader.
template <class Io, class Magic, class H>
bool WalkHeader(Io& io, Magic& magic, H& header) {
  return io.Int(magic) && io.Int(header.body_length) && io.Int(header.type) &&
         io.Int(header.flags) && io.Int(header.request_id);
}
constexpr size_t kBodyLengthAt = 4;  // in the header, after the u32 magic

template <typename Variant>
void EncodeAny(const Variant& message, uint32_t request_id, uint16_t flags,
               std::vector<std::byte>& out) {
  size_t at = out.size();
  Writer w(out);
  const Header header{.type = TypeAt(message), .flags = flags, .request_id = request_id};
  WalkHeader(w, kMagic, header);
  std::visit([&w](const auto& m) { WalkFields(w, m); }, message);
  // The body's length, known now, into the header written with 0 there.
  StoreLittleEndian(static_cast<uint32_t>(out.size() - at - kHeaderSize),
                    out.data() + at + kBodyLengthAt);
}

template <typename Msg, typename Variant>
bool DecodeInto(std::span<const std::byte> body, Variant& out) {
  Msg m;
  Reader r(body);
  if (!WalkFields(r, m) || !r.Done()) return false;
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
    std::byte magic[sizeof(kMagic)];
    StoreLittleEndian(kMagic, magic);
    for (size_t i = 0; i < input.size() && i < sizeof(kMagic); ++i) {
      if (input[i] != magic[i]) {
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
  WalkHeader(r, magic, result.header);
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
