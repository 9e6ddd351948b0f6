"""The engine's Python face: a thin, safe wrapper over the C engine.

Python configures, starts, reads and stops; it never sees a packet. Reads (`stats()`) copy a
snapshot the poll thread publishes under a sequence lock, so they never slow the hot loop.
"""
from __future__ import annotations

import errno
import socket
import time

from ._native import ffi, lib
from .capabilities import check_privileges
from .config import (DEFAULT_BPFFS_ROOT, XDP_MODES, ZERO_COPY, ConfigError, EngineConfig, _be32,
                     fill_decoder_config, fill_rerequest_config, fill_sequencing_config)
from .bookconfig import fill_books_config
from .stats import stats_to_dict

_MODE_NAMES = {lib.TW_XDP_NATIVE: "native", lib.TW_XDP_GENERIC: "generic"}


class EngineError(RuntimeError):
    """The kernel refused something the engine needs; `errno` says what."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.errno = code


def _c_config(config: EngineConfig):
    c = ffi.new("struct tw_engine_config *")
    c.ifname = config.interface.encode()
    c.queue = config.queue
    c.xdp_mode = XDP_MODES[config.xdp_mode]
    c.zero_copy = ZERO_COPY[config.zero_copy]
    c.core = -1 if config.core is None else config.core
    c.frame_count = config.frame_count
    c.frame_size = config.frame_size
    c.ring_size = config.ring_size
    c.batch_size = config.batch_size
    c.hugepages = int(config.hugepages)
    c.busy_poll = int(config.busy_poll)
    c.busy_poll_usec = config.busy_poll_usec
    c.busy_poll_budget = config.busy_poll_budget
    c.rt_priority = config.rt_priority
    c.bpf_object = config.bpf_object.encode()
    c.bpffs_root = config.bpffs_root.encode()
    fill_decoder_config(c.decoder, config.lines, config.midnights(), config.arbitration_window_ns)
    fill_sequencing_config(c.decoder, config.max_seq_jump, config.max_seq_rate)
    fill_rerequest_config(c.decoder, config.rerequest)
    if config.rerequest is not None:
        address, port = config.rerequest.address
        c.rerequest_addr_be = _be32(address)
        c.rerequest_port_be = socket.htons(port)
    c.books_enabled = int(config.books.enabled)
    if config.books.enabled:
        fill_books_config(c.books, config.books, config.feed, config.stream_root)
    # books take messages in sequence order: messages past a hole wait for it (contract C9)
    c.decoder.deliver_in_order = int(config.books.enabled)
    return c


class Engine:
    """One AF_XDP feed engine on (interface, queue).

        with Engine(EngineConfig("eth1", [Line.parse("A=233.54.12.111:26477")])) as engine:
            ...
            print(engine.stats()["messages"])
    """

    def __init__(self, config: EngineConfig):
        config.validate()
        check_privileges(umem_bytes=config.frame_count * config.frame_size)
        self.config = config
        self._err = ffi.new("char[512]")
        self._handle = ffi.new("struct tw_engine **")
        self._c_config = _c_config(config)
        self._check(lib.tw_engine_create(self._c_config, self._handle, self._err, 512))
        self._engine = self._handle[0]
        self._stats = ffi.new("struct tw_stats *")
        self._loop = ffi.new("struct tw_loop_stats *")
        self._ring = ffi.new("struct tw_ring_stats *")
        self._info = ffi.new("struct tw_engine_info *")
        self._started_at: float | None = None
        self._running = False

    def _check(self, rc: int) -> None:
        if rc == 0:
            return
        message = ffi.string(self._err).decode(errors="replace") or errno.errorcode.get(-rc, "")
        if rc == -errno.EINVAL and "config" not in message:
            raise ConfigError(message)
        raise EngineError(-rc, message)

    def start(self) -> "Engine":
        self._check(lib.tw_engine_start(self._engine, self._err, 512))
        self._started_at = time.monotonic()
        self._running = True
        return self

    def stop(self) -> None:
        """Stop the poll thread and detach the XDP program. Safe to call twice."""
        if self._engine != ffi.NULL:
            lib.tw_engine_stop(self._engine)
        self._running = False

    def close(self) -> None:
        if self._engine != ffi.NULL:
            lib.tw_engine_destroy(self._engine)
            self._engine = ffi.NULL

    def __enter__(self) -> "Engine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_engine", ffi.NULL) != ffi.NULL:
            self.close()

    @property
    def info(self) -> dict:
        """What the engine actually got: XDP mode, zero-copy, hugepages, core, fallbacks."""
        lib.tw_engine_get_info(self._engine, self._info)
        i = self._info
        return {
            "xdp_mode": _MODE_NAMES.get(i.xdp_mode, "none"),
            "zero_copy": bool(i.zero_copy),
            "hugepages": bool(i.hugepages),
            "metadata": bool(i.metadata),
            "busy_poll": bool(self.config.busy_poll),
            "busy_poll_applied": bool(i.busy_poll_applied),
            "core": None if i.core < 0 else i.core,
            "rt_priority": i.rt_priority,
            "prog_id": i.prog_id,
            "attached_program": bool(i.attached_program),
            "umem_bytes": i.umem_bytes,
            "rx_ring_size": i.rx_ring_size,
            "fill_ring_size": i.fill_ring_size,
            "fill_stocked": i.fill_stocked,
            "fallback": ffi.string(i.fallback).decode(errors="replace"),
        }

    def ring_stats(self) -> dict:
        if lib.tw_engine_ring_stats(self._engine, self._ring) != 0:
            return {}
        r = self._ring
        return {"rx_dropped": r.rx_dropped, "rx_invalid_descs": r.rx_invalid_descs,
                "rx_ring_full": r.rx_ring_full,
                "rx_fill_ring_empty_descs": r.rx_fill_ring_empty_descs,
                "fill_ring_stock": r.fill_ring_stock}

    def stats(self) -> dict:
        """A consistent snapshot: decoder counters, latency, ring and loop counters, info."""
        self._check(lib.tw_engine_snapshot(self._engine, self._stats, self._loop))
        out = stats_to_dict(self._stats, [line.name for line in self.config.lines])
        loop = self._loop
        out["loop"] = {"polls": loop.polls, "empty_polls": loop.empty_polls,
                       "batches": loop.batches, "descriptors": loop.descriptors,
                       "wakeups": loop.wakeups,
                       "request_send_errors": loop.request_send_errors}
        rerequest = self.config.rerequest
        out["rerequest"]["config"] = None if rerequest is None else {
            "server": rerequest.server, "max_messages": rerequest.max_messages,
            "timeout_ms": rerequest.timeout_ms, "attempts": rerequest.attempts,
            "rate": rerequest.rate, "burst": rerequest.burst}
        out["ring"] = self.ring_stats()
        out.update(self.info)
        out["running"] = self._running
        out["uptime_s"] = (time.monotonic() - self._started_at) if self._started_at else 0.0
        last = self._stats.last_packet_mono_ns
        out["last_packet_age_s"] = (time.monotonic_ns() - last) / 1e9 if last else None
        return out

    def histograms(self) -> dict:
        """Latency per stage and line, with the non-empty buckets: `stats()["latency"]`."""
        return self.stats()["latency"]


def release_steering(interface: str, queue: int | None = None,
                     bpffs_root: str = DEFAULT_BPFFS_ROOT) -> str:
    """Remove what engines killed on `interface` (this network namespace) left in its shared
    steering program: their flows, and the program and pins when no live engine is left.
    Returns what was done; EngineError(EADDRINUSE) when `queue`'s engine is still alive."""
    report = ffi.new("char[1024]")
    rc = lib.tw_steering_release(bpffs_root.encode(), interface.encode(),
                                 -1 if queue is None else queue, report, 1024)
    text = ffi.string(report).decode(errors="replace")
    if rc:
        raise EngineError(-rc, text or errno.errorcode.get(-rc, str(rc)))
    return text

