/* lease_consumer: a C extension that reads and writes a shmlease.Lease (or any other exporter of
 * the buffer protocol: bytearray, numpy arrays, memoryviews) without copying it.
 *
 * Ownership: every Py_buffer this file obtains is released before the function returns; while it
 * is held, the Lease counts it as an export, so nobody can release the lease under our feet, even
 * with the GIL released.
 *
 * Build alone:  cc -shared -fPIC $(python3-config --includes) lease_consumer.c \
 *                  -o lease_consumer$(python3-config --extension-suffix)
 * (tests/python/CMakeLists.txt builds it for the test suite.)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Items of a 'f' or 'd' buffer as double; view->format is "f" or "d" (PyBUF_FORMAT asked). */
static double item_at(const Py_buffer *view, Py_ssize_t i) {
  if (view->format[0] == 'f') return ((const float *)view->buf)[i];
  return ((const double *)view->buf)[i];
}

static int check_float_format(const Py_buffer *view) {
  if (view->format == NULL || view->format[1] != '\0' ||
      (view->format[0] != 'f' && view->format[0] != 'd')) {
    PyErr_Format(PyExc_TypeError, "expected a buffer of 'f' or 'd' items, got format '%s'",
                 view->format ? view->format : "B");
    return -1;
  }
  return 0;
}

/* total(obj) -> float: the sum of every item of a C-contiguous buffer of float32 or float64. */
static PyObject *total(PyObject *Py_UNUSED(module), PyObject *obj) {
  Py_buffer view;
  /* C-contiguous (so one flat loop is right), with format and shape; read-only is enough. */
  if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
  if (check_float_format(&view) < 0) {
    PyBuffer_Release(&view);
    return NULL;
  }
  const Py_ssize_t count = view.len / view.itemsize;
  double sum = 0.0;
  /* The export keeps the memory leased and mapped: safe to let other threads run meanwhile. */
  Py_BEGIN_ALLOW_THREADS
  for (Py_ssize_t i = 0; i < count; ++i) sum += item_at(&view, i);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&view);
  return PyFloat_FromDouble(sum);
}

/* fill(obj, value): store value in every item; needs a writable buffer (a 'w' lease). */
static PyObject *fill(PyObject *Py_UNUSED(module), PyObject *args) {
  PyObject *obj;
  double value;
  if (!PyArg_ParseTuple(args, "Od:fill", &obj, &value)) return NULL;
  Py_buffer view;
  /* A read lease refuses PyBUF_WRITABLE with BufferError("Object is not writable."). */
  if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
    return NULL;
  }
  if (check_float_format(&view) < 0) {
    PyBuffer_Release(&view);
    return NULL;
  }
  const Py_ssize_t count = view.len / view.itemsize;
  for (Py_ssize_t i = 0; i < count; ++i) {
    if (view.format[0] == 'f') {
      ((float *)view.buf)[i] = (float)value;
    } else {
      ((double *)view.buf)[i] = value;
    }
  }
  PyBuffer_Release(&view);
  Py_RETURN_NONE;
}

/* describe(obj) -> (format, itemsize, shape, readonly, nbytes), read from a memoryview's
 * Py_buffer with PyMemoryView_GET_BUFFER: the memoryview holds the export, we borrow its view. */
static PyObject *describe(PyObject *Py_UNUSED(module), PyObject *obj) {
  PyObject *mv = PyMemoryView_FromObject(obj); /* asks the exporter for PyBUF_FULL_RO */
  if (mv == NULL) return NULL;
  const Py_buffer *view = PyMemoryView_GET_BUFFER(mv);
  PyObject *shape = PyTuple_New(view->ndim);
  if (shape == NULL) {
    Py_DECREF(mv);
    return NULL;
  }
  for (int i = 0; i < view->ndim; ++i) {
    PyObject *dim = PyLong_FromSsize_t(view->shape[i]);
    if (dim == NULL) {
      Py_DECREF(shape);
      Py_DECREF(mv);
      return NULL;
    }
    PyTuple_SET_ITEM(shape, i, dim);
  }
  PyObject *result = Py_BuildValue("(snNOn)", view->format ? view->format : "B", view->itemsize,
                                   shape, view->readonly ? Py_True : Py_False, view->len);
  Py_DECREF(mv); /* releases the export */
  return result;
}

static PyMethodDef methods[] = {
    {"total", total, METH_O, "total(buffer) -> float: sum of a float32/float64 buffer."},
    {"fill", fill, METH_VARARGS, "fill(buffer, value): set every item of a writable buffer."},
    {"describe", describe, METH_O,
     "describe(buffer) -> (format, itemsize, shape, readonly, nbytes), read with "
     "PyMemoryView_GET_BUFFER."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "lease_consumer",
    .m_doc = "Example C consumer of shmlease leases through the buffer protocol.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit_lease_consumer(void) { return PyModuleDef_Init(&module_def); }
