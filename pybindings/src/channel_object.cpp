// Ownership: a Channel object holds a reference to its Python Client and a share of the
// shmlease::Client; Writer and Reader objects hold their C++ counterparts (the writer token, the
// reader slot) until close() or deallocation; a Frame holds its C++ Frame (the slot) until
// release() and a share of the mapping until deallocation, so exported memory stays mapped.
// Exports are counted like a Lease's (exporter.hpp): release() with live exports raises
// BufferError. Every object here holds a strong reference to the Python Client (a Frame
// directly, Writer and Reader through their Channel), so the connection outlives them.
#include "channel_object.hpp"

#include <unistd.h>

#include <new>
#include <string>

#include "client_object.hpp"
#include "convert.hpp"
#include "delegate.hpp"
#include "errors.hpp"
#include "exporter.hpp"
#include "shmlease/channel.hpp"

namespace shmlease::python {
namespace {

// Waits are cut into slices so that Ctrl-C (a pending signal) interrupts them.
constexpr std::chrono::milliseconds kSignalSlice{100};

// Runs `attempt(slice)` (which throws Error(kTimeout) when its slice runs out) without the GIL,
// slice by slice until `timeout`, checking for signals in between. Returns false with an
// exception set on failure.
template <typename Fn>
bool WaitInSlices(std::chrono::milliseconds timeout, Fn&& attempt) {
  const bool forever = timeout.count() < 0;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto slice = kSignalSlice;
    if (!forever) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      slice = std::max(std::chrono::milliseconds(0), std::min(slice, left));
    }
    bool timed_out = false;
    std::exception_ptr error = CallWithoutGil([&] {
      try {
        attempt(slice);
      } catch (const Error& e) {
        if (e.errc() != Errc::kTimeout) throw;
        timed_out = true;
        if (!forever && std::chrono::steady_clock::now() >= deadline) throw;
      }
    });
    if (error) {
      RaiseFromException(error);
      return false;
    }
    if (!timed_out) return true;
    if (PyErr_CheckSignals() < 0) return false;
  }
}

// ------------------------------------------------------------------------------------- Frame

struct FrameObject {
  // clang-format off
  PyObject_HEAD
  PyObject* weakreflist;
  // clang-format on
  Frame* frame;                          // the slot, until release() / publish
  std::shared_ptr<const void>* mapping;  // keeps the exported memory mapped until deallocation
  PyObject* client;                      // the Python Client (strong reference)
  Exporter exporter;                     // layout and live exports
  bool closed;                           // released or published: no new exports
  uint64_t seq;
  int64_t timestamp_ns;
  uint64_t missed;
  PyObject* meta;  // bytes
};

extern PyTypeObject FrameType;

FrameObject* AsFrame(PyObject* o) { return reinterpret_cast<FrameObject*>(o); }

// True while the frame holds its slot: not released or published, the connection alive, and
// (a reader's frame) the reader not evicted, or (a claimed frame) its writer still the writer.
bool FrameHeld(PyObject* self) {
  FrameObject* f = AsFrame(self);
  return !f->closed && f->frame != nullptr && f->frame->held() &&
         (f->client == nullptr || !ClientIsClosed(f->client));
}

Exporter& FrameExporter(PyObject* self) { return AsFrame(self)->exporter; }

bool FrameUsable(PyObject* self) {
  if (FrameHeld(self)) return true;
  PyErr_SetString(PyExc_ValueError, "operation forbidden on a released or published frame");
  return false;
}

constexpr ExporterKind kFrameKind = {"shmlease.Frame", FrameExporter, FrameUsable};
using FrameSlots = ExporterSlots<kFrameKind>;

// Frees the slot without the GIL (a futex wake may be a syscall).
void ReleaseSlot(FrameObject* f) {
  Frame* frame = f->frame;
  f->frame = nullptr;
  if (frame == nullptr) return;
  Py_BEGIN_ALLOW_THREADS;
  delete frame;
  Py_END_ALLOW_THREADS;
}

// `client`: the Python Client of the channel, kept alive by the frame.
PyObject* NewFrameObject(PyObject* client, Frame&& frame, const Channel& ch) {
  PyObject* self = FrameType.tp_alloc(&FrameType, 0);
  if (self == nullptr) return nullptr;  // `frame` gives the slot back on scope exit
  FrameObject* f = AsFrame(self);
  f->weakreflist = nullptr;
  f->client = Py_XNewRef(client);
  f->frame = new (std::nothrow) Frame(std::move(frame));
  f->mapping = new (std::nothrow)
      std::shared_ptr<const void>(f->frame ? f->frame->mapping_owner() : nullptr);
  f->meta = nullptr;
  if (f->frame == nullptr || f->mapping == nullptr) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  Frame& fr = *f->frame;
  try {
    SetLayout(&f->exporter.layout, fr.data().data(), fr.data().size(), ch.format(), ch.shape(),
              !fr.writable());
  } catch (const std::bad_alloc&) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  f->closed = false;
  f->exporter.exports = 0;
  f->seq = fr.seq();
  f->timestamp_ns = fr.timestamp_ns();
  f->missed = fr.missed();
  f->meta = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(fr.meta().data()),
                                      static_cast<Py_ssize_t>(fr.meta().size()));
  if (f->meta == nullptr) {
    Py_DECREF(self);
    return nullptr;
  }
  return self;
}

PyObject* Frame_release(PyObject* self, PyObject*) {
  FrameObject* f = AsFrame(self);
  if (f->exporter.exports > 0 && FrameHeld(self)) {
    PyErr_Format(PyExc_BufferError,
                 "cannot release frame %llu: %zd export(s) (memoryview, numpy array, DLPack "
                 "tensor, ...) still use it; release or delete them first",
                 static_cast<unsigned long long>(f->seq), f->exporter.exports);
    return nullptr;
  }
  f->closed = true;
  ReleaseSlot(f);
  Py_RETURN_NONE;
}

PyObject* Frame_enter(PyObject* self, PyObject*) {
  if (AsFrame(self)->closed) {
    PyErr_SetString(PyExc_ValueError, "cannot enter a released frame");
    return nullptr;
  }
  return Py_NewRef(self);
}

PyObject* Frame_exit(PyObject* self, PyObject*) {
  FrameObject* f = AsFrame(self);
  if (f->exporter.exports > 0 && FrameHeld(self)) {
    f->closed = true;  // given back when the object and its exports are gone
    Py_RETURN_FALSE;
  }
  PyObject* r = Frame_release(self, nullptr);
  if (r == nullptr) return nullptr;
  Py_DECREF(r);
  Py_RETURN_FALSE;
}

// (socket_path, channel name, channel id, channel created_unix_ns, slot, seq): where a reader's
// frame is, for Channel._hold in another process (shmlease._sharing pickles arrays of frames).
PyObject* Frame_location(PyObject* self, PyObject*) {
  FrameObject* f = AsFrame(self);
  // A frame whose `with` block ended while exports live still holds its slot (closed only to
  // new exports): its arrays travel, as a lease's do after its block.
  if (f->frame == nullptr || !f->frame->held() ||
      (f->client != nullptr && ClientIsClosed(f->client))) {
    PyErr_SetString(PyExc_ValueError,
                    "the frame holds no slot any more (released, its reader evicted, or the "
                    "connection closed)");
    return nullptr;
  }
  FrameLocation where;
  try {
    where = f->frame->location();
  } catch (...) {
    return RaiseFromException(std::current_exception());
  }
  PyObject* socket = PyObject_GetAttrString(f->client, "socket_path");
  if (socket == nullptr) return nullptr;
  return Py_BuildValue("(Ns#KLkK)", socket, where.channel_name.data(),
                       static_cast<Py_ssize_t>(where.channel_name.size()),
                       static_cast<unsigned long long>(where.channel_id),
                       static_cast<long long>(where.channel_created_unix_ns),
                       static_cast<unsigned long>(where.slot),
                       static_cast<unsigned long long>(where.seq));
}

PyMethodDef frame_methods[] = {
    {"release", Frame_release, METH_NOARGS,
     "release($self, /)\n--\n\nGive the slot back. Raises BufferError while buffer exports are\n"
     "alive. Releasing twice does nothing."},
    {"__enter__", Frame_enter, METH_NOARGS, "Return the frame itself."},
    {"__exit__", Frame_exit, METH_VARARGS,
     "Release the frame (deferred to deallocation while exports made inside the block live)."},
    {"_location", Frame_location, METH_NOARGS,
     "_location($self, /)\n--\n\n(socket_path, channel, channel_id, created_unix_ns, slot, seq)\n"
     "of a reader's frame, for another process to hold it (pickled arrays). InvalidArgumentError\n"
     "for a claimed frame."},
    SHMLEASE_EXPORTER_METHODS(FrameSlots),
    {nullptr, nullptr, 0, nullptr},
};

PyObject* Frame_get_seq(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(AsFrame(self)->seq);
}
PyObject* Frame_get_timestamp(PyObject* self, void*) {
  return PyLong_FromLongLong(AsFrame(self)->timestamp_ns);
}
PyObject* Frame_get_missed(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(AsFrame(self)->missed);
}
PyObject* Frame_get_meta(PyObject* self, void*) { return Py_NewRef(AsFrame(self)->meta); }
PyObject* Frame_get_released(PyObject* self, void*) { return PyBool_FromLong(!FrameHeld(self)); }

// len(frame): the length of the first dimension, as for a memoryview; for variable-size frames
// the published length in bytes.
Py_ssize_t Frame_length(PyObject* self) {
  const Layout& l = AsFrame(self)->exporter.layout;
  return l.ndim > 0 ? l.shape[0] : 1;
}

PySequenceMethods frame_as_sequence = {.sq_length = Frame_length};

PyGetSetDef frame_getset[] = {
    {"seq", Frame_get_seq, nullptr, "Sequence number (1, 2, ...); 0 for a claimed frame.", nullptr},
    {"timestamp", Frame_get_timestamp, nullptr,
     "Publish time in nanoseconds of time.monotonic_ns() (CLOCK_MONOTONIC).", nullptr},
    {"meta", Frame_get_meta, nullptr, "The writer's metadata bytes.", nullptr},
    {"missed", Frame_get_missed, nullptr,
     "Policy 'latest': frames this reader skipped before this one.", nullptr},
    {"released", Frame_get_released, nullptr,
     "True once the frame holds no slot: after release() or publish, after the Client's\n"
     "close() or the connection's loss, and once its reader was evicted (its bytes may then be\n"
     "overwritten). No new buffer can be exported then (ValueError); exports made before stay\n"
     "mapped.",
     nullptr},
    SHMLEASE_EXPORTER_GETSET(FrameSlots),
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyObject* Frame_repr(PyObject* self) {
  FrameObject* f = AsFrame(self);
  return PyUnicode_FromFormat("<shmlease.Frame seq=%llu %s nbytes=%zd exports=%zd%s>",
                              static_cast<unsigned long long>(f->seq),
                              f->exporter.layout.readonly ? "read-only" : "writable",
                              f->exporter.layout.nbytes, f->exporter.exports,
                              FrameHeld(self) ? "" : " released");
}

void Frame_dealloc(PyObject* self) {
  FrameObject* f = AsFrame(self);
  if (f->weakreflist != nullptr) PyObject_ClearWeakRefs(self);
  ReleaseSlot(f);
  delete f->mapping;
  Py_XDECREF(f->meta);
  Py_CLEAR(f->client);  // after the slot: the last reference closes the connection
  Py_TYPE(self)->tp_free(self);
}

PyTypeObject FrameType = {
    // clang-format off
    .ob_base = PyVarObject_HEAD_INIT(nullptr, 0)
    .tp_name = "shmlease.Frame",
    // clang-format on
    .tp_basicsize = sizeof(FrameObject),
    .tp_dealloc = Frame_dealloc,
    .tp_repr = Frame_repr,
    .tp_as_sequence = &frame_as_sequence,
    .tp_as_buffer = &FrameSlots::buffer_procs,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR(
        "One frame of a channel: a slot leased for reading (Reader.next) or writing\n"
        "(Writer.claim). Exports its memory through the buffer protocol like a Lease:\n"
        "np.asarray(frame) is a zero-copy view, read-only for a reader's frame. release() (or\n"
        "`with frame:`) gives the slot back; it raises BufferError while exports are alive."),
    .tp_weaklistoffset = offsetof(FrameObject, weakreflist),
    .tp_methods = frame_methods,
    .tp_getset = frame_getset,
};

// ------------------------------------------------------------------------------------ Channel

struct ChannelObject {
  // clang-format off
  PyObject_HEAD
      // clang-format on
      PyObject* owner;  // the Python Client
  std::shared_ptr<Client>* client;
  Channel* channel;
};
struct WriterObject {
  // clang-format off
  PyObject_HEAD
      // clang-format on
      PyObject* channel;  // ChannelObject
  Writer* writer;         // null once closed
};
struct ReaderObject {
  // clang-format off
  PyObject_HEAD
      // clang-format on
      PyObject* channel;
  Reader* reader;  // null once closed
  bool busy;       // a call is running without the GIL
};

extern PyTypeObject ChannelType;
extern PyTypeObject WriterType;
extern PyTypeObject ReaderType;

ChannelObject* AsChannel(PyObject* o) { return reinterpret_cast<ChannelObject*>(o); }

PyObject* Channel_writer(PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"timeout", nullptr};
  PyObject* timeout_obj = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:writer", const_cast<char**>(kwlist),
                                   &timeout_obj)) {
    return nullptr;
  }
  WriterOptions options;
  if (timeout_obj != nullptr && !TimeoutArg(timeout_obj, &options.timeout)) return nullptr;
  if (options.timeout.count() != 0) options.interrupted = PythonInterrupt(nullptr);  // Ctrl-C
  ChannelObject* c = AsChannel(self);
  Writer w;
  std::exception_ptr error = CallWithoutGil([&] { w = c->channel->writer(options); });
  if (error) return RaiseFromException(error);
  WriterObject* obj = PyObject_New(WriterObject, &WriterType);
  if (obj == nullptr) return nullptr;
  obj->channel = Py_NewRef(self);
  obj->writer = new (std::nothrow) Writer(std::move(w));
  return reinterpret_cast<PyObject*>(obj);
}

PyObject* Channel_reader(PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"busy_poll", nullptr};
  int busy_poll = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$p:reader", const_cast<char**>(kwlist),
                                   &busy_poll)) {
    return nullptr;
  }
  ChannelObject* c = AsChannel(self);
  Reader r;
  std::exception_ptr error =
      CallWithoutGil([&] { r = c->channel->reader({.busy_poll = busy_poll != 0}); });
  if (error) return RaiseFromException(error);
  ReaderObject* obj = PyObject_New(ReaderObject, &ReaderType);
  if (obj == nullptr) return nullptr;
  obj->channel = Py_NewRef(self);
  obj->reader = new (std::nothrow) Reader(std::move(r));
  obj->busy = false;
  return reinterpret_cast<PyObject*>(obj);
}

// _hold(channel_id, created_unix_ns, slot, seq): Channel::Hold, the frame another process took.
PyObject* Channel_hold(PyObject* self, PyObject* args) {
  FrameLocation where;
  unsigned long long id = 0, seq = 0;
  long long created = 0;
  unsigned int slot = 0;
  if (!PyArg_ParseTuple(args, "KLIK:_hold", &id, &created, &slot, &seq)) return nullptr;
  ChannelObject* c = AsChannel(self);
  where.channel_name = c->channel->name();
  where.channel_id = id;
  where.channel_created_unix_ns = created;
  where.slot = slot;
  where.seq = seq;
  Frame f;
  std::exception_ptr error = CallWithoutGil([&] { f = c->channel->Hold(where); });
  if (error) return RaiseFromException(error);
  return NewFrameObject(c->owner, std::move(f), *c->channel);
}

// The daemon's view of the channel (one round trip), without the GIL; false with an exception set.
bool StatChannel(PyObject* self, ChannelInfo* out) {
  ChannelObject* c = AsChannel(self);
  std::exception_ptr error = CallWithoutGil([&] { *out = c->channel->Stat(); });
  if (!error) return true;
  RaiseFromException(error);
  return false;
}
PyObject* Channel_info(PyObject* self, PyObject*) {
  ChannelInfo info;
  if (!StatChannel(self, &info)) return nullptr;
  return ChannelInfoToDict(info);
}

PyObject* Channel_remove(PyObject* self, PyObject*) {
  ChannelObject* c = AsChannel(self);
  std::string name = c->channel->name();
  std::exception_ptr error = CallWithoutGil([&] { Channel::Remove(**c->client, name); });
  if (error) return RaiseFromException(error);
  Py_RETURN_NONE;
}

PyMethodDef channel_methods[] = {
    {"writer", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Channel_writer)),
     METH_VARARGS | METH_KEYWORDS,
     "writer($self, /, timeout=0)\n--\n\nBecome the channel's one writer. Raises\n"
     "LeaseTimeoutError when another writer holds it beyond `timeout` seconds (None: wait)."},
    {"reader", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Channel_reader)),
     METH_VARARGS | METH_KEYWORDS,
     "reader($self, /, *, busy_poll=False)\n--\n\nAttach a reader: it receives the frames\n"
     "published from now on."},
    {"_hold", Channel_hold, METH_VARARGS,
     "_hold($self, channel_id, created_unix_ns, slot, seq, /)\n--\n\nHold the frame another\n"
     "process took (Frame._location()): a read-only Frame of the same slot. NotFoundError when\n"
     "the slot no longer has it or the channel is another one. Used by pickled arrays."},
    {"info", Channel_info, METH_NOARGS,
     "info($self, /)\n--\n\nWhat the daemon knows of the channel now, as a dict (see\n"
     "Client.channels())."},
    {"remove", Channel_remove, METH_NOARGS,
     "remove($self, /)\n--\n\nTake the channel's name away; its memory is freed when the last\n"
     "writer, reader and frame are gone. NotFoundError when no channel has that name (the\n"
     "message says so when the name is a segment's)."},
    {nullptr, nullptr, 0, nullptr},
};

PyObject* Channel_get_name(PyObject* self, void*) {
  return PyUnicode_FromString(AsChannel(self)->channel->name().c_str());
}
PyObject* Channel_get_shape(PyObject* self, void*) {
  const auto& shape = AsChannel(self)->channel->shape();
  PyObject* t = PyTuple_New(static_cast<Py_ssize_t>(shape.size()));
  if (t == nullptr) return nullptr;
  for (size_t i = 0; i < shape.size(); ++i) {
    PyObject* v = PyLong_FromUnsignedLongLong(shape[i]);
    if (v == nullptr) {
      Py_DECREF(t);
      return nullptr;
    }
    PyTuple_SET_ITEM(t, static_cast<Py_ssize_t>(i), v);
  }
  return t;
}
PyObject* Channel_get_dtype(PyObject* self, void*) {
  return PyUnicode_FromString(AsChannel(self)->channel->format().c_str());
}
PyObject* Channel_get_slots(PyObject* self, void*) {
  return PyLong_FromUnsignedLong(AsChannel(self)->channel->slots());
}
PyObject* Channel_get_policy(PyObject* self, void*) {
  return PyUnicode_FromString(
      AsChannel(self)->channel->policy() == ChannelPolicy::kLatest ? "latest" : "block");
}
PyObject* Channel_get_nbytes(PyObject* self, void*) {
  return PyLong_FromSize_t(AsChannel(self)->channel->frame_bytes());
}
PyObject* Channel_get_readers(PyObject* self, void*) {
  ChannelInfo info;
  if (!StatChannel(self, &info)) return nullptr;
  return PyLong_FromUnsignedLong(info.readers);
}
PyObject* Channel_get_variable(PyObject* self, void*) {
  return PyBool_FromLong(AsChannel(self)->channel->variable());
}
PyObject* Channel_get_max_frame_nbytes(PyObject* self, void*) {
  const Channel& ch = *AsChannel(self)->channel;
  if (!ch.variable()) Py_RETURN_NONE;
  return PyLong_FromSize_t(ch.frame_bytes());
}
PyObject* Channel_get_reader_timeout(PyObject* self, void*) {
  return OptionalSeconds(AsChannel(self)->channel->reader_timeout());
}

PyGetSetDef channel_getset[] = {
    {"name", Channel_get_name, nullptr, "The channel's name.", nullptr},
    {"shape", Channel_get_shape, nullptr, "Frame shape (tuple).", nullptr},
    {"dtype", Channel_get_dtype, nullptr, "Item format of a frame ('B', 'f', ...).", nullptr},
    {"slots", Channel_get_slots, nullptr, "Number of frame slots.", nullptr},
    {"policy", Channel_get_policy, nullptr, "'block' or 'latest'.", nullptr},
    {"frame_nbytes", Channel_get_nbytes, nullptr,
     "Bytes per frame; for variable-size frames the largest (max_frame_nbytes).", nullptr},
    {"variable", Channel_get_variable, nullptr,
     "True for variable-size frames (made with max_frame_bytes=): each frame carries its\n"
     "length, a reader's frame is that many bytes (dtype uint8, shape (length,)).",
     nullptr},
    {"max_frame_nbytes", Channel_get_max_frame_nbytes, nullptr,
     "Variable-size frames: the largest frame in bytes; None for fixed-shape frames.", nullptr},
    {"reader_timeout", Channel_get_reader_timeout, nullptr,
     "Policy 'block': seconds after which a reader that keeps the writer waiting is evicted\n"
     "(its next()/try_next() raise EvictedError); None: the writer waits without limit.",
     nullptr},
    {"readers", Channel_get_readers, nullptr, "Readers attached now (asks the daemon).", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// "name='cam' shape=(480, 640, 3) dtype='B'": what Channel, Writer and Reader reprs start with.
// Names and formats are validated ([A-Za-z0-9._-], one struct character): no quoting needed.
PyObject* DescribeChannel(const Channel& ch) {
  if (ch.variable()) {
    return PyUnicode_FromFormat("'%s' max_frame_nbytes=%zu", ch.name().c_str(), ch.frame_bytes());
  }
  std::string shape = "(";
  for (size_t i = 0; i < ch.shape().size(); ++i) {
    shape += (i ? ", " : "") + std::to_string(ch.shape()[i]);
  }
  shape += ch.shape().size() == 1 ? ",)" : ")";
  return PyUnicode_FromFormat("'%s' shape=%s dtype='%s'", ch.name().c_str(), shape.c_str(),
                              ch.format().c_str());
}

// The reader count asks the daemon; a repr does not fail when it cannot answer (readers=?).
PyObject* Channel_repr(PyObject* self) {
  const Channel& ch = *AsChannel(self)->channel;
  ChannelInfo info;
  const bool known = !ClientIsClosed(AsChannel(self)->owner) && StatChannel(self, &info);
  if (!known) PyErr_Clear();
  const std::string readers = known ? std::to_string(info.readers) : "?";
  PyObject* what = DescribeChannel(ch);
  if (what == nullptr) return nullptr;
  PyObject* r = PyUnicode_FromFormat(
      "<shmlease.Channel %U slots=%u policy='%s' frame_nbytes=%zu readers=%s>", what,
      static_cast<unsigned>(ch.slots()), ch.policy() == ChannelPolicy::kLatest ? "latest" : "block",
      ch.frame_bytes(), readers.c_str());
  Py_DECREF(what);
  return r;
}

void Channel_dealloc(PyObject* self) {
  ChannelObject* c = AsChannel(self);
  Channel* ch = c->channel;
  std::shared_ptr<Client>* client = c->client;
  c->channel = nullptr;
  c->client = nullptr;
  Py_BEGIN_ALLOW_THREADS;
  delete ch;
  delete client;
  Py_END_ALLOW_THREADS;
  Py_XDECREF(c->owner);
  Py_TYPE(self)->tp_free(self);
}

PyTypeObject ChannelType = {
    // clang-format off
    .ob_base = PyVarObject_HEAD_INIT(nullptr, 0)
    .tp_name = "shmlease.Channel",
    // clang-format on
    .tp_basicsize = sizeof(ChannelObject),
    .tp_dealloc = Channel_dealloc,
    .tp_repr = Channel_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("A frame channel, from Client.channel(); see docs/CHANNELS.md."),
    .tp_methods = channel_methods,
    .tp_getset = channel_getset,
};

// ------------------------------------------------------------------------------------- Writer

// False with ConnectionLostError set once the channel's Client was closed: the daemon learns of
// it only a moment later, and until then the shared state would still say "attached".
bool ClientOpen(PyObject* channel, const char* role) {
  ChannelObject* c = AsChannel(channel);
  if (!ClientIsClosed(c->owner)) return true;
  RaiseErrc(Errc::kConnectionLost, "channel '" + c->channel->name() + "': this " + role +
                                       "'s Client was closed, and with it its place");
  return false;
}

Writer* OpenWriter(PyObject* self) {
  auto* obj = reinterpret_cast<WriterObject*>(self);
  Writer* w = obj->writer;
  if (w == nullptr || !w->valid()) {
    PyErr_SetString(PyExc_ValueError, "operation on a closed shmlease.Writer");
    return nullptr;
  }
  if (!ClientOpen(obj->channel, "writer")) return nullptr;
  return w;
}

PyObject* Writer_claim(PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"timeout", nullptr};
  PyObject* timeout_obj = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:claim", const_cast<char**>(kwlist),
                                   &timeout_obj)) {
    return nullptr;
  }
  std::chrono::milliseconds timeout;
  if (!TimeoutArg(timeout_obj, &timeout)) return nullptr;
  Writer* w = OpenWriter(self);
  if (w == nullptr) return nullptr;
  ChannelObject* c = AsChannel(reinterpret_cast<WriterObject*>(self)->channel);
  // The library counts the reader timeout across claims that timed out, so the slices stay short.
  Frame f;
  if (!WaitInSlices(timeout, [&](std::chrono::milliseconds slice) { f = w->Claim(slice); })) {
    return nullptr;
  }
  return NewFrameObject(c->owner, std::move(f), *c->channel);
}

PyObject* Writer_publish(PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"frame", "meta", "length", nullptr};
  PyObject* frame_obj = nullptr;
  Py_buffer meta{};
  PyObject* length_obj = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|y*$O:publish", const_cast<char**>(kwlist),
                                   &FrameType, &frame_obj, &meta, &length_obj)) {
    return nullptr;
  }
  FrameObject* f = AsFrame(frame_obj);
  uint64_t length = 0;
  const bool has_length = length_obj != Py_None;
  Writer* w = has_length && !SizeArg(length_obj, "length", &length) ? nullptr : OpenWriter(self);
  PyObject* result = nullptr;
  if (w == nullptr) {
  } else if (f->frame == nullptr || f->exporter.layout.readonly) {
    PyErr_SetString(PyExc_ValueError, "publish: not a claimed, unpublished frame of this writer");
  } else if (f->frame->valid() && !FrameHeld(frame_obj)) {
    // Its writer lost its place (the connection was closed or lost): nobody would see it.
    RaiseErrc(Errc::kConnectionLost,
              "publish: this frame's writer is no longer the channel's writer (its connection "
              "to shmleased was closed or lost)");
  } else if (f->exporter.exports > 0) {
    PyErr_Format(PyExc_BufferError,
                 "cannot publish: %zd export(s) of the frame are alive (readers must not see "
                 "it change); release or delete them first",
                 f->exporter.exports);
  } else {
    uint64_t seq = 0;
    try {
      const std::span<const std::byte> bytes{static_cast<const std::byte*>(meta.buf),
                                             static_cast<size_t>(meta.buf ? meta.len : 0)};
      if (!has_length) {
        seq = w->Publish(*f->frame, bytes);  // the whole frame (variable: the whole slot)
      } else {  // the library checks it against the channel's frame size
        seq = w->Publish(*f->frame, static_cast<size_t>(length), bytes);
      }
      f->closed = true;
      f->seq = seq;
      delete f->frame;  // now empty
      f->frame = nullptr;
      result = PyLong_FromUnsignedLongLong(seq);
    } catch (...) {
      RaiseFromException(std::current_exception());
    }
  }
  if (meta.obj != nullptr) PyBuffer_Release(&meta);
  return result;
}

PyObject* Writer_close(PyObject* self, PyObject*) {
  auto* obj = reinterpret_cast<WriterObject*>(self);
  Writer* w = obj->writer;
  obj->writer = nullptr;
  Py_BEGIN_ALLOW_THREADS;
  delete w;
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

PyObject* Writer_wait_for_readers(PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"n", "timeout", nullptr};
  unsigned int n = 1;
  PyObject* timeout_obj = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "I|O:wait_for_readers", const_cast<char**>(kwlist),
                                   &n, &timeout_obj)) {
    return nullptr;
  }
  std::chrono::milliseconds timeout;
  if (!TimeoutArg(timeout_obj, &timeout)) return nullptr;
  Writer* w = OpenWriter(self);
  if (w == nullptr) return nullptr;
  bool ok = WaitInSlices(timeout, [&](std::chrono::milliseconds slice) {
    if (!w->WaitForReaders(n, slice)) throw Error(Errc::kTimeout, "not enough readers joined");
  });
  if (!ok) return nullptr;
  Py_RETURN_NONE;
}

PyObject* Writer_enter(PyObject* self, PyObject*) { return Py_NewRef(self); }
PyObject* Writer_exit(PyObject* self, PyObject*) {
  PyObject* r = Writer_close(self, nullptr);
  Py_XDECREF(r);
  Py_RETURN_FALSE;
}

PyObject* Writer_get_readers(PyObject* self, void*) {
  Writer* w = reinterpret_cast<WriterObject*>(self)->writer;
  return PyLong_FromUnsignedLong(w ? w->reader_count() : 0);
}

PyMethodDef writer_methods[] = {
    {"claim", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Writer_claim)),
     METH_VARARGS | METH_KEYWORDS,
     "claim($self, /, timeout=None)\n--\n\nA free slot as a writable Frame. Policy 'block' waits\n"
     "while readers still hold or have not read every slot; LeaseTimeoutError after `timeout`."},
    {"publish", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Writer_publish)),
     METH_VARARGS | METH_KEYWORDS,
     "publish($self, /, frame, meta=b'', *, length=None)\n--\n\nPublish a claimed frame (no\n"
     "exports may be alive: BufferError) with up to 256 bytes of metadata. Returns its sequence\n"
     "number. length: variable-size frames, the bytes readers get (0..max_frame_nbytes; None:\n"
     "the whole slot); fixed-shape frames accept only frame_nbytes (or None)."},
    {"wait_for_readers",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Writer_wait_for_readers)),
     METH_VARARGS | METH_KEYWORDS,
     "wait_for_readers($self, /, n, timeout=None)\n--\n\nWait until n readers are attached."},
    {"close", Writer_close, METH_NOARGS,
     "close($self, /)\n--\n\nEnd the stream: readers get EndOfStreamError once they have read\n"
     "every frame; another writer may take over."},
    {"__enter__", Writer_enter, METH_NOARGS, "Return the writer itself."},
    {"__exit__", Writer_exit, METH_VARARGS, "Close the writer (end of stream)."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef writer_getset[] = {
    {"readers", Writer_get_readers, nullptr, "Readers attached now.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyObject* Writer_repr(PyObject* self) {
  auto* obj = reinterpret_cast<WriterObject*>(self);
  PyObject* what = DescribeChannel(*AsChannel(obj->channel)->channel);
  if (what == nullptr) return nullptr;
  Writer* w = obj->writer;
  PyObject* r = w != nullptr && w->valid()
                    ? PyUnicode_FromFormat("<shmlease.Writer of %U readers=%u>", what,
                                           static_cast<unsigned>(w->reader_count()))
                    : PyUnicode_FromFormat("<shmlease.Writer of %U closed>", what);
  Py_DECREF(what);
  return r;
}

void Writer_dealloc(PyObject* self) {
  PyObject* r = Writer_close(self, nullptr);
  Py_XDECREF(r);
  Py_XDECREF(reinterpret_cast<WriterObject*>(self)->channel);
  PyObject_Free(self);
}

PyTypeObject WriterType = {
    // clang-format off
    .ob_base = PyVarObject_HEAD_INIT(nullptr, 0)
    .tp_name = "shmlease.Writer",
    // clang-format on
    .tp_basicsize = sizeof(WriterObject),
    .tp_dealloc = Writer_dealloc,
    .tp_repr = Writer_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("The one writer of a channel, from Channel.writer()."),
    .tp_methods = writer_methods,
    .tp_getset = writer_getset,
};

// ------------------------------------------------------------------------------------- Reader

Reader* UsableReader(PyObject* self) {
  auto* obj = reinterpret_cast<ReaderObject*>(self);
  if (obj->reader == nullptr || !obj->reader->valid()) {
    PyErr_SetString(PyExc_ValueError, "operation on a closed shmlease.Reader");
    return nullptr;
  }
  if (obj->busy) {
    PyErr_SetString(PyExc_RuntimeError, "shmlease.Reader is in use by another thread");
    return nullptr;
  }
  if (!ClientOpen(obj->channel, "reader")) return nullptr;
  return obj->reader;
}

PyObject* ReaderNext(PyObject* self, std::chrono::milliseconds timeout) {
  auto* obj = reinterpret_cast<ReaderObject*>(self);
  Reader* r = UsableReader(self);
  if (r == nullptr) return nullptr;
  Frame f;
  obj->busy = true;
  bool ok = WaitInSlices(timeout, [&](std::chrono::milliseconds slice) { f = r->Next(slice); });
  obj->busy = false;
  if (!ok) return nullptr;
  return NewFrameObject(AsChannel(obj->channel)->owner, std::move(f),
                        *AsChannel(obj->channel)->channel);
}

PyObject* Reader_next(PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"timeout", nullptr};
  PyObject* timeout_obj = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:next", const_cast<char**>(kwlist),
                                   &timeout_obj)) {
    return nullptr;
  }
  std::chrono::milliseconds timeout;
  if (!TimeoutArg(timeout_obj, &timeout)) return nullptr;
  return ReaderNext(self, timeout);
}

PyObject* Reader_try_next(PyObject* self, PyObject*) {
  auto* obj = reinterpret_cast<ReaderObject*>(self);
  Reader* r = UsableReader(self);
  if (r == nullptr) return nullptr;
  Frame f;
  bool ended = false;
  try {
    f = r->TryNext();
    // Reporting the end also stops fileno() from staying readable for it.
    if (!f) ended = r->AtEnd();
  } catch (...) {
    return RaiseFromException(std::current_exception());
  }
  if (ended) {
    return RaiseErrc(Errc::kEndOfStream, "channel '" + AsChannel(obj->channel)->channel->name() +
                                             "': the writer is gone and every frame was read");
  }
  if (!f) Py_RETURN_NONE;
  return NewFrameObject(AsChannel(obj->channel)->owner, std::move(f),
                        *AsChannel(obj->channel)->channel);
}

PyObject* Reader_iternext(PyObject* self) {
  PyObject* f = ReaderNext(self, kWaitForever);
  if (f == nullptr && PyErr_ExceptionMatches(PyExc_EOFError)) PyErr_Clear();  // StopIteration
  return f;
}

PyObject* Reader_fileno(PyObject* self, PyObject*) {
  Reader* r = UsableReader(self);
  if (r == nullptr) return nullptr;
  try {
    return PyLong_FromLong(r->fileno());
  } catch (...) {
    return RaiseFromException(std::current_exception());
  }
}

PyObject* Reader_close(PyObject* self, PyObject*) {
  auto* obj = reinterpret_cast<ReaderObject*>(self);
  if (obj->busy) {
    PyErr_SetString(PyExc_RuntimeError, "shmlease.Reader is in use by another thread");
    return nullptr;
  }
  Reader* r = obj->reader;
  obj->reader = nullptr;
  Py_BEGIN_ALLOW_THREADS;
  delete r;
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

PyObject* Reader_enter(PyObject* self, PyObject*) { return Py_NewRef(self); }
PyObject* Reader_exit(PyObject* self, PyObject*) {
  PyObject* r = Reader_close(self, nullptr);
  if (r == nullptr) return nullptr;
  Py_DECREF(r);
  Py_RETURN_FALSE;
}

// asyncio: the waiting is written in Python (shmlease._aio, over loop.add_reader(fileno())); these
// only delegate to it. Each returns a coroutine.
PyObject* CallAio(const char* function, PyObject* self, PyObject* timeout) {
  PyObject* args = PyTuple_Pack(1, timeout);
  if (args == nullptr) return nullptr;
  PyObject* r = CallPythonPart("shmlease._aio", function, self, args, nullptr);
  Py_DECREF(args);
  return r;
}

PyObject* Reader_anext(PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"timeout", nullptr};
  PyObject* timeout_obj = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:anext", const_cast<char**>(kwlist),
                                   &timeout_obj)) {
    return nullptr;
  }
  return CallAio("reader_next", self, timeout_obj);
}

PyMethodDef reader_methods[] = {
    {"next", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Reader_next)),
     METH_VARARGS | METH_KEYWORDS,
     "next($self, /, timeout=None)\n--\n\nThe next frame (read-only). Blocks without spinning\n"
     "for long; LeaseTimeoutError after `timeout`, EndOfStreamError when the writer is gone."},
    {"try_next", Reader_try_next, METH_NOARGS,
     "try_next($self, /)\n--\n\nA frame if one is ready now, else None. Raises EndOfStreamError\n"
     "when the writer is gone and every frame was read (fileno() is then no longer readable)."},
    {"fileno", Reader_fileno, METH_NOARGS,
     "fileno($self, /)\n--\n\nAn fd readable while a frame (or an end of stream not reported\n"
     "yet) is ready, for select/epoll/asyncio. Then call try_next() (or next()); once\n"
     "they raised EndOfStreamError the fd stays quiet until a new writer publishes or ends."},
    {"anext", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Reader_anext)),
     METH_VARARGS | METH_KEYWORDS,
     "anext($self, /, timeout=None)\n--\n\nCoroutine: await the next frame without blocking the\n"
     "event loop (loop.add_reader on fileno(), then try_next()). LeaseTimeoutError after\n"
     "`timeout` seconds, EndOfStreamError when the writer is gone and every frame was read.\n"
     "`async for frame in reader:` does the same and stops at the end of the stream."},
    {"close", Reader_close, METH_NOARGS, "close($self, /)\n--\n\nDetach this reader."},
    {"__enter__", Reader_enter, METH_NOARGS, "Return the reader itself."},
    {"__exit__", Reader_exit, METH_VARARGS, "Detach the reader."},
    {nullptr, nullptr, 0, nullptr},
};

PyObject* Reader_am_anext(PyObject* self) { return CallAio("reader_anext", self, Py_None); }

PyAsyncMethods reader_as_async = {
    .am_await = nullptr,
    .am_aiter = PyObject_SelfIter,
    .am_anext = Reader_am_anext,
};

PyObject* Reader_repr(PyObject* self) {
  auto* obj = reinterpret_cast<ReaderObject*>(self);
  const Channel& ch = *AsChannel(obj->channel)->channel;
  PyObject* what = DescribeChannel(ch);
  if (what == nullptr) return nullptr;
  Reader* r = obj->reader;
  const char* state = r == nullptr || !r->valid() ? "closed" : r->ended() ? "ended" : "open";
  PyObject* text =
      PyUnicode_FromFormat("<shmlease.Reader of %U policy='%s' %s>", what,
                           ch.policy() == ChannelPolicy::kLatest ? "latest" : "block", state);
  Py_DECREF(what);
  return text;
}

void Reader_dealloc(PyObject* self) {
  auto* obj = reinterpret_cast<ReaderObject*>(self);
  Reader* r = obj->reader;
  obj->reader = nullptr;
  Py_BEGIN_ALLOW_THREADS;
  delete r;
  Py_END_ALLOW_THREADS;
  Py_XDECREF(obj->channel);
  PyObject_Free(self);
}

PyTypeObject ReaderType = {
    // clang-format off
    .ob_base = PyVarObject_HEAD_INIT(nullptr, 0)
    .tp_name = "shmlease.Reader",
    // clang-format on
    .tp_basicsize = sizeof(ReaderObject),
    .tp_dealloc = Reader_dealloc,
    .tp_as_async = &reader_as_async,
    .tp_repr = Reader_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("A reader of a channel, from Channel.reader(); iterate it for frames."),
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = Reader_iternext,
    .tp_methods = reader_methods,
};

}  // namespace

int AddChannelTypes(PyObject* module) {
  for (PyTypeObject* t : {&FrameType, &ChannelType, &WriterType, &ReaderType}) {
    if (PyType_Ready(t) < 0) return -1;
    const char* short_name = t->tp_name + 9;  // after "shmlease."
    if (PyModule_AddObjectRef(module, short_name, reinterpret_cast<PyObject*>(t)) < 0) return -1;
  }
  return 0;
}

PyObject* NewChannelObject(PyObject* owner, std::shared_ptr<Client> client, PyObject* args,
                           PyObject* kwds) {
  static const char* kwlist[] = {
      "name",           "shape", "dtype", "slots", "policy", "max_frame_bytes",
      "reader_timeout", "mode",  "wait",  nullptr};
  PyObject* name_obj = nullptr;
  PyObject* shape_obj = Py_None;
  PyObject* dtype_obj = Py_None;
  PyObject* slots_obj = nullptr;
  PyObject* policy_obj = nullptr;
  PyObject* max_obj = nullptr;
  PyObject* reader_timeout_obj = nullptr;
  PyObject* mode_obj = nullptr;
  PyObject* wait_obj = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$OOOOOOO:channel", const_cast<char**>(kwlist),
                                   &name_obj, &shape_obj, &dtype_obj, &slots_obj, &policy_obj,
                                   &max_obj, &reader_timeout_obj, &mode_obj, &wait_obj)) {
    return nullptr;
  }
  if (slots_obj == Py_None) slots_obj = nullptr;
  if (policy_obj == Py_None) policy_obj = nullptr;
  if (max_obj == Py_None) max_obj = nullptr;
  // Shape and dtype as create() takes them (convert.hpp); the library checks the ranges. Slots
  // and policy left out stay unset: the library's defaults, or whatever an existing channel has.
  // wait= left out does not wait; given, it is a timeout as lease() takes it (None: forever).
  std::string n;
  ChannelOptions options;
  uint64_t slots = 0;
  ChannelPolicy policy = kDefaultChannelPolicy;
  if (!StringArg(name_obj, "name", &n) || !ShapeArg(shape_obj, &options.shape) ||
      !DtypeArg(dtype_obj, &options.format) ||
      (slots_obj != nullptr && !PositiveArg(slots_obj, "slots", &slots)) ||
      (policy_obj != nullptr && !PolicyArg(policy_obj, &policy)) ||
      (max_obj != nullptr && !PositiveArg(max_obj, "max_frame_bytes", &options.max_frame_bytes)) ||
      !ReaderTimeoutArg(reader_timeout_obj, &options.reader_timeout) ||
      (mode_obj != nullptr && !PermissionArg(mode_obj, &options.mode)) ||
      (wait_obj != nullptr && !TimeoutArg(wait_obj, &options.wait))) {
    return nullptr;
  }
  if (slots > UINT32_MAX) return RaiseErrc(Errc::kInvalidArgument, "slots is too large");
  if (options.max_frame_bytes != 0 && options.format != "B") {
    return RaiseErrc(Errc::kInvalidArgument,
                     "variable-size frames (max_frame_bytes) are bytes: dtype must be 'B', not '" +
                         options.format + "'");
  }
  // Set when the channel is made: opening by name alone cannot set them, so asking is a mistake.
  const bool creates = !options.shape.empty() || options.max_frame_bytes != 0;
  if (!creates && (options.reader_timeout.count() != 0 || mode_obj != nullptr)) {
    return RaiseErrc(Errc::kInvalidArgument,
                     std::string(mode_obj != nullptr ? "mode" : "reader_timeout") +
                         " is set when a channel is created: pass shape= or max_frame_bytes= too");
  }
  if (slots_obj != nullptr) options.slots = static_cast<uint32_t>(slots);
  if (policy_obj != nullptr) options.policy = policy;
  if (options.wait.count() != 0) options.interrupted = PythonInterrupt(nullptr);  // Ctrl-C
  Channel* ch = nullptr;
  std::exception_ptr error = CallWithoutGil([&] { ch = new Channel(*client, n, options); });
  if (error) return RaiseFromException(error);
  ChannelObject* obj = PyObject_New(ChannelObject, &ChannelType);
  if (obj == nullptr) {
    delete ch;
    return nullptr;
  }
  obj->owner = Py_NewRef(owner);
  obj->client = new std::shared_ptr<Client>(std::move(client));
  obj->channel = ch;
  return reinterpret_cast<PyObject*>(obj);
}

}  // namespace shmlease::python
