#include "delegate.hpp"

namespace shmlease::python {

PyObject* CallPythonPart(const char* module, const char* function, PyObject* self, PyObject* args,
                         PyObject* kwds) {
  PyObject* mod = PyImport_ImportModule(module);
  if (mod == nullptr) return nullptr;
  PyObject* fn = PyObject_GetAttrString(mod, function);
  Py_DECREF(mod);
  if (fn == nullptr) return nullptr;
  const Py_ssize_t n = args != nullptr ? PyTuple_GET_SIZE(args) : 0;
  PyObject* full = PyTuple_New(n + 1);
  if (full == nullptr) {
    Py_DECREF(fn);
    return nullptr;
  }
  PyTuple_SET_ITEM(full, 0, Py_NewRef(self));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyTuple_SET_ITEM(full, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
  }
  PyObject* result = PyObject_Call(fn, full, kwds);
  Py_DECREF(full);
  Py_DECREF(fn);
  return result;
}

}  // namespace shmlease::python
