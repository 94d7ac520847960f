// shmlease.Lease: a granted lease exported to Python through the buffer protocol.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <memory>
#include <string>

#include "shmlease/client.hpp"

namespace shmlease::python {

extern PyTypeObject LeaseType;

// Readies LeaseType and adds it to `module`; -1 with an exception set on failure.
int AddLeaseType(PyObject* module);

// Wraps a granted lease (lease.valid() must be true). On failure returns nullptr with an exception
// set, and the lease is released.
PyObject* NewLeaseObject(Lease&& lease);

// Records the socket path of the daemon that granted `lease` (a Lease object), read back as
// Lease.socket_path: shmlease/_sharing.py pickles arrays of the lease by reference with it.
// Returns 0, or -1 with an exception set.
int SetLeaseSocketPath(PyObject* lease, const std::string& path);

}  // namespace shmlease::python
