//! Camera passwords never reach a log line or an answer: an ffmpeg source and RTSP sources with
//! credentials, pointed at a closed port, watched, with `RUST_LOG=debug` on both processes; then
//! every log line, the REST API and `/metrics` are searched for the password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use mediamesh_hub::client::{ConnectOptions, ViewerClient, ViewerItem};
use mediamesh_testkit::TestPki;
use mediamesh_testkit::process::{MeshProcess, free_port, hub_yaml};

const BIN: &str = env!("CARGO_BIN_EXE_mediamesh");
/// A password with the characters that end a URL's parts.
const PASSWORD: &str = "S3cr/t@p:ss";
/// The same, percent-encoded, as it must be written inside a URL.
const ENCODED: &str = "S3cr%2Ft%40p%3Ass";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_any_log_line_or_answer() {
    mediamesh_testkit::require::ffmpeg();
    let pki = TestPki::new();
    let closed = free_port();
    let (tunnel, stream) = (free_port(), free_port());
    let hub_file = pki.dir().join("hub.yaml");
    std::fs::write(&hub_file, hub_yaml(&pki, "127.0.0.1", tunnel, stream, "  startTimeout: 3s\n")).unwrap();
    let f = pki.edge("edge-1");
    let edge_file = pki.dir().join("edge.yaml");
    std::fs::write(
        &edge_file,
        format!(
            "edgeDataStream:\n  server: \"127.0.0.1:{tunnel}\"\n  serverName: localhost\n  nodeName: edge-1\n  \
             tlsTunnelCAFile: {}\n  tlsTunnelCertFile: {}\n  tlsTunnelPrivateKeyFile: {}\n  streams:\n    \
             relayed:\n      ffmpeg:\n        input: [-rtsp_transport, tcp, -i, \"rtsp://admin:{PASSWORD}@127.0.0.1:{closed}/stream1\"]\n    \
             camera:\n      rtsp:\n        url: \"rtsp://127.0.0.1:{closed}/stream1\"\n        username: admin\n        password: \"{PASSWORD}\"\n    \
             encoded:\n      rtsp:\n        url: \"rtsp://admin:{ENCODED}@127.0.0.1:{closed}/stream1\"\n",
            f.ca.display(),
            f.cert.display(),
            f.key.display()
        ),
    )
    .unwrap();
    let bin = Path::new(BIN);
    let debug = [("RUST_LOG", "debug")];
    let hub_args = ["hub", "-c", hub_file.to_str().unwrap()];
    let (hub, _) = MeshProcess::spawn_with_env(&[], bin, &hub_args, pki.dir(), "hub", Some("hub ready"), &debug).await;
    let edge_args = ["edge", "-c", edge_file.to_str().unwrap()];
    let (edge, _) = MeshProcess::spawn_with_env(&[], bin, &edge_args, pki.dir(), "edge", None, &debug).await;

    // Watch each stream until it ends (its source cannot start).
    for name in ["relayed", "camera", "encoded"] {
        let url = format!("ws://127.0.0.1:{stream}/api/v1/nodes/edge-1/streams/{name}/ws");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut ended = false;
        while !ended {
            assert!(Instant::now() < deadline, "{name} never ended");
            if let Ok(mut v) = ViewerClient::connect(&url, &ConnectOptions::default()).await {
                while let Ok(Some(item)) = v.next().await {
                    if let ViewerItem::End(reason) = item {
                        assert!(!reason.contains(PASSWORD) && !reason.contains(ENCODED), "{reason}");
                        ended = true;
                        break;
                    }
                }
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let addr = format!("127.0.0.1:{stream}").parse().unwrap();
    let mut answers = String::new();
    for path in ["/api/v1/nodes", "/api/v1/streams", "/metrics"] {
        let (status, body) = mediamesh_testkit::http::get(addr, path).await;
        assert_eq!(status, 200, "{path}");
        answers.push_str(&body);
    }
    assert!(answers.contains("RTSP camera at 127.0.0.1"), "a camera is described by its host: {answers}");
    let edge_log = edge.log_text();
    assert!(edge_log.contains("ffmpeg: "), "ffmpeg's own messages were relayed:\n{edge_log}");
    assert!(hub.log_text().contains("DEBUG"), "the hub logged at debug:\n{}", hub.log_text());
    for (what, text) in [("hub log", hub.log_text()), ("edge log", edge_log), ("answers", answers)] {
        for secret in [PASSWORD, ENCODED, "S3cr"] {
            let hits: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
            assert!(hits.is_empty(), "{what} shows {secret:?}:\n{}", hits.join("\n"));
        }
    }
    edge.stop().await;
    hub.stop().await;
}
