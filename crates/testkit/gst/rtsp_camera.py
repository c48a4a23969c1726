#!/usr/bin/python3
"""An IP camera for mediamesh's tests: GStreamer's RTSP server serving a live test pattern.

Run with Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0). It prints
`READY <port>` once listening, then `SESSIONS <n>` whenever the number of RTSP sessions
changes, so a test can check how many sessions a client holds.

Every GStreamer element the pipeline uses is checked first: a missing one is reported as
`MISSING <element> <debian-package>` and the script exits with status 3, so the test fails
naming what to install instead of timing out.
"""
import argparse
import re
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

VIDEO = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} "
    "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval={ci}",
    # 4:2:0, as cameras send (Main profile); left to negotiate, x265 takes 4:4:4 (RExt).
    "h265": "videoconvert ! video/x-raw,format=I420 ! x265enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} "
    "! rtph265pay name=pay0 pt=96 config-interval={ci}",
}
AUDIO = {
    "aac": "audio/x-raw,rate=48000,channels=2 ! avenc_aac ! rtpmp4gpay name=pay1 pt=97",
    "pcma": "audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay1 pt=8",
    "pcmu": "audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1 pt=0",
    "opus": "audio/x-raw,rate=48000,channels=2 ! opusenc ! rtpopuspay name=pay1 pt=98",
}

# The Debian package of every element the pipelines above use.
PACKAGES = {
    "videotestsrc": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "audiotestsrc": "gstreamer1.0-plugins-base",
    "audioconvert": "gstreamer1.0-plugins-base",
    "audioresample": "gstreamer1.0-plugins-base",
    "opusenc": "gstreamer1.0-plugins-base",
    "timeoverlay": "gstreamer1.0-x",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "x265enc": "gstreamer1.0-plugins-bad",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "rtph265pay": "gstreamer1.0-plugins-good",
    "rtpmp4gpay": "gstreamer1.0-plugins-good",
    "rtppcmapay": "gstreamer1.0-plugins-good",
    "rtppcmupay": "gstreamer1.0-plugins-good",
    "rtpopuspay": "gstreamer1.0-plugins-good",
    "alawenc": "gstreamer1.0-plugins-good",
    "mulawenc": "gstreamer1.0-plugins-good",
    "avenc_aac": "gstreamer1.0-libav",
}


def check_elements(launch):
    """Exits with status 3 naming the first element of `launch` GStreamer does not have."""
    tokens = launch.replace("(", " ").replace(")", " ").replace("!", " ").split()
    # Properties have "=", caps have "/": the bare words are the elements.
    elements = [t for t in tokens if "=" not in t and "/" not in t]
    unknown = [e for e in elements if e not in PACKAGES]
    if unknown:
        print(f"ERROR elements without a package in PACKAGES: {unknown}", flush=True)
        sys.exit(1)
    for element in elements:
        if Gst.ElementFactory.find(element) is None:
            print(f"MISSING {element} {PACKAGES[element]}", flush=True)
            sys.exit(3)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--path", default="/cam")
    p.add_argument("--video", choices=sorted(VIDEO), default="h264")
    p.add_argument("--audio", choices=sorted(AUDIO) + ["none"], default="aac")
    p.add_argument("--auth", choices=["none", "basic", "digest"], default="none")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="secret")
    p.add_argument("--size", default="320x240")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--gop", type=int, default=25)
    p.add_argument("--kbps", type=int, default=500)
    p.add_argument("--inband-params", action="store_true", help="repeat SPS/PPS before every keyframe")
    a = p.parse_args()

    Gst.init(None)
    width, height = a.size.split("x")
    launch = (
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={a.fps}/1 "
        f"! timeoverlay ! " + VIDEO[a.video].format(gop=a.gop, kbps=a.kbps, ci=-1 if a.inband_params else 0)
    )
    if a.audio != "none":
        launch += " audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! " + AUDIO[a.audio]
    launch += " )"
    check_elements(launch)

    server = GstRtspServer.RTSPServer()
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    if a.auth != "none":
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        if a.auth == "basic":
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        else:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(a.user, a.password, token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("user", "media.factory.access", True)
        perms.add_permission_for_role("user", "media.factory.construct", True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(a.path, factory)
    if server.attach(None) == 0:
        print("ERROR cannot listen", flush=True)
        sys.exit(1)
    print(f"READY {server.get_bound_port()}", flush=True)

    pool = server.get_session_pool()
    last = [-1]

    def report():
        pool.cleanup()
        n = pool.get_n_sessions()
        if n != last[0]:
            last[0] = n
            print(f"SESSIONS {n}", flush=True)
        return True

    GLib.timeout_add(100, report)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
