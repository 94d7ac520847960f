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

// Wraps a granted lease (lease.valid() must be true) of the Python Client `client`, which the
// Lease object keeps alive (a strong reference) until its deallocation. On failure returns nullptr
// with an exception set, and the lease is released.
PyObject* NewLeaseObject(PyObject* client, Lease&& lease);


}  // namespace shmlease::python
