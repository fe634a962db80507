//! The Python exceptions oxloop raises, with the stock asyncio messages callers depend on,
//! and which exceptions propagate out of the loop rather than being reported.

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyTypeError};
use pyo3::{PyErr, Python};

/// SystemExit and KeyboardInterrupt propagate out of the loop; every other error raised
/// by a callback or a protocol is reported and handled, as stock does.
pub fn must_propagate(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py)
}

pub fn loop_closed() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

pub fn already_running() -> PyErr {
    PyRuntimeError::new_err("This event loop is already running")
}

pub fn close_running() -> PyErr {
    PyRuntimeError::new_err("Cannot close a running event loop")
}

pub fn wrong_thread() -> PyErr {
    PyRuntimeError::new_err(
        "Non-thread-safe operation invoked on an event loop other than the current one",
    )
}

pub fn not_callable(method: &str, repr: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "a callable object was expected by {method}(), got {repr}"
    ))
}
