//! MSE viewers over a real WebSocket client: the init event and segment, one fragment per
//! frame that ffprobe and ffmpeg read back as the camera's H.264, one upstream shared with the
//! other formats, a resync on request, and clear answers to what a viewer may not send.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mediamesh_edge::stats::EdgeStats;
use mediamesh_testkit::{Fixture, read_frames, require};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = WebSocketStream<TcpStream>;

fn mse_url(fx: &Fixture, stream: &str) -> String {
    format!("ws://{}/api/v1/nodes/edge-1/streams/{stream}/mse", fx.hub.stream_addr)
}

async fn connect(fx: &Fixture, stream: &str) -> Ws {
    let tcp = TcpStream::connect(fx.hub.stream_addr).await.unwrap();
    tokio_tungstenite::client_async(mse_url(fx, stream), tcp).await.unwrap().0
}

async fn next(ws: &mut Ws) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the connection stays open")
            .unwrap();
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            return m;
        }
    }
}

/// The `init` event and the init segment that follows it.
async fn init(ws: &mut Ws) -> (Value, Vec<u8>) {
    let Message::Text(event) = next(ws).await else { panic!("a text init event first") };
    let event: Value = serde_json::from_str(&event).unwrap();
    assert_eq!(event["type"], "init", "{event}");
    let Message::Binary(segment) = next(ws).await else { panic!("the init segment after the event") };
    assert_eq!(&segment[4..8], b"ftyp");
    (event, segment.to_vec())
}

async fn fragment(ws: &mut Ws) -> Vec<u8> {
    match next(ws).await {
        Message::Binary(f) => {
            assert_eq!(&f[4..8], b"moof", "one moof + mdat per message");
            f.to_vec()
        }
        other => panic!("expected a fragment, got {other:?}"),
    }
}

fn probe(mp4: &[u8]) -> Value {
    let path =
        std::env::temp_dir().join(format!("mm-mse-{}-{}.mp4", std::process::id(), mediamesh_testkit::unix_micros()));
    std::fs::write(&path, mp4).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-show_packets", "-count_frames", "-of", "json"])
        .arg(&path)
        .output()
        .unwrap();
    let decode = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(out.status.success(), "ffprobe: {}", String::from_utf8_lossy(&out.stderr));
    assert!(decode.status.success() && decode.stderr.is_empty(), "ffmpeg: {}", String::from_utf8_lossy(&decode.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mse_viewer_gets_what_a_browser_plays_and_shares_the_upstream() {
    require::ffmpeg();
    let fx = Fixture::builder().start().await;
    let mut ws_viewer = fx.viewer("edge-1", "cam1").await.unwrap();
    let mut mse = connect(&fx, "cam1").await;
    let (event, mut mp4) = init(&mut mse).await;
    assert_eq!((event["node"].as_str(), event["stream"].as_str()), (Some("edge-1"), Some("cam1")));
    assert_eq!((event["width"].as_u64(), event["height"].as_u64()), (Some(320), Some(240)));
    let mime = event["mime"].as_str().unwrap();
    assert!(mime.starts_with("video/mp4; codecs=\"avc1."), "{mime}");
    for _ in 0..50 {
        mp4.extend(fragment(&mut mse).await);
    }
    read_frames(&mut ws_viewer, 10).await;
    assert_eq!(EdgeStats::get(&fx.edge_stats().add_video), 1, "one upstream for both formats");
    let protocols: Vec<&str> = fx.hub.sessions().snapshot()[0].viewers().iter().map(|v| v.protocol).collect();
    assert!(protocols.contains(&"mse") && protocols.contains(&"ws"), "{protocols:?}");

    let p = probe(&mp4);
    let v = &p["streams"][0];
    assert_eq!(
        (v["codec_name"].as_str(), v["width"].as_u64(), v["height"].as_u64()),
        (Some("h264"), Some(320), Some(240))
    );
    assert_eq!(v["nb_read_frames"].as_str(), Some("50"), "every fragment decodes");
    let packets = p["packets"].as_array().unwrap();
    assert!(packets[0]["flags"].as_str().unwrap().starts_with('K'), "a viewer starts at a keyframe");
    let dts: Vec<i64> = packets.iter().map(|p| p["dts"].as_i64().unwrap()).collect();
    assert!(dts.windows(2).all(|w| w[1] > w[0]), "decode times increase: {dts:?}");
    // 25 fps: 50 frames span about two seconds of media time.
    let span = (dts[49] - dts[0]) as f64 / 90_000.0;
    assert!((1.8..2.2).contains(&span), "{span} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_request_starts_again_at_a_keyframe_with_the_init_segment() {
    let fx = Fixture::builder().start().await;
    let mut mse = connect(&fx, "cam1").await;
    let (_, first_init) = init(&mut mse).await;
    for _ in 0..30 {
        fragment(&mut mse).await;
    }
    mse.send(Message::Text(r#"{"type":"resync"}"#.into())).await.unwrap();
    // Fragments already on their way may come first; then the init again.
    let mut before = 0;
    let again = loop {
        match next(&mut mse).await {
            Message::Binary(_) => before += 1,
            Message::Text(t) => break t,
            other => panic!("{other:?}"),
        }
        assert!(before < 60, "no init within 60 messages of the resync");
    };
    let event: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(event["type"], "init");
    let Message::Binary(segment) = next(&mut mse).await else { panic!("init segment") };
    assert_eq!(segment.to_vec(), first_init, "the same codec parameters, the same init segment");
    let f = fragment(&mut mse).await;
    // The first sample after a resync is a sync sample (trun sample flags 0x02000000).
    assert!(f.windows(4).any(|w| w == [0x02, 0, 0, 0]), "the first fragment after a resync is a keyframe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_viewer_may_not_send_closes_it_and_only_it() {
    let fx = Fixture::builder().start().await;
    let mut bystander = fx.viewer("edge-1", "cam1").await.unwrap();
    read_frames(&mut bystander, 5).await;
    for (message, code) in [
        (Message::Binary(vec![1, 2, 3].into()), 1003),
        (Message::Text("hello".into()), 1008),
        (Message::Text(r#"{"type":"play"}"#.into()), 1008),
        (Message::Text(format!("{{\"type\":\"resync\",\"pad\":\"{}\"}}", "x".repeat(300)).into()), 1009),
    ] {
        let mut mse = connect(&fx, "cam1").await;
        init(&mut mse).await;
        mse.send(message.clone()).await.unwrap();
        let close = loop {
            match next(&mut mse).await {
                Message::Close(frame) => break frame.expect("a close code and reason"),
                Message::Binary(_) => {}
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(u16::from(close.code), code, "{message:?}: {}", close.reason);
        assert!(!close.reason.is_empty());
        // The other viewer of the stream did not notice.
        read_frames(&mut bystander, 5).await;
    }
    let sessions = fx.hub.sessions().clone();
    mediamesh_testkit::wait_until("the refused viewers to leave", Duration::from_secs(5), move || {
        sessions.snapshot().iter().all(|s| s.viewer_count() == 1)
    })
    .await;
}
