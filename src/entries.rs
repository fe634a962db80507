//! What the hand-written C method entries share (the `METH_FASTCALL`/`METH_NOARGS`
//! replacements of PyO3's generated methods on the hot paths, in `event_loop.rs` and the
//! transports): handing a call they do not take on to the generated method, and keeping
//! a panic from unwinding into the interpreter.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Run the body of a direct method entry (the GIL held): a panic becomes a Python
/// `PanicException` instead of unwinding into the interpreter.
pub fn guarded(f: impl FnOnce() -> *mut ffi::PyObject) -> *mut ffi::PyObject {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(p) => p,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic from Rust code".to_owned());
            // SAFETY: entries run with the GIL held.
            let py = unsafe { Python::assume_attached() };
            pyo3::panic::PanicException::new_err(msg).restore(py);
            std::ptr::null_mut()
        }
    }
}

/// An entry's result for the interpreter: the pointer, or NULL with the error set.
pub fn raise_or(py: Python<'_>, result: PyResult<*mut ffi::PyObject>) -> *mut ffi::PyObject {
    result.unwrap_or_else(|e| {
        e.restore(py);
        std::ptr::null_mut()
    })
}

/// A method result for the interpreter: a new reference, or NULL with the error set.
pub fn into_ptr(py: Python<'_>, result: PyResult<Py<PyAny>>) -> *mut ffi::PyObject {
    raise_or(py, result.map(Py::<PyAny>::into_ptr))
}

/// Hand a `METH_FASTCALL | METH_KEYWORDS` call (or, with `nargsf` 0, a no-argument one)
/// to the method PyO3 generated, kept in `generic`: its argument checks and messages.
///
/// # Safety
/// The GIL is held; `slf`, `args`, `nargsf` and `kwnames` are the vectorcall arguments
/// the interpreter passed.
pub unsafe fn call_generic(
    generic: &PyOnceLock<Py<PyAny>>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let py = unsafe { Python::assume_attached() };
    let Some(generic) = generic.get(py) else {
        unsafe { ffi::PyErr_SetString(ffi::PyExc_RuntimeError, c"method not installed".as_ptr()) };
        return std::ptr::null_mut();
    };
    let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) } as usize;
    let nkw = if kwnames.is_null() {
        0
    } else {
        unsafe { ffi::PyTuple_GET_SIZE(kwnames) as usize }
    };
    let mut all = Vec::with_capacity(1 + nargs + nkw);
    all.push(slf);
    if nargs + nkw > 0 {
        all.extend_from_slice(unsafe { std::slice::from_raw_parts(args, nargs + nkw) });
    }
    unsafe { ffi::PyObject_Vectorcall(generic.as_ptr(), all.as_ptr(), nargs + 1, kwnames) }
}
