//! Network namespaces for tests: a hub namespace and an edge namespace joined by a link that
//! can be cut, capped (tc tbf) and made lossy (nftables), through `scripts/netlab`. Needs root;
//! [`NetLab::unavailable`] says why a machine cannot run these tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A lab; removed on drop.
#[derive(Debug)]
pub struct NetLab {
    n: u32,
    script: PathBuf,
}

impl NetLab {
    /// Why netns tests cannot run here, if they cannot: they need root. Being root, a missing
    /// tool fails the test with its package ([`crate::require`]).
    pub fn unavailable() -> Option<String> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1));
        if uid != Some("0") {
            return Some("not root".into());
        }
        for (tool, package) in [("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")] {
            crate::require::program(tool, package);
        }
        None
    }

    /// Creates a lab with a free number, using `script` (`scripts/netlab`).
    pub fn up(script: &Path) -> Self {
        let start = std::process::id() % 150;
        for i in 0..50 {
            let n = (start + i) % 200;
            let out = Command::new(script).args(["-n", &n.to_string(), "up"]).output().expect("run scripts/netlab");
            if out.status.success() {
                return Self { n, script: script.to_owned() };
            }
            // Taken by a concurrent test, or a leftover: clean what this attempt made and go on.
            if !String::from_utf8_lossy(&out.stderr).contains("File exists") {
                let _ = Command::new(script).args(["-n", &n.to_string(), "down"]).output();
            }
        }
        panic!("no free netlab number");
    }

    /// The hub's address on the edge link.
    pub fn hub_ip(&self) -> String {
        format!("10.77.{}.1", self.n)
    }

    /// The hub's address on the viewer link (reachable from the test's namespace).
    pub fn hub_view_ip(&self) -> String {
        format!("10.78.{}.2", self.n)
    }

    /// The command prefix that runs a program in the hub's (`"hub"`) or the edge's (`"edge"`)
    /// namespace.
    pub fn exec_prefix(&self, which: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), format!("mmlab{}{}", self.n, &which[..1])]
    }

    fn run(&self, args: &[&str]) {
        let n = self.n.to_string();
        let mut full = vec!["-n", n.as_str()];
        full.extend_from_slice(args);
        let out = Command::new(&self.script).args(&full).output().expect("run scripts/netlab");
        assert!(out.status.success(), "netlab {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Cuts the edge link (silently: the edge's packets vanish, nothing is reset).
    pub fn cut(&self) {
        self.run(&["cut"]);
    }

    /// Brings the edge link back.
    pub fn restore(&self) {
        self.run(&["restore"]);
    }

    /// Caps the edge's uplink (`"1mbit"`), or lifts the cap (`"off"`).
    pub fn rate(&self, rate: &str) {
        self.run(&["rate", rate]);
    }

    /// Drops `percent` % of the edge link's packets both ways (0 clears).
    pub fn loss(&self, percent: u32) {
        self.run(&["loss", &percent.to_string()]);
    }

    /// Drops `percent` % of the UDP datagrams on the viewer link both ways (0 clears).
    pub fn viewer_loss(&self, percent: u32) {
        self.run(&["viewloss", &percent.to_string()]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        let _ = Command::new(&self.script).args(["-n", &self.n.to_string(), "down"]).output();
    }
}
