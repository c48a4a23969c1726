#!/usr/bin/python3
# GStreamer RTSP peer server for `mediamesh-bench`.
#
#   /usr/bin/python3 scripts/bench/gst-rtsp-server.py --port P [--path /cam] [--address 127.0.0.1]
#
# Must run with Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0;
# a pyenv/venv python has no `gi`).
#
# stdin: records [u32 big-endian length][one H.264 Annex-B access unit]. A reader thread
# pushes each AU as one buffer into the appsrc of the live (shared) media; records that
# arrive while no media exists (before the first client, or between medias) are discarded.
# stdout: exactly one line `ready` once the server is attached and listening.
# Exits 0 on stdin EOF, SIGTERM or SIGINT.
#
# One shared media for all clients: the pipeline runs once and rtsp-server fans the RTP
# packets out to every transport (no per-client encoding or payloading):
#   appsrc (live, do-timestamp, alignment=au) ! rtph264pay config-interval=-1
# No h264parse: rtph264pay takes AU-aligned byte-stream directly and finds SPS/PPS in band.
# h264parse adds nothing here and breaks one useful case: a record that ends with an access
# unit delimiter (AU + 00 00 00 01 09 F0) makes h264parse (alignment=au) emit a flood of
# empty buffers (~80% CPU, readers get nothing). Without it the trailing AUD goes out as its
# own RTP packet right after the AU, which lets ffmpeg's RTP H.264 parser finish the AU at
# once instead of when the next AU starts (40 ms at 25 fps).
# SPS/PPS: config-interval=-1 sends them in band before every IDR. The first client's SDP
# has no sprop-parameter-sets (caps come from appsrc before any SPS is seen); later clients'
# SDP has them. Every client joins mid-GOP: an ffmpeg `-c copy` reader outputs nothing until
# the next IDR (ffmpeg drops leading non-keyframes unless -copyinkf).
# appsrc queue: bounded at 250 AUs (10 s), dropping the oldest; max-bytes=0 because with a
# leaky appsrc the default max-bytes (200 kB, ~0.8 s here) also counts as full. rtsp-server
# 1.22 paces the shared pipeline to its fastest TCP client, so when every client lags at
# once (100 ffmpeg readers starting together on 2 cores) the pipeline stalls for a second
# or more and AUs queue here; with the 200 kB limit that join storm dropped frames for all
# clients, with this bound it did not. In steady state nothing queues.
# rtsp-stream's sinks sync on the clock and basesink's processing-deadline (20 ms default)
# would hold every packet 20 ms; it is set to 0 below.
import argparse
import os
import signal
import struct
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstBase, GstRtspServer  # noqa: E402

PIPELINE = (
    "( appsrc name=src is-live=true format=time do-timestamp=true min-latency=0 "
    "max-bytes=0 max-buffers=250 leaky-type=downstream "
    "caps=video/x-h264,stream-format=byte-stream,alignment=au "
    "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
)


class Feeder:
    """Holds the appsrc of the current media (or None)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.appsrc = None

    def set(self, appsrc):
        with self.lock:
            self.appsrc = appsrc

    def clear(self, appsrc):
        with self.lock:
            if self.appsrc is appsrc:
                self.appsrc = None

    def push(self, data):
        with self.lock:
            src = self.appsrc
        if src is None:
            return
        src.emit("push-buffer", Gst.Buffer.new_wrapped(data))


def read_exact(f, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def reader(feeder, loop):
    f = sys.stdin.buffer
    try:
        while True:
            hdr = read_exact(f, 4)
            if hdr is None:
                break
            (n,) = struct.unpack(">I", hdr)
            data = read_exact(f, n)
            if data is None:
                break
            feeder.push(data)
    except (OSError, ValueError):
        pass
    GLib.idle_add(loop.quit)


def main():
    ap = argparse.ArgumentParser(description="GStreamer RTSP peer server for mediamesh-bench "
                                 "(stdin: [u32 BE length][H.264 AU] records)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--address", default="127.0.0.1")
    args = ap.parse_args()

    Gst.init(None)
    loop = GLib.MainLoop()
    feeder = Feeder()

    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    # 100 viewers connect at once: the default listen backlog (5) would drop SYNs.
    server.set_backlog(1024)

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)  # one pipeline for all clients
    factory.set_suspend_mode(GstRtspServer.RTSPSuspendMode.NONE)
    factory.set_eos_shutdown(False)
    factory.set_latency(0)  # rtpbin latency; only matters for RECORD, keep minimal
    factory.set_transport_mode(GstRtspServer.RTSPTransportMode.PLAY)
    factory.set_stop_on_disconnect(False)

    def on_unprepared(media, src):
        feeder.clear(src)

    def on_element_added(_bin, _sub, element):
        # rtsp-stream's sinks (appsink for RTP/TCP, multiudpsink for UDP) sync on the
        # clock (rtsp-stream forces appsink sync=TRUE unless ONVIF Rate-Control=no), and
        # basesink's default processing-deadline (20 ms) is added to a live pipeline's
        # latency: every packet would be held 20 ms. With deadline 0 a buffer (timestamped
        # when pushed into appsrc) is due at once, so packets go out as soon as payloaded.
        if element.__gtype__.is_a(GstBase.BaseSink.__gtype__):
            element.set_property("processing-deadline", 0)

    def on_media_configure(_factory, media):
        media.set_reusable(False)
        pipeline = media.get_element().get_parent()
        if pipeline is not None:
            pipeline.connect("deep-element-added", on_element_added)
        src = media.get_element().get_by_name("src")
        media.connect("unprepared", on_unprepared, src)
        feeder.set(src)

    factory.connect("media-configure", on_media_configure)
    server.get_mount_points().add_factory(args.path, factory)

    if server.attach(None) == 0:
        print("failed to attach RTSP server", file=sys.stderr)
        sys.exit(1)

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, lambda *_: (loop.quit(), False)[1])

    threading.Thread(target=reader, args=(feeder, loop), daemon=True).start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    loop.run()

    # Shut down: stop feeding and close the client connections.
    feeder.set(None)
    server.client_filter(lambda _srv, client, *_: GstRtspServer.RTSPFilterResult.REMOVE)
    sys.stdout.flush()
    sys.stderr.flush()
    # The reader thread may be blocked in read(); don't wait for it or GStreamer threads.
    os._exit(0)


if __name__ == "__main__":
    main()
