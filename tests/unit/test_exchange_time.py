"""Exchange time through the C decoder (issue 11, defect 4): ITCH timestamps count nanoseconds from
the exchange's local midnight, and the decoder must follow the exchange's days as real time passes
them, DST days (23 and 25 hours in New York) included.

The clocks are chosen by the test (`now=(mono_ns, real_ns)`): nothing is read, nothing timed. Every
latency is checked exactly: the histogram's min and max are exact, so one sample pins its value.
ITCH timestamps are read as nanoseconds elapsed since the exchange's midnight (the spec's words;
on the two DST Sundays, when US markets are closed, that differs from the wall-clock time of day
after 02:00).
"""
from datetime import date, datetime, time as dtime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.support import frames as F
from tickwire_engine import config
from tickwire_engine.config import ConfigError
from tickwire_engine.decoder import Decoder

NEW_YORK = ZoneInfo("America/New_York")
GROUP, PORT = "239.1.1.1", 5000
HOUR = 3600 * 10**9
US = 1_000
LAST_BUCKET_NS = 2**36   # the histogram's last bucket starts here (68.7 s)


def midnight(day: date) -> int:
    return int(datetime.combine(day, dtime(0), tzinfo=NEW_YORK).timestamp()) * 10**9


def decoder_for(days: list[date]) -> Decoder:
    return Decoder([("A", GROUP, PORT)], exchange_midnights_ns=[midnight(d) for d in days])


class Feed:
    """One line's packets, one message each, with the sequence numbers kept in order."""

    def __init__(self, dec: Decoder):
        self.dec, self.seq, self.mono = dec, 1, 10**9

    def message(self, stamp_ns: int, real_ns: int) -> None:
        self.mono += 1000
        payload = F.mold(self.seq, [F.itch("A", timestamp_ns=stamp_ns)])
        self.dec.decode_mold("A", payload, now=(self.mono, real_ns))
        self.seq += 1


def exchange_latency(dec: Decoder) -> dict:
    return dec.stats()["latency"]["exchange_to_engine"]


def only_sample(dec: Decoder) -> int:
    """The latency of the one message recorded since the last reset of our view."""
    lat = exchange_latency(dec)
    assert lat["count"] == 1 and lat["min"] == lat["max"]
    return lat["max"]


def test_the_day_moves_on_at_midnight():
    days = [date(2027, 6, 14), date(2027, 6, 15), date(2027, 6, 16)]
    dec = decoder_for(days)
    feed = Feed(dec)
    feed.message(10 * HOUR, midnight(days[0]) + 10 * HOUR + 5 * US)            # Monday 10:00
    feed.message(10 * HOUR, midnight(days[1]) + 10 * HOUR + 7 * US)            # Tuesday 10:00
    lat = exchange_latency(dec)
    assert (lat["count"], lat["min"], lat["max"]) == (2, 5 * US, 7 * US)
    assert all(low < LAST_BUCKET_NS for low, _high, _n in lat["lines"]["A"]["buckets"])
    stats = dec.stats()["exchange_time"]
    assert stats["midnight_ns"] == midnight(days[1])
    assert stats["midnights_left"] == 1 and stats["latency_skipped"] == 0


def test_a_message_stamped_before_midnight_and_read_after_it_belongs_to_yesterday():
    days = [date(2027, 6, 14), date(2027, 6, 15), date(2027, 6, 16)]
    dec = decoder_for(days)
    feed = Feed(dec)
    feed.message(0, midnight(days[1]) + 1 * US)       # moves the decoder to Tuesday
    feed.message(24 * HOUR - 3 * US, midnight(days[1]) + 2 * US)   # Monday 23:59:59.999997
    lat = exchange_latency(dec)
    assert (lat["count"], lat["min"], lat["max"]) == (2, 1 * US, 5 * US)
    assert dec.stats()["exchange_time"]["midnight_ns"] == midnight(days[1])


def test_a_stamp_from_an_exchange_clock_ahead_of_ours_is_never_a_day_late():
    # Stamped 00:00:00.000002 Tuesday by the exchange, read at 23:59:59.999999 Monday by us: a
    # negative latency of 3 us. Not recorded (counted as skipped), and never as 24 hours.
    days = [date(2027, 6, 14), date(2027, 6, 15), date(2027, 6, 16)]
    dec = decoder_for(days)
    Feed(dec).message(2 * US, midnight(days[1]) - 1 * US)
    assert exchange_latency(dec)["count"] == 0
    assert dec.stats()["exchange_time"]["latency_skipped"] == 1


def test_spring_forward_day_is_23_hours():
    days = [date(2027, 3, 13), date(2027, 3, 14), date(2027, 3, 15), date(2027, 3, 16)]
    assert midnight(days[2]) - midnight(days[1]) == 23 * HOUR
    dec = decoder_for(days)
    feed = Feed(dec)
    feed.message(22 * HOUR + 30 * 60 * 10**9, midnight(days[1]) + 22 * HOUR + 30 * 60 * 10**9 + 4 * US)
    assert only_sample(dec) == 4 * US
    # One hour earlier than a 24-hour day would have it, Monday has begun.
    feed.message(1 * US, midnight(days[2]) + 9 * US)
    lat = exchange_latency(dec)
    assert (lat["count"], lat["min"], lat["max"]) == (2, 4 * US, 8 * US)
    assert dec.stats()["exchange_time"]["midnight_ns"] == midnight(days[2])


def test_fall_back_day_is_25_hours():
    days = [date(2027, 11, 6), date(2027, 11, 7), date(2027, 11, 8), date(2027, 11, 9)]
    assert midnight(days[2]) - midnight(days[1]) == 25 * HOUR
    dec = decoder_for(days)
    feed = Feed(dec)
    # 24.5 hours into Sunday: still Sunday (a 24-hour day would have ended half an hour ago).
    feed.message(24 * HOUR + 30 * 60 * 10**9, midnight(days[1]) + 24 * HOUR + 30 * 60 * 10**9 + 6 * US)
    assert only_sample(dec) == 6 * US
    assert dec.stats()["exchange_time"]["midnight_ns"] == midnight(days[1])
    feed.message(2 * US, midnight(days[2]) + 5 * US)
    lat = exchange_latency(dec)
    assert (lat["count"], lat["min"], lat["max"]) == (2, 3 * US, 6 * US)
    assert dec.stats()["exchange_time"]["midnight_ns"] == midnight(days[2])


def test_past_the_last_midnight_no_latency_is_recorded_and_the_stats_say_so():
    days = [date(2027, 6, 14), date(2027, 6, 15)]
    dec = decoder_for(days)
    feed = Feed(dec)
    feed.message(HOUR, midnight(days[0]) + HOUR + 2 * US)
    assert dec.stats()["exchange_time"]["midnights_left"] == 1
    feed.message(HOUR, midnight(days[1]) + HOUR + 2 * US)      # the day after the table's end
    stats = dec.stats()
    assert exchange_latency(dec)["count"] == 1
    assert stats["exchange_time"]["midnights_left"] == 0
    assert stats["exchange_time"]["latency_skipped"] == 1
    assert stats["messages"] == 2                               # the messages themselves count


def test_a_fixed_midnight_never_moves():
    # One midnight and nothing after it: a replay of one day's capture.
    dec = Decoder([("A", GROUP, PORT)], exchange_midnight_ns=midnight(date(2027, 6, 14)))
    Feed(dec).message(HOUR, midnight(date(2027, 6, 14)) + HOUR + 2 * US + 3 * 24 * HOUR)
    assert only_sample(dec) == 3 * 24 * HOUR + 2 * US
    assert dec.stats()["exchange_time"]["midnights_left"] is None


def test_idle_ticks_move_the_day_too():
    days = [date(2027, 6, 14), date(2027, 6, 15), date(2027, 6, 16)]
    dec = decoder_for(days)
    dec.tick(now=(1, midnight(days[1]) + HOUR))
    assert dec.stats()["exchange_time"]["midnight_ns"] == midnight(days[1])


def test_the_table_starts_yesterday_and_covers_more_than_a_year_of_new_york_days():
    now = datetime(2027, 3, 14, 9, 30, tzinfo=NEW_YORK)
    table = config.exchange_midnights_ns(None, now=now)           # None: the feed's exchange zone
    assert len(table) == config.LATER_MIDNIGHTS + 1
    walls = [datetime.fromtimestamp(ns / 1e9, NEW_YORK) for ns in table]
    assert walls[0].date() == date(2027, 3, 13) and walls[1].date() == date(2027, 3, 14)
    assert all((w.hour, w.minute, w.second) == (0, 0, 0) for w in walls)
    assert all((b.date() - a.date()).days == 1 for a, b in zip(walls, walls[1:]))
    assert walls[-1] - walls[1] > timedelta(days=366)
    lengths = {(b - a) // HOUR for a, b in zip(table, table[1:])}
    assert lengths == {23, 24, 25}


def test_bad_tables_and_zones_are_refused_naming_what_is_wrong():
    with pytest.raises(ConfigError, match=r"midnights\[2\].*rising order"):
        Decoder([("A", GROUP, PORT)], exchange_midnights_ns=[10, 20, 20])
    with pytest.raises(ConfigError, match="1 to 513"):
        Decoder([("A", GROUP, PORT)], exchange_midnights_ns=list(range(1, 600)))
    with pytest.raises(ConfigError, match="not both"):
        Decoder([("A", GROUP, PORT)], exchange_midnight_ns=1, exchange_midnights_ns=[1, 2])
    with pytest.raises(ConfigError, match="'Mars/Base' is unknown"):
        Decoder([("A", GROUP, PORT)], exchange_tz="Mars/Base")
