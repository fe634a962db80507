//! Unix signal dispatch: the handlers registered with `add_signal_handler`, keyed by
//! signal number, and the read side of the wakeup socket that `signal.set_wakeup_fd`
//! writes signal numbers into.
//!
//! The Python package installs the C-level handler (`signal.signal`) and the wakeup fd;
//! the loop polls the read side and queues the matching handles.

use std::collections::HashMap;
use std::os::fd::RawFd;

use pyo3::prelude::*;

use crate::handles::Handle;

#[derive(Default)]
pub struct SignalTable {
    handlers: HashMap<i32, Py<Handle>>,
    pub wakeup_fd: Option<RawFd>,
}

impl SignalTable {
    pub fn insert(&mut self, sig: i32, handle: Py<Handle>) -> Option<Py<Handle>> {
        self.handlers.insert(sig, handle)
    }

    pub fn remove(&mut self, sig: i32) -> Option<Py<Handle>> {
        self.handlers.remove(&sig)
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    pub fn drain(&mut self) -> Vec<Py<Handle>> {
        self.handlers.drain().map(|(_, h)| h).collect()
    }

    pub fn handles(&self) -> impl Iterator<Item = &Py<Handle>> {
        self.handlers.values()
    }

    /// Read every pending signal number from the wakeup fd and return the handles to run.
    pub fn take_pending(&self, py: Python<'_>) -> Vec<Py<Handle>> {
        let mut out = Vec::new();
        let Some(fd) = self.wakeup_fd else {
            return out;
        };
        let mut buf = [0u8; 256];
        loop {
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break; // EAGAIN (drained), EOF or error: nothing more to read now
            }
            for &sig in &buf[..n as usize] {
                if let Some(h) = self.handlers.get(&(sig as i32)) {
                    if !h.get().is_cancelled() {
                        out.push(h.clone_ref(py));
                    }
                }
            }
        }
        out
    }
}
