#include "errors.hpp"

#include <cerrno>
#include <new>
#include <system_error>

#include "shmlease/client.hpp"
#include "shmlease/errc_table.hpp"

namespace shmlease::python {
namespace {

// Owned by the module for the interpreter's lifetime (single-phase init: never freed).
PyObject* g_error = nullptr;
PyObject* g_not_found = nullptr;
PyObject* g_exists = nullptr;
PyObject* g_permission = nullptr;
PyObject* g_timeout = nullptr;
PyObject* g_invalid = nullptr;
PyObject* g_unavailable = nullptr;
PyObject* g_end_of_stream = nullptr;
PyObject* g_evicted = nullptr;
PyObject* g_connection_lost = nullptr;

struct ClassSpec {
  PyObject** slot;
  const char* name;    // "shmlease.X": sets __module__ to "shmlease"
  PyObject** builtin;  // second base, nullptr for none
  const char* doc;
};

// The subclasses, each also the builtin its codes mean. Which code raises which is the
// python_class column of errc_table.hpp, matched to the name after "shmlease.".
const ClassSpec kClassSpecs[] = {
    {&g_not_found, "shmlease.NotFoundError", &PyExc_FileNotFoundError,
     "No segment or channel of that name (also a FileNotFoundError)."},
    {&g_exists, "shmlease.ExistsError", &PyExc_FileExistsError,
     "A segment or channel of that name exists already (also a FileExistsError)."},
    {&g_permission, "shmlease.PermissionDeniedError", &PyExc_PermissionError,
     "The daemon refused access (also a PermissionError)."},
    {&g_timeout, "shmlease.LeaseTimeoutError", &PyExc_TimeoutError,
     "A lease could not be granted within its timeout (also a TimeoutError)."},
    {&g_invalid, "shmlease.InvalidArgumentError", &PyExc_ValueError,
     "A bad segment name, size, shape, dtype, mode or timeout (also a ValueError)."},
    {&g_unavailable, "shmlease.DaemonUnavailableError", &PyExc_ConnectionRefusedError,
     "No shmleased answers on the socket (also a ConnectionRefusedError)."},
    {&g_connection_lost, "shmlease.ConnectionLostError", &PyExc_ConnectionError,
     "The daemon closed the connection or is shutting down (also a ConnectionError)."},
    {&g_end_of_stream, "shmlease.EndOfStreamError", &PyExc_EOFError,
     "A channel's writer has closed or died and no frame is left (also an EOFError)."},
    {&g_evicted, "shmlease.EvictedError", nullptr,
     "The channel's writer removed this reader: it kept the writer waiting longer than the "
     "channel's reader timeout, or its own state was not one an honest reader writes."},
};

// "NotFoundError" of "shmlease.NotFoundError" (NUL-terminated: the rest of a C string).
std::string_view ShortName(const ClassSpec& spec) {
  return std::string_view(spec.name).substr(sizeof("shmlease.") - 1);
}

int MakeClass(PyObject* module, const ClassSpec& spec) {
  PyObject* bases =
      spec.builtin == nullptr ? PyTuple_Pack(1, g_error) : PyTuple_Pack(2, g_error, *spec.builtin);
  if (bases == nullptr) return -1;
  PyObject* cls = PyErr_NewExceptionWithDoc(spec.name, spec.doc, bases, nullptr);
  Py_DECREF(bases);
  if (cls == nullptr) return -1;
  *spec.slot = cls;
  return PyModule_AddObjectRef(module, ShortName(spec).data(), cls);
}

// The class errc_table.hpp names for `code`; the base class for "Error" or an unknown code.
PyObject* ClassFor(Errc code) {
  const ErrcInfo* info = FindErrcInfo(code);
  if (info == nullptr) return g_error;
  for (const ClassSpec& spec : kClassSpecs) {
    if (info->python_class == ShortName(spec)) return *spec.slot;
  }
  return g_error;
}

// The POSIX errno that the matching builtin exception stands for; 0 for none.
int ErrnoFor(Errc code) {
  const ErrcInfo* info = FindErrcInfo(code);
  return info != nullptr ? info->posix_errno : 0;
}

}  // namespace

int AddExceptions(PyObject* module) {
  g_error = PyErr_NewExceptionWithDoc(
      "shmlease.Error",
      "Base class of every shmlease failure; an OSError.\n\n"
      "Attributes:\n"
      "    code: the shmlease error code (an int, the same number the daemon sends).\n"
      "    errc_name: the code's stable short name, such as 'not_found'.\n"
      "    errno: the POSIX errno the code corresponds to, or None.\n"
      "str(error) is the message, with the daemon's own text when it gave one.",
      PyExc_OSError, nullptr);
  if (g_error == nullptr || PyModule_AddObjectRef(module, "Error", g_error) < 0) return -1;

  for (const ClassSpec& spec : kClassSpecs) {
    if (MakeClass(module, spec) < 0) return -1;
  }
  return 0;
}

std::nullptr_t RaiseErrc(Errc code, std::string_view message) {
  PyObject* cls = ClassFor(code);
  PyObject* exc =
      PyObject_CallFunction(cls, "s#", message.data(), static_cast<Py_ssize_t>(message.size()));
  if (exc == nullptr) return nullptr;  // MemoryError or similar is set
  // One argument keeps str(exc) == message; errno is set afterwards so that the builtin's
  // `errno` attribute still means what it means for FileNotFoundError and friends.
  int err = ErrnoFor(code);
  PyObject* code_obj = PyLong_FromUnsignedLong(static_cast<unsigned long>(code));
  std::string_view name = ErrcName(code);
  PyObject* name_obj =
      PyUnicode_FromStringAndSize(name.data(), static_cast<Py_ssize_t>(name.size()));
  PyObject* errno_obj = err != 0 ? PyLong_FromLong(err) : Py_NewRef(Py_None);
  if (code_obj == nullptr || name_obj == nullptr || errno_obj == nullptr ||
      PyObject_SetAttrString(exc, "code", code_obj) < 0 ||
      PyObject_SetAttrString(exc, "errc_name", name_obj) < 0 ||
      PyObject_SetAttrString(exc, "errno", errno_obj) < 0) {
    Py_XDECREF(code_obj);
    Py_XDECREF(name_obj);
    Py_XDECREF(errno_obj);
    Py_DECREF(exc);
    return nullptr;
  }
  Py_DECREF(code_obj);
  Py_DECREF(name_obj);
  Py_DECREF(errno_obj);
  PyErr_SetObject(cls, exc);
  Py_DECREF(exc);
  return nullptr;
}

std::function<bool()> PythonInterrupt(PyObject* interrupted, const bool* stop_flag) {
  return [interrupted, stop_flag] {
    PyGILState_STATE gil = PyGILState_Ensure();
    bool stop = (stop_flag != nullptr && *stop_flag) || PyErr_CheckSignals() != 0;
    if (!stop && interrupted != nullptr) {
      PyObject* result = PyObject_CallNoArgs(interrupted);
      stop = result == nullptr || PyObject_IsTrue(result) != 0;  // raised: stop, keep the error
      Py_XDECREF(result);
    }
    PyGILState_Release(gil);
    return stop;
  };
}

std::nullptr_t RaiseFromException(std::exception_ptr error, std::string_view socket_path) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    if (e.errc() == Errc::kCancelled && PyErr_Occurred()) return nullptr;  // PythonInterrupt's
    std::string message = e.what();
    if (e.errc() == Errc::kDaemonUnavailable && !socket_path.empty() &&
        message.find(socket_path) == std::string::npos) {
      message += " (socket ";
      message += socket_path;
      message += ")";
    }
    return RaiseErrc(e.errc(), message);
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const std::system_error& e) {
    if (e.code().category() == std::system_category() ||
        e.code().category() == std::generic_category()) {
      errno = e.code().value();
      PyErr_SetFromErrno(PyExc_OSError);
    } else {
      RaiseErrc(Errc::kInternal, e.what());
    }
  } catch (const std::exception& e) {
    RaiseErrc(Errc::kInternal, e.what());
  } catch (...) {
    RaiseErrc(Errc::kInternal, "unknown C++ exception in libshmlease");
  }
  return nullptr;
}

}  // namespace shmlease::python
