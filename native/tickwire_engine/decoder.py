"""The C decoder on its own, without a socket: bytes in, counters out.

What the unit tests, the kernel-socket baseline and offline replays of captures drive. The caller
passes the time (or lets `now=None` read the clocks), exactly as the engine's poll thread does.

    dec = Decoder(lines=[("A", "233.54.12.111", 26477), ("B", "233.49.196.111", 26477)])
    dec.decode_frame(frame_bytes)
    dec.flush()
    dec.stats()["gaps"]
"""
from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from typing import NamedTuple

from ._native import ffi, lib
from . import config
from .config import ConfigError, Line, validate_lines
from .stats import stats_to_dict

DEFAULT_ARBITRATION_WINDOW_NS = config.EngineConfig.arbitration_window_ns  # one default for both


class FrameResult(enum.IntEnum):
    """What the decoder made of a frame or packet (TW_FRAME_*)."""
    DATA = lib.TW_FRAME_DATA
    UNMATCHED = lib.TW_FRAME_UNMATCHED
    MALFORMED = lib.TW_FRAME_MALFORMED


class Clock(NamedTuple):
    """The caller's clocks for a batch: CLOCK_MONOTONIC and CLOCK_REALTIME in ns."""
    mono_ns: int
    real_ns: int

    @classmethod
    def now(cls) -> "Clock":
        return cls(time.monotonic_ns(), time.time_ns())


def _as_line(spec) -> Line:
    if isinstance(spec, Line):
        return spec
    if not isinstance(spec, Sequence) or isinstance(spec, str) or not 3 <= len(spec) <= 4:
        raise ConfigError(f"line {spec!r}: give (name, group, port) or (name, group, port, source),"
                          " for example ('A', '233.54.12.111', 26477)")
    name, group, port, *source = spec
    if not isinstance(port, int) or isinstance(port, bool):
        raise ConfigError(f"line {name}: port {port!r} is not an integer (1-65535)")
    return Line(name, group, port, source[0] if source else None)


class Decoder:
    """One `struct tw_decoder`: lines as (name, group, port[, source]) tuples or config.Line.

    ITCH timestamps count from the exchange's midnight. exchange_midnight_ns fixes that midnight
    (CLOCK_REALTIME ns) for good: one day, as a replay of a capture wants. exchange_midnights_ns
    gives the midnights instead, rising, and the decoder moves from one day to the next as the
    real_ns it is given passes them. With neither, the exchange's zone (exchange_tz, None: the
    feed's exchange, America/New_York) gives yesterday's midnight and the year's after it.
    arbitration_window_ns is how long, with two lines, a hole waits for the other line before it
    counts as a gap. A sequence number that jumps ahead further than max_seq_jump + max_seq_rate *
    (seconds since the session's last packet) is suspect until confirmed (docs/design.md,
    "Sequencing rules"). books (a books.Books) get the first copy of every message in the
    decoder's order, and every loss it gives up on."""

    def __init__(self, lines, exchange_midnight_ns: int | None = None,
                 arbitration_window_ns: int = DEFAULT_ARBITRATION_WINDOW_NS, *,
                 exchange_midnights_ns: Sequence[int] | None = None, exchange_tz: str | None = None,
                 max_seq_jump: int = config.DEFAULT_MAX_SEQ_JUMP,
                 max_seq_rate: int = config.DEFAULT_MAX_SEQ_RATE,
                 rerequest: config.Rerequest | None = None, in_order: bool = False,
                 books=None):
        self.lines = [_as_line(spec) for spec in lines]
        validate_lines(self.lines)
        if not isinstance(arbitration_window_ns, int) or arbitration_window_ns < 0:
            raise ConfigError(f"arbitration window {arbitration_window_ns!r}: give a whole number "
                              "of nanoseconds >= 0")
        config.validate_sequencing(max_seq_jump, max_seq_rate)
        if exchange_midnight_ns is not None and exchange_midnights_ns is not None:
            raise ConfigError("give exchange_midnight_ns (one fixed day) or exchange_midnights_ns "
                              "(the days to follow), not both")
        if exchange_midnight_ns is not None:
            midnights = [exchange_midnight_ns]
        elif exchange_midnights_ns is not None:
            midnights = list(exchange_midnights_ns)
        else:
            midnights = config.exchange_midnights_ns(exchange_tz)
        cfg = ffi.new("struct tw_decoder_config *")
        config.fill_decoder_config(cfg, self.lines, midnights, arbitration_window_ns)
        config.fill_sequencing_config(cfg, max_seq_jump, max_seq_rate)
        config.fill_rerequest_config(cfg, rerequest)
        cfg.deliver_in_order = int(in_order)
        err = ffi.new("char[256]")
        decoder = lib.tw_decoder_new(cfg, err, len(err))
        if decoder == ffi.NULL:
            raise ConfigError(ffi.string(err).decode())
        self._decoder = ffi.gc(decoder, lib.tw_decoder_free)
        self._clock = ffi.new("struct tw_clock *")
        self._request = ffi.new("uint8_t[]", lib.TW_MOLD_REQUEST_LEN)
        self.books = books   # a books.Books fed every first copy (kept alive as long as we are)
        if books is not None:
            lib.tw_decoder_set_books(self._decoder, books.handle)

    @property
    def line_names(self) -> list[str]:
        return [line.name for line in self.lines]

    def _clock_for(self, now: Clock | tuple[int, int] | None):
        self._clock.mono_ns, self._clock.real_ns = Clock.now() if now is None else now
        return self._clock

    def decode_frame(self, frame: bytes, kernel_rx_ns: int = 0, now=None) -> FrameResult:
        """One Ethernet frame; kernel_rx_ns is its CLOCK_MONOTONIC receive time, 0 if unknown."""
        return FrameResult(lib.tw_decode_frame(self._decoder, ffi.from_buffer(frame), len(frame),
                                               kernel_rx_ns, self._clock_for(now)))

    def decode_mold(self, line: int | str, payload: bytes, kernel_rx_ns: int = 0,
                    now=None) -> FrameResult:
        """One MoldUDP64 packet (a UDP payload) of a line, given by index (0 is A) or name."""
        index = self._line_index(line)
        return FrameResult(lib.tw_decode_mold(self._decoder, index, ffi.from_buffer(payload),
                                              len(payload), kernel_rx_ns, self._clock_for(now)))

    def tick(self, now=None) -> None:
        """Let time pass: pending holes older than the arbitration window become gaps."""
        lib.tw_decoder_tick(self._decoder, self._clock_for(now))

    def pending(self) -> bool:
        """True while a hole waits for a line: time alone will turn it into a gap."""
        return bool(lib.tw_decoder_pending(self._decoder))

    def flush(self) -> None:
        """End of run: every pending hole is a gap now."""
        lib.tw_decoder_flush(self._decoder)

    def next_request(self, now=None) -> bytes | None:
        """The MoldUDP64 request packet to send now, or None (nothing due, or the rate is spent).
        Also gives up ranges that ran out of attempts: call it until None, now and then."""
        if not lib.tw_decoder_next_request(self._decoder, self._clock_for(now), self._request):
            return None
        return bytes(ffi.buffer(self._request, lib.TW_MOLD_REQUEST_LEN))

    def requests(self, now=None) -> list[bytes]:
        """Every request packet due now (bounded by the table and the rate)."""
        out = []
        for _ in range(lib.TW_MAX_REQUESTS):
            packet = self.next_request(now)
            if packet is None:
                break
            out.append(packet)
        return out

    def decode_reply(self, payload: bytes, now=None) -> FrameResult:
        """One packet that came back from the re-request server."""
        return FrameResult(lib.tw_decode_reply(self._decoder, ffi.from_buffer(payload),
                                               len(payload), self._clock_for(now)))

    def requests_outstanding(self) -> bool:
        return bool(lib.tw_decoder_requests_outstanding(self._decoder))

    def stats(self) -> dict:
        return stats_to_dict(lib.tw_decoder_stats(self._decoder), self.line_names)

    def _line_index(self, line: int | str) -> int:
        names = self.line_names
        if isinstance(line, str) and line in names:
            return names.index(line)
        if isinstance(line, int) and not isinstance(line, bool) and 0 <= line < len(names):
            return line
        raise ValueError(f"line {line!r} is not configured: use an index 0..{len(names) - 1} "
                         f"or a name in {names}")

