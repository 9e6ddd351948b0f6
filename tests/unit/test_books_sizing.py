"""The operator's memory formula for the books (operator/tickwire_operator/sizing.py) against the
engine's own C structures: a C file that includes native/src/book.c is compiled with a
_Static_assert per number the operator copies, so a change to the engine's layout that the
operator does not follow fails here, not as an OOM-killed engine on a busy day."""
from __future__ import annotations

import pathlib
import subprocess

from tickwire_operator import sizing

ROOT = pathlib.Path(__file__).resolve().parents[2]

CHECKS = {
    "sizeof(struct order)": sizing.ORDER_BYTES,
    "sizeof(struct level)": sizing.LEVEL_BYTES,
    "sizeof(struct hash_slot)": sizing.HASH_SLOT_BYTES,
    "sizeof(struct instrument)": sizing.INSTRUMENT_BYTES,
    "LOCATE_MAP_BYTES": sizing.LOCATE_INDEX_BYTES,             # by_locate, mapped
    "TWC_SNAP_ENTRY_FIXED": sizing.SNAPSHOT_ENTRY_FIXED,
    "sizeof(struct twc_snap_entry)": sizing.SNAPSHOT_ENTRY_FIXED,
    "sizeof(struct twc_level)": sizing.SNAPSHOT_LEVEL_BYTES,
    "TWC_SNAP_HEADER_SIZE": sizing.SNAPSHOT_HEADER_BYTES,
    "TWC_RING_HEADER_SIZE": sizing.RING_HEADER_BYTES,
    "sizeof(struct twc_event)": sizing.EVENT_BYTES,
    "TW_BOOK_DEFAULT_RING_EVENTS": sizing.RING_EVENTS,
}


def compile_checks(tmp_path, checks: dict[str, int]) -> subprocess.CompletedProcess:
    source = tmp_path / "sizes.c"
    source.write_text('#include "book.c"\n' + "".join(
        f'_Static_assert({expr} == {value}u, "{expr} is not {value}: update operator/tickwire_operator/sizing.py");\n'
        for expr, value in checks.items()))
    return subprocess.run(["gcc", "-std=gnu11", "-fsyntax-only", f"-I{ROOT / 'native' / 'src'}",
                           f"-I{ROOT / 'native' / 'include'}", str(source)], capture_output=True, text=True)


def test_the_operator_s_sizes_are_the_engine_s(tmp_path):
    done = compile_checks(tmp_path, CHECKS)
    assert done.returncode == 0, done.stderr


def test_a_wrong_size_would_be_caught(tmp_path):
    done = compile_checks(tmp_path, {"sizeof(struct order)": sizing.ORDER_BYTES + 8})
    assert done.returncode != 0 and "update operator/tickwire_operator/sizing.py" in done.stderr


def test_snapshot_entries_and_the_index_are_sized_as_the_engine_sizes_them():
    # consumer.h twc_snap_entry_size: fixed part + both sides' levels, rounded up to 64
    assert [sizing.snapshot_entry_bytes(d) for d in (1, 5, 10, 64)] == [128, 256, 448, 2176]
    # book.c: the smallest power of two at least twice the orders
    assert [sizing.hash_slots(n) for n in (1, 2, 3, 1 << 20, (1 << 20) + 1)] == [2, 4, 8, 1 << 21, 1 << 22]
