"""The demo's terminal view and plot helpers, on hand-made stats."""
from tickwire_demo.plot import percentile_curve, plot_percentiles
from tickwire_demo.view import final_summary, render, render_books


def _stats(messages=1000, gaps=2):
    hist = {"count": messages, "p50": 3100, "p99": 9000, "p999": 20000, "max": 41000,
            "lines": {"A": {"buckets": [[3000, 3100, 500], [8000, 9000, 490], [40000, 41000, 10]]}}}
    return {"messages": messages, "gaps": gaps, "missing": 7, "recovered": 1, "duplicates": 990,
            "malformed": 0, "xdp_mode": "generic", "zero_copy": False, "hugepages": True, "core": 1,
            "rate": {"messages_per_s": 1234.0, "packets_per_s": 300.0},
            "lines": {"A": {"first_messages": 600}, "B": {"first_messages": 400}},
            "ring": {"rx_dropped": 0},
            "latency": {"exchange_to_engine": hist, "kernel_to_engine": hist}}


def test_render_shows_rate_sequencing_and_latency():
    text = render(_stats(), 3.0, "feed-x")
    assert "1,234 msg/s" in text
    assert "A first 600  B first 400" in text
    assert "missing 7" in text and "recovered 1" in text
    assert "3.1" in text and "9.0" in text and "20.0" in text  # p50, p99, p99.9 in microseconds


def test_final_summary_marks_agreement_and_difference():
    sent = {"messages_sent": 1000, "expected_gaps": 3, "expected_missing": 7, "expected_duplicates": 990}
    text = final_summary(_stats(gaps=2), sent)
    assert "messages" in text and "ok" in text
    gap_row = next(line for line in text.splitlines() if "gap events" in line)
    assert "DIFFERS" in gap_row


def test_percentile_curve_walks_the_buckets():
    xs, ys = percentile_curve([[1000, 1999, 50], [2000, 2999, 49], [9000, 9999, 1]])
    assert xs[0] == 50 and ys[0] == 1.999
    assert ys[-1] == 9.999          # p99.99 lands in the slowest bucket
    assert ys == sorted(ys)


def test_plot_writes_a_png(tmp_path):
    path = plot_percentiles({"a": [[1000, 1999, 5]]}, str(tmp_path / "p.png"), "t")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _top(symbol, bid, ask, messages, incomplete=False, last=None, state="T"):
    return {"symbol": symbol, "bid": bid, "ask": ask, "messages": messages, "orders_live": 12,
            "incomplete": incomplete, "trading_state": state, "last_trade": last}


def test_render_books_shows_the_busiest_instruments_top_of_book():
    snapshots = {"AAPL": _top("AAPL", (1_850_000, 300, 2), (1_850_100, 150, 1), 900, last=(1_850_100, 10)),
                 "MSFT": _top("MSFT", None, (4_200_000, 50, 1), 50, incomplete=True),
                 "ZZZZ": _top("ZZZZ", (100, 1, 1), (200, 1, 1), 1, state="H")}
    text = render_books(snapshots, limit=2)
    rows = text.splitlines()[2:]
    assert "3 instruments" in text and len(rows) == 2          # the two busiest of three
    assert rows[0].split()[:5] == ["AAPL", "300", "185.0000", "185.0100", "150"]
    assert rows[0].split()[5] == "185.0100"                     # last trade
    assert rows[1].split()[:3] == ["MSFT", "-", "420.0000"] and "INCOMPLETE" in rows[1]
    assert "state H" in render_books(snapshots)
    assert "no instrument yet" in render_books({})


def test_final_summary_says_the_book_counts():
    stats = {**_stats(), "book_instruments": 16, "book_orders_live": 1234, "book_events_published": 99,
             "book_incomplete": 2, "book_order_overflow": 0}
    text = final_summary(stats, {"messages_sent": 1000}, {"stocks": 16, "reader_instruments": 15})
    row = next(line for line in text.splitlines() if "instruments with a book" in line)
    assert row.split()[-3:] == ["16", "16", "ok"]
    reader = next(line for line in text.splitlines() if "seen by a reader" in line)
    assert "DIFFERS" in reader
    assert "1,234" in text and "books marked incomplete" in text
    assert "instruments with a book" not in final_summary(stats, {"messages_sent": 1000})


def test_with_a_re_request_server_the_summary_shows_what_was_recovered_and_nothing_missing():
    stats = _stats(messages=1000, gaps=0)
    stats["missing"] = 0
    stats["rerequest"] = {"config": {"server": "198.18.1.1:26400"}, "requests_sent": 9, "recovered": 12,
                          "timed_out": 1, "given_up": 0,
                          "recovery_latency": {"p50": 90_000, "p99": 2_000_000}}
    sent = {"messages_scheduled": 1000, "lost_on_all_lines": 12, "expected_duplicates": 990}
    text = final_summary(stats, sent)
    row = next(line for line in text.splitlines() if "recovered by request" in line)
    assert row.split()[-3:] == ["12", "12", "ok"]
    assert "DIFFERS" not in text and "p50 90 us, p99 2000 us" in text
    assert "re-request" in render(stats, 1.0, "f")
