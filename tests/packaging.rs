//! What a packager relies on: `--version` names the commit, the example systemd units are
//! valid, and the hub tells systemd when it is ready, reloading and stopping (`Type=notify`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mediamesh_testkit::TestPki;
use mediamesh_testkit::process::{free_ports, hub_yaml};

const BIN: &str = env!("CARGO_BIN_EXE_mediamesh");

#[test]
fn version_names_the_commit() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let commit = text
        .strip_prefix(concat!("mediamesh ", env!("CARGO_PKG_VERSION"), " (commit "))
        .and_then(|r| r.strip_suffix(')'));
    let commit = commit.unwrap_or_else(|| panic!("{text}"));
    let head =
        Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output();
    match head {
        Ok(h) if h.status.success() => assert_eq!(commit, String::from_utf8_lossy(&h.stdout).trim()),
        _ => assert_eq!(commit, "unknown"),
    }
}

#[test]
fn the_systemd_units_verify() {
    mediamesh_testkit::require::program("systemd-analyze", "systemd");
    let dir = std::env::temp_dir().join(format!("mm-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd");
    let mut files = Vec::new();
    for name in ["mediamesh-hub.service", "mediamesh-edge.service"] {
        // Pointed at this build: verify checks that the programs exist.
        let text = std::fs::read_to_string(units.join(name)).unwrap().replace("/usr/local/bin/mediamesh", BIN);
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    let out = Command::new("systemd-analyze").arg("verify").args(&files).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !said.contains("mediamesh-"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_hub_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let pki = TestPki::new();
    let socket_path = pki.dir().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let file = pki.dir().join("hub.yaml");
    let [tunnel, stream] = free_ports();
    std::fs::write(&file, hub_yaml(&pki, "127.0.0.1", tunnel, stream, "")).unwrap();
    let mut hub = Command::new(BIN)
        .args(["hub", "-c"])
        .arg(&file)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1\nSTATUS=serving");
    let kill = |sig| mediamesh_testkit::signal(hub.id(), sig);
    kill(mediamesh_testkit::Signal::SIGHUP);
    assert!(next().starts_with("RELOADING=1"));
    assert_eq!(next(), "READY=1\nSTATUS=serving");
    kill(mediamesh_testkit::Signal::SIGTERM);
    assert!(next().starts_with("STOPPING=1"));
    assert!(hub.wait().unwrap().success());
}
