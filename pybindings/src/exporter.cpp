// The exporter of Lease and Frame (exporter.hpp). Ownership: a buffer export's reference to the
// exporting object is view->obj (the consumer drops it); a DLPack export's is held by its
// DlpackExport until the consumer (or the unconsumed capsule's destructor) calls the deleter.
#include "exporter.hpp"

#include <cstdint>
#include <new>
#include <optional>
#include <string>

namespace shmlease::python {

const char kArrayDoc[] =
    "__array__($self, /, dtype=None, copy=None)\n--\n\n"
    "The buffer as a numpy array without a copy (numpy.asarray(memoryview(self))). Raises\n"
    "ValueError once released, so numpy.asarray() of a released object raises instead of\n"
    "making an object array.";
const char kDlpackDoc[] =
    "__dlpack__($self, /, *, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n"
    "Export the memory as a DLPack capsule, without a copy, counted like a buffer export\n"
    "until the consumer's tensor is gone (or the capsule is dropped unconsumed).\n"
    "max_version=(1, 0) or later: a DLPack 1.0 'dltensor_versioned' capsule, flagged\n"
    "read-only for a read-only buffer. No max_version (numpy 1.24, torch 1.13): the\n"
    "unversioned 'dltensor' capsule, which cannot say read-only, so it is refused\n"
    "(BufferError) for a read-only buffer.";
const char kDlpackDeviceDoc[] =
    "__dlpack_device__($self, /)\n--\n\n(1, 0): the memory is on the CPU (kDLCPU, device 0).";
const char kDtypeDoc[] =
    "The item type: numpy.dtype(format) when numpy can be imported, else the format string\n"
    "(the same as format).";
const char kNbytesDoc[] = "Size of the exported buffer in bytes: prod(shape) * itemsize.";
const char kReadonlyDoc[] =
    "True when the buffer is read-only (mapped PROT_READ): a read lease, a reader's frame.";
const char kFormatDoc[] =
    "The struct format of one item, one native character such as 'f', 'd' or 'B' ('B' for a\n"
    "segment or channel created without a dtype).";
const char kShapeDoc[] =
    "The shape of the buffer, a tuple of ints: the segment's or the channel's frame shape\n"
    "(1-D (nbytes // itemsize,) when created without one).";
const char kExportsDoc[] =
    "How many buffer exports (memoryviews, numpy arrays, DLPack tensors) are alive right now.";

namespace {

std::byte g_empty_buffer[1];  // buf of a zero-length export: never NULL, never written

// ----------------------------------------------------------------------------------- DLPack
// The few definitions of dlpack.h (DLPack 1.0, include/dlpack/dlpack.h of dmlc/dlpack v1.0) that
// the exporter needs: the unversioned DLManagedTensor (unchanged since DLPack 0.2) and the
// versioned DLManagedTensorVersioned with its flags.
constexpr int32_t kDLCPU = 1;
enum DLDataTypeCode : uint8_t { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBool = 6 };
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};
struct DLPackVersion {
  uint32_t major;
  uint32_t minor;
};
constexpr uint64_t kDLPackFlagReadOnly = 1ULL << 0;  // DLPACK_FLAG_BITMASK_READ_ONLY
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
};
constexpr char kLegacyName[] = "dltensor";
constexpr char kLegacyUsedName[] = "used_dltensor";
constexpr char kVersionedName[] = "dltensor_versioned";
constexpr char kVersionedUsedName[] = "used_dltensor_versioned";

// One DLPack export: the tensor handed out and what it points into.
struct DlpackExport {
  DLManagedTensor legacy;
  DLManagedTensorVersioned versioned;
  int64_t shape[kMaxDims];
  int64_t strides[kMaxDims];
  PyObject* owner;  // strong reference to the exporting object
  const ExporterKind* kind;
};

// Uncounts the export and drops its reference. Consumers may call a deleter from any thread,
// with or without the GIL; at interpreter shutdown the export is leaked.
void FinishExport(DlpackExport* e) {
  if (!Py_IsInitialized()) return;
  PyGILState_STATE gil = PyGILState_Ensure();
  Exporter& ex = e->kind->exporter(e->owner);
  if (ex.exports > 0) --ex.exports;
  PyObject* owner = e->owner;
  delete e;
  Py_DECREF(owner);
  PyGILState_Release(gil);
}
void LegacyDeleter(DLManagedTensor* m) { FinishExport(static_cast<DlpackExport*>(m->manager_ctx)); }
void VersionedDeleter(DLManagedTensorVersioned* m) {
  FinishExport(static_cast<DlpackExport*>(m->manager_ctx));
}

// A capsule never consumed (its name was not changed to used_...) still owns its tensor.
template <typename Managed>
void DestroyCapsule(PyObject* capsule, const char* name, const char* used_name) {
  if (PyCapsule_IsValid(capsule, used_name)) return;
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  auto* m = static_cast<Managed*>(PyCapsule_GetPointer(capsule, name));
  if (m == nullptr) {
    PyErr_WriteUnraisable(capsule);
  } else if (m->deleter != nullptr) {
    m->deleter(m);
  }
  PyErr_Restore(type, value, traceback);
}
void DestroyLegacyCapsule(PyObject* capsule) {
  DestroyCapsule<DLManagedTensor>(capsule, kLegacyName, kLegacyUsedName);
}
void DestroyVersionedCapsule(PyObject* capsule) {
  DestroyCapsule<DLManagedTensorVersioned>(capsule, kVersionedName, kVersionedUsedName);
}

std::optional<DLDataType> DlpackType(const Layout& l) {
  const auto bits = static_cast<uint8_t>(l.itemsize * 8);
  switch (l.format[0]) {
    case 'b':
    case 'h':
    case 'i':
    case 'l':
    case 'q':
      return DLDataType{kDLInt, bits, 1};
    case 'B':
    case 'H':
    case 'I':
    case 'L':
    case 'Q':
      return DLDataType{kDLUInt, bits, 1};
    case 'e':
    case 'f':
    case 'd':
      return DLDataType{kDLFloat, bits, 1};
    case '?':
      return DLDataType{kDLBool, bits, 1};
    default:
      return std::nullopt;
  }
}

// max_version: None, or a tuple (major, minor) of ints.
bool MaxVersionArg(PyObject* obj, std::optional<uint64_t>* major) {
  major->reset();
  if (obj == Py_None) return true;
  if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 2 ||
      !PyLong_Check(PyTuple_GET_ITEM(obj, 0)) || !PyLong_Check(PyTuple_GET_ITEM(obj, 1))) {
    PyErr_Format(PyExc_TypeError, "max_version must be None or a tuple (major, minor), not %R",
                 obj);
    return false;
  }
  long value = PyLong_AsLong(PyTuple_GET_ITEM(obj, 0));
  if (value == -1 && PyErr_Occurred()) return false;
  *major = value < 0 ? 0 : static_cast<uint64_t>(value);
  return true;
}

// dl_device: None or (1, 0); anything else cannot be served without a copy.
bool DeviceArg(const ExporterKind& kind, PyObject* obj) {
  if (obj == Py_None) return true;
  if (PyTuple_Check(obj) && PyTuple_GET_SIZE(obj) == 2) {
    long type = PyLong_AsLong(PyTuple_GET_ITEM(obj, 0));
    long id = PyLong_AsLong(PyTuple_GET_ITEM(obj, 1));
    if (PyErr_Occurred()) return false;
    if (type == kDLCPU && id == 0) return true;
  }
  PyErr_Format(PyExc_BufferError,
               "%s.__dlpack__: the memory is on the CPU, (1, 0); it cannot be exported to "
               "dl_device=%R",
               kind.type_name, obj);
  return false;
}

}  // namespace

void SetLayout(Layout* out, const std::byte* data, size_t size, std::string_view format,
               const std::vector<uint64_t>& shape, bool readonly) {
  std::optional<size_t> item = FormatItemSize(format);
  std::vector<uint64_t> dims = shape;
  bool typed = item.has_value() && format.size() <= 1;
  if (typed && dims.empty() && size % *item == 0) dims = {size / *item};
  if (typed) {
    std::optional<uint64_t> bytes = ShapeBytes(dims, *item);
    typed = bytes.has_value() && *bytes == size;
  }
  if (!typed || size == 0) {
    item = 1;
    dims = {size};
    out->format[0] = 'B';
  } else {
    out->format[0] = format.empty() ? 'B' : format[0];
  }
  out->format[1] = '\0';
  out->itemsize = static_cast<Py_ssize_t>(*item);
  out->ndim = static_cast<int>(dims.size());
  Py_ssize_t stride = out->itemsize;
  int dims_above_one = 0;
  for (int i = out->ndim - 1; i >= 0; --i) {
    out->shape[i] = static_cast<Py_ssize_t>(dims[i]);
    out->strides[i] = stride;
    stride *= out->shape[i];
    if (out->shape[i] > 1) ++dims_above_one;
  }
  out->nbytes = static_cast<Py_ssize_t>(size);
  out->f_contiguous = dims_above_one <= 1;
  out->readonly = readonly;
  // A read-only layout's pages are mapped PROT_READ: exports say readonly, so nothing writes.
  out->buf = size == 0 || data == nullptr ? g_empty_buffer : const_cast<std::byte*>(data);
}

int GetBuffer(const ExporterKind& kind, PyObject* self, Py_buffer* view, int flags) {
  if (view == nullptr) {
    PyErr_Format(PyExc_BufferError, "%s: NULL view in getbuffer", kind.type_name);
    return -1;
  }
  view->obj = nullptr;
  if (!kind.usable(self)) return -1;
  Exporter& ex = kind.exporter(self);
  const Layout& l = ex.layout;
  auto wants = [flags](int flag) { return (flags & flag) == flag; };
  if (wants(PyBUF_WRITABLE) && l.readonly) {
    PyErr_SetString(PyExc_BufferError, "Object is not writable.");
    return -1;
  }
  // The buffer is always C-contiguous, hence also "any" contiguous; Fortran order only when at
  // most one dimension is longer than 1.
  if (wants(PyBUF_F_CONTIGUOUS) && !l.f_contiguous) {
    PyErr_Format(PyExc_BufferError, "%s: buffer is not Fortran contiguous", kind.type_name);
    return -1;
  }
  // As CPython's own exporters: a format without a shape cannot describe typed items.
  if (!wants(PyBUF_ND) && wants(PyBUF_FORMAT)) {
    PyErr_Format(PyExc_BufferError,
                 "%s: cannot export as unsigned bytes if the format flag is present",
                 kind.type_name);
    return -1;
  }
  view->buf = l.buf;
  view->len = l.nbytes;
  view->readonly = l.readonly ? 1 : 0;
  view->itemsize = l.itemsize;  // the real item size, even when format is NULL ("B")
  view->format = wants(PyBUF_FORMAT) ? const_cast<char*>(l.format) : nullptr;
  if (wants(PyBUF_ND)) {
    view->ndim = l.ndim;
    view->shape = const_cast<Py_ssize_t*>(l.shape);
  } else {
    view->ndim = 1;
    view->shape = nullptr;
  }
  view->strides = wants(PyBUF_STRIDES) ? const_cast<Py_ssize_t*>(l.strides) : nullptr;
  view->suboffsets = nullptr;
  view->internal = nullptr;
  view->obj = Py_NewRef(self);
  ++ex.exports;
  return 0;
}

void ReleaseBuffer(const ExporterKind& kind, PyObject* self) {
  Exporter& ex = kind.exporter(self);
  if (ex.exports > 0) --ex.exports;
}

PyObject* ArrayOf(const ExporterKind& kind, PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"dtype", "copy", nullptr};
  PyObject* dtype = Py_None;
  PyObject* copy = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:__array__", const_cast<char**>(kwlist), &dtype,
                                   &copy)) {
    return nullptr;
  }
  (void)kind;
  PyObject* view = PyMemoryView_FromObject(self);  // refused (ValueError) once released
  if (view == nullptr) return nullptr;
  PyObject* numpy = PyImport_ImportModule("numpy");
  if (numpy == nullptr) {
    Py_DECREF(view);
    return nullptr;
  }
  PyObject* array = copy != Py_None && PyObject_IsTrue(copy)
                        ? PyObject_CallMethod(numpy, "array", "OO", view, dtype)
                        : PyObject_CallMethod(numpy, "asarray", "OO", view, dtype);
  Py_DECREF(numpy);
  Py_DECREF(view);
  return array;
}

PyObject* DtypeOf(const ExporterKind& kind, PyObject* self) {
  const Layout& l = kind.exporter(self).layout;
  PyObject* format = PyUnicode_FromString(l.format);
  if (format == nullptr) return nullptr;
  PyObject* numpy = PyImport_ImportModule("numpy");
  if (numpy == nullptr) {
    if (!PyErr_ExceptionMatches(PyExc_ImportError)) {
      Py_DECREF(format);
      return nullptr;
    }
    PyErr_Clear();
    return format;
  }
  PyObject* dtype = PyObject_CallMethod(numpy, "dtype", "O", format);
  Py_DECREF(numpy);
  Py_DECREF(format);
  return dtype;
}

PyObject* Dlpack(const ExporterKind& kind, PyObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"stream", "max_version", "dl_device", "copy", nullptr};
  PyObject* stream = Py_None;
  PyObject* max_version_obj = Py_None;
  PyObject* device = Py_None;
  PyObject* copy = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOOO:__dlpack__", const_cast<char**>(kwlist),
                                   &stream, &max_version_obj, &device, &copy)) {
    return nullptr;
  }
  std::optional<uint64_t> max_major;
  if (!MaxVersionArg(max_version_obj, &max_major) || !DeviceArg(kind, device)) return nullptr;
  if (stream != Py_None) {
    PyErr_Format(PyExc_ValueError,
                 "%s.__dlpack__: stream must be None for memory on the CPU, not %R", kind.type_name,
                 stream);
    return nullptr;
  }
  if (copy != Py_None && PyObject_IsTrue(copy)) {
    PyErr_Format(PyExc_BufferError,
                 "%s.__dlpack__ exports the shared memory itself and does not copy it: copy "
                 "with numpy.array(obj) instead",
                 kind.type_name);
    return nullptr;
  }
  if (!kind.usable(self)) return nullptr;
  Exporter& ex = kind.exporter(self);
  const Layout& l = ex.layout;
  const bool versioned = max_major.has_value() && *max_major >= 1;
  if (l.readonly && !versioned) {
    PyErr_Format(
        PyExc_BufferError,
        "%s.__dlpack__: this memory is mapped read-only (a read lease or a reader's frame), and "
        "the unversioned DLPack capsule that this consumer asks for (no max_version: numpy "
        "1.24's from_dlpack, torch 1.13's) cannot mark a tensor read-only, so writing to it "
        "would crash the process (SIGSEGV). Use a write lease, a copy (numpy.array(obj)), "
        "numpy.asarray(obj) (a read-only array), or a consumer of DLPack 1.0 "
        "(__dlpack__(max_version=(1, 0)))",
        kind.type_name);
    return nullptr;
  }
  std::optional<DLDataType> type = DlpackType(l);
  if (!type) {
    PyErr_Format(PyExc_BufferError, "%s.__dlpack__: format '%s' has no DLPack type", kind.type_name,
                 l.format);
    return nullptr;
  }
  auto* e = new (std::nothrow) DlpackExport{};
  if (e == nullptr) return PyErr_NoMemory();
  for (int i = 0; i < l.ndim; ++i) {
    e->shape[i] = l.shape[i];
    e->strides[i] = l.strides[i] / l.itemsize;
  }
  DLTensor tensor{};
  tensor.data = l.buf;
  tensor.device = {kDLCPU, 0};
  tensor.ndim = l.ndim;
  tensor.dtype = *type;
  tensor.shape = e->shape;
  tensor.strides = e->strides;
  tensor.byte_offset = 0;
  e->owner = self;
  e->kind = &kind;
  PyObject* capsule = nullptr;
  if (versioned) {
    e->versioned.version = {1, 0};
    e->versioned.manager_ctx = e;
    e->versioned.deleter = VersionedDeleter;
    e->versioned.flags = l.readonly ? kDLPackFlagReadOnly : 0;
    e->versioned.dl_tensor = tensor;
    capsule = PyCapsule_New(&e->versioned, kVersionedName, DestroyVersionedCapsule);
  } else {
    e->legacy.dl_tensor = tensor;
    e->legacy.manager_ctx = e;
    e->legacy.deleter = LegacyDeleter;
    capsule = PyCapsule_New(&e->legacy, kLegacyName, DestroyLegacyCapsule);
  }
  if (capsule == nullptr) {
    delete e;
    return nullptr;
  }
  // Counted only once the capsule exists: from here its destructor or the consumer uncounts.
  Py_INCREF(self);
  ++ex.exports;
  return capsule;
}

PyObject* DlpackDevice(PyObject* /*self*/, PyObject* /*unused*/) {
  return Py_BuildValue("(ii)", kDLCPU, 0);
}

}  // namespace shmlease::python
