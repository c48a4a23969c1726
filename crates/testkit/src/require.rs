//! What a test needs from the machine, checked at the test's start.
//!
//! A missing program, Python module or GStreamer element fails the test with the Debian package
//! that provides it: the test command (`scripts/test`) installs every one of them, so a test that
//! finds one missing has found a gap in that list, which a skip would hide (as it once hid
//! `gstreamer1.0-x`). Root is not a package: tests that need it say SKIPPED elsewhere.

use std::process::Command;

/// Debian's Python, which has `python3-gi` and `python3-opencv` (a pyenv or venv Python may not).
pub const PYTHON: &str = "/usr/bin/python3";

pub(crate) fn missing(what: &str, package: &str) -> ! {
    panic!(
        "this test needs {what}, which is not installed: apt-get install -y {package} \
         (./scripts/test installs it when run as root; if it did not, add {package} to its list)"
    )
}

/// Whether `program` is on `PATH`.
pub fn has_program(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| is_executable(&d.join(program))))
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Fails the test unless `program` is on `PATH`; `package` provides it.
pub fn program(program: &str, package: &str) {
    if !has_program(program) {
        missing(&format!("the program {program}"), package);
    }
}

/// ffmpeg and ffprobe (Debian `ffmpeg`).
pub fn ffmpeg() {
    program("ffmpeg", "ffmpeg");
    program("ffprobe", "ffmpeg");
}

/// Fails the test unless Debian's Python can import `module`; `package` provides it.
pub fn python_module(module: &str, package: &str) {
    python(&format!("import {module}"), &format!("the Python module {module} for {PYTHON}"), package);
}

/// Fails the test, needing `what` from `package`, unless Debian's Python runs `code` cleanly.
pub fn python(code: &str, what: &str, package: &str) {
    let ok = Command::new(PYTHON).args(["-c", code]).output();
    if !ok.is_ok_and(|o| o.status.success()) {
        missing(what, package);
    }
}

/// Fails the test unless GStreamer has every element in `elements`, each `(element, package)`.
/// Checked through Debian's Python and GObject introspection, as the test camera runs.
pub fn gst_elements(elements: &[(&str, &str)]) {
    python_module("gi", "python3-gi");
    let names: Vec<&str> = elements.iter().map(|(e, _)| *e).collect();
    let script = format!(
        "import gi\ngi.require_version('Gst', '1.0')\nfrom gi.repository import Gst\nGst.init(None)\n\
         for e in {names:?}:\n    print(e, Gst.ElementFactory.find(e) is not None)\n"
    );
    let out = Command::new(PYTHON).args(["-c", &script]).output().expect("run /usr/bin/python3");
    if !out.status.success() {
        missing("GStreamer's introspection data", "gir1.2-gstreamer-1.0");
    }
    let found = String::from_utf8_lossy(&out.stdout);
    for (element, package) in elements {
        if !found.lines().any(|l| l == format!("{element} True")) {
            missing(&format!("the GStreamer element {element}"), package);
        }
    }
}
