"""A WHEP client on aiortc (PyPI), a WebRTC stack independent of the browsers': offers to
receive video, decodes frames until it has enough, and prints what it got as JSON.

    aiortc_whep.py URL FRAMES [--vanish]

With --vanish it exits once it has the frames without closing anything, as a closed tab or a
crashed client does.
"""

import asyncio
import json
import os
import sys
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription


def post(url, sdp):
    request = urllib.request.Request(
        url, data=sdp.encode(), method="POST", headers={"Content-Type": "application/sdp"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers["Location"], response.read().decode()


async def main(url, want):
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    frames = []
    enough = asyncio.Event()

    @pc.on("track")
    def on_track(track):
        async def decode():
            while len(frames) < want:
                frame = await track.recv()
                frames.append((frame.width, frame.height))
            enough.set()

        asyncio.ensure_future(decode())

    await pc.setLocalDescription(await pc.createOffer())
    loop = asyncio.get_running_loop()
    status, location, answer = await loop.run_in_executor(None, post, url, pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    try:
        await asyncio.wait_for(enough.wait(), 30)
    except asyncio.TimeoutError:
        pass
    sizes = sorted(set(frames))
    print(json.dumps({"status": status, "location": location, "frames": len(frames), "sizes": sizes}), flush=True)
    if "--vanish" in sys.argv:
        os._exit(0)
    await pc.close()


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
