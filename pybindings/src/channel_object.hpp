// shmlease.Channel, Writer, Reader and Frame: frame channels (docs/CHANNELS.md) for Python.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <memory>

#include "shmlease/client.hpp"

namespace shmlease::python {

// Readies the four types and adds them to `module`; -1 with an exception set on failure.
int AddChannelTypes(PyObject* module);

// Client.channel(name, shape=None, dtype="B", slots=8, policy="block"): `client` is the connected
// shmlease::Client of the Python Client object `owner` (kept alive by the channel).
PyObject* NewChannelObject(PyObject* owner, std::shared_ptr<Client> client, PyObject* args,
                           PyObject* kwds);

}  // namespace shmlease::python
