//! What the authentication tests share: a hub with an `auth` block and an edge with cam1 and
//! cam2, a healthy viewer that must lose no frame, and clients.

// Each test file uses part of this.
#![allow(dead_code, unused_imports)]

pub use std::net::SocketAddr;
pub use std::process::Output;
pub use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use mediamesh_auth::jwt::{Minter, ed25519_pair};
pub use mediamesh_auth::settings::{AuthSettings, FailureSettings, JwtSettings, UserSettings};
pub use mediamesh_auth::{Permission, Secret};
pub use mediamesh_hub::client::{ClientError, ConnectOptions, ViewerClient, ViewerItem};
pub use mediamesh_testkit::http::{Stub, request, request_from};
pub use mediamesh_testkit::{Fixture, assert_consecutive, counters, read_frames, require, test_pattern};
pub use mediamesh_tunnel::settings::Seconds;
pub use tokio::task::JoinHandle;

pub const ISSUER: &str = "https://id.example.test/";
pub const AUDIENCE: &str = "mediamesh";
pub const ALICE_PASSWORD: &str = "correct horse battery";

/// A hub with an `auth` block (alice: a password and Digest entry, `read` on cam1 and `api`;
/// tokens signed by `minter`, with an issuer and an audience), an edge with cam1 and cam2, and a
/// healthy viewer on cam1.
pub struct Setup {
    pub fx: Fixture,
    pub minter: Minter,
    pub public_pem: String,
    pub private_pem: String,
    pub auth: AuthSettings,
    pub healthy: Healthy,
}

impl Setup {
    pub async fn start(max_failures: u32, digest: bool) -> Self {
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
    pub async fn launch(auth: AuthSettings, minter: Minter, public_pem: String, private_pem: String) -> Self {
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
    pub async fn with(auth: AuthSettings, token: &str) -> Self {
        let (minter, public_pem, private_pem) = ed25519_pair().unwrap();
        let mut s = Self::launch(auth, minter, public_pem, private_pem).await;
        s.healthy = Healthy::start(&s.fx.ws_url("edge-1", "cam1"), token).await;
        s
    }

    /// A token from the configured issuer for the configured audience, valid `ttl` seconds.
    pub fn token(&self, grants: &[&str], ttl: i64) -> String {
        let grants: Vec<Permission> = grants.iter().map(|g| perm(g)).collect();
        let exp = u64::try_from(now() + ttl).unwrap();
        self.minter.mint("tester", &grants, exp, Some(ISSUER), Some(AUDIENCE), "mediamesh_permissions").unwrap()
    }

    pub fn stream(&self) -> SocketAddr {
        self.fx.hub.stream_addr
    }

    pub async fn ws(&self, stream: &str, token: Option<&str>) -> Result<ViewerClient, ClientError> {
        let opts = ConnectOptions { token: token.map(Secret::new), ..ConnectOptions::default() };
        ViewerClient::connect(&self.fx.ws_url("edge-1", stream), &opts).await
    }

    pub async fn metric(&self, series: &str) -> f64 {
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
    pub async fn finish(self) {
        self.healthy.check().await;
    }
}

pub fn perm(s: &str) -> Permission {
    s.parse().unwrap()
}

pub fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// A viewer that reads cam1 until told to stop.
#[derive(Default)]
pub struct Healthy {
    task: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<Vec<u64>>)>,
}

impl Healthy {
    pub async fn start(url: &str, token: &str) -> Self {
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

    pub async fn check(mut self) {
        let (stop, task) = self.task.take().expect("started");
        // At least a second beside the last case.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = stop.send(());
        let seen = task.await.expect("the healthy viewer's task");
        assert!(seen.len() > 10, "the healthy viewer saw {} frames", seen.len());
        assert_consecutive(&seen);
    }
}

pub fn refused(r: Result<ViewerClient, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Refused { status, message }) => (status, message),
        Err(e) => panic!("not refused by status: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

/// Runs a client with a deadline.
pub async fn client(program: &str, args: &[&str]) -> Output {
    let child = tokio::process::Command::new(program).args(args).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} timed out"))
        .unwrap()
}

/// ffprobe over `transport`: `Ok(codec,width,height)` or `Err(stderr)`.
pub async fn ffprobe(url: &str, transport: &str) -> Result<String, String> {
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

pub fn with_user(url: &str, user: &str, password: &str) -> String {
    url.replacen("rtsp://", &format!("rtsp://{user}:{password}@"), 1)
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn sign_ed(s: &Setup, claims: &serde_json::Value) -> String {
    // Signed with the configured key through jsonwebtoken, for claims `Minter` does not set.
    let key = jsonwebtoken::EncodingKey::from_ed_pem(s.private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA), claims, &key).unwrap()
}

pub fn unsigned(claims: &serde_json::Value) -> String {
    format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.to_string().as_bytes()))
}

pub fn hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap()
}
