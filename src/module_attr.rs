//! `ModuleAttr`: a module attribute read on every call (`futures.Future`, `tasks.Task`),
//! kept between calls for as long as the module's dict has not changed.
//!
//! The stock loop looks `futures.Future` up on each `create_future()`, so a replaced
//! attribute is honoured at once; this keeps that without a dict look-up per call. For a
//! plain module the attribute lives in the module's dict (the module type has no
//! attribute that a module's own would not shadow); the value found there is kept with a
//! stamp that changes whenever that dict does, so while the stamp is the same the kept
//! value is still what the dict holds. The stamp comes from public CPython API, by version:
//!
//! * 3.12 and later: a dict watcher (`PyDict_AddWatcher`/`PyDict_Watch`, PEP 509's
//!   successor) on each such module dict bumps one counter on every change of any of them.
//! * 3.10 and 3.11: the dict's own version tag (`ma_version_tag`, PEP 509), a public field
//!   of `PyDictObject` there (deprecated in 3.12, gone in 3.14).
//!
//! A miss (`__getattr__`, the error), a module that is not a plain one, or a 3.12+
//! interpreter whose watcher slots are all taken goes through `getattr` on every call.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{PyTraverseError, PyVisit};

use crate::cell::GilCell;

pub struct ModuleAttr {
    pub module: Py<PyAny>,
    /// The module's dict (fixed for the module's life), if it is a plain module whose
    /// changes are seen (see `stamp`).
    dict: Option<Py<PyDict>>,
    name: Py<PyString>,
    /// The dict's stamp and the value it held then.
    last: GilCell<Option<(u64, Py<PyAny>)>>,
}

impl ModuleAttr {
    pub fn new(py: Python<'_>, module: &str, name: &str) -> PyResult<ModuleAttr> {
        let module = py.import(module)?.into_any();
        let dict = match is_plain_module(&module) {
            true => {
                let dict = module.cast::<pyo3::types::PyModule>()?.dict();
                watch(&dict).then(|| dict.unbind())
            }
            false => None,
        };
        Ok(ModuleAttr {
            module: module.unbind(),
            dict,
            name: PyString::intern(py, name).unbind(),
            last: GilCell::new(None),
        })
    }

    #[inline(always)]
    pub fn get<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some(dict) = &self.dict else {
            return self.module.bind(py).getattr(self.name.bind(py));
        };
        // Still a plain module (`__class__` may be set to a subclass with a property).
        if !is_plain_module(self.module.bind(py)) {
            return self.module.bind(py).getattr(self.name.bind(py));
        }
        let stamp = stamp(dict.bind(py));
        if let Some((kept, value)) = self.last.try_ref()?.as_ref() {
            if *kept == stamp {
                return Ok(value.bind(py).clone());
            }
        }
        let item = unsafe { ffi::PyDict_GetItemWithError(dict.as_ptr(), self.name.as_ptr()) };
        if item.is_null() {
            if let Some(err) = PyErr::take(py) {
                return Err(err);
            }
            return self.module.bind(py).getattr(self.name.bind(py));
        }
        let value = unsafe { Bound::from_borrowed_ptr(py, item) };
        let old = self
            .last
            .try_mut()?
            .replace((stamp, value.clone().unbind()));
        drop(old); // after the borrow
        Ok(value)
    }

    /// Let go of the kept value (the collector's `tp_clear`); for the caller to drop.
    pub fn forget(&self) -> Option<(u64, Py<PyAny>)> {
        self.last.try_mut().ok().and_then(|mut l| l.take())
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.module)?;
        if let Some(last) = self.last.peek() {
            if let Some((_, value)) = last.as_ref() {
                visit.call(value)?;
            }
        }
        Ok(())
    }
}

#[inline(always)]
fn is_plain_module(obj: &Bound<'_, PyAny>) -> bool {
    unsafe { ffi::Py_TYPE(obj.as_ptr()) == std::ptr::addr_of_mut!(ffi::PyModule_Type) }
}

/// A dict's version tag (PEP 509): changes whenever the dict does.
#[cfg(not(Py_3_12))]
#[inline(always)]
fn stamp(dict: &Bound<'_, PyDict>) -> u64 {
    unsafe { (*dict.as_ptr().cast::<ffi::PyDictObject>()).ma_version_tag }
}

/// Every dict has a version tag before 3.12: nothing to set up.
#[cfg(not(Py_3_12))]
fn watch(_dict: &Bound<'_, PyDict>) -> bool {
    true
}

/// Changes of the watched dicts so far (3.12+): one counter for all of them, bumped by
/// the watcher (a change of one dict renews every kept value: they change rarely).
#[cfg(Py_3_12)]
static CHANGES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The watcher's id: `UNSET` until the first `watch`, -1 if no slot was free.
#[cfg(Py_3_12)]
static WATCHER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(UNSET);
#[cfg(Py_3_12)]
const UNSET: i32 = i32::MIN;

#[cfg(Py_3_12)]
#[inline(always)]
fn stamp(_dict: &Bound<'_, PyDict>) -> u64 {
    CHANGES.load(std::sync::atomic::Ordering::Acquire)
}

/// The dict watcher: any event of a watched dict (added, modified, deleted, cloned,
/// cleared, deallocated) renews the stamp. It cannot fail.
#[cfg(Py_3_12)]
unsafe extern "C" fn on_dict_event(
    _event: crate::capi::PyDictWatchEvent,
    _dict: *mut ffi::PyObject,
    _key: *mut ffi::PyObject,
    _new_value: *mut ffi::PyObject,
) -> std::ffi::c_int {
    CHANGES.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    0
}

/// Have `dict`'s changes renew the stamp: whether they now do (false when no watcher
/// slot is free, or `PyDict_Watch` failed; the error is dropped and the caller reads the
/// attribute through `getattr` instead).
#[cfg(Py_3_12)]
fn watch(dict: &Bound<'_, PyDict>) -> bool {
    use std::sync::atomic::Ordering;
    let py = dict.py();
    let mut id = WATCHER.load(Ordering::Acquire);
    if id == UNSET {
        // The GIL serialises the first calls (ModuleAttr::new runs with it held).
        id = unsafe { crate::capi::PyDict_AddWatcher(on_dict_event) };
        if id < 0 {
            drop(PyErr::take(py));
        }
        WATCHER.store(id, Ordering::Release);
    }
    if id < 0 {
        return false;
    }
    if unsafe { ffi::PyDict_Watch(id, dict.as_ptr()) } != 0 {
        drop(PyErr::take(py));
        return false;
    }
    // A change made before the watch started is not counted: renew the stamp now.
    CHANGES.fetch_add(1, Ordering::AcqRel);
    true
}
