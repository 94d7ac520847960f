// Ownership: a Lease object holds its libshmlease Lease (the daemon's lock) until release() or its
// deallocation, and shares the mapping (Lease::mapping_owner) until its deallocation, so memory it
// exported stays mapped while it lives, even for np.ndarray(buffer=lease), which keeps no export.
// It holds a strong reference to its Python Client, whose deallocation closes the connection (and
// so releases every lease of it): the Client lives at least as long as each of its Leases.
#include "lease_object.hpp"

#include <unistd.h>

#include <algorithm>
#include <new>
#include <string>
#include <utility>

#include "client_object.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "exporter.hpp"

namespace shmlease::python {
namespace {

struct LeaseState {
  Lease lease;                          // valid while this object holds the daemon's lease
  std::shared_ptr<const void> mapping;  // keeps the exported memory mapped until deallocation
  SegmentInfo info;                     // the segment as granted
  Exporter exporter{};                  // layout and live exports
  bool closed = false;                  // release() or __exit__ ran: no new exports
  Mode mode = Mode::kRead;
  bool exclusive = false;
  uint64_t lease_id = 0;
  pid_t owner_pid = 0;  // the process that was granted the lease
};

struct LeaseObject {
  // clang-format off
  PyObject_HEAD
  PyObject* weakreflist;
  // clang-format on
  LeaseState* state;  // never null once NewLeaseObject() returned the object
  PyObject* client;   // the Python Client: strong reference, so the connection outlives us
};

LeaseState& StateOf(PyObject* self) { return *reinterpret_cast<LeaseObject*>(self)->state; }

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

// True while the daemon counts this lease: not released, its Client not closed, and not lost
// (a reconnect could not restore it, or the connection is gone for good).
bool Counted(PyObject* self) {
  LeaseState& s = StateOf(self);
  if (s.closed || !s.lease.valid()) return false;
  PyObject* client = reinterpret_cast<LeaseObject*>(self)->client;
  if (client != nullptr && ClientIsClosed(client)) return false;
  // In a child forked from the owner the connection is the parent's (its mutex may have been
  // held by another thread at fork time): the inherited memory stays readable, unasked.
  if (getpid() != s.owner_pid) return true;
  return !s.lease.lost();
}

// --- exporter ---

Exporter& ExporterOf(PyObject* self) { return StateOf(self).exporter; }

bool Usable(PyObject* self) {
  if (Counted(self)) return true;
  PyErr_Format(PyExc_ValueError, "operation forbidden on a released lease of '%s'",
               StateOf(self).info.name.c_str());
  return false;
}

constexpr ExporterKind kLeaseKind = {"shmlease.Lease", ExporterOf, Usable};
using Slots = ExporterSlots<kLeaseKind>;

// --- methods ---

PyObject* Lease_release(PyObject* self, PyObject* /*unused*/) {
  LeaseState& s = StateOf(self);
  // Once the daemon no longer counts the lease (client closed, lease lost) nothing is left to
  // protect: release() only marks it released, even with exports alive (they stay mapped).
  if (s.exporter.exports > 0 && Counted(self)) {
    PyErr_Format(PyExc_BufferError,
                 "cannot release the lease of '%s': %zd export(s) (memoryview, numpy array, "
                 "DLPack tensor, ...) still use it; release or delete them first",
                 s.info.name.c_str(), s.exporter.exports);
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
  if (s.exporter.exports > 0 && Counted(self)) {
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
     "stays readable (memory safe) after release, but no longer under the lease's lock.\n"
     "Once the daemon no longer counts the lease (Client closed, lease lost) release() only\n"
     "marks it released, even while exports are alive."},
    {"__enter__", Lease_enter, METH_NOARGS, "__enter__($self, /)\n--\n\nReturn the lease itself."},
    {"__exit__", Lease_exit, METH_VARARGS,
     "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\n"
     "Release the lease. If buffer exports made inside the block are still alive, the lease\n"
     "is not given back yet: it is released when the Lease object and all its exports are\n"
     "gone, and no new export can be made. Never suppresses an exception."},
    SHMLEASE_EXPORTER_METHODS(Slots),
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
PyObject* Lease_get_released(PyObject* self, void*) { return PyBool_FromLong(!Counted(self)); }
PyObject* Lease_get_client(PyObject* self, void*) {
  PyObject* client = reinterpret_cast<LeaseObject*>(self)->client;
  return Py_NewRef(client != nullptr ? client : Py_None);
}
PyObject* Lease_get_exclusive(PyObject* self, void*) {
  return PyBool_FromLong(StateOf(self).exclusive);
}
PyObject* Lease_get_id(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(StateOf(self).lease_id);
}
PyObject* Lease_get_info(PyObject* self, void*) { return SegmentInfoToDict(StateOf(self).info); }
// The granting daemon's socket, read from the Client this Lease keeps alive.
PyObject* Lease_get_socket_path(PyObject* self, void*) {
  return PyObject_GetAttrString(reinterpret_cast<LeaseObject*>(self)->client, "socket_path");
}

PyGetSetDef lease_getset[] = {
    {"name", Lease_get_name, nullptr, "The segment's name (str).", nullptr},
    {"mode", Lease_get_mode, nullptr, "'r' for a read lease, 'w' for a write lease.", nullptr},
    {"released", Lease_get_released, nullptr,
     "True whenever the daemon no longer counts this lease: after release() or the end of a\n"
     "with block, after the Client's close(), and once the lease is lost (a reconnect could\n"
     "not restore it). No new buffer can be exported then (ValueError).",
     nullptr},
    {"client", Lease_get_client, nullptr,
     "The Client that was granted this lease (kept alive by the lease).", nullptr},
    SHMLEASE_EXPORTER_GETSET(Slots),
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
  const Layout& l = s.exporter.layout;
  PyObject* shape = TupleOf(l.shape, l.ndim);
  if (shape == nullptr) return nullptr;
  PyObject* name = Lease_get_name(self, nullptr);
  if (name == nullptr) {
    Py_DECREF(shape);
    return nullptr;
  }
  PyObject* r = PyUnicode_FromFormat(
      "<shmlease.Lease %R mode='%s'%s format='%s' shape=%R exports=%zd%s>", name,
      s.mode == Mode::kWrite ? "w" : "r", s.exclusive ? " exclusive" : "", l.format, shape,
      s.exporter.exports, Counted(self) ? "" : " released");
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
  // After the release: dropping the last reference to the Client closes its connection.
  Py_CLEAR(obj->client);
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
    .tp_as_buffer = &Slots::buffer_procs,
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

PyObject* NewLeaseObject(PyObject* client, Lease&& lease) {
  PyObject* self = LeaseType.tp_alloc(&LeaseType, 0);
  if (self == nullptr) {
    ReleaseWithoutGil(std::move(lease), nullptr, getpid());
    return nullptr;
  }
  auto* obj = reinterpret_cast<LeaseObject*>(self);
  obj->weakreflist = nullptr;
  obj->state = nullptr;
  obj->client = Py_XNewRef(client);
  try {
    obj->state = new LeaseState();
    LeaseState& s = *obj->state;
    s.info = lease.info();
    s.mode = lease.mode();
    s.exclusive = lease.exclusive();
    s.lease_id = lease.id();
    s.owner_pid = getpid();
    s.mapping = lease.mapping_owner();
    // A segment whose stored format or shape this build cannot describe (a newer daemon) is
    // exported as raw bytes.
    SetLayout(&s.exporter.layout, lease.data().data(), lease.size(), s.info.format, s.info.shape,
              !lease.writable());
    s.lease = std::move(lease);
  } catch (...) {
    Py_DECREF(self);  // dealloc releases whatever was moved in
    return RaiseFromException(std::current_exception());
  }
  return self;
}

}  // namespace shmlease::python
