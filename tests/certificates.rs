//! Certificates as a new user makes them with `mediamesh certs`, across two host names: a hub
//! certificate for a name other than localhost, edges that dial that name (through `serverName`,
//! with the address being 127.0.0.1), a second site added from the existing CA, and the messages
//! each side gives when a certificate does not fit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mediamesh_testkit::process::{MeshProcess, free_ports};

const BIN: &str = env!("CARGO_BIN_EXE_mediamesh");

fn certs(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).arg("certs").arg("--out").arg(dir).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn edge_yaml(dir: &Path, node: &str, server: &str, server_name: &str, certs: &str) -> PathBuf {
    let file = dir.join(format!("{node}.yaml"));
    let text = format!(
        "edgeDataStream:\n  server: \"{server}\"\n  serverName: {server_name}\n  nodeName: {node}\n  \
         tlsTunnelCAFile: certs/ca.pem\n  tlsTunnelCertFile: {certs}/edge-{node}.pem\n  \
         tlsTunnelPrivateKeyFile: {certs}/edge-{node}.key\n  reconnect: {{initial: 100ms, max: 500ms}}\n  streams:\n    cam1:\n      \
         testPattern: {{width: 320, height: 240, fps: 25, bitrateKbps: 300, gop: 25}}\n"
    );
    std::fs::write(&file, text).unwrap();
    file
}

async fn nodes(stream_port: u16) -> Vec<String> {
    let addr = format!("127.0.0.1:{stream_port}").parse().unwrap();
    let json = mediamesh_testkit::http::get_json(addr, "/api/v1/nodes").await;
    json["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()).collect()
}

/// Waits until `log()` contains `needle`; panics with the log after `timeout`.
async fn wait_log(what: &str, needle: &str, timeout: Duration, log: impl Fn() -> String) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = log();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}: no {needle:?} within {timeout:?} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_named_for_the_network_serves_two_sites_and_misfits_are_explained() {
    let dir =
        std::env::temp_dir().join(format!("mm-certs-{}-{}", std::process::id(), mediamesh_testkit::unix_micros()));
    let certs_dir = dir.join("certs");
    std::fs::create_dir_all(&dir).unwrap();

    // The first site: a CA, the hub's certificate for its real name, edge-1.
    let (ok, out) = certs(&certs_dir, &["--hub-name", "hub.example.test", "--node", "edge-1"]);
    assert!(ok, "{out}");
    assert!(out.contains("names: hub.example.test"), "{out}");
    let ca = std::fs::read(certs_dir.join("ca.pem")).unwrap();
    let hub_cert = std::fs::read(certs_dir.join("hub.pem")).unwrap();
    // A second site later: the same CA signs it; nothing else changes.
    let (ok, out) = certs(&certs_dir, &["--node", "edge-2"]);
    assert!(ok, "{out}");
    assert!(out.contains("existing, kept"), "{out}");
    assert_eq!(std::fs::read(certs_dir.join("ca.pem")).unwrap(), ca, "the CA is kept");
    assert_eq!(std::fs::read(certs_dir.join("hub.pem")).unwrap(), hub_cert, "the hub certificate is kept");
    // Asking for edge-1 again replaces nothing.
    let key_before = std::fs::read(certs_dir.join("edge-edge-1.key")).unwrap();
    let (ok, out) = certs(&certs_dir, &["--node", "edge-1"]);
    assert!(!ok, "{out}");
    assert!(out.contains("edge-edge-1.pem already exists; nothing was written"), "{out}");
    assert!(out.contains("--force"), "{out}");
    assert_eq!(std::fs::read(certs_dir.join("edge-edge-1.key")).unwrap(), key_before);
    // An edge we will give the wrong name to dial, and one from another CA.
    assert!(certs(&certs_dir, &["--node", "edge-3"]).0);
    assert!(certs(&dir.join("rogue"), &["--node", "edge-9"]).0);

    // Keys are private from the start; one made readable draws a warning naming it.
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "hub.key", "edge-edge-1.key", "edge-edge-2.key"] {
        let mode = std::fs::metadata(certs_dir.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let hub_key = certs_dir.join("hub.key");
    std::fs::set_permissions(&hub_key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let [tunnel, stream] = free_ports();
    let hub_file = dir.join("hub.yaml");
    // Relative paths: resolved against hub.yaml's folder.
    std::fs::write(
        &hub_file,
        format!(
            "cloudDataStream:\n  listenAddress: 127.0.0.1\n  tunnelPort: {tunnel}\n  streamPort: {stream}\n  \
             tlsTunnelCAFile: certs/ca.pem\n  tlsTunnelCertFile: certs/hub.pem\n  tlsTunnelPrivateKeyFile: certs/hub.key\n  \
             rtsp: {{enable: false}}\n"
        ),
    )
    .unwrap();
    let bin = Path::new(BIN);
    let (hub, _) =
        MeshProcess::spawn(&[], bin, &["hub", "-c", hub_file.to_str().unwrap()], &dir, "hub", Some("hub ready")).await;
    let warning = hub.log_text();
    let line = warning.lines().find(|l| l.contains("readable by other users")).unwrap_or_else(|| panic!("{warning}"));
    assert!(line.contains(&hub_key.display().to_string()) && line.contains("mode=644"), "{line}");
    let server = format!("127.0.0.1:{tunnel}");
    let mut edges = Vec::new();
    for node in ["edge-1", "edge-2"] {
        let file = edge_yaml(&dir, node, &server, "hub.example.test", "certs");
        let (edge, _) = MeshProcess::spawn(&[], bin, &["edge", "-c", file.to_str().unwrap()], &dir, node, None).await;
        edges.push(edge);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while nodes(stream).await != ["edge-1", "edge-2"] {
        assert!(Instant::now() < deadline, "both sites connect: {:?}\n{}", nodes(stream).await, edges[0].log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An edge that dials the hub by a name its certificate does not have.
    let file = edge_yaml(&dir, "edge-3", &server, "127.0.0.1", "certs");
    let (wrong_name, _) =
        MeshProcess::spawn(&[], bin, &["edge", "-c", file.to_str().unwrap()], &dir, "edge-3", None).await;
    let log = wait_log("edge-3", "is not accepted", Duration::from_secs(10), || wrong_name.log_text()).await;
    assert!(log.contains("it is for hub.example.test but 127.0.0.1 was dialled"), "{log}");
    assert!(log.contains("mediamesh certs --out certs --hub-name 127.0.0.1 --force"), "{log}");
    // An edge whose certificate another CA signed: the hub says who it refused.
    let file = edge_yaml(&dir, "edge-9", &server, "hub.example.test", "rogue");
    let (rogue, _) = MeshProcess::spawn(&[], bin, &["edge", "-c", file.to_str().unwrap()], &dir, "edge-9", None).await;
    let log = wait_log("edge-9", "refused this edge's certificate", Duration::from_secs(10), || rogue.log_text()).await;
    assert!(log.contains("it does not trust the CA that signed our certificate"), "{log}");
    let hub_log = wait_log("hub", "refused an edge certificate", Duration::from_secs(5), || hub.log_text()).await;
    let line = hub_log.lines().find(|l| l.contains("refused an edge certificate")).unwrap();
    assert!(line.contains("CN=edge-9") && line.contains("names=edge-9"), "{line}");
    assert!(line.contains("it is not signed by the configured CA"), "{line}");

    // No Rust Debug output in what anyone reads.
    for (name, text) in [("hub", hub.log_text()), ("edge-3", wrong_name.log_text()), ("edge-9", rogue.log_text())] {
        for debug in ["NotValidForName", "UnknownIssuer", "AlertReceived", "Context {", "Some("] {
            assert!(!text.contains(debug), "{name} log shows {debug}:\n{text}");
        }
    }
    assert_eq!(nodes(stream).await, ["edge-1", "edge-2"], "the misfits disturbed no one");
    for p in [wrong_name, rogue] {
        p.stop().await;
    }
    for e in edges {
        e.stop().await;
    }
    hub.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
