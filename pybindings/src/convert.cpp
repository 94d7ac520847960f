// Python values <-> libshmlease arguments and results (the rules are in convert.hpp). Owns no
// resource: every function returns new references or fills its out-parameter, nothing more.
#include "convert.hpp"

#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "errors.hpp"
#include "shmlease/format.hpp"

namespace shmlease::python {
namespace {

std::string ReprOf(PyObject* obj) {
  PyObject* repr = PyObject_Repr(obj);
  if (repr == nullptr) {
    PyErr_Clear();
    return "?";
  }
  const char* text = PyUnicode_AsUTF8(repr);
  std::string out = text ? text : "?";
  if (text == nullptr) PyErr_Clear();
  Py_DECREF(repr);
  return out;
}

// Sets InvalidArgumentError for a dtype that is not one native scalar of a supported format.
bool RaiseBadDtype(PyObject* original) {
  RaiseErrc(Errc::kInvalidArgument,
            "unsupported dtype " + ReprOf(original) +
                ": a segment holds items of one native struct format among "
                "b B h H i I l L q Q e f d ? (in numpy: int8 ... uint64, float16/32/64, bool)");
  return false;
}

bool CheckFormat(const std::string& format, PyObject* original) {
  if (format.size() == 1 && FormatItemSize(format).has_value()) return true;
  return RaiseBadDtype(original);
}

// Seconds >= 0 -> milliseconds, rounded up; nullopt for "too large to mean anything".
// False with an exception set for a bad value.
bool SecondsArg(PyObject* obj, const char* what, std::optional<std::chrono::milliseconds>* out) {
  if (PyBool_Check(obj) || !(PyFloat_Check(obj) || PyIndex_Check(obj))) {
    PyErr_Format(PyExc_TypeError, "%s must be a number of seconds or None, not %.100s", what,
                 Py_TYPE(obj)->tp_name);
    return false;
  }
  double seconds = 0;
  if (PyFloat_Check(obj)) {
    seconds = PyFloat_AS_DOUBLE(obj);
  } else {
    PyObject* index = PyNumber_Index(obj);
    if (index == nullptr) return false;
    seconds = PyLong_AsDouble(index);
    if (seconds == -1.0 && PyErr_Occurred()) {
      // Beyond a double's range (10**400): its sign decides.
      if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
        Py_DECREF(index);
        return false;
      }
      PyErr_Clear();
      int overflow = 0;
      (void)PyLong_AsLongLongAndOverflow(index, &overflow);  // cannot fail on an int
      seconds = overflow < 0 ? -HUGE_VAL : HUGE_VAL;
    }
    Py_DECREF(index);
  }
  if (std::isnan(seconds) || seconds < 0) {
    RaiseErrc(Errc::kInvalidArgument,
              std::string(what) + " must be >= 0 seconds or None, not " + ReprOf(obj));
    return false;
  }
  const double ms = std::ceil(seconds * 1000.0);
  if (ms >= 1e15) {  // ~31000 years (or inf): as good as forever, and no overflow below
    out->reset();
  } else {
    *out = std::chrono::milliseconds(static_cast<int64_t>(ms));
  }
  return true;
}

// A new list (or tuple) of `n` items, item i from make(i): a new reference, or nullptr with an
// exception set, which fails the whole.
enum class Sequence { kTuple, kList };
template <typename Make>
PyObject* SequenceOf(Sequence kind, size_t n, Make make) {
  const bool list = kind == Sequence::kList;
  PyObject* seq =
      list ? PyList_New(static_cast<Py_ssize_t>(n)) : PyTuple_New(static_cast<Py_ssize_t>(n));
  if (seq == nullptr) return nullptr;
  for (size_t i = 0; i < n; ++i) {
    PyObject* item = make(i);
    if (item == nullptr) {
      Py_DECREF(seq);
      return nullptr;
    }
    if (list) {
      PyList_SET_ITEM(seq, static_cast<Py_ssize_t>(i), item);
    } else {
      PyTuple_SET_ITEM(seq, static_cast<Py_ssize_t>(i), item);
    }
  }
  return seq;
}

}  // namespace

bool StringArg(PyObject* obj, const char* what, std::string* out) {
  if (!PyUnicode_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", what, Py_TYPE(obj)->tp_name);
    return false;
  }
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(obj, &size);
  if (data == nullptr) return false;
  out->assign(data, static_cast<size_t>(size));
  return true;
}

namespace {

// The int (not a bool) `obj`, for PositiveArg and SizeArg. A value of 0 or more is stored in
// *out; a negative one sets *negative and, when it fits a long long, *small to it (else *huge).
// False with an exception set for anything else, and for a value above 2**64 - 1.
struct IntValue {
  uint64_t value = 0;
  bool negative = false;
  bool huge = false;  // negative below LLONG_MIN
  long long small = 0;
};
bool ReadInt(PyObject* obj, const char* what, IntValue* out) {
  if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(obj)->tp_name);
    return false;
  }
  PyObject* index = PyNumber_Index(obj);
  if (index == nullptr) return false;
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(index, &overflow);
  if (value == -1 && PyErr_Occurred()) {
    Py_DECREF(index);
    return false;
  }
  if (overflow > 0) {
    const unsigned long long big = PyLong_AsUnsignedLongLong(index);
    Py_DECREF(index);
    if (big == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
      PyErr_Clear();
      RaiseErrc(Errc::kInvalidArgument, std::string(what) + " is too large");
      return false;
    }
    out->value = big;
    return true;
  }
  Py_DECREF(index);
  out->negative = overflow < 0 || value < 0;
  out->huge = overflow < 0;
  out->small = value;
  if (!out->negative) out->value = static_cast<uint64_t>(value);
  return true;
}

}  // namespace

bool PositiveArg(PyObject* obj, const char* what, uint64_t* out) {
  IntValue v;
  if (!ReadInt(obj, what, &v)) return false;
  if (v.negative || v.value == 0) {
    RaiseErrc(Errc::kInvalidArgument,
              std::string(what) + " must be a positive integer, not " +
                  (v.huge ? std::string("a huge negative number") : std::to_string(v.small)));
    return false;
  }
  *out = v.value;
  return true;
}

bool SizeArg(PyObject* obj, const char* what, uint64_t* out) {
  IntValue v;
  if (!ReadInt(obj, what, &v)) return false;
  if (v.negative) {
    RaiseErrc(Errc::kInvalidArgument, std::string(what) + " must be >= 0, not " + ReprOf(obj));
    return false;
  }
  *out = v.value;
  return true;
}

bool ShapeArg(PyObject* obj, std::vector<uint64_t>* out) {
  out->clear();
  if (obj == nullptr || obj == Py_None) return true;
  if (PyIndex_Check(obj) && !PyBool_Check(obj)) {
    uint64_t dim = 0;
    if (!PositiveArg(obj, "shape", &dim)) return false;
    out->push_back(dim);
    return true;
  }
  if (PyUnicode_Check(obj) || PyBytes_Check(obj)) {
    PyErr_SetString(PyExc_TypeError, "shape must be an int or a sequence of ints, not a string");
    return false;
  }
  PyObject* seq = PySequence_Fast(obj, "shape must be an int or a sequence of ints");
  if (seq == nullptr) return false;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  if (n == 0 || n > static_cast<Py_ssize_t>(kMaxDims)) {
    Py_DECREF(seq);
    RaiseErrc(Errc::kInvalidArgument, "shape must have 1 to " + std::to_string(kMaxDims) +
                                          " dimensions, not " + std::to_string(n));
    return false;
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    uint64_t dim = 0;
    if (!PositiveArg(PySequence_Fast_GET_ITEM(seq, i), "each dimension of shape", &dim)) {
      Py_DECREF(seq);
      out->clear();
      return false;
    }
    out->push_back(dim);
  }
  Py_DECREF(seq);
  return true;
}

bool DtypeArg(PyObject* obj, std::string* out) {
  if (obj == nullptr || obj == Py_None) return true;
  if (PyUnicode_Check(obj)) {
    std::string text;
    if (!StringArg(obj, "dtype", &text)) return false;
    if (text.size() == 2 && text[0] == '@') text.erase(0, 1);
    if (text.size() == 1) {
      if (!CheckFormat(text, obj)) return false;
      *out = text;
      return true;
    }
  }
  PyObject* numpy = PyImport_ImportModule("numpy");
  if (numpy == nullptr) {
    if (!PyErr_ExceptionMatches(PyExc_ImportError)) return false;
    PyErr_Clear();
    if (PyUnicode_Check(obj)) return RaiseBadDtype(obj);
    PyErr_Format(PyExc_TypeError,
                 "dtype must be a struct format character such as 'f' (numpy dtypes need numpy, "
                 "which cannot be imported), not %R",
                 obj);
    return false;
  }
  PyObject* dtype = PyObject_CallMethod(numpy, "dtype", "O", obj);
  Py_DECREF(numpy);
  if (dtype == nullptr) {
    // A string numpy does not understand is a bad value, like any other unsupported dtype.
    if (!PyUnicode_Check(obj) || !PyErr_ExceptionMatches(PyExc_TypeError)) return false;
    PyErr_Clear();
    return RaiseBadDtype(obj);
  }
  PyObject* isnative = PyObject_GetAttrString(dtype, "isnative");
  PyObject* fields = PyObject_GetAttrString(dtype, "fields");
  PyObject* subdtype = PyObject_GetAttrString(dtype, "subdtype");
  PyObject* ch = PyObject_GetAttrString(dtype, "char");
  bool ok = isnative != nullptr && fields != nullptr && subdtype != nullptr && ch != nullptr;
  if (ok) {
    std::string format;
    if (fields != Py_None || subdtype != Py_None || !PyUnicode_Check(ch)) {
      ok = RaiseBadDtype(obj);  // structured or sub-array dtypes
    } else if (!PyObject_IsTrue(isnative)) {
      RaiseErrc(Errc::kInvalidArgument, "dtype must have the native byte order");
      ok = false;
    } else {
      ok = StringArg(ch, "dtype.char", &format) && CheckFormat(format, obj);
      if (ok) *out = format;
    }
  }
  Py_XDECREF(isnative);
  Py_XDECREF(fields);
  Py_XDECREF(subdtype);
  Py_XDECREF(ch);
  Py_DECREF(dtype);
  return ok;
}

bool LeaseModeArg(PyObject* obj, Mode* out) {
  *out = Mode::kRead;
  if (obj == nullptr) return true;
  std::string text;
  if (!StringArg(obj, "mode", &text)) return false;
  if (text == "w") {
    *out = Mode::kWrite;
  } else if (text != "r") {
    RaiseErrc(Errc::kInvalidArgument, "mode must be 'r' or 'w', not " + ReprOf(obj));
    return false;
  }
  return true;
}

bool PermissionArg(PyObject* obj, uint32_t* out) {
  if (PyIndex_Check(obj) && !PyBool_Check(obj)) {
    PyObject* index = PyNumber_Index(obj);
    if (index == nullptr) return false;
    long long value = PyLong_AsLongLong(index);
    Py_DECREF(index);
    if (value == -1 && PyErr_Occurred()) PyErr_Clear();  // out of range: refused below
    if (value >= 0 && value <= 0777) {
      *out = static_cast<uint32_t>(value);
      return true;
    }
    RaiseErrc(Errc::kInvalidArgument, "mode must be permission bits between 0 and 0o777");
    return false;
  }
  PyErr_Format(PyExc_TypeError, "mode must be an int such as 0o640, not %.100s",
               Py_TYPE(obj)->tp_name);
  return false;
}

bool HugeArg(PyObject* obj, HugePages* out) {
  if (obj == nullptr || obj == Py_None) {
    *out = HugePages::kDefault;
  } else if (obj == Py_True) {
    *out = HugePages::kYes;
  } else if (obj == Py_False) {
    *out = HugePages::kNo;
  } else if (PyUnicode_Check(obj) && PyUnicode_CompareWithASCIIString(obj, "best-effort") == 0) {
    *out = HugePages::kBestEffort;
  } else {
    RaiseErrc(Errc::kInvalidArgument,
              "huge must be None, True, False or 'best-effort', not " + ReprOf(obj));
    return false;
  }
  return true;
}

bool PolicyArg(PyObject* obj, ChannelPolicy* out) {
  *out = ChannelPolicy::kBlock;
  if (obj == nullptr) return true;
  std::string text;
  if (!StringArg(obj, "policy", &text)) return false;
  if (text == "latest") {
    *out = ChannelPolicy::kLatest;
  } else if (text != "block") {
    RaiseErrc(Errc::kInvalidArgument, "policy must be 'block' or 'latest', not " + ReprOf(obj));
    return false;
  }
  return true;
}

bool TimeoutArg(PyObject* obj, std::chrono::milliseconds* out) {
  if (obj == nullptr || obj == Py_None) {
    *out = kWaitForever;
    return true;
  }
  std::optional<std::chrono::milliseconds> ms;
  if (!SecondsArg(obj, "timeout", &ms)) return false;
  *out = ms.value_or(kWaitForever);
  return true;
}

bool ReconnectTimeoutArg(PyObject* obj, std::optional<std::chrono::milliseconds>* out) {
  out->reset();
  if (obj == nullptr || obj == Py_None) return true;
  std::optional<std::chrono::milliseconds> ms;
  if (!SecondsArg(obj, "reconnect_timeout", &ms)) return false;
  *out = std::min(ms.value_or(kMaxReconnectTimeout), kMaxReconnectTimeout);
  return true;
}

bool ReaderTimeoutArg(PyObject* obj, std::chrono::milliseconds* out) {
  *out = std::chrono::milliseconds(0);
  if (obj == nullptr || obj == Py_None) return true;
  std::optional<std::chrono::milliseconds> ms;
  if (!SecondsArg(obj, "reader_timeout", &ms)) return false;
  if (ms && *ms <= kMaxReaderTimeout) *out = *ms;
  return true;
}

bool SocketArg(PyObject* obj, std::string* out) {
  out->clear();
  if (obj == nullptr || obj == Py_None) return true;
  PyObject* bytes = nullptr;
  if (!PyUnicode_FSConverter(obj, &bytes)) return false;
  out->assign(PyBytes_AS_STRING(bytes), static_cast<size_t>(PyBytes_GET_SIZE(bytes)));
  Py_DECREF(bytes);
  return true;
}

PyObject* TupleOf(const Py_ssize_t* values, int n) {
  return SequenceOf(Sequence::kTuple, static_cast<size_t>(n),
                    [&](size_t i) { return PyLong_FromSsize_t(values[i]); });
}

PyObject* TupleOf(const std::vector<uint64_t>& values) {
  return SequenceOf(Sequence::kTuple, values.size(),
                    [&](size_t i) { return PyLong_FromUnsignedLongLong(values[i]); });
}

PyObject* SegmentInfoToDict(const SegmentInfo& info) {
  PyObject* shape = TupleOf(info.shape);
  if (shape == nullptr) return nullptr;
  PyObject* d = Py_BuildValue(
      "{s:K,s:s#,s:K,s:s#,s:N,s:L,s:k,s:k,s:k,s:k,s:O,s:k,s:O,s:k,s:O,s:K}",  //
      "id", static_cast<unsigned long long>(info.id),                         //
      "name", info.name.data(), static_cast<Py_ssize_t>(info.name.size()), "size",
      static_cast<unsigned long long>(info.size),  //
      "format", info.format.data(), static_cast<Py_ssize_t>(info.format.size()), "shape",
      shape,  // N: the dict takes our reference
      "created_unix_ns", static_cast<long long>(info.created_unix_ns), "creator_pid",
      static_cast<unsigned long>(info.creator_pid), "creator_uid",
      static_cast<unsigned long>(info.creator_uid), "readers",
      static_cast<unsigned long>(info.readers), "writers", static_cast<unsigned long>(info.writers),
      "exclusive", info.exclusive ? Py_True : Py_False, "waiting",
      static_cast<unsigned long>(info.waiting), "removed", info.removed ? Py_True : Py_False,
      "page_size", static_cast<unsigned long>(info.page_size), "huge_fallback",
      info.huge_fallback ? Py_True : Py_False, "reserved_bytes",
      static_cast<unsigned long long>(ReservedBytes(info)));
  if (d == nullptr) return nullptr;
  PyObject* owner_uid = PyLong_FromUnsignedLong(info.owner_uid);
  PyObject* owner_gid = PyLong_FromUnsignedLong(info.owner_gid);
  PyObject* mode = PyLong_FromUnsignedLong(info.mode);
  bool ok = owner_uid && owner_gid && mode &&
            PyDict_SetItemString(d, "owner_uid", owner_uid) == 0 &&
            PyDict_SetItemString(d, "owner_gid", owner_gid) == 0 &&
            PyDict_SetItemString(d, "mode", mode) == 0;
  Py_XDECREF(owner_uid);
  Py_XDECREF(owner_gid);
  Py_XDECREF(mode);
  if (!ok) {
    Py_DECREF(d);
    return nullptr;
  }
  return d;
}

PyObject* SegmentInfoList(const std::vector<SegmentInfo>& infos) {
  return SequenceOf(Sequence::kList, infos.size(),
                    [&](size_t i) { return SegmentInfoToDict(infos[i]); });
}

PyObject* OptionalSeconds(std::chrono::milliseconds ms) {
  if (ms.count() <= 0) Py_RETURN_NONE;
  return PyFloat_FromDouble(static_cast<double>(ms.count()) / 1000.0);
}

PyObject* ChannelInfoToDict(const ChannelInfo& info) {
  PyObject* shape = TupleOf(info.shape);
  if (shape == nullptr) return nullptr;
  PyObject* timeout = OptionalSeconds(info.reader_timeout);
  if (timeout == nullptr) {
    Py_DECREF(shape);
    return nullptr;
  }
  PyObject* writer_pid = Py_None;
  if (info.writer_pid != 0) {
    writer_pid = PyLong_FromUnsignedLong(info.writer_pid);
    if (writer_pid == nullptr) {
      Py_DECREF(shape);
      Py_DECREF(timeout);
      return nullptr;
    }
  } else {
    Py_INCREF(writer_pid);
  }
  // N: the dict takes our references (also when Py_BuildValue fails).
  return Py_BuildValue("{s:s#,s:s#,s:N,s:O,s:K,s:k,s:s,s:N,s:K,s:N,s:k,s:k,s:k,s:k,s:k,s:L}",  //
                       "name", info.name.data(), static_cast<Py_ssize_t>(info.name.size()),  //
                       "format", info.format.data(),
                       static_cast<Py_ssize_t>(info.format.size()),                           //
                       "shape", shape,                                                        //
                       "variable", info.variable ? Py_True : Py_False,                        //
                       "frame_nbytes", static_cast<unsigned long long>(info.frame_bytes),     //
                       "slots", static_cast<unsigned long>(info.slots),                       //
                       "policy", info.policy == ChannelPolicy::kLatest ? "latest" : "block",  //
                       "reader_timeout", timeout,                                             //
                       "nbytes", static_cast<unsigned long long>(info.bytes),                 //
                       "writer_pid", writer_pid,                                              //
                       "readers", static_cast<unsigned long>(info.readers),                   //
                       "holders", static_cast<unsigned long>(info.holders),                   //
                       "owner_uid", static_cast<unsigned long>(info.owner_uid),               //
                       "owner_gid", static_cast<unsigned long>(info.owner_gid),               //
                       "mode", static_cast<unsigned long>(info.mode),                         //
                       "created_unix_ns", static_cast<long long>(info.created_unix_ns));
}

PyObject* ChannelInfoList(const std::vector<ChannelInfo>& infos) {
  return SequenceOf(Sequence::kList, infos.size(),
                    [&](size_t i) { return ChannelInfoToDict(infos[i]); });
}

PyObject* StatsToDict(const DaemonStats& st) {
  PyObject* clients = PyList_New(0);
  if (clients == nullptr) return nullptr;
  for (const auto& c : st.clients) {
    PyObject* leases = PyList_New(0);
    if (leases == nullptr) {
      Py_DECREF(clients);
      return nullptr;
    }
    for (const auto& l : c.leases) {
      PyObject* item = Py_BuildValue("{s:s#,s:s,s:O}", "segment", l.segment.data(),
                                     static_cast<Py_ssize_t>(l.segment.size()), "mode",
                                     l.mode == Mode::kWrite ? "w" : "r", "exclusive",
                                     l.exclusive ? Py_True : Py_False);
      if (item == nullptr || PyList_Append(leases, item) < 0) {
        Py_XDECREF(item);
        Py_DECREF(leases);
        Py_DECREF(clients);
        return nullptr;
      }
      Py_DECREF(item);
    }
    PyObject* client = Py_BuildValue(
        "{s:K,s:k,s:k,s:k,s:s#,s:k,s:N}", "connection", static_cast<unsigned long long>(c.conn_id),
        "pid", static_cast<unsigned long>(c.pid), "uid", static_cast<unsigned long>(c.uid), "gid",
        static_cast<unsigned long>(c.gid), "process", c.process.data(),
        static_cast<Py_ssize_t>(c.process.size()), "waiting", static_cast<unsigned long>(c.waiting),
        "leases", leases);
    if (client == nullptr || PyList_Append(clients, client) < 0) {
      Py_XDECREF(client);
      Py_DECREF(clients);
      return nullptr;
    }
    Py_DECREF(client);
  }
  return Py_BuildValue("{s:k,s:K,s:K,s:k,s:k,s:K,s:N}", "segments",
                       static_cast<unsigned long>(st.segments), "bytes",
                       static_cast<unsigned long long>(st.bytes), "max_bytes",
                       static_cast<unsigned long long>(st.max_bytes), "leases",
                       static_cast<unsigned long>(st.leases), "connections",
                       static_cast<unsigned long>(st.connections), "uptime_ms",
                       static_cast<unsigned long long>(st.uptime_ms), "clients", clients);
}

}  // namespace shmlease::python
