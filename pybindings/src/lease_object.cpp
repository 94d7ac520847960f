// Ownership: a Lease object holds its libshmlease Lease (the daemon's lock) until release() or its
// deallocation, and shares the mapping (Lease::mapping_owner) until its deallocation, so memory it
// exported stays mapped while it lives, even for np.ndarray(buffer=lease), which keeps no export.
#include "lease_object.hpp"

#include <unistd.h>

#include <algorithm>
#include <new>
#include <string>
#include <utility>

#include "client_object.hpp"
#include "errors.hpp"
#include "shmlease/format.hpp"

namespace shmlease::python {
namespace {

struct LeaseState {
  Lease lease;                          // valid while this object holds the daemon's lease
  std::shared_ptr<const void> mapping;  // keeps buf mapped until deallocation
  SegmentInfo info;                     // the segment as granted
  std::byte* buf = nullptr;
  Py_ssize_t nbytes = 0;
  Py_ssize_t itemsize = 1;
  int ndim = 1;
  Py_ssize_t shape[kMaxDims] = {};
  Py_ssize_t strides[kMaxDims] = {};
  char format[2] = {'B', '\0'};
  bool readonly = true;
  bool f_contiguous = true;
  bool closed = false;  // release() or __exit__ ran: no new exports
  Mode mode = Mode::kRead;
  bool exclusive = false;
  uint64_t lease_id = 0;
  Py_ssize_t exports = 0;
  pid_t owner_pid = 0;  // the process that was granted the lease
  std::string socket_path;  // the granting daemon's, for pickling by reference (_sharing.py)
};

struct LeaseObject {
  // clang-format off
  PyObject_HEAD
  PyObject* weakreflist;
  // clang-format on
  LeaseState* state;  // never null once NewLeaseObject() returned the object
};

LeaseState& StateOf(PyObject* self) { return *reinterpret_cast<LeaseObject*>(self)->state; }

std::byte g_empty_buffer[1];  // buf of a zero-length segment: never NULL, never written

// Gives `lease` back to the daemon and drops `mapping`, with the GIL released: the release is a
// socket send, and unmapping a large populated mapping takes milliseconds. In a child forked from
// `owner`, the lease and its connection are the parent's: it is left alone (leaked on purpose).
void ReleaseWithoutGil(Lease lease, std::shared_ptr<const void> mapping, pid_t owner) {
  if (lease.valid() && getpid() != owner) {
    if (new (std::nothrow) Lease(std::move(lease)) == nullptr) return;  // out of memory: sends it
  }
  if (!lease.valid() && mapping == nullptr) return;
  Py_BEGIN_ALLOW_THREADS;
  lease.Release();
  lease = Lease();
  mapping.reset();
  Py_END_ALLOW_THREADS;
}

// Fills the layout fields of `s` from the granted segment. A segment whose stored format or shape
// this build cannot describe (a newer daemon) is exported as raw bytes.
void ComputeLayout(LeaseState& s) {
  const SegmentInfo& info = s.info;
  const auto size = static_cast<uint64_t>(s.lease.size());
  std::optional<size_t> item = FormatItemSize(info.format);
  std::vector<uint64_t> dims = info.shape;
  bool typed = item.has_value() && info.format.size() <= 1;
  if (typed && dims.empty() && size % *item == 0) dims = {size / *item};
  if (typed) {
    std::optional<uint64_t> bytes = ShapeBytes(dims, *item);
    typed = bytes.has_value() && *bytes == size;
  }
  if (!typed || size == 0) {
    item = 1;
    dims = {size};
    s.format[0] = 'B';
  } else {
    s.format[0] = info.format.empty() ? 'B' : info.format[0];
  }
  s.itemsize = static_cast<Py_ssize_t>(*item);
  s.ndim = static_cast<int>(dims.size());
  Py_ssize_t stride = s.itemsize;
  int dims_above_one = 0;
  for (int i = s.ndim - 1; i >= 0; --i) {
    s.shape[i] = static_cast<Py_ssize_t>(dims[i]);
    s.strides[i] = stride;
    stride *= s.shape[i];
    if (s.shape[i] > 1) ++dims_above_one;
  }
  s.nbytes = static_cast<Py_ssize_t>(size);
  s.f_contiguous = dims_above_one <= 1;
}

PyObject* TupleOf(const Py_ssize_t* values, int n) {
  PyObject* tuple = PyTuple_New(n);
  if (tuple == nullptr) return nullptr;
  for (int i = 0; i < n; ++i) {
    PyObject* v = PyLong_FromSsize_t(values[i]);
    if (v == nullptr) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, i, v);
  }
  return tuple;
}

// --- buffer protocol ---

int Lease_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  LeaseState& s = StateOf(self);
  if (view == nullptr) {
    PyErr_SetString(PyExc_BufferError, "shmlease.Lease: NULL view in getbuffer");
    return -1;
  }
  view->obj = nullptr;
  if (s.closed) {
    PyErr_Format(PyExc_ValueError, "operation forbidden on a released lease of '%s'",
                 s.info.name.c_str());
    return -1;
  }
  auto wants = [flags](int flag) { return (flags & flag) == flag; };
  if (wants(PyBUF_WRITABLE) && s.readonly) {
    PyErr_SetString(PyExc_BufferError, "Object is not writable.");
    return -1;
  }
  // The buffer is always C-contiguous, hence also "any" contiguous; Fortran order only when at
  // most one dimension is longer than 1.
  if (wants(PyBUF_F_CONTIGUOUS) && !s.f_contiguous) {
    PyErr_SetString(PyExc_BufferError, "shmlease.Lease: buffer is not Fortran contiguous");
    return -1;
  }
  // As CPython's own exporters: a format without a shape cannot describe typed items.
  if (!wants(PyBUF_ND) && wants(PyBUF_FORMAT)) {
    PyErr_SetString(
        PyExc_BufferError,
        "shmlease.Lease: cannot export as unsigned bytes if the format flag is present");
    return -1;
  }
  view->buf = s.buf;
  view->len = s.nbytes;
  view->readonly = s.readonly ? 1 : 0;
  view->itemsize = s.itemsize;  // the real item size, even when format is NULL ("B")
  view->format = wants(PyBUF_FORMAT) ? s.format : nullptr;
  if (wants(PyBUF_ND)) {
    view->ndim = s.ndim;
    view->shape = s.shape;
  } else {
    view->ndim = 1;
    view->shape = nullptr;
  }
  view->strides = wants(PyBUF_STRIDES) ? s.strides : nullptr;
  view->suboffsets = nullptr;
  view->internal = nullptr;
  view->obj = Py_NewRef(self);
  ++s.exports;
  return 0;
}

// Each export holds a reference in view->obj (the consumer drops it), so the object outlives its
// exports; releasing only uncounts: no I/O, cannot fail.
void Lease_releasebuffer(PyObject* self, Py_buffer* /*view*/) {
  LeaseState& s = StateOf(self);
  if (s.exports > 0) --s.exports;
}

PyBufferProcs lease_as_buffer = {Lease_getbuffer, Lease_releasebuffer};

// --- methods ---

PyObject* Lease_release(PyObject* self, PyObject* /*unused*/) {
  LeaseState& s = StateOf(self);
  if (s.exports > 0) {
    PyErr_Format(PyExc_BufferError,
                 "cannot release the lease of '%s': %zd buffer export(s) (memoryview, numpy "
                 "array, ...) still use it; release or delete them first",
                 s.info.name.c_str(), s.exports);
    return nullptr;
  }
  s.closed = true;
  ReleaseWithoutGil(std::move(s.lease), nullptr, s.owner_pid);
  Py_RETURN_NONE;
}

PyObject* Lease_enter(PyObject* self, PyObject* /*unused*/) {
  if (StateOf(self).closed) {
    PyErr_SetString(PyExc_ValueError, "cannot enter a released lease");
    return nullptr;
  }
  return Py_NewRef(self);
}

PyObject* Lease_exit(PyObject* self, PyObject* /*args*/) {
  LeaseState& s = StateOf(self);
  if (s.exports > 0) {
    // Arrays or memoryviews made inside the block are still alive: keep the daemon's lease (their
    // memory is still in use) and give it back when this object is deallocated.
    s.closed = true;
    Py_RETURN_FALSE;
  }
  PyObject* r = Lease_release(self, nullptr);
  if (r == nullptr) return nullptr;
  Py_DECREF(r);
  Py_RETURN_FALSE;
}

PyMethodDef lease_methods[] = {
    {"release", Lease_release, METH_NOARGS,
     "release($self, /)\n--\n\n"
     "Give the lease back to the daemon now.\n\n"
     "Raises BufferError, and changes nothing, while buffer exports are alive (a memoryview,\n"
     "numpy.asarray(lease), numpy.frombuffer(lease), or any slice of them). Releasing twice\n"
     "does nothing. Afterwards the attributes stay readable but the buffer cannot be exported\n"
     "again (ValueError). An array made with numpy.ndarray(buffer=lease) keeps no export: it\n"
     "stays readable (memory safe) after release, but no longer under the lease's lock."},
    {"__enter__", Lease_enter, METH_NOARGS, "__enter__($self, /)\n--\n\nReturn the lease itself."},
    {"__exit__", Lease_exit, METH_VARARGS,
     "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\n"
     "Release the lease. If buffer exports made inside the block are still alive, the lease\n"
     "is not given back yet: it is released when the Lease object and all its exports are\n"
     "gone, and no new export can be made. Never suppresses an exception."},
    {nullptr, nullptr, 0, nullptr},
};

// --- attributes ---

PyObject* Lease_get_name(PyObject* self, void*) {
  const std::string& name = StateOf(self).info.name;
  return PyUnicode_FromStringAndSize(name.data(), static_cast<Py_ssize_t>(name.size()));
}
PyObject* Lease_get_mode(PyObject* self, void*) {
  return PyUnicode_FromString(StateOf(self).mode == Mode::kWrite ? "w" : "r");
}
PyObject* Lease_get_nbytes(PyObject* self, void*) {
  return PyLong_FromSsize_t(StateOf(self).nbytes);
}
PyObject* Lease_get_readonly(PyObject* self, void*) {
  return PyBool_FromLong(StateOf(self).readonly);
}
PyObject* Lease_get_format(PyObject* self, void*) {
  return PyUnicode_FromString(StateOf(self).format);
}
PyObject* Lease_get_itemsize(PyObject* self, void*) {
  return PyLong_FromSsize_t(StateOf(self).itemsize);
}
PyObject* Lease_get_ndim(PyObject* self, void*) { return PyLong_FromLong(StateOf(self).ndim); }
PyObject* Lease_get_shape(PyObject* self, void*) {
  return TupleOf(StateOf(self).shape, StateOf(self).ndim);
}
PyObject* Lease_get_strides(PyObject* self, void*) {
  return TupleOf(StateOf(self).strides, StateOf(self).ndim);
}
PyObject* Lease_get_exports(PyObject* self, void*) {
  return PyLong_FromSsize_t(StateOf(self).exports);
}
PyObject* Lease_get_released(PyObject* self, void*) {
  return PyBool_FromLong(StateOf(self).closed);
}
PyObject* Lease_get_exclusive(PyObject* self, void*) {
  return PyBool_FromLong(StateOf(self).exclusive);
}
PyObject* Lease_get_id(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(StateOf(self).lease_id);
}
PyObject* Lease_get_info(PyObject* self, void*) { return SegmentInfoToDict(StateOf(self).info); }
PyObject* Lease_get_socket_path(PyObject* self, void*) {
  const std::string& path = StateOf(self).socket_path;
  return PyUnicode_DecodeFSDefaultAndSize(path.data(), static_cast<Py_ssize_t>(path.size()));
}

PyGetSetDef lease_getset[] = {
    {"name", Lease_get_name, nullptr, "The segment's name (str).", nullptr},
    {"mode", Lease_get_mode, nullptr, "'r' for a read lease, 'w' for a write lease.", nullptr},
    {"nbytes", Lease_get_nbytes, nullptr,
     "Size of the exported buffer in bytes: prod(shape) * itemsize.", nullptr},
    {"readonly", Lease_get_readonly, nullptr,
     "True for a read lease: its buffer is read-only (mapped PROT_READ).", nullptr},
    {"format", Lease_get_format, nullptr,
     "The struct format of one item, one native character such as 'f', 'd' or 'B' ('B' for a\n"
     "segment created without a dtype).",
     nullptr},
    {"itemsize", Lease_get_itemsize, nullptr, "Size of one item in bytes.", nullptr},
    {"ndim", Lease_get_ndim, nullptr, "Number of dimensions (len(shape)).", nullptr},
    {"shape", Lease_get_shape, nullptr,
     "The segment's shape, a tuple of ints (1-D (nbytes // itemsize,) when created without one).",
     nullptr},
    {"strides", Lease_get_strides, nullptr, "C-order strides in bytes, a tuple of ints.", nullptr},
    {"exports", Lease_get_exports, nullptr,
     "How many buffer exports (memoryviews, numpy arrays, ...) are alive right now.", nullptr},
    {"released", Lease_get_released, nullptr,
     "True after release() or the end of a with block: no new buffer can be exported.", nullptr},
    {"exclusive", Lease_get_exclusive, nullptr, "True for an exclusive lease.", nullptr},
    {"id", Lease_get_id, nullptr, "The daemon's id of this lease.", nullptr},
    {"info", Lease_get_info, nullptr,
     "The segment as it was when the lease was granted, as a dict (see Client.stat).", nullptr},
    {"socket_path", Lease_get_socket_path, nullptr,
     "The socket path of the daemon that granted the lease (its Client's socket_path).", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyObject* Lease_repr(PyObject* self) {
  LeaseState& s = StateOf(self);
  PyObject* shape = TupleOf(s.shape, s.ndim);
  if (shape == nullptr) return nullptr;
  PyObject* name = Lease_get_name(self, nullptr);
  if (name == nullptr) {
    Py_DECREF(shape);
    return nullptr;
  }
  PyObject* r = PyUnicode_FromFormat(
      "<shmlease.Lease %R mode='%s'%s format='%s' shape=%R exports=%zd%s>", name,
      s.mode == Mode::kWrite ? "w" : "r", s.exclusive ? " exclusive" : "", s.format, shape,
      s.exports, s.closed ? " released" : "");
  Py_DECREF(name);
  Py_DECREF(shape);
  return r;
}

void Lease_dealloc(PyObject* self) {
  auto* obj = reinterpret_cast<LeaseObject*>(self);
  if (obj->weakreflist != nullptr) PyObject_ClearWeakRefs(self);
  if (obj->state != nullptr) {
    Lease lease = std::move(obj->state->lease);
    std::shared_ptr<const void> mapping = std::move(obj->state->mapping);
    const pid_t owner = obj->state->owner_pid;
    delete obj->state;
    obj->state = nullptr;
    ReleaseWithoutGil(std::move(lease), std::move(mapping), owner);
  }
  Py_TYPE(self)->tp_free(self);
}

}  // namespace

PyTypeObject LeaseType = {
    // clang-format off
    .ob_base = PyVarObject_HEAD_INIT(nullptr, 0)
    .tp_name = "shmlease.Lease",
    // clang-format on
    .tp_basicsize = sizeof(LeaseObject),
    .tp_dealloc = Lease_dealloc,
    .tp_repr = Lease_repr,
    .tp_as_buffer = &lease_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR(
        "A lease on a shared-memory segment, granted by Client.lease(); not created directly.\n\n"
        "The lease exports the segment's memory through the buffer protocol, typed by the\n"
        "segment's format and shape, without a copy:\n\n"
        "    with client.lease('weights', 'w') as lease:\n"
        "        a = numpy.asarray(lease)   # float32 (4096, 4096), writable\n"
        "        m = memoryview(lease)      # the same bytes\n\n"
        "A read lease ('r') exports read-only memory; asking for a writable buffer raises\n"
        "BufferError. Every live export (memoryview, numpy array, slices of them) locks the\n"
        "lease: release() raises BufferError until they are gone. A Lease object that is\n"
        "garbage-collected is released. The memory stays mapped as long as the Lease object\n"
        "exists, so arrays that keep only a reference (numpy.ndarray(buffer=lease)) are safe.\n\n"
        "A Lease is not synchronised: share one between threads only with your own locking."),
    .tp_weaklistoffset = offsetof(LeaseObject, weakreflist),
    .tp_methods = lease_methods,
    .tp_getset = lease_getset,
};

int AddLeaseType(PyObject* module) {
  if (PyType_Ready(&LeaseType) < 0) return -1;
  return PyModule_AddObjectRef(module, "Lease", reinterpret_cast<PyObject*>(&LeaseType));
}

PyObject* NewLeaseObject(Lease&& lease) {
  PyObject* self = LeaseType.tp_alloc(&LeaseType, 0);
  if (self == nullptr) {
    ReleaseWithoutGil(std::move(lease), nullptr, getpid());
    return nullptr;
  }
  auto* obj = reinterpret_cast<LeaseObject*>(self);
  obj->weakreflist = nullptr;
  obj->state = nullptr;
  try {
    obj->state = new LeaseState();
    LeaseState& s = *obj->state;
    s.info = lease.info();
    s.mode = lease.mode();
    s.exclusive = lease.exclusive();
    s.lease_id = lease.id();
    s.owner_pid = getpid();
    s.readonly = !lease.writable();
    s.mapping = lease.mapping_owner();
    // A read lease's pages are mapped PROT_READ; exports of it say readonly, so nothing writes.
    s.buf = const_cast<std::byte*>(lease.data().data());
    s.lease = std::move(lease);
    ComputeLayout(s);
    if (s.nbytes == 0 || s.buf == nullptr) s.buf = g_empty_buffer;
  } catch (...) {
    Py_DECREF(self);  // dealloc releases whatever was moved in
    return RaiseFromException(std::current_exception());
  }
  return self;
}

int SetLeaseSocketPath(PyObject* lease, const std::string& path) {
  try {
    StateOf(lease).socket_path = path;
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
    return -1;
  }
  return 0;
}

}  // namespace shmlease::python
