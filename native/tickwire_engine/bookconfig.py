"""What books the engine builds and where it publishes them: the plan's `books` object (contract
C8) and the stream location (contract C7). Pure Python: the agent and the CLI use it without the
native module.

    BooksConfig.from_plan({"enabled": True, "depth": 10, "symbols": ["AAPL"], "maxOrders": 1 << 20})
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .config import ConfigError

DEFAULT_STREAM_ROOT = "/run/tickwire/streams"
STREAM_ROOT_ENV = "TICKWIRE_STREAM_ROOT"
MAX_DEPTH = 64            # TWC_MAX_DEPTH
MAX_SYMBOLS = 256         # TW_BOOK_MAX_SYMBOLS
MAX_INSTRUMENTS = 65536   # ITCH stock locates are 16 bits
MAX_ORDERS = 1 << 30
PLAN_KEYS = {"enabled", "depth", "symbols", "maxOrders", "maxInstruments", "ringEvents", "levelsOnly"}


def stream_root(root: str | None = None) -> str:
    """The stream root: given, else $TICKWIRE_STREAM_ROOT, else /run/tickwire/streams (C7)."""
    return root or os.environ.get(STREAM_ROOT_ENV) or DEFAULT_STREAM_ROOT


def _whole(name: str, value, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"books.{name} {value!r}: give a whole number {low}..{high}")


@dataclass
class BooksConfig:
    enabled: bool = False
    depth: int = 10                       # levels per side in each snapshot entry
    symbols: list[str] = field(default_factory=list)   # empty: every instrument
    max_orders: int = 1 << 20             # live orders at once, all instruments (32 B + 80 B each)
    max_instruments: int = 16384
    ring_events: int = 1 << 20            # events the ring holds (64 B each): 64 MiB
    levels_only: bool = False             # aggregated levels only: no order queues or order events

    @classmethod
    def from_plan(cls, plan: dict | None) -> "BooksConfig":
        """The plan's `books` object (camelCase keys, C8); None or {} is books off."""
        plan = plan or {}
        if not isinstance(plan, dict):
            raise ConfigError(f"books {plan!r}: give an object such as {{\"enabled\": true}}")
        unknown = set(plan) - PLAN_KEYS
        if unknown:
            raise ConfigError(f"books: unknown keys {sorted(unknown)}; known: {sorted(PLAN_KEYS)}")
        defaults = cls()
        config = cls(enabled=plan.get("enabled", False), depth=plan.get("depth", defaults.depth),
                     symbols=list(plan.get("symbols") or []),
                     max_orders=plan.get("maxOrders", defaults.max_orders),
                     max_instruments=plan.get("maxInstruments", defaults.max_instruments),
                     ring_events=plan.get("ringEvents", defaults.ring_events),
                     levels_only=plan.get("levelsOnly", False))
        config.validate()
        return config

    def validate(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"books.enabled {self.enabled!r}: give true or false")
        if not isinstance(self.levels_only, bool):
            raise ConfigError(f"books.levelsOnly {self.levels_only!r}: give true or false")
        _whole("depth", self.depth, 1, MAX_DEPTH)
        _whole("maxOrders", self.max_orders, 1, MAX_ORDERS)
        _whole("maxInstruments", self.max_instruments, 1, MAX_INSTRUMENTS)
        _whole("ringEvents", self.ring_events, 64, 1 << 30)
        if self.ring_events & (self.ring_events - 1):
            raise ConfigError(f"books.ringEvents {self.ring_events}: must be a power of two, "
                              f"such as {1 << 20}")
        if len(self.symbols) > MAX_SYMBOLS:
            raise ConfigError(f"books.symbols: {len(self.symbols)} given, at most {MAX_SYMBOLS}")
        for symbol in self.symbols:
            if (not isinstance(symbol, str) or not 1 <= len(symbol) <= 8 or not symbol.isascii()
                    or " " in symbol):
                raise ConfigError(f"books.symbols: {symbol!r} is not an ITCH symbol (1-8 ASCII "
                                  "characters, no spaces)")

    def padded_symbols(self) -> list[bytes]:
        return [s.encode("ascii").ljust(8, b" ") for s in self.symbols]


def validate_feed_name(feed: str) -> None:
    if not feed or "/" in feed or feed in (".", "..") or len(feed) > 63:
        raise ConfigError(f"feed name {feed!r}: it names the stream directory <stream_root>/<feed>; "
                          "give 1-63 characters without '/'")


def fill_books_config(c_cfg, books: BooksConfig, feed: str = "", root: str | None = None) -> None:
    """Write a cffi `struct tw_books_config`; feed "" builds books without a stream."""
    books.validate()
    c_cfg.depth = books.depth
    c_cfg.max_orders = books.max_orders
    c_cfg.max_instruments = books.max_instruments
    c_cfg.ring_events = books.ring_events
    c_cfg.levels_only = int(books.levels_only)
    symbols = books.padded_symbols()
    c_cfg.n_symbols = len(symbols)
    for i, symbol in enumerate(symbols):
        c_cfg.symbols[i] = symbol
    if feed:
        validate_feed_name(feed)
        c_cfg.feed = feed.encode()
        c_cfg.stream_root = stream_root(root).encode()
