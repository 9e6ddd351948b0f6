"""The exchange's clock: ITCH timestamps count nanoseconds since midnight, exchange time.

The sender stamps each message with CLOCK_REALTIME minus the realtime of the exchange day's
midnight, so a receiver on the same host (or a PTP-synchronised one) that knows that midnight can
measure exchange-to-engine latency. The midnight is fixed when the run starts; a run crossing
midnight keeps counting past 24 h rather than jumping back to zero.
"""
from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ClockError(ValueError):
    pass


def midnight_realtime_ns(zone: str | None = None, now_ns: int | None = None) -> int:
    """CLOCK_REALTIME (ns since the epoch) of the last midnight in `zone` (IANA name such as
    "America/New_York"; None or "local" for this host's zone) at `now_ns` (default: now)."""
    now_s = (time.time_ns() if now_ns is None else now_ns) / 1e9
    if zone in (None, "", "local"):
        # A naive local datetime: .timestamp() resolves it through the C library's mktime, which
        # knows the host's zone and its daylight-saving rules.
        today = datetime.fromtimestamp(now_s)
    else:
        try:
            today = datetime.fromtimestamp(now_s, ZoneInfo(zone))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ClockError(f"unknown time zone {zone!r} ({exc}); use an IANA name such as "
                             "America/New_York, or 'local'") from None
    midnight = today.replace(hour=0, minute=0, second=0, microsecond=0)
    return round(midnight.timestamp()) * 1_000_000_000
