//! The bench's WebRTC viewers: WHEP sessions on mediamesh and viewers of Janus's streaming
//! plugin, both the str0m receiver of `mediamesh_hub::client::whep`, reading each frame's stamp
//! as the other viewers do.

use anyhow::{Context, bail};
use mediamesh_media::h264::sei::read_stamp;

use crate::viewers::{Phase, Tally, now_us};

/// A WebRTC viewer: str0m receives, decrypts and reassembles each frame; the viewer reads its
/// stamp. Its session ends with the task (ICE consent frees it on the hub).
pub async fn whep(url: &str, phase: &Phase, t: &mut Tally) -> anyhow::Result<()> {
    use mediamesh_hub::client::whep::{WhepClient, WhepItem};
    let mut client = WhepClient::connect(url, &mediamesh_hub::client::ConnectOptions::default())
        .await
        .with_context(|| format!("offering to {url}"))?;
    loop {
        match client.next().await? {
            None => bail!("the peer connection ended"),
            Some(WhepItem::Video(f)) => {
                t.bytes(phase, f.data.len());
                t.frame(phase, read_stamp(&f.data), now_us(), None);
            }
            Some(_) => {}
        }
    }
}

/// A viewer of Janus's streaming plugin: a session and a handle over Janus's HTTP API, `watch`,
/// the offer from the event long poll, the str0m receiver's answer with `start`; then frames
/// as for WHEP.
pub async fn janus(addr: &str, mountpoint: u64, phase: &Phase, t: &mut Tally) -> anyhow::Result<()> {
    use mediamesh_hub::client::whep::{Receiver, WhepItem};
    use serde_json::{Value, json};
    let sa: std::net::SocketAddr = addr.parse()?;
    let post = async |path: String, body: Value| -> anyhow::Result<Value> {
        let a = mediamesh_testkit::http::request_with_body(
            sa,
            "POST",
            &path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await;
        let v: Value = serde_json::from_str(&a.body).with_context(|| format!("janus said {}", a.body))?;
        if v["janus"] == "error" {
            bail!("janus: {}", v["error"]);
        }
        Ok(v)
    };
    let session = post("/janus".into(), json!({"janus": "create", "transaction": "c"})).await?["data"]["id"]
        .as_u64()
        .context("no session id")?;
    let handle = post(
        format!("/janus/{session}"),
        json!({"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": "a"}),
    )
    .await?["data"]["id"]
        .as_u64()
        .context("no handle id")?;
    post(
        format!("/janus/{session}/{handle}"),
        json!({"janus": "message", "transaction": "w", "body": {"request": "watch", "id": mountpoint}}),
    )
    .await?;
    let offer = loop {
        let a = mediamesh_testkit::http::request(sa, "GET", &format!("/janus/{session}?maxev=1"), &[]).await;
        let v: Value = serde_json::from_str(&a.body).with_context(|| format!("janus said {}", a.body))?;
        let events = if let Value::Array(all) = v { all } else { vec![v] };
        if let Some(sdp) = events.iter().find_map(|e| e["jsep"]["sdp"].as_str()) {
            break sdp.to_owned();
        }
    };
    let (mut receiver, answer) = Receiver::answer(&offer, addr).await?;
    if std::env::var_os("JANUS_DEBUG").is_some() {
        eprintln!("OFFER\n{offer}\nANSWER\n{answer}");
    }
    post(
        format!("/janus/{session}/{handle}"),
        json!({"janus": "message", "transaction": "s", "body": {"request": "start"}, "jsep": {"type": "answer", "sdp": answer}}),
    )
    .await?;
    loop {
        match receiver.next().await? {
            None => bail!("the peer connection ended"),
            Some(WhepItem::Video(f)) => {
                t.bytes(phase, f.data.len());
                t.frame(phase, read_stamp(&f.data), now_us(), None);
            }
            Some(_) => {}
        }
    }
}
