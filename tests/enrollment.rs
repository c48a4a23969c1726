//! Edge enrollment and revocation through the real binary, as an operator runs them:
//! `mediamesh token create` on the hub's side, `mediamesh edge --join` at the site, renewal of
//! the short-lived certificate, `mediamesh node revoke` and the REST call, and a hub restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mediamesh_hub::client::{ConnectOptions, ViewerClient, ViewerItem};
use mediamesh_testkit::TestPki;
use mediamesh_testkit::process::{MeshProcess, free_ports, hub_yaml};

const BIN: &str = env!("CARGO_BIN_EXE_mediamesh");

/// A hub with enrollment (certificates live `ttl` seconds) and its ports.
struct Hub {
    pki: TestPki,
    file: PathBuf,
    tunnel: u16,
    stream: u16,
    process: Option<MeshProcess>,
}

impl Hub {
    async fn start(ttl: u32) -> Self {
        let pki = TestPki::new();
        let [tunnel, stream] = free_ports();
        let ca_key = pki.main.ca_cert.with_file_name("ca.key");
        let extra = format!(
            "  stateDir: {}\n  enrollment: {{caKeyFile: {}, certificateTtl: {ttl}}}\n  gracePeriod: 2\n",
            pki.dir().join("state").display(),
            ca_key.display()
        );
        let file = pki.dir().join("hub.yaml");
        std::fs::write(&file, hub_yaml(&pki, "127.0.0.1", tunnel, stream, &extra)).unwrap();
        let mut hub = Self { pki, file, tunnel, stream, process: None };
        hub.run().await;
        hub
    }

    async fn run(&mut self) {
        let args = ["hub", "-c", self.file.to_str().unwrap()];
        let (p, _) = MeshProcess::spawn(&[], Path::new(BIN), &args, self.pki.dir(), "hub", Some("hub ready")).await;
        self.process = Some(p);
    }

    async fn restart(&mut self) {
        self.process.take().unwrap().stop().await;
        self.run().await;
    }

    fn log(&self) -> String {
        self.process.as_ref().unwrap().log_text()
    }

    /// `mediamesh token create` for `node`: the token, or the error.
    fn token(&self, node: &str, ttl: &str) -> String {
        let out = Command::new(BIN)
            .args(["token", "create", "-c", self.file.to_str().unwrap(), "--node", node, "--ttl", ttl])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn ws(&self, node: &str) -> String {
        format!("ws://127.0.0.1:{}/api/v1/nodes/{node}/streams/cam1/ws", self.stream)
    }
}

/// A site folder with an `edge.yaml` for `node` whose certificate files do not exist yet.
fn site(hub: &Hub, name: &str, node: &str) -> PathBuf {
    let dir = hub.pki.dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("edge.yaml"),
        format!(
            "edgeDataStream:\n  server: \"127.0.0.1:{}\"\n  serverName: localhost\n  nodeName: {node}\n  \
             tlsTunnelCAFile: tls/ca.pem\n  tlsTunnelCertFile: tls/edge.pem\n  tlsTunnelPrivateKeyFile: tls/edge.key\n  \
             streams:\n    cam1:\n      testPattern: {{width: 320, height: 240, fps: 25, bitrateKbps: 300, gop: 25}}\n",
            hub.tunnel
        ),
    )
    .unwrap();
    dir
}

/// `mediamesh edge --join` as a process that keeps running as the edge.
async fn join(hub: &Hub, site: &Path, token: &str) -> MeshProcess {
    let config = site.join("edge.yaml");
    let addr = format!("127.0.0.1:{}", hub.tunnel);
    let args = ["edge", "-c", config.to_str().unwrap(), "--join", &addr];
    let env = [("MEDIAMESH_JOIN_TOKEN", token)];
    let (p, _) = MeshProcess::spawn_with_env(&[], Path::new(BIN), &args, site, "edge", Some("edge ready"), &env).await;
    p
}

/// `mediamesh edge --join` expected to fail: its stderr.
fn join_fails(hub: &Hub, site: &Path, token: &str) -> String {
    let out = Command::new(BIN)
        .args(["edge", "-c", site.join("edge.yaml").to_str().unwrap(), "--join", &format!("127.0.0.1:{}", hub.tunnel)])
        .env("MEDIAMESH_JOIN_TOKEN", token)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the join succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Connects a viewer to `url` (retrying while the node connects) and reads `n` frames.
async fn watch(url: &str, n: usize) -> ViewerClient {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut v = loop {
        match ViewerClient::connect(url, &ConnectOptions::default()).await {
            Ok(v) => break v,
            Err(e) => assert!(Instant::now() < deadline, "no viewer: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    mediamesh_testkit::read_frames(&mut v, n).await;
    v
}

fn not_after(path: &Path) -> std::time::SystemTime {
    let certs = mediamesh_tls::load_certs(path).unwrap();
    mediamesh_tls::enroll::validity(&certs[0]).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_enrolls_once_and_only_before_it_expires_and_the_certificate_is_renewed() {
    let mut hub = Hub::start(12).await;
    let token = hub.token("edge-7", "10m");
    let a = site(&hub, "site-a", "edge-7");
    let edge = join(&hub, &a, &token).await;
    let key_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(a.join("tls/edge.key")).unwrap().permissions());
    assert_eq!(key_mode & 0o777, 0o600, "the key is the edge's alone");
    drop(watch(&hub.ws("edge-7"), 10).await);

    // Once only.
    let b = site(&hub, "site-b", "edge-7");
    let err = join_fails(&hub, &b, &token);
    assert!(err.contains("used already"), "{err}");
    assert!(!b.join("tls/edge.pem").exists(), "nothing written for a refused join");
    // Only before it expires.
    let late = hub.token("edge-8", "1s");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = join_fails(&hub, &site(&hub, "site-c", "edge-8"), &late);
    assert!(err.contains("expired"), "{err}");
    // A token for another hub (its CA fingerprint differs): the edge refuses that hub.
    let mut forged: Vec<String> = hub.token("edge-8", "10m").split('.').map(str::to_owned).collect();
    forged[3] = "0".repeat(64);
    let err = join_fails(&hub, &site(&hub, "site-d", "edge-8"), &forged.join("."));
    assert!(err.contains("fingerprint"), "{err}");
    // A token whose node differs from the configuration's: refused, nothing written.
    let e = site(&hub, "site-e", "edge-9");
    let err = join_fails(&hub, &e, &hub.token("edge-8", "10m"));
    assert!(err.contains("the token is for node \"edge-8\""), "{err}");
    assert!(!e.join("tls/edge.pem").exists());

    // The 12 s certificate is renewed after 8 s, over mutual TLS with the current one.
    let first = not_after(&a.join("tls/edge.pem"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while not_after(&a.join("tls/edge.pem")) == first {
        assert!(Instant::now() < deadline, "not renewed:\n{}", edge.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(edge.log_text().contains("certificate renewed"));
    // After the first certificate has expired, a hub restart makes the edge dial again: with
    // the renewed certificate it gets back in.
    let wait = first.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_secs(1)).await;
    hub.restart().await;
    drop(watch(&hub.ws("edge-7"), 10).await);
    edge.stop().await;
    hub.process.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_cut_at_once_and_stays_out_also_after_a_restart() {
    let mut hub = Hub::start(3600).await;
    let a = site(&hub, "site-a", "edge-7");
    let edge = join(&hub, &a, &hub.token("edge-7", "10m")).await;
    let mut v = watch(&hub.ws("edge-7"), 10).await;

    // From the command line: the hub notices within a second and ends the viewer's stream.
    let revoked = Instant::now();
    let out = Command::new(BIN).args(["node", "revoke", "-c", hub.file.to_str().unwrap(), "edge-7"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(5), v.next()).await {
            Ok(Ok(Some(ViewerItem::End(r)))) => break r,
            Ok(Ok(Some(_))) => {}
            other => panic!("no end after the revocation: {other:?}"),
        }
    };
    let cut = revoked.elapsed();
    println!("revoked node cut after {cut:?}: {reason}");
    assert!(reason.contains("revoked"), "{reason}");
    assert!(cut < Duration::from_secs(2), "cut after {cut:?}");
    // The edge cannot come back, also after a hub restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    hub.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let nodes =
        mediamesh_testkit::http::get_json(format!("127.0.0.1:{}", hub.stream).parse().unwrap(), "/api/v1/nodes").await;
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(0), "{nodes}");
    assert!(hub.log().contains("node \\\"edge-7\\\" is revoked") || hub.log().contains("is revoked"), "{}", hub.log());
    // It cannot renew either.
    assert!(!edge.log_text().contains("certificate renewed"));
    edge.stop().await;

    // Through the REST API (admin; this hub is on loopback and open): edge-8 is cut too.
    let b = site(&hub, "site-b", "edge-8");
    let edge8 = join(&hub, &b, &hub.token("edge-8", "10m")).await;
    let mut v = watch(&hub.ws("edge-8"), 5).await;
    let addr = format!("127.0.0.1:{}", hub.stream).parse().unwrap();
    let a = mediamesh_testkit::http::request(addr, "POST", "/api/v1/nodes/edge-8/revoke", &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Some(ViewerItem::End(r))) = v.next().await {
                break r;
            }
        }
    })
    .await
    .expect("the REST revocation ends the stream within 2 s");
    assert!(end.contains("revoked"), "{end}");
    edge8.stop().await;
    hub.process.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_certificate_cannot_publish_as_another_node() {
    use mediamesh_edge::dial::{DialConfig, DialError, dial};
    use mediamesh_tunnel::wire::{Channel, ErrorCode};
    let mut hub = Hub::start(3600).await;
    let a = site(&hub, "site-a", "edge-7");
    join(&hub, &a, &hub.token("edge-7", "10m")).await.stop().await;
    // The edge agent itself refuses a configuration that claims another node...
    let config = std::fs::read_to_string(a.join("edge.yaml")).unwrap().replace("nodeName: edge-7", "nodeName: edge-9");
    std::fs::write(a.join("edge.yaml"), config).unwrap();
    let out = Command::new(BIN).args(["edge", "-c", a.join("edge.yaml").to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("identifies node \"edge-7\""));
    // ...and the hub refuses a client that does it anyway with the enrolled certificate.
    let files =
        mediamesh_tls::TlsFiles { ca: a.join("tls/ca.pem"), cert: a.join("tls/edge.pem"), key: a.join("tls/edge.key") };
    let cfg = DialConfig {
        server: format!("127.0.0.1:{}", hub.tunnel),
        server_name: "localhost".try_into().unwrap(),
        tls: mediamesh_tls::tunnel_client_config(&files).unwrap(),
        node: "edge-9".into(),
        handshake_timeout: Duration::from_secs(10),
        write_deadline: Duration::from_secs(10),
        unsent_lowat: None,
        ca_file: files.ca.clone(),
        fallbacks: vec![],
    };
    let err = dial(&cfg, Channel::Control { instance: 7, catalog: vec![], running: vec![] }).await.unwrap_err();
    let DialError::Refused { code, message } = &err else { panic!("expected a refusal, got {err}") };
    assert_eq!(*code, ErrorCode::Unauthorized);
    assert!(message.contains("certificate identifies node \"edge-7\""), "{message}");
    hub.process.take().unwrap().stop().await;
}
