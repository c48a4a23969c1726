//! SIGHUP, through the real binaries: the hub takes a rotated certificate for new handshakes and
//! new limits; the edge takes a changed catalog (a stream added is offered at once, one removed
//! ends with the reason, one unchanged keeps running without a break); a configuration that does
//! not validate is rejected and the running one stays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mediamesh_hub::client::{ConnectOptions, ViewerClient, ViewerItem};
use mediamesh_testkit::process::{MeshProcess, free_ports};
use mediamesh_tls::TlsFiles;
use rustls::pki_types::{CertificateDer, ServerName};

const BIN: &str = env!("CARGO_BIN_EXE_mediamesh");

fn certs(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new(BIN).arg("certs").arg("--out").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn hup(p: &MeshProcess) {
    mediamesh_testkit::signal(p.pid().unwrap(), mediamesh_testkit::Signal::SIGHUP);
}

async fn wait_log(p: &MeshProcess, needle: &str, after: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = p.log_text();
        if text[after.min(text.len())..].contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The certificate the hub's tunnel port presents now.
async fn presented(tunnel: u16, edge: &TlsFiles) -> Vec<u8> {
    let cfg = mediamesh_tls::tunnel_client_config(edge).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tunnel)).await.unwrap();
    let tls =
        tokio_rustls::TlsConnector::from(cfg).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn file_cert(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

fn edge_yaml(tunnel: u16, streams: &[&str]) -> String {
    let mut s = format!(
        "edgeDataStream:\n  server: \"127.0.0.1:{tunnel}\"\n  serverName: localhost\n  nodeName: edge-1\n  \
         tlsTunnelCAFile: certs/ca.pem\n  tlsTunnelCertFile: certs/edge-edge-1.pem\n  tlsTunnelPrivateKeyFile: certs/edge-edge-1.key\n  streams:\n"
    );
    for name in streams {
        s.push_str(&format!(
            "    {name}:\n      testPattern: {{width: 320, height: 240, fps: 25, bitrateKbps: 300, gop: 25}}\n"
        ));
    }
    s
}

/// Watches a stream in the background, counting frames and checking their counters follow on.
struct Watch {
    frames: Arc<AtomicU64>,
    gaps: Arc<AtomicU64>,
    end: tokio::task::JoinHandle<Option<String>>,
}

async fn watch(stream_port: u16, name: &str) -> Result<Watch, mediamesh_hub::client::ClientError> {
    let url = format!("ws://127.0.0.1:{stream_port}/api/v1/nodes/edge-1/streams/{name}/ws");
    let mut v = ViewerClient::connect(&url, &ConnectOptions::default()).await?;
    let (frames, gaps) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (f, g) = (frames.clone(), gaps.clone());
    let end = tokio::spawn(async move {
        let mut last: Option<u64> = None;
        while let Ok(Some(item)) = v.next().await {
            match item {
                ViewerItem::Frame(frame) => {
                    let c = mediamesh_media::h264::sei::read_stamp(&frame.payload).unwrap().counter;
                    if last.is_some_and(|l| c != l + 1) {
                        g.fetch_add(1, Ordering::SeqCst);
                    }
                    last = Some(c);
                    f.fetch_add(1, Ordering::SeqCst);
                }
                ViewerItem::End(reason) => return Some(reason),
                _ => {}
            }
        }
        None
    });
    Ok(Watch { frames, gaps, end })
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_limits_and_the_catalog() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("mm-reload-{}-{}", std::process::id(), mediamesh_testkit::unix_micros()));
    std::fs::create_dir_all(&dir).unwrap();
    certs(&dir.join("certs"), &["--hub-name", "localhost", "--node", "edge-1"]);
    let edge_files = TlsFiles {
        ca: dir.join("certs/ca.pem"),
        cert: dir.join("certs/edge-edge-1.pem"),
        key: dir.join("certs/edge-edge-1.key"),
    };
    let [tunnel, stream] = free_ports();
    let hub_yaml = |linger: &str| {
        format!(
            "cloudDataStream:\n  listenAddress: 127.0.0.1\n  tunnelPort: {tunnel}\n  streamPort: {stream}\n  \
             tlsTunnelCAFile: certs/ca.pem\n  tlsTunnelCertFile: certs/hub.pem\n  tlsTunnelPrivateKeyFile: certs/hub.key\n  \
             linger: {linger}\n  rtsp: {{enable: false}}\n"
        )
    };
    let hub_file = dir.join("hub.yaml");
    std::fs::write(&hub_file, hub_yaml("1s")).unwrap();
    let edge_file = dir.join("edge.yaml");
    std::fs::write(&edge_file, edge_yaml(tunnel, &["cam1"])).unwrap();
    let bin = Path::new(BIN);
    let (hub, _) =
        MeshProcess::spawn(&[], bin, &["hub", "-c", hub_file.to_str().unwrap()], &dir, "hub", Some("hub ready")).await;
    let (edge, ready) =
        MeshProcess::spawn(&[], bin, &["edge", "-c", edge_file.to_str().unwrap()], &dir, "edge", Some("edge ready"))
            .await;
    assert!(ready.contains("node edge-1"), "{ready}");
    let mut cam1 = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while cam1.is_none() {
        assert!(Instant::now() < deadline, "no video");
        if let Ok(w) = watch(stream, "cam1").await {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if w.frames.load(Ordering::SeqCst) > 0 {
                cam1 = Some(w);
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let cam1 = cam1.unwrap();

    // The hub's certificate is rotated: new handshakes get the new one after SIGHUP.
    let before = presented(tunnel, &edge_files).await;
    assert_eq!(before, file_cert(&dir.join("certs/hub.pem")));
    certs(&dir.join("certs"), &["--hub-name", "localhost", "--force"]);
    let rotated = file_cert(&dir.join("certs/hub.pem"));
    assert_ne!(before, rotated);
    std::fs::write(&hub_file, hub_yaml("3s")).unwrap();
    let mark = hub.log_text().len();
    hup(&hub);
    let log = wait_log(&hub, "configuration reloaded", mark).await;
    assert!(log[mark..].contains("changed=linger"), "{}", &log[mark..]);
    assert_eq!(presented(tunnel, &edge_files).await, rotated, "new handshakes use the rotated certificate");

    // A configuration that does not validate is rejected; the hub keeps serving.
    std::fs::write(&hub_file, hub_yaml("3s").replace("linger: 3s", "lingr: 3s")).unwrap();
    let mark = hub.log_text().len();
    hup(&hub);
    let log = wait_log(&hub, "configuration reload rejected", mark).await;
    assert!(log[mark..].contains("did you mean `linger`"), "{}", &log[mark..]);

    // The edge's catalog gains cam2: offered at once, watchable; cam1 untouched.
    std::fs::write(&edge_file, edge_yaml(tunnel, &["cam1", "cam2"])).unwrap();
    let mark = edge.log_text().len();
    hup(&edge);
    wait_log(&edge, "configuration reloaded", mark).await;
    let addr = format!("127.0.0.1:{stream}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let nodes = mediamesh_testkit::http::get_json(addr, "/api/v1/nodes").await;
        if nodes.to_string().contains("\"cam2\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the hub never heard of cam2: {nodes}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cam2 = watch(stream, "cam2").await.unwrap();
    until("cam2's frames", || cam2.frames.load(Ordering::SeqCst) >= 10).await;

    // cam2 is removed again while watched: its viewer hears why; cam1 still untouched.
    std::fs::write(&edge_file, edge_yaml(tunnel, &["cam1"])).unwrap();
    hup(&edge);
    let reason = tokio::time::timeout(Duration::from_secs(10), cam2.end).await.unwrap().unwrap();
    assert!(reason.unwrap().contains("removed from the edge's configuration"));
    let seen = cam1.frames.load(Ordering::SeqCst);
    until("cam1 to go on", || cam1.frames.load(Ordering::SeqCst) >= seen + 25).await;
    assert_eq!(cam1.gaps.load(Ordering::SeqCst), 0, "cam1 ran through every reload without a break");
    let streams = mediamesh_testkit::http::get_json(addr, "/api/v1/streams").await;
    let cam1_json = streams["streams"].as_array().unwrap().iter().find(|s| s["stream"] == "cam1").unwrap().clone();
    assert_eq!(cam1_json["tunnelConnects"], 1, "{cam1_json}");
    assert!(hub.log_text().lines().all(|l| !l.contains("panicked")));
    edge.stop().await;
    hub.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
