// shmlease._shmlease: the CPython extension module. The package shmlease/__init__.py re-exports it.
// Single-phase initialisation: the types and exception classes are process-wide statics, so the
// module is not meant for sub-interpreters (it says so by refusing a second initialisation).
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string>

#include "client_object.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "lease_object.hpp"
#include "channel_object.hpp"
#include "shmlease/socket_path.hpp"

#ifndef SHMLEASE_VERSION
#define SHMLEASE_VERSION "0.0.0"
#endif

namespace shmlease::python {
namespace {

PyObject* Connect(PyObject* /*module*/, PyObject* args, PyObject* kwds) {
  return PyObject_Call(reinterpret_cast<PyObject*>(&ClientType), args, kwds);
}

PyObject* ResolveSocket(PyObject* /*module*/, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"socket", nullptr};
  PyObject* socket = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:resolve_socket_path", const_cast<char**>(kwlist),
                                   &socket)) {
    return nullptr;
  }
  std::string path;
  if (!SocketArg(socket, &path)) return nullptr;
  try {
    std::string resolved = ResolveSocketPath(path);
    return PyUnicode_DecodeFSDefaultAndSize(resolved.data(),
                                            static_cast<Py_ssize_t>(resolved.size()));
  } catch (...) {
    return RaiseFromException(std::current_exception());
  }
}

PyMethodDef module_methods[] = {
    {"connect", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Connect)),
     METH_VARARGS | METH_KEYWORDS,
     "connect(socket=None, *, reconnect_timeout=None)\n--\n\n"
     "Connect to shmleased and return a Client.\n\n"
     "socket: the daemon's Unix socket path; None resolves it as the C++ client does (see\n"
     "resolve_socket_path()). Raises DaemonUnavailableError, naming the path, when no daemon\n"
     "answers there.\n"
     "reconnect_timeout: seconds to keep reconnecting after the daemon went away; 0 never;\n"
     "None: the library default (10 s, or $SHMLEASE_RECONNECT_TIMEOUT_MS)."},
    {"resolve_socket_path",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(ResolveSocket)),
     METH_VARARGS | METH_KEYWORDS,
     "resolve_socket_path(socket=None)\n--\n\n"
     "Return the socket path connect(socket) would use: `socket` if given, else\n"
     "$SHMLEASE_SOCKET, else $XDG_RUNTIME_DIR/shmlease/shmlease.sock for a non-root user,\n"
     "else /run/shmlease/shmlease.sock."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "shmlease._shmlease",
    .m_doc = "The C extension behind the shmlease package; import shmlease instead.",
    .m_size = -1,
    .m_methods = module_methods,
};

bool g_initialised = false;

}  // namespace
}  // namespace shmlease::python

PyMODINIT_FUNC PyInit__shmlease() {
  using namespace shmlease::python;
  if (g_initialised) {
    PyErr_SetString(PyExc_ImportError,
                    "shmlease._shmlease cannot be initialised twice in one process "
                    "(sub-interpreters are not supported)");
    return nullptr;
  }
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  if (AddExceptions(module) < 0 || AddClientType(module) < 0 || AddLeaseType(module) < 0 ||
      AddChannelTypes(module) < 0 ||
      PyModule_AddStringConstant(module, "__version__", SHMLEASE_VERSION) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  g_initialised = true;
  return module;
}
