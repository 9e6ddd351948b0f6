"""How much memory an agent Pod asks for: the agent itself, plus the order books of its plan.

The Pod's memory request equals its limit (Guaranteed QoS), so an engine whose books outgrow the
limit is OOM-killed mid-day. The books are sized once, at engine start, from the plan's maxOrders
and maxInstruments (the engine never allocates per message), which makes their size known here
before the Pod exists:

    memory = AGENT_BASE
           + maxOrders      * ORDER_BYTES                                  (order slots + index)
           + maxInstruments * (INSTRUMENT_BYTES + 2 * depth * LEVEL_BYTES) (books + snapshot area)
           + EVENT_RING_BYTES                                              (the broadcast ring)

rounded up to whole MiB. The stream (ring and snapshot area) lives in files on the node's tmpfs
(/run/tickwire/streams): tmpfs pages are charged to the memory cgroup of the process that first
writes them, the engine, so they count against this limit too; readers map the same pages and
are charged nothing for them.

The per-item sizes mirror the engine's C structures (native/include/tickwire/consumer.h and the
books in native/src); tests/unit/test_books_sizing.py holds them to the engine's own numbers.
The operator image never loads the engine, hence the copy.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MIB = 1 << 20
AGENT_BASE = 256 * MIB          # the agent process and a UMEM on normal pages (before books)

ORDER_BYTES = 64                # one live-order slot and its share of the order-id hash index
INSTRUMENT_BYTES = 4096         # one instrument's book: header, price-level index, status
LEVEL_BYTES = 16                # one price level (price, shares) in an instrument's snapshot
EVENT_RING_BYTES = 64 * MIB     # the broadcast ring of book events, fixed size


def books_bytes(books: Mapping[str, Any] | None) -> int:
    """Bytes the engine's books and stream take for the plan's `books` (0 when off or absent)."""
    if not books or not books.get("enabled"):
        return 0
    per_instrument = INSTRUMENT_BYTES + 2 * books["depth"] * LEVEL_BYTES
    return books["maxOrders"] * ORDER_BYTES + books["maxInstruments"] * per_instrument + EVENT_RING_BYTES


def agent_memory(plan: Mapping[str, Any]) -> str:
    """The agent container's memory request and limit, as a Kubernetes quantity in Mi."""
    total = AGENT_BASE + books_bytes(plan.get("books"))
    return f"{-(-total // MIB)}Mi"
