//! CPython C API functions that PyO3's `ffi` does not declare, each public and documented
//! in the C API reference of every version it is declared for.

use pyo3::ffi;
use std::ffi::c_int;

extern "C" {
    /// `_PyBytes_Resize` (documented under "Bytes Objects" since 3.0, in every supported
    /// version): resize a `bytes` that only the caller holds; on failure the object is
    /// freed, `*bytes` set to NULL and an exception set.
    pub fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> c_int;
}

/// `PyDict_WatchEvent` (3.12+): what happened to a watched dict.
#[cfg(Py_3_12)]
pub type PyDictWatchEvent = c_int;

/// `PyDict_WatchCallback` (3.12+).
#[cfg(Py_3_12)]
pub type PyDictWatchCallback = unsafe extern "C" fn(
    event: PyDictWatchEvent,
    dict: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
    new_value: *mut ffi::PyObject,
) -> c_int;

#[cfg(Py_3_12)]
extern "C" {
    /// `PyDict_AddWatcher` (3.12+): register a dict watcher; its id, or -1 with an
    /// exception set when every watcher slot is taken.
    pub fn PyDict_AddWatcher(callback: PyDictWatchCallback) -> c_int;
}
