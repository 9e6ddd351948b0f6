"""The exchange's MoldUDP64 re-request server: answers requests for messages it published.

    store = RetransmissionStore(session, capacity=1_000_000)    # the publisher records into it
    with RerequestServer(store, ("10.0.0.1", 26400), max_messages=100):
        publish(...)

A request (unicast UDP) is exactly 20 bytes: session (10), first sequence number (8), message count
(2). The answer is one standard downstream packet, unicast back to the request's source address
and port, holding the requested messages from the first one on, as many as the request asked for,
the server's limit per request allows and a 1500-byte MTU fits. A client asks again for the rest.

What the MoldUDP64 specification leaves open, decided here:
- messages this server no longer holds (older than its bounded buffer) or never sent (at or past
  the next sequence number): it sends nothing for them; the answer starts at the first requested
  message it does hold, or there is no answer at all. The protocol has no negative answer; the
  client's timeout and attempts end the wait (counted here in `unanswerable`);
- a request for another session, of the wrong length, or with a count of 0 or 0xFFFF is ignored
  and counted in `malformed`.
The answer's bytes are those that went out on the lines (timestamps included), also for messages
that every line lost.
"""
from __future__ import annotations

import bisect
import select
import socket
import struct
import threading

from . import moldudp64

REQUEST = struct.Struct(">10sQH")
MAX_ANSWER_BYTES = 1500 - 20 - 8          # one packet within a 1500-byte MTU, no fragments
DEFAULT_CAPACITY = 1_000_000              # messages held
DEFAULT_MAX_MESSAGES = 100                # messages per answer at most


class RetransmissionStore:
    """What was published, by sequence number, for the last `capacity` messages or so.

    The publisher records each data packet once, as sent (`record`); the server looks messages up
    (`messages`). Packets are kept whole and in sequence order (a reordered pair is put back in
    place); the oldest are dropped in batches once more than `capacity` messages are held."""

    def __init__(self, session: bytes, capacity: int = DEFAULT_CAPACITY):
        if capacity < 1:
            raise ValueError(f"the re-request buffer must hold at least 1 message, not {capacity}")
        self.session = session
        self.capacity = capacity
        self._lock = threading.Lock()
        self._firsts: list[int] = []          # first sequence number of each packet, rising
        self._packets: list[tuple[int, bytes]] = []   # (message count, payload)
        self._held = 0

    def record(self, first_seq: int, count: int, payload) -> None:
        with self._lock:
            at = len(self._firsts)
            if at and self._firsts[-1] > first_seq:
                at = bisect.bisect_left(self._firsts, first_seq)
            self._firsts.insert(at, first_seq)
            self._packets.insert(at, (count, bytes(payload)))
            self._held += count
            if self._held > self.capacity + self.capacity // 4:
                self._forget_oldest()

    def _forget_oldest(self) -> None:
        """Back down to `capacity` at once: one list copy per capacity/4 messages recorded."""
        drop, held = 0, self._held
        while held > self.capacity and drop < len(self._packets):
            held -= self._packets[drop][0]
            drop += 1
        del self._firsts[:drop]
        del self._packets[:drop]
        self._held = held

    @property
    def oldest(self) -> int | None:
        with self._lock:
            return self._firsts[0] if self._firsts else None

    def messages(self, first: int, count: int, max_bytes: int) -> tuple[int, list[bytes]]:
        """(sequence number of the first message returned, messages): the held messages in
        [first, first + count), from the first held one on, consecutive, as many as fit in
        max_bytes of message blocks. ([], first) when none is held."""
        out: list[bytes] = []
        with self._lock:
            at = bisect.bisect_right(self._firsts, first) - 1
            if at < 0:
                at = 0
            start, size, end = None, 0, first + count
            while at < len(self._firsts) and len(out) < count:
                seq = self._firsts[at]
                n, payload = self._packets[at]
                if seq >= end or (start is not None and seq != start + len(out)):
                    break                                       # past the request, or a hole
                blocks, offset = [], moldudp64.HEADER_LENGTH
                for i in range(n):
                    (length,) = moldudp64.BLOCK_LENGTH.unpack_from(payload, offset)
                    if first <= seq + i < end:
                        blocks.append((seq + i, payload[offset + 2:offset + 2 + length]))
                    offset += 2 + length
                for number, message in blocks:
                    if start is None:
                        start = number
                    if size + 2 + len(message) > max_bytes:
                        return start, out
                    out.append(message)
                    size += 2 + len(message)
                at += 1
        return (first if start is None else start), out


class RerequestServer:
    """Answers MoldUDP64 requests from `store` on a UDP socket bound to `listen`, in a thread.

    Counts (`stats()`): requests, answered, messages_sent, unanswerable (nothing held for them),
    malformed (ignored)."""

    def __init__(self, store: RetransmissionStore, listen: tuple[str, int],
                 max_messages: int = DEFAULT_MAX_MESSAGES):
        if not 1 <= max_messages <= moldudp64.MAX_MESSAGES:
            raise ValueError(f"messages per answer must be 1..{moldudp64.MAX_MESSAGES}, "
                             f"not {max_messages}")
        self.store = store
        self.max_messages = max_messages
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(listen)
        except OSError as exc:
            self.sock.close()
            raise ValueError(f"cannot listen for re-requests on {listen[0]}:{listen[1]}: "
                             f"{exc.strerror or exc}") from None
        self.address = self.sock.getsockname()
        self._counts = {"requests": 0, "answered": 0, "messages_sent": 0, "unanswerable": 0,
                        "malformed": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tw-rerequest", daemon=True)

    def start(self) -> "RerequestServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> "RerequestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stats(self) -> dict:
        return dict(self._counts, buffer_messages=self.store.capacity,
                    max_messages=self.max_messages,
                    listen=f"{self.address[0]}:{self.address[1]}")

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            try:
                request, source = self.sock.recvfrom(2048)
            except OSError:
                continue
            answer = self.answer(request)
            if answer is not None:
                try:
                    self.sock.sendto(answer, source)
                except OSError:
                    pass   # the client's problem (gone, unreachable): it will ask again

    def answer(self, request: bytes) -> bytes | None:
        """The downstream packet answering `request`, or None (counted why)."""
        self._counts["requests"] += 1
        if len(request) != REQUEST.size:
            self._counts["malformed"] += 1
            return None
        session, first, count = REQUEST.unpack(request)
        if session != self.store.session or count in (moldudp64.HEARTBEAT_COUNT,
                                                      moldudp64.END_OF_SESSION_COUNT):
            self._counts["malformed"] += 1
            return None
        want = min(count, self.max_messages)
        start, messages = self.store.messages(first, want,
                                              MAX_ANSWER_BYTES - moldudp64.HEADER_LENGTH)
        if not messages:
            self._counts["unanswerable"] += 1
            return None
        self._counts["answered"] += 1
        self._counts["messages_sent"] += len(messages)
        return bytes(moldudp64.encode_packet(session, start, messages))
