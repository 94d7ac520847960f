// The one place where Python values become libshmlease arguments, and libshmlease results become
// Python values. client_object.cpp, lease_object.cpp and channel_object.cpp parse nothing
// themselves, so every method takes the same values with the same rules and the same errors:
// TypeError for a value of the wrong type, InvalidArgumentError (a ValueError) for a value of the
// right type that is out of range. Nothing here raises OverflowError.
//
// Every *Arg function returns false with a Python exception set when `obj` is not acceptable.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "shmlease/channel.hpp"
#include "shmlease/client.hpp"

namespace shmlease::python {

// A str, as UTF-8. `what` names the argument in the TypeError.
bool StringArg(PyObject* obj, const char* what, std::string* out);

// A positive int (a size or a count); bool is refused. Up to 2**64 - 1.
bool PositiveArg(PyObject* obj, const char* what, uint64_t* out);

// A size that may be 0 (a frame's length): an int >= 0; bool is refused. Up to 2**64 - 1.
bool SizeArg(PyObject* obj, const char* what, uint64_t* out);

// A shape: None (left empty), an int, or a sequence of 1 to kMaxDims positive ints.
bool ShapeArg(PyObject* obj, std::vector<uint64_t>* out);

// A dtype -> one native struct format character. None leaves `out` unchanged. A str of one
// character (optionally after '@') is taken as it is; anything else (numpy.float32,
// numpy.dtype('f4'), 'float32', float) goes through numpy.dtype(obj).char when numpy can be
// imported. numpy is never required.
bool DtypeArg(PyObject* obj, std::string* out);

// A lease mode: 'r' or 'w'. nullptr (argument left out) is 'r'.
bool LeaseModeArg(PyObject* obj, Mode* out);

// Permission bits 0..0o777, an int as os.chmod takes.
bool PermissionArg(PyObject* obj, uint32_t* out);

// huge=: None (the daemon decides), True, False or 'best-effort'.
bool HugeArg(PyObject* obj, HugePages* out);

// policy=: 'block' or 'latest'.
bool PolicyArg(PyObject* obj, ChannelPolicy* out);

// A timeout in seconds, one rule for every call that waits: None (or nullptr, left out) waits
// forever (kWaitForever); an int or a float >= 0, rounded up to whole milliseconds; a value too
// large to mean anything (more than ~31000 years, inf, 10**400) also waits forever. bool, NaN and
// negative values are refused.
bool TimeoutArg(PyObject* obj, std::chrono::milliseconds* out);

// reconnect_timeout=: None (nullopt: the library default), else seconds >= 0 as for TimeoutArg;
// 0 never reconnects. A huge value is capped at kMaxReconnectTimeout (the library adds it to
// steady_clock::now(), which must not overflow).
inline constexpr std::chrono::milliseconds kMaxReconnectTimeout{std::chrono::hours(24 * 365 * 100)};
bool ReconnectTimeoutArg(PyObject* obj, std::optional<std::chrono::milliseconds>* out);

// reader_timeout=: seconds > 0 as for TimeoutArg, rounded up to whole milliseconds; None and 0
// mean no timeout (0 ms). A value beyond kMaxReaderTimeout (100 years, inf) is also no timeout:
// a reader would never be evicted anyway. bool, NaN and negative values are refused.
inline constexpr std::chrono::milliseconds kMaxReaderTimeout{std::chrono::hours(24 * 365 * 100)};
bool ReaderTimeoutArg(PyObject* obj, std::chrono::milliseconds* out);

// A socket path: None (empty `out`: resolve the default), or a str, bytes or os.PathLike path.
bool SocketArg(PyObject* obj, std::string* out);

// A tuple of Python ints.
PyObject* TupleOf(const Py_ssize_t* values, int n);
PyObject* TupleOf(const std::vector<uint64_t>& values);

// The segment as a dict: id, name, size, format, shape (tuple), created_unix_ns, creator_pid,
// creator_uid, readers, writers, exclusive (bool), waiting, removed (bool), page_size,
// huge_fallback (bool), reserved_bytes, owner_uid, owner_gid, mode.
PyObject* SegmentInfoToDict(const SegmentInfo& info);
PyObject* SegmentInfoList(const std::vector<SegmentInfo>& infos);

// The channel as a dict: name, format, shape (tuple, () for variable-size frames), variable
// (bool), frame_nbytes (every frame's size, or the largest), slots, policy ('block' or
// 'latest'), reader_timeout (seconds, None for none), nbytes (memory of its frames), writer_pid
// (None without a writer), readers, owner_uid, owner_gid, mode, created_unix_ns.
PyObject* ChannelInfoToDict(const ChannelInfo& info);
PyObject* ChannelInfoList(const std::vector<ChannelInfo>& infos);

// Seconds as a float, or None for 0 (no timeout).
PyObject* OptionalSeconds(std::chrono::milliseconds ms);

// The daemon's totals, with its clients as a list of dicts and their leases as dicts (segment,
// mode, exclusive).
PyObject* StatsToDict(const DaemonStats& stats);

}  // namespace shmlease::python
