//! Camera passwords never reach a log line or an answer: an ffmpeg source and RTSP sources with
//! credentials, pointed at a closed port, watched, with `RUST_LOG=debug` on both processes; then
//! every log line, the REST API and `/metrics` are searched for the password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use mediamesh_hub::client::{ConnectOptions, ViewerClient, ViewerItem};
use mediamesh_testkit::TestPki;
use mediamesh_testkit::process::{MeshProcess, free_port, free_ports, hub_yaml};

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
    let [tunnel, stream] = free_ports();
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

/// Viewer credentials never reach a log line, an answer or a metric: a hub with users and a
/// token key, at `RUST_LOG=debug`, taking right and wrong passwords and tokens in headers and
/// in URLs over HTTP, WebSocket and RTSP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_viewer_credential_in_any_log_line_answer_or_metric() {
    use mediamesh_auth::{Permission, Secret};
    mediamesh_testkit::require::ffmpeg();
    let pki = TestPki::new();
    let [tunnel, stream] = free_ports();
    let (minter, public_pem, private_pem) = mediamesh_auth::jwt::ed25519_pair().unwrap();
    let key_file = pki.dir().join("jwt.pub.pem");
    std::fs::write(&key_file, &public_pem).unwrap();
    let hash = mediamesh_auth::password::hash(&Secret::new(PASSWORD)).unwrap();
    let ha1 = mediamesh_auth::digest::ha1("alice", PASSWORD);
    let auth = format!(
        "  auth:\n    users:\n      - user: alice\n        password: \"{}\"\n        digest: \"{ha1}\"\n        \
         permissions: [read, api, metrics]\n    jwt: {{keyFile: {}, algorithms: [EdDSA]}}\n",
        hash.as_str(),
        key_file.display()
    );
    let hub_file = pki.dir().join("hub.yaml");
    std::fs::write(&hub_file, hub_yaml(&pki, "127.0.0.1", tunnel, stream, &auth)).unwrap();
    let edge_file = pki.dir().join("edge.yaml");
    std::fs::write(
        &edge_file,
        mediamesh_testkit::process::edge_yaml(&pki, "edge-1", &format!("127.0.0.1:{tunnel}"), ""),
    )
    .unwrap();
    let bin = Path::new(BIN);
    let debug = [("RUST_LOG", "debug")];
    let hub_args = ["hub", "-c", hub_file.to_str().unwrap()];
    let (hub, _) = MeshProcess::spawn_with_env(&[], bin, &hub_args, pki.dir(), "hub", Some("hub ready"), &debug).await;
    let edge_args = ["edge", "-c", edge_file.to_str().unwrap()];
    let (edge, _) = MeshProcess::spawn_with_env(&[], bin, &edge_args, pki.dir(), "edge", None, &debug).await;

    let grants: Vec<Permission> = ["read", "api"].iter().map(|g| g.parse().unwrap()).collect();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let token = minter.mint("tester", &grants, exp, None, None, "mediamesh_permissions").unwrap();
    let expired = minter.mint("tester", &grants, exp - 7200, None, None, "mediamesh_permissions").unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{stream}").parse().unwrap();
    let ws = format!("ws://{addr}/api/v1/nodes/edge-1/streams/cam1/ws");
    // Watch with the token in the header and in the query (waiting for the edge to connect).
    let deadline = Instant::now() + Duration::from_secs(20);
    for url in [ws.clone(), format!("{ws}?token={token}")] {
        let opts =
            ConnectOptions { token: (!url.contains('?')).then(|| Secret::new(token.as_str())), ..Default::default() };
        let mut v = loop {
            match ViewerClient::connect(&url, &opts).await {
                Ok(v) => break v,
                Err(e) => assert!(Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        mediamesh_testkit::read_frames(&mut v, 3).await;
    }
    let opts = ConnectOptions { token: Some(Secret::new(expired.as_str())), ..Default::default() };
    assert!(ViewerClient::connect(&ws, &opts).await.is_err());
    let basic = |user: &str, pw: &str| {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
    };
    let mut answers = String::new();
    for (path, auth) in [
        ("/api/v1/nodes", basic("alice", PASSWORD)),
        ("/api/v1/streams", format!("Bearer {token}")),
        ("/api/v1/streams", basic("alice", &format!("{PASSWORD}x"))),
        ("/api/v1/streams", format!("Bearer {expired}")),
        ("/metrics", basic("alice", PASSWORD)),
    ] {
        let a = mediamesh_testkit::http::request(addr, "GET", path, &[("Authorization", &auth)]).await;
        answers.push_str(&format!("{} {:?}\n{}\n", a.status, a.headers, a.body));
    }
    assert!(answers.contains("mediamesh_auth_denials_total"), "the metrics were read: {answers}");
    let rtsp = format!("rtsp://127.0.0.1:{}/edge-1/cam1", hub_rtsp_port(&hub.log_text()));
    // (ffprobe's own messages repeat the URL it was given, so they are not searched.)
    for (url, plays) in [
        (format!("{rtsp}?token={token}"), true),
        (format!("rtsp://alice:{ENCODED}@{}", &rtsp["rtsp://".len()..]), true),
        (format!("rtsp://alice:wrong{ENCODED}@{}", &rtsp["rtsp://".len()..]), false),
    ] {
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-rtsp_transport", "tcp", &url])
            .output()
            .unwrap();
        assert_eq!(out.status.success(), plays, "{}", String::from_utf8_lossy(&out.stderr));
    }

    let hub_log = hub.log_text();
    assert!(hub_log.contains("DEBUG"), "the hub logged at debug");
    let signature = token.rsplit('.').next().unwrap().to_owned();
    let key_body: String = private_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let secrets = [PASSWORD, ENCODED, &token, &signature, &expired, &key_body, hash.as_str(), &ha1];
    for (what, text) in [("hub log", hub_log), ("edge log", edge.log_text()), ("answers", answers)] {
        for secret in secrets {
            let hits: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
            assert!(hits.is_empty(), "{what} shows a secret:\n{}", hits.join("\n"));
        }
    }
    edge.stop().await;
    hub.stop().await;
}

/// The RTSP port from the hub's `hub listening` line (`rtsp=127.0.0.1:PORT`).
fn hub_rtsp_port(log: &str) -> u16 {
    let line = log.lines().find(|l| l.contains("hub listening")).expect("a hub listening line");
    let at = line.find("rtsp=").expect("rtsp= in the listening line") + "rtsp=".len();
    let addr: std::net::SocketAddr = line[at..].split_whitespace().next().unwrap().parse().unwrap();
    addr.port()
}
