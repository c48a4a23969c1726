//! Authentication and authorisation with real clients: the WebSocket viewer, ffprobe and
//! GStreamer's rtspsrc over RTSP (TCP and UDP, Basic, Digest, a token in the URL), the REST API
//! and `/metrics` over HTTP. Beside every case a viewer with a valid token watches cam1 and must
//! not lose a frame.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/auth.rs"]
mod support;

use support::*;

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
    // The MSE upgrade is a stream read too: refused before the upgrade is even looked at.
    let mse = "/api/v1/nodes/edge-1/streams/cam1/mse";
    let a = request(addr, "GET", mse, &[]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("no_credentials"), "{}", a.body);
    // So is a WHEP offer.
    let a = request(addr, "POST", "/api/v1/nodes/edge-1/streams/cam1/whep", &[]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("no_credentials"), "{}", a.body);
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
    // The MSE route takes the token from the query as well; past authentication, a request
    // that is no WebSocket upgrade gets the route's own answer.
    let a = request(addr, "GET", &format!("{mse}?token={token}"), &[]).await;
    assert_eq!((a.status, a.body.contains("websocket_required")), (400, true), "{}", a.body);
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
    for protocol in ["ws", "mse", "http", "rtsp"] {
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
async fn a_user_signs_in_for_a_session_token_that_works_until_signed_out() {
    let s = Setup::start(100, false).await;
    let addr = s.stream();
    let basic = |password: &str| format!("Basic {}", base64_encode(format!("alice:{password}").as_bytes()));
    // A wrong password: refused without a challenge (a browser would open its own dialog), counted.
    let a = request(addr, "POST", "/api/v1/session", &[("Authorization", &basic("guess"))]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("wrong_password"), "{}", a.body);
    assert!(a.header("www-authenticate").is_empty(), "{:?}", a.header("www-authenticate"));
    let a = request(addr, "POST", "/api/v1/session", &[]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    // A page's script says so, and gets no Basic challenge on the other routes either.
    let a = request(addr, "GET", "/api/v1/nodes", &[("X-Requested-With", "XMLHttpRequest")]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let challenges = a.header("www-authenticate");
    assert!(challenges.iter().all(|c| !c.starts_with("Basic")) && !challenges.is_empty(), "{challenges:?}");
    let a =
        request(addr, "POST", "/api/v1/session", &[("Authorization", &format!("Bearer {}", s.token(&["read"], 60)))])
            .await;
    assert_eq!(a.status, 401, "a token is not exchanged for a session: {}", a.body);
    assert!(a.body.contains("unsupported_credentials"), "{}", a.body);

    let a = request(addr, "POST", "/api/v1/session", &[("Authorization", &basic(ALICE_PASSWORD))]).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.header("cache-control"), vec!["no-store".to_owned()]);
    let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(body["user"], "alice");
    assert_eq!(body["expiresInSecs"], 12 * 3600);
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("mms_") && !token.contains(ALICE_PASSWORD), "{token}");

    // The session carries alice's permissions, as a header and, where headers cannot be set,
    // in the query: the API and cam1, not cam2, not the admin API.
    let bearer = format!("Bearer {token}");
    assert_eq!(request(addr, "GET", "/api/v1/nodes", &[("Authorization", &bearer)]).await.status, 200);
    assert_eq!(request(addr, "DELETE", "/api/v1/viewers/1", &[("Authorization", &bearer)]).await.status, 403);
    let mut v = s.ws("cam1", Some(&token)).await.expect("the session opens cam1");
    read_frames(&mut v, 5).await;
    drop(v);
    let url = format!("{}?token={token}", s.fx.ws_url("edge-1", "cam1"));
    let mut v = ViewerClient::connect(&url, &ConnectOptions::default()).await.expect("?token= with a session");
    read_frames(&mut v, 5).await;
    drop(v);
    let (status, message) = refused(s.ws("cam2", Some(&token)).await);
    assert_eq!(status, 403, "{message}");
    let playlist = format!("/api/v1/nodes/edge-1/streams/cam1/hls/index.m3u8?token={token}");
    let a = request(addr, "GET", &playlist, &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // Signing out ends it everywhere; signing out again, or with a made-up token, tells nothing.
    assert_eq!(request(addr, "DELETE", "/api/v1/session", &[("Authorization", &bearer)]).await.status, 204);
    let a = request(addr, "GET", "/api/v1/nodes", &[("Authorization", &bearer)]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("invalid_token") && a.body.contains("sign-in session"), "{}", a.body);
    let (status, _) = refused(s.ws("cam1", Some(&token)).await);
    assert_eq!(status, 401);
    assert_eq!(request(addr, "DELETE", "/api/v1/session", &[("Authorization", &bearer)]).await.status, 204);
    assert_eq!(request(addr, "DELETE", "/api/v1/session", &[("Authorization", "Bearer mms_x")]).await.status, 204);
    let wrong = s.metric("mediamesh_auth_denials_total{protocol=\"http\",reason=\"wrong_password\"}").await;
    assert_eq!(wrong, 1.0);
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
    // The viewer hears `end` as the log closes; the session leaves the table just after.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let a = request(addr, "DELETE", "/api/v1/nodes/edge-1/streams/cam2", &[("Authorization", &admin)]).await;
        if a.status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a session left to stop after 2 s: {}", a.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.finish().await;
}
