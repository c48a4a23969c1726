//! Glass-to-glass latency in a real browser: `mediamesh demo` (a hub and an edge with the
//! 1280x720, 25 fps test pattern, whose pictures carry their capture time as a block code), its
//! web page in headless Chromium or Firefox over WebDriver, and for every frame of `cam1` put on screen
//! the moment it is shown (`requestVideoFrameCallback`'s expected display time) minus its
//! capture time read from the picture (same machine, same clock): capture, encode, edge, hub,
//! packaging, the browser's network stack, demux, decode and render, all included.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use mediamesh_testkit::browser::{Browser, Kind};

/// What one protocol's run measured.
#[derive(Debug, serde::Serialize)]
pub struct Glass {
    /// `chromium` or `firefox`.
    pub browser: &'static str,
    /// `mse` or `hls`.
    pub protocol: String,
    /// Frames with a readable stamp.
    pub frames: usize,
    /// Milliseconds: median, 95th percentile, lowest, highest.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p95_ms: f64,
    /// See `p50_ms`.
    pub min_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
    /// Frames shown without a readable stamp (should be none).
    pub unreadable: usize,
}

/// Prints the results as a table.
pub fn print(results: &[Glass]) {
    println!(
        "{:<9} {:<9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "browser", "protocol", "frames", "p50 ms", "p95 ms", "min ms", "max ms", "unreadable"
    );
    for g in results {
        println!(
            "{:<9} {:<9} {:>7} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>11}",
            g.browser, g.protocol, g.frames, g.p50_ms, g.p95_ms, g.min_ms, g.max_ms, g.unreadable
        );
    }
}

/// Kills the demo when dropped.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// Runs the demo with `binary`, then measures each protocol in each browser for `seconds`
/// after `warmup`.
pub fn measure(
    binary: &Path,
    dir: &Path,
    browsers: &[Kind],
    protocols: &[String],
    seconds: f64,
    warmup: f64,
) -> anyhow::Result<Vec<Glass>> {
    let mut child = Command::new(binary)
        .args(["demo", "--stream-port", "0", "--tunnel-port", "0", "--rtsp-port", "0", "--state-dir"])
        .arg(dir.join("glass-demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} demo", binary.display()))?;
    let stdout = child.stdout.take().context("the demo's output")?;
    let demo = Demo(child);
    let mut page = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(url) = line.strip_prefix("Open the page in a browser: ") {
            page = Some(url.to_owned());
        }
        if line.starts_with("mediamesh demo ready") {
            break;
        }
    }
    let page = page.context("the demo printed no page address")?;
    let (origin, token) = page.split_once("/#").context("the page address has no fragment")?;
    let mut out = Vec::new();
    for &kind in browsers {
        for protocol in protocols {
            // A fresh browser each time, as a person opening the page: Chromium's MSE latency
            // measured about 100 ms higher in a tab that had played WebRTC before.
            let browser = Browser::launch(kind);
            out.push(one(&browser, kind, origin, token, protocol, seconds, warmup)?);
        }
    }
    drop(demo);
    Ok(out)
}

/// One protocol in one browser.
fn one(
    browser: &Browser,
    kind: Kind,
    origin: &str,
    token: &str,
    protocol: &str,
    seconds: f64,
    warmup: f64,
) -> anyhow::Result<Glass> {
    {
        browser.goto(&format!("{origin}/?protocol={protocol}#{token}"));
        browser.wait_for(
            "cam1 to play",
            Duration::from_secs(30),
            "const v = document.querySelector('[data-stream=\"demo-edge/cam1\"] video'); return v && v.getVideoPlaybackQuality().totalVideoFrames > 0",
        );
        std::thread::sleep(Duration::from_secs_f64(warmup));
        let script = format!(
            "const v = document.querySelector('[data-stream=\"demo-edge/cam1\"] video');
             const c = document.createElement('canvas');
             const ms = []; let unreadable = 0; const end = performance.now() + {};
             const onFrame = (now, meta) => {{
               const l = MediameshStamp.latency(v, c, meta);
               if (l) ms.push(l.ms); else unreadable++;
               if (performance.now() < end) v.requestVideoFrameCallback(onFrame); else done({{ ms, unreadable }});
             }};
             v.requestVideoFrameCallback(onFrame);",
            seconds * 1000.0
        );
        let v = browser.eval_async(&script, Duration::from_secs_f64(seconds + 30.0));
        let mut ms: Vec<f64> = v["ms"].as_array().context("latencies")?.iter().filter_map(|x| x.as_f64()).collect();
        anyhow::ensure!(!ms.is_empty(), "{protocol}: no frame with a readable stamp");
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Ok(Glass {
            browser: match kind {
                Kind::Chromium => "chromium",
                Kind::Firefox => "firefox",
            },
            protocol: protocol.to_owned(),
            frames: ms.len(),
            p50_ms: pick(0.5),
            p95_ms: pick(0.95),
            min_ms: ms[0],
            max_ms: ms[ms.len() - 1],
            unreadable: v["unreadable"].as_u64().unwrap_or(0) as usize,
        })
    }
}
