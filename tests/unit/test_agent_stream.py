"""The agent ends and removes its feed's stream when it stops (agent/tickwire_agent/stream.py), on
a real stream written by the engine's C books: one left by a writer that was SIGKILLed (never
marked ended), read by a real reader (tickwire_engine.consumer)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from tickwire_agent.stream import mark_ended, retire
from tickwire_engine import consumer

# A writer killed mid-run: the books publish a stream, then the process dies without freeing them.
KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from tickwire_engine.bookconfig import BooksConfig
    from tickwire_engine.books import Books
    books = Books(BooksConfig(enabled=True, max_orders=1024, max_instruments=8, ring_events=1024),
                  feed="itch", root=sys.argv[1])
    print("up", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def killed_writer_stream(root) -> str:
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(root)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -signal.SIGKILL and "up" in done.stdout, done
    return os.path.join(root, "itch")


def test_a_killed_engine_s_stream_is_ended_for_its_readers_and_removed(tmp_path):
    directory = killed_writer_stream(tmp_path)
    reader = consumer.open("itch", str(tmp_path), measure_latency=False)
    try:
        assert not reader.ended and not reader.replaced()      # a reader would wait on it forever
        assert retire(directory) == ["events", "snapshot"]
        assert reader.ended and reader.replaced()
        assert reader.snapshots() == {}                         # its mapping is still good to read
        assert os.listdir(directory) == []                      # the directory (a mount point) stays
    finally:
        reader.close()


def test_only_stream_files_are_touched(tmp_path):
    other = tmp_path / "events"
    other.write_bytes(b"not a tickwire stream" * 20)
    assert not mark_ended(str(other)) and retire(str(tmp_path)) == []
    assert other.read_bytes() == b"not a tickwire stream" * 20
    assert retire(str(tmp_path / "missing")) == []


def test_the_magics_are_the_header_s():
    import pathlib
    import re

    from tickwire_agent import stream
    header = (pathlib.Path(__file__).resolve().parents[2] / "native" / "include" / "tickwire" / "consumer.h").read_text()
    defined = {m[1]: int(m[2], 16) for m in re.finditer(r"#define (TWC_\w+_MAGIC) (0x[0-9a-fA-F]+)ull", header)}
    assert defined == {"TWC_RING_MAGIC": stream.RING_MAGIC, "TWC_SNAP_MAGIC": stream.SNAP_MAGIC}
