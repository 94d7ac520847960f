// shmlease.Client: a connection to shmleased, wrapping shmlease::Client.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string>

#include "shmlease/client.hpp"

namespace shmlease::python {

extern PyTypeObject ClientType;

// Readies ClientType and adds it to `module`; -1 with an exception set on failure.
int AddClientType(PyObject* module);

// A `socket` argument: None (resolve the default: empty `out`) or a str/bytes/os.PathLike path.
// False with an exception set when it is neither.
bool SocketArg(PyObject* socket, std::string* out);

// The segment as a dict: id, name, size, format, shape (tuple), created_unix_ns, creator_pid,
// creator_uid, readers, writers, exclusive (bool), waiting, removed (bool), page_size,
// huge_fallback (bool), reserved_bytes.
PyObject* SegmentInfoToDict(const SegmentInfo& info);

}  // namespace shmlease::python
