"""The book stream (stream.c / stream.h, include/tickwire/consumer.h): one writer, many readers.

The concurrency tests run native/tests/stream_stress.c: the engine's own writer code and the
header's reader, as threads of one process, checking every event read for tearing and order.
The rest drive the real books and the Python reader. No timed assertions."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from tickwire_engine import consumer
from tickwire_engine.bookconfig import BooksConfig
from tickwire_engine.books import Books
from tickwire_feed import itch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "native", "src")
INCLUDE = os.path.join(ROOT, "native", "include")
STRESS = os.path.join(ROOT, "native", "tests", "stream_stress.c")


@pytest.fixture(scope="module")
def stress_binary(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("stress") / "stream_stress")
    subprocess.run(["gcc", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-pthread",
                    f"-I{SRC}", STRESS, os.path.join(SRC, "stream.c"), "-o", out], check=True)
    return out


def run_stress(binary, root, readers, millis, ring, pace_ns) -> dict:
    result = subprocess.run([binary, str(root), str(readers), str(millis), str(ring), str(pace_ns)],
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def test_eight_readers_lapped_by_a_writer_that_never_waits_read_nothing_torn(stress_binary, tmp_path):
    # A 256-event ring and a writer flat out: readers are lapped again and again.
    out = run_stress(stress_binary, tmp_path, 8, 300, 256, 0)
    assert out["writer_events"] > 10 * 256
    readers = out["readers"]
    assert len(readers) == 8
    assert all(r["torn"] == 0 and r["out_of_order"] == 0 for r in readers)
    assert sum(r["lapped"] for r in readers) > 0
    for r in readers:   # what a reader got plus what it was told it missed is all there was
        assert r["events"] + r["missed"] <= out["writer_events"]
    assert out["idle_reader_next"] == 0   # the stopped reader's cursor: nobody moved it


def test_eight_readers_of_a_ring_that_holds_everything_each_read_every_event(stress_binary, tmp_path):
    out = run_stress(stress_binary, tmp_path, 8, 200, 1 << 20, 2000)
    assert 0 < out["writer_events"] < 1 << 20
    for r in out["readers"]:
        assert (r["events"], r["lapped"], r["missed"], r["torn"], r["out_of_order"]) == \
            (out["writer_events"], 0, 0, 0, 0)
    assert out["latency"]["count"] == 8 * out["writer_messages"]


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_the_consumer_header_stands_alone_in_strict_c11(compiler, tmp_path):
    if shutil.which(compiler) is None:
        pytest.fail(f"{compiler} is missing (apt install {compiler})")
    program = tmp_path / "reader.c"
    program.write_text('#include "tickwire/consumer.h"\n'
                       "int main(int argc, char **argv) {\n"
                       "    struct twc_reader r; struct twc_event ev; char err[128];\n"
                       "    if (argc < 2 || twc_open(&r, argv[1], TWC_START_OLDEST, err, sizeof err)) return 3;\n"
                       "    int n = 0; while (twc_next(&r, &ev) == TWC_OK) n++;\n"
                       "    twc_close(&r); return n > 0 ? 0 : 4;\n}\n")
    subprocess.run([compiler, "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror",
                    "-pedantic", f"-I{INCLUDE}", str(program), "-o", str(tmp_path / "reader")],
                   check=True)
    books = Books(small(), feed="c", root=str(tmp_path))
    books.on_message(add(1, 1))
    assert subprocess.run([str(tmp_path / "reader"), str(tmp_path / "c")]).returncode == 0
    assert subprocess.run([str(tmp_path / "reader"), str(tmp_path / "nothing")]).returncode == 3


def small(**kw) -> BooksConfig:
    base = dict(enabled=True, max_orders=4096, max_instruments=16, ring_events=64, depth=5)
    base.update(kw)
    return BooksConfig(**base)


def add(ref: int, price: int, locate: int = 1, side: str = "B") -> bytes:
    return itch.encode("A", stock_locate=locate, order_reference_number=ref, buy_sell_indicator=side,
                       shares=100, stock="AAPL" if locate == 1 else f"S{locate}", price=price)


def directory(locate: int, symbol: str) -> bytes:
    return itch.encode("R", stock_locate=locate, stock=symbol, market_category="Q",
                       financial_status_indicator="N", round_lot_size=100, round_lots_only="N",
                       issue_classification="C", issue_sub_type="Z", authenticity="P",
                       short_sale_threshold_indicator="N", ipo_flag=" ",
                       luld_reference_price_tier="1", etp_flag="N", etp_leverage_factor=0,
                       inverse_indicator="N")


def test_a_lapped_reader_is_told_so_and_resyncs_from_the_snapshot(tmp_path):
    books = Books(small(), feed="f", root=str(tmp_path))
    books.on_message(directory(1, "AAPL"))
    reader = consumer.open("f", str(tmp_path), start="oldest")
    for ref in range(1, 101):            # 3 events each: far more than 64
        books.on_message(add(ref, 10000 + ref))
    items = list(reader.events(timeout=0.05))
    lapped = [i for i in items if isinstance(i, consumer.Lapped)]
    assert len(lapped) == 1 and reader.lapped == 1 and lapped[0].missed > 0
    snap = lapped[0].snapshots["AAPL"]
    assert snap["bid"] == (10100, 100, 1) and len(snap["bids"]) == 5 and snap["orders_live"] == 100
    # after the lap it reads on from the present: the next message arrives whole
    books.on_message(add(101, 20000))
    after = reader.read()
    assert [e.type for e in after] == ["order", "level", "top"] and after[-1].end
    assert after[0].seq == reader.position - 3


def test_a_stopped_reader_changes_nothing_for_the_writer_or_another_reader(tmp_path):
    books = Books(small(ring_events=1024), feed="f", root=str(tmp_path))
    stopped = consumer.open("f", str(tmp_path))
    active = consumer.open("f", str(tmp_path))
    seen = 0
    for ref in range(1, 2001):
        books.on_message(add(ref, 10000 + ref % 50))
        if ref % 50 == 0:
            seen += len(active.read())
            assert active.status == consumer.lib.TWC_EMPTY
    assert seen == books.stats()["book_events_published"] and active.lapped == 0
    # the stopped one finds it was lapped when it looks again, never a torn event
    stopped.read()
    assert stopped.status == consumer.lib.TWC_LAPPED and stopped.lapped == 1


def test_a_reader_that_joins_late_starts_at_the_present_with_the_snapshot(tmp_path):
    books = Books(small(), feed="f", root=str(tmp_path))
    books.on_message(directory(1, "AAPL"))
    for ref in range(1, 11):
        books.on_message(add(ref, 10000 + ref))
    late = consumer.open("f", str(tmp_path))
    assert late.read() == [] and late.position == books.stats()["book_events_published"]
    assert late.snapshot("AAPL")["bids"][0] == (10010, 100, 1)
    books.on_message(add(11, 9000))
    assert [e.type for e in late.read()] == ["order", "level"]   # below the top: no top event


def test_a_stopped_engine_ends_the_stream_and_a_new_one_replaces_it(tmp_path):
    books = Books(small(), feed="f", root=str(tmp_path))
    books.on_message(add(1, 10000))
    reader = consumer.open("f", str(tmp_path), start="oldest")
    books.close()
    assert len(reader.read()) == 3 and reader.read() == [] and reader.status == consumer.lib.TWC_ENDED
    assert reader.ended and not reader.replaced()
    new = Books(small(), feed="f", root=str(tmp_path))
    assert reader.replaced()
    fresh = consumer.open("f", str(tmp_path))
    new.on_message(add(2, 10000))
    assert len(fresh.read()) == 3


def test_a_killed_engine_s_stream_is_marked_ended_by_the_next_engine(tmp_path):
    # A writer killed with SIGKILL never marks its files ended: the next one does.
    script = ("import sys, time\n"
              "from tickwire_engine.books import Books\n"
              "from tickwire_engine.bookconfig import BooksConfig\n"
              "b = Books(BooksConfig(enabled=True, max_orders=64, max_instruments=4, ring_events=64),"
              " feed='f', root=sys.argv[1])\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        reader = consumer.open("f", str(tmp_path))
        proc.kill()
        proc.wait(timeout=10)
        assert not reader.ended and not reader.replaced()
        Books(small(), feed="f", root=str(tmp_path))
        assert reader.ended and reader.replaced()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_stream_files_are_readable_by_anyone_and_writable_by_nobody_else(tmp_path):
    old = os.umask(0o077)
    try:
        Books(small(), feed="f", root=str(tmp_path / "streams"))
    finally:
        os.umask(old)
    for name in ("events", "snapshot"):
        mode = stat.S_IMODE(os.stat(tmp_path / "streams" / "f" / name).st_mode)
        assert mode == 0o644, oct(mode)
    assert stat.S_IMODE(os.stat(tmp_path / "streams" / "f").st_mode) == 0o755


def test_open_by_feed_name_uses_the_env_root_then_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKWIRE_STREAM_ROOT", str(tmp_path))
    Books(small(), feed="envfeed", root=str(tmp_path))
    with consumer.open("envfeed") as reader:
        assert reader.path == str(tmp_path / "envfeed")
    monkeypatch.delenv("TICKWIRE_STREAM_ROOT")
    assert consumer.stream_dir("x") == "/run/tickwire/streams/x"
    with pytest.raises(consumer.StreamError, match="cannot open"):
        consumer.open("missing", str(tmp_path))
    with pytest.raises(consumer.StreamError, match="feed name"):
        consumer.open("../etc", str(tmp_path))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "events").write_bytes(b"\0" * 4096)
    with pytest.raises(consumer.StreamError, match="magic"):
        consumer.open("junk", str(tmp_path))


def test_top_shows_the_best_bid_and_offer_of_the_busiest_symbols(tmp_path, capsys):
    from tickwire_engine.cli import main
    books = Books(small(), feed="t", root=str(tmp_path))
    books.on_message(directory(1, "AAPL"))
    books.on_message(directory(2, "MSFT"))
    for ref in range(1, 4):
        books.on_message(add(ref, 1_500_000 + ref, locate=1))
    books.on_message(add(9, 3_990_000, locate=1, side="S"))
    books.on_message(itch.encode("A", stock_locate=2, order_reference_number=20, buy_sell_indicator="B",
                                 shares=7, stock="MSFT", price=4_000_000))
    assert main(["top", "t", "--stream-root", str(tmp_path), "--count", "1", "--symbols", "1"]) == 0
    out = capsys.readouterr().out
    assert "AAPL" in out and "150.0003" in out and "399.0000" in out
    assert "MSFT" not in out            # one symbol asked for: the busiest
    assert main(["top", "nothing", "--stream-root", str(tmp_path), "--count", "1"]) == 2
