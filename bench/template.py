"""The packets the benchmark's senders loop over: tickwire_feed.pool, under the bench's old names.

Both senders (bench/publisher.c through an AF_PACKET socket, `tickwire-feed blast`'s in-kernel
generator) read the same pool file, so a contender sees the same message mix and packet sizes
whichever generator feeds it.
"""
from __future__ import annotations

from tickwire_feed.pool import Pool as Template  # noqa: F401
from tickwire_feed.pool import make_pool as make_template  # noqa: F401
