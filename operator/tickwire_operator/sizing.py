"""How much memory an agent Pod asks for: the agent itself, plus the order books of its plan.

The Pod's memory request equals its limit (Guaranteed QoS), so an engine whose books outgrow the
limit is OOM-killed mid-day. The books are sized once, at engine start, from the plan's maxOrders
and maxInstruments (the engine never allocates per message), and a busy day fills them, so the
Pod asks for the full size:

    memory = AGENT_BASE                                           the agent, a UMEM on normal pages
           + (maxOrders + 1) * (ORDER_BYTES + LEVEL_BYTES)        order slots, price-level pool
           + hash_slots(maxOrders) * HASH_SLOT_BYTES              order-reference index, >= 2x
           + maxInstruments * (INSTRUMENT_BYTES + snapshot_entry(depth))   books, snapshot area
           + LOCATE_INDEX_BYTES                                   stock locate -> instrument
           + RING_HEADER_BYTES + RING_EVENTS * EVENT_BYTES        the broadcast ring (64 MiB)

rounded up to whole MiB. With the defaults (1,048,576 orders, 16,384 instruments, depth 10):
about 177 MiB for the books and stream (104 bytes an order with a power-of-two maxOrders, up to
136 just above one, where the index doubles).

The stream (ring and snapshot area) is in files on the node's tmpfs (/run/tickwire/streams):
tmpfs pages are charged to the memory cgroup of the process that first writes them, the engine,
so they count against this limit; readers map the same pages and are charged nothing for them.

The sizes mirror the engine's C structures (native/src/book.c, include/tickwire/consumer.h); the
operator image never loads the engine, hence the copy. tests/unit/test_books_sizing.py compiles
the engine's own sources and holds these numbers to them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MIB = 1 << 20
AGENT_BASE = 256 * MIB          # the agent process and a UMEM on normal pages (before books)

ORDER_BYTES = 32                # book.c struct order
LEVEL_BYTES = 40                # book.c struct level: the pool has one per order (worst case)
HASH_SLOT_BYTES = 16            # book.c struct hash_slot
INSTRUMENT_BYTES = 128          # book.c struct instrument
LOCATE_INDEX_BYTES = 65536 * 4  # book.c by_locate: one uint32 per possible stock locate
SNAPSHOT_ENTRY_FIXED = 80       # consumer.h struct twc_snap_entry
SNAPSHOT_LEVEL_BYTES = 16       # consumer.h struct twc_level
SNAPSHOT_HEADER_BYTES = 256     # TWC_SNAP_HEADER_SIZE
RING_HEADER_BYTES = 256         # TWC_RING_HEADER_SIZE
EVENT_BYTES = 64                # consumer.h struct twc_event: one cache line
RING_EVENTS = 1 << 20           # tickwire.h TW_BOOK_DEFAULT_RING_EVENTS


def hash_slots(max_orders: int) -> int:
    """The order index's slots: the smallest power of two >= 2 * max_orders (book.c)."""
    slots = 2
    while slots < 2 * max_orders:
        slots <<= 1
    return slots


def snapshot_entry_bytes(depth: int) -> int:
    """One instrument's snapshot entry, cache-line aligned (consumer.h twc_snap_entry_size)."""
    return (SNAPSHOT_ENTRY_FIXED + 2 * depth * SNAPSHOT_LEVEL_BYTES + 63) & ~63


def books_bytes(books: Mapping[str, Any] | None) -> int:
    """Bytes the engine's books and stream take for the plan's `books` (0 when off or absent)."""
    if not books or not books.get("enabled"):
        return 0
    orders, instruments = books["maxOrders"], books["maxInstruments"]
    return ((orders + 1) * (ORDER_BYTES + LEVEL_BYTES) + hash_slots(orders) * HASH_SLOT_BYTES
            + instruments * INSTRUMENT_BYTES + LOCATE_INDEX_BYTES
            + SNAPSHOT_HEADER_BYTES + instruments * snapshot_entry_bytes(books["depth"])
            + RING_HEADER_BYTES + RING_EVENTS * EVENT_BYTES)


def agent_memory(plan: Mapping[str, Any]) -> str:
    """The agent container's memory request and limit, as a Kubernetes quantity in Mi."""
    total = AGENT_BASE + books_bytes(plan.get("books"))
    return f"{-(-total // MIB)}Mi"
