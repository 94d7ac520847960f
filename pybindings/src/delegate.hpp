// Methods of the static types that are written in Python (shmlease/_aio.py, shmlease/_sharing.py):
// a static type cannot be monkey-patched, so its method-table entry calls the Python function.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

namespace shmlease::python {

// Returns shmlease.<module>.<function>(self, *args, **kwds); `args` may be nullptr (no further
// positional arguments), `kwds` nullptr. nullptr with an exception set on failure.
PyObject* CallPythonPart(const char* module, const char* function, PyObject* self, PyObject* args,
                         PyObject* kwds);

}  // namespace shmlease::python
