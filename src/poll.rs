//! Readiness polling: the one seam to the OS (epoll through `mio`), plus the cross-thread
//! waker and the deadline timer.
//!
//! epoll's own timeout has millisecond granularity (and the kernel's timer slack on top),
//! so the loop also arms a `timerfd` at the next timer's deadline before it blocks: the
//! poll then wakes within microseconds of the deadline without spinning.
//!
//! mio registers every source edge-triggered. asyncio's `add_reader`/`add_writer` are
//! level-triggered (a reader that leaves data unread is called again), so a user fd that
//! fired is re-armed (`EPOLL_CTL_MOD`, which re-reports a still-ready fd) before the next
//! poll. The poll state sits behind a mutex because the loop thread polls with the GIL
//! released. Registrations go through a separate `Registry` (epoll_ctl is thread-safe,
//! and an fd added during a poll is reported by that poll), so `add_reader` works from
//! any thread at any time, as with the stock loop.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use pyo3::Python;

use crate::cell::GilCell;

pub const WAKE_TOKEN: Token = Token(usize::MAX);
pub const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
pub const DEADLINE_TOKEN: Token = Token(usize::MAX - 2);

pub const READABLE: u8 = 1;
pub const WRITABLE: u8 = 2;
/// In a fired mask only: the peer hung up or the fd is in error.
pub const HANGUP: u8 = 4;

pub struct PollState {
    poll: Poll,
    events: Events,
    /// Ready events of the last poll, as (token, READABLE|WRITABLE).
    pub fired: Vec<(Token, u8)>,
}

pub struct Poller {
    state: Mutex<Option<PollState>>,
    /// A clone of the poll's registry (its own epoll fd handle), used with the GIL held.
    registry: GilCell<Option<Registry>>,
}

/// A `timerfd` on CLOCK_MONOTONIC that wakes the poll at a precise loop time.
pub struct DeadlineTimer {
    fd: RawFd,
    /// The deadline it is armed for (loop time), or NaN when disarmed or fired.
    armed: f64,
}

impl DeadlineTimer {
    /// None where timerfd is unavailable: the loop falls back to epoll's timeout.
    pub fn new() -> Option<DeadlineTimer> {
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        (fd >= 0).then_some(DeadlineTimer {
            fd,
            armed: f64::NAN,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Arm for loop time `when` unless already armed for exactly that.
    pub fn arm(&mut self, when: f64) {
        if self.armed == when {
            return;
        }
        let secs = when.floor();
        // Round up: waking a nanosecond early would only cost another round trip.
        let nanos = (((when - secs) * 1e9).ceil() as i64).min(999_999_999);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: secs.max(0.0) as libc::time_t,
                // A zero it_value would disarm: an already-due deadline becomes 1 ns.
                tv_nsec: if secs <= 0.0 && nanos <= 0 { 1 } else { nanos },
            },
        };
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd,
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        self.armed = if rc == 0 { when } else { f64::NAN };
    }

    /// It expired. No read needed: the fd is edge-registered, and re-arming
    /// (`timerfd_settime`) resets its expiry count, so the next expiry is a new edge.
    pub fn fired(&mut self) {
        self.armed = f64::NAN;
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        unsafe { libc::close(self.fd) };
    }
}

/// Returned when another thread already holds the poller (the loop is polling).
pub struct Busy;

fn interest_of(mask: u8) -> Option<Interest> {
    match (mask & READABLE != 0, mask & WRITABLE != 0) {
        (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
        (true, false) => Some(Interest::READABLE),
        (false, true) => Some(Interest::WRITABLE),
        (false, false) => None,
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the poller is closed")
}

/// Watch `fd` for `mask`, replacing any earlier interest; mask 0 stops watching.
fn set_interest(registry: &Registry, fd: RawFd, mask: u8, known: bool) -> io::Result<()> {
    let token = Token(fd as usize);
    let Some(interest) = interest_of(mask) else {
        return match registry.deregister(&mut SourceFd(&fd)) {
            // The fd was closed already: the kernel dropped it from the set.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOENT)) => Ok(()),
            other => other,
        };
    };
    if known {
        match registry.reregister(&mut SourceFd(&fd), token, interest) {
            // Closed and reopened under the same number: register afresh.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                registry.register(&mut SourceFd(&fd), token, interest)
            }
            other => other,
        }
    } else {
        match registry.register(&mut SourceFd(&fd), token, interest) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                registry.reregister(&mut SourceFd(&fd), token, interest)
            }
            other => other,
        }
    }
}

impl Poller {
    pub fn new() -> io::Result<(Poller, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE_TOKEN)?;
        let state = PollState {
            poll,
            events: Events::with_capacity(1024),
            fired: Vec::with_capacity(64),
        };
        let registry = state.poll.registry().try_clone()?;
        Ok((
            Poller {
                state: Mutex::new(Some(state)),
                registry: GilCell::new(Some(registry)),
            },
            waker,
        ))
    }

    fn with_registry<T>(&self, f: impl FnOnce(&Registry) -> io::Result<T>) -> io::Result<T> {
        let registry = self.registry.try_ref().map_err(io::Error::other)?;
        registry.as_ref().map_or_else(|| Err(closed()), f)
    }

    /// Watch `fd` for `mask` (READABLE|WRITABLE); 0 stops watching. `known`: the fd was
    /// registered before. Any thread, with the GIL held.
    pub fn set_interest(&self, fd: RawFd, mask: u8, known: bool) -> io::Result<()> {
        self.with_registry(|r| set_interest(r, fd, mask, known))
    }

    pub fn register_signal_fd(&self, fd: RawFd) -> io::Result<()> {
        self.with_registry(|r| r.register(&mut SourceFd(&fd), SIGNAL_TOKEN, Interest::READABLE))
    }

    pub fn register_deadline_fd(&self, fd: RawFd) -> io::Result<()> {
        self.with_registry(|r| r.register(&mut SourceFd(&fd), DEADLINE_TOKEN, Interest::READABLE))
    }

    pub fn deregister_fd(&self, fd: RawFd) {
        let _ = self.with_registry(|r| r.deregister(&mut SourceFd(&fd)));
    }

    /// Lock from the loop thread (never contended there in correct use).
    pub fn lock(&self) -> Result<MutexGuard<'_, Option<PollState>>, Busy> {
        match self.state.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(Busy),
        }
    }

    /// Block for events (call with the GIL released). Fills `fired`.
    /// Returns Ok(false) when interrupted by a signal.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Some(st) = guard.as_mut() else {
            return Ok(true);
        };
        st.fired.clear();
        match st.poll.poll(&mut st.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(e),
        }
        for ev in st.events.iter() {
            let mut mask = 0u8;
            let broken = ev.is_error();
            if ev.is_readable() || ev.is_read_closed() || broken {
                mask |= READABLE;
            }
            if ev.is_writable() || ev.is_write_closed() || broken {
                mask |= WRITABLE;
            }
            if ev.is_read_closed() || ev.is_write_closed() || broken {
                mask |= HANGUP;
            }
            st.fired.push((ev.token(), mask));
        }
        Ok(true)
    }

    /// `wait` with the GIL released, for the loop thread (which holds it: `_py`).
    ///
    /// Straight `PyEval_SaveThread`/`PyEval_RestoreThread` instead of PyO3's
    /// `allow_threads`, which on top of them zeroes and restores PyO3's thread-local GIL
    /// count and, after retaking the GIL, locks its pool of deferred decrefs: about 80
    /// instructions per blocking poll. Skipping both is safe here:
    /// * the GIL count is read only by PyO3 code on this thread (whether a dropped `Py`
    ///   may be decref'd now or must be deferred). Nothing runs on this thread while the
    ///   GIL is released but `Poller::wait`, which touches no Python object, and the count
    ///   is right again once the GIL is back. Other threads have counts of their own.
    /// * the deferred decrefs (a `Py` dropped by a thread without the GIL) are applied
    ///   whenever PyO3 next takes the GIL or enters a `#[pymethods]` function, on any
    ///   thread; this only stops being one such place. PyO3 promises no earlier time, and
    ///   this crate drops no `Py` without the GIL.
    ///
    /// The GIL is retaken by a guard, so also if `wait` were to panic.
    pub fn wait_released(&self, _py: Python<'_>, timeout: Option<Duration>) -> io::Result<bool> {
        struct Retake(*mut pyo3::ffi::PyThreadState);
        impl Drop for Retake {
            fn drop(&mut self) {
                // SAFETY: the thread state `PyEval_SaveThread` returned on this thread.
                unsafe { pyo3::ffi::PyEval_RestoreThread(self.0) }
            }
        }
        // SAFETY: this thread holds the GIL (`_py`); see above for PyO3's state.
        let _retake = Retake(unsafe { pyo3::ffi::PyEval_SaveThread() });
        self.wait(timeout)
    }

    /// Close the epoll fds (the poll's and the registry clone's).
    pub fn close(&self) {
        let registry = self.registry.try_mut().ok().and_then(|mut r| r.take());
        let state = match self.state.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        drop((registry, state));
    }
}
