"""MoldUDP64 downstream packets: the framing NASDAQ puts around ITCH messages on multicast.

    session         10 bytes  ASCII, names the session (e.g. the trading day's feed instance)
    sequence number  8 bytes  big endian: sequence number of the first message in the packet
    message count    2 bytes  big endian: messages that follow; 0 = heartbeat, 0xFFFF = end of session
    then `count` message blocks: 2-byte big-endian length, then that many bytes of message.

A heartbeat and an end-of-session packet carry no messages; their sequence number is the next
one the server will use, which is how a receiver learns of messages lost at the tail of a stream.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct(">10sQH")
HEADER_LENGTH = HEADER.size  # 20
BLOCK_LENGTH = struct.Struct(">H")
HEARTBEAT_COUNT = 0
END_OF_SESSION_COUNT = 0xFFFF
MAX_MESSAGES = 0xFFFE
SESSION_LENGTH = 10


class MoldError(ValueError):
    """A packet that is not valid MoldUDP64."""


def session_bytes(session: str | bytes) -> bytes:
    """A session name as its 10 wire bytes: ASCII, left-justified, space-padded."""
    raw = session.encode("ascii") if isinstance(session, str) else bytes(session)
    if len(raw) > SESSION_LENGTH:
        raise MoldError(f"session {session!r} is longer than {SESSION_LENGTH} characters")
    return raw.ljust(SESSION_LENGTH, b" ")


def encode_packet(session: bytes, sequence: int, messages: list[bytes]) -> bytearray:
    """A data packet; returned mutable so the sender can stamp timestamps in place."""
    if not 1 <= len(messages) <= MAX_MESSAGES:
        raise MoldError(f"a data packet carries 1..{MAX_MESSAGES} messages, got {len(messages)}")
    out = bytearray(HEADER.pack(session, sequence, len(messages)))
    for message in messages:
        out += BLOCK_LENGTH.pack(len(message))
        out += message
    return out


def heartbeat(session: bytes, next_sequence: int) -> bytes:
    return HEADER.pack(session, next_sequence, HEARTBEAT_COUNT)


def end_of_session(session: bytes, next_sequence: int) -> bytes:
    return HEADER.pack(session, next_sequence, END_OF_SESSION_COUNT)


@dataclass(frozen=True)
class Packet:
    session: bytes
    sequence: int
    count: int                 # as on the wire: 0 heartbeat, 0xFFFF end of session
    messages: tuple[bytes, ...]

    @property
    def is_heartbeat(self) -> bool:
        return self.count == HEARTBEAT_COUNT

    @property
    def is_end_of_session(self) -> bool:
        return self.count == END_OF_SESSION_COUNT


def decode_packet(payload: bytes) -> Packet:
    """Parses a UDP payload, checking every length before reading it."""
    if len(payload) < HEADER_LENGTH:
        raise MoldError(f"MoldUDP64 header needs {HEADER_LENGTH} bytes, packet has {len(payload)}")
    session, sequence, count = HEADER.unpack_from(payload)
    if count in (HEARTBEAT_COUNT, END_OF_SESSION_COUNT):
        if len(payload) != HEADER_LENGTH:
            raise MoldError(f"{len(payload) - HEADER_LENGTH} bytes after a header with count "
                            f"{count:#x}, which carries no messages")
        return Packet(session, sequence, count, ())
    messages = []
    offset = HEADER_LENGTH
    view = memoryview(payload)
    for index in range(count):
        if offset + 2 > len(payload):
            raise MoldError(f"message {index} of {count}: length field runs past the packet end")
        (length,) = BLOCK_LENGTH.unpack_from(payload, offset)
        offset += 2
        if offset + length > len(payload):
            raise MoldError(f"message {index} of {count}: {length} bytes run past the packet end")
        messages.append(bytes(view[offset:offset + length]))
        offset += length
    if offset != len(payload):
        raise MoldError(f"{len(payload) - offset} trailing bytes after {count} messages")
    return Packet(session, sequence, count, tuple(messages))
