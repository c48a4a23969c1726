//! Real Chromium, driven over WebDriver (Debian's `chromium` and `chromium-driver`): a
//! chromedriver this test starts on a free port, one headless browser session, and the three
//! WebDriver commands the browser tests need (navigate, run a script, run an asynchronous one).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::free_port;
use crate::require;

/// A chromedriver and the headless Chromium session it runs; both stop on drop.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that plays media without a user gesture.
    pub fn start() -> Browser {
        require::program("chromium", "chromium");
        require::program("chromedriver", "chromium-driver");
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut b = Browser { driver, addr, session: String::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while call(addr, "GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio",
                         "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000",
                         "--disable-background-timer-throttling", "--disable-renderer-backgrounding"]
            }
        }}});
        let v = call(addr, "POST", "/session", Some(&caps)).expect("a browser session");
        b.session = v["sessionId"].as_str().expect("a session id").to_owned();
        b
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        call(self.addr, "POST", &self.path("/url"), Some(&json!({ "url": url }))).expect("navigate");
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        call(self.addr, "POST", &self.path("/execute/sync"), Some(&json!({ "script": script, "args": [] })))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs `script`, which calls `done(value)` (defined for it) when it has its answer, within
    /// `timeout`.
    pub fn eval_async(&self, script: &str, timeout: Duration) -> Value {
        let ms = timeout.as_millis() as u64;
        call(self.addr, "POST", &self.path("/timeouts"), Some(&json!({ "script": ms }))).expect("set the timeout");
        let body = format!("const done = arguments[arguments.length - 1];\n{script}");
        call(self.addr, "POST", &self.path("/execute/async"), Some(&json!({ "script": body, "args": [] })))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` every 100 ms until it returns something truthy; returns that.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script);
            if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: not within {timeout:?} (last: {v})");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = call(self.addr, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver command: the `value` of its answer, or its error message.
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open whatever the request says: read the head, then
    // exactly the body it announces.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before an answer".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| format!("no content-length in {head}"))?;
    while raw.len() < head_end + length {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed mid-answer".into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_end..head_end + length]).into_owned();
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    // A WebDriver error is `{"error": "<code>", "message": …}` (a script's own answer may have an
    // `error` field too, but not both as strings).
    if value["error"].is_string() && value["message"].is_string() {
        return Err(format!("{}: {}", value["error"], value["message"]));
    }
    Ok(value)
}
