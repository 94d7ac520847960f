// The one exporter of shared memory to Python, behind shmlease.Lease and shmlease.Frame: the
// buffer protocol (PEP 3118), __array__ and dtype for numpy, and DLPack (__dlpack__,
// __dlpack_device__).
//
// Ownership: every export (a Py_buffer, a DLPack capsule and the tensor made from it) holds a
// strong reference to the exporting object and counts one in Exporter::exports; the object keeps
// the memory mapped until its deallocation, so no export outlives its memory. bf_releasebuffer and
// the DLPack deleter only uncount (and the deleter drops its reference): no I/O, cannot fail.
// Destructive operations of the exporting object (release, publish) refuse while exports > 0.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstddef>
#include <string_view>
#include <vector>

#include "convert.hpp"
#include "shmlease/format.hpp"

namespace shmlease::python {

// What an export describes. Plain data: lives inside objects allocated by tp_alloc.
struct Layout {
  std::byte* buf;  // never NULL (a zero-length buffer points to a static byte)
  Py_ssize_t nbytes;
  Py_ssize_t itemsize;
  int ndim;
  Py_ssize_t shape[kMaxDims];
  Py_ssize_t strides[kMaxDims];  // C order, in bytes
  char format[2];                // one native struct character and NUL
  bool readonly;                 // mapped PROT_READ: nothing may write through an export
  bool f_contiguous;             // at most one dimension longer than 1
};

struct Exporter {
  Layout layout;
  Py_ssize_t exports;  // live buffer and DLPack exports
};

// Fills `out` for `size` bytes at `data` holding items of `format` ('' is 'B') in `shape`. When
// the format or shape cannot describe `size` bytes (or the buffer is empty), the layout is raw
// bytes: format 'B', shape (size,).
void SetLayout(Layout* out, const std::byte* data, size_t size, std::string_view format,
               const std::vector<uint64_t>& shape, bool readonly);

// How the exporter reaches the Exporter of an object, and whether the object may export now.
struct ExporterKind {
  const char* type_name;  // "shmlease.Lease", in error messages
  Exporter& (*exporter)(PyObject* self);
  // False with ValueError set (the message of every refusal to export) when no new export may
  // be made: the object was released, or its lease is no longer counted by the daemon.
  bool (*usable)(PyObject* self);
};

int GetBuffer(const ExporterKind& kind, PyObject* self, Py_buffer* view, int flags);
void ReleaseBuffer(const ExporterKind& kind, PyObject* self);
// __array__(dtype=None, copy=None): a zero-copy numpy array of the buffer (it holds a buffer
// export); raises the ValueError of a refused export when the object is released.
PyObject* ArrayOf(const ExporterKind& kind, PyObject* self, PyObject* args, PyObject* kwds);
// numpy.dtype(format) when numpy can be imported, else the format string.
PyObject* DtypeOf(const ExporterKind& kind, PyObject* self);
// __dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None).
PyObject* Dlpack(const ExporterKind& kind, PyObject* self, PyObject* args, PyObject* kwds);
// __dlpack_device__(): (1, 0), the CPU.
PyObject* DlpackDevice(PyObject* self, PyObject* unused);

// The slots and methods of an exporting type, for its PyBufferProcs, PyMethodDef and
// PyGetSetDef tables.
template <const ExporterKind& K>
struct ExporterSlots {
  static int GetBuffer(PyObject* self, Py_buffer* view, int flags) {
    return python::GetBuffer(K, self, view, flags);
  }
  static void ReleaseBuffer(PyObject* self, Py_buffer* /*view*/) { python::ReleaseBuffer(K, self); }
  static PyObject* Array(PyObject* self, PyObject* args, PyObject* kwds) {
    return ArrayOf(K, self, args, kwds);
  }
  static PyObject* Dlpack(PyObject* self, PyObject* args, PyObject* kwds) {
    return python::Dlpack(K, self, args, kwds);
  }
  static PyObject* Dtype(PyObject* self, void* /*closure*/) { return DtypeOf(K, self); }
  // The layout's attributes: what every export of the object describes.
  static PyObject* Nbytes(PyObject* self, void*) { return PyLong_FromSsize_t(L(self).nbytes); }
  static PyObject* Readonly(PyObject* self, void*) { return PyBool_FromLong(L(self).readonly); }
  static PyObject* Format(PyObject* self, void*) { return PyUnicode_FromString(L(self).format); }
  static PyObject* Itemsize(PyObject* self, void*) { return PyLong_FromSsize_t(L(self).itemsize); }
  static PyObject* Ndim(PyObject* self, void*) { return PyLong_FromLong(L(self).ndim); }
  static PyObject* Shape(PyObject* self, void*) { return TupleOf(L(self).shape, L(self).ndim); }
  static PyObject* Strides(PyObject* self, void*) { return TupleOf(L(self).strides, L(self).ndim); }
  static PyObject* Exports(PyObject* self, void*) {
    return PyLong_FromSsize_t(K.exporter(self).exports);
  }
  static inline PyBufferProcs buffer_procs = {GetBuffer, ReleaseBuffer};

 private:
  static const Layout& L(PyObject* self) { return K.exporter(self).layout; }
};

// Method table entries shared by Lease and Frame (the docstrings say what they do).
// clang-format off
#define SHMLEASE_EXPORTER_METHODS(Slots)                                                         \
  {"__array__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Slots::Array)),      \
   METH_VARARGS | METH_KEYWORDS, ::shmlease::python::kArrayDoc},                                 \
      {"__dlpack__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(Slots::Dlpack)), \
       METH_VARARGS | METH_KEYWORDS, ::shmlease::python::kDlpackDoc},                            \
      {"__dlpack_device__", ::shmlease::python::DlpackDevice, METH_NOARGS,                      \
       ::shmlease::python::kDlpackDeviceDoc}

#define SHMLEASE_EXPORTER_GETSET(Slots)                                                          \
  {"dtype", Slots::Dtype, nullptr, ::shmlease::python::kDtypeDoc, nullptr},                      \
  {"nbytes", Slots::Nbytes, nullptr, ::shmlease::python::kNbytesDoc, nullptr},                   \
  {"readonly", Slots::Readonly, nullptr, ::shmlease::python::kReadonlyDoc, nullptr},             \
  {"format", Slots::Format, nullptr, ::shmlease::python::kFormatDoc, nullptr},                   \
  {"itemsize", Slots::Itemsize, nullptr, "Size of one item in bytes.", nullptr},                \
  {"ndim", Slots::Ndim, nullptr, "Number of dimensions (len(shape)).", nullptr},                \
  {"shape", Slots::Shape, nullptr, ::shmlease::python::kShapeDoc, nullptr},                      \
  {"strides", Slots::Strides, nullptr, "C-order strides in bytes, a tuple of ints.", nullptr},  \
  {"exports", Slots::Exports, nullptr, ::shmlease::python::kExportsDoc, nullptr}
// clang-format on

extern const char kArrayDoc[];
extern const char kDlpackDoc[];
extern const char kDlpackDeviceDoc[];
extern const char kDtypeDoc[];
extern const char kNbytesDoc[];
extern const char kReadonlyDoc[];
extern const char kFormatDoc[];
extern const char kShapeDoc[];
extern const char kExportsDoc[];

}  // namespace shmlease::python
