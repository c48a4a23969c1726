//! Real browsers, driven over WebDriver: Chromium (Debian's `chromium` and `chromium-driver`)
//! through a chromedriver this test starts on a free port, and Firefox (Debian's
//! `firefox-esr`) through Marionette, the WebDriver commands Firefox itself serves (Debian has
//! no geckodriver, which only translates the HTTP protocol into these). One headless session
//! each, and the three commands the browser tests need: navigate, run a script, run an
//! asynchronous one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::free_port;
use crate::require;

/// A headless browser session and the processes behind it; all stop on drop.
pub struct Browser {
    process: Child,
    driver: Driver,
    /// The browser's profile, removed on drop (left behind, each run's would pile up in /tmp).
    profile: PathBuf,
}

enum Driver {
    /// chromedriver's HTTP endpoint and the session it made.
    Chromium { addr: SocketAddr, session: String },
    /// Firefox's Marionette connection (one command at a time).
    Firefox { conn: Mutex<Marionette> },
}

/// Which browser a test drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Chromium through chromedriver.
    Chromium,
    /// Firefox ESR through Marionette.
    Firefox,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that plays media without a user gesture.
    pub fn start() -> Browser {
        Self::launch(Kind::Chromium)
    }

    /// Starts a headless browser of `kind` that plays media without a user gesture.
    pub fn launch(kind: Kind) -> Browser {
        match kind {
            Kind::Chromium => Self::chromium(),
            Kind::Firefox => Self::firefox(),
        }
    }

    fn chromium() -> Browser {
        require::program("chromium", "chromium");
        require::program("chromedriver", "chromium-driver");
        let port = free_port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let profile = profile_dir("chromium");
        let mut b = Browser { process, driver: Driver::Chromium { addr, session: String::new() }, profile };
        let deadline = Instant::now() + Duration::from_secs(20);
        while call(addr, "GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [format!("--user-data-dir={}", b.profile.display()), "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio",
                         "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000",
                         "--disable-background-timer-throttling", "--disable-renderer-backgrounding"]
            }
        }}});
        let v = call(addr, "POST", "/session", Some(&caps)).expect("a browser session");
        let id = v["sessionId"].as_str().expect("a session id").to_owned();
        if let Driver::Chromium { session, .. } = &mut b.driver {
            *session = id;
        }
        b
    }

    fn firefox() -> Browser {
        require::program("firefox-esr", "firefox-esr");
        let profile = profile_dir("firefox");
        // Port 0: Firefox picks one and writes it to `MarionetteActivePort` in the profile.
        let prefs = [
            ("marionette.port", "0"),
            ("media.autoplay.default", "0"),
            ("media.autoplay.blocking_policy", "0"),
            ("browser.shell.checkDefaultBrowser", "false"),
            ("datareporting.policy.dataSubmissionEnabled", "false"),
            ("toolkit.telemetry.reportingpolicy.firstRun", "false"),
            ("browser.startup.homepage_override.mstone", "\"ignore\""),
            ("app.update.disabledForTesting", "true"),
        ];
        let user_js: String = prefs.iter().map(|(k, v)| format!("user_pref(\"{k}\", {v});\n")).collect();
        std::fs::write(profile.join("user.js"), user_js).expect("write the profile's prefs");
        let process = Command::new("firefox-esr")
            .args(["--headless", "--marionette", "--no-remote", "--profile"])
            .arg(&profile)
            .arg("about:blank")
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start firefox-esr");
        let port_file = profile.join("MarionetteActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file).ok().and_then(|t| t.trim().parse::<u16>().ok()) {
                break p;
            }
            assert!(Instant::now() < deadline, "Firefox did not start Marionette within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        };
        let conn = Marionette::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect to Marionette");
        let b = Browser { process, driver: Driver::Firefox { conn: Mutex::new(conn) }, profile };
        b.marionette("WebDriver:NewSession", json!({})).expect("a browser session");
        b
    }

    fn marionette(&self, command: &str, params: Value) -> Result<Value, String> {
        let Driver::Firefox { conn, .. } = &self.driver else { unreachable!("a Marionette command to Chromium") };
        conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).command(command, params)
    }

    /// Which browser this is.
    pub fn kind(&self) -> Kind {
        match self.driver {
            Driver::Chromium { .. } => Kind::Chromium,
            Driver::Firefox { .. } => Kind::Firefox,
        }
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        match &self.driver {
            Driver::Chromium { addr, session } => {
                call(*addr, "POST", &format!("/session/{session}/url"), Some(&json!({ "url": url }))).map(drop)
            }
            Driver::Firefox { .. } => self.marionette("WebDriver:Navigate", json!({ "url": url })).map(drop),
        }
        .expect("navigate");
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        let params = json!({ "script": script, "args": [] });
        match &self.driver {
            Driver::Chromium { addr, session } => {
                call(*addr, "POST", &format!("/session/{session}/execute/sync"), Some(&params))
            }
            Driver::Firefox { .. } => self.marionette("WebDriver:ExecuteScript", params).map(|v| v["value"].clone()),
        }
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs `script`, which calls `done(value)` (defined for it) when it has its answer, within
    /// `timeout`.
    pub fn eval_async(&self, script: &str, timeout: Duration) -> Value {
        let ms = timeout.as_millis() as u64;
        let body = format!("const done = arguments[arguments.length - 1];\n{script}");
        let params = json!({ "script": body, "args": [] });
        match &self.driver {
            Driver::Chromium { addr, session } => {
                call(*addr, "POST", &format!("/session/{session}/timeouts"), Some(&json!({ "script": ms })))
                    .expect("set the timeout");
                call(*addr, "POST", &format!("/session/{session}/execute/async"), Some(&params))
            }
            Driver::Firefox { .. } => {
                self.marionette("WebDriver:SetTimeouts", json!({ "script": ms })).expect("set the timeout");
                self.marionette("WebDriver:ExecuteAsyncScript", params).map(|v| v["value"].clone())
            }
        }
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

/// A fresh folder for a browser profile.
fn profile_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mm-{kind}-{}-{}", std::process::id(), crate::unix_micros()));
    std::fs::create_dir_all(&dir).expect("a profile folder");
    dir
}

/// A Marionette connection: `length:json` messages; a command is `[0, id, name, params]`, its
/// answer `[1, id, error, result]`.
struct Marionette {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_id: u64,
}

/// The longest Marionette message read (a script's answer).
const MARIONETTE_MAX: usize = 64 * 1024 * 1024;

impl Marionette {
    fn connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut m = Self { reader: BufReader::new(stream), writer, next_id: 0 };
        let hello = m.read()?;
        if hello["marionetteProtocol"] != 3 {
            return Err(format!("not Marionette protocol 3: {hello}"));
        }
        Ok(m)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut len = Vec::new();
        self.reader.read_until(b':', &mut len).map_err(|e| e.to_string())?;
        let len = std::str::from_utf8(len.strip_suffix(b":").ok_or("the connection closed")?)
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
            .filter(|n| *n <= MARIONETTE_MAX)
            .ok_or("a bad Marionette length")?;
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }

    fn command(&mut self, name: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let body = json!([0, id, name, params]).to_string();
        self.writer.write_all(format!("{}:{body}", body.len()).as_bytes()).map_err(|e| e.to_string())?;
        loop {
            let answer = self.read()?;
            if answer[0] != 1 || answer[1] != id {
                continue;
            }
            if !answer[2].is_null() {
                return Err(format!("{}: {}", answer[2]["error"], answer[2]["message"]));
            }
            return Ok(answer[3].clone());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        match &self.driver {
            Driver::Chromium { addr, session } if !session.is_empty() => {
                let _ = call(*addr, "DELETE", &format!("/session/{session}"), None);
            }
            Driver::Chromium { .. } => {}
            Driver::Firefox { .. } => {
                // Quitting lets Firefox end its content processes; give it a moment to.
                let _ = self.marionette("Marionette:Quit", json!({}));
                let deadline = Instant::now() + Duration::from_secs(5);
                while matches!(self.process.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
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
