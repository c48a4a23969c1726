//! `mediamesh-bench --perf`: where the server's time goes during the measured window.
//!
//! `perf record` (Debian's `linux-perf`) samples the server's processes while the viewers are
//! measured; afterwards `perf report` writes the self-time profile next to the run's other files
//! (`perf.txt`) and the shares spent in the kernel, and in loopback's receive path, go into the
//! results. Sampling costs the server a little CPU, so `--perf` runs explain the table rather
//! than fill it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use serde::Serialize;
use tokio::process::{Child, Command};

/// Samples per second and CPU.
const FREQUENCY: &str = "999";

/// A running `perf record`.
pub struct Recording {
    child: Child,
    data: PathBuf,
    dir: PathBuf,
}

/// What a profile says, in brief.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Where the full report is.
    pub report: PathBuf,
    /// Percent of samples in the kernel (system calls, TCP, copies, scheduling).
    pub kernel_percent: f64,
    /// Percent of samples in the network receive path (`net_rx_action` and what it calls). On
    /// loopback a write is delivered to the reader's socket within the writer's system call, so
    /// this is mostly the viewers' half of the server's traffic (TCP receive, waking the
    /// reader), which on a real network runs on the viewers' machines.
    pub receive_percent: f64,
    /// The heaviest symbols by self time: (percent, where, symbol).
    pub top: Vec<(f64, String, String)>,
}

/// Starts sampling `pids` for `seconds`.
pub fn start(pids: &[u32], dir: &Path, seconds: f64) -> anyhow::Result<Recording> {
    let data = dir.join("perf.data");
    let list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let child = Command::new("perf")
        .args(["record", "-q", "-F", FREQUENCY, "-g", "-p", &list, "-o"])
        .arg(&data)
        .args(["--", "sleep", &format!("{seconds:.1}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("perf-record.log"))?)
        .kill_on_drop(true)
        .spawn()
        .context("starting `perf record` (apt-get install linux-perf)")?;
    Ok(Recording { child, data, dir: dir.to_owned() })
}

impl Recording {
    /// Waits for the recording to end and summarises it.
    pub async fn finish(mut self) -> anyhow::Result<Summary> {
        let status = self.child.wait().await?;
        anyhow::ensure!(status.success(), "perf record failed; see {}", self.dir.join("perf-record.log").display());
        let report = self.dir.join("perf.txt");
        let full = self.report(&["--no-children", "--sort", "dso,sym", "--percent-limit", "0.3"]).await?;
        std::fs::write(&report, &full)?;
        let by_dso = self.report(&["--no-children", "--sort", "dso"]).await?;
        let kernel_percent = rows(&by_dso).filter(|(_, r)| r.contains("[kernel")).map(|(p, _)| p).sum();
        let with_children = self.report(&["--children", "--sort", "sym"]).await?;
        let receive_percent = children_of(&with_children, RECEIVE_PATH).unwrap_or(0.0);
        let top = rows(&full)
            .take(12)
            .map(|(p, rest)| {
                let mut parts = rest.split_whitespace();
                let dso = parts.next().unwrap_or_default().to_owned();
                let sym = parts.skip(1).collect::<Vec<_>>().join(" ");
                (p, dso, sym)
            })
            .collect();
        Ok(Summary { report, kernel_percent, receive_percent, top })
    }

    /// `perf report` without call chains; `args` say self time (`--no-children`) or time
    /// including callees (`--children`), and the sort.
    async fn report(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("perf")
            .args(["report", "--stdio", "-g", "none", "-i"])
            .arg(&self.data)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running `perf report`")?;
        anyhow::ensure!(out.status.success(), "perf report failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The softirq that runs the receive path: on loopback, inside the sender's system call.
const RECEIVE_PATH: &str = "net_rx_action";

/// The children (inclusive) percentage of `symbol` in a `perf report --children --sort sym`
/// listing, whose rows read `  23.91%  0.16%  [k] net_rx_action`.
fn children_of(report: &str, symbol: &str) -> Option<f64> {
    rows(report).find(|(_, rest)| rest.split_whitespace().last() == Some(symbol)).map(|(p, _)| p)
}

/// The `  12.34%  rest…` rows of a `perf report --stdio` listing.
fn rows(report: &str) -> impl Iterator<Item = (f64, &str)> {
    report.lines().filter(|l| !l.trim_start().starts_with('#')).filter_map(|l| {
        let (pct, rest) = l.trim_start().split_once('%')?;
        Some((pct.parse::<f64>().ok()?, rest.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_rows_are_read() {
        let text = "# Overhead  Shared Object\n#\n    61.20%  [kernel.kallsyms]\n    30.00%  mediamesh\n\n";
        let r: Vec<_> = rows(text).collect();
        assert_eq!(r, vec![(61.2, "[kernel.kallsyms]"), (30.0, "mediamesh")]);
    }

    #[test]
    fn inclusive_share_of_a_symbol_is_read() {
        let text = concat!(
            "# Children  Self  Symbol\n",
            "    25.28%  0.55%  [k] handle_softirqs\n",
            "    23.91%  0.16%  [k] net_rx_action\n",
            "     3.10%  3.01%  [.] tokio::sync::notify::x\n",
        );
        assert_eq!(children_of(text, "net_rx_action"), Some(23.91));
        assert_eq!(children_of(text, "process_backlog"), None);
    }
}
