// The page: the hub's nodes and their streams, kept current from the REST API, a player per
// stream, and each player's state, resolution, frame rate, bitrate and live latency.
"use strict";

const NODES_EVERY_MS = 2000;
// Streams that start playing when the page opens; the others wait for their Play button (each
// one started is a camera the edge starts sending).
const AUTOPLAY = 4;

// The viewer's token: from the address's fragment (`#token=…`, which the browser never sends to
// a server, so it reaches no log), typed in, or a session token the hub issued for a user name
// and password (the password itself is never kept); kept for this tab only.
const auth = {
  token: null,
  load() {
    const hash = new URLSearchParams(location.hash.slice(1));
    if (hash.get("token")) {
      sessionStorage.setItem("mediamesh.token", hash.get("token"));
      history.replaceState(null, "", location.pathname + location.search);
    }
    this.token = sessionStorage.getItem("mediamesh.token");
  },
  set(token) {
    this.token = token || null;
    if (token) sessionStorage.setItem("mediamesh.token", token);
    else sessionStorage.removeItem("mediamesh.token");
  },
  // `X-Requested-With` asks the hub to leave out its `Basic` challenge on a 401, which would
  // make the browser open its own password dialog over the page's form.
  headers() {
    const h = { "X-Requested-With": "XMLHttpRequest" };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  },
  queryToken() {
    return this.token;
  },
};

const $ = (id) => document.getElementById(id);
// Whether the default protocol has been set from the hub's answer (once).
let defaulted = false;
const cards = new Map(); // "node/stream" -> card

function status(text) {
  $("status").textContent = text || "";
}

function showLogin(reason) {
  $("login").hidden = false;
  $("login-reason").textContent = reason;
}

// `Basic` credentials from text in any script (btoa takes Latin-1 only).
function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

// Exchanges a user name and password for a session token (`POST /api/v1/session`).
async function signIn(user, password) {
  const r = await fetch("api/v1/session", {
    method: "POST",
    headers: { Authorization: basic(user, password), "X-Requested-With": "XMLHttpRequest" },
    cache: "no-store",
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.message || `${r.status} ${r.statusText}`);
  return body.token;
}

async function api(path) {
  const r = await fetch(path, { headers: auth.headers(), cache: "no-store" });
  if (r.status === 401 || r.status === 403) {
    const body = await r.json().catch(() => ({}));
    const e = new Error(body.message || r.statusText);
    e.status = r.status;
    throw e;
  }
  if (!r.ok) throw new Error(`${path}: ${r.status} ${r.statusText}`);
  return r.json();
}

class Card {
  constructor(node, name) {
    this.stream = { node, name };
    this.el = $("stream-card").content.firstElementChild.cloneNode(true);
    this.el.dataset.stream = `${node}/${name}`;
    this.video = this.el.querySelector("video");
    this.canvas = document.createElement("canvas");
    this.el.querySelector(".name").textContent = name;
    this.el.querySelector(".play").addEventListener("click", () => (this.player ? this.stop() : this.play()));
    this.setState("stopped");
    this.frames = 0;
    this.latencies = [];
  }

  // A line under the picture about what this player leaves out (e.g. audio it cannot carry).
  note(text) {
    const n = this.el.querySelector(".note");
    n.textContent = text;
    n.hidden = !text;
    if (text) this.el.dataset.note = text;
    else delete this.el.dataset.note;
  }

  setState(state, detail) {
    const s = this.el.querySelector(".state");
    s.textContent = state;
    s.dataset.state = state;
    s.title = detail || "";
    this.state = state;
  }

  // Plays over the chosen protocol, or `protocol`. WebRTC that cannot connect falls back to MSE
  // for this stream, and the card says why.
  play(protocol) {
    const chosen = protocol || $("protocol").value;
    const Player = PLAYERS[chosen];
    this.player = new Player(this.video, this.stream, auth, (state, detail) => this.setState(state, detail));
    this.note("");
    this.player.onNote = (text) => this.note(text);
    if (chosen === "webrtc") {
      this.player.onFallback = (why) => {
        this.stop();
        this.play("mse");
        this.el.dataset.fallback = why;
        this.el.querySelector(".state").title = `WebRTC: ${why}; playing over MSE`;
      };
    }
    this.el.dataset.protocol = chosen;
    this.el.querySelector(".play").textContent = "Stop";
    this.player.start();
    this.lastBytes = 0;
    this.watchFrames();
  }

  stop() {
    if (!this.player) return;
    this.player.stop();
    this.player = null;
    this.el.querySelector(".play").textContent = "Play";
    this.setState("stopped");
  }

  // Counts displayed frames and reads each one's stamp (requestVideoFrameCallback: once per
  // frame put on screen, with the time it is shown).
  watchFrames() {
    const v = this.video;
    if (!v.requestVideoFrameCallback) return;
    const player = this.player;
    const onFrame = (now, meta) => {
      if (this.player !== player) return;
      this.frames++;
      if (this.state !== "live") this.setState("live");
      const l = MediameshStamp.latency(v, this.canvas, meta) || player.captureLatency?.(meta);
      if (l) {
        this.latencies.push(l.ms);
        this.lastStamp = l;
      }
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  }

  // Once a second: frame rate, bitrate and latency over that second.
  tick() {
    const set = (cls, text) => (this.el.querySelector(cls).textContent = text);
    if (!this.player) return;
    const v = this.video;
    set(".resolution", v.videoWidth ? `${v.videoWidth}x${v.videoHeight}` : "–");
    set(".fps", `${this.frames}`);
    this.el.dataset.frames = String(Number(this.el.dataset.frames || 0) + this.frames);
    this.frames = 0;
    const bytes = this.player.bytes - this.lastBytes;
    this.lastBytes = this.player.bytes;
    set(".bitrate", bytes ? `${((bytes * 8) / 1e6).toFixed(2)} Mbit/s` : "–");
    if (this.latencies.length) {
      const sorted = this.latencies.slice().sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)];
      set(".latency", `${Math.round(median)} ms`);
      this.el.dataset.latencyMs = String(Math.round(median));
      this.latencies = [];
    } else {
      set(".latency", "–");
    }
  }
}

function render(nodes) {
  const main = $("nodes");
  const seen = new Set();
  for (const n of nodes) {
    let section = main.querySelector(`section.node[data-node="${CSS.escape(n.name)}"]`);
    if (!section) {
      section = document.createElement("section");
      section.className = "node";
      section.dataset.node = n.name;
      section.innerHTML = "<h2></h2><div class=streams></div>";
      section.querySelector("h2").textContent = n.name;
      main.appendChild(section);
    }
    section.classList.toggle("away", n.state === "away");
    for (const s of n.streams) {
      const key = `${n.name}/${s.name}`;
      seen.add(key);
      if (!cards.has(key)) {
        const c = new Card(n.name, s.name);
        cards.set(key, c);
        section.querySelector(".streams").appendChild(c.el);
        if (cards.size <= AUTOPLAY) c.play();
      }
      const c = cards.get(key);
      if (n.state === "away" && c.player && c.state !== "live") c.setState("edge away");
    }
  }
  for (const [key, c] of cards) {
    if (!seen.has(key)) {
      c.stop();
      c.el.remove();
      cards.delete(key);
    }
  }
  for (const section of main.querySelectorAll("section.node")) {
    if (!section.querySelector(".stream")) section.remove();
  }
}

async function refresh() {
  try {
    const [hub, nodes] = await Promise.all([api("api/v1/hub"), api("api/v1/nodes")]);
    $("hub").textContent = hub.name ? `hub ${hub.name}` : "";
    // WebRTC is the default where the hub serves it, unless a protocol was chosen.
    const webrtcOption = document.querySelector('#protocol option[value="webrtc"]');
    webrtcOption.disabled = !hub.webrtc;
    if (!hub.webrtc && $("protocol").value === "webrtc") $("protocol").value = "mse";
    if (hub.webrtc && !chosen && !defaulted) $("protocol").value = "webrtc";
    defaulted = true;
    $("login").hidden = true;
    $("signout").hidden = !auth.token;
    status(nodes.nodes.length ? "" : "No edge node is connected yet.");
    render(nodes.nodes);
  } catch (e) {
    if (e.status === 401) showLogin(auth.token ? "Signed out: " + e.message : "This hub asks who you are.");
    else if (e.status === 403) showLogin("You may not list the hub's streams: " + e.message);
    else status(`The hub does not answer (${e.message}); trying again.`);
  }
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const user = $("user").value.trim();
  const password = $("password").value;
  $("password").value = "";
  if (user) {
    try {
      auth.set(await signIn(user, password));
    } catch (e) {
      showLogin(`Sign-in refused: ${e.message}`);
      return;
    }
  } else {
    auth.set($("token").value.trim());
  }
  $("token").value = "";
  refresh();
});
$("signout").addEventListener("click", async () => {
  // A session the hub issued is ended there too; a token from elsewhere is only forgotten.
  if (auth.token && auth.token.startsWith("mms_")) {
    await fetch("api/v1/session", { method: "DELETE", headers: auth.headers() }).catch(() => {});
  }
  auth.set(null);
  for (const c of cards.values()) c.stop();
  location.reload();
});
// The protocol: `?protocol=hls` in the address, or the last one chosen.
const chosen = new URLSearchParams(location.search).get("protocol") || localStorage.getItem("mediamesh.protocol");
if (chosen && PLAYERS[chosen]) $("protocol").value = chosen;
$("protocol").addEventListener("change", () => {
  localStorage.setItem("mediamesh.protocol", $("protocol").value);
  for (const c of cards.values()) {
    if (c.player) {
      c.stop();
      c.play();
    }
  }
});

// A closed or reloaded page ends its sessions at once (WebRTC's would otherwise hold a camera
// until ICE consent runs out).
window.addEventListener("pagehide", () => cards.forEach((c) => c.stop()));

auth.load();
refresh();
setInterval(refresh, NODES_EVERY_MS);
setInterval(() => cards.forEach((c) => c.tick()), 1000);
