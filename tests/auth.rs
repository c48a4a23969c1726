//! Authentication and authorisation with real clients: the WebSocket viewer, ffprobe and
//! GStreamer's rtspsrc over RTSP (TCP and UDP, Basic, Digest, a token in the URL), the REST API
//! and `/metrics` over HTTP. Beside every case a viewer with a valid token watches cam1 and must
//! not lose a frame.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mediamesh_auth::jwt::{Minter, ed25519_pair};
use mediamesh_auth::settings::{AuthSettings, FailureSettings, JwtSettings, UserSettings};
use mediamesh_auth::{Permission, Secret};
use mediamesh_hub::client::{ClientError, ConnectOptions, ViewerClient, ViewerItem};
use mediamesh_testkit::http::{Stub, request, request_from};
use mediamesh_testkit::{Fixture, assert_consecutive, counters, read_frames, require, test_pattern};
use mediamesh_tunnel::settings::Seconds;
use tokio::task::JoinHandle;

const ISSUER: &str = "https://id.example.test/";
const AUDIENCE: &str = "mediamesh";
const ALICE_PASSWORD: &str = "correct horse battery";

/// A hub with an `auth` block (alice: a password and Digest entry, `read` on cam1 and `api`;
/// tokens signed by `minter`, with an issuer and an audience), an edge with cam1 and cam2, and a
/// healthy viewer on cam1.
struct Setup {
    fx: Fixture,
    minter: Minter,
    public_pem: String,
    private_pem: String,
    auth: AuthSettings,
    healthy: Healthy,
}

impl Setup {
    async fn start(max_failures: u32, digest: bool) -> Self {
        let (minter, public_pem, private_pem) = ed25519_pair().unwrap();
        let dir =
            std::env::temp_dir().join(format!("mm-auth-{}-{}", std::process::id(), mediamesh_testkit::unix_micros()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("jwt.pub.pem");
        std::fs::write(&key_file, &public_pem).unwrap();
        let hash = mediamesh_auth::password::hash(&Secret::new(ALICE_PASSWORD)).unwrap();
        let auth = AuthSettings {
            anonymous: vec![],
            users: vec![UserSettings {
                user: "alice".into(),
                password: Secret::new(hash.as_str()),
                digest: digest.then(|| Secret::new(mediamesh_auth::digest::ha1("alice", ALICE_PASSWORD))),
                permissions: vec![perm("read:edge-1/cam1"), perm("api")],
            }],
            jwt: Some(JwtSettings {
                key_file: Some(key_file),
                jwks_url: None,
                jwks_refresh: Seconds::new(300),
                jwks_ca_file: None,
                algorithms: vec!["EdDSA".into(), "HS256".into()],
                issuer: Some(ISSUER.into()),
                audience: Some(AUDIENCE.into()),
                leeway: Seconds::new(5),
                claim: "mediamesh_permissions".into(),
            }),
            hook: None,
            failures: FailureSettings { max_failures, window: Seconds::new(60), block: Seconds::new(60) },
        };
        let mut s = Self::launch(auth, minter, public_pem, private_pem).await;
        let token = s.token(&["read"], 3600);
        s.healthy = Healthy::start(&s.fx.ws_url("edge-1", "cam1"), &token).await;
        s
    }

    /// A hub with `auth` and the edge; no healthy viewer yet.
    async fn launch(auth: AuthSettings, minter: Minter, public_pem: String, private_pem: String) -> Self {
        let configured = auth.clone();
        let fx = Fixture::builder()
            .hub(move |h| h.auth = Some(auth))
            .edge(|e| {
                e.streams.insert("cam2".into(), test_pattern());
            })
            .start()
            .await;
        Self { fx, minter, public_pem, private_pem, auth: configured, healthy: Healthy::default() }
    }

    /// A hub with `auth` and a healthy viewer watching with `token`.
    async fn with(auth: AuthSettings, token: &str) -> Self {
        let (minter, public_pem, private_pem) = ed25519_pair().unwrap();
        let mut s = Self::launch(auth, minter, public_pem, private_pem).await;
        s.healthy = Healthy::start(&s.fx.ws_url("edge-1", "cam1"), token).await;
        s
    }

    /// A token from the configured issuer for the configured audience, valid `ttl` seconds.
    fn token(&self, grants: &[&str], ttl: i64) -> String {
        let grants: Vec<Permission> = grants.iter().map(|g| perm(g)).collect();
        let exp = u64::try_from(now() + ttl).unwrap();
        self.minter.mint("tester", &grants, exp, Some(ISSUER), Some(AUDIENCE), "mediamesh_permissions").unwrap()
    }

    fn stream(&self) -> SocketAddr {
        self.fx.hub.stream_addr
    }

    async fn ws(&self, stream: &str, token: Option<&str>) -> Result<ViewerClient, ClientError> {
        let opts = ConnectOptions { token: token.map(Secret::new), ..ConnectOptions::default() };
        ViewerClient::connect(&self.fx.ws_url("edge-1", stream), &opts).await
    }

    async fn metric(&self, series: &str) -> f64 {
        // A token when the hub checks this setup's key; otherwise as the setup allows 127.0.0.3.
        let bearer = format!("Bearer {}", self.token(&["metrics"], 60));
        let headers: &[(&str, &str)] = if self.auth.jwt.as_ref().is_some_and(|j| j.key_file.is_some()) {
            &[("Authorization", &bearer)]
        } else {
            &[]
        };
        // From an address of its own: the cases' failures do not block it.
        let operator = Some(std::net::IpAddr::from([127, 0, 0, 3]));
        let a = request_from(operator, self.stream(), "GET", "/metrics", headers).await;
        assert_eq!(a.status, 200, "{}", a.body);
        mediamesh_testkit::observe::parse_metrics(&a.body).value(series).unwrap_or(0.0)
    }

    /// Stops the healthy viewer: it saw frames throughout, none lost.
    async fn finish(self) {
        self.healthy.check().await;
    }
}

fn perm(s: &str) -> Permission {
    s.parse().unwrap()
}

fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// A viewer that reads cam1 until told to stop.
#[derive(Default)]
struct Healthy {
    task: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<Vec<u64>>)>,
}

impl Healthy {
    async fn start(url: &str, token: &str) -> Self {
        let opts = ConnectOptions { token: Some(Secret::new(token)), ..ConnectOptions::default() };
        let mut v = ViewerClient::connect(url, &opts).await.expect("the healthy viewer connects");
        read_frames(&mut v, 5).await;
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut frames = Vec::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    item = tokio::time::timeout(Duration::from_secs(5), v.next()) => match item {
                        Ok(Ok(Some(ViewerItem::Frame(f)))) => frames.push(f),
                        Ok(Ok(Some(ViewerItem::Header(_)))) => {}
                        other => panic!("the healthy viewer got {other:?} after {} frames", frames.len()),
                    },
                }
            }
            counters(&frames)
        });
        Self { task: Some((stop, task)) }
    }

    async fn check(mut self) {
        let (stop, task) = self.task.take().expect("started");
        // At least a second beside the last case.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = stop.send(());
        let seen = task.await.expect("the healthy viewer's task");
        assert!(seen.len() > 10, "the healthy viewer saw {} frames", seen.len());
        assert_consecutive(&seen);
    }
}

fn refused(r: Result<ViewerClient, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Refused { status, message }) => (status, message),
        Err(e) => panic!("not refused by status: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

/// Runs a client with a deadline.
async fn client(program: &str, args: &[&str]) -> Output {
    let child = tokio::process::Command::new(program).args(args).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} timed out"))
        .unwrap()
}

/// ffprobe over `transport`: `Ok(codec,width,height)` or `Err(stderr)`.
async fn ffprobe(url: &str, transport: &str) -> Result<String, String> {
    let out = client(
        "ffprobe",
        &[
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            url,
        ],
    )
    .await;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn with_user(url: &str, user: &str, password: &str) -> String {
    url.replacen("rtsp://", &format!("rtsp://{user}:{password}@"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_are_refused_on_every_protocol_and_credentials_open_them() {
    require::ffmpeg();
    let s = Setup::start(100, true).await;
    let addr = s.stream();
    let rtsp = s.fx.rtsp_url("edge-1", "cam1");

    // Without credentials: 401 with a challenge, on each protocol.
    let (status, message) = refused(s.ws("cam1", None).await);
    assert_eq!(status, 401, "{message}");
    for path in ["/api/v1/streams", "/api/v1/nodes", "/metrics"] {
        let a = request(addr, "GET", path, &[]).await;
        assert_eq!(a.status, 401, "{path}: {}", a.body);
        let challenges = a.header("www-authenticate");
        assert!(challenges.iter().any(|c| c.starts_with("Bearer realm=")), "{path}: {challenges:?}");
        assert!(challenges.iter().any(|c| c.starts_with("Basic realm=")), "{path}: {challenges:?}");
        assert!(a.body.contains("no_credentials"), "{path}: {}", a.body);
    }
    for transport in ["tcp", "udp"] {
        let err = ffprobe(&rtsp, transport).await.expect_err("anonymous RTSP played");
        assert!(err.contains("401"), "{transport}: {err}");
    }
    // Probes need nothing.
    assert_eq!(request(addr, "GET", "/healthz", &[]).await.status, 200);

    // With credentials, each succeeds.
    let token = s.token(&["read", "api"], 600);
    let mut v = s.ws("cam1", Some(&token)).await.expect("a token opens the WebSocket");
    assert_consecutive(&counters(&read_frames(&mut v, 10).await));
    drop(v);
    // A browser's WebSocket cannot set headers: the token as a query parameter.
    let url = format!("{}?token={token}", s.fx.ws_url("edge-1", "cam1"));
    let mut v = ViewerClient::connect(&url, &ConnectOptions::default()).await.expect("?token= opens the WebSocket");
    read_frames(&mut v, 5).await;
    drop(v);
    let bearer = format!("Bearer {token}");
    let a = request(addr, "GET", "/api/v1/streams", &[("Authorization", &bearer)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let basic = format!("Basic {}", base64_encode(format!("alice:{ALICE_PASSWORD}").as_bytes()));
    let a = request(addr, "GET", "/api/v1/nodes", &[("Authorization", &basic)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The REST API does not take the token from the query: it would end up in proxies' logs.
    assert_eq!(request(addr, "GET", &format!("/api/v1/streams?token={token}"), &[]).await.status, 401);
    assert_eq!(s.metric("mediamesh_nodes_connected").await, 1.0);
    // RTSP: the token in the URL over TCP, alice's password (Digest) over UDP.
    assert_eq!(ffprobe(&format!("{rtsp}?token={token}"), "tcp").await, Ok("h264,320,240".into()));
    assert_eq!(ffprobe(&with_user(&rtsp, "alice", ALICE_PASSWORD), "udp").await, Ok("h264,320,240".into()));
    if require::has_program("gst-launch-1.0") {
        let loc = format!("location={rtsp}?token={token}");
        let out =
            client("gst-launch-1.0", &["-q", "rtspsrc", &loc, "protocols=tcp", "!", "fakesink", "num-buffers=20"])
                .await;
        assert!(out.status.success(), "rtspsrc with ?token=: {}", String::from_utf8_lossy(&out.stderr));
    }

    // Every refusal was counted by protocol and reason.
    for protocol in ["ws", "http", "rtsp"] {
        let n = s
            .metric(&format!("mediamesh_auth_denials_total{{protocol=\"{protocol}\",reason=\"no_credentials\"}}"))
            .await;
        assert!(n >= 1.0, "{protocol}: {n}");
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_camera_opens_it_and_nothing_else() {
    require::ffmpeg();
    // No Digest entries: the hub offers Basic only, so RTSP clients send a token as the password.
    let s = Setup::start(100, false).await;
    let addr = s.stream();
    let token = s.token(&["read:edge-1/cam1"], 600);
    let mut v = s.ws("cam1", Some(&token)).await.expect("cam1 opens");
    read_frames(&mut v, 5).await;
    drop(v);
    let (status, message) = refused(s.ws("cam2", Some(&token)).await);
    assert_eq!(status, 403, "{message}");
    let rtsp2 = s.fx.rtsp_url("edge-1", "cam2");
    let err = ffprobe(&format!("{rtsp2}?token={token}"), "tcp").await.expect_err("cam2 played over RTSP");
    assert!(err.contains("403"), "{err}");
    // The token as the RTSP password (Basic), where the client takes one that long (GStreamer).
    if require::has_program("gst-launch-1.0") {
        for (cam, ok) in [("cam1", true), ("cam2", false)] {
            let loc = format!("location={}", with_user(&s.fx.rtsp_url("edge-1", cam), "viewer", &token));
            let out =
                client("gst-launch-1.0", &["-q", "rtspsrc", &loc, "protocols=tcp", "!", "fakesink", "num-buffers=20"])
                    .await;
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.success(), ok, "rtspsrc on {cam} with the token as password: {err}");
            assert!(ok || err.contains("Forbidden"), "{err}");
        }
    }
    let bearer = format!("Bearer {token}");
    for (method, path) in [("GET", "/api/v1/streams"), ("DELETE", "/api/v1/nodes/edge-1"), ("POST", "/api/v1/viewers")]
    {
        let a = request(addr, method, path, &[("Authorization", &bearer)]).await;
        assert_eq!(a.status, 403, "{method} {path}: {}", a.body);
        assert!(a.body.contains("forbidden"), "{}", a.body);
        assert!(a.header("www-authenticate").is_empty(), "a 403 asks for nothing");
    }
    // alice may read cam1 and the API, not cam2 and not write.
    let basic = format!("Basic {}", base64_encode(format!("alice:{ALICE_PASSWORD}").as_bytes()));
    assert_eq!(request(addr, "GET", "/api/v1/streams", &[("Authorization", &basic)]).await.status, 200);
    assert_eq!(request(addr, "DELETE", "/api/v1/nodes/edge-1", &[("Authorization", &basic)]).await.status, 403);
    let err = ffprobe(&with_user(&rtsp2, "alice", ALICE_PASSWORD), "tcp").await.expect_err("alice played cam2");
    assert!(err.contains("403"), "{err}");
    let forbidden = s.metric("mediamesh_auth_denials_total{protocol=\"ws\",reason=\"forbidden\"}").await;
    assert_eq!(forbidden, 1.0);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_should_not_pass_are_refused() {
    let s = Setup::start(1000, true).await;
    let addr = s.stream();
    let claims = |extra: serde_json::Value| {
        let mut c = serde_json::json!({
            "sub": "tester", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600,
            "mediamesh_permissions": ["read", "api"],
        });
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    let (other, _, _) = ed25519_pair().unwrap();
    let grants = [perm("read"), perm("api")];
    let exp = u64::try_from(now() + 600).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", s.token(&["read", "api"], -60), "expired"),
        ("not yet valid", sign_ed(&s, &claims(serde_json::json!({"nbf": now() + 600}))), "not valid yet"),
        (
            "wrong issuer",
            s.minter
                .mint("t", &grants, exp, Some("https://evil.test/"), Some(AUDIENCE), "mediamesh_permissions")
                .unwrap(),
            "issuer",
        ),
        (
            "wrong audience",
            s.minter.mint("t", &grants, exp, Some(ISSUER), Some("other"), "mediamesh_permissions").unwrap(),
            "audience",
        ),
        (
            "unknown key",
            other.mint("t", &grants, exp, Some(ISSUER), Some(AUDIENCE), "mediamesh_permissions").unwrap(),
            "signature",
        ),
        ("alg none", unsigned(&claims(serde_json::json!({}))), "not a valid JWT"),
        ("HS256 with the public key", hs256(&claims(serde_json::json!({})), s.public_pem.as_bytes()), "no key"),
        (
            "no permissions claim",
            sign_ed(&s, &serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600})),
            "grants nothing",
        ),
        ("garbage", "eyJhbGciOiJFZERTQSJ9.bm90IGpzb24.c2ln".into(), "signature"),
        ("not a token", "hello".into(), "not a valid JWT"),
    ];
    for (what, token, why) in &cases {
        let bearer = format!("Bearer {token}");
        let a = request(addr, "GET", "/api/v1/streams", &[("Authorization", &bearer)]).await;
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        assert!(a.body.contains(why), "{what}: {}", a.body);
        let (status, message) = refused(s.ws("cam1", Some(token)).await);
        assert_eq!(status, 401, "{what}: {message}");
    }
    // A valid one passes, after all of those.
    let a = request(addr, "GET", "/api/v1/streams", &[("Authorization", &format!("Bearer {}", s.token(&["api"], 60)))])
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let expired = s.metric("mediamesh_auth_denials_total{protocol=\"http\",reason=\"expired_token\"}").await;
    let invalid = s.metric("mediamesh_auth_denials_total{protocol=\"http\",reason=\"invalid_token\"}").await;
    assert_eq!((expired, invalid), (1.0, (cases.len() - 1) as f64));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_digest_plays_in_ffmpeg_and_gstreamer_and_wrong_passwords_hit_the_limit() {
    require::ffmpeg();
    require::program("gst-launch-1.0", "gstreamer1.0-tools");
    require::gst_elements(&[("rtspsrc", "gstreamer1.0-plugins-good")]);
    let s = Setup::start(3, true).await;
    let rtsp = s.fx.rtsp_url("edge-1", "cam1");
    let good = with_user(&rtsp, "alice", ALICE_PASSWORD);
    assert_eq!(ffprobe(&good, "tcp").await, Ok("h264,320,240".into()));
    let loc = format!("location={good}");
    let out = client("gst-launch-1.0", &["-q", "rtspsrc", &loc, "!", "fakesink", "num-buffers=20"]).await;
    assert!(out.status.success(), "rtspsrc with Digest: {}", String::from_utf8_lossy(&out.stderr));
    // Neither failed on the way (both answer the Digest challenge the hub offers first).
    let basic_users = s.metric("mediamesh_auth_denials_total{protocol=\"rtsp\",reason=\"wrong_password\"}").await;
    assert_eq!(basic_users, 0.0);

    // A wrong password: 401 until the limit, then 429 for this address, right password or not.
    let bad = with_user(&rtsp, "alice", "wrong");
    for i in 0..3 {
        // Each attempt is one failure: ffprobe asks without credentials first (not a failure).
        let err = ffprobe(&bad, "tcp").await.expect_err("a wrong password played");
        assert!(err.contains("401"), "attempt {i}: {err}");
    }
    let err = ffprobe(&bad, "tcp").await.expect_err("a wrong password played");
    assert!(err.contains("429"), "after the limit: {err}");
    let err = ffprobe(&good, "tcp").await.expect_err("a blocked address played");
    assert!(err.contains("429"), "blocked: {err}");
    let a = request(s.stream(), "GET", "/api/v1/streams", &[("Authorization", "Basic YWxpY2U6d3Jvbmc=")]).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(!a.header("retry-after").is_empty(), "429 says when to retry");
    assert_eq!(s.metric("mediamesh_auth_denials_total{protocol=\"rtsp\",reason=\"wrong_password\"}").await, 3.0);
    assert!(s.metric("mediamesh_auth_denials_total{protocol=\"rtsp\",reason=\"rate_limited\"}").await >= 2.0);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_who_may_do_what_and_a_bad_block_changes_nothing() {
    let s = Setup::start(100, true).await;
    let addr = s.stream();
    let alice = format!("Basic {}", base64_encode(format!("alice:{ALICE_PASSWORD}").as_bytes()));
    let bob = format!("Basic {}", base64_encode(b"bob:builder-pw"));
    assert_eq!(request(addr, "GET", "/api/v1/streams", &[("Authorization", &alice)]).await.status, 200);
    assert_eq!(request(addr, "GET", "/api/v1/streams", &[("Authorization", &bob)]).await.status, 401);

    // alice loses `api`; bob arrives with it.
    let mut auth = s.auth.clone();
    auth.users[0].permissions = vec![perm("read:edge-1/cam1")];
    let hash = mediamesh_auth::password::hash(&Secret::new("builder-pw")).unwrap();
    auth.users.push(UserSettings {
        user: "bob".into(),
        password: Secret::new(hash.as_str()),
        digest: None,
        permissions: vec![perm("api")],
    });
    let mut cfg = Fixture::hub_config(&s.fx.pki);
    cfg.auth = Some(auth.clone());
    s.fx.hub.reload(cfg).expect("the reload applies");
    assert_eq!(request(addr, "GET", "/api/v1/streams", &[("Authorization", &alice)]).await.status, 403);
    assert_eq!(request(addr, "GET", "/api/v1/streams", &[("Authorization", &bob)]).await.status, 200);

    // A block with a password that is no hash: refused whole, naming the key; bob still works.
    let mut bad = auth;
    bad.users[1].password = Secret::new("builder-pw");
    let mut cfg = Fixture::hub_config(&s.fx.pki);
    cfg.auth = Some(bad);
    let err = s.fx.hub.reload(cfg).expect_err("a bad auth block was applied").to_string();
    assert!(err.contains("auth.users[1].password"), "{err}");
    assert!(!err.contains("builder-pw"), "the error shows the password: {err}");
    assert_eq!(request(addr, "GET", "/api/v1/streams", &[("Authorization", &bob)]).await.status, 200);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_disconnects_a_viewer_and_stops_a_stream_and_others_may_not() {
    let s = Setup::start(100, true).await;
    let addr = s.stream();
    let mut v = s.ws("cam2", Some(&s.token(&["read"], 600))).await.expect("cam2 opens");
    read_frames(&mut v, 5).await;
    // Disconnect one viewer: the newest of cam2's.
    let mut second = s.ws("cam2", Some(&s.token(&["read"], 600))).await.expect("cam2 opens again");
    read_frames(&mut second, 2).await;
    let ops = format!("Bearer {}", s.token(&["api", "admin"], 600));
    let streams = request(addr, "GET", "/api/v1/streams", &[("Authorization", &ops)]).await;
    let streams: serde_json::Value = serde_json::from_str(&streams.body).unwrap();
    let id = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["stream"] == "cam2")
        .flat_map(|st| st["viewerDetails"].as_array().unwrap().iter().map(|v| v["id"].as_u64().unwrap()))
        .max()
        .expect("cam2's viewers are listed");
    let path = format!("/api/v1/viewers/{id}");
    let reader = format!("Bearer {}", s.token(&["read", "api"], 600));
    assert_eq!(request(addr, "DELETE", &path, &[("Authorization", &reader)]).await.status, 403);
    let a = request(addr, "DELETE", &path, &[("Authorization", &ops)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Some(ViewerItem::End(r))) = second.next().await {
                break r;
            }
        }
    })
    .await
    .expect("the disconnected viewer is told within 2 s");
    assert_eq!(end, "disconnected by an operator");
    read_frames(&mut v, 5).await;
    assert_eq!(request(addr, "DELETE", &path, &[("Authorization", &ops)]).await.status, 404);
    let a = request(addr, "DELETE", "/api/v1/nodes/edge-1/streams/cam2", &[("Authorization", &reader)]).await;
    assert_eq!(a.status, 403, "{}", a.body);
    let admin = format!("Bearer {}", s.token(&["admin"], 600));
    let a = request(addr, "DELETE", "/api/v1/nodes/edge-1/streams/cam2", &[("Authorization", &admin)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Some(ViewerItem::End(r))) = v.next().await {
                break r;
            }
        }
    })
    .await
    .expect("the viewer is told within 2 s");
    assert!(end.contains("stopped by an operator"), "{end}");
    let a = request(addr, "DELETE", "/api/v1/nodes/edge-1/streams/cam2", &[("Authorization", &admin)]).await;
    assert_eq!(a.status, 404, "no session left to stop: {}", a.body);
    s.finish().await;
}

/// An Ed25519 key for a JWKS: its private PEM (to sign) and its JWK with `kid`.
fn jwk(kid: &str) -> (String, serde_json::Value) {
    use base64::Engine;
    let (_, public_pem, private_pem) = ed25519_pair().unwrap();
    let der: String = public_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(der).unwrap();
    let x = b64(&der[der.len() - 32..]);
    (private_pem, serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}))
}

/// A token signed with `private_pem`, naming `kid`.
fn kid_token(private_pem: &str, kid: &str, grants: &[&str]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({"sub": kid, "exp": now() + 600, "mediamesh_permissions": grants});
    let key = jsonwebtoken::EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn jwks_settings(url: String) -> AuthSettings {
    AuthSettings {
        jwt: Some(JwtSettings {
            key_file: None,
            jwks_url: Some(url),
            jwks_refresh: Seconds::new(10),
            jwks_ca_file: None,
            algorithms: vec!["EdDSA".into()],
            issuer: None,
            audience: None,
            leeway: Seconds::new(5),
            claim: "mediamesh_permissions".into(),
        }),
        anonymous: vec![perm("metrics")],
        // The test polls with tokens the hub cannot check yet; each is a failure.
        failures: FailureSettings { max_failures: 1000, window: Seconds::new(60), block: Seconds::new(60) },
        ..AuthSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_rotation_is_picked_up_and_an_unreachable_jwks_keeps_its_keys() {
    let (k1, jwk1) = jwk("k1");
    let (k2, jwk2) = jwk("k2");
    let set = std::sync::Arc::new(std::sync::Mutex::new(serde_json::json!({"keys": [jwk1]})));
    let served = set.clone();
    let idp = Stub::start(move |_| (200, served.lock().unwrap().to_string())).await;
    let s = Setup::with(jwks_settings(idp.url("/jwks")), &kid_token(&k1, "k1", &["read"])).await;
    let addr = s.stream();
    let api = |t: &str| format!("Bearer {t}");
    assert_eq!(
        request(addr, "GET", "/api/v1/streams", &[("Authorization", &api(&kid_token(&k1, "k1", &["api"])))])
            .await
            .status,
        200
    );

    // The provider rotates to k2: a k2 token passes once the set is fetched again (an unknown
    // kid asks for it, no sooner than 10 s after the last fetch).
    *set.lock().unwrap() = serde_json::json!({"keys": [jwk2]});
    let rotated = std::time::Instant::now();
    let t2 = kid_token(&k2, "k2", &["api"]);
    let mut statuses = Vec::new();
    loop {
        let a = request(addr, "GET", "/api/v1/streams", &[("Authorization", &api(&t2))]).await;
        statuses.push(a.status);
        if a.status == 200 {
            break;
        }
        assert!(a.body.contains("no key") && a.body.contains("k2"), "{}", a.body);
        assert!(rotated.elapsed() < Duration::from_secs(15), "k2 not accepted within 15 s: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("rotation picked up after {:?}", rotated.elapsed());
    // k1 left the set: its tokens no longer pass.
    let a = request(addr, "GET", "/api/v1/streams", &[("Authorization", &api(&kid_token(&k1, "k1", &["api"])))]).await;
    assert_eq!(a.status, 401, "{}", a.body);

    // The provider goes away: k2 tokens still pass on the cached set; the log says why the
    // set is stale; a token for a key the hub never saw is answered with that reason.
    let idp_addr = idp.addr;
    idp.stop();
    let k3 = kid_token(&jwk("k3").0, "k3", &["api"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    loop {
        assert_eq!(request(addr, "GET", "/api/v1/streams", &[("Authorization", &api(&t2))]).await.status, 200);
        let a = request(addr, "GET", "/api/v1/streams", &[("Authorization", &api(&k3))]).await;
        if a.status == 503 {
            assert!(a.body.contains("cannot fetch its token keys") && a.body.contains("cannot connect"), "{}", a.body);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the failed fetch never showed: {} {}", a.status, a.body);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let lines = mediamesh_testkit::logged(&["cannot fetch the token keys", &idp_addr.to_string()]);
    assert!(!lines.is_empty(), "the failed fetch is logged");
    assert!(s.metric("mediamesh_auth_denials_total{protocol=\"http\",reason=\"auth_unavailable\"}").await >= 1.0);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_hook_decides_what_users_and_tokens_do_not() {
    require::ffmpeg();
    let hook = Stub::start(|r| {
        let q: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        let ok = (q["user"] == "hooky" && q["password"] == "letmein")
            || q["token"] == "opaque-good"
            || (q["action"] == "metrics" && q["ip"] == "127.0.0.3");
        if ok { (200, "{}".into()) } else { (401, "{}".into()) }
    })
    .await;
    let auth = AuthSettings {
        hook: Some(mediamesh_auth::settings::HookSettings {
            url: hook.url("/auth"),
            cache: Seconds::new(10),
            timeout: Seconds::new(2),
            ca_file: None,
        }),
        ..AuthSettings::default()
    };
    let s = Setup::with(auth, "opaque-good").await;
    let addr = s.stream();
    // The healthy viewer's WebSocket was asked about with its token.
    let first: serde_json::Value = serde_json::from_str(&hook.received.lock().unwrap()[0].body).unwrap();
    assert_eq!(first["token"], "opaque-good");
    assert_eq!(
        (first["action"].as_str(), first["path"].as_str(), first["protocol"].as_str()),
        (Some("read"), Some("edge-1/cam1"), Some("ws"))
    );
    assert_eq!(hook.received.lock().unwrap()[0].method, "POST");

    let good = format!("Basic {}", base64_encode(b"hooky:letmein"));
    let bad = format!("Basic {}", base64_encode(b"hooky:guess"));
    let before = hook.count();
    for _ in 0..3 {
        assert_eq!(request(addr, "GET", "/api/v1/streams", &[("Authorization", &good)]).await.status, 200);
    }
    assert_eq!(hook.count(), before + 1, "three requests, one call: the answer is cached");
    let a = request(addr, "GET", "/api/v1/streams", &[("Authorization", &bad)]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("hook_refused"), "{}", a.body);
    // Anonymous requests go to the hook too (it lets 127.0.0.3 scrape metrics).
    assert_eq!(request(addr, "GET", "/metrics", &[]).await.status, 401);
    assert_eq!(s.metric("mediamesh_auth_denials_total{protocol=\"http\",reason=\"hook_refused\"}").await, 1.0);
    // RTSP: the user and password as the client sends them (Basic: the hook offers no Digest).
    let rtsp = s.fx.rtsp_url("edge-1", "cam1");
    assert_eq!(ffprobe(&with_user(&rtsp, "hooky", "letmein"), "tcp").await, Ok("h264,320,240".into()));
    let rtsp_asked = hook.received.lock().unwrap().iter().any(|r| r.body.contains("\"protocol\":\"rtsp\""));
    assert!(rtsp_asked, "the hook was asked about RTSP");

    // The hook goes away: new questions fail as unavailable (503), never allowed; answers
    // still cached stand.
    hook.stop();
    let other = format!("Basic {}", base64_encode(b"someone:else"));
    let a = request(addr, "GET", "/api/v1/streams", &[("Authorization", &other)]).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.body.contains("cannot be reached"), "{}", a.body);
    assert_eq!(request(addr, "GET", "/api/v1/streams", &[("Authorization", &good)]).await.status, 200);
    s.finish().await;
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sign_ed(s: &Setup, claims: &serde_json::Value) -> String {
    // Signed with the configured key through jsonwebtoken, for claims `Minter` does not set.
    let key = jsonwebtoken::EncodingKey::from_ed_pem(s.private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA), claims, &key).unwrap()
}

fn unsigned(claims: &serde_json::Value) -> String {
    format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.to_string().as_bytes()))
}

fn hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap()
}
