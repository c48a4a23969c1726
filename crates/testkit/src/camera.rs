//! A real IP camera for tests: GStreamer's RTSP server (`gst/rtsp_camera.py`), run with
//! Debian's `/usr/bin/python3`, serving a live test pattern with audio, optionally with Basic or
//! Digest authentication. Reports how many RTSP sessions it has.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::require::PYTHON;

/// A running camera. Killed (by PID) and reaped on drop.
pub struct GstCamera {
    child: Child,
    port: u16,
    args: Vec<String>,
    sessions: Arc<AtomicI64>,
}

impl GstCamera {
    /// Starts a camera with extra arguments (`--video h265`, `--audio pcma`, `--auth digest`,
    /// …) on a free port. Fails the test, naming the Debian package, if GStreamer's RTSP server
    /// or an element the camera uses is missing ([`crate::require`]).
    pub fn start(args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(cam) = Self::start_on(0, args.clone()) {
                return cam;
            }
            assert!(Instant::now() < deadline, "the camera did not start");
        }
    }

    fn start_on(port: u16, args: Vec<String>) -> Option<Self> {
        crate::require::python_module("gi", "python3-gi");
        crate::require::python(
            "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
            "GStreamer's RTSP server library",
            "gir1.2-gst-rtsp-server-1.0",
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/gst/rtsp_camera.py");
        let mut child = Command::new(PYTHON)
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the camera");
        let (tx, rx) = mpsc::channel();
        let sessions = Arc::new(AtomicI64::new(-1));
        let counter = sessions.clone();
        let stdout = child.stdout.take().expect("camera stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(p) = line.strip_prefix("READY ") {
                    let _ = tx.send(Ok(p.trim().parse::<u16>().unwrap_or(0)));
                } else if let Some(m) = line.strip_prefix("MISSING ") {
                    let _ = tx.send(Err(m.to_owned()));
                } else if let Some(n) = line.strip_prefix("SESSIONS ") {
                    counter.store(n.trim().parse().unwrap_or(-1), Ordering::SeqCst);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(port)) if port > 0 => Some(Self { child, port, args, sessions }),
            Ok(Err(missing)) => {
                let _ = child.wait();
                let (element, package) = missing.split_once(' ').unwrap_or((&missing, "?"));
                crate::require::missing(&format!("the GStreamer element {element}"), package)
            }
            _ => {
                // It could not listen (the port may still be held); the caller may retry.
                let _ = child.kill();
                let _ = child.wait();
                assert!(port != 0, "the camera did not start");
                None
            }
        }
    }

    /// The URL of the camera's stream, with these credentials (if any).
    pub fn url(&self, creds: Option<(&str, &str)>) -> String {
        match creds {
            Some((u, p)) => format!("rtsp://{u}:{p}@127.0.0.1:{}/cam", self.port),
            None => format!("rtsp://127.0.0.1:{}/cam", self.port),
        }
    }

    /// How many RTSP sessions the camera has now (-1 before its first report).
    pub fn sessions(&self) -> i64 {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Waits until the camera has `n` sessions.
    pub fn wait_sessions(&self, n: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.sessions() != n {
            assert!(Instant::now() < deadline, "camera has {} sessions, expected {n}", self.sessions());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the camera (as a crash or power cut would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, with the same arguments.
    pub fn restart(&mut self) {
        let args = self.args.clone();
        self.restart_with(args);
    }

    /// Starts it again on the same port with other arguments (a new resolution, …).
    pub fn restart_with(&mut self, args: Vec<String>) {
        self.args = args;
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(cam) = Self::start_on(self.port, self.args.clone()) {
                *self = cam;
                return;
            }
            assert!(Instant::now() < deadline, "the camera did not come back on port {}", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for GstCamera {
    fn drop(&mut self) {
        self.kill();
    }
}
