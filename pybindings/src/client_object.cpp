// Ownership: a Client object owns a shared_ptr to one shmlease::Client (one connection); each call
// copies it before releasing the GIL, and close() while other threads are inside calls is deferred
// until the last of them returns. Leases share the connection and mapping themselves (libshmlease).
#include "client_object.hpp"

#include <unistd.h>

#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "channel_object.hpp"
#include "convert.hpp"
#include "delegate.hpp"
#include "errors.hpp"
#include "lease_object.hpp"
#include "shmlease/socket_path.hpp"

namespace shmlease::python {
namespace {

struct ClientState {
  std::shared_ptr<Client> client;  // null once closed
  std::string socket_path;
  uint32_t server_pid = 0;
  // Calls running without the GIL, and whether close() waits for them. shmlease::Client::Close()
  // resets the connection that those calls are using, so it must not run under them.
  int in_flight = 0;
  bool closing = false;
  // The process that connected. A child forked from it shares the socket: it must neither use it
  // nor shut it down (that would cut the parent's connection too).
  pid_t owner_pid = 0;
};

struct ClientObject {
  // clang-format off
  PyObject_HEAD
  PyObject* weakreflist;
  // clang-format on
  ClientState* state;  // never null once tp_new returned the object
};

ClientState& StateOf(PyObject* self) { return *reinterpret_cast<ClientObject*>(self)->state; }

// The connected client, or nullptr with ValueError set when closed.
std::shared_ptr<Client> Connected(PyObject* self) {
  ClientState& s = StateOf(self);
  if (s.client == nullptr || s.closing) {
    PyErr_SetString(PyExc_ValueError, "operation on a closed shmlease.Client");
    return nullptr;
  }
  if (getpid() != s.owner_pid) {
    RaiseErrc(Errc::kConnectionLost, "this Client was connected by process " +
                                         std::to_string(s.owner_pid) +
                                         ", before a fork; connect again in this process");
    return nullptr;
  }
  return s.client;
}

// Closes the connection with the GIL released. In a child forked from `owner` the connection is
// the parent's: it is left alone (leaked on purpose).
void CloseWithoutGil(std::shared_ptr<Client> client, pid_t owner) {
  if (client == nullptr) return;
  if (getpid() != owner) {
    if (new (std::nothrow) std::shared_ptr<Client>(std::move(client)) != nullptr) return;
  }
  Py_BEGIN_ALLOW_THREADS;
  client->Close();
  client.reset();
  Py_END_ALLOW_THREADS;
}

// Runs fn(client) without the GIL, counted in in_flight; the last call to return after close()
// performs the deferred close.
template <typename Fn>
std::exception_ptr CallClient(PyObject* self, const std::shared_ptr<Client>& client, Fn&& fn) {
  ClientState& s = StateOf(self);
  ++s.in_flight;
  std::exception_ptr error = CallWithoutGil([&] { fn(*client); });
  if (--s.in_flight == 0 && s.closing) CloseWithoutGil(std::move(s.client), s.owner_pid);
  return error;
}

// --- type slots and methods ---

PyObject* Client_new(PyTypeObject* type, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"socket", "reconnect_timeout", nullptr};
  PyObject* socket = Py_None;
  PyObject* reconnect_obj = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$O:Client", const_cast<char**>(kwlist), &socket,
                                   &reconnect_obj)) {
    return nullptr;
  }
  std::string path;
  std::optional<std::chrono::milliseconds> reconnect_timeout;
  if (!SocketArg(socket, &path) || !ReconnectTimeoutArg(reconnect_obj, &reconnect_timeout)) {
    return nullptr;
  }
  std::shared_ptr<Client> client;
  std::string resolved;
  std::exception_ptr error = CallWithoutGil([&] {
    resolved = ResolveSocketPath(path);
    client = std::make_shared<Client>(resolved);
    if (reconnect_timeout) client->set_reconnect_timeout(*reconnect_timeout);
  });
  if (error) return RaiseFromException(error, resolved);

  PyObject* self = type->tp_alloc(type, 0);
  if (self == nullptr) return nullptr;  // `client` closes on scope exit
  auto* obj = reinterpret_cast<ClientObject*>(self);
  obj->weakreflist = nullptr;
  obj->state = new (std::nothrow) ClientState();
  if (obj->state == nullptr) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  try {
    obj->state->socket_path = client->socket_path();
  } catch (const std::bad_alloc&) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  obj->state->server_pid = client->server_pid();
  obj->state->owner_pid = getpid();
  obj->state->client = std::move(client);
  return self;
}

void Client_dealloc(PyObject* self) {
  auto* obj = reinterpret_cast<ClientObject*>(self);
  if (obj->weakreflist != nullptr) PyObject_ClearWeakRefs(self);
  if (obj->state != nullptr) {
    std::shared_ptr<Client> client = std::move(obj->state->client);
    const pid_t owner = obj->state->owner_pid;
    delete obj->state;
    obj->state = nullptr;
    CloseWithoutGil(std::move(client), owner);
  }
  Py_TYPE(self)->tp_free(self);
}

PyObject* Client_close(PyObject* self, PyObject* /*unused*/) {
  ClientState& s = StateOf(self);
  s.closing = true;
  if (s.in_flight == 0) CloseWithoutGil(std::move(s.client), s.owner_pid);
  Py_RETURN_NONE;
}

PyObject* Client_enter(PyObject* self, PyObject* /*unused*/) {
  if (Connected(self) == nullptr) return nullptr;
  return Py_NewRef(self);
}

PyObject* Client_exit(PyObject* self, PyObject* /*args*/) {
  PyObject* r = Client_close(self, nullptr);
  if (r == nullptr) return nullptr;
  Py_DECREF(r);
  Py_RETURN_FALSE;
}

PyObject* Client_ping(PyObject* self, PyObject* /*unused*/) {
  std::shared_ptr<Client> client = Connected(self);
  if (client == nullptr) return nullptr;
  std::exception_ptr error = CallClient(self, client, [&](Client& c) { c.Ping(); });
  if (error) return RaiseFromException(error, StateOf(self).socket_path);
  Py_RETURN_NONE;
}

PyObject* Client_create(PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"name",     "size", "shape", "dtype",
                                 "exist_ok", "huge", "mode",  nullptr};
  PyObject* name_obj = nullptr;
  PyObject* size_obj = Py_None;
  PyObject* shape_obj = Py_None;
  PyObject* dtype_obj = Py_None;
  int exist_ok = 0;
  PyObject* huge_obj = Py_None;
  PyObject* mode_obj = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$OOpOO:create", const_cast<char**>(kwlist),
                                   &name_obj, &size_obj, &shape_obj, &dtype_obj, &exist_ok,
                                   &huge_obj, &mode_obj)) {
    return nullptr;
  }
  std::string name;
  CreateOptions options;
  if (!StringArg(name_obj, "name", &name)) return nullptr;
  if (size_obj != Py_None && !PositiveArg(size_obj, "size", &options.size)) return nullptr;
  if (!ShapeArg(shape_obj, &options.shape)) return nullptr;
  if (!DtypeArg(dtype_obj, &options.format)) return nullptr;
  if (size_obj == Py_None && shape_obj == Py_None) {
    return RaiseErrc(Errc::kInvalidArgument, "create() needs a size or a shape");
  }
  options.exist_ok = exist_ok != 0;
  if (!HugeArg(huge_obj, &options.huge)) return nullptr;
  if (mode_obj != Py_None && !PermissionArg(mode_obj, &options.mode)) return nullptr;
  std::shared_ptr<Client> client = Connected(self);
  if (client == nullptr) return nullptr;
  SegmentInfo info;
  std::exception_ptr error =
      CallClient(self, client, [&](Client& c) { info = c.Create(name, options); });
  if (error) return RaiseFromException(error, StateOf(self).socket_path);
  return SegmentInfoToDict(info);
}

PyObject* Client_lease(PyObject* self, PyObject* args, PyObject* kwds) {
  // _interrupted: shmlease._aio's cancel flag (a callable), polled with the signals.
  static const char* kwlist[] = {"name",     "mode",         "exclusive", "timeout",
                                 "populate", "_interrupted", nullptr};
  PyObject* name_obj = nullptr;
  PyObject* mode_obj = nullptr;
  int exclusive = 0;
  PyObject* timeout_obj = Py_None;
  int populate = 0;
  PyObject* interrupted = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$pOpO:lease", const_cast<char**>(kwlist),
                                   &name_obj, &mode_obj, &exclusive, &timeout_obj, &populate,
                                   &interrupted)) {
    return nullptr;
  }
  if (interrupted != Py_None && !PyCallable_Check(interrupted)) {
    PyErr_SetString(PyExc_TypeError, "_interrupted must be a callable or None");
    return nullptr;
  }
  std::string name;
  if (!StringArg(name_obj, "name", &name)) return nullptr;
  Mode mode = Mode::kRead;
  if (!LeaseModeArg(mode_obj, &mode)) return nullptr;
  LeaseOptions options;
  options.exclusive = exclusive != 0;
  options.populate = populate != 0;
  if (!TimeoutArg(timeout_obj, &options.timeout)) return nullptr;
  // Ctrl-C, and close() from another thread, withdraw a lease request that waits (a zero
  // timeout never waits).
  if (options.timeout.count() != 0) {
    options.interrupted =
        PythonInterrupt(interrupted != Py_None ? interrupted : nullptr, &StateOf(self).closing);
  }
  std::shared_ptr<Client> client = Connected(self);
  if (client == nullptr) return nullptr;

  Lease lease;
  std::exception_ptr error =
      CallClient(self, client, [&](Client& c) { lease = c.Acquire(name, mode, options); });
  if (error && StateOf(self).closing && !PyErr_Occurred()) {
    PyErr_SetString(PyExc_ValueError,
                    "operation on a closed shmlease.Client: it was closed while lease() waited");
    return nullptr;
  }
  if (error) return RaiseFromException(error, StateOf(self).socket_path);
  return NewLeaseObject(self, std::move(lease));
}

// The awaitable lease is written in Python (shmlease._aio.client_lease). Returns a coroutine.
PyObject* Client_alease(PyObject* self, PyObject* args, PyObject* kwds) {
  return CallPythonPart("shmlease._aio", "client_lease", self, args, kwds);
}

PyObject* Client_remove(PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"name", nullptr};
  PyObject* name_obj = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:remove", const_cast<char**>(kwlist), &name_obj)) {
    return nullptr;
  }
  std::string name;
  if (!StringArg(name_obj, "name", &name)) return nullptr;
  std::shared_ptr<Client> client = Connected(self);
  if (client == nullptr) return nullptr;
  std::exception_ptr error = CallClient(self, client, [&](Client& c) { c.Remove(name); });
  if (error) return RaiseFromException(error, StateOf(self).socket_path);
  Py_RETURN_NONE;
}

PyObject* Client_stat(PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"name", nullptr};
  PyObject* name_obj = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:stat", const_cast<char**>(kwlist), &name_obj)) {
    return nullptr;
  }
  std::string name;
  if (!StringArg(name_obj, "name", &name)) return nullptr;
  std::shared_ptr<Client> client = Connected(self);
  if (client == nullptr) return nullptr;
  SegmentInfo info;
  std::exception_ptr error = CallClient(self, client, [&](Client& c) { info = c.Stat(name); });
  if (error) return RaiseFromException(error, StateOf(self).socket_path);
  return SegmentInfoToDict(info);
}

PyObject* Client_chmod(PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"name", "mode", nullptr};
  PyObject* name_obj = nullptr;
  PyObject* mode_obj = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:chmod", const_cast<char**>(kwlist), &name_obj,
                                   &mode_obj)) {
    return nullptr;
  }
  std::string name;
  uint32_t mode = 0;
  if (!StringArg(name_obj, "name", &name) || !PermissionArg(mode_obj, &mode)) return nullptr;
  std::shared_ptr<Client> client = Connected(self);
  if (client == nullptr) return nullptr;
  SegmentInfo info;
  std::exception_ptr error =
      CallClient(self, client, [&](Client& c) { info = c.Chmod(name, mode); });
  if (error) return RaiseFromException(error, StateOf(self).socket_path);
  return SegmentInfoToDict(info);
}

PyObject* Client_stats(PyObject* self, PyObject* /*unused*/) {
  std::shared_ptr<Client> client = Connected(self);
  if (client == nullptr) return nullptr;
  DaemonStats st;
  std::exception_ptr error = CallClient(self, client, [&](Client& c) { st = c.Stats(); });
  if (error) return RaiseFromException(error, StateOf(self).socket_path);
  return StatsToDict(st);
}

PyObject* Client_list(PyObject* self, PyObject* /*unused*/) {
  std::shared_ptr<Client> client = Connected(self);
  if (client == nullptr) return nullptr;
  std::vector<SegmentInfo> infos;
  std::exception_ptr error = CallClient(self, client, [&](Client& c) { infos = c.List(); });
  if (error) return RaiseFromException(error, StateOf(self).socket_path);
  return SegmentInfoList(infos);
}

PyObject* Client_channels(PyObject* self, PyObject* /*unused*/) {
  std::shared_ptr<Client> client = Connected(self);
  if (client == nullptr) return nullptr;
  std::vector<ChannelInfo> infos;
  std::exception_ptr error = CallClient(self, client, [&](Client& c) { infos = Channel::List(c); });
  if (error) return RaiseFromException(error, StateOf(self).socket_path);
  return ChannelInfoList(infos);
}

PyObject* Client_get_socket_path(PyObject* self, void*) {
  const std::string& path = StateOf(self).socket_path;
  return PyUnicode_DecodeFSDefaultAndSize(path.data(), static_cast<Py_ssize_t>(path.size()));
}
PyObject* Client_get_server_pid(PyObject* self, void*) {
  return PyLong_FromUnsignedLong(StateOf(self).server_pid);
}
PyObject* Client_get_closed(PyObject* self, void*) {
  return PyBool_FromLong(StateOf(self).client == nullptr || StateOf(self).closing);
}

PyObject* Client_repr(PyObject* self) {
  PyObject* path = Client_get_socket_path(self, nullptr);
  if (path == nullptr) return nullptr;
  PyObject* r = StateOf(self).client == nullptr || StateOf(self).closing
                    ? PyUnicode_FromFormat("<shmlease.Client socket=%R closed>", path)
                    : PyUnicode_FromFormat("<shmlease.Client socket=%R server_pid=%lu>", path,
                                           static_cast<unsigned long>(StateOf(self).server_pid));
  Py_DECREF(path);
  return r;
}

PyObject* Client_channel(PyObject* self, PyObject* args, PyObject* kwds) {
  std::shared_ptr<Client> client = Connected(self);
  if (client == nullptr) return nullptr;
  return NewChannelObject(self, std::move(client), args, kwds);
}

PyObject* Client_share(PyObject* self, PyObject* args, PyObject* kwds) {
  return CallPythonPart("shmlease._sharing", "share", self, args, kwds);
}

PyObject* Client_array(PyObject* self, PyObject* args, PyObject* kwds) {
  return CallPythonPart("shmlease._sharing", "array", self, args, kwds);
}

PyMethodDef client_methods[] = {
    {"share", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Client_share)),
     METH_VARARGS | METH_KEYWORDS,
     "share($self, /, name, array, *, mode=0o600, exist_ok=False, huge=None)\n--\n\n"
     "Create the segment `name` typed as `array` (its dtype and shape), copy the array's bytes\n"
     "into it once, and return its stat dict. The dtype must be one native scalar ('f', 'd',\n"
     "'B', 'q', ...): other byte orders, object, structured and sub-array dtypes raise\n"
     "InvalidArgumentError. exist_ok: fill an existing segment of the same dtype and shape\n"
     "(ExistsError if it differs). mode and huge: as for create(). Needs numpy."},
    {"array", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Client_array)),
     METH_VARARGS | METH_KEYWORDS,
     "array($self, /, name, mode='r', *, exclusive=False, timeout=None, populate=False)\n--\n\n"
     "Lease the segment `name` (arguments as for lease()) and return a numpy array of its\n"
     "memory that owns the lease: the lease is released when the last array using it\n"
     "(views and slices included) is collected. Read leases give read-only arrays. Needs numpy."},
    {"channel", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Client_channel)),
     METH_VARARGS | METH_KEYWORDS,
     "channel($self, /, name, shape=None, *, dtype='B', slots=None, policy=None,\n"
     "        max_frame_bytes=None, reader_timeout=None, mode=0o600, wait=0)\n--\n\n"
     "Create the frame channel `name` or open it (then format and shape, and slots and policy\n"
     "where given, must match); with neither shape nor max_frame_bytes only open it.\n"
     "Channels and segments share one namespace: a segment's name is refused (ExistsError).\n"
     "max_frame_bytes: variable-size frames of up to that many bytes instead of a shape (dtype\n"
     "'B'); each publish says its length. slots: 2..64 (None: 8 when creating, else whatever\n"
     "the channel has). policy: 'block' or 'latest' (None: 'block' when creating, else whatever\n"
     "it has). reader_timeout: policy 'block', seconds after which a reader that keeps the\n"
     "writer waiting is evicted (EvictedError); None or 0: the writer waits without limit.\n"
     "mode: permission bits (read: may read frames, write: may be the writer and remove it).\n"
     "reader_timeout and mode are set when the channel is created. wait: when only opening,\n"
     "seconds to wait for a channel that does not exist yet (as lease() timeouts; None waits\n"
     "forever, 0 fails at once with NotFoundError), then TimeoutError. docs/CHANNELS.md."},
    {"ping", Client_ping, METH_NOARGS,
     "ping($self, /)\n--\n\nOne round trip to the daemon; raises shmlease.Error if it fails."},
    {"create", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Client_create)),
     METH_VARARGS | METH_KEYWORDS,
     "create($self, /, name, size=None, *, shape=None, dtype=None, exist_ok=False, huge=None,\n"
     "       mode=0o600)\n"
     "--\n\n"
     "Create the segment `name` and return its stat dict (see stat()).\n\n"
     "name: [A-Za-z0-9][A-Za-z0-9._-]{0,127}.\n"
     "size: bytes; may be left out when shape is given (then prod(shape) * itemsize).\n"
     "shape: an int or a sequence of 1 to 8 positive ints.\n"
     "dtype: one native struct format character ('f', 'd', 'B', 'q', ...), or anything\n"
     "    numpy.dtype() accepts (numpy.float32, 'float32') when numpy is installed. It must\n"
     "    describe one native scalar. Without dtype the segment holds raw bytes ('B').\n"
     "exist_ok: return the existing segment instead of raising ExistsError.\n"
     "huge: back the segment with huge pages (2 MiB on x86-64), so that touching its memory\n"
     "    costs one page fault per huge page instead of one per 4 KiB. True: huge pages or\n"
     "    fail (shmlease.Error, errc_name 'no_space', saying how to reserve them: sysctl\n"
     "    vm.nr_hugepages=N); 'best-effort': huge pages if the host has them, else normal\n"
     "    pages and stat()['huge_fallback'] is True; False: normal pages even above the\n"
     "    daemon's huge-threshold; None (default): the daemon decides (its huge-threshold).\n"
     "    Huge segments hold whole huge pages (stat()['reserved_bytes']), counted against the\n"
     "    daemon's limits; the buffer stays `size` bytes.\n"
     "mode: permission bits, as for files: read (4) and write (2) for the owner (this\n"
     "    process's uid), its group and others; 0o600 (default) keeps it private. The daemon\n"
     "    checks them on every lease, stat, list and remove.\n\n"
     "Raises ExistsError, InvalidArgumentError (bad name, size, shape, dtype or huge; a\n"
     "ValueError), or another shmlease.Error (limits, no space, no huge pages)."},
    {"lease", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Client_lease)),
     METH_VARARGS | METH_KEYWORDS,
     "lease($self, /, name, mode='r', *, exclusive=False, timeout=None, populate=False)\n"
     "--\n\n"
     "Lease the segment `name` and return a Lease exporting its memory.\n\n"
     "mode: 'r' (read-only buffer) or 'w' (writable buffer).\n"
     "exclusive: granted only while no other lease on the segment exists.\n"
     "timeout: seconds to wait for the lease; None waits without limit, 0 fails at once.\n"
     "    Other Python threads keep running while this call waits (the GIL is released).\n"
     "populate: fault every page of the mapping in before returning (MADV_POPULATE_READ or\n"
     "    _WRITE), so the first pass over the buffer takes no page faults; costs those faults\n"
     "    here instead. The bytes are not changed.\n\n"
     "Raises NotFoundError, LeaseTimeoutError (a TimeoutError), InvalidArgumentError, or\n"
     "another shmlease.Error."},
    {"alease", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Client_alease)),
     METH_VARARGS | METH_KEYWORDS,
     "alease($self, /, name, mode='r', *, exclusive=False, timeout=None, populate=False)\n"
     "--\n\n"
     "Coroutine: `await client.alease(...)` is lease(...) without blocking the event loop\n"
     "(the lease is waited for in a worker thread). Cancelling the awaiting task leaves no\n"
     "lease and no waiting request behind once the cancellation has completed. Same\n"
     "arguments, result and errors as lease(); docs/PYTHON.md, \"asyncio\"."},
    {"remove", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Client_remove)),
     METH_VARARGS | METH_KEYWORDS,
     "remove($self, /, name)\n--\n\n"
     "Take the name away now; the memory is freed when the segment's last lease is released.\n"
     "Raises NotFoundError when no segment has that name."},
    {"stat", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Client_stat)),
     METH_VARARGS | METH_KEYWORDS,
     "stat($self, /, name)\n--\n\n"
     "Return what the daemon knows of the segment as a dict with the keys id, name, size,\n"
     "format ('' for raw bytes), shape (a tuple, () when created without one),\n"
     "created_unix_ns, creator_pid, creator_uid, readers, writers (leases held), exclusive,\n"
     "waiting (queued lease requests), removed, page_size (bytes per page backing it: 2 MiB\n"
     "for huge pages), huge_fallback (True when huge pages were asked for best effort and\n"
     "normal pages back it) and reserved_bytes (size rounded up to whole pages).\n"
     "Raises NotFoundError."},
    {"list", Client_list, METH_NOARGS,
     "list($self, /)\n--\n\nReturn the stat dicts of every segment this user may read."},
    {"channels", Client_channels, METH_NOARGS,
     "channels($self, /)\n--\n\nReturn a dict for every channel this user may read, with the\n"
     "keys name, format, shape (() for variable-size frames), variable, frame_nbytes (the\n"
     "largest for variable-size frames), slots, policy, reader_timeout (seconds or None),\n"
     "nbytes (memory of its frames), writer_pid (None without a writer), readers, owner_uid,\n"
     "owner_gid, mode and created_unix_ns. Channel.info() gives one of them."},
    {"chmod", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Client_chmod)),
     METH_VARARGS | METH_KEYWORDS,
     "chmod($self, /, name, mode)\n--\n\nSet the segment's permission bits (0 to 0o777: read 4 "
     "and write 2 for owner, group, others), as its owner or an administrator; return its stat "
     "dict. Raises PermissionError otherwise."},
    {"stats", Client_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nReturn the daemon's totals (segments, bytes, max_bytes, leases, "
     "connections, uptime_ms) and its clients (connection, pid, uid, gid, process, waiting, "
     "leases): every client for an administrator, else this uid's."},
    {"close", Client_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Close the connection: the daemon releases every lease this client held. Lease objects\n"
     "stay readable (their memory stays mapped) and their release() does nothing more.\n"
     "Closing twice does nothing. New calls raise ValueError at once; calls that other\n"
     "threads are making right now finish first (a lease() still waiting is withdrawn\n"
     "from the daemon within about 50 ms and raises ValueError)."},
    {"__enter__", Client_enter, METH_NOARGS,
     "__enter__($self, /)\n--\n\nReturn the client itself."},
    {"__exit__", Client_exit, METH_VARARGS,
     "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\nClose the client."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef client_getset[] = {
    {"socket_path", Client_get_socket_path, nullptr,
     "The socket path this client connected to (after resolution).", nullptr},
    {"server_pid", Client_get_server_pid, nullptr, "The daemon's process id.", nullptr},
    {"closed", Client_get_closed, nullptr, "True after close().", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

}  // namespace

PyTypeObject ClientType = {
    // clang-format off
    .ob_base = PyVarObject_HEAD_INIT(nullptr, 0)
    .tp_name = "shmlease.Client",
    // clang-format on
    .tp_basicsize = sizeof(ClientObject),
    .tp_dealloc = Client_dealloc,
    .tp_repr = Client_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR(
        "Client(socket=None, *, reconnect_timeout=None)\n--\n\n"
        "A connection to the shmleased daemon (same as shmlease.connect(socket)).\n\n"
        "socket: the daemon's Unix socket path; None resolves it as the C++ client does:\n"
        "$SHMLEASE_SOCKET, else $XDG_RUNTIME_DIR/shmlease/shmlease.sock for a non-root user,\n"
        "else /run/shmlease/shmlease.sock. Raises DaemonUnavailableError, naming the path,\n"
        "when no daemon answers there.\n"
        "reconnect_timeout: seconds a call keeps reconnecting after the daemon went away\n"
        "(docs/RESTART.md) before it fails with ConnectionLostError; 0 never reconnects;\n"
        "None: the library default, 10 s or $SHMLEASE_RECONNECT_TIMEOUT_MS.\n\n"
        "Every Lease, Frame, Channel, Writer and Reader keeps its Client alive: the\n"
        "connection closes when close() is called, or when the Client and all of them are\n"
        "gone, so shmlease.connect().lease(...) in one expression holds its lease.\n\n"
        "One Client may be used from many threads at once. Use it as a context manager, or\n"
        "call close(), to give back every lease it holds."),
    .tp_weaklistoffset = offsetof(ClientObject, weakreflist),
    .tp_methods = client_methods,
    .tp_getset = client_getset,
    .tp_new = Client_new,
};

int AddClientType(PyObject* module) {
  if (PyType_Ready(&ClientType) < 0) return -1;
  return PyModule_AddObjectRef(module, "Client", reinterpret_cast<PyObject*>(&ClientType));
}

bool ClientIsClosed(PyObject* client) {
  const ClientState& s = StateOf(client);
  return s.client == nullptr || s.closing;
}

}  // namespace shmlease::python
