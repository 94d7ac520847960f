// How one field of a message travels. Every message and record in protocol.hpp lists its members
// once, in wire order, in a static Fields(m) that returns a tuple of these rules, each holding a
// reference to one member (const when encoding). codec.cpp encodes and decodes any message by
// walking that tuple, and kMinBytesOf<M> (the smallest encoding, used to refuse a list count the
// body cannot hold before anything is allocated) is summed from it; nothing is written twice.
// The rules hold no bytes and do no I/O: the byte work is codec.cpp's alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace shmlease::proto::wire {

// The rules of M's fields, in wire order: a std::tuple of the rule types below.
template <class M>
using FieldsOf = decltype(M::Fields(std::declval<M&>()));

template <class Tuple>
struct SumOfMinBytes;
template <class... Rules>
struct SumOfMinBytes<std::tuple<Rules...>> {
  static constexpr size_t value = (size_t{0} + ... + Rules::kMinBytes);
};

// The fewest bytes an M can take: every string and list empty, every shape without dimensions.
template <class M>
inline constexpr size_t kMinBytesOf = SumOfMinBytes<FieldsOf<M>>::value;

// A little-endian integer of sizeof(T) bytes, or an enum as its underlying integer; any value
// decodes (an error code this build does not know still travels).
template <class T>
struct IntField {
  T& value;
  static constexpr size_t kMinBytes = sizeof(T);
};
// A u8 that is 0 or 1; any other value is a bad message.
template <class T>
struct FlagField {
  T& value;
  static constexpr size_t kMinBytes = 1;
};
// An enum as its underlying integer; a value other than kValid... is a bad message.
template <class T, auto... kValid>
struct OneOfField {
  T& value;
  static constexpr size_t kMinBytes = sizeof(T);
};
// A u16 length, then the bytes. The encoder cuts a longer string at kMax bytes, so what it writes
// always decodes; the decoder refuses a length above kMax.
template <class T, size_t kMax>
struct TextField {
  T& value;
  static constexpr size_t kMinBytes = 2;
};
// A u8 count, then a u64 per dimension; the decoder refuses more than kMaxDims (format.hpp).
template <class T>
struct ShapeField {
  T& value;
  static constexpr size_t kMinBytes = 1;
};
// A record with a Fields() of its own, inline.
template <class T>
struct NestedField {
  T& value;
  static constexpr size_t kMinBytes = kMinBytesOf<std::remove_const_t<T>>;
};
// A u32 count, then each item's fields. A count above what the rest of the body can hold (each
// item takes at least kMinBytesOf<item>) is refused before anything is allocated for it.
template <class T>
struct ListField {
  T& value;
  static constexpr size_t kMinBytes = 4;
};

template <class T>
constexpr IntField<T> Int(T& value) {
  static_assert(std::is_integral_v<T> || std::is_enum_v<T>);
  return {value};
}
template <class T>
constexpr FlagField<T> Flag(T& value) {
  static_assert(std::is_same_v<std::remove_const_t<T>, uint8_t>);
  return {value};
}
template <auto... kValid, class T>
constexpr OneOfField<T, kValid...> OneOf(T& value) {
  static_assert(std::is_enum_v<T> && sizeof...(kValid) > 0);
  static_assert((std::is_same_v<std::remove_const_t<T>, decltype(kValid)> && ...));
  return {value};
}
template <size_t kMax, class T>
constexpr TextField<T, kMax> Text(T& value) {
  static_assert(std::is_same_v<std::remove_const_t<T>, std::string>);
  static_assert(kMax <= UINT16_MAX, "a string's length travels as a u16");
  return {value};
}
template <class T>
constexpr ShapeField<T> Shape(T& value) {
  static_assert(std::is_same_v<std::remove_const_t<T>, std::vector<uint64_t>>);
  return {value};
}
template <class T>
constexpr NestedField<T> Nested(T& value) {
  return {value};
}
template <class T>
constexpr ListField<T> List(T& value) {
  static_assert(kMinBytesOf<typename std::remove_const_t<T>::value_type> > 0,
                "a list item must take at least one byte, or no count could be refused");
  return {value};
}

// How many members the aggregate M has: the most initializers M{...} accepts. A record whose
// Fields() names fewer rules than that has left a member off the wire (codec.cpp checks).
namespace detail {
struct AnyMember {
  template <class T>
  operator T&() const&&;  // never called: used only where nothing is evaluated
};
template <class M, class... Seen>
constexpr size_t CountMembers() {
  if constexpr (requires { M{Seen{}..., AnyMember{}}; }) {
    return CountMembers<M, Seen..., AnyMember>();
  } else {
    return sizeof...(Seen);
  }
}
}  // namespace detail

template <class M>
inline constexpr bool kFieldsCoverEveryMember = std::tuple_size_v<FieldsOf<M>> ==
                                                detail::CountMembers<M>();

}  // namespace shmlease::proto::wire
