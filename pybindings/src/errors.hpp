// The Python exception hierarchy of shmlease and the one place where C++ exceptions become Python
// exceptions. Every call into libshmlease goes through CallWithoutGil(), so no C++ exception ever
// crosses into the interpreter.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "shmlease/errc.hpp"

namespace shmlease::python {

// Creates shmlease.Error and its subclasses and adds them to `module`. Returns -1 with an exception
// set on failure.
int AddExceptions(PyObject* module);

// Sets the Python exception for an shmlease error code: the class matching `code` (NotFoundError,
// ...), with `message` as its text and the attributes `code`, `errc_name` and `errno`.
// Always returns nullptr, so callers can `return RaiseErrc(...)`.
std::nullptr_t RaiseErrc(Errc code, std::string_view message);

// Sets the Python exception for the C++ exception `error` (thrown by libshmlease or the standard
// library). `socket_path` is named in the message when the daemon is not running. A kCancelled
// wait whose PythonInterrupt() left an exception set (KeyboardInterrupt) raises that exception.
std::nullptr_t RaiseFromException(std::exception_ptr error, std::string_view socket_path = {});

// A LeaseOptions::interrupted / WriterOptions::interrupted for a wait made through
// CallWithoutGil(): it takes the GIL for each poll and returns true once a signal handler raised
// (Ctrl-C: the KeyboardInterrupt stays set, and RaiseFromException() keeps it), or once
// `interrupted` (a Python callable, or nullptr for none) returned a true value or raised. The
// library then withdraws the request from the daemon and throws Error(kCancelled). Signals are
// seen only in the main thread, as everywhere in Python. `stop`, when given, is read under the GIL
// too (a flag such as "this Client is closing"). `interrupted` and `stop` must outlive the wait.
std::function<bool()> PythonInterrupt(PyObject* interrupted, const bool* stop = nullptr);

// Runs `fn` with the GIL released and catches everything it throws. Returns the exception to pass
// to RaiseFromException() once the GIL is back, or nullptr on success.
template <typename Fn>
std::exception_ptr CallWithoutGil(Fn&& fn) noexcept {
  std::exception_ptr error;
  Py_BEGIN_ALLOW_THREADS;
  try {
    std::forward<Fn>(fn)();
  } catch (...) {
    error = std::current_exception();
  }
  Py_END_ALLOW_THREADS;
  return error;
}

}  // namespace shmlease::python
