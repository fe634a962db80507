//! The `oxloop._oxloop` extension module: registers the loop core and handle types.

mod capi;
mod cell;
mod entries;
mod errors;
mod event_loop;
mod handles;
mod helpers;
mod module_attr;
mod poll;
mod signals;
mod sock;
mod sockaddr;
mod stats;
mod stream;
mod timers;
mod tls;
mod transport;
mod udp;
mod watchdog;
mod wbuf;

use pyo3::prelude::*;

// The loop core relies on the GIL for exclusion (see `cell.rs`): it declares that it
// uses it, so a free-threaded interpreter turns the GIL on when oxloop is imported.
#[pymodule(gil_used = true)]
fn _oxloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event_loop::LoopCore>()?;
    event_loop::install_fast_paths(m.py())?;
    m.add_class::<handles::Handle>()?;
    m.add_class::<handles::TimerHandle>()?;
    m.add_class::<stream::StreamTransport>()?;
    stream::install_fast_paths(m.py())?;
    m.add_class::<udp::DatagramTransport>()?;
    m.add_function(wrap_pyfunction!(helpers::_set_helpers, m)?)?;
    sock::register(m)?;
    tls::register(m)?;
    Ok(())
}
