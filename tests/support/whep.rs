//! A WHEP client for tests, in the browser: what a page needs to play a stream over WebRTC.

#![allow(dead_code)]

use std::time::Duration;

use mediamesh_testkit::browser::Browser;

/// A WHEP client of a few lines: a receive-only video transceiver, the offer POSTed, the answer
/// applied; the video element plays what arrives.
pub const WHEP_PLAY: &str = r#"
const [url, audio] = arguments;
const pc = new RTCPeerConnection();
const t = pc.addTransceiver('video', { direction: 'recvonly' });
const exts = t.getHeaderExtensionsToNegotiate();
for (const e of exts) if (e.uri.endsWith('/abs-capture-time')) e.direction = 'recvonly';
t.setHeaderExtensionsToNegotiate(exts);
if (audio) pc.addTransceiver('audio', { direction: 'recvonly' });
const v = document.createElement('video');
v.muted = true; v.autoplay = true; v.playsInline = true; document.body.appendChild(v);
window.whepVideo = v; window.whepPc = pc;
const media = new MediaStream();
pc.ontrack = (e) => { media.addTrack(e.track); v.srcObject = media; v.play().catch(() => {}); };
const offer = await pc.createOffer();
await pc.setLocalDescription(offer);
const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer.sdp });
if (r.status !== 201) return { status: r.status, body: await r.text() };
const sdp = await r.text();
await pc.setRemoteDescription({ type: 'answer', sdp });
return { status: r.status, location: r.headers.get('Location'), sdp, omitted: r.headers.get('X-Mediamesh-Audio-Omitted') };
"#;

/// Frames decoded and dropped so far by the video of a [`WHEP_PLAY`] client, and its ICE state,
/// 5 s after the call (for `eval_async`).
pub const FIVE_SECONDS: &str = "const v = window.whepVideo; const q0 = v.getVideoPlaybackQuality();
    setTimeout(() => { const q = v.getVideoPlaybackQuality();
      done({ frames: q.totalVideoFrames - q0.totalVideoFrames, dropped: q.droppedVideoFrames - q0.droppedVideoFrames,
             state: window.whepPc.iceConnectionState }); }, 5000);";

/// Plays `whep` (a full URL) in `b` with [`WHEP_PLAY`]; the client's answer (`status`,
/// `location`, `sdp`), after checking it is `201`.
pub fn play(b: &Browser, whep: &str) -> serde_json::Value {
    play_with(b, whep, false)
}

/// [`play`], offering to receive audio too when `audio`.
pub fn play_with(b: &Browser, whep: &str, audio: bool) -> serde_json::Value {
    let answer = b.eval_async(
        &format!("const f = async (arguments) => {{ {WHEP_PLAY} }}; f(['{whep}', {audio}]).then(done, e => done({{ error: String(e) }}));"),
        Duration::from_secs(10),
    );
    assert_eq!(answer["status"], 201, "{answer}");
    answer
}
