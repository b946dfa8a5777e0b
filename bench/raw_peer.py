"""Raw aiortc sender for the baseline: a bare data channel, same chunk size and
the same bufferedAmount flow control as p2p-nb, no protocol around it.

Reads the receiver's offer (JSON line) on stdin, prints its answer, then on a
"go N" message sends N bytes and prints its peak RSS when the receiver says "done".
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from p2p_nb.mesh import LOW_WATER
from p2p_nb.protocol import MAX_FRAME_BYTES
from p2p_nb.transfer import TransferSettings

HIGH_WATER = TransferSettings().high_water


async def main() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    finished = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    @pc.on("datachannel")
    def on_channel(channel) -> None:  # type: ignore[no-untyped-def]
        channel.on("close", finished.set)
        channel.bufferedAmountLowThreshold = LOW_WATER
        room = asyncio.Event()
        channel.on("bufferedamountlow", room.set)

        async def send(total: int) -> None:
            frame = b"\x00" * MAX_FRAME_BYTES
            sent = 0
            while sent < total:
                while channel.bufferedAmount > HIGH_WATER:
                    room.clear()
                    await room.wait()
                n = min(MAX_FRAME_BYTES, total - sent)
                channel.send(frame[:n])
                sent += n

        @channel.on("message")
        def on_message(msg) -> None:  # type: ignore[no-untyped-def]
            if isinstance(msg, str) and msg.startswith("go "):
                tasks.add(loop.create_task(send(int(msg[3:]))))
            elif msg == "done":
                channel.send(f"rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
            elif msg == "bye":
                finished.set()

    offer = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    await pc.setRemoteDescription(RTCSessionDescription(**offer))
    await pc.setLocalDescription(await pc.createAnswer())
    print(json.dumps({"sdp": pc.localDescription.sdp, "type": "answer"}), flush=True)
    await finished.wait()
    await pc.close()


if __name__ == "__main__":
    asyncio.run(main())
