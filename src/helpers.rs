//! Python-side helpers the Rust core calls on its slow paths (formatting, debug checks).
//!
//! The Python package registers them once at import (`_oxloop._set_helpers`), so that
//! messages match the stock loop's text exactly without re-implementing its formatting.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

pub struct Helpers {
    /// `(callback, args, debug) -> str`, as `format_helpers._format_callback_source`.
    pub format_callback_source: Py<PyAny>,
    /// `() -> list`, the caller's stack as `format_helpers.extract_stack` returns it.
    pub extract_stack: Py<PyAny>,
    /// `(callback, method_name) -> None`, raising the stock `TypeError`s (debug mode).
    pub check_callback: Py<PyAny>,
    /// `(handle, seconds) -> None`: log a slow callback (debug mode).
    pub log_slow_callback: Py<PyAny>,
}

static HELPERS: PyOnceLock<Helpers> = PyOnceLock::new();

pub fn get(py: Python<'_>) -> PyResult<&Helpers> {
    HELPERS
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("oxloop: import oxloop, not oxloop._oxloop"))
}

#[pyfunction]
pub fn _set_helpers(
    py: Python<'_>,
    format_callback_source: Py<PyAny>,
    extract_stack: Py<PyAny>,
    check_callback: Py<PyAny>,
    log_slow_callback: Py<PyAny>,
) -> PyResult<()> {
    let _ = HELPERS.set(
        py,
        Helpers {
            format_callback_source,
            extract_stack,
            check_callback,
            log_slow_callback,
        },
    );
    Ok(())
}
