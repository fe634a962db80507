//! Interior mutability for loop state that is only touched while the GIL is held.
//!
//! oxloop supports GIL-enabled CPython only: every Python-visible method runs with the
//! GIL held, and the loop thread touches this state only with the GIL held (it releases
//! the GIL solely around the blocking poll, which does not use these cells). The GIL is
//! therefore the lock, and a `RefCell` is enough. A failed borrow is a bug (re-entrancy
//! that the code forgot), reported as a Python `RuntimeError`, never a panic.

use std::cell::{Ref, RefCell, RefMut};

use pyo3::exceptions::PyRuntimeError;
use pyo3::PyResult;

pub struct GilCell<T>(RefCell<T>);

// SAFETY: see the module comment: every access happens with the GIL held, which
// serialises all threads. The crate does not declare free-threading support.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(value: T) -> Self {
        GilCell(RefCell::new(value))
    }

    /// Borrow mutably; a conflicting borrow becomes a `RuntimeError`.
    #[inline]
    pub fn try_mut(&self) -> PyResult<RefMut<'_, T>> {
        self.0
            .try_borrow_mut()
            .map_err(|_| PyRuntimeError::new_err("oxloop internal error: re-entrant state access"))
    }

    #[inline]
    pub fn try_ref(&self) -> PyResult<Ref<'_, T>> {
        self.0
            .try_borrow()
            .map_err(|_| PyRuntimeError::new_err("oxloop internal error: re-entrant state access"))
    }

    /// For the GC's traverse: skip rather than fail when the state is busy.
    #[inline]
    pub fn peek(&self) -> Option<Ref<'_, T>> {
        self.0.try_borrow().ok()
    }
}
