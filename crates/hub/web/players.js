// Players: each plays one stream into a <video> and reports its state. The same shape for
// every protocol: new Player(video, stream, auth, onState), start(), stop(), and `bytes` (media
// bytes received, for the bitrate).
"use strict";

// How far behind the newest frame a player may fall before it jumps forward, and from where it
// speeds up a little instead (seconds).
const LIVE_JUMP = 1.0, LIVE_CATCH_UP = 0.3;
// Most messages waiting for the SourceBuffer; beyond that the page cannot keep up (a hidden tab)
// and the player asks the hub to start it again at a keyframe.
const MAX_QUEUE = 150;

function streamPath(stream, suffix) {
  return `api/v1/nodes/${encodeURIComponent(stream.node)}/streams/${encodeURIComponent(stream.name)}/${suffix}`;
}

class MsePlayer {
  constructor(video, stream, auth, onState) {
    Object.assign(this, { video, stream, auth, onState });
    this.bytes = 0;
    this.retries = 0;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.reset();
  }

  reset() {
    this.queue = [];
    this.sb = null;
    this.mime = null;
    if (this.ms && this.video.src) {
      URL.revokeObjectURL(this.video.src);
      this.video.removeAttribute("src");
      this.video.load();
    }
    this.ms = null;
  }

  connect() {
    const url = new URL(streamPath(this.stream, "mse"), location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    // A browser's WebSocket cannot set headers: the token goes in the query (never logged).
    const token = this.auth.queryToken();
    if (token) url.searchParams.set("token", token);
    this.onState(this.retries ? "reconnecting" : "connecting");
    this.endReason = null;
    const ws = (this.ws = new WebSocket(url));
    ws.binaryType = "arraybuffer";
    ws.onmessage = (m) => (typeof m.data === "string" ? this.event(JSON.parse(m.data)) : this.media(m.data));
    ws.onclose = () => {
      if (this.stopped || ws !== this.ws) return;
      this.reset();
      const away = this.endReason && /edge|node/.test(this.endReason);
      this.onState(away ? "edge away" : "reconnecting", this.endReason);
      // Back off: 0.25 s, 0.5 s, 1 s ... 4 s.
      const delay = Math.min(4000, 250 * 2 ** Math.min(this.retries, 4));
      this.retries++;
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  event(ev) {
    switch (ev.type) {
      case "init":
        this.init(ev.mime);
        break;
      case "skip":
        this.jump = true;
        break;
      case "end":
        this.endReason = ev.reason;
        break;
      case "error":
        this.onState("error", ev.message);
        break;
    }
  }

  init(mime) {
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
      this.onState("error", `this browser cannot play ${mime}`);
      this.stopped = true;
      this.ws.close(1000);
      return;
    }
    this.jump = true;
    if (this.sb && this.mime !== mime && this.sb.changeType) {
      this.sb.changeType(mime);
      this.mime = mime;
      return;
    }
    if (this.sb && this.mime === mime) return;
    this.reset();
    this.mime = mime;
    const ms = (this.ms = new MediaSource());
    this.video.src = URL.createObjectURL(ms);
    ms.addEventListener("sourceopen", () => {
      if (ms !== this.ms) return;
      const sb = (this.sb = ms.addSourceBuffer(mime));
      sb.mode = "segments";
      sb.addEventListener("updateend", () => this.appended());
      sb.addEventListener("error", () => this.resync());
      this.pump();
    }, { once: true });
  }

  media(data) {
    this.bytes += data.byteLength;
    this.queue.push(data);
    if (this.queue.length > MAX_QUEUE) {
      this.resync();
      return;
    }
    this.pump();
  }

  pump() {
    const sb = this.sb;
    if (!sb || sb.updating || !this.queue.length || this.ms.readyState !== "open") return;
    try {
      sb.appendBuffer(this.queue.shift());
    } catch (e) {
      this.resync();
    }
  }

  // Starts again at the newest keyframe: the hub sends a fresh init segment.
  resync() {
    this.queue = [];
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "resync" }));
    const ms = this.ms;
    if (ms && ms.readyState === "open" && this.sb && !this.sb.updating) {
      const b = this.sb.buffered;
      if (b.length) this.sb.remove(0, b.end(b.length - 1));
    }
    this.jump = true;
  }

  appended() {
    const v = this.video, b = v.buffered;
    if (b.length) {
      const end = b.end(b.length - 1);
      const behind = end - v.currentTime;
      if (this.jump || behind > LIVE_JUMP || v.currentTime < b.start(b.length - 1)) {
        v.currentTime = Math.max(b.start(b.length - 1), end - 0.05);
        this.jump = false;
      }
      v.playbackRate = behind > LIVE_CATCH_UP ? 1.1 : 1.0;
      // Keep about ten seconds behind the playhead.
      if (v.currentTime - b.start(0) > 20 && !this.sb.updating) {
        this.sb.remove(0, v.currentTime - 10);
        return;
      }
      if (v.paused) v.play().catch(() => {});
    }
    this.pump();
  }
}

// LL-HLS: hls.js where the browser has MSE (Chromium, Firefox), the browser's own player where
// it plays HLS itself (Safari). hls.js sends the token as a header; the native player cannot,
// so it gets `?token=`, which the hub carries into every URI of its playlists.
class HlsPlayer {
  constructor(video, stream, auth, onState) {
    Object.assign(this, { video, stream, auth, onState });
    this.bytes = 0;
    this.retries = 0;
  }

  url(withToken) {
    const url = new URL(streamPath(this.stream, "hls/index.m3u8"), location.href);
    const token = this.auth.queryToken();
    if (withToken && token) url.searchParams.set("token", token);
    return url.toString();
  }

  start() {
    this.stopped = false;
    this.onState(this.retries ? "reconnecting" : "connecting");
    const v = this.video;
    if (window.Hls && Hls.isSupported()) {
      const hls = (this.hls = new Hls({
        lowLatencyMode: true,
        backBufferLength: 10,
        maxLiveSyncPlaybackRate: 1.2,
        xhrSetup: (xhr) => {
          for (const [k, val] of Object.entries(this.auth.headers())) xhr.setRequestHeader(k, val);
        },
      }));
      hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
        const s = (d.part || d.frag).stats;
        this.bytes += s.loaded || s.total || 0;
      });
      hls.on(Hls.Events.ERROR, (_, d) => {
        if (!d.fatal || this.stopped) return;
        if (d.type === Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
          return;
        }
        // The hub or the edge went away: start again with backoff, in the same page.
        this.onState("reconnecting", d.details);
        this.restart();
      });
      hls.loadSource(this.url(false));
      hls.attachMedia(v);
    } else if (v.canPlayType("application/vnd.apple.mpegurl")) {
      v.src = this.url(true);
      v.onerror = () => this.restart();
    } else {
      this.onState("error", "this browser plays neither HLS nor MSE");
      return;
    }
    v.play().catch(() => {});
  }

  restart() {
    this.teardown();
    const delay = Math.min(4000, 250 * 2 ** Math.min(this.retries, 4));
    this.retries++;
    this.timer = setTimeout(() => this.start(), delay);
  }

  teardown() {
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
    this.video.onerror = null;
    this.video.removeAttribute("src");
    this.video.load();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.teardown();
  }
}

// WebRTC over WHEP (RFC 9725): a receive-only offer POSTed with the token as a bearer header,
// the answer applied, DELETE on the session's address when stopped. A connection that is not
// up within WEBRTC_CONNECT_MS (UDP blocked on the way, say) calls `onFallback`, and the page
// plays the stream over MSE instead.
const WEBRTC_CONNECT_MS = 4000;

// Milliseconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_MS = 2208988800000;

// The hub stamps each frame's capture time in an RTP header extension (abs-capture-time),
// which browsers leave out of their offers unless asked.
function askForCaptureTimes(transceiver) {
  if (!transceiver.getHeaderExtensionsToNegotiate) return;
  const exts = transceiver.getHeaderExtensionsToNegotiate();
  for (const e of exts) if (e.uri.endsWith("/abs-capture-time")) e.direction = "recvonly";
  try {
    transceiver.setHeaderExtensionsToNegotiate(exts);
  } catch {
    // An older browser: latency then comes from the sender reports alone.
  }
}

class WebRtcPlayer {
  constructor(video, stream, auth, onState) {
    Object.assign(this, { video, stream, auth, onState });
    this.bytes = 0;
    this.retries = 0;
    this.onFallback = null;
  }

  async start() {
    this.stopped = false;
    this.onState(this.retries ? "reconnecting" : "connecting");
    const pc = (this.pc = new RTCPeerConnection());
    const video = pc.addTransceiver("video", { direction: "recvonly" });
    askForCaptureTimes(video);
    pc.addTransceiver("audio", { direction: "recvonly" });
    // Video and audio (when the stream's passes through) play from one element.
    const media = new MediaStream();
    pc.ontrack = (e) => {
      media.addTrack(e.track);
      if (this.video.srcObject !== media) this.video.srcObject = media;
      this.video.play().catch(() => {});
    };
    let connected = false;
    pc.onconnectionstatechange = () => {
      if (this.stopped || this.pc !== pc) return;
      if (pc.connectionState === "connected") connected = true;
      if (["failed", "disconnected", "closed"].includes(pc.connectionState)) {
        if (!connected) return; // the connect timer decides
        this.onState("reconnecting", `WebRTC ${pc.connectionState}`);
        this.restart();
      }
    };
    this.statsTimer = setInterval(async () => {
      if (this.pc !== pc) return;
      const stats = await pc.getStats().catch(() => null);
      stats?.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") this.bytes = s.bytesReceived;
      });
    }, 1000);
    try {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      const r = await fetch(streamPath(this.stream, "whep"), {
        method: "POST",
        headers: { ...this.auth.headers(), "Content-Type": "application/sdp" },
        body: offer.sdp,
        cache: "no-store",
      });
      if (r.status !== 201) {
        const body = await r.json().catch(() => ({}));
        throw new Error(body.message || `${r.status} ${r.statusText}`);
      }
      this.location = r.headers.get("Location");
      const omitted = r.headers.get("X-Mediamesh-Audio-Omitted");
      if (omitted && this.onNote)
        this.onNote(`No sound over WebRTC: browsers cannot play ${omitted.toUpperCase()} there; MSE and LL-HLS carry it.`);
      await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
      // Counted from the answer: a camera that is just starting delays the answer, not ICE.
      this.connectTimer = setTimeout(() => {
        if (!this.stopped && this.pc === pc && !connected) this.fallback(`no WebRTC connection within ${WEBRTC_CONNECT_MS / 1000} s`);
      }, WEBRTC_CONNECT_MS);
    } catch (e) {
      if (!this.stopped && this.pc === pc) this.fallback(e.message);
    }
  }

  // The glass-to-glass latency of the frame on screen from the capture time the hub sends with
  // it (abs-capture-time, in NTP milliseconds), for cameras without a burned-in stamp; null
  // where the browser does not expose it.
  captureLatency(meta) {
    const r = this.pc?.getReceivers().find((x) => x.track?.kind === "video");
    const s = r?.getSynchronizationSources?.()[0];
    if (!s?.captureTimestamp || s.rtpTimestamp !== meta.rtpTimestamp) return null;
    return { ms: performance.timeOrigin + meta.expectedDisplayTime - (s.captureTimestamp - NTP_UNIX_OFFSET_MS) };
  }

  fallback(why) {
    if (this.onFallback) this.onFallback(why);
    else {
      this.onState("reconnecting", why);
      this.restart();
    }
  }

  restart() {
    this.teardown();
    const delay = Math.min(4000, 250 * 2 ** Math.min(this.retries, 4));
    this.retries++;
    this.timer = setTimeout(() => this.start(), delay);
  }

  teardown() {
    clearTimeout(this.connectTimer);
    clearInterval(this.statsTimer);
    if (this.location) {
      // keepalive: the DELETE still goes out when the page is closing.
      fetch(this.location, { method: "DELETE", headers: this.auth.headers(), keepalive: true }).catch(() => {});
      this.location = null;
    }
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
    this.video.srcObject = null;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.teardown();
  }
}

const PLAYERS = { webrtc: WebRtcPlayer, mse: MsePlayer, hls: HlsPlayer };
