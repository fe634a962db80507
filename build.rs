//! Build script: PyO3's `Py_3_X` cfgs, for the paths that differ by CPython version.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
