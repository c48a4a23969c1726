//! Authentication through an identity provider's JWKS and an HTTP hook, with stub servers
//! standing in for them. Beside every case a viewer with a valid token watches cam1 and must
//! not lose a frame.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/auth.rs"]
mod support;

use support::*;

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
