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

// True once the Client object `client` was closed (close(), __exit__): the daemon has released
// every lease of its connection. Objects that depend on the connection (Lease, Frame, Channel,
// Writer, Reader) hold a strong reference to their Client and ask it this.
bool ClientIsClosed(PyObject* client);

}  // namespace shmlease::python
