//! The real `orgo` Python SDK (0.0.47 from PyPI, unchanged) driven by `sdk_check.py` against a
//! served gateway, whichever runtime serves it.

use super::python;

/// Runs `sdk_check.py` (every SDK method, each effect checked) against the API at `base`
/// (`http://…/api`) with `key`, in a venv with exactly the pinned SDK and Pillow
/// (`sdk-requirements.txt`); panics with its output unless it finished.
pub fn check(base: &str, key: &str) {
    let python = python::venv("sdk-requirements.txt", "sdk-venv");
    python::run(
        &python,
        "sdk_check.py",
        &[("ORGO_API_KEY", key), ("ORGO_BASE_URL", base)],
        "sdk: ",
    );
}
