"""The feed's book stream after its engine: ended and removed when the agent stops for good.

The engine marks its stream ended when it stops cleanly, and the next engine marks a left-over
stream ended before replacing it. When the agent itself stops (the FeedHandler deleted, its Pod
replaced or moved) there is no next engine on this node: an engine that crashed or was SIGKILLed
just before would leave files whose readers wait forever on a head that never moves, and either
way the files would hold the node's memory (tmpfs: the 64 MiB ring and the snapshot area) for a
feed that is gone. So the agent marks both files ended (the same state word the engine writes,
TWC_STATE_ENDED in include/tickwire/consumer.h) and unlinks them. Readers keep their mappings;
they learn the stream ended (twc_ended) and that the path is gone (twc_replaced).

Only the two files: the directory stays, because in a Pod it is the mount point of the hostPath.
"""
from __future__ import annotations

import mmap
import os
import struct

STREAM_FILES = ("events", "snapshot")
# consumer.h's file magics, which its cffi face does not export (tests/unit/test_agent_stream.py
# reads them from the header); the state word's offsets and values come from the cffi face.
RING_MAGIC = 0x314D525457544954     # TWC_RING_MAGIC, "TITWTRM1"
SNAP_MAGIC = 0x3150414E53545754     # TWC_SNAP_MAGIC, "TWTSNAP1"


def _layout() -> tuple[dict[int, int], int]:
    """{magic: offset of the state word} for both files, and the ended value."""
    from tickwire_engine._consumer import ffi, lib   # the reader's own layout, not a copy
    return ({RING_MAGIC: ffi.offsetof("struct twc_ring_header", "state"),
             SNAP_MAGIC: ffi.offsetof("struct twc_snap_header", "state")}, lib.TWC_STATE_ENDED)


def mark_ended(path: str) -> bool:
    """Set a stream file's state to ended; False if it is not a stream file (left alone)."""
    state_at, ended = _layout()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if os.fstat(fd).st_size < 256:
            return False
        with mmap.mmap(fd, 256, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as header:
            (magic,) = struct.unpack_from("<Q", header, 0)
            if magic not in state_at:
                return False
            # Live (1) to ended (2) changes the low byte only, so however the store is split a
            # reader's atomic load sees the old value or the new one.
            struct.pack_into("<I", header, state_at[magic], ended)
        return True
    finally:
        os.close(fd)


def retire(directory: str) -> list[str]:
    """Mark the stream in `directory` ended and remove its files; the names removed."""
    removed = []
    for name in STREAM_FILES:
        path = os.path.join(directory, name)
        if mark_ended(path):
            os.unlink(path)
            removed.append(name)
    return removed
