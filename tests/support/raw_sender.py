"""Send hand-made Ethernet frames from a namespace through AF_PACKET: run as a script inside the
exchange namespace (`ip netns exec NS python raw_sender.py ...`), so the frames enter the veth
exactly as a NIC's would reach the engine.

    raw_sender.py burst IFACE FILE
        send every frame of FILE (4-byte big-endian length, then the frame; repeated) at once
    raw_sender.py flood IFACE FILE SECONDS
        send FILE's frames back to back, over and over, until SECONDS pass (or a signal ends it)
    raw_sender.py stamped IFACE FILE SECONDS INTERVAL MIDNIGHT[,MIDNIGHT...]
        send FILE's frames one by one, one every INTERVAL seconds for at most SECONDS, each with
        its ITCH timestamp set at send time to the nanoseconds since the latest MIDNIGHT passed
        (CLOCK_REALTIME ns): what an exchange whose days begin at those midnights would stamp

Prints the number of frames sent.
"""
from __future__ import annotations

import socket
import struct
import sys
import time

# Ethernet (14) + IPv4 (20) + UDP (8) + MoldUDP64 header (20) + block length (2) + ITCH type,
# locate and tracking (5): the first message's 6-byte timestamp.
FIRST_ITCH_TIMESTAMP_OFFSET = 14 + 20 + 8 + 20 + 2 + 5


def write_frames(path, frames: list[bytes]) -> None:
    with open(path, "wb") as f:
        for frame in frames:
            f.write(struct.pack(">I", len(frame)) + frame)


def read_frames(path: str) -> list[bytes]:
    data, frames, off = open(path, "rb").read(), [], 0
    while off < len(data):
        (n,) = struct.unpack_from(">I", data, off)
        frames.append(data[off + 4:off + 4 + n])
        off += 4 + n
    return frames


def stamp(frame: bytes, since_midnight_ns: int) -> bytes:
    at = FIRST_ITCH_TIMESTAMP_OFFSET
    return frame[:at] + since_midnight_ns.to_bytes(6, "big") + frame[at + 6:]


def main(argv: list[str]) -> int:
    mode, iface, path = argv[:3]
    frames = read_frames(path)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    sent = 0
    if mode == "burst":
        for frame in frames:
            s.send(frame)
            sent += 1
    elif mode == "flood":
        deadline = time.monotonic() + float(argv[3])
        while time.monotonic() < deadline:
            for frame in frames:
                s.send(frame)
            sent += len(frames)
    elif mode == "stamped":
        seconds, interval = float(argv[3]), float(argv[4])
        midnights = [int(m) for m in argv[5].split(",")]
        deadline = time.monotonic() + seconds
        for frame in frames:
            if time.monotonic() >= deadline:
                break
            now = time.time_ns()
            day = max(m for m in midnights if m <= now)
            s.send(stamp(frame, now - day))
            sent += 1
            time.sleep(interval)
    else:
        raise SystemExit(f"unknown mode {mode!r}: burst, flood or stamped")
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
