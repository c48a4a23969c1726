//! A throw-away PKI in a temporary directory.

use std::path::{Path, PathBuf};

use mediamesh_tls::TlsFiles;
use mediamesh_tls::dev::write_pki;

/// A CA with a hub certificate and edge certificates for `edge-1`, `edge-2` and `edge-3`, plus
/// a second, untrusted CA with its own `edge-1` certificate. Removed on drop.
#[derive(Debug)]
pub struct TestPki {
    dir: PathBuf,
    /// The trusted PKI.
    pub main: mediamesh_tls::dev::DevPki,
    /// A PKI the hub does not trust.
    pub rogue: mediamesh_tls::dev::DevPki,
}

impl TestPki {
    /// Generates both PKIs.
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mediamesh-test-{}-{n}", std::process::id()));
        let hub_names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let nodes = ["edge-1", "edge-2", "edge-3"].map(String::from);
        let main = write_pki(&dir.join("main"), &hub_names, &nodes).expect("test PKI");
        let rogue = write_pki(&dir.join("rogue"), &hub_names, &nodes[..1]).expect("rogue PKI");
        Self { dir, main, rogue }
    }

    /// The trusted identity of `node`.
    pub fn edge(&self, node: &str) -> &TlsFiles {
        &self.main.edges.iter().find(|(n, _)| n == node).expect("known test node").1
    }

    /// The directory holding everything.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestPki {
    /// Removes the directory (certificates, configurations, the processes' logs), unless
    /// `MEDIAMESH_KEEP_TEST_DIR` is set, for reading the logs of a failed test.
    fn drop(&mut self) {
        if std::env::var_os("MEDIAMESH_KEEP_TEST_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
